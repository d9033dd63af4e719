//! The workspace's shape, checked: module imports inside each crate run
//! one way (no cycle), library files stay small, and the data plane
//! depends on neither an async runtime, JSON, netlink, nor the control
//! plane. A change that breaks the layering fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Library source folders of the workspace's crates.
const CRATES: [&str; 7] = [
    "proto/wireguard/src",
    "proto/esp/src",
    "proto/ikev2/src",
    "config/src",
    "dataplane/src",
    "gateway/src",
    "lab/src",
];

/// Rust files of `dir` (not below it), by module name.
fn modules(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The code of a file before its unit tests.
fn code(src: &str) -> &str {
    src.split("#[cfg(test)]").next().unwrap()
}

/// Modules of the same crate that `src` names as `crate::<module>`.
fn uses(src: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    code(src)
        .match_indices("crate::")
        .filter_map(|(i, _)| {
            let rest = &code(src)[i + 7..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            known.contains(&name).then_some(name)
        })
        .collect()
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in &graph[m] {
            if let Some(c) = visit(next, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut done, &mut Vec::new()))
}

#[test]
fn module_imports_run_one_way_in_every_crate() {
    for dir in CRATES {
        let mods = modules(&workspace().join(dir));
        let known: BTreeSet<String> = mods.keys().filter(|m| *m != "lib").cloned().collect();
        let graph: BTreeMap<String, BTreeSet<String>> = mods
            .iter()
            .filter(|(m, _)| *m != "lib")
            .map(|(m, src)| (m.clone(), uses(src, &known).into_iter().filter(|u| u != m).collect()))
            .collect();
        assert_eq!(find_cycle(&graph), None, "an import cycle in {dir}");
    }
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).map(|c| c.len()), Some(4));
}

/// Every folder of non-test code, binaries included.
const CODE: [&str; 19] = [
    "proto/wireguard/src",
    "proto/esp/src",
    "proto/ikev2/src",
    "proto/ikev2/src/crypto",
    "proto/ikev2/src/rekey",
    "proto/ikev2/src/wire",
    "gateway/src/ipsec",
    "config/src",
    "dataplane/src",
    "gateway/src",
    "gateway/src/api",
    "gateway/src/metrics",
    "gateway/src/bin",
    "gateway/src/bin/tunctl",
    "lab/src",
    "lab/src/bin",
    "lab/src/strongswan",
    "benches/src/bin/netns_compare",
    "fuzz/src",
];

#[test]
fn code_files_stay_under_600_lines() {
    for dir in CODE {
        for (m, src) in modules(&workspace().join(dir)) {
            let lines = code(&src).lines().count();
            assert!(lines <= 600, "{dir}/{m}.rs has {lines} lines before its tests");
        }
    }
}

#[test]
fn the_data_plane_depends_on_no_runtime_json_netlink_or_control_plane() {
    let manifest = std::fs::read_to_string(workspace().join("dataplane/Cargo.toml")).unwrap();
    let deps = manifest.split("[dev-dependencies]").next().unwrap();
    for banned in ["tokio", "serde_json", "netlink", "causeway-gateway", "causeway-lab"] {
        assert!(!deps.contains(banned), "dataplane depends on {banned}");
    }
}
