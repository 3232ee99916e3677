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
