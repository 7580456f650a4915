//! `cargo xtask host check|setup [--stack distro|source]`: the host programs cxl-lab needs (the
//! source stack's build tools too with `--stack source`), and installing them.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use cxl_lab_core::stack::debian::apt;
use cxl_lab_core::stack::{cache::Cache, host, recipe, StackKind};
use cxl_lab_core::sys::runner::CommandRunner;

use crate::Context;

#[derive(Subcommand)]
pub enum HostCommand {
    /// List the host programs cxl-lab runs and the host QEMU's version; print the apt-get lines
    /// for what is missing or too old.
    Check(HostArgs),
    /// Install missing or too old host programs from the Debian archive (root; QEMU from the
    /// host release's backports).
    Setup(HostArgs),
}

#[derive(Args)]
pub struct HostArgs {
    /// The stack whose tools are checked: `source` adds what builds QEMU, the kernel and ndctl.
    #[arg(long, default_value = "distro", value_parser = crate::stack_kind_parser())]
    stack: StackKind,
}

impl HostCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let recipe = recipe::load(&context.paths.images_dir(), StackKind::Distro)?;
        let archive = &recipe.recipe.archive;
        let minimum = recipe.recipe.qemu.minimum_version;
        let runner = CommandRunner::new(context.paths.build_logs_dir());
        let stack = match &self {
            HostCommand::Check(args) | HostCommand::Setup(args) => args.stack,
        };
        let tools = host::tools_for(stack);
        let report = host::check_with_versions(&archive.keyring, &tools, minimum, &runner)?;
        for (tool, path) in &report.found {
            context.shell.verbose(format!("{:<20} {} ({})", tool.program, path.display(), tool.purpose));
        }
        let codename = apt::host_codename()?;
        match self {
            HostCommand::Check(_) => {
                if report.is_ready() {
                    context.shell.status("Ready", format!("all {} host programs found", report.found.len()));
                    return Ok(ExitCode::SUCCESS);
                }
                for tool in &report.missing {
                    context.shell.warn(format!("{} is missing ({}; package {})", tool.program, tool.purpose, tool.package));
                }
                for outdated in &report.outdated {
                    context.shell.warn(outdated.to_string());
                }
                if report.keyring_missing {
                    context.shell.warn(format!("{} is missing", archive.keyring.display()));
                }
                if cxl_lab_core::sys::process::is_root() {
                    context.shell.status("Hint", "`cargo xtask host setup` installs them");
                } else {
                    for line in report.install_lines(&codename) {
                        context.shell.out(line);
                    }
                }
                Ok(ExitCode::FAILURE)
            }
            HostCommand::Setup(_) => {
                if report.is_ready() {
                    context.shell.status("Ready", "nothing to install");
                    return Ok(ExitCode::SUCCESS);
                }
                for outdated in &report.outdated {
                    context.shell.warn(format!("{outdated}: installing a newer one"));
                }
                let cache = Cache::new(&context.paths);
                let progress = context.shell.step(&format!("installing {}", report.install_summary(&codename)));
                host::install(&report, &cache.layout.apt_dir(), archive, &runner)?;
                progress.done("installed");
                // Prove it: what setup installed must pass the same check.
                let after = host::check_with_versions(&archive.keyring, &tools, minimum, &runner)?;
                if !after.is_ready() {
                    let mut problems: Vec<String> = after.missing.iter().map(|tool| format!("{} is still missing", tool.program)).collect();
                    problems.extend(after.outdated.iter().map(ToString::to_string));
                    anyhow::bail!("after installing, the host is still not ready: {}", problems.join("; "));
                }
                context.shell.status("Ready", format!("all {} host programs found", after.found.len()));
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
