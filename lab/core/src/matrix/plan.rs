//! What a matrix runs: a matrix file (`matrices/*.yaml`, `docs/matrix.md`) or the command line's
//! lists, checked into cells (one per profile and stack, each running every suite) before any
//! cell starts: an unknown profile, stack or suite is an error at its file, line and column.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::layout::Layout;
use crate::stack::StackKind;

/// How long a cell may run (boot, suites, take-down) before it is stopped and counted an error.
pub const DEFAULT_CELL_TIMEOUT: Duration = Duration::from_secs(1800);
/// What one QEMU needs beyond its guest's memory (its own code, TCG's translation cache).
const QEMU_OVERHEAD: u64 = 512 << 20;

/// What the user asked for, before it is checked: names as written.
#[derive(Clone, Debug, Default)]
pub struct MatrixRequest {
    /// Empty: every shipped profile.
    pub profiles: Vec<String>,
    /// Empty: the distro stack.
    pub stacks: Vec<String>,
    pub suites: Vec<String>,
    /// `None`: [`DEFAULT_CELL_TIMEOUT`].
    pub cell_timeout: Option<Duration>,
}

/// A checked matrix: every profile, stack and suite exists.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixPlan {
    pub profiles: Vec<String>,
    pub stacks: Vec<StackKind>,
    pub suites: Vec<String>,
    pub cells: Vec<Cell>,
    pub cell_timeout: Duration,
}

/// One boot: a profile on a stack, running every suite of the matrix, in a lab of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub profile: String,
    pub stack: StackKind,
    /// The cell's lab (`<prefix>-<profile>-<stack>`): cells never share a lab.
    pub lab: String,
    /// The guest memory and memory backends its profile asks for, plus QEMU's own per host.
    pub memory: u64,
}

impl Cell {
    /// The cell's directory in the output: `<profile>-<stack>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.profile, self.stack)
    }
}

/// A matrix file that cannot be used: `file:line:column: message`.
pub type MatrixError = crate::yaml::FileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    #[serde(default)]
    profiles: Vec<Spanned<String>>,
    #[serde(default)]
    stacks: Vec<Spanned<String>>,
    suites: Spanned<Vec<Spanned<String>>>,
    /// Seconds a cell may run.
    timeout: Option<u64>,
}

/// Loads a matrix file and checks its names against the checkout (profiles, suites).
pub fn load(paths: &Layout, path: &std::path::Path, lab_prefix: &str) -> anyhow::Result<MatrixPlan> {
    let text = fs_err::read_to_string(path)?;
    let file = crate::profile::display_path(path);
    let known = Known::of(paths)?;
    Ok(parse(&file, &text, &known, lab_prefix)?)
}

/// Checks what the command line asked for (the same checks, without a file to point into).
pub fn from_request(paths: &Layout, request: &MatrixRequest, lab_prefix: &str) -> anyhow::Result<MatrixPlan> {
    let known = Known::of(paths)?;
    let located = |names: &[String]| names.iter().map(|name| ((0, 0), name.clone())).collect::<Vec<_>>();
    let plan = check(&known, &located(&request.profiles), &located(&request.stacks), &located(&request.suites), request.cell_timeout, lab_prefix);
    plan.map_err(|(_, message)| anyhow::anyhow!(message))
}

/// What the checkout has: profile names with each one's memory, suite names.
pub struct Known {
    pub profiles: Vec<(String, u64)>,
    pub suites: Vec<String>,
}

impl Known {
    fn of(paths: &Layout) -> anyhow::Result<Known> {
        let profiles = crate::profile::list(paths)?
            .into_iter()
            .map(|name| crate::profile::load(paths, &name).map(|profile| (name, cell_memory(&profile.topology))))
            .collect::<anyhow::Result<_>>()?;
        Ok(Known { profiles, suites: crate::suite::format::list(paths)? })
    }
}

/// What a cell of this profile takes of the host's memory, at most.
fn cell_memory(topology: &crate::model::topology::Topology) -> u64 {
    let guests: u64 = topology.hosts.iter().map(|host| host.machine.memory + QEMU_OVERHEAD).sum();
    guests + topology.backends.iter().map(|backend| backend.size).sum::<u64>()
}

