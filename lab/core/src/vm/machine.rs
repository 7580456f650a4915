//! A QEMU known by its pid, program and run directory, whether or not this process spawned it:
//! the one place that knows how to tell it still runs, wait for its guest agent and stop it.
//!
//! [`crate::vm::supervisor::RunningMachine`] (the owner: kill on drop, reaping) uses it for the
//! machine it spawned; the lab's commands use it for the machines its supervisor owns, known from
//! `lab.json`. A pid alone could be reused by an unrelated process after QEMU exits, so the
//! process also has to run `program` to count as this machine.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::layout::MachineRunDir;
use crate::sys::process::{process_runs_program, signal_process, wait_until_gone};
use crate::vm::agent::GuestAgent;
use crate::vm::qmp::QmpClient;
use crate::vm::error::SupervisorError;

#[derive(Clone, Debug)]
pub struct MachineProcess {
    /// Names the machine in messages (the profile's host name).
    pub name: String,
    pub pid: u32,
    /// QEMU's `argv[0]`.
    pub program: PathBuf,
    pub run_dir: MachineRunDir,
}

impl MachineProcess {
    /// Whether QEMU still runs: an exited one that is not reaped yet (a zombie) does not.
    pub fn runs(&self) -> bool {
        process_runs_program(self.pid, &self.program.to_string_lossy())
    }

    /// QEMU is gone (`status` says how); quotes the tails of its own log and of the serial log.
    pub fn exited_error(&self, status: &str, during: &str) -> SupervisorError {
        SupervisorError::exited(&self.name, &self.run_dir, status, during)
    }

    /// `what` (QMP, the guest agent) did not answer within `timeout`; quotes the serial log's tail.
    pub fn not_ready_error(&self, what: &str, timeout: Duration, detail: String) -> SupervisorError {
        SupervisorError::not_ready(&self.name, &self.run_dir, what, timeout, detail)
    }

    /// Waits until the guest agent answers `guest-ping`: the machine is ready. `check_alive` runs
    /// between attempts and ends the wait with its error (QEMU died, the user interrupted); an
    /// agent that never answers is a not-ready error quoting the serial log.
    pub fn wait_for_agent(
        &self,
        timeout: Duration,
        check_alive: impl FnMut() -> Result<(), SupervisorError>,
    ) -> Result<GuestAgent, SupervisorError> {
        match GuestAgent::wait_until_ready(&self.run_dir.agent_socket(), timeout, check_alive) {
            Err(SupervisorError::Agent(error)) => Err(self.not_ready_error("guest agent", timeout, error.to_string())),
            other => other,
        }
    }

    /// Asks QEMU to quit over QMP, waiting at most `timeout` for its answer. The guest is not
    /// asked to shut down (the lab syncs it first when it can). Does nothing if QMP is gone.
    pub fn request_quit(&self, timeout: Duration) {
        if let Ok(mut qmp) = QmpClient::connect(&self.run_dir.qmp_socket()) {
            qmp.set_command_timeout(timeout);
            let _ = qmp.quit();
        }
    }

    /// Waits up to `grace` for QEMU to exit, then sends SIGKILL; true if it had to be killed.
    pub fn wait_or_kill(&self, grace: Duration) -> bool {
        if wait_until_gone(grace, || self.runs()) {
            return false;
        }
        signal_process(self.pid, Signal::SIGKILL);
        true
    }

    /// Ends QEMU in order: `quit` over QMP, up to `grace` to exit, then SIGKILL; true if killed.
    /// Whoever owns the process reaps it; its sockets are the caller's to remove.
    pub fn stop(&self, grace: Duration) -> bool {
        self.request_quit(grace);
        self.wait_or_kill(grace)
    }
}
