//! YAML files: what serde-saphyr's errors say, for our own `file:line:column: message` (recipes,
//! suites), and the names of the YAML files in a directory (profiles, suites).

/// serde-saphyr renders a snippet under its message and repeats the position before or after
/// it; the message itself is what we quote, after our own `file:line:column`.
pub fn error_message(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = match line.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, rest)) if position.contains(" column ") => rest,
        _ => line,
    };
    let line = match line.rsplit_once(" at line ") {
        Some((message, position)) if position.contains(", column ") => message,
        _ => line,
    };
    // A hint at the parser's options is no use to someone writing a file by hand.
    line.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable").to_owned()
}

/// The line and column of a serde-saphyr error (1, 1 when it has none).
pub fn error_location(error: &serde_saphyr::Error) -> (u64, u64) {
    error.location().map(|at| (at.line(), at.column())).unwrap_or((1, 1))
}

/// The stems of the `.yaml` files in `dir`, sorted (`seed` for `seed.yaml`).
pub fn names_in(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs_err::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .filter_map(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}
