//! Stage 4: rewrite the frame for the chosen real, per forwarding mode.

use lb_common::Reason;

use crate::{headers::EthHdr, packet::Packet};

/// Direct server return: only the Ethernet header changes. The frame leaves from the interface
/// it arrived on, so that interface's MAC becomes the source.
#[inline(always)]
pub fn dsr(pkt: &Packet, lb_mac: [u8; 6], real_mac: [u8; 6]) -> Result<(), Reason> {
    // SAFETY: ptr_at checked that an EthHdr fits; XDP frames are writable.
    let eth = unsafe { &mut *pkt.ptr_at::<EthHdr>(0)? };
    eth.src = lb_mac;
    eth.dst = real_mac;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsr_rewrites_macs_only() {
        let mut f: Vec<u8> = (0u8..60).collect();
        let before = f.clone();
        let r = f.as_mut_ptr_range();
        // SAFETY: the range is the live buffer `f`.
        let pkt = unsafe { Packet::new(r.start as usize, r.end as usize) };
        dsr(&pkt, [0xbb; 6], [0xaa; 6]).unwrap();
        assert_eq!(f[..6], [0xaa; 6]);
        assert_eq!(f[6..12], [0xbb; 6]);
        assert_eq!(f[12..], before[12..]);
    }
}
