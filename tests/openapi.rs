//! docs/openapi.yaml checked against the code: the document parses as OpenAPI 3.1, its paths are
//! exactly the router's table (`gavel::api::ROUTES`), the real server answers every documented
//! operation, and every status and error code the server answered with is declared for it.
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
        .map(|(m, p)| (m.to_ascii_uppercase(), p.to_string()))
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

#[test]
fn server_serves_every_documented_operation_as_documented() {
    let spec = spec();
    let env = Env::start(Driver::Legacy, vec![fixed("x", 30.0)], |_, _| {});
    let mut problems = Vec::new();
    for op in operations(&spec) {
        let name = format!("{} {}", op.method, op.path);
        let path = concrete(&op.path);
        let open = is_open(op.body);
        let token = (!open).then_some(TOKEN);
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
        if open && r.status == 401 {
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
