//! `cargo xtask profile ...`: list, show, validate, render and predict topology profiles.
//! Nothing here starts a VM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use cxl_lab_core::profile::{self, Profile};
use cxl_lab_core::qemu::{Accel, QemuVersion};
use cxl_lab_core::render::{self, picture, RenderInputs};
use cxl_lab_core::lab::state::DEFAULT_LAB;
use cxl_lab_core::sys::runner::CommandRunner;

use crate::Context;

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// List the profiles in profiles/.
    List,
    /// Show a profile as a tree (or a Graphviz graph with --dot).
    Show {
        profile: String,
        #[arg(long)]
        dot: bool,
    },
    /// Validate profiles; errors name file, line, column and field.
    Validate {
        #[arg(required = true)]
        profiles: Vec<String>,
    },
    /// Print the exact QEMU argv of a profile, one argument per line; nothing is started.
    Render {
        profile: String,
        /// Print a command to paste into a shell instead.
        #[arg(long)]
        shell: bool,
        /// Which host of a multi-host profile (by name); default: all.
        #[arg(long)]
        host: Option<String>,
        /// The QEMU to render for (its version decides property names).
        #[arg(long, default_value = "qemu-system-x86_64")]
        qemu: PathBuf,
        /// Render for this version instead of asking the binary (e.g. 8.0.0).
        #[arg(long, value_parser = parse_version)]
        qemu_version: Option<QemuVersion>,
    },
    /// Print the guest view Linux should show (`cxl list`), as JSON.
    Expect { profile: String },
}

impl ProfileCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        match self {
            ProfileCommand::List => {
                for name in profile::list(&context.paths)? {
                    let description = profile::load(&context.paths, &name)
                        .map(|profile| profile.topology.description)
                        .unwrap_or_else(|error| format!("(invalid: {})", first_line(&format!("{error:#}"))));
                    context.shell.out(format_args!("{name:<12} {description}"));
                }
                Ok(ExitCode::SUCCESS)
            }
            ProfileCommand::Show { profile, dot } => {
                let profile = profile::load(&context.paths, &profile)?;
                let text = if dot { picture::dot(&profile.topology) } else { picture::tree(&profile.topology) };
                context.shell.out_bytes(text.as_bytes())?;
                Ok(ExitCode::SUCCESS)
            }
            ProfileCommand::Validate { profiles } => validate(context, &profiles),
            ProfileCommand::Render { profile, shell, host, qemu, qemu_version } => {
                let profile = profile::load(&context.paths, &profile)?;
                render::warn_unchecked_arguments(&context.shell, &profile.topology);
                let version = match qemu_version {
                    Some(version) => version,
                    None => cxl_lab_core::stack::host::qemu_version(&CommandRunner::new(context.paths.build_logs_dir()), &qemu)
                        .context("pass --qemu PATH or --qemu-version X.Y.Z to render without this QEMU")?,
                };
                for (index, machine) in profile.topology.hosts.iter().enumerate() {
                    if host.as_ref().is_some_and(|wanted| *wanted != machine.name) {
                        continue;
                    }
                    let rendered = render::render_machine(&profile, index, &inputs(context, &profile, index, &qemu, version))?;
                    if profile.topology.hosts.len() > 1 {
                        context.shell.out(format_args!("# host {}", machine.name));
                    }
                    if shell {
                        context.shell.out(rendered.shell_command());
                    } else {
                        context.shell.out(rendered.argv.join("\n"));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            ProfileCommand::Expect { profile } => {
                let profile = profile::load(&context.paths, &profile)?;
                let view = cxl_lab_core::model::expect::expected_view(&profile.topology);
                context.shell.out(serde_json::to_string_pretty(&view)?);
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn validate(context: &Context, profiles: &[String]) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for name in profiles {
        match profile::load(&context.paths, name) {
            Ok(profile) => {
                let hosts = &profile.topology.hosts;
                let devices: usize = hosts.iter().map(|host| host.devices().len()).sum();
                context.shell.status("Valid", format!("{} ({} host(s), {devices} device(s))", profile.path.display(), hosts.len()));
                render::warn_unchecked_arguments(&context.shell, &profile.topology);
            }
            Err(error) => {
                failed += 1;
                context.shell.err(format_args!("{error:#}"));
            }
        }
    }
    if failed > 0 {
        context.shell.error(&anyhow::anyhow!("{failed} of {} profile(s) invalid", profiles.len()));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The inputs `profile render` shows: the default lab's run directory, no guest.
fn inputs(context: &Context, profile: &Profile, host_index: usize, qemu: &std::path::Path, version: QemuVersion) -> RenderInputs {
    let host_name = &profile.topology.hosts[host_index].name;
    let lab = context.paths.lab(DEFAULT_LAB);
    RenderInputs::new(qemu, version, None, lab.run_dir(host_name), &lab.memory_dir(), Accel::Tcg, None)
}

fn parse_version(text: &str) -> Result<QemuVersion, String> {
    QemuVersion::from_version_output(&format!("version {text}")).ok_or_else(|| format!("`{text}` is not a version like 10.0.2"))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
