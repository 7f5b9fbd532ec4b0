//! `cargo xtask test`: the three test tiers, each run to the end whatever fails
//! (`--no-fail-fast`), and one line per tier at the end.
//!
//! - host: what `cargo test` runs for a contributor, without root or the eBPF toolchain (the
//!   default members: pure logic), and the unit tests of the `tests` package;
//! - bpf: `tests/tests/*_fixtures.rs`, BPF_PROG_TEST_RUN on the built object (root);
//! - netns: `tests/tests/*_e2e.rs`, network-namespace labs on real packets (root).
//!
//! A test file of `tests/tests` in no tier is an error, so no test is left out unseen.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// A tier of tests, as `cargo test` arguments.
pub struct Tier {
    pub name: &'static str,
    /// Each a `cargo test` invocation's arguments (after `test --no-fail-fast`).
    pub runs: Vec<Vec<String>>,
}

/// What one tier's runs printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    /// Test binaries that started and printed no result (crashed, killed).
    pub crashed: Vec<String>,
    /// A `cargo test` run that failed without failing a test (it did not build).
    pub broken_runs: u64,
}

impl Tally {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.crashed.is_empty() && self.broken_runs == 0
    }

    pub fn line(&self, tier: &str) -> String {
        let mut line = format!("{tier} {} passed, {} failed", self.passed, self.failed);
        if !self.crashed.is_empty() {
            line += &format!(
                "; {} test binaries crashed ({})",
                self.crashed.len(),
                self.crashed.join(", ")
            );
        }
        if self.broken_runs > 0 {
            line += "; did not build or run, see above";
        }
        line
    }

    /// Counts one line of `cargo test` output.
    pub fn read_line(&mut self, line: &str, running: &mut Option<String>) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            if let Some(prev) = running.replace(rest.to_owned()) {
                self.crashed.push(binary_name(&prev));
            }
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            *running = None;
            self.passed += count(rest, "passed");
            self.failed += count(rest, "failed");
        } else if let Some(rest) = line.strip_prefix("Doc-tests ") {
            if let Some(prev) = running.replace(format!("doc-tests {rest}")) {
                self.crashed.push(binary_name(&prev));
            }
        }
    }
}

/// `unittests src/lib.rs (target/debug/deps/lb_common-…)` → `lb_common-… (unittests
/// src/lib.rs)`: the binary, which names the crate, and what it tests.
fn binary_name(running: &str) -> String {
    match running.split_once(" (") {
        Some((what, path)) => {
            let binary = path
                .trim_end_matches(')')
                .rsplit('/')
                .next()
                .unwrap_or(path);
            format!("{binary} ({what})")
        }
        None => running.to_owned(),
    }
}

/// The number before `what` in `ok. 3 passed; 0 failed; ...`.
fn count(result: &str, what: &str) -> u64 {
    result
        .split(';')
        .filter_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .split_once(' ')
        })
        .find(|(_, name)| *name == what)
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

/// The tier of a file of `tests/tests`, by its name.
pub fn tier_of(file: &str) -> Option<&'static str> {
    let stem = file.strip_suffix(".rs")?;
    if stem == "fixtures" || stem.ends_with("_fixtures") {
        Some("bpf")
    } else if stem.ends_with("_e2e") {
        Some("netns")
    } else {
        None
    }
}

