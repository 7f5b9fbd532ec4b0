//! The flows whose start was logged, so that their ends get a duration: a TCP flow's end
//! comes from the datapath (its first FIN or RST); a flow that just goes idle (every UDP
//! flow, a TCP flow whose ends vanished) is found here, checking the flow table a bounded
//! number of flows per tick. Bounded in memory too: past [`CAPACITY`] flows, new ones are
//! not followed (their ends still come, without a duration).

use std::collections::{HashMap, VecDeque};

use lb_common::{FlowEvent, FlowKey};

/// Flows followed at most (about 200 bytes each: some 200 MiB at the limit).
pub const CAPACITY: usize = 1 << 20;
/// Flow-table lookups per idle check at most.
pub const CHECKS_PER_TICK: usize = 50_000;

/// What the flow table says of a followed flow's request entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// There, not expired.
    Live,
    /// There, idle past its timeout since `last_seen_ns`.
    Expired { last_seen_ns: u64 },
    /// Not there: evicted, or removed at an RST whose event was dropped.
    Gone,
}

/// How a followed flow ended, found by [`Open::idle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// It went idle: its last packet at `last_seen_ns`.
    Expired { last_seen_ns: u64 },
    /// Its entry went without an end seen.
    Gone,
}

/// The flows followed, by request tuple: each one's new-flow event.
#[derive(Default)]
pub struct Open {
    started: HashMap<FlowKey, FlowEvent>,
    /// The order idle checks go through them (a key may be here after its flow ended: it is
    /// skipped then).
    queue: VecDeque<FlowKey>,
    /// New flows not followed: the table was full.
    pub not_followed: u64,
}

/// The request tuple of an event: client → VIP.
pub fn key_of(e: &FlowEvent) -> FlowKey {
    FlowKey {
        src: e.client,
        dst: e.vip,
        sport: e.client_port,
        dport: e.vip_port,
        proto: e.proto,
        family: e.family,
        _pad: [0; 2],
    }
}

impl Open {
    /// Follows the new flow of `e` (replacing a flow of the same tuple).
    pub fn started(&mut self, e: &FlowEvent) {
        let key = key_of(e);
        if self.started.len() >= CAPACITY && !self.started.contains_key(&key) {
            self.not_followed += 1;
            return;
        }
        if self.started.insert(key, *e).is_none() {
            self.queue.push_back(key);
        }
        // Keys of flows that ended at a FIN or RST stay queued until checked; past twice
        // the followed flows, they go at once, so the queue stays bounded too.
        if self.queue.len() > 2 * CAPACITY.max(self.started.len()) {
            let started = &self.started;
            self.queue.retain(|k| started.contains_key(k));
        }
    }

    /// The new-flow event of the flow `e` ends, no longer followed; `None` when its start
    /// was not followed.
    pub fn ended(&mut self, e: &FlowEvent) -> Option<FlowEvent> {
        self.started.remove(&key_of(e))
    }

    pub fn len(&self) -> usize {
        self.started.len()
    }

    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
    }

    /// Checks up to [`CHECKS_PER_TICK`] followed flows against the flow table (`entry`):
    /// those that went idle or whose entry is gone end here, with their new-flow events.
    pub fn idle(&mut self, mut entry: impl FnMut(&FlowKey) -> Entry) -> Vec<(FlowEvent, Idle)> {
        let mut ended = Vec::new();
        for _ in 0..self.queue.len().min(CHECKS_PER_TICK) {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            if !self.started.contains_key(&key) {
                continue;
            }
            let end = match entry(&key) {
                Entry::Live => {
                    self.queue.push_back(key);
                    continue;
                }
                Entry::Expired { last_seen_ns } => Idle::Expired { last_seen_ns },
                Entry::Gone => Idle::Gone,
            };
            if let Some(start) = self.started.remove(&key) {
                ended.push((start, end));
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{EVENT_END, EVENT_NEW, PROTO_UDP};

    fn event(kind: u8, port: u16, at_ns: u64) -> FlowEvent {
        let mut client = [0; 16];
        client[..4].copy_from_slice(&[198, 18, 0, 100]);
        let mut vip = [0; 16];
        vip[..4].copy_from_slice(&[198, 18, 100, 10]);
        FlowEvent {
            at_ns,
            client,
            vip,
            real: [0; 16],
            client_port: port.to_be_bytes(),
            vip_port: 53u16.to_be_bytes(),
            real_port: 53u16.to_be_bytes(),
            proto: PROTO_UDP,
            family: 4,
            mode: 0,
            sched: 0,
            kind,
            how: 0,
            slot: 0,
            real_id: 1,
            vip_id: 1,
            cpu: 0,
            _pad: [0; 4],
        }
    }

    #[test]
    fn an_end_finds_its_start_once() {
        let mut open = Open::default();
        open.started(&event(EVENT_NEW, 40000, 1_000));
        assert_eq!(
            open.ended(&event(EVENT_END, 40000, 9_000)).map(|s| s.at_ns),
            Some(1_000)
        );
        assert_eq!(open.ended(&event(EVENT_END, 40000, 9_500)), None);
        assert!(open.is_empty());
    }

    #[test]
    fn idle_and_vanished_flows_end_at_the_check_and_live_ones_stay() {
        let mut open = Open::default();
        for port in [1, 2, 3] {
            open.started(&event(EVENT_NEW, port, 100));
        }
        let ended = open.idle(|k| match u16::from_be_bytes(k.sport) {
            1 => Entry::Live,
            2 => Entry::Expired { last_seen_ns: 700 },
            _ => Entry::Gone,
        });
        let ports: Vec<(u16, Idle)> = ended
            .iter()
            .map(|(e, how)| (u16::from_be_bytes(e.client_port), *how))
            .collect();
        assert_eq!(
            ports,
            [(2, Idle::Expired { last_seen_ns: 700 }), (3, Idle::Gone)]
        );
        assert_eq!(open.len(), 1);
        // The live one is checked again next time.
        assert_eq!(open.idle(|_| Entry::Gone).len(), 1);
    }
}
