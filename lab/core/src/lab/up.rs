//! `lab up` and `lab switch`: from a profile to a lab whose guests answer.
//!
//! The stages, in order: take the lab's lock ([`crate::lab::lock`]; refuse at once, naming the
//! holder, if another command has the lab) and remove a dead run's stale state; load the profile;
//! ensure the stack (QEMU, kernel, root filesystem); the lab's secrets; the accelerator (probed,
//! cached per host boot); whether the QEMU has the lab's capability device, when the profile has
//! a capability backend (a warning when not: the devices run unchecked); the boot (`--boot`,
//! else the profile's `boot:`); for a full boot a free 127.0.0.1 port for SSH per host; the plan ([`crate::lab::plan`],
//! pure: each host's argv and the launch plan); one qcow2 overlay of the base image per host and
//! the memory backend files; then the supervisor process starts QEMU, and this process waits for
//! each guest agent (at most `--boot-timeout`), sets the root password and SSH key through it on a
//! full boot (a lean guest runs nothing that logs in),
//! and says how to reach the lab.
//!
//! Nothing outlives a `lab up` that fails or is killed before the lab is ready: build steps die
//! with it ([`crate::sys::runner`]), and the supervisor, which holds the lab's lock with it, gets SIGTERM from
//! the kernel when it dies and stops the lab. A detached lab's supervisor is released from that
//! only once every guest answered ([`hand_over`]).
//!
//! `lab switch` shuts the lab down and runs the same stages with the *same* stack (no resolution,
//! no download: the kernel and root filesystem the lab ran) and the same overlays, so the files a
//! user made in the guest survive a change of topology; `--fresh-disk` starts from the base image.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use fs_err as fs;
use nix::sys::signal::Signal;

use crate::lab::control::{down, DownReport};
use crate::lab::lock::{LabLock, LabLockError, SUPERVISOR_ROLE};
use crate::lab::plan::{accel_request, plan_lab, unchecked_capabilities_note, LabPlan, PlanRequest};
use crate::lab::secrets::LabSecrets;
use crate::lab::snapshot::{self, Snapshots};
use crate::lab::state::{unix_millis, LabState, LaunchPlan};
use crate::layout::LabLayout;
use crate::lab::LabContext;
use crate::model::{BootMode, Topology};
use crate::profile::Profile;
use crate::stack::{BootStack, StackKind};
use crate::sys::process::{die_with_parent, pending_stop_signal, signal_process, stop_signals, wait_until_gone};
use crate::sys::runner::{tail_of, CommandRunner};
use crate::vm::accel::{resolve_accel, AccelDecision};
use crate::vm::backing::prepare_backend_files;
use crate::vm::device_help::has_capability_device;
use crate::vm::disks::ensure_overlay;
use crate::vm::error::SupervisorError;

/// How long a guest may take from QEMU's start to its agent's first answer. A Debian guest under
/// TCG needs 15–30 s here; the margin is for loaded CI runners.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the supervisor may take to start QEMU and write `lab.json`.
const SUPERVISOR_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct UpOptions {
    pub profile: String,
    pub stack: StackKind,
    /// Leave the lab running in the background and return once it is ready.
    pub detach: bool,
    /// Start each host's disk over from the base image.
    pub fresh_disk: bool,
    pub boot_timeout: Duration,
    /// Extra words for the guest kernel command line.
    pub extra_cmdline: Vec<String>,
    /// How the guests boot; `None`: as the profile says (`boot:`, lean by default), and for
    /// `lab switch` as the running lab booted.
    pub boot: Option<BootMode>,
    /// Start from the snapshot of this profile, stack and command line, taking it on the first
    /// boot ([`crate::lab::snapshot`]); the disks start over from it (or from the base image).
    pub snapshot: bool,
}

