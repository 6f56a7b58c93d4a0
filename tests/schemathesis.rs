//! docs/openapi.yaml against the real server, by schemathesis: it generates requests from the
//! document (valid ones, and ones that break exactly one rule), sends them to a live Gavel on
//! port 0 with a sandbox fleet behind it, and checks every answer against the document with all
//! of its checks (status codes, content types, headers, response schemas, valid data accepted,
//! invalid data refused, unsupported methods, auth). The run passes only with no failure.
//!
//! schemathesis is a Python tool (`st`), installed by scripts/install-test-deps.sh. Without it
//! the test skips, unless GAVEL_REQUIRE_SCHEMATHESIS=1 (set by .ci/run) makes that a failure.
//! tests/schemathesis.toml holds the few narrow exceptions, each with the reason it needs.

// Test threads are not event loops: blocking waits and child processes are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use gavel::config::Driver;

/// Generated test cases per operation and phase.
const EXAMPLES_PER_OPERATION: &str = "100";
/// Concurrent schemathesis workers: the test machine may have only two cores.
const WORKERS: &str = "2";
/// Longest wait for one answer. The slowest real request is a seed of 1,000 leads.
const REQUEST_TIMEOUT_S: &str = "30";
/// Buyer `a`'s token, which tests/schemathesis.toml sends to the lead status operation.
const BUYER_TOKEN: &str = "gv_test_schemathesis_buyer_status_000000000";
/// The run is reproducible by default; GAVEL_SCHEMATHESIS_SEED picks another one.
const DEFAULT_SEED: &str = "1";

#[test]
fn the_server_agrees_with_its_openapi_document() {
    let Some(st) = gavel_testkit::require_tool("st", "GAVEL_REQUIRE_SCHEMATHESIS") else {
        return;
    };
    let env = Env::start(
        Driver::Legacy,
        vec![fixed("a", 20.0), fixed("b", 15.0)],
        |cfg, _| {
            cfg.tokens
                .push(buyer_token("schemathesis-buyer", "a", BUYER_TOKEN));
        },
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seed = std::env::var("GAVEL_SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    // schemathesis keeps a Hypothesis example database in its working directory; a scratch
    // directory keeps it out of the checkout.
    let scratch = temp_dir("schemathesis");
    let out = Command::new(st)
        .current_dir(&scratch)
        .arg("--config-file")
        .arg(root.join("tests/schemathesis.toml"))
        .arg("run")
        .arg(root.join("docs/openapi.yaml"))
        .args(["--url", &env.base])
        // The seller `it-all` holds every scope, so every operation open to sellers is reached
        // past authentication; tests/schemathesis.toml sends the operator's token (`OPERATOR`)
        // to the operator's operations and buyer `a`'s to the lead status.
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all"])
        .args(["--max-examples", EXAMPLES_PER_OPERATION])
        .args(["--workers", WORKERS])
        .args(["--request-timeout", REQUEST_TIMEOUT_S])
        .args(["--seed", &seed])
        .args(["--continue-on-failure", "--no-color"])
        .env("NO_COLOR", "1")
        .output()
        .expect("st runs");
    let _ = std::fs::remove_dir_all(&scratch);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found disagreements (seed {seed}):\n{report}"
    );
    // A run that tested nothing would also exit 0.
    assert!(report.contains(" passed"), "{report}");
}
