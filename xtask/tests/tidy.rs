//! Style rules checked mechanically (docs/style.md §6): no parameterised `Func` closures, no
//! train/eval literal passed inside library code, no ambient randomness, files ≤ 600 lines,
//! no unfinished code.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn library_sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut files = vec![];
    sources(&root, &mut files);
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The part of a file before its `#[cfg(test)]` module.
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap()
}

#[test]
fn library_code_follows_the_style_rules() {
    let mut problems = vec![];
    for (path, text) in library_sources() {
        let in_tests_dir = path.components().any(|c| c.as_os_str() == "tests");
        let code = if in_tests_dir { "" } else { non_test(&text) };
        for (i, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue; // doc examples may use literals and ad-hoc inputs
            }
            let at = format!("{}:{}", path.display(), i + 1);
            if line.contains("Func::new") {
                problems.push(format!("{at}: Func closure (use a named module struct)"));
            }
            for lit in ["true)", "false)"] {
                if (line.contains("forward_t(") || line.contains("apply_t("))
                    && line.contains(&format!(", {lit}"))
                {
                    problems.push(format!("{at}: train/eval literal passed to forward_t"));
                }
            }
            for ambient in [
                "thread_rng",
                "rand::rng()",
                "from_entropy",
                "Tensor::randn(",
                "Tensor::rand(",
            ] {
                if line.contains(ambient) {
                    problems.push(format!(
                        "{at}: ambient randomness `{ambient}` (use vt_ops::rng)"
                    ));
                }
            }
        }
        for bad in ["todo!(", "unimplemented!(", "#[ignore]"] {
            if text.contains(bad) {
                problems.push(format!("{}: `{bad}`", path.display()));
            }
        }
        if text.lines().count() > 600 && !in_tests_dir {
            problems.push(format!(
                "{}: {} lines (keep files under ~600)",
                path.display(),
                text.lines().count()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The vt crates each library crate may depend on (ARCHITECTURE.md's first invariant): one
/// way, and vt-train knows no model and no data set.
const ALLOWED_DEPS: &[(&str, &[&str])] = &[
    ("vt-ops", &[]),
    ("vt-layers", &["vt-ops"]),
    ("vt-backbones", &["vt-ops", "vt-layers"]),
    ("vt-data", &["vt-ops"]),
    ("vt-train", &["vt-ops"]),
    (
        "vt-run",
        &["vt-ops", "vt-layers", "vt-backbones", "vt-data", "vt-train"],
    ),
];

/// The `vt-*` names in the `[dependencies]` section of a manifest.
fn vt_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut deps = vec![];
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps && line.starts_with("vt-") {
            let name = line.split(['.', '=', ' ']).next().unwrap();
            deps.push(name.to_string());
        }
    }
    deps
}

#[test]
fn crate_dependencies_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut problems = vec![];
    let mut seen = vec![];
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        seen.push(name.clone());
        let Some((_, allowed)) = ALLOWED_DEPS.iter().find(|(n, _)| *n == name) else {
            problems.push(format!(
                "{name}: not in ALLOWED_DEPS (add it, and to ARCHITECTURE.md)"
            ));
            continue;
        };
        for dep in vt_dependencies(&manifest) {
            if !allowed.contains(&dep.as_str()) {
                problems.push(format!("{name} depends on {dep}, which it may not"));
            }
        }
    }
    assert!(seen.len() >= ALLOWED_DEPS.len(), "{seen:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        vt_dependencies("[dependencies]\nvt-ops.workspace = true\nvt-data = { path = \"x\" }\n[dev-dependencies]\nvt-run.workspace = true\n"),
        ["vt-ops", "vt-data"]
    );
}