/// What a successful `lab up` measured, for the user and for the benchmark.
#[derive(Clone, Debug)]
pub struct UpReport {
    pub state: LabState,
    /// Seconds per stage of this process, in order.
    pub stages: Vec<(String, Duration)>,
    /// From the start of the command to the first QEMU spawn: the tool's own cost.
    pub tool_time_before_qemu: Duration,
    /// From the first QEMU spawn until every guest agent answered.
    pub boot_to_ready: Duration,
    /// The key `lab ssh` uses.
    pub ssh_private_key: PathBuf,
    /// Whether every machine now has a snapshot (restored from one, or saved after booting): a
    /// `lab up --snapshot` of the same lab would restore.
    pub snapshot_ready: bool,
}

/// Brings a lab up (or fails with the step, the last lines and the log).
pub fn up(context: &LabContext, options: &UpOptions) -> anyhow::Result<UpReport> {
    let files = &context.files;
    // First of all, so a second `lab up` refuses at once and touches nothing of the first's.
    let lock = lock_lab(context, "lab up", Duration::ZERO)?;
    // Under the lock a state file can only be stale (a live supervisor holds the lock), unless a
    // supervisor that predates the lock runs it: refuse that too.
    if let Some(state) = files.read_state_file()? {
        if state.supervisor_runs() {
            bail!(already_running(context, &state));
        }
        files.clean_stale(&state);
    }
    let mut stages = StageClock::default();
    let profile = crate::profile::load(&context.paths, &options.profile)?;
    stages.lap("profile");
    let boot_stack = crate::stack::ensure_boot_stack(&context.paths, &context.shell, options.stack, &Default::default())?;
    stages.lap("stack");
    start_lab(context, &lock, &options.profile, &profile, boot_stack, options, stages)
}

/// Shuts the lab down and boots the same stack and disks on another profile's topology.
pub fn switch(context: &LabContext, profile_name: &str, options: &UpOptions) -> anyhow::Result<(DownReport, UpReport)> {
    let running = context.files.require_running()?;
    let mut stages = StageClock::default();
    // Load the new profile before stopping anything: a typo must not cost the running lab.
    let profile = crate::profile::load(&context.paths, profile_name)?;
    stages.lap("profile");
    let down_report = down(context)?;
    stages.lap("down");
    // The stopped supervisor (and an attached `lab up` waiting on it) release the lock as they exit.
    let lock = lock_lab(context, "lab switch", Duration::from_secs(10))?;
    let boot = options.boot.or(Some(running.plan.boot));
    let options = UpOptions { profile: profile_name.to_owned(), detach: true, boot, ..options.clone() };
    let up_report = start_lab(context, &lock, profile_name, &profile, running.plan.boot_stack, &options, stages)?;
    Ok((down_report, up_report))
}

/// Takes the lab's lock, or says who has the lab: its running supervisor, or the command that is
/// bringing it up.
fn lock_lab(context: &LabContext, role: &str, patience: Duration) -> anyhow::Result<LabLock> {
    let files = &context.files;
    match LabLock::acquire_within(files, role, patience) {
        Ok(lock) => Ok(lock),
        Err(LabLockError::Busy { holder, path, .. }) => {
            let live = files.read_state_file().ok().flatten().filter(LabState::supervisor_runs);
            match live {
                Some(state) if holder.role == "supervisor" => bail!(already_running(context, &state)),
                _ => bail!(
                    "lab `{}` is busy: {holder} is bringing it up ({}); wait for it, or stop it with `cargo xtask lab{} down`",
                    files.name,
                    path.display(),
                    context.lab_flag()
                ),
            }
        }
        Err(error) => Err(error.into()),
    }
}

fn already_running(context: &LabContext, state: &LabState) -> String {
    format!(
        "lab `{}` is already running (profile `{}`, supervisor pid {}); use `cargo xtask lab{flag} switch PROFILE` or `cargo xtask lab{flag} down` first",
        context.files.name,
        state.plan.profile,
        state.supervisor_pid,
        flag = context.lab_flag()
    )
}

