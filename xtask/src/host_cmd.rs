//! `cargo xtask host check|setup`: the host programs cxl-lab needs, and installing them.

use std::process::ExitCode;

use clap::Subcommand;
use cxl_lab_core::{apt, cache::Cache, host, images, runner::CommandRunner};

use crate::Context;

#[derive(Subcommand)]
pub enum HostCommand {
    /// List the host programs cxl-lab runs; print the apt-get line for missing ones.
    Check,
    /// Install missing host programs from the Debian archive (root; QEMU from host backports).
    Setup,
}

impl HostCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let recipe = images::load(&context.paths.images_dir(), "distro")?;
        let archive = &recipe.recipe.archive;
        let report = host::check(&archive.keyring);
        for (tool, path) in &report.found {
            context.shell.verbose(format!("{:<20} {} ({})", tool.program, path.display(), tool.purpose));
        }
        let codename = apt::host_codename()?;
        match self {
            HostCommand::Check => {
                if report.is_ready() {
                    context.shell.status("Ready", format!("all {} host programs found", report.found.len()));
                    return Ok(ExitCode::SUCCESS);
                }
                for tool in &report.missing {
                    context.shell.warn(format!("{} is missing ({}; package {})", tool.program, tool.purpose, tool.package));
                }
                if report.keyring_missing {
                    context.shell.warn(format!("{} is missing", archive.keyring.display()));
                }
                if host::is_root() {
                    context.shell.status("Hint", "`cargo xtask host setup` installs them");
                } else {
                    println!("{}", report.install_line(&codename));
                }
                Ok(ExitCode::FAILURE)
            }
            HostCommand::Setup => {
                if report.is_ready() {
                    context.shell.status("Ready", "nothing to install");
                    return Ok(ExitCode::SUCCESS);
                }
                let cache = Cache::new(&context.paths.cache);
                let runner = CommandRunner::new(context.paths.build_logs_dir());
                let progress = context.shell.step(&format!("installing {}", report.install_arguments(&codename).join(" ")));
                host::install(&report, &cache.apt_dir(), archive, &runner)?;
                progress.done("installed");
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
