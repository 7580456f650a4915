//! `cargo xtask`: the cxl-lab command line. Thin dispatch: each command group is a module whose
//! `run` does the work through `cxl-lab-core`.

mod bench_cmd;
mod build_cmd;
mod cache_cmd;
mod host_cmd;
mod lab_cmd;
mod model_cmd;
mod profile_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cxl_lab_core::{Layout, Shell};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "cxl-lab: reproducible CXL labs on QEMU, from YAML profiles")]
struct Cli {
    /// Say more: commands as they run, extra notes.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time the lab lifecycle (warm up, bare-initramfs boot, switch) for docs/BENCHMARKS.md.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Boot a lab and use it: up, status, exec, cp, console, ssh, qmp, switch, down.
    Lab(lab_cmd::LabArgs),
    /// The device model: decode an address of a profile's region; evaluate a sharing scenario.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Inspect, validate and render topology profiles.
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCommand),
    /// Print the version.
    Version,
    /// Build or download what a stack needs (kernel, initramfs, root filesystem).
    Build(build_cmd::BuildCommand),
    /// The artifact cache: `ls`, `gc`.
    #[command(subcommand)]
    Cache(cache_cmd::CacheCommand),
    /// Host programs: `check`, `setup`.
    #[command(subcommand)]
    Host(host_cmd::HostCommand),
}

/// `--stack`: the stack names, listed in `--help`.
fn stack_kind_parser() -> impl clap::builder::TypedValueParser<Value = cxl_lab_core::stack::StackKind> {
    use clap::builder::TypedValueParser as _;
    let names = cxl_lab_core::stack::StackKind::ALL.map(|kind| kind.name());
    clap::builder::PossibleValuesParser::new(names).try_map(|name| name.parse::<cxl_lab_core::stack::StackKind>())
}

/// What every command gets: where things are and how to talk to the user.
pub struct Context {
    pub paths: Layout,
    pub shell: Shell,
}

fn main() -> ExitCode {
    // Output piped into `head` should end quietly, as for any Unix tool, not panic.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace");
    let context = Context { paths: Layout::for_workspace(workspace), shell: Shell::new(cli.verbose) };
    let result = match cli.command {
        Command::Bench(command) => command.run(&context),
        Command::Lab(command) => command.run(&context),
        Command::Model(command) => command.run(&context),
        Command::Profile(command) => command.run(&context),
        Command::Version => {
            context.shell.out(format!("cxl-lab {}", env!("CARGO_PKG_VERSION")));
            anyhow::Ok(ExitCode::SUCCESS)
        }
        Command::Build(command) => command.run(&context),
        Command::Cache(command) => command.run(&context),
        Command::Host(command) => command.run(&context),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            context.shell.error(&error);
            ExitCode::FAILURE
        }
    }
}