/// The stages after the stack: secrets, accelerator, ports, plan, disks, then [`launch`].
fn start_lab(
    context: &LabContext,
    lock: &LabLock,
    profile_name: &str,
    profile: &Profile,
    boot_stack: BootStack,
    options: &UpOptions,
    mut stages: StageClock,
) -> anyhow::Result<UpReport> {
    let files = &context.files;
    crate::render::warn_unchecked_arguments(&context.shell, &profile.topology);
    let secrets = crate::lab::secrets::ensure_lab_secrets(files)?;
    stages.lap("secrets");
    let accel = decide_accel(context, &profile.topology, &boot_stack)?;
    stages.lap("accel");
    let capability_device = decide_capability_device(context, &profile.topology, &boot_stack)?;

    let boot = options.boot.unwrap_or(profile.topology.boot);
    // Only a full boot runs sshd.
    let ssh_hosts = if boot == BootMode::Full { profile.topology.hosts.len() } else { 0 };
    let ssh_ports = (0..ssh_hosts).map(|_| free_local_port()).collect::<anyhow::Result<Vec<u16>>>()?;
    let mut plan = plan_lab(&PlanRequest {
        files,
        profile_name,
        profile,
        boot_stack: &boot_stack,
        accel: &accel,
        boot,
        ssh_ports: &ssh_ports,
        detach: options.detach,
        extra_cmdline: &options.extra_cmdline,
        capability_device,
    })?;
    let snapshots = if options.snapshot { snapshot::decide(context, &plan, boot)? } else { Snapshots::Off };
    // A snapshot is of a fresh disk, and a restored machine's disk is the snapshot's.
    prepare_disks(files, &plan, options.fresh_disk || snapshots != Snapshots::Off)?;
    if let Snapshots::Restore(found) = &snapshots {
        snapshot::start_from(&mut plan, found)?;
    }
    stages.lap("disks and render");
    files.write_launch_plan(&plan.launch)?;
    launch(context, lock, &plan.launch, &secrets, options, &snapshots, stages)
}

/// The accelerator the lab runs with (the KVM probe is cached per host boot), said to the user.
fn decide_accel(context: &LabContext, topology: &Topology, boot_stack: &BootStack) -> anyhow::Result<AccelDecision> {
    let (requested, online_as_ram) = accel_request(topology)?;
    let decision = resolve_accel(requested, online_as_ram, &boot_stack.qemu_binary, &context.paths.kvm_probe_dir());
    context.shell.status("Accel", format!("{} ({})", decision.accel, decision.reason));
    Ok(decision)
}

/// Whether the profile's capability backends are checked: only when it has one is QEMU asked
/// whether it has the lab's capability device; a QEMU without it (stock) is a warning, and the
/// devices run unchecked.
fn decide_capability_device(context: &LabContext, topology: &Topology, boot_stack: &BootStack) -> anyhow::Result<bool> {
    let Some(unchecked) = unchecked_capabilities_note(topology, boot_stack) else { return Ok(false) };
    let runner = CommandRunner::new(context.files.logs_dir());
    let has_device = has_capability_device(&runner, &boot_stack.qemu_binary)?;
    if !has_device {
        context.shell.warn(unchecked);
    }
    Ok(has_device)
}

/// The files the plan's machines boot from: each host's overlay and the memory backend files.
fn prepare_disks(files: &LabLayout, plan: &LabPlan, fresh_disk: bool) -> anyhow::Result<()> {
    let runner = CommandRunner::new(files.logs_dir());
    let stack = &plan.launch.boot_stack;
    fs::create_dir_all(files.data_dir())?;
    for machine in &plan.launch.machines {
        ensure_overlay(&runner, &stack.qemu_binary, &stack.rootfs_image, &machine.overlay, fresh_disk)?;
    }
    prepare_backend_files(&plan.backend_files)
}

