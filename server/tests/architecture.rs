//! The guard on the server's structure (docs/ARCHITECTURE.md): no module
//! imports a module that imports it back (in any crate of the workspace),
//! no layer of the server imports a layer above it, and no crate of the
//! workspace depends on one that depends on it back (dev-dependencies
//! included).
//!
//! Edges are read from the source: `use` trees and `crate::` / `super::` /
//! `self::` / child-module paths in code, outside `#[cfg(test)]` items.
//! A parent declaring `mod child;` is not an edge; a parent using its
//! child's items is, and so is a child using its parent's — so shared
//! types live in a leaf module both import, never in `mod.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The server's layers, top first; a module may import only modules of
/// layers after its own (or its own top-level module).
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["app"],
    &["control"],
    &["outputs"],
    &["rtc", "avatars", "privacy"],
    &["session"],
    &["ingest"],
    &["pipeline"],
    &["engines"],
    &["store"],
    &["config", "ids", "metrics", "logging"],
    &["error", "util"],
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace's crates: (package name, folder), from `Cargo.toml`s.
fn crates() -> Vec<(String, PathBuf)> {
    let read = |dir: &Path| -> toml::Table {
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        text.parse().expect("Cargo.toml parses")
    };
    let root = read(&workspace());
    let members = root["workspace"]["members"].as_array().expect("members");
    let crates: Vec<(String, PathBuf)> = members
        .iter()
        .map(|m| {
            let dir = workspace().join(m.as_str().expect("member path"));
            let name = read(&dir)["package"]["name"]
                .as_str()
                .expect("package name")
                .to_owned();
            (name, dir)
        })
        .collect();
    assert!(crates.len() >= 4, "workspace members not found: {crates:?}");
    crates
}

