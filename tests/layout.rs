//! The layout of `src/`: no import circle between its files, and no file over 700 lines of
//! code. Reads the sources; builds nothing.
//!
//! A file *depends on* another when it names an item of it: through `use` (grouped trees
//! included) or a path in code (`crate::a::b`, `super::x`, or a child module declared with
//! `mod`). A file naming an item of one of its own ancestors (`use super::Store` in a store
//! module) is no dependency for this check: a parent module is where its children's shared
//! items live, as in every crate. Every other dependency counts, a parent on its child
//! included, and a circle through them is a file that cannot be read without the other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path of the crate: `[]` for the root, `["store", "redis"]`…
type Module = Vec<String>;

/// Every `.rs` file under `src/` with the module it defines.
fn modules() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            (module, file)
        })
        .collect()
}

/// The source without comments and string literals (so that paths in docs and messages
/// are not taken for dependencies).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"')) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A char literal such as '{' (lifetimes have no closing quote there).
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Every path the code names: the leaves of each `use` tree, and each `a::b::c` in code.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let tokens: Vec<char> = code.chars().collect();
    let mut i = 0;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < tokens.len() {
        // A use tree: `use a::{b, c::{d, e}};`
        let starts_use = code_at(&tokens, i, "use ") && (i == 0 || !is_ident(tokens[i - 1]));
        if starts_use {
            let end = (i..tokens.len())
                .find(|&j| tokens[j] == ';')
                .unwrap_or(tokens.len());
            let tree: String = tokens[i + 4..end].iter().collect();
            // `a as b` keeps `a`; then no whitespace.
            let tree: String = tree
                .replace(" as ", "@")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            flatten(&tree, &mut Vec::new(), &mut out);
            i = end;
            continue;
        }
        // A path in code: ident(::ident)+
        if is_ident(tokens[i]) && (i == 0 || !(is_ident(tokens[i - 1]) || tokens[i - 1] == ':')) {
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < tokens.len() && is_ident(tokens[j]) {
                    j += 1;
                }
                segs.push(tokens[start..j].iter().collect::<String>());
                if code_at(&tokens, j, "::") && tokens.get(j + 2).is_some_and(|c| is_ident(*c)) {
                    j += 2;
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                out.push(segs);
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

fn code_at(tokens: &[char], i: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, c)| tokens.get(i + k) == Some(&c))
}

/// The leaves of a use tree (whitespace removed), each prefixed with `prefix`.
fn flatten(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    // Split the top level by commas, outside braces.
    let mut depth = 0;
    let mut start = 0;
    let bytes = tree.as_bytes();
    let mut parts = Vec::new();
    for (k, &c) in bytes.iter().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                parts.push(&tree[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&tree[start..]);
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        let part = part.split('@').next().unwrap();
        match part.find("::{") {
            Some(k) => {
                let head: Vec<String> = part[..k].split("::").map(str::to_owned).collect();
                let inner = &part[k + 3..part.len() - 1];
                let depth = prefix.len();
                prefix.extend(head);
                flatten(inner, prefix, out);
                prefix.truncate(depth);
            }
            None if part.starts_with('{') => flatten(&part[1..part.len() - 1], prefix, out),
            None => {
                let mut path = prefix.clone();
                path.extend(part.split("::").map(str::to_owned));
                out.push(path);
            }
        }
    }
}

/// The file modules `module`'s code depends on.
fn dependencies(
    module: &Module,
    file: &Path,
    all: &BTreeMap<Module, PathBuf>,
    reexports: &BTreeMap<String, Module>,
) -> BTreeSet<Module> {
    let text = std::fs::read_to_string(file).unwrap();
    // The unit tests at the end of a file are no dependency of the crate.
    let text = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
    let code = code(text);
    // A module with child modules (`a/mod.rs`, or `a.rs` beside `a/`) names them directly.
    let is_dir_module = all
        .keys()
        .any(|k| k.len() == module.len() + 1 && k.starts_with(module));
    // Where `super` points: the parent of this module.
    let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
    let mut deps = BTreeSet::new();
    for path in paths(&code) {
        let mut resolved: Module = match path[0].as_str() {
            "crate" => path[1..].to_vec(),
            "super" => {
                let mut base = parent.clone();
                let mut rest = &path[1..];
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                base
            }
            "self" => [module.clone(), path[1..].to_vec()].concat(),
            // A child module named from its parent's file.
            first if is_dir_module => {
                let mut child = module.clone();
                child.push(first.to_owned());
                if !all.contains_key(&child) {
                    continue;
                }
                [module.clone(), path.clone()].concat()
            }
            _ => continue,
        };
        // An item the root re-exports (`crate::Error`) lives where it is defined.
        if resolved.len() == 1
            && let Some(defined) = reexports.get(&resolved[0])
        {
            resolved = defined.clone();
        }
        // The longest prefix that is a file module.
        while !resolved.is_empty() && !all.contains_key(&resolved) {
            resolved.pop();
        }
        let ancestor = module.starts_with(&resolved);
        if !ancestor {
            deps.insert(resolved);
        }
    }
    deps
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "lib.rs".into()
    } else {
        module.join("/")
    }
}

