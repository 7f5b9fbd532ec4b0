//! The external programs the lab may run: those of xtask's list (`xtask/src/programs.rs`,
//! included here as it is), which `cargo xtask test|demo|bench` install. Running any other
//! is a bug of the lab or a test (it would fail on a fresh machine), so it stops the run
//! with what to do.

use std::process::Command;

mod list {
    #![allow(dead_code)]
    include!("../../xtask/src/programs.rs");
}

pub use list::{Need, Program, PROGRAMS};

/// A command running `name`: a program of the list, or a path (the lbctl under test).
///
/// # Panics
/// When `name` is neither: the list must name every program the lab runs.
pub fn program(name: &str) -> Command {
    assert_listed(name);
    Command::new(name)
}

/// Panics unless `name` is a listed program or a path.
pub fn assert_listed(name: &str) {
    assert!(
        name.contains('/') || list::program(name).is_some(),
        "the lab runs `{name}`, which xtask/src/programs.rs does not list: add it there with the Debian package that installs it, so `cargo xtask test` installs it on a fresh machine"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_programs_and_paths_run_others_do_not() {
        assert_eq!(program("ip").get_program(), "ip");
        assert_eq!(program("/tmp/lbctl").get_program(), "/tmp/lbctl");
        let refused = std::panic::catch_unwind(|| program("wireshark"));
        assert!(refused.is_err(), "an unlisted program must be refused");
    }
}
