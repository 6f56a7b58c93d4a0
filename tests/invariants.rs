//! Every invariant docs/ARCHITECTURE.md lists has a name (`- Invariant [name]: …`), and the code
//! that keeps it says so beside it (`Architecture Invariant [name]: …`), as rust-analyzer's
//! codebase does: a reader of the code finds the rule, and a reader of the doc finds the code
//! with one grep. This test keeps the two lists equal.

// A test reads source files with plain blocking I/O; no event loop runs here.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The names in brackets after `marker` on each line of `text` (`marker [name]:`).
fn names_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        if let Some(name) = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once("]:"))
            .map(|(n, _)| n)
            .filter(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') && !n.is_empty())
        {
            out.push(name);
        }
    }
    out
}

#[test]
fn every_documented_invariant_is_marked_in_the_code_and_back() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let documented = names_after(&doc, "- Invariant ");
    let unique: BTreeSet<&str> = documented.iter().copied().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "an invariant name is used twice"
    );
    assert!(
        unique.len() >= 25,
        "the doc lists {} named invariants",
        unique.len()
    );

    let files = gavel_testkit::rust_files(&root().join("src"));
    let mut marked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for name in names_after(&text, "Architecture Invariant ") {
            marked
                .entry(name.to_string())
                .or_default()
                .push(f.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    let unmarked: Vec<&&str> = unique
        .iter()
        .filter(|n| !marked.contains_key(**n))
        .collect();
    assert!(
        unmarked.is_empty(),
        "invariants of docs/ARCHITECTURE.md with no `Architecture Invariant [name]:` line in src/: {unmarked:?}"
    );
    let unknown: Vec<(&String, &Vec<String>)> = marked
        .iter()
        .filter(|(n, _)| !unique.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "`Architecture Invariant [name]:` lines naming no invariant of docs/ARCHITECTURE.md: {unknown:?}"
    );
}

#[test]
fn names_are_read_only_in_their_bracket_form() {
    let text = "- Invariant [one-owner]: x\n- Invariant: old form\nsee `Architecture Invariant [name]: …`\n// Architecture Invariant [one-owner]: here\n";
    assert_eq!(names_after(text, "- Invariant "), ["one-owner"]);
    assert_eq!(
        names_after(text, "Architecture Invariant "),
        ["name", "one-owner"]
    );
}
