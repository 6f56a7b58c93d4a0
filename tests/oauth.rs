//! OAuth 2.0 client credentials through the real server: a standard OAuth client library gets a
//! token and pings with it; expired, revoked and tampered tokens are refused; scopes hold; the
//! RFC 6749 §5.2 error answers; tenant isolation of the client admin API; the `gavel clients` CLI.
// Test threads are not event loops: sleeping in them is how tests wait.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use gavel::config::Driver;
use oauth2::basic::BasicClient;
use oauth2::{AuthUrl, ClientId, ClientSecret, Scope as OScope, TokenResponse, TokenUrl};

/// Registers a client through the admin API with `admin_token`; returns (client_id, secret).
fn register(env: &Env, admin_token: &str, scopes: &[&str]) -> (String, String) {
    let body = serde_json::json!({"name": "acme seller", "scopes": scopes}).to_string();
    let r = env.post("/v1/admin/clients", Some(admin_token), &body);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    (
        r.json["client_id"].as_str().unwrap().to_string(),
        r.json["client_secret"].as_str().unwrap().to_string(),
    )
}

/// `DELETE /v1/admin/clients/{id}` with the sandbox operator token.
fn revoke(env: &Env, id: &str) -> Resp {
    call(
        &env.base,
        "DELETE",
        &format!("/v1/admin/clients/{id}"),
        Some(OPERATOR),
        None,
        &[],
    )
}

fn oauth_client(env: &Env, id: &str, secret: &str) -> BasicClient {
    BasicClient::new(
        ClientId::new(id.to_string()),
        Some(ClientSecret::new(secret.to_string())),
        AuthUrl::new(format!("{}/unused", env.base)).unwrap(),
        Some(TokenUrl::new(format!("{}/oauth/token", env.base)).unwrap()),
    )
}

fn form(env: &Env, body: &str, basic: Option<(&str, &str)>) -> Resp {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    let auth;
    if let Some((id, secret)) = basic {
        use base64::Engine;
        auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        );
        headers.push(("Authorization", auth.as_str()));
    }
    call(
        &env.base,
        "POST",
        "/oauth/token",
        None,
        Some(body),
        &headers,
    )
}

