//! The tree's shape, checked: what `docs/architecture.md` names exists, no source file of the
//! data plane or control grows past the size a reader can hold, and no two modules import each
//! other. Reads files only; needs no root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Lines of non-test code a file of `dataplane/src` or `control/src` may have (issue 13: "no
/// file above ~800 lines").
const MAX_CODE_LINES: usize = 800;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, relative to `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// Every file of the repository (outside `target/` and `.git/`), relative to its root, with `/`.
fn repository_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
            } else {
                found.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    found
}

/// Lines before a file's first `#[cfg(test)]` item: its code, without its unit tests.
fn code_lines(source: &str) -> usize {
    source
        .lines()
        .take_while(|line| !line.trim_start().starts_with("#[cfg(test)]"))
        .count()
}

/// The paths that `text` names in `code spans` (a file with an extension, or a folder ending in
/// `/`) and the tree lacks, with how many paths it names. A span may name a path relative to its
/// crate's `src/` (`pipeline/inbound.rs`), so it must be the tail of some file's path, starting
/// at a path component.
fn missing_paths(text: &str, files: &[String]) -> (usize, Vec<String>) {
    let mut named = 0;
    let mut missing = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        let is_file = [".rs", ".c", ".h", ".md", ".toml"]
            .iter()
            .any(|ext| span.ends_with(ext));
        let is_folder = span.ends_with('/') && span.len() > 1;
        if span.contains(' ') || !(is_file || is_folder) {
            continue;
        }
        named += 1;
        let found = files.iter().any(|file| {
            if is_folder {
                file.starts_with(span) || file.contains(&format!("/{span}"))
            } else {
                file == span || file.ends_with(&format!("/{span}"))
            }
        });
        if !found {
            missing.push(span.to_owned());
        }
    }
    (named, missing)
}

#[test]
fn files_named_in_the_architecture_doc_exist() {
    let root = workspace();
    let files = repository_files(&root);
    let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let (named, missing) = missing_paths(&doc, &files);
    assert!(
        named >= 40,
        "expected the doc to name many files, found {named}"
    );
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that are not in the tree: {missing:?}"
    );
    // The README's architecture section too (up to the next section).
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("\n## Architecture\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has an Architecture section");
    let (named, missing) = missing_paths(section, &files);
    assert!(
        named >= 20,
        "expected the README's table to name many files, found {named}"
    );
    assert!(
        missing.is_empty(),
        "README.md's Architecture section names paths that are not in the tree: {missing:?}"
    );
    let (_, missing) = missing_paths(
        "`dataplane/src/nowhere.rs` `pipeline/` `wire/ipv4.rs`",
        &files,
    );
    assert_eq!(
        missing,
        ["dataplane/src/nowhere.rs"],
        "the check must be able to fail"
    );
}

#[test]
fn no_source_file_of_dataplane_or_control_is_too_long() {
    let root = workspace();
    let mut too_long = Vec::new();
    for crate_dir in ["dataplane/src", "control/src"] {
        let dir = root.join(crate_dir);
        for file in rust_files(&dir) {
            let source = fs::read_to_string(dir.join(&file)).unwrap();
            let lines = code_lines(&source);
            if lines > MAX_CODE_LINES {
                too_long.push(format!("{crate_dir}/{}: {lines}", file.display()));
            }
        }
    }
    assert!(
        too_long.is_empty(),
        "files over {MAX_CODE_LINES} lines of non-test code (split them by concern): {too_long:?}"
    );
}

/// A crate's modules, named by path (`pipeline::inbound`), with the modules each one's code
/// refers to through `crate::` or `super::`.
fn module_references(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(src);
    let module_of = |file: &Path| -> String {
        let mut parts: Vec<String> = file
            .with_extension("")
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        parts.join("::")
    };
    let modules: BTreeSet<String> = files.iter().map(|file| module_of(file)).collect();
    // The longest known module that `path` starts with.
    let resolve = |path: &[&str]| -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|len| path[..len].join("::"))
            .find(|candidate| modules.contains(candidate))
    };
    let mut references = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let source = fs::read_to_string(src.join(file)).unwrap();
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let code: String = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        // `use crate::{a::X, b::{c::Y}}` names `crate::a` and `crate::b::c`: scan the flattened
        // paths of every use tree beside the code itself.
        let flattened: Vec<String> = use_trees(&code)
            .iter()
            .flat_map(|tree| flatten_use(tree))
            .collect();
        let mut targets = BTreeSet::new();
        for line in code.lines().chain(flattened.iter().map(String::as_str)) {
            let line = line.trim_start();
            for (anchor, base) in [("crate::", Vec::new()), ("super::", parent(&module))] {
                for (at, _) in line.match_indices(anchor) {
                    let rest = &line[at + anchor.len()..];
                    let words: Vec<&str> = rest
                        .split("::")
                        .map_while(|word| {
                            let word: &str = word
                                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                                .next()
                                .unwrap_or("");
                            (!word.is_empty() && word.chars().next().unwrap().is_ascii_lowercase())
                                .then_some(word)
                        })
                        .collect();
                    let mut path: Vec<&str> = base.iter().map(String::as_str).collect();
                    path.extend(words);
                    if let Some(target) = resolve(&path) {
                        if target != module {
                            targets.insert(target);
                        }
                    }
                }
            }
        }
        references.insert(module, targets);
    }
    references
}