/// Starts the supervisor on the written launch plan and waits until every guest is ready and
/// configured; a detached lab is then handed over, an attached one waited for until it stops.
fn launch(
    context: &LabContext,
    lock: &LabLock,
    plan: &LaunchPlan,
    secrets: &LabSecrets,
    options: &UpOptions,
    snapshots: &Snapshots,
    mut stages: StageClock,
) -> anyhow::Result<UpReport> {
    let files = &context.files;
    let boot_step = context.shell.step(&format!("boot lab `{}` ({}, {} boot, {})", files.name, plan.profile, plan.boot, plan.accel));
    // From here Ctrl-C must not leave a half-started lab behind: hold the stop signals and check
    // for them while waiting, then stop the supervisor. (Not earlier: the stack's long-running
    // builders must stay interruptible, and they would inherit the mask.)
    stop_signals().thread_block().context("blocking stop signals while the lab starts")?;
    let mut supervisor = spawn_supervisor(context, lock, options.detach)?;
    let state = match wait_for_state(files, &mut supervisor) {
        Ok(state) => state,
        Err(error) => {
            stop_supervisor(files, &mut supervisor);
            return Err(error);
        }
    };
    let first_spawn_ms = state.machines.iter().map(|machine| machine.qemu_spawned_at_ms).min().unwrap_or_default();
    let tool_time_before_qemu =
        Duration::from_millis(first_spawn_ms.saturating_sub(unix_millis(context.invocation_started)));
    stages.lap("supervisor");

    // From here on, an error stops the lab: a half-started lab is worse than none.
    // A detached lab is handed over to its supervisor only once ready: until then the supervisor
    // dies with this process (and stops the lab), so a `lab up` killed during boot leaves nothing.
    let mut snapshot_ready = !matches!(snapshots, Snapshots::Off);
    let ready = wait_until_ready_and_configure(context, plan, &state, &mut supervisor, secrets, options.boot_timeout, snapshots, &mut snapshot_ready, &boot_step)
        .and_then(|()| if options.detach { hand_over(files, &mut supervisor) } else { Ok(()) });
    if let Err(error) = ready {
        stop_supervisor(files, &mut supervisor);
        return Err(error);
    }
    let boot_to_ready = Duration::from_millis(unix_millis(SystemTime::now()).saturating_sub(first_spawn_ms));
    boot_step.done(format!("guest agent answered {:.1} s after QEMU started", boot_to_ready.as_secs_f64()));
    stages.lap("boot");
    if !options.detach {
        run_attached(context, &state, &mut supervisor, &secrets.ssh_private_key)?;
    }
    Ok(UpReport { state, stages: stages.stages, tool_time_before_qemu, boot_to_ready, ssh_private_key: secrets.ssh_private_key.clone(), snapshot_ready })
}

/// Attached: the supervisor is our child in our process group, so Ctrl-C reaches it and it stops
/// the lab; we (stop signals still held) wait for that, then report.
fn run_attached(context: &LabContext, state: &LabState, supervisor: &mut Child, ssh_key: &Path) -> anyhow::Result<()> {
    print_how_to_reach(context, state, ssh_key);
    context.shell.status("Running", "attached; Ctrl-C stops the lab");
    let status = supervisor.wait().context("waiting for the lab supervisor")?;
    context.shell.status("Stopped", format!("lab `{}` ({status})", context.files.name));
    Ok(())
}

/// Tells the user how to use a ready lab.
pub fn print_how_to_reach(context: &LabContext, state: &LabState, ssh_key: &Path) {
    let shell = &context.shell;
    let lab_flag = context.lab_flag();
    shell.status(
        "Ready",
        format!(
            "lab `{}`: profile `{}`, {} stack, {} boot, {}, {} host(s)",
            context.files.name,
            state.plan.profile,
            state.plan.boot_stack.stack,
            state.plan.boot,
            state.plan.accel,
            state.machines.len()
        ),
    );
    for machine in &state.machines {
        let ssh = machine.ssh_port.map(|port| format!(", ssh 127.0.0.1:{port} (key {})", ssh_key.display())).unwrap_or_default();
        shell.status("Host", format!("{}: QEMU pid {}{ssh}", machine.host, machine.qemu_pid));
    }
    shell.status("Try", format!("cargo xtask lab{lab_flag} exec -- cxl list -M"));
    match state.plan.boot {
        BootMode::Full => shell.status("", format!("cargo xtask lab{lab_flag} ssh | qmp query-status | console --follow | down")),
        BootMode::Lean => shell.status("", format!("cargo xtask lab{lab_flag} qmp query-status | console --follow | down (a lean boot has no ssh: `--boot full`)")),
    }
}

