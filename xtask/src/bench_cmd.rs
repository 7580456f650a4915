//! `cargo xtask bench lab` and `bench boot`: time the lab on a warm cache and print Markdown
//! tables for `docs/BENCHMARKS.md`.
//!
//! `bench lab`, each run, in this order and in the same process tree:
//! - warm `lab up --detach --boot lean` of the seed profile, run as its own process like a user's:
//!   the tool's own time from the process's start to QEMU's spawn (from `lab.json`), and QEMU's
//!   spawn to the guest agent's first answer (the command's end, minus nothing: setting the
//!   password and key takes milliseconds); then `lab exec -- cxl list -M`, and the wall time of
//!   the two together (what a user waits for a first answer); `lab down`;
//! - the same with `--boot full` (systemd);
//! - the same kernel and initramfs on the same topology with `cxllab.bare=1` (the initramfs
//!   prints a marker and powers off): QEMU's spawn to the marker on the serial console;
//! - `lab switch switch` (a full boot, as the lab was), wall clock, then `lab down`.
//!
//! `bench boot`, each run: the lean `lab up` + `cxl list -M` above, and virtme-ng booting the
//! same kernel on the same QEMU with the profile's CXL machine and running `cxl list -M` in its
//! guest (`lab::virtme`), wall clock to the command having run, in alternating order; both
//! listings must show the same memory devices, at least one; then the bare initramfs boot.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use cxl_lab_core::lab::bench::bare_initramfs_boot;
use cxl_lab_core::lab::state::unix_millis;
use cxl_lab_core::lab::virtme::{memdevs_listed, VirtmeBoot, VIRTME_NG_VERSION};
use cxl_lab_core::layout::LabLayout;
use cxl_lab_core::profile::DEFAULT_PROFILE;
use cxl_lab_core::stack::{BootStack, StackKind};
use cxl_lab_core::sys::runner::CommandRunner;
use cxl_lab_core::Shell;

use crate::Context;

/// The labs the benchmarks boot; separate from the user's labs and from each other.
const BENCH_LAB: &str = "bench";
const BENCH_BOOT_LAB: &str = "bench-boot";
const BENCH_SNAPSHOT_LAB: &str = "bench-snap";
const BENCH_CAPABILITY_LAB: &str = "bench-cap";
const BENCH_UNCHECKED_LAB: &str = "bench-cap-off";
/// How many grants the capability-checked device holds in each measurement.
const GRANT_COUNTS: [usize; 4] = [1, 10, 1_000, 10_000];
/// Bytes read through the DAX device per measurement (2 Mi loads of 8 bytes).
const READ_BYTES: u64 = 16 << 20;

/// What both sides run first in `bench boot`.
const FIRST_COMMAND: &str = "cxl list -M";

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Warm `lab up` lean and full (tool time, boot to guest agent), bare-initramfs boot, `lab switch`.
    Lab {
        /// How many times to run the whole sequence.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Lean `lab up` + `cxl list -M` against virtme-ng on the same kernel, QEMU and CXL topology;
    /// lean boot against the bare initramfs.
    Boot {
        /// How many times to run the whole sequence.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The profile whose topology (its first host) both boot.
        #[arg(long, default_value = DEFAULT_PROFILE)]
        profile: String,
    },
    /// Guest reads through a capability-checked device against the same device unchecked, the
    /// present-to-granted latency through the mailbox, and reads with 10, 1,000 and 10,000
    /// grants installed (`docs/capability-lab.md`; the source stack's QEMU, on `shared`).
    Capability {
        /// How many times to read 16 MiB in each configuration.
        #[arg(long, default_value_t = 11)]
        runs: usize,
    },
    /// `lab up --snapshot` restoring a saved lean boot, against the lean boot it saves; each with
    /// `cxl list -M` (`docs/snapshots.md`).
    Snapshot {
        /// How many times to run the whole sequence.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value = DEFAULT_PROFILE)]
        profile: String,
        /// The stack whose QEMU saves the CXL devices' state: the source stack's.
        #[arg(long, default_value = "source", value_parser = crate::stack_kind_parser())]
        stack: StackKind,
    },
}