/// The three tiers, from the files of `tests_dir` (`tests/tests`).
pub fn tiers(tests_dir: &Path, filter: &[String]) -> Result<Vec<Tier>> {
    let mut bpf = Vec::new();
    let mut netns = Vec::new();
    let mut files: Vec<String> = std::fs::read_dir(tests_dir)
        .with_context(|| format!("reading {}", tests_dir.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    files.sort();
    for file in files.iter().filter(|f| f.ends_with(".rs")) {
        let target = file.trim_end_matches(".rs").to_owned();
        match tier_of(file) {
            Some("bpf") => bpf.extend(["--test".to_owned(), target]),
            Some(_) => netns.extend(["--test".to_owned(), target]),
            None => bail!("tests/tests/{file} is in no test tier: name it *_fixtures.rs (BPF_PROG_TEST_RUN, bpf tier) or *_e2e.rs (network namespaces, netns tier)"),
        }
    }
    let with_filter = |mut args: Vec<String>| {
        if !filter.is_empty() {
            args.push("--".into());
            args.extend(filter.iter().cloned());
        }
        args
    };
    let tests_pkg = |targets: Vec<String>| {
        let mut args = vec!["-p".to_owned(), "tests".to_owned()];
        args.extend(targets);
        with_filter(args)
    };
    Ok(vec![
        Tier {
            name: "host",
            runs: vec![
                // Exactly what a contributor's `cargo test` runs (the default members).
                with_filter(Vec::new()),
                // The unit tests of the root-test package (the bench's report, parsers).
                tests_pkg(vec!["--lib".into(), "--bins".into()]),
            ],
        },
        Tier {
            name: "bpf",
            runs: vec![tests_pkg(bpf)],
        },
        Tier {
            name: "netns",
            runs: vec![tests_pkg(netns)],
        },
    ])
}

/// Runs `cargo` (a `cargo test` invocation), echoing its output, and counts it. Standard
/// output and error share one pipe, so each test result follows the `Running` line of its
/// binary as cargo wrote them.
pub fn run(cargo: &mut Command, tally: &mut Tally) -> Result<()> {
    let (reader, writer) = std::io::pipe().context("a pipe for cargo's output")?;
    cargo.stdout(writer.try_clone()?).stderr(writer);
    let mut child = cargo
        .spawn()
        .with_context(|| format!("starting {cargo:?}"))?;
    // Our copies of the write end must be gone, or reading never ends.
    cargo.stdout(Stdio::null()).stderr(Stdio::null());
    let mut running = None;
    for line in BufReader::new(reader).lines() {
        let line = line.context("reading cargo's output")?;
        println!("{line}");
        tally.read_line(&line, &mut running);
    }
    if let Some(last) = running {
        tally.crashed.push(binary_name(&last));
    }
    let status = child.wait().context("waiting for cargo test")?;
    std::io::stdout().flush().context("writing the output")?;
    if !status.success() && tally.failed == 0 && tally.crashed.is_empty() {
        tally.broken_runs += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_test_output_is_counted_per_binary() {
        let out = "\
     Running unittests src/lib.rs (target/debug/deps/lb_common-1)
test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
     Running tests/admin_e2e.rs (target/debug/deps/admin_e2e-2)
test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 8.64s
     Running tests/demo_e2e.rs (target/debug/deps/demo_e2e-3)
     Running tests/dsr_e2e.rs (target/debug/deps/dsr_e2e-4)
test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s
   Doc-tests lb_common
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let mut tally = Tally::default();
        let mut running = None;
        for line in out.lines() {
            tally.read_line(line, &mut running);
        }
        assert_eq!(running, None);
        assert_eq!(
            tally,
            Tally {
                passed: 20,
                failed: 1,
                crashed: vec!["demo_e2e-3 (tests/demo_e2e.rs)".into()],
                broken_runs: 0,
            }
        );
        assert!(!tally.ok());
        assert_eq!(
            tally.line("netns"),
            "netns 20 passed, 1 failed; 1 test binaries crashed (demo_e2e-3 (tests/demo_e2e.rs))"
        );
    }

    #[test]
    fn every_test_file_has_a_tier() {
        assert_eq!(tier_of("stateful_fixtures.rs"), Some("bpf"));
        assert_eq!(tier_of("fixtures.rs"), Some("bpf"));
        assert_eq!(tier_of("prefixtures.rs"), None);
        assert_eq!(tier_of("modes_e2e.rs"), Some("netns"));
        assert_eq!(tier_of("helpers.rs"), None);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tests");
        let tiers = tiers(&dir, &[]).expect("every file of tests/tests has a tier");
        let names: Vec<&str> = tiers.iter().map(|t| t.name).collect();
        assert_eq!(names, ["host", "bpf", "netns"]);
        for t in &tiers[1..] {
            assert!(
                t.runs[0].iter().any(|a| a == "--test"),
                "{} runs no test file",
                t.name
            );
        }
    }
}
