//! The house rules of `src/`, checked on every test run so the redesign stays done: modules
//! import only the layers below them (no import circle), and no function grows past what a
//! reader can hold (docs/architecture.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every top-level module, from the bottom up. A module may use only the modules listed before
/// it. A new module must be placed here, at the layer it belongs to.
const ORDER: &[&str] = &[
    // Foundations.
    "clock",
    "secret",
    "private_fs",
    "rdb",
    "job",
    // Inputs and the state DB.
    "cds",
    "config",
    "store",
    "metrics",
    // Moving bytes.
    "transfer",
    "destination",
    // The bundle every task shares, and what it tells people.
    "services",
    "notify",
    // Decisions.
    "retention",
    "runner",
    "scheduler",
    "prune",
    "reconcile",
    "verify",
    "drill",
    // Read models shared by the CLI and /v1.
    "views",
    // Processes and faces.
    "http",
    "daemon",
    "sim",
    // The command line.
    "failure",
    "cli",
    "commands",
    "app",
];

/// The longest function allowed in `src/`, in lines (signature to closing brace).
const MAX_FUNCTION_LINES: usize = 100;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/prune/plan.rs` → `prune`.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a line, without its `//` comment (doc comments name modules freely).
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    line
}

/// `crate::x` paths named in a file's code, by top-level module.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(code_of) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    for file in &files {
        let module = top_module(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = rank.get(module.as_str()) else {
            unplaced.push(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&text) {
            if used == module {
                continue;
            }
            match rank.get(used.as_str()) {
                Some(&r) if r < own => {}
                _ => upward.push(format!(
                    "{} uses crate::{used}",
                    file.strip_prefix(src()).unwrap().display()
                )),
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    upward.sort();
    upward.dedup();
    assert!(
        unplaced.is_empty(),
        "modules missing from ORDER in tests/integration/layers.rs: {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports that point up (or sideways to a later module):\n{}",
        upward.join("\n")
    );
}

/// Each `fn` in a file with its length in lines, by brace matching (strings and char literals
/// blanked first, so a `{` in a message does not count).
fn function_lengths(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<String> = text.lines().map(|l| blank_literals(code_of(l))).collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let (mut depth, mut opened) = (0i64, false);
        for (offset, l) in lines[start..].iter().enumerate() {
            if !opened && l.contains(';') && !l.contains('{') {
                break; // a declaration without a body
            }
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                out.push((name.clone(), start + 1, offset + 1));
                break;
            }
        }
    }
    out
}

fn fn_name(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "fn")?;
    let before_ok = words[..at]
        .iter()
        .all(|w| matches!(*w, "pub" | "async" | "const" | "unsafe") || w.starts_with("pub("));
    let name: String = words
        .get(at + 1)?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (before_ok && !name.is_empty()).then_some(name)
}

fn blank_literals(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
            out.push('"');
        } else if c == '\'' && matches!(chars.peek(), Some('{') | Some('}')) {
            chars.next();
            out.push_str("' '");
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn no_function_in_src_is_longer_than_a_reader_can_hold() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (name, line, len) in function_lengths(&text) {
            if len > MAX_FUNCTION_LINES {
                long.push(format!(
                    "{}:{line} fn {name}: {len} lines",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them along their decisions):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_length_check_measures_what_it_claims() {
    let text = "fn a() {\n    let s = \"{{\";\n    if x { y }\n}\nfn b();\npub async fn c(\n    x: u8,\n) {\n}\n";
    let found = function_lengths(text);
    assert_eq!(
        found,
        vec![("a".to_string(), 1, 4), ("c".to_string(), 6, 4)]
    );
    assert_eq!(
        crate_paths("use crate::store::ms;\n// crate::app\nlet x = crate::clock::wall_now();"),
        vec!["store", "clock"]
    );
}