impl BenchCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        if let BenchCommand::Lab { runs: 0 } | BenchCommand::Boot { runs: 0, .. } | BenchCommand::Snapshot { runs: 0, .. } | BenchCommand::Capability { runs: 0 } = self {
            bail!("--runs must be at least 1");
        }
        match self {
            BenchCommand::Lab { runs } => bench_lab(context, runs),
            BenchCommand::Boot { runs, profile } => bench_boot(context, runs, &profile),
            BenchCommand::Snapshot { runs, profile, stack } => bench_snapshot(context, runs, &profile, stack),
            BenchCommand::Capability { runs } => bench_capability(context, runs),
        }
    }
}

/// A lab the benchmarks drive as a user does: this tool run as its own process for each command.
struct BenchLab {
    program: PathBuf,
    files: LabLayout,
    runner: CommandRunner,
}

/// What one timed `lab up` measured.
struct UpTimes {
    tool_before_qemu: Duration,
    boot_to_agent: Duration,
    /// `lab up` and then `lab exec -- cxl list -M`, wall clock.
    up_and_list: Duration,
    /// What `cxl list -M` printed.
    listing: String,
}

impl BenchLab {
    /// The lab `name`, taken down first if a run before left it up.
    fn new(context: &Context, name: &str) -> anyhow::Result<BenchLab> {
        let files = context.paths.lab(name);
        let runner = CommandRunner::new(files.logs_dir().join("bench"));
        let lab = BenchLab { program: std::env::current_exe()?, files, runner };
        if lab.files.read_live_state()?.is_some() {
            lab.run("bench: down a leftover lab", &["down"])?;
        }
        Ok(lab)
    }

    fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(["lab", "--lab", &self.files.name]).args(arguments);
        command
    }

    fn run(&self, step: &str, arguments: &[&str]) -> anyhow::Result<()> {
        Ok(self.runner.run(step, &mut self.command(arguments))?)
    }

    /// `lab up --detach <arguments>`, then `lab exec -- cxl list -M`; the lab stays up. `what`
    /// names the runs in the logs.
    fn timed_up(&self, what: &str, arguments: &[&str]) -> anyhow::Result<UpTimes> {
        let before_up = SystemTime::now();
        let up_started = Instant::now();
        self.run(&format!("bench: lab up ({what})"), &[&["up", "--detach"][..], arguments].concat())?;
        let up_wall = up_started.elapsed();
        let listing = self.runner.run_capture(&format!("bench: cxl list -M ({what})"), &mut self.command(&["exec", "--", "cxl", "list", "-M"]))?;
        let up_and_list = up_started.elapsed();
        let state = self.files.read_state_file()?.context("`lab up` left no lab.json")?;
        let spawned = state.machines.iter().map(|machine| machine.qemu_spawned_at_ms).min().unwrap_or_default();
        let tool_before_qemu = Duration::from_millis(spawned.saturating_sub(unix_millis(before_up)));
        Ok(UpTimes { tool_before_qemu, boot_to_agent: up_wall.saturating_sub(tool_before_qemu), up_and_list, listing })
    }
}

/// The distro stack the benchmarks boot, from the cache (warmed by a first `lab up`).
fn distro_stack(context: &Context) -> anyhow::Result<BootStack> {
    cxl_lab_core::stack::ensure_boot_stack(&context.paths, &context.shell, StackKind::Distro, &Default::default())
}

struct LabRun {
    tool_before_qemu: Duration,
    lean_boot: Duration,
    lean_up_and_list: Duration,
    full_boot: Duration,
    bare_boot: Duration,
    switch: Duration,
}

