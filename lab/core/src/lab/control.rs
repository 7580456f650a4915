//! The commands that act on a running lab: `status`, `exec`, `cp`, `qmp`, `console`, `ssh` and
//! `down`. Each reads `lab.json`, talks to one machine over its unix sockets, and returns data;
//! the command line prints it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use fs_err as fs;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::lab::lock::LabLock;
use crate::lab::state::{LabState, MachineState};
use crate::lab::LabContext;
use crate::model::BootMode;
use crate::vm::agent::{GuestAgent, GuestExecOutput};
use crate::vm::qmp::{QmpClient, VmRunStatus};
use crate::sys::process::{signal_process, wait_until_gone};
use crate::vm::machine::MachineProcess;
use crate::vm::supervisor::remove_runtime_files;

/// How long a command waits for the guest agent to accept it. The agent serves one client at a
/// time, so this also covers waiting for another `lab exec` to finish.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One machine as `lab status` shows it.
#[derive(Clone, Debug)]
pub struct MachineStatus {
    pub host: String,
    pub qemu_pid: u32,
    pub qemu_runs: bool,
    /// QMP's view, or why it could not be asked.
    pub vm_status: Result<VmRunStatus, String>,
    pub agent_answers: bool,
    pub ssh_port: Option<u16>,
    pub run_dir: PathBuf,
}

#[derive(Clone, Debug)]
pub struct LabStatus {
    pub state: LabState,
    pub machines: Vec<MachineStatus>,
}

/// The lab's state with a live look at each machine; `None` when no lab runs.
pub fn status(context: &LabContext) -> anyhow::Result<Option<LabStatus>> {
    let Some(state) = context.files.read_live_state()? else { return Ok(None) };
    let machines = state
        .machines
        .iter()
        .map(|machine| MachineStatus {
            host: machine.host.clone(),
            qemu_pid: machine.qemu_pid,
            qemu_runs: machine.qemu_runs(),
            vm_status: QmpClient::connect(&machine.qmp_socket)
                .and_then(|mut qmp| qmp.query_status())
                .map_err(|error| error.to_string()),
            agent_answers: GuestAgent::connect(&machine.agent_socket, Duration::from_secs(2))
                .and_then(|mut agent| agent.ping())
                .is_ok(),
            ssh_port: machine.ssh_port,
            run_dir: machine.run_dir.clone(),
        })
        .collect();
    Ok(Some(LabStatus { state, machines }))
}

/// Runs a command in the guest through the agent.
pub fn exec(context: &LabContext, host: Option<&str>, argv: &[String], timeout: Duration) -> anyhow::Result<GuestExecOutput> {
    if argv.is_empty() {
        bail!("no command given: `cargo xtask lab exec -- CMD ARGS...`");
    }
    let mut agent = connect_agent(context, host)?;
    Ok(agent.exec(argv, None, timeout)?)
}

