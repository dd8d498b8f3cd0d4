//! The dependency rule, checked on the source: the crate's top-level modules form no
//! cycle (facades -> backends -> Lua runtime -> VM; the worker protocol depends only on
//! leaf types). A `crate::MODULE` path anywhere in a module's files, doc links included,
//! counts as a dependency on that module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::a`, `crate::{a, b::c}` → a, b.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
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

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_of = |path: &Path| -> Option<String> {
        let first = path.strip_prefix(&src).ok()?.components().next()?;
        let name = first
            .as_os_str()
            .to_str()?
            .trim_end_matches(".rs")
            .to_string();
        (name != "lib" && name != "bin").then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|p| module_of(p)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for dep in referenced(&text) {
            if dep != module && modules.contains(&dep) {
                deps.insert(dep);
            }
        }
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_is_acyclic() {
    let graph = module_graph();
    assert!(graph.contains_key("engine") && graph.contains_key("worker"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}\ngraph: {graph:#?}", cycle.join(" -> "));
    }
}

#[test]
fn the_worker_and_the_engine_sit_below_the_facades() {
    let graph = module_graph();
    for low in ["engine", "worker"] {
        for facade in ["sandbox", "session", "check"] {
            assert!(
                !graph[low].contains(facade),
                "{low} depends on the facade {facade}"
            );
        }
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&graph).is_some());
    assert_eq!(
        referenced("use crate::{engine::Host, error};"),
        BTreeSet::from(["engine".to_string(), "error".to_string()])
    );
}
