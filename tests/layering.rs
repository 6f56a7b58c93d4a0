//! The architecture invariant of docs/ARCHITECTURE.md ("Layers"), checked on the source: a module
//! may name (`crate::…`) only modules in its own layer or below. Test code (`tests.rs` files and
//! the items marked `#[cfg(test)]`) and comments are exempt; the rest of every file is read,
//! also what follows a test module.
//!
//! There are no exceptions: a new upward edge fails the test, naming the file it is in.

// A test reads source files with plain blocking I/O; no event loop runs here.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers from the bottom (0). Every top-level module of `src/` must be here.
const LAYERS: &[(&str, u8)] = &[
    // Plain shared types: tenant, scope, money, clock; error kinds.
    ("types", 0),
    ("error", 0),
    // Configuration schema, validated request models, limiters, logging setup.
    ("config", 1),
    ("model", 1),
    ("limits", 1),
    ("telemetry", 1),
    // Infrastructure: persistence, metrics, the HTTP server plumbing.
    ("store", 2),
    ("metrics", 2),
    ("http", 2),
    // Cores, event loops, inboxes, admission: generic over what a core holds.
    ("runtime", 3),
    // Domain pieces the exchange composes.
    ("auction", 4),
    ("audit", 4),
    ("buyers", 4),
    ("auth", 4),
    ("parties", 4),
    ("webhooks", 4),
    // The use-cases: run an auction, deliver a post, one-call lead, status transitions.
    ("exchange", 5),
    // Edges: the seller/buyer HTTP API and the sandbox (seeding, mock buyers).
    ("api", 6),
    ("sandbox", 6),
    // The command line.
    ("cli", 7),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/layering.rs LAYERS"))
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// The production code of a file: line comments dropped, and each item marked `#[cfg(test)]`
/// (a `mod tests { … }`, a test-only function or `use`) cut out. Everything else is read, also
/// the production code that follows a test module.
fn production_code(text: &str) -> String {
    let mut code = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            rest = skip_item(&rest[rest.len() - rest.trim_start().len() + "#[cfg(test)]".len()..]);
            continue;
        }
        if !trimmed.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
        rest = after;
    }
    code
}

/// `text` after the item it starts with: up to the `;` that ends an item without a body, or the
/// `}` that closes the item's first brace. Braces inside string, raw string and char literals and
/// comments do not count.
fn skip_item(text: &str) -> &str {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(b.len(), |n| i + n);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
                continue;
            }
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && !b[..i]
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) == Some(&b'"') {
                    let close = format!("\"{}", "#".repeat(hashes));
                    let from = i + 2 + hashes;
                    i = text[from..]
                        .find(&close)
                        .map_or(b.len(), |n| from + n + close.len());
                    continue;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A char literal ('{', '\'', '\u{7b}'), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += text[i + 1..].find('\'').map_or(b.len(), |n| n + 2);
                if b.get(i - 1) == Some(&b'\\') {
                    i += 1;
                }
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            b';' if depth == 0 => return &text[i + 1..],
            _ => {}
        }
        i += 1;
    }
    ""
}

/// Top-level modules named after `crate::`, including inside `use crate::{a::X, b};` groups.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group's top level by commas and take each item's first segment.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.extend(first_segment(&item));
        } else {
            found.extend(first_segment(rest));
        }
    }
    found
}

fn first_segment(path: &str) -> Option<String> {
    let seg: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!seg.is_empty() && seg.chars().next().is_some_and(|c| c.is_ascii_lowercase())).then_some(seg)
}

#[test]
fn no_module_names_a_module_above_its_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = gavel_testkit::rust_files(&src);

    // (from, to) -> the files where the edge appears
    let mut upward: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for to in named_modules(&production_code(&text)) {
            if to == from {
                continue;
            }
            if layer(&to) > layer(&from) {
                let rel = file.strip_prefix(&src).unwrap().display().to_string();
                upward.entry((from.clone(), to)).or_default().push(rel);
            }
        }
    }

    let upward: Vec<String> = upward
        .iter()
        .map(|((a, b), files)| {
            format!(
                "{a} (layer {}) -> {b} (layer {}) in {files:?}",
                layer(a),
                layer(b)
            )
        })
        .collect();
    assert!(
        upward.is_empty(),
        "modules name modules above their layer (docs/ARCHITECTURE.md, \"Layers\"):\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn the_import_scanner_reads_groups_and_skips_comments_and_tests() {
    let code = production_code(
        "use crate::{config::{A, B}, store::Batch};\n// crate::api is a comment\nfn f() { crate::metrics::x(); }\n#[cfg(test)]\nmod tests { use crate::cli; }\n",
    );
    let names: Vec<String> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["config", "metrics", "store"]);
}

#[test]
fn code_after_a_test_module_is_read() {
    // Braces in strings, raw strings, chars and comments of the test module do not end it early,
    // and the production code after it is checked.
    let code = production_code(concat!(
        "fn a() {}\n",
        "#[cfg(test)]\n",
        "mod tests {\n",
        "    use crate::cli;\n",
        "    const S: &str = \"}}\";\n",
        "    const R: &str = r#\"}\"#;\n",
        "    const C: char = '}';\n",
        "    // }\n",
        "    fn f<'a>(x: &'a str) -> &'a str { x }\n",
        "}\n",
        "#[cfg(test)]\n",
        "use crate::sandbox;\n",
        "fn after() { crate::api::x(); }\n",
    ));
    let names: Vec<String> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["api"], "{code}");
}
