//! Helpers shared by Gavel's tests (unit and integration) and by `gavel-load`: a loopback webhook
//! receiver, a private PKI (`pki`), waiting for a condition, decoding a chunked body, the driver matrix, and finding the
//! external tools a test runs.
//!
//! A workspace member that only dev-dependencies and the load tester name, so none of it ships in
//! the `gavel` binary. It knows nothing of Gavel's types (it does not depend on the `gavel`
//! crate): what needs them stays in `tests/common`.
// Everything here runs on test threads (or gavel-load's own), never on a Gavel core, so it may
// block and sleep.
#![allow(clippy::disallowed_methods)]

pub mod pki;
pub mod receiver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every `.rs` file under `dir`, recursively (for tests that read the source tree).
pub fn rust_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The body of a `Transfer-Encoding: chunked` message (the text after the head); `None` when the
/// chunks are malformed or cut short.
pub fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        s = rest.get(size + 2..)?;
    }
}

/// Whether tests run under io_uring as well as the legacy driver. io_uring is required unless
/// `GAVEL_TEST_ALLOW_NO_URING=1`, so a machine without it fails loudly instead of silently
/// testing one driver.
pub fn uring_runs() -> bool {
    if monoio::utils::detect_uring() {
        true
    } else if std::env::var("GAVEL_TEST_ALLOW_NO_URING").as_deref() == Ok("1") {
        eprintln!(
            "io_uring unavailable: running the legacy driver only (GAVEL_TEST_ALLOW_NO_URING=1)"
        );
        false
    } else {
        panic!("io_uring is unavailable; set GAVEL_TEST_ALLOW_NO_URING=1 to test the legacy driver only")
    }
}

/// Generates two tests for each scenario function `fn name(driver: gavel::config::Driver)`: one
/// under io_uring (in `mod uring`, run where [`uring_runs`]) and one under the legacy driver.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() {
                if $crate::uring_runs() { super::$name(gavel::config::Driver::Uring) }
            })*
        }
        mod legacy {
            $(#[test] fn $name() { super::$name(gavel::config::Driver::Legacy) })*
        }
    };
}

/// The external program `program` a test needs, found on `PATH`. Missing, the test is skipped
/// (`None`, with a note on stderr) unless `require_env` is `1` (as `.ci/run` sets it for every
/// tool it installs), in which case the test fails: CI must never pass a check it did not run.
pub fn require_tool(program: &str, require_env: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var(require_env).as_deref() != Ok("1"),
            "{program} is required ({require_env}=1) but not on PATH \
             (scripts/install-test-deps.sh installs it)"
        );
        eprintln!("{program} not on PATH: skipping (scripts/install-test-deps.sh installs it)");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_and_bad_ones_do_not() {
        assert_eq!(
            dechunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n").as_deref(),
            Some("Wikipedia")
        );
        assert_eq!(dechunk("0\r\n\r\n").as_deref(), Some(""));
        assert_eq!(dechunk("9\r\nshort\r\n"), None);
        assert_eq!(dechunk("zz\r\nx\r\n0\r\n\r\n"), None);
    }

    #[test]
    fn a_missing_tool_is_skipped_or_required() {
        assert!(require_tool("sh", "GAVEL_REQUIRE_NOTHING").is_some());
        assert!(require_tool("no-such-tool-anywhere", "GAVEL_TESTKIT_UNSET").is_none());
        std::env::set_var("GAVEL_TESTKIT_REQUIRED", "1");
        let required = std::panic::catch_unwind(|| {
            require_tool("no-such-tool-anywhere", "GAVEL_TESTKIT_REQUIRED")
        });
        assert!(required.is_err(), "a required tool that is missing fails");
    }
}
