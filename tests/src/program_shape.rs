//! What a program of an object does, counted from its instructions (machine-independent):
//! its BPF-to-BPF calls, tail calls and map lookups, by map. The bench prints it for the
//! balancer's established path (`lb_xdp`), and a fixture holds it to the goal: no
//! BPF-to-BPF call, and hash-map lookups only of the flow and the interface.

use std::collections::{BTreeMap, HashSet};

use anyhow::{anyhow, Context as _, Result};

/// BPF_JMP | BPF_CALL; `src_reg` 1 makes it a call of a function of the program.
const CALL: u8 = 0x85;
const PSEUDO_CALL: u8 = 1;
/// BPF_LD | BPF_IMM | BPF_DW, the 16-byte load that carries a map (src_reg 1: by fd).
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_TAIL_CALL: i32 = 12;
/// A fake fd per map, to tell them apart once the loads are relocated.
const FD_BASE: i32 = 1_000;

/// The counts for one program.
#[derive(Debug, Default)]
pub struct Shape {
    /// Calls of a function of the program (not inlined).
    pub bpf_to_bpf_calls: usize,
    pub tail_calls: usize,
    /// Lookup sites by map name: how often the code asks each map (a path takes some).
    pub lookups: BTreeMap<String, usize>,
}

/// The shape of program `name` of `object`: its own instructions (what it calls would be
/// counted as calls; there is nothing else).
pub fn of(object: &[u8], name: &str) -> Result<Shape> {
    let mut obj = aya_obj::Object::parse(object).context("parsing the object")?;
    let mut names: Vec<String> = obj.maps.keys().cloned().collect();
    names.sort();
    let maps: Vec<(String, aya_obj::Map)> = names
        .iter()
        .map(|n| (n.clone(), obj.maps[n].clone()))
        .collect();
    // Sections of code: relocations into them are calls, not maps.
    let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(
        maps.iter()
            .enumerate()
            .map(|(i, (n, m))| (n.as_str(), FD_BASE + i as i32, m)),
        &text,
    )
    .map_err(|e| anyhow!("relocating maps: {e:?}"))?;
    let program = obj
        .programs
        .get(name)
        .ok_or_else(|| anyhow!("the object has no program {name}"))?;
    let function = obj
        .functions
        .get(&program.function_key())
        .ok_or_else(|| anyhow!("program {name} has no function"))?;
    let mut shape = Shape::default();
    // The map last loaded into r1 (the first argument of a lookup).
    let mut r1: Option<usize> = None;
    let insns = &function.instructions;
    let mut i = 0;
    while i < insns.len() {
        let insn = &insns[i];
        let dst = insn.dst_reg();
        let src = insn.src_reg();
        match insn.code {
            LD_IMM64 => {
                if dst == 1 {
                    r1 = (src == PSEUDO_MAP_FD).then(|| (insn.imm - FD_BASE) as usize);
                }
                i += 2;
                continue;
            }
            CALL if src == PSEUDO_CALL => shape.bpf_to_bpf_calls += 1,
            CALL if insn.imm == HELPER_TAIL_CALL => shape.tail_calls += 1,
            CALL if insn.imm == HELPER_MAP_LOOKUP => {
                let map = r1
                    .and_then(|m| maps.get(m))
                    .map_or("(unknown)".to_owned(), |(n, _)| n.clone());
                *shape.lookups.entry(map).or_default() += 1;
            }
            // Any other write to r1 ends what it held.
            _ if dst == 1 && insn.code & 0x07 != 0x02 && insn.code & 0x07 != 0x03 => r1 = None,
            _ => {}
        }
        i += 1;
    }
    Ok(shape)
}