fn bench_lab(context: &Context, runs: usize) -> anyhow::Result<ExitCode> {
    let lab = BenchLab::new(context, BENCH_LAB)?;
    // Warm the cache (and the accelerator probe) once, untimed; full, so that the disk's
    // first-boot work (the SSH host key) is done before anything is timed.
    context.shell.status("Warming", "stack and accelerator probe (first `lab up`)");
    lab.run("bench: warm-up lab up", &["up", "--detach", "--boot", "full"])?;
    lab.run("bench: warm-up lab down", &["down"])?;
    let stack = distro_stack(context)?;

    let mut results = Vec::new();
    for run in 1..=runs {
        context.shell.status("Run", format!("{run} of {runs}"));
        let lean = lab.timed_up("lean", &["--boot", "lean"])?;
        lab.run("bench: lab down (lean)", &["down"])?;
        let full = lab.timed_up("full", &["--boot", "full"])?;

        let bare_boot = bare_initramfs_boot(&context.paths, &lab.runner, &stack, DEFAULT_PROFILE, &lab.files)?;

        let switch_started = Instant::now();
        lab.run("bench: lab switch", &["switch", "switch"])?;
        let switch = switch_started.elapsed();
        lab.run("bench: lab down", &["down"])?;
        context.shell.status(
            "Measured",
            format!(
                "tool {:.3} s, lean boot to agent {:.1} s (with cxl list {:.1} s), full {:.1} s, bare initramfs {:.1} s, switch {:.1} s",
                lean.tool_before_qemu.as_secs_f64(),
                lean.boot_to_agent.as_secs_f64(),
                lean.up_and_list.as_secs_f64(),
                full.boot_to_agent.as_secs_f64(),
                bare_boot.as_secs_f64(),
                switch.as_secs_f64()
            ),
        );
        results.push(LabRun {
            tool_before_qemu: lean.tool_before_qemu,
            lean_boot: lean.boot_to_agent,
            lean_up_and_list: lean.up_and_list,
            full_boot: full.boot_to_agent,
            bare_boot,
            switch,
        });
    }
    let seconds = |pick: fn(&LabRun) -> Duration| -> Vec<f64> { results.iter().map(|times| pick(times).as_secs_f64()).collect() };
    let table = Table::new(&context.shell);
    table.row("warm `lab up`: tool's own time before QEMU starts", &seconds(|times| times.tool_before_qemu), 3);
    table.row("lean `lab up`: QEMU start to guest agent answering (TCG)", &seconds(|times| times.lean_boot), 1);
    table.row("lean `lab up` + `lab exec -- cxl list -M`, wall", &seconds(|times| times.lean_up_and_list), 1);
    table.row("full `lab up` (systemd): QEMU start to guest agent answering (TCG)", &seconds(|times| times.full_boot), 1);
    table.row("same kernel, bare initramfs, same topology: QEMU start to ready marker (TCG)", &seconds(|times| times.bare_boot), 1);
    table.ratio("ratio lean boot / bare initramfs", &seconds(|times| times.lean_boot), &seconds(|times| times.bare_boot));
    table.ratio("ratio full boot / bare initramfs", &seconds(|times| times.full_boot), &seconds(|times| times.bare_boot));
    table.row("`lab switch switch` (down, render, full boot to guest agent)", &seconds(|times| times.switch), 1);
    Ok(ExitCode::SUCCESS)
}

struct BootRun {
    lab_up_and_list: Duration,
    virtme: Duration,
    lean_boot: Duration,
    bare_boot: Duration,
}

