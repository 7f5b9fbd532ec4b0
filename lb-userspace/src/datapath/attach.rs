//! Attaching the balancer to interfaces and taking it off: over netlink when the state is
//! pinned (so the program outlives lbctl, and the next one swaps its own in, one step per
//! interface), through aya's links otherwise (tests, the decap program).

use super::*;

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the kernel's generic path, because the native attach failed (most often: the
    /// driver has no XDP support).
    Generic,
    /// Through the link an earlier lbctl left attached, in the mode it chose.
    TakenOver,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::TakenOver => "taken over",
        }
    }
}

/// The program attached to `iface` when it is this state's (it runs on the FLOWS map of
/// `pins`); `None` when nothing is attached; an error naming any other program. `adopted`:
/// this lbctl found state in `pins` (else it made it afresh).
fn attached_ours(
    iface: &str,
    ifindex: u32,
    pins: &pins::StateDir,
    adopted: bool,
) -> Result<Option<(xdp_netlink::Attached, aya::programs::ProgramInfo)>> {
    let flows_id = pins.map_id(map_names::FLOWS)?;
    let Some(old) = xdp_netlink::attached(ifindex)? else {
        return Ok(None);
    };
    let info = program::info(old.prog_id)?;
    let name = info.name_as_str().unwrap_or("?").to_owned();
    let on_our_flows = info.map_ids()?.unwrap_or_default().contains(&flows_id);
    if name == program_names::LB && on_our_flows {
        return Ok(Some((old, info)));
    }
    let dir = pins.path().display();
    if name == program_names::LB && !adopted {
        bail!("{iface} has an lbctl balancer attached (program id {}) whose pinned state is not in {dir}: its pins are gone. Most likely they were on a bpffs that died with the lbctl that pinned them: a /sys/fs/bpf mounted inside `ip netns exec` or a container lives only as long as the process (pins under /sys/fs/bpf there die with it). Its flows cannot be taken over. To go on: detach it (`ip link set dev {iface} xdp off`; its flows end), and keep state on a bpffs that outlives lbctl: one mounted in the host's mount namespace (`mount -t bpf bpf /run/lbctl-bpf`), given with --pin-dir (see lbctl@.service). If another lbctl runs it with another --pin-dir, give this one that directory instead", old.prog_id);
    }
    if name == program_names::LB {
        bail!("{iface} has another lbctl's balancer attached (program id {}), working on other pinned state than {dir}: stop that lbctl, or give this one its --pin-dir", old.prog_id);
    }
    bail!("{iface} has another XDP program attached ({name}, id {}): lbctl replaces only its own. Detach it (`ip link set dev {iface} xdp off`) if it is not needed", old.prog_id);
}

impl Datapath {
    /// Attaches the balancer to `iface`, taking the LB's side of it from the interface
    /// itself. See [`Datapath::attach_all`].
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode> {
        let interface = Interface {
            name: iface.to_owned(),
            ifindex: crate::host::iface::index(iface)?,
            config: crate::host::iface::config(iface)?,
        };
        Ok(self.attach_all(&[interface])?[0])
    }

    /// Attaches the balancer to every interface of `ifaces`: natively when the driver can,
    /// else in generic mode with a warning. Detached again when the `Datapath` is dropped.
    pub fn attach_all(&mut self, ifaces: &[Interface]) -> Result<Vec<AttachMode>> {
        // Tunnels leave from the interfaces their reals are reached through (0: the one the
        // packet came in on, which may be any).
        let tunnel_ifindexes: BTreeSet<u32> = self
            .services
            .values()
            .filter(|s| s.settings.as_ref().is_some_and(|s| s.mode == Mode::Tunnel))
            .flat_map(|s| &s.reals)
            .map(|r| r.ifindex)
            .collect();
        for i in ifaces {
            let tunnels = tunnel_ifindexes.contains(&i.ifindex) || tunnel_ifindexes.contains(&0);
            if tunnels && i.config.ipv4 == [0; 4] {
                bail!("tunnel mode sends from an IPv4 address of {}, and it has none: add one (`ip addr add ... dev {}`)", i.name, i.name);
            }
            self.set_interface(i.ifindex, i.config)?;
        }
        let how = ifaces
            .iter()
            .map(|i| self.attach_lb(&i.name))
            .collect::<Result<Vec<_>>>()?;
        self.detach_left_behind(ifaces)?;
        if let Some(pins) = &self.pins {
            self.full_path.unpin_others(pins)?;
        }
        // The earlier program no longer runs here: what waited for it goes in.
        if self.holding {
            self.holding = false;
            self.install_rings()?;
        }
        Ok(how)
    }

