//! What the checks found, as it happens: each checked real's last result (with how long the
//! check took) and since when it is in its state. The check tasks write it; the daemon's
//! answers (`lbctl real list`, `lbctl stats`) read it without waiting for any check.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::datapath::RealKey;

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastCheck {
    pub ok: bool,
    /// "ok", or why it failed.
    pub result: String,
    pub took: Duration,
    pub at: Instant,
}

/// A checked real's state as its checks keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub up: bool,
    /// When it went up or down (or its checks started).
    pub since: Instant,
    pub last: Option<LastCheck>,
}

/// Shared by the check tasks and the daemon; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct CheckBoard(Arc<Mutex<BTreeMap<RealKey, Checked>>>);

impl CheckBoard {
    /// The checks of `real` start, from state `up`.
    pub fn start(&self, real: RealKey, up: bool) {
        self.with(|m| {
            m.insert(
                real,
                Checked {
                    up,
                    since: Instant::now(),
                    last: None,
                },
            );
        });
    }

    /// A check of `real` ended: `ok`, with `result`, after `took`; `changed` when it moved
    /// the real's state.
    pub fn record(&self, real: RealKey, ok: bool, result: String, took: Duration, changed: bool) {
        let now = Instant::now();
        self.with(|m| {
            let entry = m.entry(real).or_insert(Checked {
                up: ok,
                since: now,
                last: None,
            });
            if changed {
                entry.up = ok;
                entry.since = now;
            }
            entry.last = Some(LastCheck {
                ok,
                result,
                took,
                at: now,
            });
        });
    }

    /// Forgets reals no longer checked.
    pub fn retain(&self, checked: impl Fn(&RealKey) -> bool) {
        self.with(|m| m.retain(|k, _| checked(k)));
    }

    pub fn get(&self, real: &RealKey) -> Option<Checked> {
        self.with(|m| m.get(real).cloned())
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<RealKey, Checked>) -> T) -> T {
        // A task that panicked while holding the lock left a whole map (every write is one
        // insert): still good to read.
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declare::spec::VipSpec;

    fn key() -> RealKey {
        let vip: VipSpec = "198.18.100.10:80/tcp".parse().unwrap();
        (vip, "198.18.0.11".parse().unwrap(), 80)
    }

    #[test]
    fn a_result_is_kept_and_only_a_change_moves_since() {
        let board = CheckBoard::default();
        board.start(key(), true);
        let started = board.get(&key()).unwrap().since;
        board.record(
            key(),
            false,
            "timeout".into(),
            Duration::from_millis(300),
            false,
        );
        let seen = board.get(&key()).unwrap();
        assert!(seen.up, "one failure of two is no change");
        assert_eq!(seen.since, started);
        let last = seen.last.unwrap();
        assert_eq!(
            (last.ok, last.result.as_str(), last.took),
            (false, "timeout", Duration::from_millis(300))
        );
        board.record(
            key(),
            false,
            "timeout".into(),
            Duration::from_millis(300),
            true,
        );
        let seen = board.get(&key()).unwrap();
        assert!(!seen.up && seen.since >= started);
        board.retain(|_| false);
        assert!(board.get(&key()).is_none());
    }
}
