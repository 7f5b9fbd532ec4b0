//! Attaching the balancer over netlink (IFLA_XDP), not as a BPF link: a netlink attachment
//! belongs to the interface, so it outlives lbctl when asked to (`--keep-on-exit`, or a
//! crash), and a new lbctl swaps its program in atomically, in one RTM_SETLINK naming the one
//! it replaces. (Pinning a BPF link would do the same, but some kernels refuse to pin XDP
//! links; this works on every kernel with XDP.) Synchronous, so `Drop` can detach.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use anyhow::{anyhow, bail, Context as _, Result};
use rtnetlink::{
    packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST},
    packet_route::{
        link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
        RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};

/// XDP_FLAGS_* of the kernel's uapi.
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
pub const XDP_FLAGS_DRV_MODE: u32 = 4;
const XDP_FLAGS_REPLACE: u32 = 16;

/// The XDP program attached to an interface, as netlink reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub prog_id: u32,
    /// XDP_FLAGS_DRV_MODE or XDP_FLAGS_SKB_MODE: the mode it runs in, which a replacement
    /// must use too.
    pub mode: u32,
}

/// What is attached to `ifindex`, if anything.
pub fn attached(ifindex: u32) -> Result<Option<Attached>> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let answer = request(RouteNetlinkMessage::GetLink(link))?
        .ok_or_else(|| anyhow!("the kernel did not describe interface {ifindex}"))?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = answer.payload else {
        bail!("an unexpected answer about interface {ifindex}");
    };
    let mut found = (None, 0);
    for a in &link.attributes {
        let LinkAttribute::Xdp(xdp) = a else { continue };
        for x in xdp {
            match x {
                LinkXdp::Attached(XdpAttached::Driver) => found.1 = XDP_FLAGS_DRV_MODE,
                LinkXdp::Attached(XdpAttached::SocketBuffer) => found.1 = XDP_FLAGS_SKB_MODE,
                LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id)
                    if *id != 0 =>
                {
                    found.0 = Some(*id)
                }
                _ => {}
            }
        }
    }
    Ok(found.0.map(|prog_id| Attached {
        prog_id,
        mode: found.1,
    }))
}

/// Attaches `prog` to `ifindex` in `mode` (a XDP_FLAGS_*_MODE, plus
/// XDP_FLAGS_UPDATE_IF_NOEXIST to refuse when something is attached), or, with `replacing`,
/// swaps it for exactly that program in one step; `prog: None` detaches (only `replacing`,
/// when given).
pub fn set(
    ifindex: u32,
    prog: Option<BorrowedFd<'_>>,
    mode: u32,
    replacing: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let mut xdp = vec![
        LinkXdp::Fd(prog.map_or(-1, |p| p.as_raw_fd())),
        LinkXdp::Flags(mode | replacing.map_or(0, |_| XDP_FLAGS_REPLACE)),
    ];
    if let Some(old) = replacing {
        xdp.push(LinkXdp::ExpectedFd(old.as_raw_fd() as u32));
    }
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::Xdp(xdp));
    request(RouteNetlinkMessage::SetLink(link)).map(drop)
}

/// Sends `message` and returns the kernel's answer: a message, or `None` for a bare ACK.
fn request(message: RouteNetlinkMessage) -> Result<Option<NetlinkMessage<RouteNetlinkMessage>>> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
    socket.bind_auto().context("binding a netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting a netlink socket")?;
    let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0).context("sending to netlink")?;
    let mut answer = None;
    // The answer (for GETLINK), then the ACK; or an error.
    loop {
        let (data, _) = socket.recv_from_full().context("reading from netlink")?;
        let mut offset = 0;
        while offset < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .context("reading a netlink answer")?;
            let len = reply.header.length as usize;
            if len == 0 {
                bail!("a malformed netlink answer (a message of length 0)");
            }
            offset += len;
            match &reply.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(std::io::Error::from_raw_os_error(-code.get()))
                            .context("the kernel refused"),
                        None => Ok(answer),
                    }
                }
                NetlinkPayload::InnerMessage(_) => answer = Some(reply),
                _ => {}
            }
        }
    }
}
