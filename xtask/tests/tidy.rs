//! Style rules checked mechanically (the project's style rules): no parameterised `Func` closures, no
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    sources(&root.join("../crates"), &mut files);
    // the runner and its tests too (this file names the patterns it looks for)
    sources(&root.join("src"), &mut files);
    sources(&root.join("tests"), &mut files);
    files.retain(|p| !p.ends_with("tidy.rs"));
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
        let library = path.components().any(|c| c.as_os_str() == "crates");
        // The runner's commands may pass `train = false` (they are the eval entry points).
        let code = if in_tests_dir || !library {
            ""
        } else {
            non_test(&text)
        };
        // Tests draw their inputs from seeds too, so a failure reproduces.
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
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
                        "{}:{}: ambient randomness `{ambient}` (use vt_ops::rng)",
                        path.display(),
                        i + 1
                    ));
                }
            }
        }
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
        }
        for bad in ["todo!(", "unimplemented!(", "#[ignore]"] {
            if text.contains(bad) {
                problems.push(format!("{}: `{bad}`", path.display()));
            }
        }
        if text.lines().count() > 600 && !in_tests_dir && library {
            problems.push(format!(
                "{}: {} lines (keep files under ~600)",
                path.display(),
                text.lines().count()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One row of ARCHITECTURE.md's dependency table: the crate, the vt crates and the other
/// crates it may depend on (`None`: any).
struct DependencyRule {
    krate: String,
    vt: Option<Vec<String>>,
    other: Option<Vec<String>>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The table after the `<!-- dependency rules` marker of ARCHITECTURE.md.
fn dependency_rules() -> Vec<DependencyRule> {
    let doc = std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).unwrap();
    let table = doc
        .split("<!-- dependency rules")
        .nth(1)
        .expect("ARCHITECTURE.md has a `<!-- dependency rules` table");
    let list = |cell: &str| -> Option<Vec<String>> {
        match cell.trim() {
            "any" => None,
            "-" => Some(vec![]),
            c => Some(c.split(',').map(|s| s.trim().to_string()).collect()),
        }
    };
    table
        .lines()
        .skip(1)
        .map(str::trim)
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("| crate") && !l.starts_with("|---"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').collect();
            assert_eq!(cells.len(), 3, "ARCHITECTURE.md dependency row `{l}`");
            DependencyRule {
                krate: cells[0].trim().to_string(),
                vt: list(cells[1]),
                other: list(cells[2]),
            }
        })
        .collect()
}

/// The package name and the names in the `[dependencies]` section of a manifest.
fn manifest_dependencies(manifest: &str) -> (String, Vec<String>) {
    let mut section = String::new();
    let mut name = String::new();
    let mut deps = vec![];
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else if section == "[package]" && line.starts_with("name") {
            name = line.split('"').nth(1).unwrap_or_default().to_string();
        } else if section == "[dependencies]" {
            let dep = line.split(['.', '=', ' ']).next().unwrap();
            deps.push(dep.to_string());
        }
    }
    (name, deps)
}

#[test]
fn crate_dependencies_follow_the_architecture_table() {
    let rules = dependency_rules();
    assert!(rules.len() >= 8, "{} rules parsed", rules.len());
    let workspace = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let members: Vec<&str> = workspace
        .lines()
        .find(|l| l.starts_with("members"))
        .unwrap()
        .split('"')
        .skip(1)
        .step_by(2)
        .collect();
    let mut problems = vec![];
    for member in &members {
        let manifest =
            std::fs::read_to_string(repo_root().join(member).join("Cargo.toml")).unwrap();
        let (name, deps) = manifest_dependencies(&manifest);
        let Some(rule) = rules.iter().find(|r| r.krate == name) else {
            problems.push(format!(
                "{name} ({member}): no row in ARCHITECTURE.md's dependency table"
            ));
            continue;
        };
        for dep in deps {
            let allowed = if dep.starts_with("vt-") {
                &rule.vt
            } else {
                &rule.other
            };
            if allowed.as_ref().is_some_and(|a| !a.contains(&dep)) {
                problems.push(format!(
                    "{name} depends on {dep}, which ARCHITECTURE.md's dependency table does not allow"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let (name, deps) = manifest_dependencies(
        "[package]\nname = \"x\"\n[dependencies]\nvt-ops.workspace = true\n# c\nvt-data = { path = \"x\" }\n[dev-dependencies]\nvt-run.workspace = true\n",
    );
    assert_eq!(
        (name.as_str(), deps),
        ("x", vec!["vt-ops".to_string(), "vt-data".into()])
    );
}

/// No doc, comment or default path points outside the repository (to the `shared` folder
/// beside a development checkout, which users do not have).
#[test]
fn nothing_points_outside_the_repository() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !["target", "vendor", ".git", "runs"].contains(&name.as_str()) {
                    walk(&p, out);
                }
            } else if ["rs", "md", "toml", "py", "sh"]
                .iter()
                .any(|x| p.extension().is_some_and(|e| e == *x))
                || name == "run"
            {
                out.push(p);
            }
        }
    }
    let mut files = vec![];
    walk(&repo_root(), &mut files);
    let needle = ["..", "/shared/"].concat();
    let mut problems = vec![];
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if line.contains(&needle) {
                problems.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "paths outside the repository:\n{}",
        problems.join("\n")
    );
}