fn bench_boot(context: &Context, runs: usize, profile: &str) -> anyhow::Result<ExitCode> {
    let lab = BenchLab::new(context, BENCH_BOOT_LAB)?;
    context.shell.status("Warming", format!("stack, accelerator probe and virtme-ng {VIRTME_NG_VERSION} (untimed)"));
    lab.run("bench: warm-up lab up", &["up", "--detach", "--boot", "lean", "--profile", profile])?;
    lab.run("bench: warm-up lab down", &["down"])?;
    let stack = distro_stack(context)?;
    let virtme = VirtmeBoot::prepare(&context.paths, &context.shell, &lab.runner, &stack, profile, &lab.files)?;
    let virtme_step = "bench: vng cxl list -M";
    let timed_virtme = || -> anyhow::Result<(Duration, String)> {
        let started = Instant::now();
        let output = lab.runner.run_capture(virtme_step, &mut virtme.command(FIRST_COMMAND))?;
        Ok((started.elapsed(), output))
    };
    // virtme-ng's first run fills its own cache (the kernel image it boots), untimed.
    let (_, warm_listing) = timed_virtme()?;
    if memdevs_listed(&warm_listing) == 0 {
        bail!("virtme-ng's guest listed no memory device for `{FIRST_COMMAND}`:\n{warm_listing}\n  log: {}", lab.runner.log_path(virtme_step).display());
    }

    let mut results = Vec::new();
    for run in 1..=runs {
        context.shell.status("Run", format!("{run} of {runs}"));
        // Alternate which goes first, so that neither always meets the other's warm page cache.
        let (mut lab_side, mut virtme_side) = (None, None);
        for lab_turn in if run % 2 == 1 { [true, false] } else { [false, true] } {
            if lab_turn {
                lab_side = Some(lab.timed_up("lean", &["--boot", "lean", "--profile", profile])?);
                lab.run("bench: lab down (lean)", &["down"])?;
            } else {
                virtme_side = Some(timed_virtme()?);
            }
        }
        let (lean, (virtme_wall, virtme_listing)) = (lab_side.expect("the lab ran"), virtme_side.expect("virtme-ng ran"));
        let (lab_devices, virtme_devices) = (memdevs_listed(&lean.listing), memdevs_listed(&virtme_listing));
        if lab_devices == 0 || lab_devices != virtme_devices {
            bail!(
                "`{FIRST_COMMAND}` listed {lab_devices} memory devices in the lab and {virtme_devices} in virtme-ng's guest: not like work\n  lab: {}\n  virtme-ng: {}\n  log: {}",
                lean.listing.trim(),
                virtme_listing.trim(),
                lab.runner.log_path(virtme_step).display()
            );
        }
        let bare_boot = bare_initramfs_boot(&context.paths, &lab.runner, &stack, profile, &lab.files)?;
        context.shell.status(
            "Measured",
            format!(
                "lab up + cxl list {:.1} s, virtme-ng {:.1} s ({lab_devices} memdevs each), lean boot to agent {:.1} s, bare initramfs {:.1} s",
                lean.up_and_list.as_secs_f64(),
                virtme_wall.as_secs_f64(),
                lean.boot_to_agent.as_secs_f64(),
                bare_boot.as_secs_f64()
            ),
        );
        results.push(BootRun { lab_up_and_list: lean.up_and_list, virtme: virtme_wall, lean_boot: lean.boot_to_agent, bare_boot });
    }
    let seconds = |pick: fn(&BootRun) -> Duration| -> Vec<f64> { results.iter().map(|times| pick(times).as_secs_f64()).collect() };
    let table = Table::new(&context.shell);
    table.row(&format!("lean `lab up` + `lab exec -- {FIRST_COMMAND}` on `{profile}`, wall"), &seconds(|times| times.lab_up_and_list), 1);
    table.row(
        &format!("virtme-ng {VIRTME_NG_VERSION} `vng --run --disable-kvm --exec '{FIRST_COMMAND}'`, same kernel, QEMU and CXL topology, wall"),
        &seconds(|times| times.virtme),
        1,
    );
    table.ratio("ratio lab / virtme-ng (goal at most 0.8)", &seconds(|times| times.lab_up_and_list), &seconds(|times| times.virtme));
    table.row("lean `lab up`: QEMU start to guest agent answering (TCG)", &seconds(|times| times.lean_boot), 1);
    table.row("same kernel, bare initramfs, same topology: QEMU start to ready marker (TCG)", &seconds(|times| times.bare_boot), 1);
    table.ratio("ratio lean boot / bare initramfs (goal at most 1.5)", &seconds(|times| times.lean_boot), &seconds(|times| times.bare_boot));
    Ok(ExitCode::SUCCESS)
}