type Located = ((u64, u64), String);

/// Parses a matrix file; `file` is how errors name it.
pub fn parse(file: &str, text: &str, known: &Known, lab_prefix: &str) -> Result<MatrixPlan, MatrixError> {
    let error_at = |(line, column): (u64, u64), message: String| MatrixError { file: file.to_owned(), line, column, message };
    let parsed: MatrixFile = serde_saphyr::from_str(text)
        .map_err(|error| error_at(crate::yaml::error_location(&error), crate::yaml::error_message(&error.to_string())))?;
    let located = |words: &[Spanned<String>]| words.iter().map(|word| (at(word), word.value.clone())).collect::<Vec<_>>();
    if parsed.suites.value.is_empty() {
        return Err(error_at(at(&parsed.suites), "suites: a matrix needs at least one suite".to_owned()));
    }
    let timeout = parsed.timeout.map(Duration::from_secs);
    check(known, &located(&parsed.profiles), &located(&parsed.stacks), &located(&parsed.suites.value), timeout, lab_prefix)
        .map_err(|(at, message)| error_at(at, message))
}

fn at<T>(spanned: &Spanned<T>) -> (u64, u64) {
    (spanned.referenced.line(), spanned.referenced.column())
}

fn check(known: &Known, profiles: &[Located], stacks: &[Located], suites: &[Located], timeout: Option<Duration>, lab_prefix: &str) -> Result<MatrixPlan, Located> {
    let profile_names: Vec<&str> = known.profiles.iter().map(|(name, _)| name.as_str()).collect();
    let chosen_profiles: Vec<(String, u64)> = if profiles.is_empty() {
        known.profiles.clone()
    } else {
        profiles.iter().map(|(at, name)| known_word(&profile_names, *at, name, "profile").map(|index| known.profiles[index].clone())).collect::<Result<_, _>>()?
    };
    let stacks: Vec<StackKind> = if stacks.is_empty() {
        vec![StackKind::Distro]
    } else {
        stacks.iter().map(|(at, name)| name.parse::<StackKind>().map_err(|message| (*at, message))).collect::<Result<_, _>>()?
    };
    let suite_names: Vec<&str> = known.suites.iter().map(String::as_str).collect();
    for (at, name) in suites {
        known_word(&suite_names, *at, name, "suite")?;
    }
    if suites.is_empty() {
        return Err(((0, 0), "a matrix needs at least one suite".to_owned()));
    }
    let mut cells = Vec::new();
    for (profile, memory) in &chosen_profiles {
        for stack in &stacks {
            let lab = format!("{lab_prefix}-{profile}-{stack}");
            if lab.len() > 32 {
                return Err(((0, 0), format!("the cell's lab name `{lab}` is longer than 32 characters: use a shorter lab prefix (`--lab`)")));
            }
            if cells.iter().any(|cell: &Cell| cell.lab == lab) {
                continue; // a profile or stack named twice runs once
            }
            cells.push(Cell { profile: profile.clone(), stack: *stack, lab, memory: *memory });
        }
    }
    let profiles = first_of_each(cells.iter().map(|cell| cell.profile.clone()));
    let suites = first_of_each(suites.iter().map(|(_, suite)| suite.clone()));
    Ok(MatrixPlan { profiles, stacks: first_of_each(stacks), suites, cells, cell_timeout: timeout.unwrap_or(DEFAULT_CELL_TIMEOUT) })
}

/// Each value once, where it first came.
fn first_of_each<T: PartialEq>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut unique = Vec::new();
    for value in values {
        if !unique.contains(&value) {
            unique.push(value);
        }
    }
    unique
}

/// The index of `word` in `known`, or an error listing what there is.
fn known_word(known: &[&str], at: (u64, u64), word: &str, what: &str) -> Result<usize, Located> {
    known.iter().position(|name| *name == word).ok_or_else(|| (at, format!("unknown {what} `{word}` (known: {})", known.join(", "))))
}

