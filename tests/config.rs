//! Config loading and the CLI around it: shipped files are valid, bad files are refused with the
//! file, key and reason, and `gavel token create` prints a token whose hash it also prints.

// Tests run on plain threads, not event loops: blocking file access is fine here.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

use gavel::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_config_file_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "config/ holds at least the default config");
}

#[test]
fn default_config_matches_the_readme() {
    let cfg = Config::load(&root().join("config/gavel.toml")).unwrap();
    assert!(cfg.sandbox.enabled, "the default starts the sandbox buyers");
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let token = "gv_test_sandbox_readme_0000000000000000000000";
    assert!(readme.contains(token));
    assert!(cfg
        .tokens
        .iter()
        .any(|t| t.sha256 == gavel::auth::sha256_hex(token)));
    // Every configured buyer points at a fleet buyer that exists.
    for b in &cfg.buyers {
        assert!(
            cfg.sandbox
                .buyers
                .iter()
                .any(|m| b.ping_url.ends_with(&format!("/buyers/{}/ping", m.id))),
            "buyer {} has no sandbox counterpart",
            b.id
        );
    }
}

fn invalid(text: &str) -> String {
    match Config::parse("bad.toml", text) {
        Err(e) => e.to_string(),
        Ok(c) => c.validate("bad.toml").unwrap_err().to_string(),
    }
}

#[test]
fn errors_name_the_file_the_key_and_the_reason() {
    let e = invalid("[auction]\nwindow_ms = 9000\n");
    assert!(
        e.contains("bad.toml") && e.contains("auction.window_ms") && e.contains("5000"),
        "{e}"
    );
    let e = invalid("[server]\nlisten = \"127.0.0.1:8080\"\nspeed = 3\n");
    assert!(e.contains("bad.toml") && e.contains("speed"), "{e}");
    let e = invalid("[[buyers]]\nid = \"a\"\ntenant = \"sandbox\"\nping_url = \"ftp://x\"\npost_url = \"http://x/p\"\n");
    assert!(e.contains("buyers[0].ping_url"), "{e}");
    let e = invalid(
        "[[tokens]]\nclient = \"c\"\ntenant = \"sandbox\"\nsha256 = \"abc\"\nscopes = [\"ping\"]\n",
    );
    assert!(e.contains("tokens[0].sha256"), "{e}");
    let e = invalid("[sandbox]\nenabled = true\nlisten = \"10.0.0.1:9701\"\n");
    assert!(
        e.contains("sandbox.listen") && e.contains("loopback"),
        "{e}"
    );
    let e = invalid("[bid_token]\ncurrent = { id = 1, secret = \"c2hvcnQ=\" }\n");
    assert!(
        e.contains("bid_token.current") && e.contains("32 bytes"),
        "{e}"
    );
}

#[test]
fn webhook_endpoints_are_checked_with_the_key_and_the_reason() {
    let secret = gavel::webhooks::Secret::generate();
    let hook = |id: &str, url: &str, secrets: &str, events: &str| {
        format!(
            "[[webhooks]]\nid = \"{id}\"\ntenant = \"sandbox\"\nurl = \"{url}\"\n\
             secrets = {secrets}\nevents = {events}\n"
        )
    };
    let good = hook(
        "crm",
        "https://h.example/x",
        &format!("[\"{secret}\"]"),
        "[\"lead.posted\"]",
    );
    let cfg = Config::parse("ok.toml", &good).unwrap();
    cfg.validate("ok.toml")
        .expect("a complete endpoint is valid");
    let cases = [
        (
            hook(
                "Crm!",
                "https://h.example/x",
                &format!("[\"{secret}\"]"),
                "[\"lead.posted\"]",
            ),
            "webhooks[0].id",
            "snake_case",
        ),
        (
            hook(
                "crm",
                "ftp://h.example/x",
                &format!("[\"{secret}\"]"),
                "[\"lead.posted\"]",
            ),
            "webhooks[0].url",
            "http:// or https://",
        ),
        (
            hook(
                "crm",
                "https://h.example/x",
                "[\"whsec_c2hvcnQ=\"]",
                "[\"lead.posted\"]",
            ),
            "webhooks[0].secrets",
            "at least 24 bytes",
        ),
        (
            hook("crm", "https://h.example/x", "[]", "[\"lead.posted\"]"),
            "webhooks[0].secrets",
            "at least one signing secret",
        ),
        (
            hook(
                "crm",
                "https://h.example/x",
                &format!("[\"{secret}\"]"),
                "[\"lead.sold\"]",
            ),
            "webhooks[0].events",
            "unknown event",
        ),
        (format!("{good}{good}"), "webhooks[1].id", "used twice"),
        (
            "[webhook_delivery]\nretry_schedule_ms = [0]\n".to_string(),
            "webhook_delivery.retry_schedule_ms",
            "1..=",
        ),
        (
            "[webhook_delivery]\ntimeout_ms = 0\n".to_string(),
            "webhook_delivery.timeout_ms",
            "1..=60000",
        ),
    ];
    for (text, key, reason) in cases {
        let e = invalid(&text);
        assert!(e.contains(key) && e.contains(reason), "{key}: {e}");
        // The secret itself never appears in an error.
        assert!(!e.contains(&secret[6..]), "{e}");
    }
}

#[test]
fn check_config_command() {
    let ok = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["check-config", "--config"])
        .arg(root().join("config/gavel.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"));

    let dir = std::env::temp_dir().join(format!("gavel-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[post]\nbudget_ms = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("post.budget_ms"),
        "{err}"
    );
}

#[test]
fn token_create_prints_a_token_and_its_hash() {
    let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args([
            "token",
            "create",
            "--client",
            "acme",
            "--tenant",
            "production",
            "--scopes",
            "ping,post",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("gv_live_"))
        .expect("a production token");
    assert!(token.len() > 40);
    assert!(text.contains(&gavel::auth::sha256_hex(token)), "{text}");
    assert!(text.contains("scopes = [\"ping\", \"post\"]"));
    // The printed entry is a valid [[tokens]] table.
    let entry = &text[text.find("[[tokens]]").unwrap()..];
    Config::parse("printed", entry)
        .unwrap()
        .validate("printed")
        .unwrap();
}