struct SnapshotRun {
    restore: UpTimes,
    boot: UpTimes,
}

fn bench_snapshot(context: &Context, runs: usize, profile: &str, stack: StackKind) -> anyhow::Result<ExitCode> {
    let lab = BenchLab::new(context, BENCH_SNAPSHOT_LAB)?;
    let stack_name = stack.to_string();
    let lean = ["--boot", "lean", "--profile", profile, "--stack", &stack_name];
    let up_from_snapshot = [&["up", "--detach"][..], &lean, &["--snapshot"]].concat();
    let from_snapshot = [&lean[..], &["--snapshot"]].concat();
    context.shell.status("Warming", "stack, accelerator probe and the snapshot (untimed)");
    lab.run("bench: warm-up lab up --snapshot", &up_from_snapshot)?;
    lab.run("bench: warm-up lab down", &["down"])?;
    let mut results = Vec::new();
    for run in 1..=runs {
        context.shell.status("Run", format!("{run} of {runs}"));
        let restore = lab.timed_up("restored", &from_snapshot)?;
        let launched = lab.files.read_launch_plan()?;
        if !launched.machines.iter().all(|machine| machine.argv.iter().any(|word| word == "-incoming")) {
            bail!("`lab up --snapshot` booted instead of restoring ({stack_name} stack): it says why in {}", lab.runner.log_path("bench: lab up (restored)").display());
        }
        lab.run("bench: lab down (restored)", &["down"])?;
        let boot = lab.timed_up("booted", &lean)?;
        lab.run("bench: lab down (booted)", &["down"])?;
        context.shell.status(
            "Measured",
            format!("restore to agent {:.2} s (with cxl list {:.2} s), lean boot to agent {:.1} s (with cxl list {:.1} s)", restore.boot_to_agent.as_secs_f64(), restore.up_and_list.as_secs_f64(), boot.boot_to_agent.as_secs_f64(), boot.up_and_list.as_secs_f64()),
        );
        results.push(SnapshotRun { restore, boot });
    }
    let seconds = |pick: fn(&SnapshotRun) -> Duration| -> Vec<f64> { results.iter().map(|times| pick(times).as_secs_f64()).collect() };
    let table = Table::new(&context.shell);
    table.row("`lab up --snapshot` restoring: QEMU start to guest agent answering (goal at most 3 s)", &seconds(|times| times.restore.boot_to_agent), 2);
    table.row("`lab up --snapshot` restoring + `lab exec -- cxl list -M`, wall", &seconds(|times| times.restore.up_and_list), 2);
    table.row("lean `lab up` (the boot the snapshot saves): QEMU start to guest agent answering", &seconds(|times| times.boot.boot_to_agent), 1);
    table.row("lean `lab up` + `lab exec -- cxl list -M`, wall", &seconds(|times| times.boot.up_and_list), 1);
    table.ratio("ratio restore / lean boot (to the guest agent)", &seconds(|times| times.restore.boot_to_agent), &seconds(|times| times.boot.boot_to_agent));
    Ok(ExitCode::SUCCESS)
}

/// One configuration of `bench capability`: reads per second through the unchecked and the
/// checked device, run after run in turn (so a change of load hits both), and the presents'
/// latency line.
struct CapabilityRun {
    grants: usize,
    unchecked: Vec<f64>,
    checked: Vec<f64>,
    presents: String,
}

