//! The architecture of `docs/ARCHITECTURE.md`, checked on the source text (in the style of
//! rust-analyzer's tidy tests): which module may use which, no import cycle between sibling
//! modules, and nobody but the shell prints.
//!
//! Each rule is a function over `(path, text)` pairs, so the tests at the bottom plant a
//! violation in made-up sources and see it named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a top-level module of `lab/core` must not use, and why (the docs' layering).
const LAYERS: &[(&str, &[&str], &str)] = &[
    ("lab", &["suite", "matrix"], "a suite drives a lab; a lab knows nothing of suites"),
    ("suite", &["matrix"], "a matrix runs suites; a suite knows nothing of matrices"),
    ("vm", &["render", "profile", "stack", "lab", "model", "suite", "matrix", "capability"], "vm runs machines and knows nothing of profiles, stacks or labs"),
    ("capability", &["render", "stack", "vm", "lab", "profile", "suite", "matrix"], "the capability service checks tokens and knows nothing of machines or labs"),
    ("stack", &["render", "vm", "lab", "profile", "model", "suite", "matrix"], "the stack builds artifacts; it takes the QEMU version from `qemu`, not from `render`"),
    ("render", &["stack", "vm", "lab", "suite", "matrix"], "render maps a topology to an argv and runs nothing"),
    ("qemu", &["render", "stack", "vm", "lab", "profile", "suite", "matrix"], "qemu says what a QEMU version is and has"),
    ("profile", &["render", "stack", "vm", "lab", "suite", "matrix"], "profile only loads profiles into the model"),
    ("scenario", &["render", "stack", "vm", "lab", "suite", "matrix"], "scenario only loads scenarios into the model"),
    ("sys", &["render", "stack", "vm", "lab", "profile", "qemu", "layout", "model", "suite", "matrix"], "sys is the operating system underneath everything"),
    ("layout", &["render", "stack", "vm", "lab", "profile", "qemu", "sys", "shell", "model", "suite", "matrix"], "layout only names paths"),
    ("shell", &["render", "stack", "vm", "lab", "profile", "qemu", "sys", "layout", "model", "suite", "matrix"], "shell only prints"),
];

/// Macros and calls that write to stdout or stderr.
const PRINTING: &[&str] = &["println!", "eprintln!", "print!", "eprint!", "dbg!", "io::stdout(", "io::stderr("];
/// The one module that prints.
const SHELL: &str = "lab/core/src/shell.rs";
/// Crates whose sources must not print (tests and fuzz targets aside).
const SOURCE_ROOTS: &[&str] = &["lab/core/src", "lab/model/src", "lab/cap/src", "xtask/src"];
const CORE: &str = "lab/core/src";

#[test]
fn modules_use_only_the_layers_below_them() {
    let violations = layer_violations(&core_sources());
    assert!(violations.is_empty(), "imports across a boundary docs/ARCHITECTURE.md forbids:\n  {}", violations.join("\n  "));
}

#[test]
fn no_import_cycle_between_sibling_modules() {
    let cycles = sibling_cycles(&core_sources());
    assert!(cycles.is_empty(), "modules that use each other (one must go below the other):\n  {}", cycles.join("\n  "));
}

#[test]
fn only_the_shell_prints() {
    let sources: Vec<(String, String)> = SOURCE_ROOTS.iter().flat_map(|root| sources_under(root)).collect();
    let violations = printing_violations(&sources);
    assert!(violations.is_empty(), "output outside {SHELL} (use `Shell`):\n  {}", violations.join("\n  "));
}

/// `use crate::render` in `vm`, and the like: `file:line: vm uses render (why)`.
fn layer_violations(sources: &[(String, String)]) -> Vec<String> {
    let mut violations = Vec::new();
    for (path, text) in sources {
        let Some(module) = module_path(path) else { continue };
        let Some((_, forbidden, why)) = LAYERS.iter().find(|(layer, _, _)| module.first().map(String::as_str) == Some(layer)) else { continue };
        for (line, used) in crate_references(text) {
            if let Some(top) = used.first().filter(|top| forbidden.contains(&top.as_str())) {
                violations.push(format!("{path}:{line}: {} uses {top} ({why})", module[0]));
            }
        }
    }
    violations
}

/// Sibling modules (children of one parent) that reach each other, directly or around a loop.
fn sibling_cycles(sources: &[(String, String)]) -> Vec<String> {
    // parent module -> (child -> children it uses)
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, text) in sources {
        let Some(from) = module_path(path) else { continue };
        for (_, used) in crate_references(text) {
            let common = from.iter().zip(&used).take_while(|(a, b)| a == b).count();
            // A module using its own ancestor or descendant is not a sibling edge.
            if common == from.len() || common == used.len() {
                continue;
            }
            let parent = from[..common].to_vec();
            graphs.entry(parent).or_default().entry(from[common].clone()).or_default().insert(used[common].clone());
        }
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &graphs {
        for start in graph.keys() {
            if let Some(path) = path_back(graph, start) {
                let prefix = if parent.is_empty() { String::new() } else { format!("{}::", parent.join("::")) };
                let shown: Vec<String> = path.iter().map(|module| format!("{prefix}{module}")).collect();
                let cycle = shown.join(" -> ");
                // Each cycle once, from its smallest member.
                if path[1..path.len() - 1].iter().all(|module| module > start) {
                    cycles.push(cycle);
                }
            }
        }
    }
    cycles
}

