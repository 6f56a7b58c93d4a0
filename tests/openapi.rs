//! docs/openapi.yaml checked against the code: the document parses as OpenAPI 3.1, its paths are
//! exactly the router's one table (`gavel::api::ROUTES`), the real server answers every documented
//! operation, and every status and error code the server answered with is declared for it. The
//! idempotency declarations (the `Idempotency-Key` parameter of both seller posts, the
//! `idempotency_*` codes, the `Idempotent-Replayed` header) are checked on the document and
//! against live answers, including a replay and an auction record read after a restart.
//!
//! The spec is read with serde_yaml and walked by hand (local `$ref`s only), so no OpenAPI
//! tooling is needed to run this. Full schema validation of the document is done outside the
//! test suite: `python -m openapi_spec_validator docs/openapi.yaml`.

mod common;

use std::collections::BTreeSet;

use common::*;
use gavel::config::Driver;
use serde_yaml::Value;

/// The HTTP methods an OpenAPI path item may hold as operations.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Most `$ref` hops followed for one lookup; guards against a reference cycle in the document.
const MAX_REF_HOPS: usize = 16;

/// The document, embedded at compile time so cargo rebuilds this test whenever it changes.
const SPEC_YAML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"));

fn spec() -> Value {
    serde_yaml::from_str(SPEC_YAML)
        .unwrap_or_else(|e| panic!("docs/openapi.yaml is not valid YAML: {e}"))
}

/// One documented operation.
struct Op<'a> {
    /// Uppercase, as in `ROUTES`.
    method: String,
    /// The path template, e.g. `/v1/auctions/{auction_id}`.
    path: String,
    body: &'a Value,
}

fn operations(spec: &Value) -> Vec<Op<'_>> {
    let paths = spec
        .get("paths")
        .and_then(Value::as_mapping)
        .expect("the spec has a `paths` mapping");
    let mut out = Vec::new();
    for (path, item) in paths {
        let path = path.as_str().expect("path keys are strings");
        let item = item
            .as_mapping()
            .unwrap_or_else(|| panic!("path item {path} is a mapping"));
        for (method, body) in item {
            let method = method.as_str().expect("path item keys are strings");
            if METHODS.contains(&method) {
                out.push(Op {
                    method: method.to_ascii_uppercase(),
                    path: path.to_string(),
                    body,
                });
            }
        }
    }
    out
}

/// Follows a local `$ref` (`#/components/...`) until it reaches an object without one.
fn resolve<'a>(spec: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..MAX_REF_HOPS {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let pointer = r
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("only local references are used: {r}"));
        v = pointer.split('/').fold(spec, |node, part| {
            let key = part.replace("~1", "/").replace("~0", "~");
            node.get(key.as_str())
                .unwrap_or_else(|| panic!("dangling reference {r}"))
        });
    }
    panic!("reference chain longer than {MAX_REF_HOPS} hops");
}

/// The documented response of an operation for one status, whether its key was written as a
/// string (`'404'`) or a number (`404`).
fn response<'a>(spec: &'a Value, op: &'a Value, status: u16) -> Option<&'a Value> {
    let responses = op.get("responses")?.as_mapping()?;
    responses.iter().find_map(|(k, v)| {
        let matches = match k {
            Value::String(s) => s == &status.to_string(),
            Value::Number(n) => n.as_u64() == Some(u64::from(status)),
            _ => false,
        };
        matches.then(|| resolve(spec, v))
    })
}

/// Every value the `error` property may take under a schema, following `$ref` and the
/// `allOf`/`oneOf`/`anyOf` combinators.
fn error_codes(spec: &Value, schema: &Value, out: &mut BTreeSet<String>, depth: usize) {
    assert!(depth < MAX_REF_HOPS, "schema nesting too deep");
    let schema = resolve(spec, schema);
    if let Some(error) = schema.get("properties").and_then(|p| p.get("error")) {
        let error = resolve(spec, error);
        if let Some(values) = error.get("enum").and_then(Value::as_sequence) {
            out.extend(values.iter().filter_map(Value::as_str).map(str::to_string));
        }
        if let Some(c) = error.get("const").and_then(Value::as_str) {
            out.insert(c.to_string());
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            error_codes(spec, sub, out, depth + 1);
        }
    }
}

/// The error codes a documented response lists for its JSON body.
fn documented_codes(spec: &Value, resp: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(schema) = resp
        .get("content")
        .and_then(|c| c.get("application/json"))
        .and_then(|m| m.get("schema"))
    {
        error_codes(spec, schema, &mut out, 0);
    }
    out
}

