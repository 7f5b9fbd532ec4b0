//! Builders of a VIP's lookup ring: slot → real id. The datapath picks `ring[hash % size]`.

/// Reals take slots in turn: slot `i` belongs to `reals[i % n]`. With a prime ring size every
/// real gets ⌊size/n⌋ or ⌈size/n⌉ slots, so hashed flows spread evenly. An empty real list
/// gives an all-zero ring, and id 0 is "no real".
pub fn striped(real_ids: &[u32], size: u32) -> Vec<u32> {
    if real_ids.is_empty() {
        return vec![0; size as usize];
    }
    (0..size as usize)
        .map(|i| real_ids[i % real_ids.len()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_real_gets_its_share_within_one_slot() {
        for n in 1..=7u32 {
            let ids: Vec<u32> = (1..=n).collect();
            let ring = striped(&ids, 65537);
            for id in &ids {
                let got = ring.iter().filter(|s| *s == id).count() as u32;
                assert!(
                    got == 65537 / n || got == 65537 / n + 1,
                    "n={n} id={id} got={got}"
                );
            }
        }
    }

    #[test]
    fn no_reals_means_no_real_anywhere() {
        assert!(striped(&[], 13).iter().all(|s| *s == 0));
    }
}
