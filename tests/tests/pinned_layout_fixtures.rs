//! The pinned state of the built object: what a restarted or upgraded lbctl takes over.

use lb_common::map_names;

/// Every map of the program is either pinned or known to hold nothing between packets: a
/// map added later cannot be left out of restarts by accident.
#[test]
fn every_map_is_kept_or_known_to_be_transient() {
    // .rodata and .rodata.*: the program's constants (aya-log's among them), loaded from the
    // object each time. Mutable globals (.data, .bss) lose their values on a restart: only
    // the one TRANSIENT names (.bss, the observe switch, off at every start) is allowed.
    let constants = |name: &str| name == ".rodata" || name.starts_with(".rodata.");
    let transient = |name: &str| constants(name) || map_names::TRANSIENT.contains(&name);
    let obj = aya_obj::Object::parse(lb_userspace::LB_EBPF_OBJECT).unwrap();
    for name in obj.maps.keys() {
        assert!(
            map_names::KEPT.contains(&name.as_str()) || transient(name),
            "map {name} is neither pinned (map_names::KEPT) nor transient"
        );
    }
    for name in map_names::KEPT {
        assert!(
            obj.maps.contains_key(*name),
            "KEPT names {name}, which the program lacks"
        );
    }
}

/// The maps this build pins are exactly the current layout's table: a map whose shape
/// changes without a new layout (and its migration, and a row in the upgrade test) fails
/// here.
#[test]
fn the_pinned_maps_are_the_current_layout() {
    use lb_userspace::datapath::layout::{self, Shape, CURRENT};
    let obj = aya_obj::Object::parse(lb_userspace::LB_EBPF_OBJECT).unwrap();
    let table = layout::maps(CURRENT).expect("the current layout has a table");
    let mut names: Vec<&str> = map_names::KEPT.to_vec();
    names.sort_unstable();
    assert_eq!(
        names,
        table.keys().copied().collect::<Vec<_>>(),
        "the pinned maps differ from layout {CURRENT}'s"
    );
    for name in map_names::KEPT {
        let m = &obj.maps[*name];
        let have = Shape {
            map_type: m.map_type(),
            key: m.key_size(),
            value: m.value_size(),
            entries: Some(m.max_entries()),
            flags: m.map_flags(),
        };
        assert!(
            layout::fits(&table[name], &have),
            "map {name} is {have:?} in this build, {:?} in layout {CURRENT}: a new layout, with its migration, is due",
            table[name]
        );
    }
}
