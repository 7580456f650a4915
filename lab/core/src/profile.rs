//! Loading profiles from `profiles/` (or any path) into the validated model.
//!
//! Reading the file is the only thing done here; parsing and every rule live in
//! `cxl-lab-model`, so the model, the renderer and the checkers share one graph.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cxl_lab_model::{parse_profile, ProfileErrors, Topology};

use crate::layout::Layout;

/// The profile `lab up` uses when none is named.
pub const DEFAULT_PROFILE: &str = "seed";

/// A validated profile and where it came from.
#[derive(Clone, Debug)]
pub struct Profile {
    pub path: PathBuf,
    pub topology: Topology,
    /// The templates it renders with (the checkout's `templates/`).
    pub templates_dir: PathBuf,
}

/// Loads a profile by name (`seed`) or path (`profiles/seed.yaml`).
pub fn load(paths: &Layout, name_or_path: &str) -> anyhow::Result<Profile> {
    let path = paths.profile_path(name_or_path);
    if !path.exists() {
        let known = list(paths).unwrap_or_default().join(", ");
        anyhow::bail!("no profile `{name_or_path}` (looked for {}; known profiles: {known})", path.display());
    }
    let topology = load_topology(&path)?;
    Ok(Profile { path, topology, templates_dir: paths.templates_dir() })
}

/// Reads and validates one profile file; errors name the file, line, column and field.
pub fn load_topology(path: &Path) -> Result<Topology, anyhow::Error> {
    let source = fs_err::read_to_string(path)?;
    let stem = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    parse_profile(&display_path(path), &source, &stem).map_err(|errors: ProfileErrors| anyhow::Error::new(errors))
}

/// The names of the profiles in `profiles/`, sorted.
pub fn list(paths: &Layout) -> anyhow::Result<Vec<String>> {
    let dir = paths.profiles_dir();
    crate::yaml::names_in(&dir).with_context(|| format!("listing profiles in {}", dir.display()))
}

/// A path as the user would like to read it: relative to the current directory when below it.
pub fn display_path(path: &Path) -> String {
    let current = std::env::current_dir().ok();
    current
        .as_deref()
        .and_then(|current| path.strip_prefix(current).ok())
        .unwrap_or(path)
        .display()
        .to_string()
}
