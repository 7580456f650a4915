//! Spawning and owning one QEMU process: the private run directory, the pid and argv files, the
//! waits for QMP and the guest agent, and the guarantee that the process dies with its owner.
//!
//! No QEMU outlives its owner:
//! - [`RunningMachine`]'s `Drop` kills (SIGKILL) and reaps QEMU and removes its sockets, so an
//!   error, a timeout or a panic anywhere in the owner ends the machine;
//! - the child asks the kernel for `PR_SET_PDEATHSIG(SIGKILL)` before exec, so QEMU also dies when
//!   the owner is killed outright. Linux sends that signal when the *thread* that forked exits, so
//!   spawn from a thread that lives as long as the machine (the main thread, in the tool);
//! - QEMU gets its own process group, so a Ctrl-C in the terminal reaches the tool, which then
//!   shuts the machine down in order, instead of killing QEMU behind its back.
//!
//! QEMU is a long-running child, so it is spawned here rather than through `CommandRunner`, but
//! the same way of logging applies: its exact command line heads `qemu.log` in the run directory,
//! followed by everything QEMU prints, and errors quote the tail of that log and of the serial log.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fs_err as fs;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use crate::layout::MachineRunDir;
use crate::sys::process::{die_with_parent, wait_until_gone};
use crate::sys::runner::display_command;
use crate::vm::agent::GuestAgent;
use crate::vm::error::{SupervisorError, UNIX_SOCKET_PATH_MAX};
use crate::vm::machine::MachineProcess;
use crate::vm::qmp::QmpClient;

/// Everything needed to start one machine.
#[derive(Clone, Debug)]
pub struct MachineSpec {
    /// The host name from the profile; names the machine in messages.
    pub name: String,
    /// The rendered command line, `argv[0]` being the QEMU binary.
    pub argv: Vec<String>,
    pub run_dir: MachineRunDir,
}

/// Creates the run directory private to the user (0700) and removes what a previous machine left
/// (sockets, pid file, serial log), so nothing stale is mistaken for the new machine's.
pub fn prepare_run_dir(run_dir: &MachineRunDir) -> Result<(), SupervisorError> {
    let dir_error = |source| SupervisorError::RunDir { dir: run_dir.dir.clone(), source };
    fs::create_dir_all(&run_dir.dir).map_err(dir_error)?;
    fs::set_permissions(&run_dir.dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_error)?;
    for socket in [run_dir.qmp_socket(), run_dir.agent_socket()] {
        let length = socket.as_os_str().len();
        if length > UNIX_SOCKET_PATH_MAX {
            return Err(SupervisorError::SocketPathTooLong { path: socket, length });
        }
    }
    remove_runtime_files(run_dir);
    // QEMU truncates the serial file only when it opens it; until then a waiter would read the
    // previous boot's lines (and its markers) as this boot's.
    let _ = std::fs::remove_file(run_dir.serial_log());
    Ok(())
}

/// Removes the sockets and the pid file; logs and the argv file stay for post-mortems.
pub fn remove_runtime_files(run_dir: &MachineRunDir) {
    for path in [run_dir.qmp_socket(), run_dir.agent_socket(), run_dir.pid_file()] {
        let _ = std::fs::remove_file(path);
    }
}

/// A QEMU process owned by this value: dropping it kills and reaps QEMU. Waiting and stopping
/// are [`MachineProcess`]'s, with the child's exit status where it tells more.
pub struct RunningMachine {
    spec: MachineSpec,
    process: MachineProcess,
    child: OwnedChild,
}

/// The spawned QEMU, until reaped, and its exit status once known.
struct OwnedChild {
    child: Option<Child>,
    exit_status: Option<ExitStatus>,
}

impl OwnedChild {
    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exit_status = Some(status);
                }
            }
        }
        self.exit_status
    }

    /// Fails with QEMU's exit status and the tails of its logs if it is no longer running.
    fn check_running(&mut self, process: &MachineProcess, during: &str) -> Result<(), SupervisorError> {
        match self.try_exit_status() {
            None => Ok(()),
            Some(status) => Err(process.exited_error(&status.to_string(), during)),
        }
    }
}

