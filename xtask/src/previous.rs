//! The previous releases the upgrade test (`tests/tests/upgrade_e2e.rs`) runs before this
//! lbctl takes their state over: one per older layout of the pinned state, built from git
//! at the commit that last pinned it. Each later layout change adds its release here, and
//! the test fails for a layout without one.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// (layout, the commit of the last lbctl that pins it, the cargo features its lbctl needs),
/// oldest first.
pub const RELEASES: &[(u32, &str, &[&str])] = &[
    (1, "60a3567004c7755158507f37998e5983f4f04a4a", &[]),
    // From here the eBPF object is behind lb-userspace's `ebpf` feature.
    (2, "0bc213fd68d34f12bc148d7416ae3cb164ddd20c", &["ebpf"]),
    (3, "2650c10be8f1dd63dd85b0ecdeb675e7a766f52d", &["ebpf"]),
    (4, "336db6f95039783f5cb90962ec28f212b2a0eac5", &["ebpf"]),
];

/// The environment variable the upgrade test finds layout `n`'s lbctl in.
pub fn env_name(layout: u32) -> String {
    format!("LBCTL_LAYOUT_{layout}")
}

/// Builds the lbctl of every release (once: kept under `target/previous`), returning
/// (environment variable, binary) pairs. A release that cannot be built is reported and
/// left out, so the upgrade test fails saying so while every other test runs.
pub fn build_all(
    repo: &Path,
    target: &Path,
    cargo: impl Fn() -> Command,
) -> Vec<(String, PathBuf)> {
    let mut built = Vec::new();
    for (layout, commit, features) in RELEASES {
        match build(repo, target, commit, features, &cargo) {
            Ok(bin) => built.push((env_name(*layout), bin)),
            Err(e) => eprintln!(
                "xtask test: could not build lbctl {commit} (layout {layout}) for the upgrade test: {e:#}"
            ),
        }
    }
    built
}

/// Fetches `commit` from `origin` when this clone lacks it (a shallow clone has only its
/// tip).
fn fetch_if_missing(repo: &Path, commit: &str) -> Result<()> {
    let have = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .context("running git (git is needed to build the previous release)")?;
    if have.success() {
        return Ok(());
    }
    eprintln!("xtask test: {commit} is not in this clone; fetching it from origin");
    crate::run(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["fetch", "--depth", "1", "origin", commit]),
    )
    .with_context(|| format!("this clone lacks {commit} and could not fetch it: `git fetch --unshallow`, then run again"))
}

fn build(
    repo: &Path,
    target: &Path,
    commit: &str,
    features: &[&str],
    cargo: impl Fn() -> Command,
) -> Result<PathBuf> {
    let dir = target.join("previous").join(&commit[..12]);
    let bin = dir.join("target/debug/lbctl");
    let src = dir.join("src");
    let stamp = dir.join("built");
    if stamp.exists() && bin.exists() {
        return Ok(bin);
    }
    if src.exists() {
        std::fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    }
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    eprintln!("xtask test: building lbctl {commit} for the upgrade test (once; a few minutes)");
    fetch_if_missing(repo, commit)?;
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .context("running git archive (git is needed to build the previous release)")?;
    let tar = archive.stdout.take().context("git archive's output")?;
    let untar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&src)
        .stdin(tar)
        .status()
        .context("running tar")?;
    let archived = archive.wait().context("waiting for git archive")?;
    if !archived.success() {
        bail!("`git archive {commit}` failed");
    }
    if !untar.success() {
        bail!("unpacking {commit} failed");
    }
    crate::run(
        cargo()
            .current_dir(&src)
            .args(["build", "--locked", "-p", "lb-userspace", "--bin", "lbctl"])
            .args(features.iter().flat_map(|f| ["--features", f]))
            .env("CARGO_TARGET_DIR", dir.join("target")),
    )?;
    if !bin.exists() {
        bail!("the build of {commit} made no {}", bin.display());
    }
    std::fs::write(&stamp, commit).context("marking the build done")?;
    Ok(bin)
}