/// `lab exec`'s exit code: the guest command's, or 128 + signal as a shell reports it.
pub fn exit_code_of(output: &GuestExecOutput) -> i32 {
    match (output.exit_code, output.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

/// A `lab cp` operand: a local path, or `guest:/path` / `<host>:/path` in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyEndpoint {
    Local(PathBuf),
    Guest { host: Option<String>, path: String },
}

impl CopyEndpoint {
    /// Parses an operand; `host_names` are the lab's hosts, accepted as prefixes besides `guest`.
    pub fn parse(text: &str, host_names: &[String]) -> CopyEndpoint {
        if let Some((prefix, path)) = text.split_once(':') {
            if path.starts_with('/') {
                if prefix == "guest" {
                    return CopyEndpoint::Guest { host: None, path: path.to_owned() };
                }
                if host_names.iter().any(|name| name == prefix) {
                    return CopyEndpoint::Guest { host: Some(prefix.to_owned()), path: path.to_owned() };
                }
            }
        }
        CopyEndpoint::Local(PathBuf::from(text))
    }
}

/// `prefix` and `path` of an operand written `prefix:path` with a plain word as prefix.
fn prefixed(operand: &str) -> Option<(&str, &str)> {
    let (prefix, path) = operand.split_once(':')?;
    let word = !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    word.then_some((prefix, path))
}

/// What can be said of `lab cp`'s operands before the lab is asked (host names need its state).
fn check_copy_operands(source: &str, destination: &str) -> anyhow::Result<()> {
    for operand in [source, destination] {
        if let Some(("guest", path)) = prefixed(operand) {
            if !path.starts_with('/') {
                bail!("`{operand}`: the guest path must be absolute (`guest:/path`)");
            }
        }
    }
    let in_guest = |operand: &str| prefixed(operand).is_some_and(|(_, path)| path.starts_with('/'));
    match (in_guest(source), in_guest(destination)) {
        (false, false) => bail!("neither `{source}` nor `{destination}` is in the guest: `lab cp FILE guest:/path` or `lab cp guest:/path FILE`"),
        (true, true) if source.starts_with("guest:") && destination.starts_with("guest:") => {
            bail!("`{source}` and `{destination}` are both in the guest: one side of `lab cp` is local")
        }
        (false, true) => match std::fs::metadata(source) {
            Err(error) => bail!("`{source}`: {error}"),
            Ok(metadata) if !metadata.is_file() => bail!("`{source}` is not a regular file: `lab cp` copies one file"),
            Ok(_) => {}
        },
        (true, false) => {
            if let Some(parent) = Path::new(destination).parent().filter(|parent| !parent.as_os_str().is_empty() && !parent.is_dir()) {
                bail!("`{destination}`: {} is not a directory", parent.display());
            }
        }
        _ => {}
    }
    Ok(())
}

/// Copies one file into or out of the guest; returns the number of bytes.
pub fn copy(context: &LabContext, source: &str, destination: &str) -> anyhow::Result<u64> {
    check_copy_operands(source, destination)?;
    let state = context.files.require_running()?;
    let host_names: Vec<String> = state.machines.iter().map(|machine| machine.host.clone()).collect();
    match (CopyEndpoint::parse(source, &host_names), CopyEndpoint::parse(destination, &host_names)) {
        (CopyEndpoint::Local(local), CopyEndpoint::Guest { host, path }) => {
            let contents = fs::read(&local)?;
            let mut agent = connect_agent_in(&state, host.as_deref())?;
            agent.write_file(&path, &contents).with_context(|| format!("writing {path} in the guest"))?;
            Ok(contents.len() as u64)
        }
        (CopyEndpoint::Guest { host, path }, CopyEndpoint::Local(local)) => {
            let mut agent = connect_agent_in(&state, host.as_deref())?;
            let contents = agent.read_file(&path).with_context(|| format!("reading {path} in the guest"))?;
            let local = if local.is_dir() {
                local.join(Path::new(&path).file_name().context("the guest path names no file")?)
            } else {
                local
            };
            fs::write(&local, &contents)?;
            Ok(contents.len() as u64)
        }
        _ => bail!("one side of `lab cp` must be in the guest (`guest:/path`) and the other local"),
    }
}

/// Runs a QMP command with optional JSON arguments; QEMU's refusal comes back as an error.
pub fn qmp(context: &LabContext, host: Option<&str>, command: &str, arguments: Option<&str>) -> anyhow::Result<Value> {
    if command.is_empty() || !command.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("`{command}` is not a QMP command name (letters, digits, `-` and `_`; e.g. `query-status`)");
    }
    let arguments = crate::vm::qmp::parse_command_arguments(arguments).map_err(anyhow::Error::msg)?;
    let state = context.files.require_running()?;
    let machine = state.machine(host)?;
    let mut client = QmpClient::connect(&machine.qmp_socket)?;
    Ok(client.execute_raw(command, arguments)?)
}

/// Copies the serial log to `output`; with `follow`, keeps copying until the lab stops.
pub fn console(context: &LabContext, host: Option<&str>, follow: bool, output: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let state = context.files.require_running()?;
    let machine = state.machine(host)?.clone();
    let mut log = fs::File::open(&machine.serial_log)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let count = log.read(&mut buffer)?;
        if count > 0 {
            output.write_all(&buffer[..count])?;
            output.flush()?;
            continue;
        }
        if !follow {
            return Ok(());
        }
        if !machine.qemu_runs() {
            // QEMU may have written its last lines between our read and its exit: one more pass.
            let mut rest = Vec::new();
            log.read_to_end(&mut rest)?;
            output.write_all(&rest)?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
        // Stay at the end of what was read; the file only grows while QEMU runs.
        let position = log.stream_position()?;
        log.seek(SeekFrom::Start(position))?;
    }
}

/// Why `lab ssh` cannot reach a lean lab, and how to boot one it can.
pub fn ssh_needs_full_boot(context: &LabContext) -> String {
    format!(
        "lab `{}` booted lean (no sshd, no network); ssh needs the full boot: `cargo xtask lab{flag} switch PROFILE --boot full`, or `lab up --boot full`",
        context.files.name,
        flag = context.lab_flag()
    )
}

