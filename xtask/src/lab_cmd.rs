//! `cargo xtask lab ...`: bring a lab up, use it, switch its topology, take it down.
//! The work is in `cxl_lab_core::lab`; this module parses, prints and picks exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use cxl_lab_core::lab::state::DEFAULT_LAB;
use cxl_lab_core::model::BootMode;
use cxl_lab_core::stack::StackKind;
use cxl_lab_core::lab::up::{UpOptions, UpReport, DEFAULT_BOOT_TIMEOUT};
use cxl_lab_core::lab::capability as lab_capability;
use cxl_lab_core::lab::{control, process_start_time, supervise, up, LabContext, SupervisorLauncher};
use cxl_lab_core::matrix::plan::{self as matrix_plan, MatrixRequest};
use cxl_lab_core::matrix::run::{self as matrix_run, CellLauncher};
use cxl_lab_core::matrix::{github as matrix_github, report as matrix_report};
use cxl_lab_core::profile::DEFAULT_PROFILE;
use cxl_lab_core::suite::run::{self as suite_run, RunOptions};

use crate::Context;

#[derive(Args)]
pub struct LabArgs {
    /// Which lab: several can run side by side, each with its own state and sockets.
    #[arg(long, global = true, default_value = DEFAULT_LAB, value_parser = lab_name)]
    lab: String,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Args, Clone)]