    /// Attaches the balancer to `iface`. With pinned state, over netlink (see
    /// `xdp_netlink`): an earlier lbctl's program still attached there, on the maps this one
    /// took over, is replaced by this one in one step; any other program is left alone.
    fn attach_lb(&mut self, iface: &str) -> Result<AttachMode> {
        let Some(pins) = &self.pins else {
            return self.attach_program(program_names::LB, iface);
        };
        let ifindex = crate::host::iface::index(iface)?;
        let old = attached_ours(iface, ifindex, pins, self.adopted)?;
        let prog = self.program(program_names::LB)?;
        let fd = prog.fd().context("the balancer's program is not loaded")?;
        let fd = fd.as_fd();
        if let Some((old, info)) = old {
            let old_fd = info.fd().context("opening the attached program")?;
            xdp_netlink::set(ifindex, Some(fd), old.mode, Some(old_fd.as_fd()))
                .with_context(|| format!("swapping this program in on {iface}"))?;
            self.netlink_attached
                .insert(iface.to_owned(), (ifindex, old.mode));
            return Ok(AttachMode::TakenOver);
        }
        let native = XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST;
        let how = match xdp_netlink::set(ifindex, Some(fd), native, None) {
            Ok(()) => (XDP_FLAGS_DRV_MODE, AttachMode::Native),
            Err(e) => {
                warn!(%iface, error = %format!("{e:#}"), "native XDP attach failed; falling back to generic (skb) mode, which is slower");
                let generic = XDP_FLAGS_SKB_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST;
                xdp_netlink::set(ifindex, Some(fd), generic, None).with_context(|| {
                    format!("attaching XDP to {iface} failed in native ({e:#}) and generic mode")
                })?;
                (XDP_FLAGS_SKB_MODE, AttachMode::Generic)
            }
        };
        self.netlink_attached
            .insert(iface.to_owned(), (ifindex, how.0));
        Ok(how.1)
    }