/// The `ssh` command that reaches the guest as root with the lab's key, binding nothing but what
/// QEMU forwards on 127.0.0.1, with the key made when the lab came up. The caller runs it (it is
/// interactive).
pub fn ssh_command(context: &LabContext, host: Option<&str>, remote_arguments: &[String]) -> anyhow::Result<Command> {
    let state = context.files.require_running()?;
    if state.plan.boot == BootMode::Lean {
        bail!(ssh_needs_full_boot(context));
    }
    let machine = state.machine(host)?;
    let port = machine.ssh_port.context("this machine has no SSH port forwarded")?;
    let mut command = Command::new("ssh");
    command
        .arg("-i")
        .arg(super::secrets::ssh_key_path(&context.files))
        .args(["-p", &port.to_string()])
        .args(["-o", "StrictHostKeyChecking=no", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", context.files.known_hosts().display()))
        .arg("root@127.0.0.1")
        .args(remote_arguments);
    Ok(command)
}

/// What `lab down` did.
#[derive(Clone, Debug)]
pub struct DownReport {
    pub profile: String,
    /// Machines whose guest synced its disks before QEMU quit.
    pub synced: Vec<String>,
    /// Machines that had to be killed.
    pub killed: Vec<String>,
}

/// Stops the lab: the guest flushes its file systems (`sync` through the agent), QEMU quits over
/// QMP, the supervisor is told to end; SIGKILL is the last resort. Afterwards no QEMU of the lab
/// runs and no socket is left.
pub fn down(context: &LabContext) -> anyhow::Result<DownReport> {
    let files = &context.files;
    let state = files.require_running()?;
    let mut report = DownReport { profile: state.plan.profile.clone(), synced: Vec::new(), killed: Vec::new() };
    let machines: Vec<MachineProcess> = state.machines.iter().map(MachineState::process).collect();
    // Every guest syncs and every QEMU is asked to quit before any is waited for: they shut down
    // side by side.
    for (machine, process) in state.machines.iter().zip(&machines) {
        if sync_guest(machine) {
            report.synced.push(machine.host.clone());
        }
        process.request_quit(Duration::from_secs(5));
    }
    for process in &machines {
        if process.wait_or_kill(Duration::from_secs(10)) {
            report.killed.push(process.name.clone());
        }
    }
    // The supervisor sees its QEMUs exit and ends by itself; the signal covers one that is busy.
    if !wait_until_gone(Duration::from_secs(5), || state.supervisor_runs()) {
        signal_process(state.supervisor_pid, Signal::SIGTERM);
        if !wait_until_gone(Duration::from_secs(5), || state.supervisor_runs()) {
            signal_process(state.supervisor_pid, Signal::SIGKILL);
        }
    }
    for process in &machines {
        if !wait_until_gone(Duration::from_secs(5), || process.runs()) {
            bail!("QEMU {} of `{}` is still running after SIGKILL", process.pid, process.name);
        }
        remove_runtime_files(&process.run_dir);
    }
    // The supervisor removed the state files as it ended; if it had to be killed, they are ours to
    // remove, under the lab's lock (a `lab up` that has since taken the lab owns what is there).
    if let Ok(_lock) = LabLock::acquire_within(files, "lab down", Duration::from_secs(5)) {
        files.remove_state_files();
    }
    Ok(report)
}

/// Asks the guest to write its dirty pages to disk so that quitting QEMU loses nothing.
fn sync_guest(machine: &MachineState) -> bool {
    let Ok(mut agent) = GuestAgent::connect(&machine.agent_socket, Duration::from_secs(3)) else { return false };
    agent.exec(&["sync".to_owned()], None, Duration::from_secs(30)).is_ok_and(|output| output.exit_code == Some(0))
}

fn connect_agent(context: &LabContext, host: Option<&str>) -> anyhow::Result<GuestAgent> {
    let state = context.files.require_running()?;
    connect_agent_in(&state, host)
}

fn connect_agent_in(state: &LabState, host: Option<&str>) -> anyhow::Result<GuestAgent> {
    let machine = state.machine(host)?;
    GuestAgent::connect(&machine.agent_socket, AGENT_CONNECT_TIMEOUT)
        .with_context(|| format!("reaching the guest agent of `{}` (is the guest still booting? see `cargo xtask lab status`)", machine.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_operands_name_the_guest_or_a_host() {
        let hosts = vec!["host0".to_owned(), "host1".to_owned()];
        assert_eq!(CopyEndpoint::parse("guest:/etc/os-release", &hosts), CopyEndpoint::Guest { host: None, path: "/etc/os-release".into() });
        assert_eq!(CopyEndpoint::parse("host1:/tmp/x", &hosts), CopyEndpoint::Guest { host: Some("host1".into()), path: "/tmp/x".into() });
        assert_eq!(CopyEndpoint::parse("notes:/tmp/x", &hosts), CopyEndpoint::Local("notes:/tmp/x".into()));
        assert_eq!(CopyEndpoint::parse("./file", &hosts), CopyEndpoint::Local("./file".into()));
    }

    #[test]
    fn exit_code_follows_the_shell_convention_for_signals() {
        assert_eq!(exit_code_of(&GuestExecOutput { exit_code: Some(3), ..Default::default() }), 3);
        assert_eq!(exit_code_of(&GuestExecOutput { signal: Some(9), ..Default::default() }), 137);
    }
}
