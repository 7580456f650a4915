//! Where cxl-lab keeps everything, in one place: the checkout (profiles, templates, images), the
//! content-addressed cache, and the state of each lab down to one machine's run directory.
//!
//! [`Layout`] is the roots and every path below them; [`Layout::lab`] narrows it to one lab
//! ([`LabLayout`]), [`LabLayout::run_dir`] to one machine ([`MachineRunDir`]) and
//! [`LabLayout::capability_files`] to one capability service ([`CapabilityFiles`]), so a path is
//! spelled once and nothing else joins file names onto these roots.
//!
//! Every root can be moved with an environment variable, so tests and CI use private directories
//! and never touch a user's labs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The directories one invocation of the tool works with, and everything below them.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The checkout: holds `profiles/`, `templates/`, `images/`, `suites/`.
    pub workspace: PathBuf,
    /// Built and downloaded artifacts, keyed by content (`CXL_LAB_CACHE`).
    pub cache: PathBuf,
    /// Labs: one directory per lab name, holding its run directory and logs (`CXL_LAB_STATE`).
    pub state: PathBuf,
}

impl Layout {
    /// Paths for a checkout, with cache and state from the environment or XDG defaults.
    pub fn for_workspace(workspace: impl Into<PathBuf>) -> Layout {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        let cache = env_dir("CXL_LAB_CACHE")
            .or_else(|| env_dir("XDG_CACHE_HOME").map(|dir| dir.join("cxl-lab")))
            .unwrap_or_else(|| home.join(".cache/cxl-lab"));
        let state = env_dir("CXL_LAB_STATE")
            .or_else(|| env_dir("XDG_STATE_HOME").map(|dir| dir.join("cxl-lab")))
            .unwrap_or_else(|| home.join(".local/state/cxl-lab"));
        Layout { workspace: workspace.into(), cache, state }
    }

    /// A cache at `cache` with no checkout or state (tests, and tools that only read the cache).
    pub fn for_cache(cache: impl Into<PathBuf>) -> Layout {
        let cache = cache.into();
        Layout { workspace: cache.join("no-workspace"), state: cache.join("no-state"), cache }
    }

    // The checkout.

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

    /// A profile argument: a path to a YAML file, or a name looked up in `profiles/`.
    pub fn profile_path(&self, name_or_path: &str) -> PathBuf {
        named_yaml(&self.profiles_dir(), name_or_path)
    }

    /// Sharing scenarios for `model eval`: `scenarios/` of the checkout.
    pub fn scenarios_dir(&self) -> PathBuf {
        self.workspace.join("scenarios")
    }

    pub fn scenario_path(&self, name_or_path: &str) -> PathBuf {
        named_yaml(&self.scenarios_dir(), name_or_path)
    }

    pub fn suites_dir(&self) -> PathBuf {
        self.workspace.join("suites")
    }

    /// A suite argument: a path to a YAML file, or a name looked up in `suites/`.
    pub fn suite_path(&self, name_or_path: &str) -> PathBuf {
        named_yaml(&self.suites_dir(), name_or_path)
    }

    /// Where cargo builds (`CARGO_TARGET_DIR`, or the checkout's `target/`): the guest program
    /// is built there.
    pub fn target_dir(&self) -> PathBuf {
        env_dir("CARGO_TARGET_DIR").unwrap_or_else(|| self.workspace.join("target"))
    }

    // The cache.

    /// Published artifacts, one directory `<kind>-<key>` each.
    pub fn artifacts_dir(&self) -> PathBuf {
        self.cache.join("artifacts")
    }

    /// Staging directories of builds under way; published by rename into `artifacts/`.
    pub fn cache_tmp_dir(&self) -> PathBuf {
        self.cache.join("tmp")
    }

    /// One lock file per artifact key, download and apt state.
    pub fn cache_locks_dir(&self) -> PathBuf {
        self.cache.join("locks")
    }

