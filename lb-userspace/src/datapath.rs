//! The loaded XDP object and the only code that knows its map names. Everything else speaks
//! in verbs: `add_vip`, `set_reals`, `attach`, `counters`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use lb_common::{
    map_names, program_names, Counter, IfaceConfig, RealEntry, VipMeta, MAX_REALS, MAX_VIPS,
    RING_SIZE,
};
use tracing::warn;

use crate::{
    ring,
    spec::{Mode, VipSpec},
    stats::CounterTable,
};

/// A backend server as the datapath needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Real {
    pub addr: IpAddr,
    pub mac: [u8; 6],
}

impl Real {
    fn entry(&self) -> RealEntry {
        match self.addr {
            IpAddr::V4(a) => RealEntry::v4(a.octets(), self.mac),
            IpAddr::V6(a) => RealEntry::v6(a.octets(), self.mac),
        }
    }
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the kernel's generic path, because the native attach failed (most often: the
    /// driver has no XDP support).
    Generic,
}

type Ring = Array<MapData, u32>;

/// The loaded program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    vips: HashMap<MapData, lb_common::VipKey, VipMeta>,
    reals: Array<MapData, RealEntry>,
    rings: ArrayOfMaps<MapData, Ring>,
    counters: PerCpuArray<MapData, Counter>,
    vip_counters: PerCpuArray<MapData, Counter>,
    config: Array<MapData, IfaceConfig>,
    vip_ids: BTreeMap<VipSpec, u32>,
    /// The reals of each VIP, as last set.
    vip_reals: BTreeMap<VipSpec, Vec<Real>>,
    real_ids: BTreeMap<Real, u32>,
    /// The modes in use, to check the interface when attaching.
    vip_modes: BTreeSet<Mode>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("the eBPF object has no map {name}: lbctl was built wrong"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl Datapath {
    /// Loads the embedded object into the kernel (programs verified, maps created, nothing
    /// attached yet).
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(crate::LB_EBPF_OBJECT).context(
            "loading the eBPF object failed: lbctl needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF",
        )?;
        for name in [program_names::LB, program_names::PASS, program_names::DECAP] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        Ok(Self {
            vips: take(&mut ebpf, map_names::VIPS)?,
            reals: take(&mut ebpf, map_names::REALS)?,
            rings: take(&mut ebpf, map_names::RINGS)?,
            counters: take(&mut ebpf, map_names::COUNTERS)?,
            vip_counters: take(&mut ebpf, map_names::VIP_COUNTERS)?,
            config: take(&mut ebpf, map_names::CONFIG)?,
            ebpf,
            vip_ids: BTreeMap::new(),
            vip_reals: BTreeMap::new(),
            real_ids: BTreeMap::new(),
            vip_modes: BTreeSet::new(),
        })
    }

    /// Starts serving `vip` in `mode`, with no reals yet (its packets are dropped as
    /// `drop_no_real` until `set_reals`).
    pub fn add_vip(&mut self, vip: VipSpec, mode: Mode) -> Result<u32> {
        if self.vip_ids.contains_key(&vip) {
            bail!("VIP {vip} is already configured");
        }
        let used: BTreeSet<u32> = self.vip_ids.values().copied().collect();
        let vip_id = (0..MAX_VIPS)
            .find(|id| !used.contains(id))
            .ok_or_else(|| anyhow!("cannot add {vip}: all {MAX_VIPS} VIP slots are in use"))?;
        // The ring goes in before the VIP entry, so no packet ever finds a VIP without one.
        self.install_ring(vip_id, &ring::striped(&[], RING_SIZE))?;
        self.vips
            .insert(vip.key(), VipMeta::new(vip_id, mode.code()), 0)
            .context("writing VIPS")?;
        self.vip_ids.insert(vip, vip_id);
        self.vip_modes.insert(mode);
        Ok(vip_id)
    }

    /// Replaces the set of reals of `vip`. Packets hash over the new set at once; the ring is
    /// striped, not consistent, so flows of unchanged reals may move too (until Maglev).
    pub fn set_reals(&mut self, vip: &VipSpec, reals: &[Real]) -> Result<()> {
        let vip_id = *self
            .vip_ids
            .get(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?;
        let mut ids = Vec::with_capacity(reals.len());
        for real in reals {
            ids.push(self.real_id(real)?);
        }
        let installed = self.install_ring(vip_id, &ring::striped(&ids, RING_SIZE));
        if installed.is_ok() {
            self.vip_reals.insert(*vip, reals.to_vec());
        }
        self.free_unused_real_ids();
        installed
    }

    /// Returns the ids of reals no VIP uses any more to the pool. Their REALS slots keep
    /// their contents until reused, so a packet still holding an old ring finds a real.
    fn free_unused_real_ids(&mut self) {
        let in_use: BTreeSet<Real> = self.vip_reals.values().flatten().copied().collect();
        self.real_ids.retain(|real, _| in_use.contains(real));
    }

    fn real_id(&mut self, real: &Real) -> Result<u32> {
        if let Some(id) = self.real_ids.get(real) {
            return Ok(*id);
        }
        // Id 0 stays empty: it is what an unfilled ring slot points at.
        let used: BTreeSet<u32> = self.real_ids.values().copied().collect();
        let id = (1..MAX_REALS)
            .find(|id| !used.contains(id))
            .ok_or_else(|| {
                anyhow!(
                    "cannot add real {}: all {} real slots are in use",
                    real.addr,
                    MAX_REALS - 1
                )
            })?;
        self.reals
            .set(id, real.entry(), 0)
            .context("writing REALS")?;
        self.real_ids.insert(*real, id);
        Ok(id)
    }

    /// Builds the ring in a fresh map and swaps it in with one update of RINGS.
    fn install_ring(&mut self, vip_id: u32, slots: &[u32]) -> Result<()> {
        let mut ring = Ring::create(RING_SIZE, 0).context("creating a ring map")?;
        for (slot, real_id) in slots.iter().enumerate() {
            if *real_id != 0 {
                ring.set(slot as u32, real_id, 0)
                    .context("filling a ring map")?;
            }
        }
        self.rings
            .set(vip_id, &ring, 0)
            .context("installing a ring in RINGS")?;
        Ok(())
    }

    /// Attaches the balancer to `iface`: natively when the driver can, else in generic mode
    /// with a warning. Detached again when the `Datapath` is dropped.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode> {
        let config = crate::iface::config(iface)?;
        if config.ipv4 == [0; 4] && self.vip_modes.contains(&Mode::Tunnel) {
            bail!("tunnel mode sends from an IPv4 address of {iface}, and it has none: add one (`ip addr add ... dev {iface}`)");
        }
        self.set_interface(config)?;
        self.attach_program(program_names::LB, iface)
    }

    /// Attaches the decapsulation program, for a real server of tunnel-mode VIPs: IP-in-IP
    /// sent to the interface's IPv4 address is unwrapped and passed up the stack.
    pub fn attach_decap(&mut self, iface: &str) -> Result<AttachMode> {
        let config = crate::iface::config(iface)?;
        if config.ipv4 == [0; 4] {
            bail!(
                "{iface} has no IPv4 address: decap accepts tunnels sent to it, so add one first"
            );
        }
        self.set_interface(config)?;
        self.attach_program(program_names::DECAP, iface)
    }

    fn attach_program(&mut self, name: &str, iface: &str) -> Result<AttachMode> {
        let prog = self.program(name)?;
        match prog.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok(AttachMode::Native),
            Err(native) => {
                warn!(%iface, error = %native, "native XDP attach failed; falling back to generic (skb) mode, which is slower");
                prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {iface} failed in native ({native}) and generic mode: does the interface exist, and is another XDP program attached?"))?;
                Ok(AttachMode::Generic)
            }
        }
    }

    /// Facts about the interface the program serves (MAC, MTU, IPv4 address): VIP frames must
    /// be addressed to its MAC and leave from it. The attach verbs set them from the interface.
    pub fn set_interface(&mut self, config: IfaceConfig) -> Result<()> {
        self.config.set(0, config, 0).context("writing CONFIG")
    }

    /// Attaches the pass-everything program to `iface`: what a veth peer needs to accept the
    /// frames XDP_TX sends it. Detached when the `Datapath` is dropped.
    pub fn attach_pass(&mut self, iface: &str) -> Result<()> {
        self.program(program_names::PASS)?
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching the pass program to {iface}"))?;
        Ok(())
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?
            .try_into()?)
    }

    /// Runs the balancer once on `frame` with BPF_PROG_TEST_RUN: the XDP action and the frame
    /// as it would leave.
    pub fn run_frame(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.run_program(program_names::LB, frame)
    }

    /// Runs the decap program once on `frame`, as [`Datapath::run_frame`] does the balancer.
    pub fn run_decap_frame(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.run_program(program_names::DECAP, frame)
    }

    fn run_program(&self, name: &str, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }

    /// The global counters, summed over CPUs.
    pub fn counters(&self) -> Result<CounterTable> {
        CounterTable::read(&self.counters)
    }

    /// Packets and bytes forwarded for `vip`, summed over CPUs.
    pub fn vip_forwarded(&self, vip: &VipSpec) -> Result<Counter> {
        let vip_id = *self
            .vip_ids
            .get(vip)
            .ok_or_else(|| anyhow!("VIP {vip} is not configured"))?;
        crate::stats::sum_slot(&self.vip_counters, vip_id)
    }
}