impl RunningMachine {
    /// Prepares the run directory, writes the argv file and starts QEMU.
    pub fn spawn(spec: &MachineSpec) -> Result<RunningMachine, SupervisorError> {
        let (program, arguments) = spec.argv.split_first().ok_or(SupervisorError::EmptyArgv)?;
        prepare_run_dir(&spec.run_dir)?;
        let dir_error = |source| SupervisorError::RunDir { dir: spec.run_dir.dir.clone(), source };
        fs::write(spec.run_dir.argv_file(), spec.argv.join("\n") + "\n").map_err(dir_error)?;

        let mut command = Command::new(program);
        command.args(arguments);
        let qemu_log = spec.run_dir.qemu_log();
        let mut log_file = fs::File::create(&qemu_log).map_err(dir_error)?;
        std::io::Write::write_all(&mut log_file, format!("$ {}\n", display_command(&command)).as_bytes()).map_err(dir_error)?;
        let log_file = log_file.into_parts().0;
        let stderr = log_file.try_clone().map_err(dir_error)?;
        command.stdin(Stdio::null()).stdout(Stdio::from(log_file)).stderr(Stdio::from(stderr));
        die_with_owner(&mut command);

        let child = command
            .spawn()
            .map_err(|source| SupervisorError::Spawn { program: program.clone(), log: qemu_log.clone(), source })?;
        fs::write(spec.run_dir.pid_file(), format!("{}\n", child.id())).map_err(dir_error)?;
        let process = MachineProcess { name: spec.name.clone(), pid: child.id(), program: program.into(), run_dir: spec.run_dir.clone() };
        Ok(RunningMachine { spec: spec.clone(), process, child: OwnedChild { child: Some(child), exit_status: None } })
    }

    /// QEMU's pid until it is reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.child.as_ref().map(Child::id)
    }

    pub fn spec(&self) -> &MachineSpec {
        &self.spec
    }

    pub fn run_dir(&self) -> &MachineRunDir {
        &self.spec.run_dir
    }

    /// The exit status, once QEMU has exited (reaps it).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_exit_status()
    }

    /// Fails with QEMU's exit status and the tails of its logs if it is no longer running.
    pub fn check_running(&mut self, during: &str) -> Result<(), SupervisorError> {
        self.child.check_running(&self.process, during)
    }

    /// Waits for QEMU's QMP socket and completes the handshake.
    pub fn wait_for_qmp(&mut self, timeout: Duration) -> Result<QmpClient, SupervisorError> {
        let deadline = Instant::now() + timeout;
        let socket = self.spec.run_dir.qmp_socket();
        loop {
            self.check_running("before its QMP socket answered")?;
            match QmpClient::connect(&socket) {
                Ok(client) => return Ok(client),
                Err(error) if Instant::now() >= deadline => return Err(self.process.not_ready_error("QMP", timeout, error.to_string())),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Waits until the guest agent answers `guest-ping`: the machine is ready.
    pub fn wait_for_agent(&mut self, timeout: Duration) -> Result<GuestAgent, SupervisorError> {
        let (process, child) = (&self.process, &mut self.child);
        process.wait_for_agent(timeout, || child.check_running(process, "during boot"))
    }

    /// Waits up to `timeout` for QEMU to exit by itself; true if it did.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        wait_until_gone(timeout, || self.try_exit_status().is_none())
    }

    /// Ends QEMU in order ([`MachineProcess::stop`]), then reaps it and removes the sockets.
    pub fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_exit_status().is_none() {
            self.process.stop(grace);
        }
        self.kill_and_reap();
        self.child.exit_status
    }

    /// SIGKILL, reap, remove sockets and pid file. Safe to call more than once.
    pub fn kill_and_reap(&mut self) {
        let owned = &mut self.child;
        if let Some(mut child) = owned.child.take() {
            if owned.exit_status.is_none() {
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    owned.exit_status = Some(status);
                }
            }
        }
        remove_runtime_files(&self.spec.run_dir);
    }
}

impl Drop for RunningMachine {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Sets up the child so that it dies with this process: the parent-death signal (SIGKILL), its own
/// process group, and an empty signal mask (a supervisor blocks signals to wait for them, and exec
/// would hand that mask to QEMU).
fn die_with_owner(command: &mut Command) {
    die_with_parent(command, Signal::SIGKILL);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (setpgid, sigprocmask); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(std::io::Error::from)?;
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}