#[test]
fn no_crate_depends_on_a_crate_that_depends_on_it_back() {
    let crates = crates();
    let mut graph = Graph::new();
    for (name, dir) in &crates {
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let deps = graph.entry(name.clone()).or_default();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            for dep in manifest
                .get(section)
                .and_then(|t| t.as_table())
                .into_iter()
                .flatten()
            {
                if crates.iter().any(|(n, _)| n == dep.0) {
                    deps.insert(dep.0.clone());
                }
            }
        }
    }
    assert!(graph["huashen"].contains("huashen-inference"), "{graph:?}");
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "crate cycles: {cycles:?}");
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    for (krate, dir) in crates() {
        let graph = module_graph(&dir.join("src"));
        assert!(
            graph.len() > 1
                || ["huashen-protos", "huashen-train", "huashen-fuzz"].contains(&krate.as_str()),
            "{krate}: no modules read"
        );
        let cycles = cycles(&graph);
        assert!(
            cycles.is_empty(),
            "{krate}: module cycles (each line is one; break it by moving what both need into a \
             module below them):\n{}",
            cycles
                .iter()
                .map(|c| c.join(" <-> "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn no_server_layer_imports_a_layer_above_it() {
    let graph = module_graph(&workspace().join("server/src"));
    let rank = |module: &str| -> usize {
        let top = module.split("::").next().unwrap_or("");
        LAYERS
            .iter()
            .position(|l| l.contains(&top))
            .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
    };
    let mut upward = Vec::new();
    for (from, tos) in &graph {
        if from.is_empty() {
            continue; // lib.rs declares the modules
        }
        for to in tos {
            let same_top = from.split("::").next() == to.split("::").next();
            if !same_top && rank(to) <= rank(from) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up or sideways across layers ({LAYERS:?}):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_guard_sees_a_cycle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let src = "use super::x::Y;\nuse crate::{a::B, c};\nfn f() { child::g(); }\n";
    let mut modules = BTreeSet::from(["a", "c", "m", "m::child", "m::x"].map(String::from));
    modules.insert(String::new());
    let refs = references(&["m".to_string(), "n".to_string()], true, src, &modules);
    assert_eq!(
        refs,
        BTreeSet::from(["a", "c", "m::x"].map(String::from)),
        "mod.rs of m::n"
    );
}

/// Module path (`store::crypto`, "" for the crate root) → modules it uses.
fn module_graph(src: &Path) -> Graph {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, (path, is_dir))| {
            let text = std::fs::read_to_string(path).expect("source file reads");
            let me: Vec<String> = module
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let mut refs = references(&me, *is_dir, &without_tests(&text), &modules);
            refs.remove(module);
            (module.clone(), refs)
        })
        .collect()
}

/// Every `.rs` file under `dir` as (module path → (file, whether it is a
/// `mod.rs`/`lib.rs`/`main.rs`)). `main.rs` is the module `main`.
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, (PathBuf, bool)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("source dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            // A crate's binaries (src/bin) are crates of their own.
            if path.file_name().is_some_and(|n| n != "bin") {
                collect(root, &path, out);
            }
            continue;
        }
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .expect("under root")
            .with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let last = parts.last().cloned().unwrap_or_default();
        let is_dir = matches!(last.as_str(), "mod" | "lib");
        if is_dir {
            parts.pop();
        }
        out.insert(parts.join("::"), (path, is_dir));
    }
}

/// The source without comments and without `#[cfg(test)]` items.
fn without_tests(text: &str) -> String {
    let mut s: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    while let Some(at) = s.find("#[cfg(test)]") {
        let bytes = s.as_bytes();
        let mut k = at + "#[cfg(test)]".len();
        while k < bytes.len() && bytes[k] != b';' && bytes[k] != b'{' {
            k += 1;
        }
        if k < bytes.len() && bytes[k] == b'{' {
            let mut depth = 0;
            while k < bytes.len() {
                match bytes[k] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
        }
        s.replace_range(at..(k + 1).min(s.len()), "");
    }
    s
}

/// The modules that code in module `me` (a `mod.rs`/`lib.rs` when
/// `is_dir`) names.
fn references(
    me: &[String],
    is_dir: bool,
    code: &str,
    modules: &BTreeSet<String>,
) -> BTreeSet<String> {
    let _ = is_dir; // `super` is the parent module either way
    let mut paths: Vec<Vec<String>> = Vec::new();
    for stmt in code.split(';') {
        // A use declaration starts a line (after its visibility).
        let mut offset = 0;
        for line in stmt.split_inclusive('\n') {
            let t = line.trim_start();
            let decl = t.starts_with("use ") || (t.starts_with("pub") && t.contains(" use "));
            if decl && let Some(at) = find_word(line, "use") {
                expand(&[], stmt[offset + at + 3..].trim(), &mut paths);
                break;
            }
            offset += line.len();
        }
    }
    // Paths in code: `a::b::c` not preceded by `::` or a word character.
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let word_start = (b[i].is_ascii_alphabetic() || b[i] == b'_')
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b':'));
        if !word_start {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b':') {
            j += 1;
        }
        let path: Vec<String> = code[i..j]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if path.len() > 1 {
            paths.push(path);
        }
        i = j.max(i + 1);
    }
    let mut out = BTreeSet::new();
    for p in paths {
        let (mut base, rest): (Vec<String>, &[String]) = match p[0].as_str() {
            "crate" => (vec![], &p[1..]),
            "super" => {
                let mut base = me.to_vec();
                base.pop();
                let mut rest = &p[1..];
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            "self" => (me.to_vec(), &p[1..]),
            first => {
                let mut child = me.to_vec();
                child.push(first.to_owned());
                if !modules.contains(&child.join("::")) {
                    continue;
                }
                (me.to_vec(), &p[..])
            }
        };
        base.extend(rest.iter().cloned());
        for n in (0..=base.len()).rev() {
            let candidate = base[..n].join("::");
            if modules.contains(&candidate) {
                if candidate != me.join("::") {
                    out.insert(candidate);
                }
                break;
            }
        }
    }
    out
}

fn find_word(s: &str, word: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(i) = s[from..].find(word).map(|i| i + from) {
        let before = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let after = b
            .get(i + word.len())
            .is_some_and(|c| c.is_ascii_whitespace());
        if before && after {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// Expands a use tree (`a::{b, c::d as e}`) into paths.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let mut prefix = prefix.to_vec();
        prefix.extend(
            tree[..open]
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&prefix, &inner[start..], out);
        return;
    }
    let name = tree.split(" as ").next().unwrap_or("").trim();
    if name.is_empty() {
        return;
    }
    let mut path = prefix.to_vec();
    path.extend(name.split("::").map(|s| s.trim().to_owned()));
    out.push(path);
}

/// Strongly connected components of more than one module (Tarjan), each
/// sorted, in order.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}
