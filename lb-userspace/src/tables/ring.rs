//! What a VIP's ring holds, per scheduler: the real id of each Maglev slot (maglev, source),
//! the weighted round-robin sequence (roundrobin, static-rr), or the candidates (leastconn).
//! The datapath reads `ring[slot]` for `slot < len`; an empty ring means no real takes new
//! flows.

use crate::{
    declare::spec::Balance,
    tables::{maglev, wrr},
};

/// A real of the VIP, as the ring needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its REALS id.
    pub id: u32,
    /// Its name on every LB (address:port), for Maglev.
    pub name: String,
    /// 0: takes no new flows (draining).
    pub weight: u32,
}

/// The ring of a VIP balanced by `balance` over `members` (`maglev_size`: the Maglev table's
/// size, a prime; see `maglev::check_size`).
pub fn build(balance: Balance, maglev_size: u32, members: &[Member]) -> Vec<u32> {
    match balance {
        Balance::Maglev | Balance::Source => {
            let m: Vec<maglev::Member> = members
                .iter()
                .map(|r| maglev::Member {
                    name: r.name.clone(),
                    weight: r.weight,
                })
                .collect();
            maglev::build(&m, maglev_size)
                .map(|table| table.into_iter().map(|i| members[i as usize].id).collect())
                .unwrap_or_default()
        }
        Balance::Roundrobin | Balance::StaticRr => {
            let weights: Vec<u32> = members.iter().map(|r| r.weight).collect();
            wrr::sequence(&weights)
                .into_iter()
                .map(|i| members[i as usize].id)
                .collect()
        }
        Balance::Leastconn => members
            .iter()
            .filter(|r| r.weight > 0)
            .map(|r| r.id)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Member {
                id: 10 + i as u32,
                name: format!("198.18.0.{}:80", 11 + i),
                weight: *w,
            })
            .collect()
    }

    #[test]
    fn each_scheduler_fills_its_ring_with_real_ids() {
        let m = members(&[1, 2, 0]);
        let maglev = build(Balance::Maglev, 251, &m);
        assert_eq!(maglev.len(), 251);
        assert!(maglev.iter().all(|id| [10, 11].contains(id)));
        let rr = build(Balance::Roundrobin, 251, &m);
        assert_eq!(rr.iter().filter(|id| **id == 11).count(), 2);
        assert_eq!(rr.len(), 3);
        assert_eq!(build(Balance::Leastconn, 251, &m), [10, 11]);
    }

    #[test]
    fn nobody_to_take_flows_is_an_empty_ring() {
        let m = members(&[0, 0]);
        for b in [
            Balance::Maglev,
            Balance::Source,
            Balance::Roundrobin,
            Balance::StaticRr,
            Balance::Leastconn,
        ] {
            assert!(build(b, 251, &m).is_empty(), "{b}");
        }
        assert!(build(Balance::Maglev, 251, &[]).is_empty());
    }
}
