//! The walls of the library, checked on its own source: every `crate::` import points down
//! [`LAYERS`] (so no import runs in a circle, and `bpf/` never sees `policy/`), and no
//! command of the CLI opens maps, takes a lock or reads events behind the front door.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// The library's top-level modules, from the top down: a module may import only modules
/// below it.
const LAYERS: [&str; 8] = [
    "exporter", "guard", "error", "observe", "policy", "bpf", "net", "host",
];

/// What a CLI module may not name: map handles, locks and event readers live behind
/// `Guard`.
const CLI_FORBIDDEN: [&str; 10] = [
    "GuardMaps",
    "PinLock",
    "lock_attached",
    "lock_creating",
    "lock_events",
    "pins.lock",
    "bpf::maps",
    "bpf::object",
    "EventReader",
    "policy::store",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`bpf` for `src/bpf/maps.rs`), `None`
/// for the crate root and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "cli" | "layering")).then(|| name.to_owned())
}

/// The top-level modules a source text names through `crate::`, also inside `use
/// crate::{a, b::c}` groups. Comments are skipped.
fn crate_references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            for item in items {
                let name: String = item
                    .trim_start_matches(|c: char| c == ',' || c.is_whitespace())
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// The imports that do not point down [`LAYERS`], as "from -> to".
fn upward_imports(edges: &[(String, String)]) -> Vec<String> {
    let rank = |name: &str| LAYERS.iter().position(|layer| *layer == name);
    edges
        .iter()
        .filter(|(from, to)| from != to)
        .filter_map(|(from, to)| match (rank(from), rank(to)) {
            (Some(from_rank), Some(to_rank)) if from_rank < to_rank => None,
            // The crate root's own items (the embedded object) are below everything.
            (Some(_), None)
                if matches!(
                    to.as_str(),
                    "ebpf_object" | "trace_object" | "is_stub_build"
                ) =>
            {
                None
            }
            _ => Some(format!("{from} -> {to}")),
        })
        .collect()
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_import_points_down_the_layers() {
    let src = source_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut edges = Vec::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else {
            continue;
        };
        modules.insert(from.clone());
        let text = std::fs::read_to_string(file).expect("read a source file");
        for to in crate_references(&text) {
            edges.push((from.clone(), to));
        }
    }
    let layered: BTreeSet<String> = LAYERS.iter().map(|layer| (*layer).to_owned()).collect();
    assert_eq!(modules, layered, "every top-level module has a layer");
    assert!(
        edges
            .iter()
            .any(|(from, to)| from == "policy" && to == "bpf"),
        "the scan sees imports (policy stores itself in bpf maps)"
    );
    let upward = upward_imports(&edges);
    assert!(upward.is_empty(), "imports against the layers: {upward:?}");
}

#[test]
fn no_cli_module_opens_maps_or_takes_locks() {
    let src = source_dir();
    let mut files = vec![src.join("main.rs")];
    rust_files(&src.join("cli"), &mut files);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for word in CLI_FORBIDDEN {
            if text.contains(word) {
                found.push(format!("{}: {word}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "behind the front door: {found:?}");
}

#[test]
fn the_checks_catch_what_they_are_for() {
    let text = "use crate::{\n    bpf::{self, GuardMaps},\n    policy,\n};\n// crate::host\nlet x = crate::net::interface::ifindex(\"lo\");";
    assert_eq!(
        crate_references(text),
        ["bpf", "net", "policy"]
            .iter()
            .map(|name| (*name).to_owned())
            .collect()
    );
    let edge = |from: &str, to: &str| (from.to_owned(), to.to_owned());
    assert!(upward_imports(&[edge("policy", "bpf"), edge("guard", "host")]).is_empty());
    assert_eq!(
        upward_imports(&[edge("bpf", "policy")]),
        ["bpf -> policy".to_owned()]
    );
    assert_eq!(
        upward_imports(&[edge("bpf", "net"), edge("net", "bpf")]),
        ["net -> bpf".to_owned()],
        "a cycle always has an upward edge"
    );
}
