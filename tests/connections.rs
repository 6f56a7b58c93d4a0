//! Connection limits and the operations listener through the real server: the connection cap
//! derived from the file-descriptor limit (a `gavel serve` child under `ulimit -n`), idle
//! keep-alive connections closed after `server.idle_timeout_ms`, `/metrics` behind a token on
//! the API port and open on the operations listener, and metric labels that name the route that
//! answered.

// Test threads are not event loops: blocking waits, sleeps and file writes are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gavel::config::Driver;

/// Sends `GET path` on an open keep-alive connection and reads one answer: its status and body,
/// or `None` when the server closed the connection instead.
fn get_on(stream: &mut TcpStream, path: &str) -> Option<(u16, String)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: gavel\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).to_string();
                return Some((status, body));
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server has closed `stream` (EOF or reset), looking without waiting.
fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Waits (at most `bound`, which only proves "does not hang") for the server to close `stream`.
fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn idle_connections_close_and_busy_ones_stay_open() {
    for driver in drivers() {
        let env = Env::start(driver, vec![fixed("a", 10.0)], |cfg, _| {
            cfg.server.idle_timeout_ms = 1_000;
        });
        let addr = env.server().addr;

        let mut idle = TcpStream::connect(addr).unwrap();
        assert_eq!(get_on(&mut idle, "/healthz").map(|r| r.0), Some(200));
        let mut busy = TcpStream::connect(addr).unwrap();
        assert_eq!(get_on(&mut busy, "/healthz").map(|r| r.0), Some(200));

        // A request every 100 ms, well inside the 1 s idle timeout, for 2.5 idle periods: the
        // connection serves every one of them.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2_500) {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                get_on(&mut busy, "/healthz").map(|r| r.0),
                Some(200),
                "{driver:?}: a connection in use was closed after {:?}",
                started.elapsed()
            );
        }
        // Meanwhile the quiet one was closed (checked without waiting further than needed).
        assert!(
            closed_within(&mut idle, Duration::from_secs(10)),
            "{driver:?}: an idle connection stayed open past idle_timeout_ms"
        );
    }
}

#[test]
fn a_silent_connection_is_held_to_the_header_timeout_not_the_idle_timeout() {
    // A client that connects and sends nothing owes its first request head: it is cut after
    // header_read_timeout_ms (1 s in the test config) even with a long idle timeout.
    let env = Env::start(Driver::Legacy, vec![fixed("a", 10.0)], |cfg, _| {
        cfg.server.idle_timeout_ms = 600_000;
    });
    let mut silent = TcpStream::connect(env.server().addr).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(30)));
}

#[test]
fn metrics_need_a_token_on_the_api_port_and_none_on_the_operations_listener() {
    let env = Env::start(Driver::Legacy, vec![fixed("a", 10.0)], |_, _| {});
    // The API port: no token → 401 with the RFC 6750 challenge; any seller's token → 404, even a
    // production one with `reports`; the sandbox operator → 403; the production operator with
    // `reports` → the text.
    let open = env.get("/metrics", None);
    assert_eq!(open.status, 401, "{}", open.text);
    assert!(open
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    assert!(!open.text.contains("gavel_buyer"), "{}", open.text);
    for seller in [PING_ONLY, TOKEN, LIVE] {
        let r = env.get("/metrics", Some(seller));
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
    }
    let sandbox = env.get("/metrics", Some(OPERATOR));
    assert_eq!(
        (sandbox.status, sandbox.error_code()),
        (403, "production_only")
    );
    let authed = env.get("/metrics", Some(LIVE_OPERATOR));
    assert_eq!(authed.status, 200);
    assert!(authed.text.contains("gavel_http_requests_total"));

    // The operations listener: /metrics, /healthz and /readyz without a token, nothing else.
    let ops = format!(
        "http://{}",
        env.server().metrics_addr.expect("on by default")
    );
    let scrape = call(&ops, "GET", "/metrics", None, None, &[]);
    assert_eq!(scrape.status, 200);
    assert!(scrape
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
    assert!(scrape.text.contains("gavel_http_requests_total"));
    assert!(scrape.header("x-request-id").is_some());
    assert_eq!(call(&ops, "GET", "/healthz", None, None, &[]).status, 200);
    assert_eq!(
        call(&ops, "GET", "/readyz", None, None, &[]).json["cores"],
        2
    );
    let not_here = call(&ops, "POST", "/v1/ping", Some(TOKEN), Some("{}"), &[]);
    assert_eq!((not_here.status, not_here.error_code()), (404, "not_found"));
    let wrong_method = call(&ops, "POST", "/metrics", None, Some("{}"), &[]);
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));
}