/// A TCP port free on 127.0.0.1 right now. QEMU binds it moments later; if something else takes
/// it in between, QEMU fails to start and says so in its log.
fn free_local_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `<tool> lab supervise` for this lab, holding the lab's lock with us and dying with us
/// (SIGTERM: it stops the lab): attached, as our child for the lab's whole life; detached, in a
/// new session (so a closed terminal does not reach it) until [`hand_over`] lets it outlive us.
fn spawn_supervisor(context: &LabContext, lock: &LabLock, detach: bool) -> anyhow::Result<Child> {
    let files = &context.files;
    fs::create_dir_all(files.logs_dir())?;
    let log = fs::OpenOptions::new().create(true).append(true).open(files.supervisor_log())?.into_parts().0;
    let mut command = Command::new(&context.supervisor_launcher.program);
    command
        .args(&context.supervisor_launcher.arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    if detach {
        // SAFETY: setsid is async-signal-safe and the closure allocates nothing.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                nix::unistd::setsid().map(drop).map_err(std::io::Error::from)
            });
        }
    }
    die_with_parent(&mut command, Signal::SIGTERM);
    lock.inherit_by(&mut command);
    command.spawn().with_context(|| {
        format!("starting the lab supervisor `{}`", crate::sys::runner::display_command(&command))
    })
}

