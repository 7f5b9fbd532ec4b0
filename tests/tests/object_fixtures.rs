//! What the objects hold: the one lbctl embeds has the product's programs and nothing else;
//! the benchmark object, which only this crate embeds, has the harness and none of the
//! balancer's maps (the balancer it measures is the shipped one, tail-called).

use std::collections::BTreeSet;

use lb_common::program_names;
use tests::bench_object::LB_BENCH_OBJECT;

/// The programs and the maps of an object, by name.
fn contents(object: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    let obj = aya_obj::Object::parse(object).expect("the object parses");
    (
        obj.programs.keys().cloned().collect(),
        obj.maps.keys().cloned().collect(),
    )
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|n| n.to_string()).collect()
}

#[test]
fn lbctl_ships_the_balancer_decap_and_pass_programs_only() {
    let (programs, maps) = contents(lb_userspace::LB_EBPF_OBJECT);
    assert_eq!(
        programs,
        names(&[
            program_names::LB,
            program_names::FULL,
            program_names::DECAP,
            program_names::PASS,
        ]),
        "the programs of the object lbctl embeds (its maps: {maps:?})"
    );
    let bench: Vec<&String> = maps.iter().filter(|m| m.starts_with("BENCH")).collect();
    assert!(
        bench.is_empty(),
        "benchmark maps in the object lbctl embeds: {bench:?} (all its maps: {maps:?})"
    );
}

#[test]
fn the_benchmark_object_has_the_harness_and_none_of_the_balancers_maps() {
    let (programs, maps) = contents(LB_BENCH_OBJECT);
    assert_eq!(
        programs,
        names(&[
            program_names::BENCH,
            program_names::BENCH_FLOOR,
            program_names::BENCH_SWAP,
            program_names::BENCH_GEN,
            program_names::BENCH_SINK,
            program_names::BENCH_REDIRECT,
        ]),
        "the programs of the benchmark object"
    );
    let (_, shipped) = contents(lb_userspace::LB_EBPF_OBJECT);
    let shared: Vec<&String> = maps
        .intersection(&shipped)
        .filter(|m| !m.starts_with('.'))
        .collect();
    assert!(
        shared.is_empty(),
        "the benchmark object has maps of the balancer: {shared:?} (its maps: {maps:?})"
    );
}

/// The established path's structural goal, counted from its instructions: `lb_xdp` makes no
/// BPF-to-BPF call, and asks no hash map but the flow table (array lookups cost an inlined
/// index; hash lookups a call into the kernel and a hash). The goal allows two.
#[test]
fn the_established_path_makes_no_call_and_asks_only_the_flow_table_of_the_hash_maps() {
    let shape = tests::program_shape::of(lb_userspace::LB_EBPF_OBJECT, program_names::LB)
        .expect("lb_xdp's shape");
    println!("{shape:?}");
    assert_eq!(shape.bpf_to_bpf_calls, 0, "{shape:?}");
    assert!(
        shape.tail_calls >= 1,
        "the hand-over to the full path: {shape:?}"
    );
    let hashed: Vec<&String> = shape
        .lookups
        .keys()
        .filter(|m| ["VIPS", "ENDPOINTS", "OPEN", "FLOWS", "IFACES"].contains(&m.as_str()))
        .collect();
    assert_eq!(hashed, ["FLOWS"], "{shape:?}");
    assert!(!shape.lookups.contains_key("(unknown)"), "{shape:?}");
    // The full path, for contrast, calls its steps.
    let full = tests::program_shape::of(lb_userspace::LB_EBPF_OBJECT, program_names::FULL)
        .expect("lb_full's shape");
    assert!(full.bpf_to_bpf_calls > 0, "{full:?}");
}
