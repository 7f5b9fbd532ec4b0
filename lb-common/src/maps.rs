//! Map keys and values.

use core::mem::size_of;

/// Most VIPs one program serves (VIPS hash capacity, VIP_COUNTERS and RINGS length).
pub const MAX_VIPS: u32 = 512;
/// Most reals across all VIPs (REALS array length).
pub const MAX_REALS: u32 = 4096;
/// Slots in each VIP's lookup ring. A prime, as Maglev's table construction requires, so the
/// consistent-hashing builder that comes with the schedulers fills the same ring.
pub const RING_SIZE: u32 = 65537;
/// Seed of the flow hash. Fixed, so two LBs with the same config pick the same real for a flow.
pub const FLOW_HASH_SEED: u32 = 0x5eed_1b01;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Slots of the CONFIG array.
pub const CONFIG_SLOTS: u32 = 1;

/// Forwarding mode of a VIP: direct server return, destination MAC rewrite only.
pub const MODE_DSR: u8 = 1;
/// Forwarding mode of a VIP: IP-in-IP (6in4 for IPv6 VIPs) to the real, which decapsulates.
pub const MODE_TUNNEL: u8 = 2;

/// Address family as stored in maps (`VipKey::family`, `RealEntry::family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4 = 4,
    V6 = 6,
}

/// An IPv4 address as maps hold it: the first 4 of 16 bytes, the rest zero.
const fn v4_in_16(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Value of the CONFIG array: facts about the interface the program is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// The interface's MAC: VIP frames must be addressed to it, and leave from it.
    pub mac: [u8; 6],
    /// The interface's MTU: the largest IP packet it sends.
    pub mtu: u16,
    /// The interface's IPv4 address: the tunnel source on the LB, the address tunnelled
    /// packets must be sent to on a real. All zero when it has none.
    pub ipv4: [u8; 4],
}
const _: () = assert!(size_of::<IfaceConfig>() == 12);

/// Key of the VIPS map: destination address, port and protocol of a virtual service.
/// IPv4 addresses occupy the first 4 bytes of `addr`, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    addr: [u8; 16],
    port: [u8; 2],
    proto: u8,
    family: u8,
}
const _: () = assert!(size_of::<VipKey>() == 20);

impl VipKey {
    pub const fn v4(addr: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            addr: v4_in_16(addr),
            port: port.to_be_bytes(),
            proto,
            family: Family::V4 as u8,
        }
    }

    pub const fn v6(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr,
            port: port.to_be_bytes(),
            proto,
            family: Family::V6 as u8,
        }
    }

    /// Key from raw network-order fields, as the datapath reads them from a packet.
    #[inline(always)]
    pub const fn from_wire(addr: [u8; 16], port: [u8; 2], proto: u8, family: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            family,
        }
    }

    pub const fn addr_bytes(&self) -> [u8; 16] {
        self.addr
    }
    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
    pub const fn proto(&self) -> u8 {
        self.proto
    }
    pub const fn family(&self) -> u8 {
        self.family
    }
}

/// Value of the VIPS map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipMeta {
    /// Index into RINGS and VIP_COUNTERS.
    pub vip_id: u32,
    /// One of the `MODE_*` constants.
    pub mode: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<VipMeta>() == 8);

impl VipMeta {
    pub const fn new(vip_id: u32, mode: u8) -> Self {
        Self {
            vip_id,
            mode,
            _pad: [0; 3],
        }
    }
}

/// Value of the REALS array: one backend server.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealEntry {
    addr: [u8; 16],
    mac: [u8; 6],
    family: u8,
    /// Non-zero when the slot holds a real; an all-zero slot is unused.
    in_use: u8,
}
const _: () = assert!(size_of::<RealEntry>() == 24);

impl RealEntry {
    pub const fn v4(addr: [u8; 4], mac: [u8; 6]) -> Self {
        Self {
            addr: v4_in_16(addr),
            mac,
            family: Family::V4 as u8,
            in_use: 1,
        }
    }

    pub const fn v6(addr: [u8; 16], mac: [u8; 6]) -> Self {
        Self {
            addr,
            mac,
            family: Family::V6 as u8,
            in_use: 1,
        }
    }

    pub const fn mac(&self) -> [u8; 6] {
        self.mac
    }
    pub const fn addr_bytes(&self) -> [u8; 16] {
        self.addr
    }
    pub const fn family(&self) -> u8 {
        self.family
    }
    pub const fn in_use(&self) -> bool {
        self.in_use != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), every field an integer or byte array, padding explicit.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RealEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IfaceConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_key_holds_wire_order_and_zero_extends_ipv4() {
        let k = VipKey::v4([198, 18, 100, 10], 0x1f90, PROTO_TCP);
        assert_eq!(
            k,
            VipKey::from_wire(
                [198, 18, 100, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                [0x1f, 0x90],
                6,
                4
            )
        );
        assert_eq!((k.port(), k.family()), (8080, Family::V4 as u8));
    }

    #[test]
    fn real_entry_slot_zero_is_unused() {
        // An all-zero REALS slot (what id 0 and unfilled slots hold) must read as unused.
        // SAFETY: RealEntry is plain bytes; all-zero is a valid value.
        let zero: RealEntry = unsafe { core::mem::zeroed() };
        assert!(!zero.in_use());
        assert!(RealEntry::v4([1, 2, 3, 4], [2; 6]).in_use());
    }
}
