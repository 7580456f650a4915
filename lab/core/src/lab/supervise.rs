//! The lab supervisor: the process that owns a lab's QEMUs (`lab supervise`, hidden, started by
//! `lab up`).
//!
//! A detached lab must outlive the `lab up` command yet still die with an owner, so `lab up`
//! re-executes the tool as this supervisor in a new session. The supervisor holds the lab's lock
//! it inherited from `lab up` ([`crate::lab::lock`]) for as long as it runs, starts every machine
//! of the launch plan (each QEMU dies with it through the parent-death signal) after the capability
//! services of its `capabilities: true` backends (threads of this process), writes `lab.json`,
//! then sleeps in `sigwait` until one of:
//! - SIGTERM, SIGINT or SIGHUP (`lab down`, Ctrl-C on an attached `lab up`, a closed terminal, and
//!   the kernel's parent-death signal when `lab up` dies before the lab is ready): it kills its
//!   QEMUs;
//! - SIGCHLD from a QEMU that exited (the guest powered off, QEMU crashed): the lab is over, it
//!   kills the others;
//! - SIGUSR1 from a detached `lab up` whose guests all answered: it drops the parent-death signal
//!   (the lab now outlives `lab up`), names itself the lab's holder, and sleeps on.
//!
//! Either way it reaps them, removes their sockets and the state files, and exits. Killed outright
//! (SIGKILL), it cannot clean up, but its QEMUs still die; the next command finds the stale state
//! and removes it.

use std::time::SystemTime;

use anyhow::Context as _;
use nix::sys::signal::{SigSet, Signal};

use crate::capability::RunningService;
use crate::lab::lock::{LabLock, SUPERVISOR_ROLE};
use crate::lab::state::{unix_millis, LabState, MachineState};
use crate::layout::{Layout, MachineRunDir};
use crate::shell::Shell;
use crate::sys::process::stop_signals;
use crate::vm::supervisor::{MachineSpec, RunningMachine};

/// Runs the supervisor of lab `lab_name` until the lab ends. Call from the main thread before any
/// other thread exists: the signal mask set here is what makes `sigwait` see every signal.
pub fn run_supervisor(paths: &Layout, shell: &Shell, lab_name: &str) -> anyhow::Result<()> {
    let signals = supervisor_signals();
    signals.thread_block().context("blocking signals in the supervisor")?;
    let files = paths.lab(lab_name);
    // Held until this process exits, whichever way.
    let lock = LabLock::inherited(&files)?;
    let plan = files.read_launch_plan()?;
    let started_at = SystemTime::now();
    shell.err(format_args!("supervisor {} of lab `{lab_name}`: starting {} machine(s)", std::process::id(), plan.machines.len()));

    // The capability services first: a capability-checked device maps its service's grant table
    // when QEMU starts. Declared before the machines, they are dropped (sockets removed) after.
    let _services = plan
        .capabilities
        .iter()
        .map(|config| RunningService::start(config).with_context(|| format!("starting the capability service of `{}`", config.backend)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Machines are dropped (killed, reaped, sockets removed) on every way out of this function.
    let mut machines: Vec<RunningMachine> = Vec::new();
    let mut machine_states = Vec::new();
    for planned in &plan.machines {
        let spec = MachineSpec {
            name: planned.host.clone(),
            argv: planned.argv.clone(),
            run_dir: MachineRunDir::new(&planned.run_dir),
        };
        let machine = RunningMachine::spawn(&spec)?;
        let run_dir = machine.run_dir().clone();
        machine_states.push(MachineState {
            host: planned.host.clone(),
            qemu_pid: machine.pid().unwrap_or_default(),
            qemu_binary: planned.argv[0].clone().into(),
            qmp_socket: run_dir.qmp_socket(),
            agent_socket: run_dir.agent_socket(),
            serial_log: run_dir.serial_log(),
            run_dir: run_dir.dir.clone(),
            ssh_port: planned.ssh_port,
            qemu_spawned_at_ms: unix_millis(SystemTime::now()),
        });
        shell.err(format_args!("  {}: QEMU pid {}", planned.host, machine.pid().unwrap_or_default()));
        machines.push(machine);
    }
    let state = LabState {
        plan,
        supervisor_pid: std::process::id(),
        supervisor_program: std::env::current_exe().context("locating the supervisor's executable")?,
        started_at_ms: unix_millis(started_at),
        machines: machine_states,
    };
    files.write_state(&state)?;

    let reason = wait_for_end(shell, &signals, &mut machines, &lock);
    shell.err(format_args!("supervisor {}: {reason}; stopping the lab", std::process::id()));
    for machine in &mut machines {
        machine.kill_and_reap();
    }
    // Only remove the state if it is still ours: `lab up` may already have started a successor.
    if files.read_state_file().ok().flatten().is_some_and(|current| current.supervisor_pid == std::process::id()) {
        files.remove_state_files();
    }
    Ok(())
}

/// The stop signals, SIGCHLD for a QEMU that exits, SIGUSR1 for the hand-over.
fn supervisor_signals() -> SigSet {
    let mut signals = stop_signals();
    signals.add(Signal::SIGCHLD);
    signals.add(Signal::SIGUSR1);
    signals
}

/// Sleeps until a stop signal arrives or a machine exits; says which.
fn wait_for_end(shell: &Shell, signals: &SigSet, machines: &mut [RunningMachine], lock: &LabLock) -> String {
    loop {
        // Check first: a QEMU that died before we started waiting left only a pending SIGCHLD,
        // which is fine, but checking costs nothing and keeps the loop obviously correct.
        for machine in machines.iter_mut() {
            if let Some(status) = machine.try_exit_status() {
                return format!("QEMU of `{}` exited ({status})", machine.spec().name);
            }
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => continue,
            Ok(Signal::SIGUSR1) => {
                // `lab up` saw the lab ready and leaves it to us. If it died before this (its
                // SIGTERM is pending too), the lowest signal comes first: SIGUSR1, then SIGTERM
                // stops the lab, and `lab up` never said it was ready.
                if let Err(error) = nix::sys::prctl::set_pdeathsig(None) {
                    return format!("cannot outlive `lab up` ({error})");
                }
                lock.set_holder(SUPERVISOR_ROLE);
                shell.err(format_args!("supervisor {}: the lab is ready; running detached", std::process::id()));
            }
            Ok(signal) => return format!("received {signal}"),
            Err(error) => return format!("sigwait failed ({error})"),
        }
    }
}
