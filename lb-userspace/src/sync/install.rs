//! The receiving side in the daemon: the peer's records installed in this LB's flow table
//! (or refused by name), its flows removed when it says they ended or when a full round no
//! longer has them, and whether this LB is synced (what keepalived's check asks).

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use lb_common::FlowKey;

use super::{
    flows,
    peer::{Batch, Counts, Rounds, Settings},
    wire::{KIND_FULL, OP_END, OP_FLOW},
    Refused,
};
use crate::datapath::{monotonic_ns, Datapath};

/// What the daemon keeps of the sync.
pub struct Installer {
    pub settings: Settings,
    pub counts: Arc<Counts>,
    /// Shared with the sender: what came from the peer, and when it was installed.
    from_peer: super::peer::FromPeer,
    pub rounds: Rounds,
    /// The flows installed from the peer: forward key → (reply key, real id).
    installed: HashMap<FlowKey, (FlowKey, u32)>,
    pub installed_total: u64,
    pub removed_total: u64,
    /// Per [`Refused`], in `Refused::ALL` order.
    pub refused: [u64; 6],
    pub install_errors: u64,
    started: Instant,
}

impl Installer {
    pub fn new(settings: Settings, counts: Arc<Counts>, from_peer: super::peer::FromPeer) -> Self {
        Self {
            settings,
            counts,
            from_peer,
            rounds: Rounds::default(),
            installed: HashMap::new(),
            installed_total: 0,
            removed_total: 0,
            refused: [0; 6],
            install_errors: 0,
            started: Instant::now(),
        }
    }

    /// Installs (or removes) the flows of one batch; clients arrive on `ingress`.
    pub fn apply(&mut self, dp: &mut Datapath, batch: &Batch, ingress: u32) {
        let now = monotonic_ns();
        for r in &batch.records {
            match r.op {
                OP_FLOW => match dp
                    .synced_entries(r, ingress, now)
                    .and_then(|e| self.may_install(dp, &e, now).map(|()| e))
                {
                    Ok(e) => match dp.install_flow(&e) {
                        Ok(()) => {
                            self.installed
                                .insert(e.key, (e.reply_key, e.forward.real_id));
                            self.from_peer
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(e.key, e.forward.last_seen_ns);
                            self.installed_total += 1;
                        }
                        Err(err) => {
                            self.install_errors += 1;
                            tracing::debug!(error = %format!("{err:#}"), "installing a synced flow failed");
                        }
                    },
                    Err(why) => self.refuse(why),
                },
                OP_END => {
                    let (key, _) = flows::keys(r);
                    // Served here since it came: this LB's now, the peer's end is not its.
                    if self.ours_now(dp, &key) {
                        self.untrack(&key);
                    } else {
                        self.remove(dp, &key);
                    }
                }
                _ => {}
            }
        }
        if batch.header.kind == KIND_FULL {
            let keys = batch.records.iter().map(|r| flows::keys(r).0);
            if let Some(all) = self.rounds.part(&batch.header, keys) {
                // A whole round: flows installed from the peer that it no longer has ended
                // there (their end message was lost), unless this LB's datapath has seen
                // them since: then they are this LB's now (a failover), and stay.
                let gone: Vec<FlowKey> = self
                    .installed
                    .keys()
                    .filter(|k| !all.contains(*k))
                    .copied()
                    .collect();
                for k in gone {
                    if self.ours_now(dp, &k) {
                        self.untrack(&k);
                    } else {
                        self.remove(dp, &k);
                    }
                }
            }
        }
    }