/// The trees of the `use` declarations in `code` (`crate::{a, b::c}` of `use crate::{a, b::c};`).
fn use_trees(code: &str) -> Vec<String> {
    let mut trees = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        trees.push(rest[..end].split_whitespace().collect::<String>());
        rest = &rest[end..];
    }
    trees
}

/// The paths a use tree names: `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn flatten_use(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).to_owned()];
    };
    let close = tree.rfind('}').unwrap_or(tree.len());
    let prefix = &tree[..open];
    let inner = &tree[open + 1..close.max(open + 1)];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(flatten_use)
        .map(|path| format!("{prefix}{path}"))
        .collect()
}

fn parent(module: &str) -> Vec<String> {
    let mut parts: Vec<String> = module.split("::").map(str::to_owned).collect();
    parts.pop();
    parts
}

fn is_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || module.starts_with(&format!("{ancestor}::"))
}

/// Pairs of modules that import each other, leaving out a parent and its children (a parent
/// declares its children and they may name it, as `super::Director`: the tree itself, not a
/// cycle between concerns).
fn mutual_imports(references: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (module, targets) in references {
        for target in targets {
            if module < target
                && !is_ancestor(module, target)
                && !is_ancestor(target, module)
                && references
                    .get(target)
                    .is_some_and(|back| back.contains(module))
            {
                pairs.push((module.clone(), target.clone()));
            }
        }
    }
    pairs
}

#[test]
fn no_two_modules_import_each_other() {
    let root = workspace();
    let mut cycles = Vec::new();
    for crate_dir in ["dataplane/src", "control/src", "scheduler/src"] {
        let references = module_references(&root.join(crate_dir));
        assert!(references.len() > 5, "{crate_dir}: modules not found");
        for (a, b) in mutual_imports(&references) {
            cycles.push(format!("{crate_dir}: {a} <-> {b}"));
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that import each other: {cycles:?}"
    );
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // The check above must be able to fail: a scratch crate whose `a` and `b` name each other,
    // and whose `a::inner` names its parent.
    let scratch = std::env::temp_dir().join(format!("director-structure-{}", std::process::id()));
    fs::create_dir_all(scratch.join("a")).unwrap();
    fs::write(
        scratch.join("lib.rs"),
        "pub mod a;\npub mod b;\npub mod c;\n",
    )
    .unwrap();
    fs::write(
        scratch.join("a/mod.rs"),
        "use crate::b::Thing;\npub mod inner;\n",
    )
    .unwrap();
    fs::write(
        scratch.join("a/inner.rs"),
        "use super::Parent;\nuse crate::b;\n",
    )
    .unwrap();
    fs::write(
        scratch.join("c.rs"),
        "use crate::{\n    b::Thing,\n    a::{inner::X, Y},\n};\n",
    )
    .unwrap();
    fs::write(
        scratch.join("b.rs"),
        "// crate::c is a comment\nfn f() { crate::a::inner::g(); crate::a::Thing::new(); }\n",
    )
    .unwrap();
    let references = module_references(&scratch);
    fs::remove_dir_all(&scratch).unwrap();
    assert!(references["a::inner"].contains("a"), "{references:?}");
    assert!(references["b"].contains("a::inner"), "{references:?}");
    let from_c: Vec<&str> = references["c"].iter().map(String::as_str).collect();
    assert_eq!(from_c, ["a", "a::inner", "b"], "brace groups are followed");
    assert_eq!(
        mutual_imports(&references),
        [
            ("a".to_owned(), "b".to_owned()),
            ("a::inner".to_owned(), "b".to_owned())
        ]
    );
}