    /// Stamps: the fingerprints of an artifact's files when they were last hashed and found whole.
    pub fn verified_dir(&self) -> PathBuf {
        self.cache.join("verified")
    }

    /// Downloaded .deb files, named by package, version and hash.
    pub fn downloads_dir(&self) -> PathBuf {
        self.cache.join("downloads")
    }

    /// Bare git repositories of `git` sources, one per URL, holding the commits fetched.
    pub fn git_dir(&self) -> PathBuf {
        self.cache.join("git")
    }

    /// Private apt state directories, one per suite and mirror.
    pub fn apt_dir(&self) -> PathBuf {
        self.cache.join("apt")
    }

    /// The .debs debootstrap downloads, kept between builds of the root filesystem.
    pub fn debootstrap_debs_dir(&self) -> PathBuf {
        self.cache.join("debootstrap-debs")
    }

    /// A PyPI tool's private venv (`venvs/<name>-<version>`), made once and kept: not an
    /// artifact (a venv cannot move), so `cache gc` leaves it.
    pub fn python_venv_dir(&self, name: &str, version: &str) -> PathBuf {
        self.cache.join("venvs").join(format!("{name}-{version}"))
    }

    /// What the host QEMU said its version was, keyed by the binary's inode, size and mtime.
    pub fn qemu_probe_file(&self) -> PathBuf {
        self.cache.join("probes/qemu.json")
    }

    /// Where build and download steps write their logs.
    pub fn build_logs_dir(&self) -> PathBuf {
        self.cache.join("logs")
    }

    /// A source tree kept between builds so a change rebuilds incrementally (`linux-<key>`):
    /// not an artifact; what is published from it is copied into `artifacts/`.
    pub fn build_tree(&self, name: &str) -> PathBuf {
        self.build_trees_dir().join(name)
    }

    /// Kept build trees (`trees/<name>`), collected by `cache gc` like artifacts.
    pub fn build_trees_dir(&self) -> PathBuf {
        self.cache.join("trees")
    }

    // The state.

    /// The KVM probe's scratch files and its verdict, cached per host boot.
    pub fn kvm_probe_dir(&self) -> PathBuf {
        self.state.join("probe")
    }

    /// The files of one lab (`default` unless the user names another).
    pub fn lab(&self, name: &str) -> LabLayout {
        LabLayout { name: name.to_owned(), dir: self.state.join("labs").join(name) }
    }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from)
}

/// The files of one lab, under `<state>/labs/<name>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabLayout {
    pub name: String,
    pub dir: PathBuf,
}

impl LabLayout {
    /// `lab.json`: the running lab, written by its supervisor.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    /// `launch.json`: what `lab up` asks the supervisor to start.
    pub fn launch_file(&self) -> PathBuf {
        self.dir.join("launch.json")
    }