fn bench_capability(context: &Context, runs: usize) -> anyhow::Result<ExitCode> {
    let lab = BenchLab::new(context, BENCH_CAPABILITY_LAB)?;
    let unchecked_lab = BenchLab::new(context, BENCH_UNCHECKED_LAB)?;
    let shared = std::fs::read_to_string(context.paths.profile_path("shared"))?;
    anyhow::ensure!(shared.contains("capabilities: true"), "profiles/shared.yaml marks no backend `capabilities: true`");
    // The same profile with its backend unchecked: the patched QEMU's device without cap-service.
    let unchecked = unchecked_lab.files.dir.join("shared-unchecked.yaml");
    std::fs::create_dir_all(&unchecked_lab.files.dir)?;
    std::fs::write(&unchecked, shared.replace("capabilities: true", "capabilities: false"))?;
    let unchecked = unchecked.display().to_string();
    let guest_tool = cxl_lab_core::suite::guest_tool::build(&context.paths, &lab.runner)?;

    context.shell.status("Booting", "the device unchecked and the device checked, side by side");
    unchecked_lab.run("bench: lab up (unchecked)", &["up", "--detach", "--boot", "lean", "--stack", "source", "--profile", &unchecked])?;
    lab.run("bench: lab up (checked)", &["up", "--detach", "--boot", "lean", "--stack", "source", "--profile", "shared"])?;
    let unchecked_dax = unchecked_lab.dax_device(&guest_tool)?;
    let dax = lab.dax_device(&guest_tool)?;
    let mut results = Vec::new();
    for (stage, grants) in GRANT_COUNTS.into_iter().enumerate() {
        context.shell.status("Measuring", format!("{grants} grant(s) installed"));
        let length = (READ_BYTES / grants as u64) & !7;
        let presents = lab.present_grants(grants, length, stage > 0)?;
        let (mut unchecked, mut checked) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            unchecked.extend(unchecked_lab.reads(&unchecked_dax, length * grants as u64, 1)?);
            checked.extend(lab.reads(&dax, length * grants as u64, 1)?);
        }
        context.shell.status("Measured", format!("{grants} grant(s): {presents}; {:.0} reads/s checked, {:.0} unchecked", median(checked.clone()), median(unchecked.clone())));
        results.push(CapabilityRun { grants, unchecked, checked, presents });
    }
    lab.run("bench: lab down (checked)", &["down"])?;
    unchecked_lab.run("bench: lab down (unchecked)", &["down"])?;

    let table = Table::new(&context.shell);
    for run in &results {
        let grants = run.grants;
        table.row(&format!("unchecked device: guest 8-byte reads per second (TCG), beside {grants} grant(s)"), &run.unchecked, 0);
        table.row(&format!("capability-checked, {grants} grant(s): reads per second"), &run.checked, 0);
        table.ratio(&format!("ratio unchecked / checked, {grants} grant(s), of the medians"), &run.unchecked, &run.checked);
        // Each run reads the two devices one right after the other: its own ratio is the least
        // disturbed by the load, which moves both.
        let ratios: Vec<f64> = run.unchecked.iter().zip(&run.checked).map(|(unchecked, checked)| unchecked / checked).collect();
        context.shell.out(format_args!("| ratio unchecked / checked, {grants} grant(s): median of the runs' ratios (goal at most 1.05) | {:.3} | |", median(ratios)));
    }
    for run in &results {
        context.shell.out(format_args!("| presenting {} token(s) in the guest | {} | |", run.grants, run.presents));
    }
    Ok(ExitCode::SUCCESS)
}

impl BenchLab {
    /// Copies the guest program into host0, makes the RAM region over its device and puts its DAX
    /// device in devdax mode; returns the DAX device's name.
    fn dax_device(&self, guest_tool: &std::path::Path) -> anyhow::Result<String> {
        let tool = cxl_lab_core::suite::region::GUEST_TOOL;
        self.run("bench: copy the guest program", &["cp", &guest_tool.display().to_string(), &format!("host0:{tool}")])?;
        let script = format!(
            "chmod 0755 {tool} && cxl create-region -m -d decoder0.0 -w 1 -t ram mem0 >/dev/null && {} > /tmp/dax && {} >/dev/null && cat /tmp/dax",
            cxl_lab_core::suite::region::dax_script("ram", "region0"),
            cxl_lab_core::suite::region::devdax_command("$(cat /tmp/dax)")
        );
        Ok(self.runner.run_capture("bench: region and DAX device", &mut self.command(&["exec", "--host", "host0", "--", "sh", "-c", &script]))?.trim().to_owned())
    }

