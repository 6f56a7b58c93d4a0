//! Config loading and the CLI around it: shipped files are valid, bad files are refused with the
//! file, key and reason, and `gavel token create` prints a token whose hash it also prints.

// Tests run on plain threads, not event loops: blocking file access is fine here.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

use gavel::cli::{check_config, load_config};
use gavel::config::{Config, ConfigError};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_config_file_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load_config(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "config/ holds at least the default config");
}

#[test]
fn default_config_matches_the_readme() {
    let cfg = load_config(&root().join("config/gavel.toml")).unwrap();
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
        Ok(c) => check_config(&c, "bad.toml").unwrap_err().to_string(),
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
    check_config(&cfg, "ok.toml").expect("a complete endpoint is valid");
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

    // A fault only a subsystem's own check finds (here the buyer pool's, of a ping URL) is refused
    // by `serve` as by `check-config`, before anything starts.
    std::fs::write(
        &bad,
        "[[buyers]]\nid = \"a\"\ntenant = \"sandbox\"\n\
         ping_url = \"ftp://x\"\npost_url = \"http://x/p\"\n",
    )
    .unwrap();
    for cmd in ["check-config", "serve"] {
        let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args([cmd, "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} accepted {}", bad.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bad.toml") && err.contains("buyers[0].ping_url"),
            "{cmd}: {err}"
        );
    }

    // A buyer format that names an unknown field is refused by the real binary, naming the
    // buyer, the key and the field.
    std::fs::write(
        &bad,
        "[[buyers]]\nid = \"acme\"\ntenant = \"sandbox\"\n\
         ping_url = \"http://192.0.2.9:9/ping\"\npost_url = \"http://192.0.2.9:9/post\"\n\
         [buyers.ping_format.fields]\nzip = { from = \"zipcode\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("buyers[0].ping_format.fields.zip")
            && err.contains("\"acme\"")
            && err.contains("unknown ping field \"zipcode\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs the `gavel` binary with `args` and waits at most 20 s for it to exit: a command that
/// should have refused to start but serves instead is killed, and the test fails on it.
fn gavel_exits(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gavel {args:?} kept running instead of refusing its config");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), err)
}

/// Issue #21, F1: the tokens Gavel publishes (the README's, the sandbox operator's) are refused
/// on a listener that is not loopback, naming the key, so a copied default config cannot expose
/// an admin token to a network. On loopback they still work; a token of one's own works anywhere.
#[test]
fn published_tokens_are_refused_on_a_listener_that_is_not_loopback() {
    let published = [
        "gv_test_sandbox_readme_0000000000000000000000",
        "gv_test_sandbox_operator_00000000000000000000",
    ];
    for token in published {
        assert!(
            gavel::config::WELL_KNOWN_TOKEN_SHA256
                .contains(&gavel::auth::sha256_hex(token).as_str()),
            "{token} is listed"
        );
    }
    let file = |listen: &str, tokens: &[&str]| {
        let mut text = format!("[server]\nlisten = \"{listen}\"\n");
        for t in tokens {
            text += &format!(
                "[[tokens]]\nclient = \"c\"\ntenant = \"sandbox\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
                gavel::auth::sha256_hex(t)
            );
        }
        text
    };
    let own = "gv_test_my_own_token_0000000000000000000000";
    for token in published {
        let e = invalid(&file("0.0.0.0:0", &[own, token]));
        assert!(
            e.contains("tokens[1].sha256") && e.contains("remove") && e.contains("0.0.0.0:0"),
            "{e}"
        );
        let e = invalid(&file("[::]:8080", &[token]));
        assert!(e.contains("tokens[0].sha256"), "{e}");
        for loopback in ["127.0.0.1:0", "[::1]:8080"] {
            let cfg = Config::parse("ok.toml", &file(loopback, &[token])).unwrap();
            check_config(&cfg, "ok.toml").expect("published tokens serve loopback");
        }
    }
    let cfg = Config::parse("ok.toml", &file("0.0.0.0:0", &[own])).unwrap();
    check_config(&cfg, "ok.toml").expect("a token of one's own serves any listener");

    // The binary: the shipped config, exposed by a flag or by its file, stops with the key named.
    let (ok, err) = gavel_exits(&[
        "serve",
        "--config",
        "config/gavel.toml",
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!ok && err.contains("tokens[0].sha256"), "{err}");
    let dir = std::env::temp_dir().join(format!("gavel-cfg-exposed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exposed = dir.join("exposed.toml");
    let shipped = std::fs::read_to_string(root().join("config/gavel.toml")).unwrap();
    let text = shipped.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
    assert_ne!(
        text, shipped,
        "the shipped config listens on 127.0.0.1:8080"
    );
    std::fs::write(&exposed, text).unwrap();
    for cmd in ["check-config", "serve"] {
        let (ok, err) = gavel_exits(&[cmd, "--config", exposed.to_str().unwrap()]);
        assert!(
            !ok && err.contains("exposed.toml") && err.contains("tokens[0].sha256"),
            "{cmd}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue #21, F7: the config file's buyers follow the egress rule as the API's do: a URL into the
/// host or its network is refused naming the key, unless `[egress] allow_private` allows it; Gavel's
/// own listeners need an `ip:port` entry of their own; a bad entry is named by its index.
#[test]
fn buyer_urls_into_the_host_are_refused_unless_the_file_allows_them() {
    let with = |egress: &str, url: &str| {
        format!(
            "{egress}[[buyers]]\nid = \"b\"\ntenant = \"sandbox\"\nping_url = \"{url}\"\n\
             post_url = \"http://192.0.2.9:9/post\"\n"
        )
    };
    let loopback = "[egress]\nallow_private = [\"127.0.0.0/8\", \"::1/128\"]\n";
    for (egress, url) in [
        ("", "http://169.254.169.254/latest/meta-data/"),
        ("", "http://0.0.0.0:9000/ping"),
        ("", "http://192.0.2.9:99999/ping"),
        ("", "http://user:pw@192.0.2.9/ping"),
        ("", "http://127.0.0.1:9701/ping"),
        ("", "http://10.0.0.1/ping"),
        ("", "http://[::1]:9701/ping"),
        // Allowing loopback does not open Gavel's own listeners (the defaults: API 8080,
        // operations 9464).
        (loopback, "http://127.0.0.1:8080/v1/ping"),
        (loopback, "http://127.0.0.1:9464/metrics"),
        (loopback, "http://169.254.169.254/"),
    ] {
        let e = invalid(&with(egress, url));
        assert!(e.contains("buyers[0].ping_url"), "{url}: {e}");
    }
    for (egress, url) in [
        (loopback, "http://127.0.0.1:9701/ping"),
        (loopback, "http://[::1]:9701/ping"),
        (
            "[egress]\nallow_private = [\"127.0.0.1:8080\"]\n",
            "http://127.0.0.1:8080/x",
        ),
        ("", "http://localhost:9701/ping"), // a name: refused when it resolves, if at all
        ("", "https://192.0.2.9/ping"),
    ] {
        let cfg = Config::parse("ok.toml", &with(egress, url)).unwrap();
        check_config(&cfg, "ok.toml").unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    let e = invalid("[egress]\nallow_private = [\"127.0.0.0/8\", \"127.0.0.1/8\"]\n");
    assert!(
        e.contains("egress.allow_private[1]") && e.contains("127.0.0.0/8"),
        "{e}"
    );
    let e = invalid("[egress]\nallow_private = [\"localhost:9701\"]\n");
    assert!(e.contains("egress.allow_private[0]"), "{e}");
}

#[test]
fn money_is_read_in_usd_and_kept_in_exact_cents() {
    let text = "[auction]\nfloor = 2.5\nmargin_fixed = 1\n\
                [[buyers]]\nid = \"b1\"\ntenant = \"sandbox\"\nfloor = 19.99\n\
                ping_url = \"http://192.0.2.9:9/ping\"\npost_url = \"http://192.0.2.9:9/post\"\n";
    let cfg = Config::parse("ok.toml", text).unwrap();
    check_config(&cfg, "ok.toml").unwrap();
    assert_eq!(
        (
            cfg.auction.floor,
            cfg.auction.margin_fixed,
            cfg.buyers[0].floor
        ),
        (250, 100, 1999)
    );
    let shipped = load_config(&root().join("config/gavel.toml")).unwrap();
    assert_eq!(
        shipped.auction.floor, 100,
        "config/gavel.toml: floor = 1.00"
    );
}

#[test]
fn check_config_refuses_money_it_would_have_to_guess() {
    let dir = std::env::temp_dir().join(format!("gavel-cfg-money-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad-money.toml");
    for (text, key, says) in [
        ("[auction]\nfloor = nan\n", "auction.floor", "NaN"),
        ("[auction]\nfloor = inf\n", "auction.floor", "inf"),
        (
            "[auction]\nfloor = 2.505\n",
            "auction.floor",
            "more than two decimals",
        ),
        (
            "[auction]\nmargin_fixed = -0.5\n",
            "auction.margin_fixed",
            "from 0",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["check-config", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(
            err.contains("bad-money.toml")
                && err.contains(&format!("`{key}`"))
                && err.contains(says),
            "{text}\n{err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
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
    check_config(&Config::parse("printed", entry).unwrap(), "printed").unwrap();
}

/// The key and reason of a config refused when read (a value the schema cannot hold, such as a
/// sub-cent floor) or when validated.
fn invalid_key(text: &str) -> (String, String) {
    let e = match Config::parse("bad.toml", text) {
        Err(e) => e,
        Ok(cfg) => match check_config(&cfg, "bad.toml") {
            Err(e) => e,
            Ok(()) => panic!("{text}\nwas accepted"),
        },
    };
    match e {
        ConfigError::Invalid { key, reason, .. } => (key, reason),
        e => panic!("{text}\nnot a key error: {e}"),
    }
}

#[test]
fn every_validated_key_is_named_by_its_own_error() {
    let buyer = "[[buyers]]\nid = \"b1\"\ntenant = \"sandbox\"\n\
                 ping_url = \"http://192.0.2.9:9/ping\"\npost_url = \"http://192.0.2.9:9/post\"\n";
    let token = format!(
        "[[tokens]]\nclient = \"c\"\ntenant = \"sandbox\"\nsha256 = \"{}\"\n",
        "a".repeat(64)
    );
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";
    let mock = "[[sandbox.buyers]]\nid = \"m1\"\n";
    // (bad TOML, the key its error must name, a word its reason must contain)
    let cases: Vec<(String, &str, &str)> = vec![
        ("[oauth]\naccess_token_ttl_s = 0\n".into(), "oauth.access_token_ttl_s", "1..=86400"),
        ("[limits]\nclient_requests_per_s = 0\n".into(), "limits.client_requests_per_s", "per second"),
        ("[limits]\nclient_requests_per_s = nan\n".into(), "limits.client_requests_per_s", "NaN"),
        ("[limits]\nbuyer_pings_per_s = inf\n".into(), "limits.buyer_pings_per_s", "inf"),
        ("[limits]\nseller_max_concurrent_auctions = 0\n".into(), "limits.seller_max_concurrent_auctions", "at least 1"),
        ("[auction]\nwindow_ms = 0\n".into(), "auction.window_ms", "1..=5000"),
        ("[auction]\nmargin_percent = 101\n".into(), "auction.margin_percent", "0 to 100"),
        ("[auction]\nmargin_percent = nan\n".into(), "auction.margin_percent", "NaN"),
        ("[auction]\nfloor = -1.0\n".into(), "auction.floor", "from 0"),
        ("[auction]\nfloor = nan\n".into(), "auction.floor", "NaN"),
        ("[auction]\nfloor = inf\n".into(), "auction.floor", "inf"),
        ("[auction]\nmargin_fixed = -0.5\n".into(), "auction.margin_fixed", "from 0"),
        ("[auction]\nmargin_fixed = nan\n".into(), "auction.margin_fixed", "NaN"),
        ("[auction]\nmargin_percent = inf\n".into(), "auction.margin_percent", "inf"),
        ("[auction]\nmargin_percent = -1\n".into(), "auction.margin_percent", "0 to 100"),
        ("[auction]\nfloor = 2.505\n".into(), "auction.floor", "more than two decimals"),
        ("[auction]\nfloor = 1e13\n".into(), "auction.floor", "to 1000000000000"),
        ("[auction]\nfloor = -1\n".into(), "auction.floor", "from 0"),
        ("[auction]\nfloor = \"2.50\"\n".into(), "auction.floor", "at most two decimals"),
        ("[auction]\nmargin_fixed = inf\n".into(), "auction.margin_fixed", "inf"),
        ("[auction]\nmargin_fixed = 0.001\n".into(), "auction.margin_fixed", "sub-cent"),
        ("[auction]\ncurrency = \"usd\"\n".into(), "auction.currency", "ISO 4217"),
        ("[auction]\nmax_buyers_per_auction = 0\n".into(), "auction.max_buyers_per_auction", "at least 1"),
        ("[auction]\nmax_auctions_per_core = 0\n".into(), "auction.max_auctions_per_core", "at least 1"),
        ("[post]\nbudget_ms = 0\n".into(), "post.budget_ms", "at least 1"),
        ("[post]\nmax_attempts_per_buyer = 0\n".into(), "post.max_attempts_per_buyer", "at least 1"),
        ("[server]\nheader_read_timeout_ms = 0\n".into(), "server.header_read_timeout_ms", "at least 1"),
        ("[server]\nmax_connections_per_core = 0\n".into(), "server.max_connections_per_core", "at least 1"),
        ("[server]\nmax_in_flight_requests_per_core = 0\n".into(), "server.max_in_flight_requests_per_core", "at least 1"),
        ("[server]\nmax_queue_delay_ms = 0\n".into(), "server.max_queue_delay_ms", "at least 1"),
        ("[server]\nmax_queue_delay_ms = 5001\n".into(), "server.max_queue_delay_ms", "at most 5000"),
        ("[bid_token]\nttl_ms = 0\n".into(), "bid_token.ttl_ms", "at least 1"),
        ("[bid_token]\ncurrent = { id = 1, secret = \"c2hvcnQ=\" }\n".into(), "bid_token.current.secret", "32 bytes"),
        ("[bid_token]\ncurrent = { id = 1, secret_env = \"GAVEL_TEST_UNSET_VARIABLE\" }\n".into(), "bid_token.current.secret_env", "not set"),
        ("[bid_token]\ncurrent = { id = 1 }\n".into(), "bid_token.current", "secret"),
        ("[bid_token]\nprevious = { id = 2, secret = \"!!\" }\n".into(), "bid_token.previous.secret", "base64"),
        (format!("[bid_token]\ncurrent = {{ id = 1, secret = \"{secret}\" }}\nprevious = {{ id = 1, secret = \"{secret}\" }}\n"), "bid_token.previous.id", "must differ"),
        (format!("[bid_token]\nprevious = {{ id = 0, secret = \"{secret}\" }}\n"), "bid_token.previous.id", "0 is the id"),
        (token.replace(&"a".repeat(64), "abc") + "scopes = [\"ping\"]\n", "tokens[0].sha256", "64 hex"),
        (format!("{token}scopes = []\n"), "tokens[0].scopes", "must not be empty"),
        (format!("{token}scopes = [\"ping\"]\nbuyer = \"nobody\"\n"), "tokens[0].buyer", "no buyer"),
        (format!("{token}scopes = [\"ping\"]\nrequests_per_s = nan\n"), "tokens[0].requests_per_s", "NaN"),
        (buyer.replace("b1", ""), "buyers[0].id", "non-empty"),
        (format!("{buyer}{buyer}"), "buyers[1].id", "unique"),
        (buyer.replace("http://192.0.2.9:9/ping", "ftp://x"), "buyers[0].ping_url", ""),
        (buyer.replace("http://192.0.2.9:9/post", "ftp://x"), "buyers[0].post_url", ""),
        (format!("{buyer}ping_timeout_ms = 0\n"), "buyers[0].ping_timeout_ms", "at least 1"),
        (format!("{buyer}post_timeout_ms = 0\n"), "buyers[0].post_timeout_ms", "at least 1"),
        (format!("{buyer}floor = -2.0\n"), "buyers[0].floor", "from 0"),
        (format!("{buyer}floor = nan\n"), "buyers[0].floor", "NaN"),
        (format!("{buyer}floor = -inf\n"), "buyers[0].floor", "inf"),
        (format!("{buyer}floor = 12.345\n"), "buyers[0].floor", "sub-cent"),
        (format!("{buyer}{}floor = 1000000000000.5\n", buyer.replace("b1", "b2")), "buyers[1].floor", "to 1000000000000"),
        (format!("{buyer}max_pings_per_s = nan\n"), "buyers[0].max_pings_per_s", "NaN"),
        (format!("{buyer}auth_header = {{ name = \"bad header\", value = \"x\" }}\n"), "buyers[0].auth_header.name", "header name"),
        (format!("{buyer}auth_header = {{ name = \"Authorization\" }}\n"), "buyers[0].auth_header", "value_env"),
        (format!("{buyer}filters = {{ min_ai_quality_score = 1.5 }}\n"), "buyers[0].filters.min_ai_quality_score", "0 to 1"),
        (format!("{buyer}filters = {{ min_ai_quality_score = nan }}\n"), "buyers[0].filters.min_ai_quality_score", "NaN"),
        (format!("{buyer}[[buyers.filters.attributes]]\nkey = \"a\"\nop = \"exists\"\n[[buyers.filters.attributes]]\nkey = \"b\"\nop = \"like\"\n"), "buyers[0].filters.attributes[1].op", "unknown variant"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"fico\", op = \"range\" }}] }}\n"), "buyers[0].filters.attributes[0].min", "needs `min`, `max` or both"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"fico\", op = \"range\", min = 700, max = 600 }}] }}\n"), "buyers[0].filters.attributes[0].min", "above max"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"fico\", op = \"range\", min = nan }}] }}\n"), "buyers[0].filters.attributes[0].min", "NaN"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"fico\", op = \"range\", max = inf }}] }}\n"), "buyers[0].filters.attributes[0].max", "inf"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"fico\", op = \"range\", min = 1, values = [2] }}] }}\n"), "buyers[0].filters.attributes[0].values", "does not take"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"credit\", op = \"in\" }}] }}\n"), "buyers[0].filters.attributes[0].values", "non-empty `values`"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"credit\", op = \"not_in\", values = [] }}] }}\n"), "buyers[0].filters.attributes[0].values", "non-empty `values`"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"credit\", op = \"in\", values = [1.0, nan] }}] }}\n"), "buyers[0].filters.attributes[0].values", "NaN"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"credit\", op = \"eq\" }}] }}\n"), "buyers[0].filters.attributes[0].value", "needs `value`"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"\", op = \"exists\" }}] }}\n"), "buyers[0].filters.attributes[0].key", "must not be empty"),
        (format!("{buyer}filters = {{ attributes = [{{ key = \"a\", op = \"exists\", colour = 1 }}] }}\n"), "buyers[0].filters.attributes[0].colour", "unknown field"),
        (format!("{buyer}filters = {{ driver_age_bands = [\"25-34\", \"twenty-five to thirty-four\"] }}\n"), "buyers[0].filters.driver_age_bands[1]", "no band a ping can carry"),
        (format!("{buyer}filters = {{ driver_age_bands = [\" 25-34\"] }}\n"), "buyers[0].filters.driver_age_bands[0]", "surrounding spaces"),
        (format!("{buyer}filters = {{ vehicle_count = {{ min = 3, max = 1 }} }}\n"), "buyers[0].filters.vehicle_count.min", "above max"),
        (format!("{buyer}filters = {{ vehicle_count = {{ min = -1 }} }}\n"), "buyers[0].filters.vehicle_count.min", ""),
        (format!("{buyer}[buyers.ping_format.fields]\nzip = {{ from = \"zipcode\" }}\n"), "buyers[0].ping_format.fields.zip", "buyer \"b1\": unknown ping field \"zipcode\""),
        (format!("{buyer}[buyers.post_format.fields]\nmail = {{ from = \"lead.mail\" }}\n"), "buyers[0].post_format.fields.mail", "buyer \"b1\": unknown lead field \"lead.mail\""),
        (format!("{buyer}[buyers.ping_format.fields]\nzip = {{ from = \"zip3\", transform = \"title\" }}\n"), "buyers[0].ping_format.fields.zip.transform", "unknown variant"),
        (format!("{buyer}[buyers.ping_format.answer]\ntype = \"json\"\namount = \"bid.amount\"\n"), "buyers[0].ping_format.answer.amount", "JSON pointer"),
        (format!("{buyer}[buyers.ping_format.answer]\ntype = \"xml\"\n"), "buyers[0].ping_format.answer.amount", "needs the path"),
        (format!("{buyer}[buyers.post_format]\nheaders = {{ \"bad header\" = \"x\" }}\n[buyers.post_format.fields]\nid = {{ from = \"auction_id\" }}\n"), "buyers[0].post_format.headers.bad header", "header name"),
        (format!("{buyer}[buyers.post_format]\nmethod = \"POST\"\n"), "buyers[0].post_format.fields", "at least one field"),
        (format!("{buyer}ping_timeout_ms = 1000000000000\n"), "buyers[0].ping_timeout_ms", "1..=5000"),
        (format!("{buyer}post_timeout_ms = 1000000000000000\n"), "buyers[0].post_timeout_ms", "1..=30000"),
        (format!("{buyer}floor = 1000.01\n"), "buyers[0].floor", "auction.max_price (1000.00)"),
        (buyer.replace("ping_url = \"http://192.0.2.9:9/ping\"\n", "fixed_price = 1e12\n"), "buyers[0].fixed_price", "at most auction.max_price (1000.00), got 1000000000000.00"),
        (buyer.replace("ping_url = \"http://192.0.2.9:9/ping\"\n", "fixed_price = 60.00\n") + "[auction]\nmax_price = 50.00\n", "buyers[0].fixed_price", "(50.00), got 60.00"),
        ("[auction]\nmax_price = 0\n".into(), "auction.max_price", "more than 0"),
        ("[auction]\nfloor = 5000\n".into(), "auction.floor", "auction.max_price"),
        ("[post]\nbudget_ms = 3600000\n".into(), "post.budget_ms", "1..=30000"),
        ("[server]\nlisten = \"127.0.0.1:9464\"\n".into(), "metrics.listen", "overlaps server.listen"),
        ("[server]\nlisten = \"0.0.0.0:7000\"\n[metrics]\nlisten = \"127.0.0.1:7000\"\n".into(), "metrics.listen", "own port"),
        (format!("{buyer}fixed_price = 12.50\n"), "buyers[0].ping_url", "exactly one of `ping_url`"),
        (buyer.replace("ping_url = \"http://192.0.2.9:9/ping\"\n", ""), "buyers[0].ping_url", "exactly one of `ping_url`"),
        (buyer.replace("ping_url = \"http://192.0.2.9:9/ping\"\n", "fixed_price = 0\n"), "buyers[0].fixed_price", "more than 0"),
        (buyer.replace("ping_url = \"http://192.0.2.9:9/ping\"\n", "fixed_price = 1.005\n"), "buyers[0].fixed_price", "sub-cent"),
        (buyer.replace("ping_url = \"http://192.0.2.9:9/ping\"\n", "fixed_price = 5\n") + "[buyers.ping_format]\n", "buyers[0].ping_format", "never pinged"),
        ("[[rules]]\nrequire = []\n".into(), "rules[0].require", "must not be empty"),
        ("[[rules]]\nrequire = [\"tcpa\"]\n".into(), "rules[0].require", "lead."),
        ("[store]\nidempotency_retention_days = 0\n".into(), "store.idempotency_retention_days", "1 day"),
        ("[store]\nrecord_retention_days = 0\n".into(), "store.record_retention_days", "1 day"),
        ("[store]\nexpiry_interval_ms = 0\n".into(), "store.expiry_interval_ms", "at least 1"),
        ("[store]\ngroup_commit_max_batch = 0\n".into(), "store.group_commit_max_batch", "at least 1"),
        ("[store]\npath = \"\"\n".into(), "store.path", "must not be empty"),
        ("[store]\nseal_key_env = \"GAVEL_TEST_UNSET_VARIABLE\"\n".into(), "store.seal_key_env", "not set"),
        ("[egress]\nallow_private = [\"10.0.0.1/8\"]\n".into(), "egress.allow_private[0]", "10.0.0.0/8"),
        (buyer.replace("http://192.0.2.9:9/ping", "http://169.254.169.254/"), "buyers[0].ping_url", "metadata"),
        (buyer.replace("http://192.0.2.9:9/post", "http://u:p@192.0.2.9:9/post"), "buyers[0].post_url", "credentials"),
        (format!("[server]\nlisten = \"0.0.0.0:8080\"\n{}", token.replace(&"a".repeat(64), "db9188f74478b575896d409b5f9a2d709d4d0d7fbd35046f9d544877d49aaa4d")) + "scopes = [\"ping\"]\n", "tokens[0].sha256", "published"),
        ("[sandbox]\nenabled = true\n".into(), "sandbox.listen", "required"),
        (format!("{mock}bid_probability = nan\n"), "sandbox.buyers[0].bid_probability", "probability"),
        (format!("{mock}post_accept_probability = inf\n"), "sandbox.buyers[0].post_accept_probability", "probability"),
        (format!("{mock}failure_probability = -0.1\n"), "sandbox.buyers[0].failure_probability", "probability"),
        (format!("{mock}price_min = nan\n"), "sandbox.buyers[0].price_min", "above 0"),
        (format!("{mock}price_max = inf\n"), "sandbox.buyers[0].price_max", "price_min"),
        (format!("{mock}filters = {{ min_ai_quality_score = nan }}\n"), "sandbox.buyers[0].filters.min_ai_quality_score", ""),
        ("[webhook_delivery]\nretry_schedule_ms = [0]\n".into(), "webhook_delivery.retry_schedule_ms", "1..="),
        ("[webhook_delivery]\ntimeout_ms = 0\n".into(), "webhook_delivery.timeout_ms", "1..=60000"),
        ("[webhook_delivery]\nmax_in_flight_per_endpoint = 0\n".into(), "webhook_delivery.max_in_flight_per_endpoint", "1..=256"),
        ("[webhook_delivery]\nthreads = 0\n".into(), "webhook_delivery.threads", "1..=256"),
        ("[webhook_delivery]\nmax_retry_after_ms = 999999999999\n".into(), "webhook_delivery.max_retry_after_ms", "at most"),
        ("[[webhooks]]\nid = \"crm\"\ntenant = \"sandbox\"\nurl = \"https://h.example/x\"\nsecrets_env = \"GAVEL_TEST_UNSET_VARIABLE\"\nevents = [\"lead.posted\"]\n".into(), "webhooks[0].secrets_env", "not set"),
    ];
    for (text, key, reason) in cases {
        let (got_key, got_reason) = invalid_key(&text);
        assert_eq!(got_key, key, "{text}\nreason: {got_reason}");
        assert!(
            got_reason.contains(reason),
            "{key}: {got_reason:?} lacks {reason:?}"
        );
    }
}

/// The worked example of docs/buyer-integration.md ("Filters") is a valid buyer entry, so the
/// documented filter keys and attribute rules are the ones the config accepts.
#[test]
fn documented_buyer_filter_example_is_valid() {
    let doc = std::fs::read_to_string(root().join("docs/buyer-integration.md")).unwrap();
    let start = doc
        .find("```toml\n[[buyers]]\nid = \"northwind_auto\"")
        .expect("the example");
    let text = &doc[start + "```toml\n".len()..];
    let text = &text[..text.find("```").unwrap()];
    // The example reads its token from the environment; the check would refuse it unset.
    let text = text.replace("value_env = \"NORTHWIND_TOKEN\"", "value = \"Bearer x\"");
    let cfg = Config::parse("example.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    check_config(&cfg, "example.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.buyers[0].filters.attributes.len(), 5);
}
