//! Where cxl-lab keeps things: the checkout (profiles, templates, images), the content-addressed
//! artifact cache, and per-lab state (run directory, logs, secrets).
//!
//! Every location can be moved with an environment variable so tests and CI use private
//! directories and never touch a user's labs.

use std::path::{Path, PathBuf};

/// The directories one invocation of the tool works with.
#[derive(Clone, Debug)]
pub struct LabPaths {
    /// The checkout: holds `profiles/`, `templates/`, `images/`, `suites/`.
    pub workspace: PathBuf,
    /// Built and downloaded artifacts, keyed by content (`CXL_LAB_CACHE`).
    pub cache: PathBuf,
    /// Labs: one directory per lab name, holding its run directory and logs (`CXL_LAB_STATE`).
    pub state: PathBuf,
}

impl LabPaths {
    /// Paths for a checkout, with cache and state from the environment or XDG defaults.
    pub fn for_workspace(workspace: impl Into<PathBuf>) -> LabPaths {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        let cache = env_dir("CXL_LAB_CACHE")
            .or_else(|| env_dir("XDG_CACHE_HOME").map(|dir| dir.join("cxl-lab")))
            .unwrap_or_else(|| home.join(".cache/cxl-lab"));
        let state = env_dir("CXL_LAB_STATE")
            .or_else(|| env_dir("XDG_STATE_HOME").map(|dir| dir.join("cxl-lab")))
            .unwrap_or_else(|| home.join(".local/state/cxl-lab"));
        LabPaths { workspace: workspace.into(), cache, state }
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.workspace.join("profiles")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.workspace.join("templates")
    }

    /// Stack recipes and their locks: `images/` of the checkout, or `CXL_LAB_IMAGES` (tests point
    /// it at a private copy so a run never rewrites the checkout's lock).
    pub fn images_dir(&self) -> PathBuf {
        env_dir("CXL_LAB_IMAGES").unwrap_or_else(|| self.workspace.join("images"))
    }

    /// The state directory of one lab (`default` unless the user names another).
    pub fn lab_dir(&self, lab_name: &str) -> PathBuf {
        self.state.join("labs").join(lab_name)
    }

    /// Where build and download steps write their logs.
    pub fn build_logs_dir(&self) -> PathBuf {
        self.cache.join("logs")
    }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from)
}

/// Resolves a profile argument: a path to a YAML file, or a name looked up in `profiles/`.
pub fn profile_path(paths: &LabPaths, name_or_path: &str) -> PathBuf {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".yaml") || name_or_path.contains('/') {
        as_path.to_path_buf()
    } else {
        paths.profiles_dir().join(format!("{name_or_path}.yaml"))
    }
}

/// The private (0700) run directory of one running machine: its sockets, serial log and pid.
///
/// The renderer puts these paths into the QEMU argv and the supervisor creates and watches them,
/// so both take them from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineRunDir {
    pub dir: PathBuf,
}

impl MachineRunDir {
    pub fn new(dir: impl Into<PathBuf>) -> MachineRunDir {
        MachineRunDir { dir: dir.into() }
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("qga.sock")
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }

    /// The QEMU argv that started this machine, one argument per line, kept for reports.
    pub fn argv_file(&self) -> PathBuf {
        self.dir.join("qemu.argv")
    }
}
