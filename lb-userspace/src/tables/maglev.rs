//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted: the table a VIP's flows
//! hash into. Pure and deterministic: two LBs with the same reals build the same table, so
//! several behind ECMP agree without sharing state.
//!
//! Each real walks its own permutation of the slots (offset and skip from two hashes of its
//! name) and takes the next free one when its turn comes. Weights decide how often a real's
//! turn comes: by turn `t` a real of weight `w` has had `⌊t·w / w_max⌋` turns, so at any
//! point every real holds its weight share within one slot. Removing a real frees only its
//! own slots for the others (and a few more, as the others' preference lists shift); adding
//! one takes about its share.

use std::io::Cursor;

/// The largest table a VIP can have (a ring map's slots): a prime.
pub const MAX_SIZE: u32 = 65537;

/// The table sizes a VIP gets unless configured: the first prime past each power of two from
/// 256 (a few steps: a VIP's table is resized only when its reals outgrow it).
pub const SIZES: [u32; 9] = [257, 521, 1031, 2053, 4099, 8209, 16411, 32771, MAX_SIZE];

/// Slots per configured real a table gets unless configured: Maglev's paper keeps every real
/// within about 1 % of its share from 100 on.
pub const SLOTS_PER_REAL: u32 = 100;

/// The table size of a VIP with `reals` configured reals (up or not: a health check flapping
/// never resizes a table, and two LBs with one config build the same one): the smallest of
/// `SIZES` with `SLOTS_PER_REAL` slots per real, else the largest.
pub fn size_for(reals: usize) -> u32 {
    let want = (reals as u64).max(1) * u64::from(SLOTS_PER_REAL);
    SIZES
        .into_iter()
        .find(|s| u64::from(*s) >= want)
        .unwrap_or(MAX_SIZE)
}

const SEED_OFFSET: u32 = 0x6d61_676c; // "magl"
const SEED_SKIP: u32 = 0x6576_3031; // "ev01"

/// A real as Maglev sees it: a name that identifies it the same way on every LB (its address
/// and port), and its weight. Weight 0 takes no slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub weight: u32,
}

/// Why a table cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("the Maglev table size {0} is not a prime: use one, e.g. 65537, 16381, 251")]
    NotPrime(u32),
    #[error("the Maglev table size {size} is smaller than the {members} reals it must hold")]
    TooSmall { size: u32, members: usize },
}

/// Checks a table size: a prime (so every skip visits every slot), at least 2.
pub fn check_size(size: u32, members: usize) -> Result<(), MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    if (size as usize) < members {
        return Err(MaglevError::TooSmall { size, members });
    }
    Ok(())
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn hash(name: &str, seed: u32) -> u32 {
    // A read from a byte slice cannot fail.
    murmur3::murmur3_32(&mut Cursor::new(name.as_bytes()), seed).unwrap_or_default()
}

