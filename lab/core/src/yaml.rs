//! YAML files: what serde-saphyr's errors say, for our own `file:line:column: message` (recipes,
//! suites), and the names of the YAML files in a directory (profiles, suites).

pub use cxl_lab_model::error::{yaml_error_location as error_location, yaml_error_message as error_message};

/// A YAML file of ours that cannot be used (a suite, a matrix): `file:line:column: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct FileError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
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