    /// The owner mints a root token (revoking the one before, and with it every grant of the
    /// stage before); the host narrows it into `grants` tokens of `length` bytes each, side by
    /// side from DPA 0, read-only and read-write in turn (so no two neighbours merge into one
    /// segment of the device's table); host0 presents them all. Returns the guest's line with the
    /// present-to-verdict latency.
    fn present_grants(&self, grants: usize, length: u64, revoke_previous: bool) -> anyhow::Result<String> {
        use cxl_lab_cap::{AddressRange, Caveat, Rights, Token};
        let dir = self.files.data_dir().join("bench-tokens");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let root_file = self.files.data_dir().join("bench-root.tok");
        if revoke_previous {
            self.run("bench: lab cap revoke", &["cap", "revoke", &root_file.display().to_string()])?;
        }
        self.run("bench: lab cap mint", &["cap", "mint", "--out", &root_file.display().to_string()])?;
        let root = Token::decode(&std::fs::read(&root_file)?)?;
        for index in 0..grants {
            let rights = if index % 2 == 0 { Rights::READ } else { Rights::READ_WRITE };
            let range = AddressRange::new(index as u64 * length, length)?;
            let token = if grants == 1 { root.clone() } else { root.attenuate_all(&[Caveat::Range(range), Caveat::Rights(rights)])? };
            std::fs::write(dir.join(format!("{index:05}.tok")), token.as_bytes())?;
        }
        let tool = cxl_lab_core::suite::region::GUEST_TOOL;
        let line = self.runner.run_capture("bench: present the tokens", &mut self.command(&["exec", "--host", "host0", "--timeout", "3600", "--", tool, "cap", "present-all", "mem0", "/mnt/share/bench-tokens"]))?;
        Ok(line.trim().to_owned())
    }

    /// `dax read` of `bytes` from offset 0, `runs` times: the guest's reads per second.
    fn reads(&self, dax: &str, bytes: u64, runs: usize) -> anyhow::Result<Vec<f64>> {
        let tool = cxl_lab_core::suite::region::GUEST_TOOL;
        (0..runs)
            .map(|run| {
                let line = self.runner.run_capture(&format!("bench: dax read {run}"), &mut self.command(&["exec", "--host", "host0", "--", tool, "dax", "read", &format!("/dev/{dax}"), "0", &bytes.to_string()]))?;
                if line.contains("first_word=0xffffffffffffffff") {
                    bail!("the reads were denied: {}", line.trim());
                }
                line.split_whitespace().find_map(|word| word.strip_prefix("reads_per_second=")).and_then(|rate| rate.parse().ok()).with_context(|| format!("`dax read` printed no rate: {}", line.trim()))
            })
            .collect()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A Markdown table of timings: a measure, its median and each run.
struct Table<'a> {
    shell: &'a Shell,
}

impl<'a> Table<'a> {
    fn new(shell: &'a Shell) -> Table<'a> {
        shell.out(format_args!("| measure | median (s) | runs (s) |"));
        shell.out(format_args!("| --- | --- | --- |"));
        Table { shell }
    }

    fn row(&self, measure: &str, seconds: &[f64], decimals: usize) {
        let listed = seconds.iter().map(|value| format!("{value:.2}")).collect::<Vec<_>>().join(" / ");
        self.shell.out(format_args!("| {measure} | {:.decimals$} | {listed} |", median(seconds.to_vec())));
    }

    /// The ratio of the medians, and each run's own ratio.
    fn ratio(&self, measure: &str, numerators: &[f64], denominators: &[f64]) {
        let each = numerators.iter().zip(denominators).map(|(numerator, denominator)| format!("{:.2}", numerator / denominator)).collect::<Vec<_>>();
        self.shell.out(format_args!("| {measure} | {:.2} | {} |", median(numerators.to_vec()) / median(denominators.to_vec()), each.join(" / ")));
    }
}