/// Every circle of the dependency graph, as the files around it.
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Strongly connected components (Tarjan), each of two or more files.
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// What the crate root re-exports (`pub use error::{Error, Result}`): item name → the
/// path it names.
fn root_reexports(all: &BTreeMap<Module, PathBuf>) -> BTreeMap<String, Module> {
    let root = code(&std::fs::read_to_string(&all[&Vec::new()]).unwrap());
    let mut out = BTreeMap::new();
    for line in root.split(';') {
        let line = line.trim();
        let Some(tree) = line.strip_prefix("pub use ") else {
            continue;
        };
        let tree: String = tree.replace(" as ", "@");
        let mut leaves = Vec::new();
        flatten(
            &tree
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>(),
            &mut Vec::new(),
            &mut leaves,
        );
        for leaf in leaves {
            let path: Module = match leaf.first().map(String::as_str) {
                Some("crate" | "self") => leaf[1..].to_vec(),
                _ => leaf.clone(),
            };
            if let Some(name) = path.last() {
                out.insert(name.clone(), path.clone());
            }
        }
    }
    out
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let all = modules();
    let reexports = root_reexports(&all);
    all.iter()
        .map(|(module, file)| (module.clone(), dependencies(module, file, &all, &reexports)))
        .collect()
}

#[test]
fn no_import_circle_between_files_of_src() {
    let graph = graph();
    let found: Vec<String> = circles(&graph)
        .iter()
        .map(|c| {
            // Each circle with its edges, to see which use to move.
            let edges: Vec<String> = c
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| c.contains(to))
                        .map(move |to| format!("{} -> {}", name(from), name(to)))
                })
                .collect();
            format!(
                "{}\n    {}",
                c.iter().map(name).collect::<Vec<_>>().join(" <-> "),
                edges.join("\n    ")
            )
        })
        .collect();
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_detector_sees_a_circle_and_a_parents_child() {
    // Negative control: a made-up graph with a circle through a parent and its child.
    let m = |s: &str| -> Module {
        s.split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut g = BTreeMap::new();
    g.insert(m("lease"), BTreeSet::from([m("store")]));
    g.insert(m("store"), BTreeSet::from([m("store/quorum")]));
    g.insert(m("store/quorum"), BTreeSet::from([m("lease")]));
    g.insert(m("error"), BTreeSet::new());
    assert_eq!(circles(&g).len(), 1);
    // And the real graph has edges: the parser reads grouped uses, super paths and
    // children named from their parent.
    let real = graph();
    assert!(
        real[&m("client")].contains(&m("lease")),
        "{:?}",
        real[&m("client")]
    );
    assert!(real[&m("store/backend")].contains(&m("store/quorum")));
    assert!(
        !real[&m("store/quorum")].contains(&m("store")),
        "an ancestor is no dependency"
    );
}

#[test]
fn no_file_of_src_is_over_700_lines_of_code() {
    let mut long = Vec::new();
    for (module, file) in modules() {
        let text = std::fs::read_to_string(&file).unwrap();
        // Lines of code: not blank, not comments, and not the unit tests at the end.
        let body = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
        let lines = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .count();
        if lines > 700 {
            long.push(format!("{} ({lines})", name(&module)));
        }
    }
    assert!(long.is_empty(), "files over 700 lines of code: {long:?}");
}
