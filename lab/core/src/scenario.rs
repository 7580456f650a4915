//! Loading sharing scenarios from `scenarios/` (or any path) into the model; parsing, every rule
//! and the evaluation live in `cxl-lab-model`.

use std::path::PathBuf;

use anyhow::Context as _;
use cxl_lab_model::scenario::{parse_scenario, Scenario};

use crate::layout::Layout;
use crate::profile::display_path;
use crate::yaml::names_in;

/// A checked scenario and where it came from.
#[derive(Clone, Debug)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub scenario: Scenario,
}

/// Loads a scenario by name (`pairwise`) or path; errors name file, line, column and field.
pub fn load(paths: &Layout, name_or_path: &str) -> anyhow::Result<LoadedScenario> {
    let path = paths.scenario_path(name_or_path);
    if !path.exists() {
        let known = names_in(&paths.scenarios_dir()).unwrap_or_default().join(", ");
        anyhow::bail!("no scenario `{name_or_path}` (looked for {}; known scenarios: {known})", path.display());
    }
    let source = fs_err::read_to_string(&path)?;
    let stem = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    let scenario = parse_scenario(&display_path(&path), &source, &stem)?;
    Ok(LoadedScenario { path, scenario })
}

/// The names of the scenarios in `scenarios/`.
pub fn list(paths: &Layout) -> anyhow::Result<Vec<String>> {
    let dir = paths.scenarios_dir();
    names_in(&dir).with_context(|| format!("listing scenarios in {}", dir.display()))
}