#[test]
fn the_operations_listener_can_be_turned_off() {
    let env = Env::start(Driver::Legacy, vec![fixed("a", 10.0)], |cfg, _| {
        cfg.metrics.listen = None;
    });
    assert_eq!(env.server().metrics_addr, None);
    assert_eq!(env.get("/metrics", Some(LIVE_OPERATOR)).status, 200);
    // From TOML: `listen = "off"`.
    let cfg = gavel::config::Config::parse("t.toml", "[metrics]\nlisten = \"off\"\n").unwrap();
    assert_eq!(cfg.metrics.listen, None);
    let err = gavel::config::Config::parse("t.toml", "[metrics]\nlisten = \"nowhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("off"), "{err}");
}

#[test]
fn metric_labels_name_the_route_that_answered() {
    let env = Env::start(Driver::Legacy, vec![fixed("a", 10.0)], |_, _| {});
    // An auction id is one path segment: a deeper path is no route at all, labelled `other`.
    let deeper = env.get("/v1/auctions/a/b", Some(TOKEN));
    assert_eq!((deeper.status, deeper.error_code()), (404, "not_found"));
    let unknown = env.get("/v1/auctions/auc_unknown", Some(TOKEN));
    assert_eq!(unknown.status, 404);
    let m = env.scrape();
    let count = |series: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count(r#"gavel_http_requests_total{endpoint="/v1/auctions/{auction_id}",status="404"}"#),
        1,
        "{m}"
    );
    assert_eq!(
        count(r#"gavel_http_requests_total{endpoint="other",status="404"}"#),
        1,
        "{m}"
    );
}

/// `gavel serve` under `ulimit -n fd_limit` with a config of `cores` cores on port 0 (and
/// `extra` lines in `[server]`), its store in `dir`. `ulimit -n` sets the soft and the hard
/// limit, so Gavel cannot raise it past `fd_limit`.
fn serve_under_fd_limit(
    dir: &std::path::Path,
    fd_limit: u64,
    cores: usize,
    extra: &str,
) -> Command {
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = {cores}\npin_threads = false\n{extra}\
         [store]\npath = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n",
        dir.join("db").display()
    );
    let path = dir.join("gavel.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n {fd_limit} && exec \"$0\" serve --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_gavel"))
        .arg(&path)
        .env_remove("GAVEL_LOG");
    cmd
}