#[test]
fn a_standard_oauth_client_gets_a_token_that_pings() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let (id, secret) = register(&env, OPERATOR, &["ping", "post"]);
    assert!(id.starts_with("cl_"));
    assert!(secret.starts_with("gv_test_cs_"));
    // The oauth2 crate's client-credentials flow, client authenticated with HTTP Basic.
    let token = oauth_client(&env, &id, &secret)
        .exchange_client_credentials()
        .add_scope(OScope::new("ping".into()))
        .request(oauth2::ureq::http_client)
        .expect("token request succeeds");
    assert_eq!(token.expires_in(), Some(Duration::from_secs(3600)));
    let scopes: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, ["ping"]);
    let access = token.access_token().secret().clone();
    assert!(access.starts_with("gv_test_at_"), "{access}");
    let r = env.post("/v1/ping", Some(&access), &ping_body().to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "won");
    // The token carries only the scope asked for: posting needs `post`.
    let p = env.post(
        "/v1/post",
        Some(&access),
        &post_body("auc_x", "bid_x").to_string(),
    );
    assert_eq!((p.status, p.error_code()), (403, "insufficient_scope"));
    assert!(p
        .header("www-authenticate")
        .unwrap()
        .contains(r#"scope="post""#));
    // Without a scope parameter the token gets all of the client's scopes; body credentials and
    // a JSON body work too.
    let body = serde_json::json!({
        "grant_type": "client_credentials", "client_id": id, "client_secret": secret
    })
    .to_string();
    let r = call(
        &env.base,
        "POST",
        "/oauth/token",
        None,
        Some(&body),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["scope"], "ping post");
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // A token survives a restart (its key is kept in the store), and so does its client.
    let mut env = env;
    env.restart();
    let r = env.post("/v1/ping", Some(&access), &ping_body().to_string());
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn token_endpoint_errors_follow_rfc_6749() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let (id, secret) = register(&env, OPERATOR, &["ping"]);
    let grant = "grant_type=client_credentials";
    // Wrong secret over Basic: 401 invalid_client with a Basic challenge.
    let r = form(&env, grant, Some((&id, "wrong")));
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.json["error_description"].is_string());
    // Wrong secret in the body: 401 invalid_client.
    let r = form(
        &env,
        &format!("{grant}&client_id={id}&client_secret=nope"),
        None,
    );
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let cases = [
        ("grant_type=password", "unsupported_grant_type"),
        ("scope=ping", "invalid_request"),
        ("grant_type=client_credentials&scope=post", "invalid_scope"),
        (
            "grant_type=client_credentials&scope=ping&scope=ping",
            "invalid_request",
        ),
    ];
    for (body, error) in cases {
        let r = form(&env, body, Some((&id, &secret)));
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (400, Some(error)),
            "{body}"
        );
    }
    // Two authentication methods at once.
    let r = form(
        &env,
        &format!("{grant}&client_id={id}"),
        Some((&id, &secret)),
    );
    assert_eq!(r.json["error"], "invalid_request");
    // No credentials at all.
    let r = form(&env, grant, None);
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // Another content type.
    let r = call(
        &env.base,
        "POST",
        "/oauth/token",
        None,
        Some(grant),
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[test]
fn expired_revoked_and_tampered_tokens_are_refused() {
    let env = Env::start_with_clock(
        Driver::Legacy,
        vec![fixed("x", 30.0)],
        |cfg, _| {
            cfg.oauth.access_token_ttl_s = 1;
        },
        manual_clock(),
    );
    let (id, secret) = register(&env, OPERATOR, &["ping"]);
    let token = |env: &Env| {
        let r = form(env, "grant_type=client_credentials", Some((&id, &secret)));
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["access_token"].as_str().unwrap().to_string()
    };
    let ping = |env: &Env, t: &str| env.post("/v1/ping", Some(t), &ping_body().to_string());
    // Expired.
    let t = token(&env);
    assert_eq!(ping(&env, &t).status, 200);
    // The token lives 1 s: the server's clock moves past that instead of the test waiting.
    let issued = env.clock.now_ms();
    env.jump_clock(1_100);
    let r = ping(&env, &t);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    assert!(r.text.contains("expired"), "{}", r.text);
    // Back to where it stood, so the tokens below are fresh whichever clock stamps them.
    env.clock.set_ms(issued);
    // Tampered: one character of the signed part changed.
    let t = token(&env);
    let mut bytes = t.clone().into_bytes();
    let i = bytes.len() - 5;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(ping(&env, &String::from_utf8(bytes).unwrap()).status, 401);
    // Revoked: refused on fresh connections (spread over both cores) right after the revoke
    // answers; the client can no longer get tokens either.
    let t = token(&env);
    let revoked = revoke(&env, &id);
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert!(revoked.json["revoked_at"].is_string());
    let addr = env.server().addr;
    let request = format!(
        "GET /v1/auctions/auc_x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..8 {
        let answer = raw(addr, request.as_bytes(), Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let r = form(&env, "grant_type=client_credentials", Some((&id, &secret)));
    assert_eq!(r.json["error"], "invalid_client");
    // Revoking again answers the first revocation.
    let again = revoke(&env, &id);
    assert_eq!(again.status, 200);
    assert_eq!(again.json["revoked_at"], revoked.json["revoked_at"]);
}

#[test]
fn clients_belong_to_one_tenant() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let (sandbox_id, _) = register(&env, OPERATOR, &["ping"]);
    let (live_id, _) = register(&env, LIVE_OPERATOR, &["ping"]);
    let list = |t: &str| -> Vec<String> {
        let r = env.get("/v1/admin/clients", Some(t));
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(!r.text.contains("secret"), "{}", r.text);
        r.json["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["client_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(OPERATOR), vec![sandbox_id]);
    assert_eq!(list(LIVE_OPERATOR), vec![live_id.clone()]);
    // Another tenant's client is invisible, also to revoke.
    let r = revoke(&env, &live_id);
    assert_eq!(r.status, 404, "{}", r.text);
    // The admin API needs the admin scope.
    let r = env.get("/v1/admin/clients", Some(PING_ONLY));
    assert_eq!((r.status, r.error_code()), (403, "insufficient_scope"));
    // Bad registrations: each error names its field and says what is wrong in the caller's terms.
    for (body, field, message) in [
        (
            r#"{"name":"","scopes":["ping"]}"#,
            "name",
            "name must be 1 to 64 characters",
        ),
        (r#"{"scopes":["ping"]}"#, "name", "name is required."),
        (
            r#"{"name":7,"scopes":["ping"]}"#,
            "name",
            "name must be 1 to 64 characters",
        ),
        (
            r#"{"name":"x","scopes":[]}"#,
            "scopes",
            "scopes must name at least one scope.",
        ),
        (
            r#"{"name":"x","scopes":["fly"]}"#,
            "scopes",
            "scopes must name scopes from ping, post",
        ),
        (
            r#"{"name":"x","scopes":"ping"}"#,
            "scopes",
            "scopes must be a list of scope names.",
        ),
        // The document says `uniqueItems`: a scope listed twice is refused, not merged.
        (
            r#"{"name":"x","scopes":["dev","dev"]}"#,
            "scopes",
            "scopes lists dev more than once",
        ),
        (
            r#"{"name":"x","scopes":["ping"],"tenant":"production"}"#,
            "tenant",
            "Unknown field \"tenant\"",
        ),
    ] {
        let r = env.post("/v1/admin/clients", Some(OPERATOR), body);
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_payload"),
            "{body}"
        );
        assert_eq!(r.field_names(), vec![field], "{body}: {}", r.text);
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.starts_with(message), "{body}: {msg}");
    }
    let r = env.post("/v1/admin/clients", Some(OPERATOR), r#"{"name":"x","#);
    assert_eq!(
        (r.status, r.error_code()),
        (400, "malformed_json"),
        "{}",
        r.text
    );
}

#[test]
fn gavel_clients_cli_manages_clients_of_a_running_server() {
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let gavel = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["clients", "--url", &env.base])
            .args(args)
            .env("GAVEL_ADMIN_TOKEN", OPERATOR)
            .output()
            .expect("gavel runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = gavel(&["create", "--name", "cli seller", "--scopes", "ping,reports"]);
    assert!(ok, "{out}{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let id = field("client_id:");
    let secret = field("client_secret:");
    let r = form(&env, "grant_type=client_credentials", Some((&id, &secret)));
    assert_eq!(r.json["scope"], "ping reports", "{}", r.text);
    let (ok, listed, _) = gavel(&["list"]);
    assert!(
        ok && listed.contains(&id) && listed.contains("ping,reports"),
        "{listed}"
    );
    // The operator names the new client's party; one that does not parse never leaves the CLI.
    let (ok, out, err) = gavel(&["create", "--name", "for it-all", "--party", "seller:it-all"]);
    assert!(ok && out.contains("party=seller:it-all"), "{out}{err}");
    let (ok, _, err) = gavel(&["create", "--name", "x", "--party", "everyone"]);
    assert!(!ok && err.contains("party must be"), "{err}");
    let (ok, revoked, _) = gavel(&["revoke", &id]);
    assert!(ok && revoked.contains("REVOKED"), "{revoked}");
    let (ok, _, err) = gavel(&["revoke", "cl_nobody"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[test]
fn tenants_never_mix_in_either_direction() {
    let env = Env::start(
        Driver::Legacy,
        vec![fixed("sandbox_buyer", 30.0), fixed("live_buyer", 30.0)],
        |cfg, _| {
            cfg.buyers[1].tenant = gavel::config::Tenant::Production;
        },
    );
    // A production auction, pinged with the production token, reaches only the production buyer.
    let live = env.post("/v1/ping", Some(LIVE), &ping_body().to_string());
    assert_eq!(live.status, 200, "{}", live.text);
    assert_eq!(live.json["buyers_pinged"], 1);
    let live_id = live.json["auction_id"].as_str().unwrap().to_string();
    assert_eq!(env.fleet.log().pings("sandbox_buyer"), 0);
    // A sandbox OAuth client: its pings reach only the sandbox buyer, and the production auction
    // does not exist for it.
    let (id, secret) = register(&env, OPERATOR, &["ping", "reports"]);
    let r = form(&env, "grant_type=client_credentials", Some((&id, &secret)));
    let access = r.json["access_token"].as_str().unwrap().to_string();
    let p = env.post("/v1/ping", Some(&access), &ping_body().to_string());
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json["buyers_pinged"], 1);
    assert_eq!(
        env.fleet.log().pings("live_buyer"),
        1,
        "only the production ping"
    );
    assert_eq!(env.fleet.log().pings("sandbox_buyer"), 1);
    for token in [access.as_str(), TOKEN] {
        let r = env.get(&format!("/v1/auctions/{live_id}"), Some(token));
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);
    }
    // The production token still sees its own auction.
    assert_eq!(
        env.get(&format!("/v1/auctions/{live_id}"), Some(LIVE))
            .status,
        200
    );
}

#[test]
fn the_client_cap_counts_active_clients_and_holds_under_concurrent_creates() {
    use gavel::api::oauth::MAX_CLIENTS_PER_TENANT;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |cfg, _| {
        // A thousand creates; their durability is not what this test is about.
        cfg.store.durable = false;
    });
    // Many connections (spread over both cores) create until the cap refuses them.
    let created = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let body = serde_json::json!({"name": "racer", "scopes": ["ping"]}).to_string();
                let r = env.post("/v1/admin/clients", Some(OPERATOR), &body);
                match (r.status, r.error_code()) {
                    (201, _) => {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    (422, "too_many_clients") => return,
                    _ => panic!("{} {}", r.status, r.text),
                }
            });
        }
    });
    assert_eq!(created.load(Ordering::SeqCst), MAX_CLIENTS_PER_TENANT);
    let listed = env.get("/v1/admin/clients", Some(OPERATOR));
    let clients = listed.json["clients"].as_array().unwrap().clone();
    assert_eq!(clients.len(), MAX_CLIENTS_PER_TENANT);
    // The cap is per tenant: production still has room.
    register(&env, LIVE_OPERATOR, &["ping"]);
    // A revoked client frees its place; it stays listed, revoked.
    let first = clients[0]["client_id"].as_str().unwrap();
    assert_eq!(revoke(&env, first).status, 200);
    let (fresh, _) = register(&env, OPERATOR, &["ping"]);
    let r = env.post(
        "/v1/admin/clients",
        Some(OPERATOR),
        r#"{"name":"one too many","scopes":["ping"]}"#,
    );
    assert_eq!((r.status, r.error_code()), (422, "too_many_clients"));
    let listed = env.get("/v1/admin/clients", Some(OPERATOR));
    let clients = listed.json["clients"].as_array().unwrap();
    assert_eq!(clients.len(), MAX_CLIENTS_PER_TENANT + 1);
    assert!(clients.iter().any(|c| c["client_id"] == fresh));
    assert!(clients
        .iter()
        .any(|c| c["client_id"] == first && c["revoked_at"].is_string()));
}

