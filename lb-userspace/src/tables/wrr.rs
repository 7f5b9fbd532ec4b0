//! Weighted round robin as a sequence: the order in which a VIP's reals take new flows, each
//! real as often per cycle as its weight, spread through the cycle (the "smooth" variant
//! nginx uses: weights 5:1:1 give a a b a c a a, not a a a a a b c). The datapath walks it,
//! each CPU with its own cursor, so no counter is shared between CPUs.

/// The sequence: indexes into `weights`, `weights[i]` times each; empty when all are 0.
pub fn sequence(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_real_as_often_as_its_weight_spread_out() {
        assert_eq!(sequence(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        let s = sequence(&[1, 2, 3]);
        assert_eq!(s.len(), 6);
        for (i, w) in [1, 2, 3].iter().enumerate() {
            assert_eq!(s.iter().filter(|x| **x == i as u32).count(), *w);
        }
        // No real twice in a row while another is due.
        assert!(s.windows(2).filter(|p| p[0] == p[1]).count() <= 1, "{s:?}");
    }

    #[test]
    fn weight_zero_and_nothing() {
        assert_eq!(sequence(&[0, 2]), [1, 1]);
        assert!(sequence(&[0, 0]).is_empty());
        assert!(sequence(&[]).is_empty());
    }
}