struct BootArgs {
    /// Start each host's disk over from the base image instead of keeping the guest's changes.
    #[arg(long)]
    fresh_disk: bool,
    /// Seconds to wait for the guest agent to answer; then QEMU is stopped and the error quotes
    /// the serial console's last lines.
    #[arg(long, default_value_t = DEFAULT_BOOT_TIMEOUT.as_secs())]
    boot_timeout: u64,
    /// Extra words for the guest kernel command line (repeatable).
    #[arg(long = "cmdline", value_name = "WORD")]
    extra_cmdline: Vec<String>,
    /// `lean`: the guest agent as soon as the kernel and the CXL modules are (no systemd, no
    /// network, no ssh); `full`: systemd, with ssh. Default: the profile's `boot:` (lean unless it
    /// says full); for `switch`, how the lab booted.
    #[arg(long, value_name = "lean|full")]
    boot: Option<BootMode>,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build what is missing, boot the profile, wait until the guest answers.
    Up {
        #[arg(long, default_value = DEFAULT_PROFILE)]
        profile: String,
        /// Where QEMU, the kernel and the root filesystem come from.
        #[arg(long, default_value = "distro", value_parser = crate::stack_kind_parser())]
        stack: StackKind,
        /// Return once the lab is ready and leave it running in the background.
        #[arg(long)]
        detach: bool,
        /// Start from the saved state of a lean boot of this profile and stack (about a second),
        /// saving it on the first boot; the disks start from the snapshot's.
        #[arg(long)]
        snapshot: bool,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Run suites (`suites/*.yaml`) on a profile: boot it, or reuse the lab already up on it;
    /// write JUnit and JSON; take down what was booted. Exit 0 when no step failed.
    Run {
        #[arg(long, default_value = DEFAULT_PROFILE)]
        profile: String,
        /// Suites by name or path, comma separated (`smoke,topology`).
        #[arg(long, value_delimiter = ',', required = true)]
        suite: Vec<String>,
        #[arg(long, default_value = "distro", value_parser = crate::stack_kind_parser())]
        stack: StackKind,
        /// Where `junit.xml`, `results.json` and the evidence of failures go.
        #[arg(long, default_value = "lab-results")]
        out: PathBuf,
        /// Check the guest against this expected view (`profile expect`'s JSON) instead of the
        /// profile's own.
        #[arg(long, value_name = "JSON")]
        expect: Option<PathBuf>,
        /// Fault injection, to see the `decode` check fail: after the guest tagged a region,
        /// move this granule's tag into another device's backing file before the host checks.
        #[arg(long, value_name = "GRANULE")]
        move_tag: Option<u64>,
        /// Boot the lab the run needs instead of starting it from a snapshot (by default a lab the
        /// run boots is saved once and every suite starts from that snapshot).
        #[arg(long)]
        no_snapshot: bool,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Run suites over profiles × stacks, each (profile, stack) a cell booted once in a lab of
    /// its own (`<lab>-<profile>-<stack>`), cells side by side; per cell its JUnit, JSON and
    /// logs, then `matrix.json` and `index.html`. Exit 0 when every cell passed or skipped.
    Matrix {
        /// A matrix file (`matrices/nightly.yaml`, or a name in `matrices/`) instead of the lists.
        #[arg(conflicts_with_all = ["profile", "stack", "suite"])]
        file: Option<String>,
        /// Profiles, comma separated (default: every shipped profile).
        #[arg(long, value_delimiter = ',')]
        profile: Vec<String>,
        /// Stacks, comma separated (default: distro).
        #[arg(long, value_delimiter = ',')]
        stack: Vec<String>,
        /// Suites, comma separated; every cell runs each of them.
        #[arg(long, value_delimiter = ',', required_unless_present = "file")]
        suite: Vec<String>,
        /// Cells run side by side (default: one per CPU, as many as the free memory holds).
        #[arg(long)]
        jobs: Option<usize>,
        /// Seconds a cell may take (boot, suites, take-down) before it is stopped as an error
        /// (default: the matrix file's `timeout`, else 1800).
        #[arg(long)]
        cell_timeout: Option<u64>,
        /// Where each cell's results and logs, `matrix.json` and `index.html` go.
        #[arg(long, default_value = "matrix-results")]
        out: PathBuf,
        /// What makes the exit code 1: `failure`, a cell that failed or is an error; `error`, only
        /// a cell that did not finish (a crash, a hang, a lost QEMU): failed suites are in the
        /// report.
        #[arg(long, default_value = "failure", value_parser = ["failure", "error"])]
        fail_on: String,
        /// Print a GitHub Actions workflow that runs this matrix nightly, a job per cell, instead
        /// of running it.
        #[arg(long, value_name = "github", value_parser = ["github"])]
        emit: Option<String>,
    },
    /// Show the running lab: profile, accelerator, machines, whether QEMU and the agent answer.
    Status,
    /// Run a command in the guest; its output and exit code become ours.
    Exec {
        #[arg(long)]
        host: Option<String>,
        /// Seconds before the guest command is killed.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Copy a file into or out of the guest: `lab cp FILE guest:/path`, `lab cp guest:/path FILE`.
    Cp { source: String, destination: String },
    /// Print the guest's serial console (read-only); `--follow` keeps printing until the lab stops.
    Console {
        #[arg(long)]
        host: Option<String>,
        #[arg(long, short)]
        follow: bool,
    },
    /// SSH into the guest as root with the lab's key (port forwarded on 127.0.0.1).
    Ssh {
        #[arg(long)]
        host: Option<String>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "SSH_ARGS")]
        arguments: Vec<String>,
    },
    /// Run a QMP command (`lab qmp query-status`, `lab qmp cxl-inject-poison '{...}'`).
    Qmp {
        #[arg(long)]
        host: Option<String>,
        command: String,
        /// The command's arguments as a JSON object.
        arguments: Option<String>,
    },
    /// Shut the lab down and boot the same kernel and root filesystem on another profile.
    Switch {
        profile: String,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Stop the lab: guest disks synced, QEMU ended, sockets and state removed.
    Down,
    /// The lab owner's side of a capability-checked backend (`docs/capability-lab.md`): mint
    /// root tokens, revoke them, list what the devices were granted.
    Cap {
        #[command(subcommand)]
        command: CapCommand,
    },
    /// The process that owns a lab's QEMUs (started by `lab up`).
    #[command(hide = true)]
    Supervise,
}

impl LabArgs {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let lab_context = lab_context(context, &self.lab)?;
        let context = &lab_context;
        match self.command {
            LabCommand::Up { profile, stack, detach, snapshot, boot } => run_up(context, &up_options(profile, stack, detach, snapshot, &boot)),
            LabCommand::Run { profile, suite, stack, out, expect, move_tag, no_snapshot, boot } => {
                let boot = up_options(profile.clone(), stack, true, !no_snapshot, &boot);
                let options = RunOptions { boot, profile, stack, suites: suite, out, expect, move_tag };
                run_suites(context, &options)
            }
            LabCommand::Matrix { file, profile, stack, suite, jobs, cell_timeout, out, fail_on, emit } => {
                let request = MatrixRequest { profiles: profile, stacks: stack, suites: suite, cell_timeout: cell_timeout.map(Duration::from_secs) };
                run_matrix(context, file.as_deref(), &request, jobs, &out, fail_on == "error", emit.is_some())
            }
            LabCommand::Status => print_status(context),
            LabCommand::Exec { host, timeout, command } => run_exec(context, host.as_deref(), &command, timeout),
            LabCommand::Cp { source, destination } => {
                let bytes = control::copy(context, &source, &destination)?;
                context.shell.status("Copied", format!("{source} -> {destination} ({bytes} bytes)"));
                Ok(ExitCode::SUCCESS)
            }
            LabCommand::Console { host, follow } => {
                control::console(context, host.as_deref(), follow, &mut context.shell.stdout())?;
                Ok(ExitCode::SUCCESS)
            }
            LabCommand::Ssh { host, arguments } => run_ssh(context, host.as_deref(), &arguments),
            LabCommand::Qmp { host, command, arguments } => {
                let reply = control::qmp(context, host.as_deref(), &command, arguments.as_deref())?;
                context.shell.out(serde_json::to_string_pretty(&reply)?);
                Ok(ExitCode::SUCCESS)
            }
            LabCommand::Switch { profile, boot } => run_switch(context, &profile, &boot),
            LabCommand::Down => run_down(context),
            LabCommand::Cap { command } => command.run(context),
            LabCommand::Supervise => {
                supervise::run_supervisor(&context.paths, &context.shell, &context.files.name)?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

#[derive(Subcommand)]
pub enum CapCommand {
    /// Mint a root token of the backend: its bytes to --out, its hex on stdout.
    Mint {
        /// The capability backend (needed when the lab has several).
        #[arg(long)]
        backend: Option<String>,
        /// Device addresses (DPA = offset in the backend) as START+LENGTH; default all of it.
        #[arg(long)]
        range: Option<String>,
        /// r, w or rw.
        #[arg(long, default_value = "rw")]
        rights: String,
        /// Bind it to one requester: a host (`host0`), `host/device`, or a requester id.
        #[arg(long)]
        holder: Option<String>,
        /// Expire it after this long (`30s`, `5m`).
        #[arg(long)]
        expires_in: Option<String>,
        /// Write the token's bytes here (what guests present).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a token (a file of its bytes): it and every token narrowed from it stop working,
    /// and the devices' grants of them go at once.
    Revoke {
        #[arg(long)]
        backend: Option<String>,
        token: PathBuf,
    },
    /// The grants the backend's devices hold: requester, range, rights, expiry, token.
    Grants {
        #[arg(long)]
        backend: Option<String>,
    },
}

impl CapCommand {
    fn run(self, context: &LabContext) -> anyhow::Result<ExitCode> {
        match self {
            CapCommand::Mint { backend, range, rights, holder, expires_in, out } => {
                let request = lab_capability::MintRequest { range, rights: Some(rights), holder, expires_in };
                let minted = lab_capability::mint(context, backend.as_deref(), &request)?;
                if let Some(out) = &out {
                    std::fs::write(out, &minted.bytes).with_context(|| format!("writing {}", out.display()))?;
                }
                context.shell.status("Minted", format!("token {} of epoch {} of `{}`, {} bytes{}", minted.token_id, minted.epoch, minted.backend, minted.bytes.len(), out.map(|out| format!(", in {}", out.display())).unwrap_or_default()));
                context.shell.out(minted.bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>());
            }
            CapCommand::Revoke { backend, token } => {
                let bytes = std::fs::read(&token).with_context(|| format!("reading the token {}", token.display()))?;
                context.shell.status("Revoked", lab_capability::revoke(context, backend.as_deref(), &bytes)?);
            }
            CapCommand::Grants { backend } => {
                let (backend, epoch, grants) = lab_capability::grants(context, backend.as_deref())?;
                context.shell.out(format_args!("backend `{backend}`, key epoch {epoch}: {} grants", grants.len()));
                for grant in grants {
                    context.shell.out(format_args!("  {grant}"));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn run_up(context: &LabContext, options: &UpOptions) -> anyhow::Result<ExitCode> {
    let report = up::up(context, options)?;
    if options.detach {
        up::print_how_to_reach(context, &report.state, &report.ssh_private_key);
    }
    print_timings(context, &report);
    Ok(ExitCode::SUCCESS)
}

/// `lab run`: a line per suite and host, the reports, exit code 1 when a step failed.
fn run_suites(context: &LabContext, options: &RunOptions) -> anyhow::Result<ExitCode> {
    let report = suite_run::run(context, options)?;
    for suite in &report.result.suites {
        let counts = suite.counts();
        let verdict = if suite.passed() { "passed" } else { "FAILED" };
        context.shell.out(format_args!(
            "{}/{}: {verdict}: {} passed, {} failed, {} skipped, {} errors ({:.2} s)",
            suite.suite, suite.host, counts.passed, counts.failed, counts.skipped, counts.errors, suite.duration.as_secs_f64()
        ));
        for evidence in &suite.evidence {
            context.shell.out(format_args!("  evidence: {}", evidence.display()));
        }
    }
    for lost in &report.result.lost {
        context.shell.warn(lost);
    }
    let counts = report.result.counts();
    context.shell.status(
        "Timing",
        format!(
            "boot {:.1} s, suites {:.2} s ({} passed, {} failed, {} skipped, {} errors)",
            report.boot_time.as_secs_f64(),
            report.suites_time.as_secs_f64(),
            counts.passed,
            counts.failed,
            counts.skipped,
            counts.errors
        ),
    );
    context.shell.status("Reports", format!("{} {}", report.files.junit.display(), report.files.json.display()));
    Ok(if report.result.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `lab matrix`: a progress line per cell as it ends, the summary table, the reports; exit code
/// 1 when a cell failed or is an error (`--fail-on error`: only an error).
fn run_matrix(context: &LabContext, file: Option<&str>, request: &MatrixRequest, jobs: Option<usize>, out: &Path, fail_on_error_only: bool, emit_github: bool) -> anyhow::Result<ExitCode> {
    let prefix = if context.files.name == DEFAULT_LAB { "matrix" } else { context.files.name.as_str() };
    let mut plan = match file {
        Some(file) => matrix_plan::load(&context.paths, &matrix_plan::matrix_path(&context.paths, file), prefix)?,
        None => matrix_plan::from_request(&context.paths, request, prefix)?,
    };
    for cell in &plan.cells {
        lab_name(&cell.lab).map_err(|why| anyhow::anyhow!("the cell's lab name `{}`: {why}", cell.lab))?;
    }
    if let Some(timeout) = request.cell_timeout {
        plan.cell_timeout = timeout;
    }
    if emit_github {
        context.shell.out(matrix_github::workflow(&plan, file.unwrap_or("the command line")).trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let jobs = jobs.unwrap_or_else(|| matrix_plan::default_jobs(cpus, matrix_plan::available_memory(), &plan.cells)).max(1);
    context.shell.status("Matrix", format!("{} cells × {} suites, {jobs} at a time, results in {}", plan.cells.len(), plan.suites.len(), out.display()));
    let launcher = CellLauncher { program: std::env::current_exe().context("locating this program to run the cells")? };
    let result = matrix_run::run(&context.paths, &context.shell, &launcher, &plan, out, jobs)?;
    for line in matrix_report::summary_table(&result) {
        context.shell.out(line);
    }
    let files = matrix_report::write(out, &result)?;
    context.shell.status("Timing", format!("matrix {:.1} s with {jobs} at a time", result.wall_seconds));
    context.shell.status("Reports", format!("{} {}", files.html.display(), files.json.display()));
    let failing = if fail_on_error_only { !result.finished() } else { !result.passed() };
    Ok(if failing { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `lab status`: exit code 3 when no lab runs.
fn print_status(context: &LabContext) -> anyhow::Result<ExitCode> {
    let Some(status) = control::status(context)? else {
        context.shell.out(format_args!("lab `{}`: not running", context.files.name));
        return Ok(ExitCode::from(3));
    };
    let plan = &status.state.plan;
    context.shell.out(format_args!("lab `{}`: profile `{}` ({}), {} stack", plan.lab, plan.profile, plan.profile_path.display(), plan.boot_stack.stack));
    context.shell.out(format_args!("  accel: {} ({})", plan.accel, plan.accel_reason));
    context.shell.out(format_args!("  boot: {}", plan.boot));
    context.shell.out(format_args!("  kernel: {} ({})", plan.boot_stack.kernel.display(), plan.boot_stack.kernel_release));
    context.shell.out(format_args!("  supervisor: pid {}{}", status.state.supervisor_pid, if plan.detached { ", detached" } else { ", attached" }));
    for machine in &status.machines {
        let vm = match &machine.vm_status {
            Ok(vm) => vm.status.clone(),
            Err(error) => format!("QMP unreachable: {error}"),
        };
        let agent = if machine.agent_answers { "answers" } else { "not answering" };
        let ssh = machine.ssh_port.map(|port| format!(", ssh 127.0.0.1:{port}")).unwrap_or_default();
        context.shell.out(format_args!("  {}: QEMU pid {} ({}), guest agent {agent}{ssh}", machine.host, machine.qemu_pid, vm));
        context.shell.out(format_args!("    run dir: {}", machine.run_dir.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab exec`: the guest command's output and exit code become ours.
fn run_exec(context: &LabContext, host: Option<&str>, command: &[String], timeout: u64) -> anyhow::Result<ExitCode> {
    let output = control::exec(context, host, command, Duration::from_secs(timeout))?;
    context.shell.out_bytes(&output.stdout)?;
    context.shell.err_bytes(&output.stderr)?;
    if output.output_truncated {
        context.shell.warn("the guest agent cut the command's output short (it keeps at most 16 MiB)");
    }
    Ok(ExitCode::from(control::exit_code_of(&output).clamp(0, 255) as u8))
}

fn run_ssh(context: &LabContext, host: Option<&str>, arguments: &[String]) -> anyhow::Result<ExitCode> {
    let mut command = control::ssh_command(context, host, arguments)?;
    context.shell.verbose(format!("$ {}", cxl_lab_core::sys::runner::display_command(&command)));
    // Interactive: hand the terminal to ssh by becoming it.
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    Err(anyhow::anyhow!("cannot run ssh: {error}"))
}

fn run_switch(context: &LabContext, profile: &str, boot: &BootArgs) -> anyhow::Result<ExitCode> {
    let options = up_options(profile.to_owned(), StackKind::Distro, true, false, boot);
    let (down_report, report) = up::switch(context, profile, &options)?;
    context.shell.status("Switched", format!("lab `{}`: `{}` -> `{profile}`", context.files.name, down_report.profile));
    up::print_how_to_reach(context, &report.state, &report.ssh_private_key);
    print_timings(context, &report);
    Ok(ExitCode::SUCCESS)
}

fn run_down(context: &LabContext) -> anyhow::Result<ExitCode> {
    let report = control::down(context)?;
    if !report.killed.is_empty() {
        context.shell.warn(format!("had to kill QEMU of {}", report.killed.join(", ")));
    }
    context.shell.status("Stopped", format!("lab `{}` (profile `{}`)", context.files.name, report.profile));
    Ok(ExitCode::SUCCESS)
}

/// A lab's name names its state directory: a plain word, never a path.
fn lab_name(text: &str) -> Result<String, String> {
    let plain = (1..=32).contains(&text.len())
        && !text.starts_with(['.', '-'])
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain { Ok(text.to_owned()) } else { Err("1 to 32 letters, digits, `-`, `_` or `.`, not starting with `.` or `-`".to_owned()) }
}

/// The context of lab commands on lab `lab_name`; the supervisor is this program's hidden
/// `lab supervise`.
pub fn lab_context(context: &Context, lab_name: &str) -> anyhow::Result<LabContext> {
    let invocation_started = process_start_time();
    let program = std::env::current_exe().context("locating this program to start the lab supervisor")?;
    Ok(LabContext {
        paths: context.paths.clone(),
        shell: context.shell.clone(),
        files: context.paths.lab(lab_name),
        supervisor_launcher: SupervisorLauncher {
            program,
            arguments: vec!["lab".into(), "--lab".into(), lab_name.to_owned(), "supervise".into()],
        },
        invocation_started,
    })
}

fn up_options(profile: String, stack: StackKind, detach: bool, snapshot: bool, boot: &BootArgs) -> UpOptions {
    UpOptions {
        profile,
        stack,
        detach,
        snapshot,
        fresh_disk: boot.fresh_disk,
        boot_timeout: Duration::from_secs(boot.boot_timeout),
        extra_cmdline: boot.extra_cmdline.clone(),
        boot: boot.boot,
    }
}

fn print_timings(context: &LabContext, report: &UpReport) {
    let stages: Vec<String> =
        report.stages.iter().map(|(name, took)| format!("{name} {:.2} s", took.as_secs_f64())).collect();
    context.shell.verbose(format!("stages: {}", stages.join(", ")));
    context.shell.status(
        "Timing",
        format!(
            "tool {:.2} s before QEMU started, boot to guest agent {:.1} s",
            report.tool_time_before_qemu.as_secs_f64(),
            report.boot_to_ready.as_secs_f64()
        ),
    );
}