/// Lets a detached lab's supervisor outlive this command: SIGUSR1 tells it to drop its
/// parent-death signal, and it answers by naming itself the lab's holder in the lock file.
fn hand_over(files: &LabLayout, supervisor: &mut Child) -> anyhow::Result<()> {
    signal_process(supervisor.id(), Signal::SIGUSR1);
    let deadline = Instant::now() + SUPERVISOR_START_TIMEOUT;
    loop {
        let holder = LabLock::holder(files);
        if holder.pid == Some(supervisor.id()) && holder.role == SUPERVISOR_ROLE {
            return Ok(());
        }
        if let Some(status) = supervisor.try_wait()? {
            bail!("the lab supervisor exited ({status}) as the lab was handed over to it\n  log: {}", files.supervisor_log().display());
        }
        if Instant::now() >= deadline {
            bail!("the lab supervisor did not take the lab over within {SUPERVISOR_START_TIMEOUT:?}\n  log: {}", files.supervisor_log().display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops a supervisor that still dies with us: SIGTERM (it kills its QEMUs and removes the lab's
/// state), SIGKILL if it does not end; then removes what a killed one left (we hold the lock).
fn stop_supervisor(files: &LabLayout, supervisor: &mut Child) {
    signal_process(supervisor.id(), Signal::SIGTERM);
    if !wait_until_gone(Duration::from_secs(10), || matches!(supervisor.try_wait(), Ok(None))) {
        let _ = supervisor.kill();
    }
    let _ = supervisor.wait();
    if let Ok(Some(state)) = files.read_state_file() {
        files.clean_stale(&state);
    }
}

/// Waits for the supervisor to write `lab.json` (its QEMUs are then spawned).
fn wait_for_state(files: &LabLayout, supervisor: &mut Child) -> anyhow::Result<LabState> {
    let deadline = Instant::now() + SUPERVISOR_START_TIMEOUT;
    loop {
        if let Some(signal) = pending_stop_signal() {
            bail!("interrupted by {signal} while the lab supervisor started");
        }
        if let Some(status) = supervisor.try_wait()? {
            bail!(
                "the lab supervisor exited ({status}) before its machines started\n{}\n  log: {}",
                tail_of(&files.supervisor_log()),
                files.supervisor_log().display()
            );
        }
        if let Some(state) = files.read_state_file()? {
            if state.supervisor_pid == supervisor.id() {
                return Ok(state);
            }
        }
        if Instant::now() >= deadline {
            bail!("the lab supervisor did not start its machines within {SUPERVISOR_START_TIMEOUT:?}\n  log: {}", files.supervisor_log().display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for every guest agent (a restored machine resumed first), saves or finishes a snapshot,
/// then, on a full boot, sets root's password and SSH key through the agent. A snapshot that cannot be saved is a
/// warning and `snapshot_ready` false: the lab runs as booted.
#[allow(clippy::too_many_arguments)]
fn wait_until_ready_and_configure(
    context: &LabContext,
    plan: &LaunchPlan,
    state: &LabState,
    supervisor: &mut Child,
    secrets: &LabSecrets,
    timeout: Duration,
    snapshots: &Snapshots,
    snapshot_ready: &mut bool,
    progress: &crate::shell::StepProgress,
) -> anyhow::Result<()> {
    for (index, machine) in state.machines.iter().enumerate() {
        let planned = plan.machines.iter().find(|planned| planned.host == machine.host).context("a machine the plan does not name")?;
        if let Snapshots::Restore(_) = snapshots {
            progress.set_message(format!("loading the snapshot of `{}`", machine.host));
            snapshot::resume_restored(machine)?;
        }
        progress.set_message(format!("waiting for the guest agent of `{}`", machine.host));
        let qemu = machine.process();
        // QEMU is the supervisor's child: it is alive while the supervisor and its process run.
        let check_alive = || -> Result<(), SupervisorError> {
            if let Some(signal) = pending_stop_signal() {
                return Err(SupervisorError::Interrupted { signal: signal.to_string() });
            }
            let supervisor_status = supervisor.try_wait().ok().flatten();
            if supervisor_status.is_some() || !qemu.runs() {
                let status = supervisor_status.map(|status| format!("its supervisor ended ({status})")).unwrap_or_else(|| "its process is gone".to_owned());
                return Err(qemu.exited_error(&status, "during boot"));
            }
            Ok(())
        };
        let mut agent = qemu.wait_for_agent(timeout, check_alive)?;
        match snapshots {
            Snapshots::Restore(_) => snapshot::finish_restore(machine, &mut agent)?,
            Snapshots::Take(keys) => {
                progress.set_message(format!("saving a snapshot of `{}`", machine.host));
                if let Err(error) = snapshot::take(context, &keys[index], planned, machine, &plan.boot_stack, &mut agent) {
                    context.shell.warn(format!("no snapshot of `{}`: {error:#}; the lab runs as booted", machine.host));
                    *snapshot_ready = false;
                }
            }
            Snapshots::Off => {}
        }
        // A lean guest runs nothing that logs in (no sshd, no getty): its root stays locked, and
        // its boot does not wait for `chpasswd`.
        if plan.boot == BootMode::Full {
            progress.set_message(format!("setting root's password and SSH key on `{}`", machine.host));
            agent.set_user_password("root", &secrets.root_password).context("setting root's password through the guest agent")?;
            agent
                .add_ssh_authorized_keys("root", std::slice::from_ref(&secrets.ssh_public_key))
                .context("adding the lab's SSH key through the guest agent")?;
        }
        // The agent channel takes one client at a time: let go so `lab exec` can connect.
        drop(agent);
    }
    Ok(())
}

/// Times consecutive stages of one command.
#[derive(Debug)]
struct StageClock {
    last: Instant,
    stages: Vec<(String, Duration)>,
}

impl Default for StageClock {
    fn default() -> StageClock {
        StageClock { last: Instant::now(), stages: Vec::new() }
    }
}

impl StageClock {
    fn lap(&mut self, name: &str) {
        let now = Instant::now();
        self.stages.push((name.to_owned(), now - self.last));
        self.last = now;
    }
}