/// A path `start -> ... -> start` in `graph`, if any (depth first).
fn path_back(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("paths are never empty");
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

/// Printing outside the shell: `file:line: println!`.
fn printing_violations(sources: &[(String, String)]) -> Vec<String> {
    let mut violations = Vec::new();
    for (path, text) in sources.iter().filter(|(path, _)| path != SHELL) {
        for (number, line) in code_lines(text) {
            if let Some(found) = PRINTING.iter().find(|pattern| contains_call(&line, pattern)) {
                violations.push(format!("{path}:{number}: {found}"));
            }
        }
    }
    violations
}

/// `pattern` as a call, not as the tail of a longer name (`print!` inside `eprint!`).
fn contains_call(line: &str, pattern: &str) -> bool {
    line.match_indices(pattern).any(|(index, _)| !line[..index].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
}

/// Every `crate::a::b` the code names (after `use crate::{a, b::c}` is spread out), with its line;
/// `cxl_lab_model` counts as the module `model`.
fn crate_references(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut references = Vec::new();
    for (number, line) in code_lines(text) {
        let line = line.replace("cxl_lab_model", "crate::model");
        for (index, _) in line.match_indices("crate::") {
            if line[..index].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // `cxl_lab_core::`, `my_crate::`
            }
            let rest = &line[index + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                for item in inner.split(',') {
                    let words = path_words(item.trim());
                    if !words.is_empty() {
                        references.push((number, words));
                    }
                }
            } else {
                let words = path_words(rest);
                if !words.is_empty() {
                    references.push((number, words));
                }
            }
        }
    }
    references
}

/// The module words of a path such as `render::features::QemuVersion;`: up to the first
/// non-module word (types start upper case; `self`, `{` and `*` end it).
fn path_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for word in text.split("::") {
        let word: String = word.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if word.is_empty() || word == "self" || word.starts_with(|c: char| c.is_uppercase()) {
            break;
        }
        words.push(word);
    }
    words
}

/// Lines of code with their numbers: comments removed, and nothing from a `#[cfg(test)]` module
/// on (unit tests sit at the end of a file and may print what they like).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = strip_strings(line.split("//").next().unwrap_or_default());
        lines.push((index + 1, code));
    }
    lines
}

/// The line with the contents of string literals blanked, so a message that mentions
/// `println!` or `crate::vm` is not taken for code.
fn strip_strings(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                out.push(c);
            }
        } else {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// `lab/core/src/stack/debian/mod.rs` -> `["stack", "debian"]`; `None` outside `lab/core/src`.
fn module_path(path: &str) -> Option<Vec<String>> {
    let relative = path.strip_prefix(CORE)?.trim_start_matches('/');
    let mut words: Vec<String> = relative.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if matches!(words.last().map(String::as_str), Some("mod" | "lib")) {
        words.pop();
    }
    Some(words)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn core_sources() -> Vec<(String, String)> {
    sources_under(CORE)
}

/// Every `.rs` file under `root` (relative to the workspace), with its text.
fn sources_under(root: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut directories = vec![workspace().join(root)];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).unwrap_or_else(|error| panic!("{}: {error}", directory.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                directories.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let relative = path.strip_prefix(workspace()).expect("under the workspace").to_string_lossy().into_owned();
                files.push((relative, std::fs::read_to_string(&path).expect("source is UTF-8")));
            }
        }
    }
    assert!(!files.is_empty(), "no sources under {root}");
    files.sort();
    files
}

fn planted(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect()
}

#[test]
fn a_planted_layer_violation_is_named() {
    let sources = planted(&[
        ("lab/core/src/vm/qmp.rs", "use std::fs;\nuse crate::render::RenderInputs;\n"),
        ("lab/core/src/vm/accel.rs", "use crate::{qemu::Accel, model::schema::AccelRequest};\n"),
        ("lab/core/src/stack/host.rs", "fn f() { let _ = crate::render::features::has(1); }\n// crate::lab in a comment\n"),
        ("lab/core/src/lab/up.rs", "use crate::vm::supervisor::RunningMachine;\n"),
    ]);
    assert_eq!(
        layer_violations(&sources),
        [
            "lab/core/src/vm/qmp.rs:2: vm uses render (vm runs machines and knows nothing of profiles, stacks or labs)",
            "lab/core/src/vm/accel.rs:1: vm uses model (vm runs machines and knows nothing of profiles, stacks or labs)",
            "lab/core/src/stack/host.rs:1: stack uses render (the stack builds artifacts; it takes the QEMU version from `qemu`, not from `render`)",
        ]
    );
}

#[test]
fn a_planted_cycle_is_named() {
    let sources = planted(&[
        ("lab/core/src/stack/debian/apt.rs", "use crate::stack::host::is_root;\n"),
        ("lab/core/src/stack/host.rs", "use crate::stack::debian::apt::PrivateApt;\n"),
        ("lab/core/src/stack/mod.rs", "pub use crate::stack::distro::ensure;\n"),
        ("lab/core/src/stack/distro.rs", "use crate::stack::StackKind;\nuse crate::stack::host;\n"),
    ]);
    assert_eq!(sibling_cycles(&sources), ["stack::debian -> stack::host -> stack::debian"]);
}

#[test]
fn planted_printing_is_named_and_the_shell_may_print() {
    let sources = planted(&[
        (SHELL, "fn status() { eprintln!(\"x\"); }\n"),
        ("lab/core/src/lab/supervise.rs", "fn f() {\n    eprintln!(\"supervisor\");\n}\n"),
        ("xtask/src/main.rs", "fn g() { let _ = std::io::stdout().lock(); }\nfn h() { let _ = \"println!\"; }\n"),
        ("lab/cap/src/token.rs", "fn h() {}\n#[cfg(test)]\nmod tests { fn t() { println!(\"ok in tests\"); } }\n"),
    ]);
    assert_eq!(printing_violations(&sources), ["lab/core/src/lab/supervise.rs:2: eprintln!", "xtask/src/main.rs:1: io::stdout("]);
}
