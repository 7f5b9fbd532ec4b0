//! FULL_PATH: the program array through which the established path (`lb_xdp`) hands every
//! packet it does not forward itself to the full path (`lb_full`).
//!
//! The kernel empties a program array once no process holds it open and no pin holds it:
//! after an lbctl exits with `--keep-on-exit`, its program would find no full path (new
//! flows passed as `pass_no_full_path`). So with a state directory each lbctl pins its own
//! array under a name of its own (`FULL_PATH_<program id>`; bpffs takes no dots in names),
//! and never takes an earlier one's over: the earlier program keeps its own full path until
//! this one is swapped in, and then this one's pin is the only one left.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Map, MapData, ProgramArray},
    programs::Xdp,
    Ebpf,
};
use lb_common::{map_names, program_names};
use tracing::warn;

use super::pins::StateDir;

/// This lbctl's FULL_PATH, filled, and where it is pinned.
pub(super) struct FullPath {
    _map: ProgramArray<MapData>,
    pin: Option<PathBuf>,
}

/// Puts the loaded `lb_full` of `ebpf` into its FULL_PATH, pinned in `pins` when given.
pub(super) fn fill(ebpf: &mut Ebpf, pins: Option<&StateDir>) -> Result<FullPath> {
    let map = ebpf
        .take_map(map_names::FULL_PATH)
        .ok_or_else(|| anyhow!("the eBPF object has no map FULL_PATH: lbctl was built wrong"))?;
    let pin = match (&map, pins) {
        (Map::ProgramArray(data), Some(dir)) => {
            let lb: &Xdp = ebpf
                .program(program_names::LB)
                .ok_or_else(|| anyhow!("the eBPF object has no program {}", program_names::LB))?
                .try_into()?;
            let id = lb
                .info()
                .context("asking the kernel for the balancer's id")?
                .id();
            let path = dir.map_path(&format!("{}_{id}", map_names::FULL_PATH));
            data.pin(&path)
                .with_context(|| format!("pinning {}", path.display()))?;
            Some(path)
        }
        _ => None,
    };
    let mut array = ProgramArray::try_from(map).context("FULL_PATH is no program array")?;
    let full: &Xdp = ebpf
        .program(program_names::FULL)
        .ok_or_else(|| anyhow!("the eBPF object has no program {}", program_names::FULL))?
        .try_into()?;
    let fd = full.fd().context("the full path's program is not loaded")?;
    array.set(0, fd, 0).context("writing FULL_PATH")?;
    Ok(FullPath { _map: array, pin })
}

impl FullPath {
    /// Once this lbctl's program is attached everywhere: removes the pins of the full paths
    /// of earlier programs (no longer attached), so their arrays go with them.
    pub(super) fn unpin_others(&self, pins: &StateDir) -> Result<()> {
        let prefix = format!("{}_", map_names::FULL_PATH);
        for entry in std::fs::read_dir(pins.path())
            .with_context(|| format!("reading {}", pins.path().display()))?
        {
            let path = entry?.path();
            let ours = self.pin.as_ref() == Some(&path);
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(&prefix) && !ours {
                if let Err(e) = std::fs::remove_file(&path) {
                    warn!(path = %path.display(), error = %e, "could not unpin an earlier lbctl's full path");
                }
            }
        }
        Ok(())
    }
}