/// The table of `size` slots (a prime, see [`check_size`]): slot → index into `members`.
/// `None` when no member has a weight (nothing to send to).
pub fn build(members: &[Member], size: u32) -> Option<Vec<u32>> {
    // In name order: the table depends on the reals, not on the order they were listed in.
    let mut live: Vec<usize> = (0..members.len())
        .filter(|i| members[*i].weight > 0)
        .collect();
    live.sort_by(|a, b| members[*a].name.cmp(&members[*b].name));
    if live.is_empty() {
        return None;
    }
    // Each live member's walk through its permutation of the slots.
    struct Walk {
        at: u32,
        skip: u32,
        weight: u32,
        /// Turns earned and not yet taken, in units of the largest weight: a member of
        /// weight w earns w per turn and takes a slot per w_max earned (so by turn t it has
        /// ⌊t·w/w_max⌋ slots).
        credit: u32,
        index: u32,
    }
    let mut walks: Vec<Walk> = live
        .iter()
        .map(|&i| Walk {
            at: hash(&members[i].name, SEED_OFFSET) % size,
            skip: hash(&members[i].name, SEED_SKIP) % (size - 1) + 1,
            weight: members[i].weight,
            credit: 0,
            index: i as u32,
        })
        .collect();
    let w_max = walks.iter().map(|w| w.weight).max().unwrap_or(1);
    let mut table = vec![0u32; size as usize];
    // Which slots are taken, as bits: 8 KiB for 65537 slots, where the probing stays in the
    // fastest cache instead of walking the table.
    let mut taken = vec![0u64; (size as usize).div_ceil(64)];
    let mut filled = 0u32;
    'fill: loop {
        for w in walks.iter_mut() {
            w.credit += w.weight;
            if w.credit < w_max {
                continue;
            }
            w.credit -= w_max;
            let mut slot = w.at;
            while taken[(slot / 64) as usize] & (1 << (slot % 64)) != 0 {
                slot += w.skip;
                if slot >= size {
                    slot -= size;
                }
            }
            taken[(slot / 64) as usize] |= 1 << (slot % 64);
            table[slot as usize] = w.index;
            w.at = slot;
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_primes_past_powers_of_two_and_grow_with_the_reals() {
        for (i, size) in SIZES.into_iter().enumerate() {
            assert!(is_prime(size), "{size} is not a prime");
            let power = 256u32 << i;
            assert!(
                size > power && !(power + 1..size).any(is_prime),
                "{size} is not the first prime past {power}"
            );
        }
        assert_eq!(size_for(0), 257);
        assert_eq!(size_for(2), 257);
        assert_eq!(size_for(3), 521);
        assert_eq!(size_for(10), 1031);
        assert_eq!(size_for(100), 16411);
        assert_eq!(size_for(328), MAX_SIZE);
        assert_eq!(size_for(100_000), MAX_SIZE);
        for n in 1..=327 {
            assert!(u64::from(size_for(n)) >= n as u64 * u64::from(SLOTS_PER_REAL));
        }
    }

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                name: format!("198.18.{}.{}:80", i / 250, i % 250 + 1),
                weight: 1,
            })
            .collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for s in table {
            c[*s as usize] += 1;
        }
        c
    }

    /// Slots whose member (by name) differs between two tables.
    fn moved(a: &[u32], am: &[Member], b: &[u32], bm: &[Member]) -> Vec<usize> {
        (0..a.len())
            .filter(|s| am[a[*s] as usize].name != bm[b[*s] as usize].name)
            .collect()
    }

    #[test]
    fn equal_weights_get_m_over_n_within_one_slot() {
        for n in [1, 2, 3, 7, 10, 100, 1000] {
            let m = members(n);
            let t = build(&m, MAX_SIZE).unwrap();
            let ideal = MAX_SIZE as f64 / n as f64;
            for (i, c) in counts(&t, n).into_iter().enumerate() {
                assert!(
                    (c as f64 - ideal).abs() <= 1.0,
                    "n={n}: real {i} has {c} slots, ideal {ideal:.1}"
                );
            }
        }
    }

    #[test]
    fn weighted_shares_within_one_percent() {
        let mut m = members(100);
        for (i, r) in m.iter_mut().enumerate() {
            r.weight = 1 + (i as u32 % 10);
        }
        let total: u32 = m.iter().map(|r| r.weight).sum();
        let t = build(&m, MAX_SIZE).unwrap();
        for (i, c) in counts(&t, m.len()).into_iter().enumerate() {
            let ideal = MAX_SIZE as f64 * m[i].weight as f64 / total as f64;
            assert!(
                ((c as f64 - ideal) / ideal).abs() < 0.01,
                "real {i} (weight {}) has {c} slots, ideal {ideal:.1}",
                m[i].weight
            );
        }
        // 1:2:3 over a small table, and weight 0 takes nothing.
        let mut m = members(4);
        for (r, w) in m.iter_mut().zip([1, 2, 3, 0]) {
            r.weight = w;
        }
        let t = build(&m, 60013).unwrap();
        let c = counts(&t, 4);
        assert_eq!(c[3], 0);
        for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
            let ideal = 60013.0 * w / 6.0;
            assert!((c[i] as f64 - ideal).abs() <= 1.0, "{c:?}");
        }
    }

    #[test]
    fn deterministic_and_independent_of_listing_order() {
        let m = members(50);
        let t = build(&m, MAX_SIZE).unwrap();
        assert_eq!(Some(&t), build(&m, MAX_SIZE).as_ref());
        // Another LB listing the same reals in another order sends every slot to the same
        // real.
        let mut shuffled = m.clone();
        shuffled.reverse();
        shuffled.swap(3, 17);
        let u = build(&shuffled, MAX_SIZE).unwrap();
        assert!(moved(&t, &m, &u, &shuffled).is_empty());
    }

    #[test]
    fn removing_one_of_n_moves_little_beyond_its_own_slots() {
        for n in [5, 10, 50, 100] {
            let all = members(n);
            let before = build(&all, MAX_SIZE).unwrap();
            for gone in [0, n / 2, n - 1] {
                let rest: Vec<Member> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != gone)
                    .map(|(_, r)| r.clone())
                    .collect();
                let after = build(&rest, MAX_SIZE).unwrap();
                let own = before.iter().filter(|s| **s as usize == gone).count();
                let changed = moved(&before, &all, &after, &rest).len();
                let beyond = (changed - own) as f64 / MAX_SIZE as f64;
                assert!(
                    beyond < 0.02,
                    "n={n}, removing {gone}: {:.2}% moved beyond its own slots",
                    beyond * 100.0
                );
            }
        }
    }

    #[test]
    fn adding_one_moves_under_twice_its_share() {
        for n in [5, 10, 50, 100] {
            let all = members(n + 1);
            let before = build(&all[..n], MAX_SIZE).unwrap();
            let after = build(&all, MAX_SIZE).unwrap();
            let changed = moved(&before, &all[..n], &after, &all).len() as f64;
            let ideal = MAX_SIZE as f64 / (n + 1) as f64;
            assert!(
                changed < 2.0 * ideal,
                "n={n}: {changed} slots moved, ideal {ideal:.0}"
            );
        }
    }

    #[test]
    fn sizes_must_be_prime_and_large_enough() {
        assert_eq!(check_size(65537, 100), Ok(()));
        assert_eq!(check_size(65536, 1), Err(MaglevError::NotPrime(65536)));
        assert_eq!(
            check_size(7, 8),
            Err(MaglevError::TooSmall {
                size: 7,
                members: 8
            })
        );
        assert!(build(&[], 7).is_none());
        let zero = vec![Member {
            name: "a".into(),
            weight: 0,
        }];
        assert!(build(&zero, 7).is_none());
    }
}
