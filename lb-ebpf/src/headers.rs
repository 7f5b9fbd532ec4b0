//! Wire headers as byte-array structs: no alignment requirement, no endianness surprises.

pub const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];

/// A MAC copied byte by byte. Copied whole between the frame and map memory, which the
/// compiler cannot tell apart, a MAC becomes a call to memmove: a BPF-to-BPF call on every
/// packet (`tests::program_shape` finds them).
#[inline(always)]
pub fn mac(m: &[u8; 6]) -> [u8; 6] {
    [m[0], m[1], m[2], m[3], m[4], m[5]]
}
pub const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Whether an IPv6 next-header value is an extension header: IANA's "IPv6 Extension Header
/// Types" (hop-by-hop options, routing, fragment, AH, destination options, mobility, HIP,
/// shim6, the two experimental values), less ESP, whose encrypted payload makes it a
/// protocol of its own to an LB.
#[inline(always)]
pub const fn is_ipv6_extension(next_hdr: u8) -> bool {
    matches!(
        next_hdr,
        0 | 43 | IPPROTO_FRAGMENT | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

const _: () = assert!(core::mem::size_of::<EthHdr>() == 14);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == 40);
const _: () = assert!(core::mem::size_of::<L4Ports>() == 4);
const _: () = assert!(core::mem::size_of::<TcpHdr>() == 20);
const _: () = assert!(core::mem::size_of::<UdpHdr>() == 8);

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    /// The MF flag or a non-zero fragment offset: part of a fragmented datagram.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag_off) & 0x3fff != 0
    }
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// The first four bytes of TCP and UDP alike.
#[repr(C)]
pub struct L4Ports {
    pub src: [u8; 2],
    pub dst: [u8; 2],
}

/// TCP's fixed header.
#[repr(C)]
pub struct TcpHdr {
    pub ports: L4Ports,
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub data_off: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urgent: [u8; 2],
}

#[repr(C)]
pub struct UdpHdr {
    pub ports: L4Ports,
    pub len: [u8; 2],
    pub check: [u8; 2],
}

/// Offset of the checksum field in a TCP or UDP header.
#[inline(always)]
pub const fn l4_check_offset(proto: u8) -> usize {
    if proto == lb_common::PROTO_TCP {
        16
    } else {
        6
    }
}
