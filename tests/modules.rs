//! No circle of modules: in every crate, the modules under one parent import each other
//! one way only (`crate::…`, `super::…` and `self::…` paths, read from the sources), so
//! each can be read, tested and moved knowing what it stands on.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from its crate's root, e.g. `["engine", "needs"]`.
type ModPath = Vec<String>;

/// Every module of the crate whose sources are under `src`, with the text of its file.
fn modules(src: &Path) -> BTreeMap<ModPath, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![(src.to_path_buf(), ModPath::new())];
    while let Some((dir, path)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().path();
            let name = file.file_stem().unwrap().to_string_lossy().to_string();
            if file.is_dir() {
                let mut sub = path.clone();
                sub.push(name);
                stack.push((file, sub));
            } else if file.extension().is_some_and(|e| e == "rs") {
                let mut module = path.clone();
                if !matches!(name.as_str(), "lib" | "main" | "mod") {
                    module.push(name);
                }
                found.insert(module, code_of(&std::fs::read_to_string(&file).unwrap()));
            }
        }
    }
    found
}

/// The code of a file: without comments, and without its tests (a `#[cfg(test)]` module
/// at its end may use what it likes).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The paths `code` names from `crate::`, `super::` or `self::`, as written (a group
/// `{a, b::c}` gives one path per item), resolved against `module`.
fn named(module: &ModPath, code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    for (root, base) in [("crate::", ModPath::new()), ("super::", parent(module)), ("self::", module.clone())]
    {
        for (at, _) in code.match_indices(root) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for tail in items(&code[at + root.len()..]) {
                let mut path = base.clone();
                path.extend(tail);
                out.push(path);
            }
        }
    }
    out
}

/// The paths at the start of `rest`: `a::b` is one, `{a, b::c}` one per item.
fn items(rest: &str) -> Vec<Vec<String>> {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut end = group.len();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let (mut parts, mut depth, mut from) = (Vec::new(), 0, 0);
        for (i, c) in group[..end].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&group[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&group[from..end]);
        return parts.into_iter().flat_map(|p| items(p.trim())).collect();
    }
    let path: Vec<String> = rest
        .split("::")
        .map_while(|segment| {
            let ident: String = segment.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            (!ident.is_empty()).then_some(ident)
        })
        .collect();
    vec![path]
}

fn parent(module: &ModPath) -> ModPath {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// The longest module of `known` that `path` starts with.
fn module_of(path: &ModPath, known: &BTreeSet<ModPath>) -> ModPath {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| known.contains(p)).unwrap_or_default()
}

/// For each parent, which of its children import which (through anything below them).
fn imports(mods: &BTreeMap<ModPath, String>) -> BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> {
    let known: BTreeSet<ModPath> = mods.keys().cloned().collect();
    let mut graphs: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, code) in mods {
        for to in named(from, code).iter().map(|p| module_of(p, &known)) {
            let shared = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if shared < from.len() && shared < to.len() {
                let graph = graphs.entry(from[..shared].to_vec()).or_default();
                graph.entry(from[shared].clone()).or_default().insert(to[shared].clone());
            }
        }
    }
    graphs
}

/// A circle in `graph`, if there is one: the modules on it, the first again at the end.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_modules_of_a_crate_import_each_other_in_a_circle() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut circles = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        for (parent, graph) in imports(&modules(&src)) {
            if let Some(found) = circle(&graph) {
                circles.push(format!("{} ({}): {}", src.display(), parent.join("::"), found.join(" → ")));
            }
        }
    }
    assert!(circles.is_empty(), "modules importing each other in a circle:\n{}", circles.join("\n"));
}

#[test]
fn the_check_finds_a_circle_where_there_is_one() {
    let mods: BTreeMap<ModPath, String> = [
        (vec!["a".to_string()], "use crate::b::Thing;".to_string()),
        (vec!["b".to_string()], "use crate::{c, d::More};".to_string()),
        (vec!["c".to_string()], "fn f() { super::a::g() }".to_string()),
        (vec!["d".to_string()], String::new()),
    ]
    .into();
    let graphs = imports(&mods);
    assert_eq!(circle(&graphs[&ModPath::new()]), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let mut broken = mods.clone();
    broken.insert(vec!["c".to_string()], "fn f() { super::d::g() }".to_string());
    assert_eq!(circle(&imports(&broken)[&ModPath::new()]), None);
}

#[test]
fn the_engine_depends_on_no_http_stack_and_no_settings_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["tree", "-p", "engine", "-e", "normal", "--prefix", "none", "--offline", "--locked"])
        .output()
        .unwrap();
    assert!(tree.status.success(), "{}", String::from_utf8_lossy(&tree.stderr));
    let crates: BTreeSet<String> = String::from_utf8(tree.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(crates.contains("upstream"), "the tree was read: {crates:?}");
    for http in ["axum", "hyper", "tower-http", "reqwest", "config"] {
        assert!(!crates.contains(http), "the engine depends on {http}, directly or through another crate");
    }
}
