//! Keeps the README's architecture map true: every `.rs` file under `src/` must be named in the
//! README's "## Architecture" section, by its path relative to the repository root
//! (`src/event_loop/local.rs`) or to `src/` (`event_loop/local.rs`), and every `.rs` path the
//! section names must exist. If this fails after adding, moving or removing a source file, update
//! the map in README.md, not this test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const README: &str = include_str!("../README.md");

/// The text of the README's "## Architecture" section, up to the next `## ` heading.
fn architecture_section() -> &'static str {
    let start = README
        .find("\n## Architecture\n")
        .expect("README.md has no \"## Architecture\" section");
    let body = &README[start + 1..];
    match body[3..].find("\n## ") {
        Some(end) => &body[..3 + end],
        None => body,
    }
}

/// The words of `text`, stripped of the punctuation that may surround a path in prose or code.
fn words(text: &str) -> BTreeSet<&str> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| "`'\"()[],;:".contains(c)))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Every `.rs` file under `dir`, as paths relative to `root` with `/` separators.
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
    for entry in entries {
        let path: PathBuf = entry.unwrap().path();
        if path.is_dir() {
            rust_files(root, &path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(root).unwrap();
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
}

#[test]
fn the_architecture_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &root.join("src"), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no .rs file found under {root:?}/src");

    let named = words(architecture_section());
    let missing: Vec<&String> = files
        .iter()
        .filter(|file| {
            let under_src = file.strip_prefix("src/").unwrap();
            !named.contains(file.as_str()) && !named.contains(under_src)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's \"## Architecture\" map does not name these source files \
         (add each, by its path under src/, with a line saying what it holds):\n  {}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );

    let stale: Vec<&str> = named
        .iter()
        .copied()
        .filter(|word| word.ends_with(".rs"))
        .filter(|word| !root.join(word).is_file() && !root.join("src").join(word).is_file())
        .collect();
    assert!(
        stale.is_empty(),
        "README.md's \"## Architecture\" map names files that do not exist \
         (relative to the repository root or to src/):\n  {}",
        stale.join("\n  ")
    );
}