#[test]
fn a_low_file_descriptor_limit_caps_connections_and_keeps_serving() {
    const FD_LIMIT: u64 = 256;
    const CORES: usize = 2;
    let dir = temp_dir("fdlimit");
    let mut child = serve_under_fd_limit(
        &dir,
        FD_LIMIT,
        CORES,
        "header_read_timeout_ms = 60000\nidle_timeout_ms = 60000\n",
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // The start: both addresses, and the log line stating the cap derived from the limit (the
    // log has its own writer thread, so its lines may come before or after the addresses).
    let cap = gavel::runtime::connection_cap(10_000, Some(FD_LIMIT), CORES, 0);
    assert!(cap < 10_000 && cap > 0, "{cap}");
    let cap_line = |l: &String| {
        l.contains("connection cap lowered")
            && l.contains(&format!("max_connections_per_core={cap}"))
            && l.contains(&format!("fd_limit={FD_LIMIT}"))
    };
    let mut lines: Vec<String> = Vec::new();
    let started = Instant::now();
    while !(lines.iter().any(cap_line)
        && lines.iter().any(|l| l.contains("operations listener on")))
    {
        match rx.recv_timeout(Duration::from_secs(30).saturating_sub(started.elapsed())) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("no start line with the derived cap {cap}: {lines:#?}"),
        }
    }
    let find_addr = |prefix: &str| -> SocketAddr {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:#?}"))
            .parse()
            .unwrap()
    };
    let addr = find_addr("gavel listening on http://");
    let ops = find_addr("gavel operations listener on http://");

    // A keep-alive client that was there first.
    let mut first = TcpStream::connect(addr).unwrap();
    assert_eq!(get_on(&mut first, "/healthz").map(|r| r.0), Some(200));

    // Far more connections than the limit allows: those over the cap are closed at once.
    let many = 2 * FD_LIMIT as usize;
    let mut held: Vec<TcpStream> = (0..many)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let must_close = many - CORES * cap;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed;
    loop {
        closed = held.iter_mut().map(is_closed).filter(|c| *c).count();
        if closed >= must_close || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        closed >= must_close,
        "only {closed} of {many} connections were refused; at least {must_close} are over the cap"
    );

    // More arrivals over a few seconds, each refused at once, while the early client is served
    // and the operations listener answers new connections.
    for _ in 0..20 {
        held.push(TcpStream::connect(addr).unwrap());
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(get_on(&mut first, "/healthz").map(|r| r.0), Some(200));
    let mut probe = TcpStream::connect(ops).unwrap();
    assert_eq!(get_on(&mut probe, "/healthz").map(|r| r.0), Some(200));

    // Out of file descriptors: the child's soft limit drops to its lowest free descriptor number
    // (a new descriptor takes the lowest free one, and the limit bounds that number), so every
    // accept fails with EMFILE while new clients wait in the backlog. Accepting backs off, the
    // early client is still served, and the failures are logged once per interval.
    let pid = child.id() as libc::pid_t;
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|fd| !open.contains(fd)).unwrap();
    let set_limit = |soft: u64| {
        let lim = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: FD_LIMIT as libc::rlim_t,
        };
        // SAFETY: prlimit reads `lim` and writes nothing (no old-limit pointer).
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set_limit(lowest_free);
    for _ in 0..20 {
        held.push(TcpStream::connect(addr).unwrap());
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(get_on(&mut first, "/healthz").map(|r| r.0), Some(200));
    set_limit(FD_LIMIT);
    let elapsed = started.elapsed();

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    drop(held);
    let _ = reader.join();
    lines.extend(rx.try_iter());
    let _ = std::fs::remove_dir_all(&dir);

    // At most one warning of each kind per core per 10 s interval, not one per refused
    // connection or failed accept.
    let per_kind = CORES * (elapsed.as_secs() as usize / 10 + 1);
    for kind in ["connection cap reached", "accept failed"] {
        let warnings: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("WARN") && l.contains(kind))
            .collect();
        assert!(!warnings.is_empty(), "no {kind:?} warning: {lines:#?}");
        assert!(
            warnings.len() <= per_kind,
            "{} {kind:?} warnings in {elapsed:?}: {warnings:#?}",
            warnings.len()
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("accept failed") && l.contains("Too many open files")),
        "the accept warning names the cause: {lines:#?}"
    );
}

/// A limit that leaves fewer than `MIN_CONNECTIONS_PER_CORE` client connections per core is
/// refused at start with the numbers and the limit that would do, instead of starting with a cap
/// two keep-alive clients could fill.
#[test]
fn a_file_descriptor_limit_too_low_to_serve_is_refused_at_start() {
    const FD_LIMIT: u64 = 48;
    const CORES: usize = 2;
    let dir = temp_dir("fdlow");
    let out = serve_under_fd_limit(&dir, FD_LIMIT, CORES, "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started under {FD_LIMIT} fds: {stderr}"
    );
    let needed = gavel::runtime::fd_limit_needed(CORES, 0);
    for want in [
        format!("file-descriptor limit {FD_LIMIT}"),
        format!("at least {}", gavel::runtime::MIN_CONNECTIONS_PER_CORE),
        format!("raise it to {needed}"),
    ] {
        assert!(stderr.contains(&want), "{want:?} not in {stderr}");
    }
    assert!(
        !dir.join("db").exists(),
        "refused before the store was opened"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