/// A keep-alive connection to the server, kept to send requests to the core that accepted it.
struct Conn(std::net::TcpStream);

impl Conn {
    fn open(addr: std::net::SocketAddr) -> Conn {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn(s)
    }

    /// Sends one request; returns the status, the head and the body of the answer.
    fn send(&mut self, method: &str, path: &str, token: &str) -> (u16, String, String) {
        self.send_json(method, path, token, "")
    }

    /// Sends one request with a JSON body; returns the status, the head and the body of the answer.
    fn send_json(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> (u16, String, String) {
        use std::io::{Read, Write};
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(self.0.read(&mut byte).unwrap(), 1, "connection closed");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head, String::from_utf8(body).unwrap())
    }
}

/// One keep-alive connection per core: a lookup of an auction owned by core 1 is handed off
/// exactly when the connection is on core 0, which the cores' hand-off counters show.
fn conn_per_core(env: &Env) -> [Conn; 2] {
    let mut probe = 0;
    let on_core_1 = loop {
        let id = format!("auc_probe_{probe}");
        probe += 1;
        if gavel::runtime::owner_of(&id, 2) == 1 {
            break id;
        }
    };
    let handoffs = || {
        env.server().shared.stats[0]
            .handoffs_out
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let (mut zero, mut one) = (None, None);
    for _ in 0..256 {
        let mut c = Conn::open(env.server().addr);
        let before = handoffs();
        let (status, _, _) = c.send("GET", &format!("/v1/auctions/{on_core_1}"), TOKEN);
        assert_eq!(status, 404);
        if handoffs() > before {
            zero.get_or_insert(c);
        } else {
            one.get_or_insert(c);
        }
        if let (Some(_), Some(_)) = (&zero, &one) {
            return [zero.take().unwrap(), one.take().unwrap()];
        }
    }
    panic!("the kernel never spread 256 connections over both cores");
}

#[test]
fn a_revocation_that_missed_a_busy_core_is_finished_by_a_retry() {
    use gavel::exchange::Core;
    use std::rc::Rc;
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let mut conns = conn_per_core(&env);
    let (id, secret) = register(&env, OPERATOR, &["reports"]);
    let r = form(&env, "grant_type=client_credentials", Some((&id, &secret)));
    let access = r.json["access_token"].as_str().unwrap().to_string();
    for c in conns.iter_mut() {
        assert_eq!(c.send("GET", "/v1/auctions/auc_x", &access).0, 404);
    }
    // The sandbox tenant's client changes are decided on its owner core; the other core is made
    // busy: its loop is held by one job and its inbox filled behind it.
    let owner = gavel::runtime::owner_of("sandbox", 2);
    let busy = 1 - owner;
    let inbox = &env.server().shared.inboxes[busy];
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let hold = Box::new(move |_core: Rc<Core>| {
        started_tx.send(()).unwrap();
        let _ = held.recv();
    });
    assert!(inbox.send(hold).is_ok());
    started.recv().unwrap();
    while inbox.send(Box::new(|_core: Rc<Core>| {})).is_ok() {}
    let path = format!("/v1/admin/clients/{id}");
    let [a, b] = &mut conns;
    let (on_owner, on_busy) = if owner == 0 { (a, b) } else { (b, a) };
    // The revocation is durable and applied where it could be, and says it is not finished.
    let (status, head, body) = on_owner.send("DELETE", &path, OPERATOR);
    assert_eq!(status, 503, "{head}{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    assert!(body.contains("\"overloaded\""), "{body}");
    assert_eq!(on_owner.send("GET", "/v1/auctions/auc_x", &access).0, 401);
    // A client that could not reach every core is refused without its secret, and revoked so
    // that nobody holds an unusable client.
    let (status, _, body) = on_owner.send_json(
        "POST",
        "/v1/admin/clients",
        OPERATOR,
        r#"{"name":"unlucky","scopes":["ping"]}"#,
    );
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("client_secret"), "{body}");
    // The busy core frees up. It empties its inbox in the same turn of its loop that ran the
    // holding job, so its next answer shows the inbox has room again; until the revocation is
    // retried, the client's token still works there.
    release.send(()).unwrap();
    assert_eq!(on_busy.send("GET", "/v1/auctions/auc_x", &access).0, 404);
    // The retried revocation reaches it, and answers the first one.
    let (status, _, body) = on_owner.send("DELETE", &path, OPERATOR);
    assert_eq!(status, 200, "{body}");
    let again: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(again["revoked_at"].is_string());
    assert_eq!(on_busy.send("GET", "/v1/auctions/auc_x", &access).0, 401);
    assert_eq!(on_owner.send("GET", "/v1/auctions/auc_x", &access).0, 401);
    let r = form(&env, "grant_type=client_credentials", Some((&id, &secret)));
    assert_eq!(r.json["error"], "invalid_client");
    let listed = env.get("/v1/admin/clients", Some(OPERATOR));
    let clients = listed.json["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2, "{}", listed.text);
    assert!(
        clients.iter().all(|c| c["revoked_at"].is_string()),
        "{}",
        listed.text
    );
}
