//! What can go wrong with a machine, for its owner and for a lab command that only knows its pid:
//! QEMU exited, QMP or the guest agent did not answer in time, a run directory or socket path is
//! unusable. Errors quote the tails of QEMU's log and of the serial console.

use std::path::PathBuf;
use std::time::Duration;

use crate::layout::MachineRunDir;
use crate::sys::runner::tail_of;
use crate::vm::agent::AgentError;
use crate::vm::qmp::QmpError;

/// Linux limits a unix socket path to 107 bytes plus the terminating zero.
pub const UNIX_SOCKET_PATH_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot prepare run directory {dir}: {source}")]
    RunDir { dir: PathBuf, source: std::io::Error },
    #[error("socket path {path} is {length} bytes, longer than the {UNIX_SOCKET_PATH_MAX} a unix socket allows; move the lab state (CXL_LAB_STATE) to a shorter path")]
    SocketPathTooLong { path: PathBuf, length: usize },
    #[error("the QEMU argv is empty")]
    EmptyArgv,
    #[error("cannot start QEMU `{program}`: {source}\n  logs: {log}")]
    Spawn { program: String, log: PathBuf, source: std::io::Error },
    #[error(
        "QEMU of `{}` exited ({}) {}\n  last QEMU output:\n{}\n  last serial lines:\n{}\n  logs: {} and {}",
        .0.machine, .0.status, .0.during, .0.qemu_tail, .0.serial_tail, .0.qemu_log.display(), .0.serial_log.display()
    )]
    Exited(Box<MachineExited>),
    #[error(
        "`{}`: {} not ready within {:?}: {}\n  last serial lines:\n{}\n  logs: {} and {}",
        .0.machine, .0.what, .0.timeout, .0.detail, .0.serial_tail, .0.qemu_log.display(), .0.serial_log.display()
    )]
    NotReady(Box<MachineNotReady>),
    #[error("interrupted by {signal}")]
    Interrupted { signal: String },
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// QEMU ended while the tool still needed it.
#[derive(Debug)]
pub struct MachineExited {
    pub machine: String,
    pub status: String,
    pub during: String,
    pub qemu_tail: String,
    pub serial_tail: String,
    pub qemu_log: PathBuf,
    pub serial_log: PathBuf,
}

/// A machine's QMP or guest agent did not answer in time.
#[derive(Debug)]
pub struct MachineNotReady {
    pub machine: String,
    pub what: String,
    pub timeout: Duration,
    pub detail: String,
    pub serial_tail: String,
    pub qemu_log: PathBuf,
    pub serial_log: PathBuf,
}

impl SupervisorError {
    /// QEMU of `machine` is gone; quotes the tails of its own log and of the serial log.
    pub fn exited(machine: &str, run_dir: &MachineRunDir, status: &str, during: &str) -> SupervisorError {
        SupervisorError::Exited(Box::new(MachineExited {
            machine: machine.to_owned(),
            status: status.to_owned(),
            during: during.to_owned(),
            qemu_tail: tail_of(&run_dir.qemu_log()),
            serial_tail: tail_of(&run_dir.serial_log()),
            qemu_log: run_dir.qemu_log(),
            serial_log: run_dir.serial_log(),
        }))
    }

    /// `what` (QMP, the guest agent) did not answer in time; quotes the serial log's tail.
    pub fn not_ready(machine: &str, run_dir: &MachineRunDir, what: &str, timeout: Duration, detail: String) -> SupervisorError {
        SupervisorError::NotReady(Box::new(MachineNotReady {
            machine: machine.to_owned(),
            what: what.to_owned(),
            timeout,
            detail,
            serial_tail: tail_of(&run_dir.serial_log()),
            qemu_log: run_dir.qemu_log(),
            serial_log: run_dir.serial_log(),
        }))
    }
}
