//! What a lab leaves on disk between commands: the launch plan (`launch.json`, written by `lab up`
//! for the supervisor) and the running state (`lab.json`, written by the supervisor once QEMU runs,
//! read by `status`, `exec`, `qmp`, `down`...).
//!
//! Each file has one writer, and both are replaced by rename, so a reader never sees half a file.
//! A state whose supervisor is gone is stale (the supervisor was killed outright: its QEMU died
//! with it through the parent-death signal); [`LabLayout::read_live_state`] cleans it up, but only
//! when it can take the lab's lock ([`crate::lab::lock`]): a `lab up` under way owns what is there.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::lab::lock::LabLock;
use crate::capability::ServiceConfig;
use crate::model::BootMode;
use crate::qemu::Accel;
use crate::stack::BootStack;
use crate::layout::{LabLayout, MachineRunDir};
use crate::sys::process::process_runs_program;
use crate::vm::machine::MachineProcess;
use crate::vm::supervisor::remove_runtime_files;

/// The lab used when none is named.
pub const DEFAULT_LAB: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum LabStateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a lab state file: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("no lab `{lab}` is running (start one with `cargo xtask lab up`)")]
    NotRunning { lab: String },
    #[error("lab `{lab}` has no host `{host}` (hosts: {known})")]
    NoSuchHost { lab: String, host: String, known: String },
}

/// One machine of a lab as planned by `lab up`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedMachine {
    pub host: String,
    pub argv: Vec<String>,
    pub run_dir: PathBuf,
    pub overlay: PathBuf,
    pub ssh_port: Option<u16>,
}

/// `launch.json`: everything the supervisor needs to start the lab's machines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub lab: String,
    /// The profile as the user named it, and the file it came from.
    pub profile: String,
    pub profile_path: PathBuf,
    pub boot_stack: BootStack,
    pub accel: Accel,
    pub accel_reason: String,
    pub detached: bool,
    /// How the guests boot; a plan written before lean boots existed was a full boot.
    #[serde(default = "full_boot")]
    pub boot: BootMode,
    pub machines: Vec<PlannedMachine>,
    /// One capability service per `capabilities: true` memory backend, for the supervisor to
    /// start; empty when the profile has none or the lab's QEMU has no capability device (stock
    /// QEMU: the devices run unchecked, and a suite that needs the checks skips).
    #[serde(default)]
    pub capabilities: Vec<ServiceConfig>,
}

fn full_boot() -> BootMode {
    BootMode::Full
}

/// One running machine in `lab.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineState {
    pub host: String,
    pub qemu_pid: u32,
    pub qemu_binary: PathBuf,
    pub run_dir: PathBuf,
    pub qmp_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub serial_log: PathBuf,
    pub ssh_port: Option<u16>,
    /// When QEMU was spawned, in milliseconds since the Unix epoch.
    pub qemu_spawned_at_ms: u64,
}

impl MachineState {
    pub fn run_dir(&self) -> MachineRunDir {
        MachineRunDir::new(&self.run_dir)
    }

    /// Its QEMU, to wait for and stop (the supervisor owns and reaps it).
    pub fn process(&self) -> MachineProcess {
        MachineProcess { name: self.host.clone(), pid: self.qemu_pid, program: self.qemu_binary.clone(), run_dir: self.run_dir() }
    }

    pub fn qemu_runs(&self) -> bool {
        self.process().runs()
    }
}

/// `lab.json`: a running lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    /// The plan the supervisor started from.
    pub plan: LaunchPlan,
    pub supervisor_pid: u32,
    /// The supervisor's executable, to tell it from an unrelated process that reused its pid.
    pub supervisor_program: PathBuf,
    pub started_at_ms: u64,
    pub machines: Vec<MachineState>,
}

impl LabState {
    pub fn supervisor_runs(&self) -> bool {
        process_runs_program(self.supervisor_pid, &self.supervisor_program.to_string_lossy())
    }

    /// The named host, or the first when none is named.
    pub fn machine(&self, host: Option<&str>) -> Result<&MachineState, LabStateError> {
        match host {
            None => self.machines.first().ok_or_else(|| LabStateError::NotRunning { lab: self.plan.lab.clone() }),
            Some(name) => self.machines.iter().find(|machine| machine.host == name).ok_or_else(|| {
                LabStateError::NoSuchHost {
                    lab: self.plan.lab.clone(),
                    host: name.to_owned(),
                    known: self.machines.iter().map(|machine| machine.host.as_str()).collect::<Vec<_>>().join(", "),
                }
            }),
        }
    }
}

/// Reading and writing a lab's state files (their paths are the layout's).
impl LabLayout {
    pub fn write_launch_plan(&self, plan: &LaunchPlan) -> Result<(), LabStateError> {
        write_json_atomically(&self.launch_file(), plan)
    }

    pub fn read_launch_plan(&self) -> Result<LaunchPlan, LabStateError> {
        read_json(&self.launch_file())
    }

    pub fn write_state(&self, state: &LabState) -> Result<(), LabStateError> {
        write_json_atomically(&self.state_file(), state)
    }

    /// The state file as written, whether or not its processes still run.
    pub fn read_state_file(&self) -> Result<Option<LabState>, LabStateError> {
        if !self.state_file().exists() {
            return Ok(None);
        }
        read_json(&self.state_file()).map(Some)
    }

    /// The state of a lab whose supervisor runs; a stale state is cleaned up and reads as none.
    pub fn read_live_state(&self) -> Result<Option<LabState>, LabStateError> {
        match self.read_state_file()? {
            Some(state) if state.supervisor_runs() => Ok(Some(state)),
            Some(stale) => {
                if let Ok(_lock) = LabLock::try_acquire(self, "stale state cleanup") {
                    self.clean_stale(&stale);
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The live state, or [`LabStateError::NotRunning`].
    pub fn require_running(&self) -> Result<LabState, LabStateError> {
        self.read_live_state()?.ok_or_else(|| LabStateError::NotRunning { lab: self.name.clone() })
    }

    /// Removes what a dead supervisor left: sockets, pid files, the state and launch files.
    pub fn clean_stale(&self, stale: &LabState) {
        for machine in &stale.machines {
            remove_runtime_files(&machine.run_dir());
        }
        self.remove_state_files();
    }

    pub fn remove_state_files(&self) {
        let _ = std::fs::remove_file(self.state_file());
        let _ = std::fs::remove_file(self.launch_file());
    }
}

pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), LabStateError> {
    let write_error = |source| LabStateError::Write { path: path.to_path_buf(), source };
    let text = serde_json::to_string_pretty(value).map_err(|error| write_error(std::io::Error::other(error)))?;
    crate::sys::atomic_file::replace_file(path, (text + "\n").as_bytes()).map_err(write_error)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, LabStateError> {
    let text = fs::read_to_string(path).map_err(|source| LabStateError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| LabStateError::Parse { path: path.to_path_buf(), source })
}
