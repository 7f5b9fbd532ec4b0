//! An XDP program that passes every frame, for the lab's own switch ports. veth drops the
//! frames an XDP program sends (XDP_TX, redirect) to a peer that has no XDP program of its
//! own, so the bridge ports facing the balancer need one. It is two instructions, loaded
//! with bpf(2) directly: the lab needs nothing of lbctl's object for its wiring, and lbctl
//! itself is what the lab tests, never part of the lab.

use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{bail, Context as _, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: i32 = 2;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `r0 = XDP_PASS; exit`.
static PASS: [Insn; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K: r0 = imm.
    Insn {
        code: 0xb7,
        regs: 0,
        off: 0,
        imm: XDP_PASS,
    },
    // BPF_JMP | BPF_EXIT.
    Insn {
        code: 0x95,
        regs: 0,
        off: 0,
        imm: 0,
    },
];

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel zero-extends the rest.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The leading fields of `union bpf_attr` for BPF_LINK_CREATE.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// The pass program attached to some interfaces of the calling thread's namespace; each
/// attachment is a BPF link, gone when this is dropped.
pub struct PassPrograms {
    _links: Vec<OwnedFd>,
    _prog: OwnedFd,
}

/// Attaches the pass program to each of `ifaces`, in the namespace of the calling thread.
pub fn attach(ifaces: &[&str]) -> Result<PassPrograms> {
    let prog = load()?;
    let mut links = Vec::new();
    for iface in ifaces {
        let name = std::ffi::CString::new(*iface).context("an interface name with a NUL")?;
        // SAFETY: if_nametoindex reads the NUL-terminated name and nothing else.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {iface} to attach the pass program to");
        }
        let attr = LinkCreate {
            prog_fd: raw(&prog),
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: 0,
        };
        let fd = bpf(BPF_LINK_CREATE, &attr)
            .with_context(|| format!("attaching the lab's pass program to {iface}"))?;
        links.push(fd);
    }
    Ok(PassPrograms {
        _links: links,
        _prog: prog,
    })
}

fn load() -> Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"lab_pass");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: PASS.len() as u32,
        insns: PASS.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    bpf(BPF_PROG_LOAD, &attr).context("loading the lab's pass program (needs root)")
}

fn raw(fd: &OwnedFd) -> u32 {
    use std::os::fd::AsRawFd as _;
    fd.as_raw_fd() as u32
}

/// bpf(2) with `attr`, returning the file descriptor it makes.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> Result<OwnedFd> {
    // SAFETY: `attr` is a valid, initialised `bpf_attr` prefix of its own size; the pointers
    // inside it (instructions, license) point at statics that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a successful BPF_PROG_LOAD/BPF_LINK_CREATE returns a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}