    /// Whether the peer's copy of a flow may go in: not over a live flow this LB serves
    /// itself (made here, or served since it came from the peer), nor with a reply entry
    /// that another live flow holds here (a one-arm SNAT port both LBs gave out).
    fn may_install(&mut self, dp: &Datapath, e: &flows::Entries, now: u64) -> Result<(), Refused> {
        if let Some(f) = dp.flow(&e.key).filter(|f| !f.expired(now)) {
            let from_peer = self
                .from_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&e.key)
                .copied();
            match from_peer {
                Some(at) if f.last_seen_ns > at => {
                    self.untrack(&e.key);
                    return Err(Refused::HeldHere);
                }
                Some(_) => {}
                None => return Err(Refused::HeldHere),
            }
        }
        if let Some(r) = dp.flow(&e.reply_key).filter(|r| !r.expired(now)) {
            if (r.dst, r.dport) != (e.reply.dst, e.reply.dport) {
                return Err(Refused::Clash);
            }
        }
        Ok(())
    }

    /// Stops treating a flow as the peer's (this LB serves it now).
    fn untrack(&mut self, key: &FlowKey) {
        self.installed.remove(key);
        self.from_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Whether this LB's datapath saw the flow since it was installed from the peer.
    fn ours_now(&self, dp: &Datapath, key: &FlowKey) -> bool {
        let at = self
            .from_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied();
        match (dp.flow(key), at) {
            (Some(f), Some(at)) => f.last_seen_ns > at,
            _ => false,
        }
    }

    fn remove(&mut self, dp: &mut Datapath, key: &FlowKey) {
        self.from_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some((reply_key, real_id)) = self.installed.remove(key) {
            match dp.remove_flow(key, &reply_key, real_id) {
                Ok(true) => self.removed_total += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::debug!(error = %format!("{err:#}"), "removing a synced flow failed")
                }
            }
        }
    }

    fn refuse(&mut self, why: Refused) {
        let i = Refused::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i] += 1;
    }

    /// Why this LB is not synced yet, if it must be: it has not had a whole round from the
    /// peer, and the peer has been heard from within `wait` (or lbctl started less than
    /// `wait` ago). A peer silent for longer is gone: this LB serves without it.
    pub fn not_synced(&self) -> Option<String> {
        if self.rounds.synced_at.is_some() {
            return None;
        }
        let wait = self.settings.wait;
        let heard = self.counts.last_arrived_ms.load(Ordering::Relaxed);
        let silent_for = if heard == 0 {
            self.started.elapsed()
        } else {
            Duration::from_millis(super::wire::now_ms().saturating_sub(heard))
        };
        (silent_for < wait).then(|| {
            format!(
                "flow sync: no whole round from the peer {} yet (it is waited for up to {} of silence)",
                self.settings.peer,
                humantime::format_duration(wait)
            )
        })
    }

    /// Milliseconds from the peer sending its last message to its arrival here.
    pub fn lag_ms(&self) -> u64 {
        let sent = self.counts.last_sent_ms.load(Ordering::Relaxed);
        let arrived = self.counts.last_arrived_ms.load(Ordering::Relaxed);
        arrived.saturating_sub(sent)
    }

    /// What `/metrics` shows.
    pub fn view(&self) -> crate::http::SyncView {
        let c = &self.counts;
        crate::http::SyncView {
            records: vec![
                ("sent", c.sent_records.load(Ordering::Relaxed)),
                ("received", c.received_records.load(Ordering::Relaxed)),
                ("installed", self.installed_total),
                ("removed", self.removed_total),
            ],
            dropped: super::wire::Dropped::ALL
                .iter()
                .zip(&c.dropped)
                .map(|(d, n)| (d.name(), n.load(Ordering::Relaxed)))
                .chain(
                    Refused::ALL
                        .iter()
                        .zip(self.refused)
                        .map(|(r, n)| (r.name(), n)),
                )
                .collect(),
            lag_ms: self.lag_ms(),
            synced: self.rounds.synced_at.is_some(),
        }
    }

    /// One line for `lbctl status`.
    pub fn line(&self) -> String {
        let c = &self.counts;
        let dropped: Vec<String> = super::wire::Dropped::ALL
            .iter()
            .zip(&c.dropped)
            .filter(|(_, n)| n.load(Ordering::Relaxed) > 0)
            .map(|(d, n)| format!("{} {}", d.name(), n.load(Ordering::Relaxed)))
            .chain(
                Refused::ALL
                    .iter()
                    .zip(self.refused)
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| format!("{} {n}", r.name())),
            )
            .collect();
        let synced = match self.rounds.synced_at {
            Some(t) => format!(
                "synced (last whole round {} ago)",
                humantime::format_duration(Duration::from_millis(t.elapsed().as_millis() as u64))
            ),
            None => "not synced yet".into(),
        };
        format!(
            "with {}: {synced}; holding {} of the peer's flows; sent {}, received {}, installed {}, removed {}, dropped {}; lag {} ms",
            self.settings.peer,
            self.installed.len(),
            c.sent_records.load(Ordering::Relaxed),
            c.received_records.load(Ordering::Relaxed),
            self.installed_total,
            self.removed_total,
            if dropped.is_empty() { "0".to_owned() } else { dropped.join(", ") },
            self.lag_ms()
        )
    }
}