/// How many cells run side by side: one per CPU, as many as the available memory holds (the
/// largest cell counted for each), at least one.
pub fn default_jobs(cpus: usize, available_memory: Option<u64>, cells: &[Cell]) -> usize {
    let largest = cells.iter().map(|cell| cell.memory).max().unwrap_or(1).max(1);
    let by_memory = available_memory.map_or(usize::MAX, |available| (available / largest) as usize);
    cpus.min(by_memory).min(cells.len()).max(1)
}

/// The memory the kernel says can be had without swapping (`MemAvailable`), if it says.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A matrix file argument: a path, or a name in `matrices/` (`nightly`).
pub fn matrix_path(paths: &Layout, name_or_path: &str) -> PathBuf {
    if name_or_path.ends_with(".yaml") || name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        paths.workspace.join("matrices").join(format!("{name_or_path}.yaml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known {
            profiles: vec![("seed".to_owned(), 2 << 30), ("shared".to_owned(), 5 << 30)],
            suites: vec!["region".to_owned(), "smoke".to_owned(), "topology".to_owned()],
        }
    }

    #[test]
    fn cells_are_profiles_by_stacks_each_in_its_own_lab() {
        let plan = parse("m.yaml", "stacks: [distro, source]\nsuites: [smoke, topology]\n", &known(), "mx").unwrap();
        let labs: Vec<&str> = plan.cells.iter().map(|cell| cell.lab.as_str()).collect();
        assert_eq!(labs, ["mx-seed-distro", "mx-seed-source", "mx-shared-distro", "mx-shared-source"]);
        assert_eq!(plan.suites, ["smoke", "topology"]);
        assert_eq!(plan.cell_timeout, DEFAULT_CELL_TIMEOUT);
        let plan = parse("m.yaml", "profiles: [shared]\nsuites: [smoke]\ntimeout: 60\n", &known(), "mx").unwrap();
        assert_eq!((plan.cells.len(), plan.cells[0].stack, plan.cell_timeout), (1, StackKind::Distro, Duration::from_secs(60)));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let error = parse("matrices/n.yaml", "profiles: [seed, sead]\nsuites: [smoke]\n", &known(), "mx").unwrap_err();
        assert_eq!(error.to_string(), "matrices/n.yaml:1:18: unknown profile `sead` (known: seed, shared)");
        let error = parse("n.yaml", "suites:\n  - smoke\n  - regoin\n", &known(), "mx").unwrap_err();
        assert_eq!(error.to_string(), "n.yaml:3:5: unknown suite `regoin` (known: region, smoke, topology)");
        let error = parse("n.yaml", "stacks: [disto]\nsuites: [smoke]\n", &known(), "mx").unwrap_err();
        assert_eq!((error.line, error.column), (1, 10), "{error}");
        assert!(error.message.contains("`disto` is not a stack"), "{error}");
        let error = parse("n.yaml", "suites: [smoke]\njobs: 3\n", &known(), "mx").unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        assert!(error.message.contains("jobs"), "{error}");
        let error = parse("n.yaml", "suites: []\n", &known(), "mx").unwrap_err();
        assert_eq!(error.to_string(), "n.yaml:1:9: suites: a matrix needs at least one suite");
    }

    #[test]
    fn parallel_cells_fit_the_cores_and_the_memory() {
        let plan = parse("m.yaml", "suites: [smoke]\n", &known(), "mx").unwrap();
        assert_eq!(default_jobs(8, Some(64 << 30), &plan.cells), 2, "two cells are all there is");
        assert_eq!(default_jobs(2, Some(64 << 30), &plan.cells), 2);
        assert_eq!(default_jobs(8, Some(11 << 30), &plan.cells), 2, "11 GiB holds two of the 5 GiB cell");
        assert_eq!(default_jobs(8, Some(1 << 30), &plan.cells), 1, "always at least one");
        assert_eq!(default_jobs(1, None, &plan.cells), 1);
    }

    #[test]
    fn the_shipped_matrices_parse() {
        let layout = Layout::for_workspace(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
        for name in crate::yaml::names_in(&layout.workspace.join("matrices")).unwrap() {
            load(&layout, &matrix_path(&layout, &name), "mx").unwrap_or_else(|error| panic!("{error:#}"));
        }
    }
}