/// Whether an operation opts out of authentication (`security: []`).
fn is_open(op: &Value) -> bool {
    op.get("security")
        .and_then(Value::as_sequence)
        .is_some_and(|s| s.is_empty())
}

/// A request path for a template: `{auction_id}` becomes an id no auction has.
fn concrete(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("unclosed parameter in {template}"));
        out.push_str(&rest[..start]);
        out.push_str(match &rest[start + 1..end] {
            "auction_id" => "auc_unknown",
            _ => "unknown",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn spec_is_openapi_3_1() {
    let spec = spec();
    let version = spec
        .get("openapi")
        .and_then(Value::as_str)
        .expect("the spec has an `openapi` string");
    assert!(
        version.starts_with("3.1"),
        "openapi is {version:?}, want 3.1.x"
    );
    assert_eq!(spec["info"]["title"].as_str(), Some("Gavel"));
    assert_eq!(
        spec["info"]["version"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "info.version follows the crate version"
    );
}

#[test]
fn spec_paths_are_exactly_the_route_table() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = operations(&spec)
        .into_iter()
        .map(|op| (op.method, op.path))
        .collect();
    let routed: BTreeSet<(String, String)> = gavel::api::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let only_documented: Vec<_> = documented.difference(&routed).collect();
    let only_routed: Vec<_> = routed.difference(&documented).collect();
    assert!(
        only_documented.is_empty() && only_routed.is_empty(),
        "docs/openapi.yaml and gavel::api::ROUTES disagree.\n  \
         documented but not routed: {only_documented:?}\n  \
         routed but not documented: {only_routed:?}"
    );
}

#[test]
fn every_response_declares_request_id_and_error_codes() {
    let spec = spec();
    let mut problems = Vec::new();
    for op in operations(&spec) {
        let name = format!("{} {}", op.method, op.path);
        if !is_open(op.body) && op.body.get("x-gavel-scope").is_none() {
            problems.push(format!("{name}: authenticated but has no x-gavel-scope"));
        }
        let responses = op
            .body
            .get("responses")
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{name} has responses"));
        for (status, resp) in responses {
            let status = match status {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let resp = resolve(&spec, resp);
            let rid = resp.get("headers").and_then(|h| h.get("X-Request-Id"));
            if rid.and_then(|h| h.get("$ref")).and_then(Value::as_str)
                != Some("#/components/headers/X-Request-Id")
            {
                problems.push(format!(
                    "{name} {status}: X-Request-Id is not referenced from components/headers"
                ));
            }
            if (status.starts_with('4') || status.starts_with('5'))
                && documented_codes(&spec, resp).is_empty()
            {
                problems.push(format!("{name} {status}: no error codes listed"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each operation's `x-gavel-parties` is the code's view rule (the route's row in
/// `gavel::api::ROUTES`), cell for cell, its `x-gavel-scope` is the row's scopes, and the open
/// operations are exactly the ones public to every party.
#[test]
fn every_operation_states_the_view_rule_of_the_code() {
    use gavel::types::PartyKind;
    let spec = spec();
    let mut problems = Vec::new();
    for op in operations(&spec) {
        let name = format!("{} {}", op.method, op.path);
        let rule = gavel::api::ROUTES
            .iter()
            .find(|r| r.method == op.method && r.path == op.path);
        let Some(rule) = rule else {
            problems.push(format!("{name}: no row in api::ROUTES"));
            continue;
        };
        let scopes: Vec<&str> = rule.scopes.iter().map(|s| s.as_str()).collect();
        let documented = op.body.get("x-gavel-scope").and_then(Value::as_str);
        let documented: Vec<&str> = documented.map_or(vec![], |s| s.split(' ').collect());
        if documented != scopes {
            problems.push(format!(
                "{name}: x-gavel-scope is {documented:?}, the code says {scopes:?}"
            ));
        }
        let parties = &op.body["x-gavel-parties"];
        for kind in [PartyKind::Operator, PartyKind::Seller, PartyKind::Buyer] {
            let documented = parties[kind.as_str()].as_str();
            let code = rule.access(kind).as_str();
            if documented != Some(code) {
                problems.push(format!(
                    "{name}: x-gavel-parties.{} is {documented:?}, the code says {code:?}",
                    kind.as_str()
                ));
            }
        }
        let public = rule.operator == gavel::api::views::Access::Public;
        if public != is_open(op.body) {
            problems.push(format!(
                "{name}: `security: []` and a public view rule must go together"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn server_serves_every_documented_operation_as_documented() {
    let spec = spec();
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let mut problems = Vec::new();
    for op in operations(&spec) {
        let name = format!("{} {}", op.method, op.path);
        let path = concrete(&op.path);
        let open = is_open(op.body);
        // A seller where the operation is open to sellers, else the operator (an operation
        // that is neither's answers the documented 404).
        let seller_sees = op.body["x-gavel-parties"]["seller"].as_str() != Some("none");
        let token = (!open).then_some(if seller_sees { TOKEN } else { OPERATOR });
        let body = (op.method == "POST").then_some("{}");
        let r = call(&env.base, &op.method, &path, token, body, &[]);
        let code = r.error_code().to_string();
        let message = r.json["message"].as_str().unwrap_or("");
        let seen = format!(
            "{} {path} answered {} {}",
            op.method,
            r.status,
            r.text.trim()
        );

        // (c) The router knows the route and the method.
        if r.status == 405 {
            problems.push(format!("{seen}: the method is not routed"));
        }
        if r.status == 404 && code == "not_found" && message.starts_with("No route") {
            problems.push(format!("{seen}: the path is not routed"));
        }
        // An open operation may still refuse bad client credentials (the token endpoint's
        // `invalid_client`), but never asks for a bearer token.
        let bearer_demanded = r
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"));
        if open && r.status == 401 && bearer_demanded {
            problems.push(format!("{seen}: documented as needing no token"));
        }
        if !r
            .header("x-request-id")
            .is_some_and(|v| v.starts_with("req_"))
        {
            problems.push(format!("{seen}: no X-Request-Id"));
        }

        // (d) What the server answered is declared for the operation.
        let Some(resp) = response(&spec, op.body, r.status) else {
            problems.push(format!(
                "{seen}: status {} is not declared for {name}",
                r.status
            ));
            continue;
        };
        if r.status >= 400 {
            let documented = documented_codes(&spec, resp);
            if !documented.contains(&code) {
                problems.push(format!(
                    "{seen}: error code {code:?} is not declared for {name} {} \
                     (declared: {documented:?})",
                    r.status
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn concrete_paths_fill_parameters() {
    assert_eq!(
        concrete("/v1/auctions/{auction_id}"),
        "/v1/auctions/auc_unknown"
    );
    assert_eq!(concrete("/healthz"), "/healthz");
    assert_eq!(
        concrete("/a/{x}/b/{auction_id}"),
        "/a/unknown/b/auc_unknown"
    );
}

/// The operation documented for `method` (lowercase) on `path`.
fn operation<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    spec.get("paths")
        .and_then(|p| p.get(path))
        .and_then(|item| item.get(method))
        .unwrap_or_else(|| panic!("{method} {path} is documented"))
}

/// The error codes documented for one status of an operation.
fn codes_for(spec: &Value, method: &str, path: &str, status: u16) -> BTreeSet<String> {
    let op = operation(spec, method, path);
    let resp =
        response(spec, op, status).unwrap_or_else(|| panic!("{method} {path} declares {status}"));
    documented_codes(spec, resp)
}

/// Whether a documented response references the shared `Idempotent-Replayed` header.
fn declares_replayed(resp: &Value) -> bool {
    resp.get("headers")
        .and_then(|h| h.get("Idempotent-Replayed"))
        .and_then(|h| h.get("$ref"))
        .and_then(Value::as_str)
        == Some("#/components/headers/Idempotent-Replayed")
}

/// The property names of a component schema.
fn schema_properties(spec: &Value, name: &str) -> BTreeSet<String> {
    spec["components"]["schemas"][name]["properties"]
        .as_mapping()
        .unwrap_or_else(|| panic!("components/schemas/{name} has properties"))
        .keys()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Checks a live answer against the operation's documentation: its status is declared, its error
/// code is listed for that status, and a replay's `Idempotent-Replayed` header is declared.
fn check_answer(spec: &Value, method: &str, path: &str, r: &Resp, problems: &mut Vec<String>) {
    let seen = format!(
        "{} {path} answered {} {}",
        method.to_ascii_uppercase(),
        r.status,
        r.text.trim()
    );
    let Some(resp) = response(spec, operation(spec, method, path), r.status) else {
        problems.push(format!("{seen}: status {} is not declared", r.status));
        return;
    };
    if r.status >= 400 {
        let documented = documented_codes(spec, resp);
        if !documented.contains(r.error_code()) {
            problems.push(format!(
                "{seen}: error code {:?} is not declared (declared: {documented:?})",
                r.error_code()
            ));
        }
    }
    if r.header("idempotent-replayed").is_some() && !declares_replayed(resp) {
        problems.push(format!("{seen}: Idempotent-Replayed is not declared"));
    }
}

#[test]
fn both_seller_posts_declare_the_idempotency_key() {
    let spec = spec();
    for path in ["/v1/ping", "/v1/post"] {
        let op = operation(&spec, "post", path);
        let params: Vec<&Value> = op
            .get("parameters")
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("POST {path} has parameters"))
            .iter()
            .map(|p| resolve(&spec, p))
            .filter(|p| p["name"].as_str() == Some("Idempotency-Key"))
            .collect();
        assert_eq!(params.len(), 1, "POST {path} declares Idempotency-Key once");
        let p = params[0];
        assert_eq!(p["in"].as_str(), Some("header"), "POST {path}: a header");
        assert_ne!(
            p["required"].as_bool(),
            Some(true),
            "POST {path}: Idempotency-Key is optional"
        );
        let schema = resolve(&spec, &p["schema"]);
        assert_eq!(schema["minLength"].as_u64(), Some(1), "POST {path}");
        assert_eq!(
            schema["maxLength"].as_u64(),
            Some(gavel::api::idempotency::MAX_KEY_LEN as u64),
            "POST {path}: the key length limit follows the code"
        );
        assert!(
            codes_for(&spec, "post", path, 400).contains("invalid_idempotency_key"),
            "POST {path} 400 lists invalid_idempotency_key"
        );
    }
}

#[test]
fn idempotency_codes_and_headers_are_declared() {
    let spec = spec();
    let want: &[(&str, u16, &[&str])] = &[
        (
            "/v1/ping",
            409,
            &["auction_exists", "idempotency_in_flight"],
        ),
        (
            "/v1/ping",
            422,
            &[
                "invalid_payload",
                "pii_not_allowed",
                "idempotency_key_reused",
            ],
        ),
        ("/v1/ping", 500, &["internal_error"]),
        ("/v1/ping", 503, &["overloaded"]),
        (
            "/v1/post",
            409,
            &["auction_already_posted", "idempotency_in_flight"],
        ),
        (
            "/v1/post",
            422,
            &[
                "invalid_payload",
                "invalid_bid_token",
                "bid_expired",
                "lead_mismatch",
                "idempotency_key_reused",
            ],
        ),
        ("/v1/post", 500, &["internal_error"]),
        ("/v1/post", 502, &["buyer_unavailable"]),
        ("/v1/post", 503, &["overloaded"]),
    ];
    let mut problems = Vec::new();
    for (path, status, codes) in want {
        let documented = codes_for(&spec, "post", path, *status);
        for code in *codes {
            if !documented.contains(*code) {
                problems.push(format!("POST {path} {status} does not list {code}"));
            }
        }
    }
    for (path, status) in [
        ("/v1/ping", 200),
        ("/v1/post", 200),
        ("/v1/post", 201),
        ("/v1/post", 202),
    ] {
        let resp = response(&spec, operation(&spec, "post", path), status).unwrap();
        if !declares_replayed(resp) {
            problems.push(format!(
                "POST {path} {status} does not reference components/headers/Idempotent-Replayed"
            ));
        }
    }
    if spec["components"]["headers"]["Idempotent-Replayed"].is_null() {
        problems.push("components/headers/Idempotent-Replayed is missing".into());
    }
    // The auction record's post summary: its states and the lead id of a sale.
    let post = &spec["components"]["schemas"]["PostSummary"];
    let states: Vec<&str> = post["properties"]["status"]["enum"]
        .as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if states
        != [
            "none",
            "in_flight",
            "unresolved",
            "sold",
            "unsold",
            "unconfirmed",
        ]
    {
        problems.push(format!("PostSummary.status is {states:?}"));
    }
    if !schema_properties(&spec, "PostSummary").contains("lead_uuid") {
        problems.push("PostSummary has no lead_uuid".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn server_idempotency_answers_are_documented() {
    let spec = spec();
    let mut env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let mut problems = Vec::new();
    let ping = ping_body().to_string();
    let key = |k: &'static str| [("Idempotency-Key", k)];

    // Ping: run, replay, reuse with another body, malformed key.
    let first = env.post_with("/v1/ping", Some(TOKEN), &ping, &key("openapi-ping-1"));
    assert_eq!(first.status, 200, "{}", first.text);
    check_answer(&spec, "post", "/v1/ping", &first, &mut problems);
    let replay = env.post_with("/v1/ping", Some(TOKEN), &ping, &key("openapi-ping-1"));
    assert_eq!(
        replay.header("idempotent-replayed"),
        Some("true"),
        "{}",
        replay.text
    );
    assert_eq!(replay.text, first.text, "the replay repeats the first body");
    check_answer(&spec, "post", "/v1/ping", &replay, &mut problems);
    let mut other = ping_body();
    other["zip3"] = "771".into();
    let reused = env.post_with(
        "/v1/ping",
        Some(TOKEN),
        &other.to_string(),
        &key("openapi-ping-1"),
    );
    assert_eq!(
        reused.error_code(),
        "idempotency_key_reused",
        "{}",
        reused.text
    );
    check_answer(&spec, "post", "/v1/ping", &reused, &mut problems);
    let long = "k".repeat(gavel::api::idempotency::MAX_KEY_LEN + 1);
    let bad = env.post_with(
        "/v1/ping",
        Some(TOKEN),
        &ping,
        &[("Idempotency-Key", long.as_str())],
    );
    assert_eq!(bad.error_code(), "invalid_idempotency_key", "{}", bad.text);
    check_answer(&spec, "post", "/v1/ping", &bad, &mut problems);

    // Post: sell, replay, reuse with another body, another key, malformed key.
    let auction_id = first.json["auction_id"].as_str().unwrap().to_string();
    let token = first.json["bid"]["bid_token"].as_str().unwrap().to_string();
    let body = post_body(&auction_id, &token).to_string();
    let sold = env.post_with("/v1/post", Some(TOKEN), &body, &[]);
    assert_eq!(sold.status, 201, "{}", sold.text);
    check_answer(&spec, "post", "/v1/post", &sold, &mut problems);
    let again = env.post_with("/v1/post", Some(TOKEN), &body, &[]);
    assert_eq!(
        again.header("idempotent-replayed"),
        Some("true"),
        "{}",
        again.text
    );
    check_answer(&spec, "post", "/v1/post", &again, &mut problems);
    let mut changed = post_body(&auction_id, &token);
    changed["lead"]["first_name"] = "Marie".into();
    let reused = env.post_with("/v1/post", Some(TOKEN), &changed.to_string(), &[]);
    assert_eq!(
        reused.error_code(),
        "idempotency_key_reused",
        "{}",
        reused.text
    );
    check_answer(&spec, "post", "/v1/post", &reused, &mut problems);
    let posted = env.post_with("/v1/post", Some(TOKEN), &body, &key("another-key"));
    assert_eq!(
        posted.error_code(),
        "auction_already_posted",
        "{}",
        posted.text
    );
    check_answer(&spec, "post", "/v1/post", &posted, &mut problems);
    let bad = env.post_with(
        "/v1/post",
        Some(TOKEN),
        &body,
        &[("Idempotency-Key", long.as_str())],
    );
    assert_eq!(bad.error_code(), "invalid_idempotency_key", "{}", bad.text);
    check_answer(&spec, "post", "/v1/post", &bad, &mut problems);

    // The auction record: every key each view renders is documented, and it reads the same
    // after a restart.
    let path = format!("/v1/auctions/{auction_id}");
    let seller_view = env.get(&path, Some(TOKEN));
    assert_eq!(seller_view.status, 200, "{}", seller_view.text);
    check_answer(
        &spec,
        "get",
        "/v1/auctions/{auction_id}",
        &seller_view,
        &mut problems,
    );
    assert_eq!(
        seller_view.json["post"]["lead_uuid"], sold.json["lead_uuid"],
        "the seller's view names its sold lead"
    );
    let documented = schema_properties(&spec, "SellerAuctionRecord");
    for k in seller_view.json.as_object().unwrap().keys() {
        if !documented.contains(k) {
            problems.push(format!(
                "{path}: {k} is not a property of SellerAuctionRecord"
            ));
        }
    }
    let record = env.get(&path, Some(OPERATOR));
    assert_eq!(record.status, 200, "{}", record.text);
    assert_eq!(record.json["post"]["status"], "sold", "{}", record.text);
    assert_eq!(
        record.json["post"]["lead_uuid"], sold.json["lead_uuid"],
        "post.lead_uuid is the sold lead's id"
    );
    for (object, schema) in [
        (&record.json, "AuctionRecord"),
        (&record.json["post"], "PostSummary"),
    ] {
        let documented = schema_properties(&spec, schema);
        for k in object.as_object().unwrap().keys() {
            if !documented.contains(k) {
                problems.push(format!("{path}: {k} is not a property of {schema}"));
            }
        }
    }
    env.restart();
    let after = env.get(&path, Some(OPERATOR));
    assert_eq!(
        after.text, record.text,
        "the record reads the same after a restart"
    );
    let replay = env.post_with("/v1/ping", Some(TOKEN), &ping, &key("openapi-ping-1"));
    assert_eq!(
        replay.header("idempotent-replayed"),
        Some("true"),
        "a ping replays after a restart: {}",
        replay.text
    );
    assert_eq!(replay.text, first.text);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