    /// The lab's lock (`crate::lab::lock`); never removed.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lab.lock")
    }

    /// Step logs of this lab's commands (overlay creation, the supervisor).
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn supervisor_log(&self) -> PathBuf {
        self.logs_dir().join("supervisor.log")
    }

    /// The private run directory of one host of this lab (sockets, serial log, pid).
    pub fn run_dir(&self, host: &str) -> MachineRunDir {
        MachineRunDir::new(self.dir.join("run").join(host))
    }

    /// The capability services' files, a directory per `capabilities: true` memory backend,
    /// beside the hosts' run directories (the profile rules keep a host from being named
    /// `capability`).
    pub fn capability_dir(&self) -> PathBuf {
        self.dir.join("run").join("capability")
    }

    /// The files of the capability service of memory backend `backend`.
    pub fn capability_files(&self, backend: &str) -> CapabilityFiles {
        CapabilityFiles::new(&self.capability_dir(), backend)
    }

    /// The root secret of the capability service of memory backend `backend` (0600, in the
    /// secrets directory).
    pub fn capability_secret(&self, backend: &str) -> PathBuf {
        self.secrets_dir().join(format!("capability-{backend}.key"))
    }

    /// Where this lab's memory backend files live (shared by its hosts).
    pub fn memory_dir(&self) -> PathBuf {
        self.dir.join("memory")
    }

    /// The qcow2 overlay a host boots, kept across `lab down` and `lab switch`.
    pub fn overlay(&self, host: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{host}.qcow2"))
    }

    /// Served to the guest as the 9p tag `datashare`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The SSH known_hosts file for this lab only: each lab's guest has its own host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The lab's root password and SSH key pair (0700).
    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.join("secrets")
    }

    /// Scratch files of the bench's bare-initramfs boot, laid out like a lab of their own.
    pub fn bare_boot_dir(&self) -> LabLayout {
        LabLayout { name: format!("{}-bare", self.name), dir: self.dir.join("bare") }
    }

    /// Scratch files of the bench's virtme-ng boot, laid out like a lab of their own.
    pub fn virtme_boot_dir(&self) -> LabLayout {
        LabLayout { name: format!("{}-virtme", self.name), dir: self.dir.join("virtme") }
    }

    /// A kernel laid out as virtme-ng finds a kernel's modules: `vmlinuz` beside `lib/modules/`
    /// (links to the stack's artifacts).
    pub fn kernel_view_dir(&self) -> PathBuf {
        self.dir.join("kernel")
    }
}

/// The private (0700) run directory of one running machine: its sockets, logs and pid.
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

    /// QEMU's own stdout and stderr, after a first line with its command.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }

    /// The QEMU argv that started this machine, one argument per line, kept for reports.
    pub fn argv_file(&self) -> PathBuf {
        self.dir.join("qemu.argv")
    }
}

/// The files of one memory backend's capability service, `<capability_dir>/<backend>/`: its two
/// unix sockets, the grant table its devices map and its log.
///
/// The renderer names the device socket and the grant table in the argv (`cap-service`,
/// `cap-grants`); the lab supervisor starts the service on them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityFiles {
    pub dir: PathBuf,
}

impl CapabilityFiles {
    /// `backend` is a memory backend id: a QEMU identifier, which cannot leave `capability_dir`.
    pub fn new(capability_dir: &Path, backend: &str) -> CapabilityFiles {
        CapabilityFiles { dir: capability_dir.join(backend) }
    }

    /// The socket QEMU's devices present tokens on (`cap-service`).
    pub fn device_socket(&self) -> PathBuf {
        self.dir.join("device.sock")
    }

    /// The socket of the lab's owner (`lab cap mint|revoke|grants`).
    pub fn owner_socket(&self) -> PathBuf {
        self.dir.join("owner.sock")
    }

    /// The grant table the service publishes and the devices map read-only (`cap-grants`).
    pub fn grant_table(&self) -> PathBuf {
        self.dir.join("grants.table")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("service.log")
    }
}

/// A path as given (`x.yaml`, `dir/x`), or a name (`x`) as `<dir>/x.yaml`.
fn named_yaml(dir: &Path, name_or_path: &str) -> PathBuf {
    if name_or_path.ends_with(".yaml") || name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        dir.join(format!("{name_or_path}.yaml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capability_service_has_a_directory_beside_the_hosts_and_a_secret_with_the_labs() {
        let lab = LabLayout { name: "t".to_owned(), dir: PathBuf::from("/labs/t") };
        assert_eq!(lab.capability_dir(), Path::new("/labs/t/run/capability"));
        let files = lab.capability_files("mem");
        assert_eq!(files.device_socket(), Path::new("/labs/t/run/capability/mem/device.sock"));
        assert_eq!(files.owner_socket(), Path::new("/labs/t/run/capability/mem/owner.sock"));
        assert_eq!(files.grant_table(), Path::new("/labs/t/run/capability/mem/grants.table"));
        assert_eq!(files.log(), Path::new("/labs/t/run/capability/mem/service.log"));
        assert_eq!(lab.capability_secret("mem"), Path::new("/labs/t/secrets/capability-mem.key"));
    }
}
