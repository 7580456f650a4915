//! `cargo xtask bench lab`: times the lab lifecycle on a warm cache and prints a Markdown table
//! for `docs/BENCHMARKS.md`.
//!
//! Each run measures, in this order and in the same process tree:
//! - warm `lab up --detach --boot lean` of the seed profile, run as its own process like a user's:
//!   the tool's own time from the process's start to QEMU's spawn (from `lab.json`), and QEMU's
//!   spawn to the guest agent's first answer (the command's end, minus nothing: setting the
//!   password and key takes milliseconds); then `lab exec -- cxl list -M`, and the wall time of
//!   the two together (what a user waits for a first answer); `lab down`;
//! - the same with `--boot full` (systemd);
//! - the same kernel and initramfs on the same topology with `cxllab.bare=1` (the initramfs
//!   prints a marker and powers off): QEMU's spawn to the marker on the serial console;
//! - `lab switch switch` (a full boot, as the lab was), wall clock, then `lab down`.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Subcommand;
use cxl_lab_core::lab::bench::bare_initramfs_boot;
use cxl_lab_core::lab::state::unix_millis;
use cxl_lab_core::stack::StackKind;
use cxl_lab_core::sys::runner::CommandRunner;

use crate::Context;

/// The lab the benchmark boots; separate from the user's labs.
const BENCH_LAB: &str = "bench";

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Warm `lab up` lean and full (tool time, boot to guest agent), bare-initramfs boot, `lab switch`.
    Lab {
        /// How many times to run the whole sequence.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

struct RunTimes {
    tool_before_qemu: Duration,
    lean_boot: Duration,
    lean_up_and_list: Duration,
    full_boot: Duration,
    bare_boot: Duration,
    switch: Duration,
}

/// What one timed `lab up` measured.
struct UpTimes {
    tool_before_qemu: Duration,
    boot_to_agent: Duration,
    /// `lab up` and then `lab exec -- cxl list -M`, wall clock.
    up_and_list: Duration,
}

impl BenchCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let BenchCommand::Lab { runs } = self;
        let files = context.paths.lab(BENCH_LAB);
        let runner = CommandRunner::new(files.logs_dir().join("bench"));
        let program = std::env::current_exe()?;
        let lab = |arguments: &[&str]| {
            let mut command = Command::new(&program);
            command.args(["lab", "--lab", BENCH_LAB]).args(arguments);
            command
        };
        if files.read_live_state()?.is_some() {
            runner.run("bench: down a leftover lab", &mut lab(&["down"]))?;
        }
        // Warm the cache (and the accelerator probe) once, untimed; full, so that the disk's
        // first-boot work (the SSH host key) is done before anything is timed.
        context.shell.status("Warming", "stack and accelerator probe (first `lab up`)");
        runner.run("bench: warm-up lab up", &mut lab(&["up", "--detach", "--boot", "full"]))?;
        runner.run("bench: warm-up lab down", &mut lab(&["down"]))?;
        let stack = cxl_lab_core::stack::ensure_boot_stack(&context.paths, &context.shell, StackKind::Distro, &Default::default())?;

        let timed_up = |boot: &str| -> anyhow::Result<UpTimes> {
            let before_up = SystemTime::now();
            let up_started = Instant::now();
            runner.run(&format!("bench: lab up --boot {boot}"), &mut lab(&["up", "--detach", "--boot", boot]))?;
            let up_wall = up_started.elapsed();
            runner.run(&format!("bench: cxl list -M ({boot})"), &mut lab(&["exec", "--", "cxl", "list", "-M"]))?;
            let up_and_list = up_started.elapsed();
            let state = files.read_state_file()?.context("`lab up` left no lab.json")?;
            let spawned = state.machines.iter().map(|machine| machine.qemu_spawned_at_ms).min().unwrap_or_default();
            let tool_before_qemu = Duration::from_millis(spawned.saturating_sub(unix_millis(before_up)));
            Ok(UpTimes { tool_before_qemu, boot_to_agent: up_wall.saturating_sub(tool_before_qemu), up_and_list })
        };

        let mut results = Vec::new();
        for run in 1..=runs {
            context.shell.status("Run", format!("{run} of {runs}"));
            let lean = timed_up("lean")?;
            runner.run("bench: lab down (lean)", &mut lab(&["down"]))?;
            let full = timed_up("full")?;

            let bare_boot = bare_initramfs_boot(&context.paths, &runner, &stack, &files)?;

            let switch_started = Instant::now();
            runner.run("bench: lab switch", &mut lab(&["switch", "switch"]))?;
            let switch = switch_started.elapsed();
            runner.run("bench: lab down", &mut lab(&["down"]))?;
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
            results.push(RunTimes {
                tool_before_qemu: lean.tool_before_qemu,
                lean_boot: lean.boot_to_agent,
                lean_up_and_list: lean.up_and_list,
                full_boot: full.boot_to_agent,
                bare_boot,
                switch,
            });
        }
        print_table(&context.shell, &results);
        Ok(ExitCode::SUCCESS)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn print_table(shell: &cxl_lab_core::Shell, results: &[RunTimes]) {
    let column = |pick: &dyn Fn(&RunTimes) -> Duration| -> (f64, String) {
        let values: Vec<f64> = results.iter().map(|times| pick(times).as_secs_f64()).collect();
        let listed = values.iter().map(|value| format!("{value:.2}")).collect::<Vec<_>>().join(" / ");
        (median(values), listed)
    };
    let tool = column(&|times| times.tool_before_qemu);
    let lean = column(&|times| times.lean_boot);
    let lean_list = column(&|times| times.lean_up_and_list);
    let full = column(&|times| times.full_boot);
    let bare = column(&|times| times.bare_boot);
    let switch = column(&|times| times.switch);
    shell.out(format_args!("| measure | median (s) | runs (s) |"));
    shell.out(format_args!("| --- | --- | --- |"));
    shell.out(format_args!("| warm `lab up`: tool's own time before QEMU starts | {:.3} | {} |", tool.0, tool.1));
    shell.out(format_args!("| lean `lab up`: QEMU start to guest agent answering (TCG) | {:.1} | {} |", lean.0, lean.1));
    shell.out(format_args!("| lean `lab up` + `lab exec -- cxl list -M`, wall | {:.1} | {} |", lean_list.0, lean_list.1));
    shell.out(format_args!("| full `lab up` (systemd): QEMU start to guest agent answering (TCG) | {:.1} | {} |", full.0, full.1));
    shell.out(format_args!("| same kernel, bare initramfs, same topology: QEMU start to ready marker (TCG) | {:.1} | {} |", bare.0, bare.1));
    shell.out(format_args!("| ratio lean boot / bare initramfs | {:.2} | |", lean.0 / bare.0));
    shell.out(format_args!("| ratio full boot / bare initramfs | {:.2} | |", full.0 / bare.0));
    shell.out(format_args!("| `lab switch switch` (down, render, full boot to guest agent) | {:.1} | {} |", switch.0, switch.1));
}
