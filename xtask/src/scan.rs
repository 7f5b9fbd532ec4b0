//! A host test that reads the code of `tests/`, the lab and the demo for the external
//! programs it runs, and fails for any that `programs.rs` does not list: such a program is
//! on the machine that wrote the test and missing on a fresh one.

use std::path::{Path, PathBuf};

use crate::programs::program;

/// Where external programs are started: the lab, the demo, the tests and the bench.
const SCANNED: &[&str] = &["tests", "lb-lab/src", "lb-userspace/src/demo"];

/// Calls whose first argument is a program to run (the literal may follow on the next line).
const RUNNERS: &[&str] = &["program(", ".command(", ".exec(", "assert_listed("];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
    {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals that come first (after white space) after each `needle` in `code`.
fn literals_after<'a>(code: &'a str, needle: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    code.match_indices(needle).filter_map(move |(i, _)| {
        let rest = code[i + needle.len()..].trim_start().strip_prefix('"')?;
        rest.find('"').map(|end| &rest[..end])
    })
}

#[test]
fn every_program_run_is_listed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in SCANNED {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files to scan", files.len());
    let mut unlisted = Vec::new();
    let mut direct = Vec::new();
    let mut seen = 0;
    for file in &files {
        let code = std::fs::read_to_string(file).expect("readable source");
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        // The lab's check itself (its tests name unlisted programs on purpose).
        if shown.ends_with("lb-lab/src/programs.rs") {
            continue;
        }
        for runner in RUNNERS {
            for name in literals_after(&code, runner) {
                seen += 1;
                if program(name).is_none() {
                    unlisted.push(format!("{shown}: `{name}`"));
                }
            }
        }
        // Only the lab's `programs` module starts programs by name: everything else goes
        // through it, so the lab checks at run time what this test checks here.
        for name in literals_after(&code, "Command::new(") {
            direct.push(format!("{shown}: Command::new(\"{name}\")"));
        }
    }
    assert!(
        seen > 10,
        "found only {seen} programs run: is the scan still right?"
    );
    assert!(
        unlisted.is_empty(),
        "programs run but not in xtask/src/programs.rs (add each with its Debian package):\n{}",
        unlisted.join("\n")
    );
    assert!(
        direct.is_empty(),
        "programs started past the lab's check; use lb_lab::programs::program(NAME) or Netns::command:\n{}",
        direct.join("\n")
    );
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    let code =
        r#"ns.exec("nft", &[rules]); lb_lab::programs::program("wireshark"); x.command("ip")"#;
    let mut found: Vec<&str> = RUNNERS
        .iter()
        .flat_map(|r| literals_after(code, r))
        .collect();
    found.sort();
    assert_eq!(found, ["ip", "nft", "wireshark"]);
    assert!(program("wireshark").is_none() && program("nft").is_some());
}