    /// Refuses interfaces where another XDP program than this state's is attached: asked
    /// before anything changes, so a refused start leaves a taken-over state as it was.
    pub fn check_attachable(&self, ifaces: &[Interface]) -> Result<()> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        for i in ifaces {
            attached_ours(&i.name, i.ifindex, pins, self.adopted)?;
        }
        Ok(())
    }

    /// Takes the program of this state off interfaces an earlier lbctl served and this one
    /// does not (found in IFACES, which lists every interface the program was given).
    fn detach_left_behind(&mut self, ifaces: &[Interface]) -> Result<()> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        let known: Vec<u32> = self
            .ifaces
            .keys()
            .collect::<Result<_, _>>()
            .context("reading IFACES")?;
        for ifindex in known {
            if ifaces.iter().any(|i| i.ifindex == ifindex) {
                continue;
            }
            let name = format!("interface {ifindex}");
            let (old, info) = match attached_ours(&name, ifindex, pins, self.adopted) {
                Ok(Some(ours)) => ours,
                Ok(None) => continue,
                // Gone since, or another program there now: not this state's to detach.
                Err(e) => {
                    tracing::debug!(ifindex, error = %format!("{e:#}"), "left alone");
                    continue;
                }
            };
            let fd = info.fd().context("opening the attached program")?;
            xdp_netlink::set(ifindex, None, old.mode, Some(fd.as_fd()))
                .with_context(|| format!("detaching from {name}"))?;
            warn!(
                ifindex,
                "detached from an interface the earlier lbctl served and this one is not given"
            );
        }
        Ok(())
    }

    /// Takes this program off `iface` if it is attached there over netlink.
    pub(super) fn detach_netlink(&mut self, iface: &str) -> Result<bool> {
        let Some((ifindex, mode)) = self.netlink_attached.remove(iface) else {
            return Ok(false);
        };
        let prog = self.program(program_names::LB)?;
        let fd = prog.fd().context("the balancer's program is not loaded")?;
        xdp_netlink::set(ifindex, None, mode, Some(fd.as_fd()))
            .with_context(|| format!("detaching from {iface}"))?;
        Ok(true)
    }

    /// Leaves the program attached and the maps pinned when this is dropped, for the next
    /// lbctl to take over (`--keep-on-exit`); by default everything is removed.
    pub fn keep_on_exit(&mut self, keep: bool) {
        self.keep_pins = keep;
    }

    /// Where the state is pinned, if it is.
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pins.as_ref().map(pins::StateDir::path)
    }

    /// Takes the balancer off `iface`; the other interfaces keep it.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        if self.detach_netlink(iface)? {
            return Ok(());
        }
        let link = self
            .links
            .remove(iface)
            .ok_or_else(|| anyhow!("lbctl is not attached to {iface}"))?;
        self.program(program_names::LB)?
            .detach(link)
            .with_context(|| format!("detaching from {iface}"))
    }

    /// Attaches the decapsulation program, for a real server of tunnel-mode VIPs: IP-in-IP
    /// sent to the interface's IPv4 address is unwrapped and passed up the stack.
    pub fn attach_decap(&mut self, iface: &str) -> Result<AttachMode> {
        let config = crate::host::iface::config(iface)?;
        if config.ipv4 == [0; 4] {
            bail!(
                "{iface} has no IPv4 address: decap accepts tunnels sent to it, so add one first"
            );
        }
        self.set_interface(crate::host::iface::index(iface)?, config)?;
        self.attach_program(program_names::DECAP, iface)
    }

    fn attach_program(&mut self, name: &str, iface: &str) -> Result<AttachMode> {
        let prog = self.program(name)?;
        let (link, how) = match prog.attach(iface, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Native),
            Err(native) => {
                warn!(%iface, error = %native, "native XDP attach failed; falling back to generic (skb) mode, which is slower");
                let link = prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {iface} failed in native ({native}) and generic mode: does the interface exist, and is another XDP program attached?"))?;
                (link, AttachMode::Generic)
            }
        };
        self.links.insert(iface.to_owned(), link);
        Ok(how)
    }

    /// The LB's side of interface `ifindex` (MAC, MTU, IPv4 address): VIP frames must be
    /// addressed to its MAC, and frames the LB sends as an L3 hop leave from it. The attach
    /// verbs set it; BPF_PROG_TEST_RUN runs see the loopback interface (ifindex 1).
    pub fn set_interface(&mut self, ifindex: u32, config: IfaceConfig) -> Result<()> {
        self.ifaces
            .insert(ifindex, config, 0)
            .context("writing IFACES")?;
        // The established path's copy, by index (a later interface of the same slot wins;
        // the other's packets take the full path, which asks IFACES).
        self.iface_slots
            .set(
                ifindex % lb_common::IFACE_SLOTS,
                lb_common::IfaceSlot { ifindex, config },
                0,
            )
            .context("writing IFACE_SLOTS")
    }

    /// Attaches the pass-everything program to `iface`: what a veth peer needs to accept the
    /// frames XDP_TX sends it. Detached when the `Datapath` is dropped.
    pub fn attach_pass(&mut self, iface: &str) -> Result<()> {
        self.program(program_names::PASS)?
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching the pass program to {iface}"))?;
        Ok(())
    }

    pub(super) fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
            .try_into()?)
    }
}
