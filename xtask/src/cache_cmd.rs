//! `cargo xtask cache ls|gc [--all]|verify`: what the artifact cache holds, cleaning it, and
//! hashing all of it.

use std::process::ExitCode;

use clap::Subcommand;
use cxl_lab_core::stack::cache::{now_seconds, Cache};
use cxl_lab_core::stack::{distro, source};

use crate::Context;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// List cached artifacts: kind, key, size, age, and whether the current recipes use it.
    Ls,
    /// Remove artifacts the current recipes and lock do not use, and leftovers of killed builds.
    Gc {
        /// Remove every artifact, used or not.
        #[arg(long)]
        all: bool,
    },
    /// Hash every cached file and download against its manifest or pin (lookups only hash files
    /// whose size, mtime or ctime changed); exits 1 when something is damaged.
    Verify,
}

impl CacheCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let cache = Cache::new(&context.paths);
        let mut referenced = distro::referenced_artifacts(&context.paths)?;
        referenced.extend(source::referenced_artifacts(&context.paths)?);
        match self {
            CacheCommand::Ls => {
                let entries = cache.list()?;
                if entries.is_empty() {
                    context.shell.status("Empty", context.paths.cache.display());
                    return Ok(ExitCode::SUCCESS);
                }
                context.shell.out(format!("{:<12} {:<13} {:>10} {:>8}  {}", "KIND", "KEY", "SIZE", "AGE", "IN USE"));
                for entry in entries {
                    let (kind, key, size, age) = match &entry.manifest {
                        Some(manifest) => (
                            manifest.kind.clone(),
                            manifest.key.short().to_owned(),
                            human_bytes(manifest.size_bytes),
                            human_age(now_seconds().saturating_sub(manifest.created)),
                        ),
                        None => (entry.name.clone(), "?".into(), "?".into(), "?".into()),
                    };
                    let used = if referenced.contains(&entry.name) { "current" } else { "-" };
                    context.shell.out(format!("{kind:<12} {key:<13} {size:>10} {age:>8}  {used}"));
                }
                Ok(ExitCode::SUCCESS)
            }
            CacheCommand::Verify => {
                let report = cache.verify_all()?;
                let damaged = report.iter().filter(|entry| entry.problem.is_some()).count();
                for entry in &report {
                    match &entry.problem {
                        None => context.shell.out(format!("ok       {}", entry.name)),
                        Some(problem) => context.shell.out(format!("DAMAGED  {}: {problem}", entry.name)),
                    }
                }
                if damaged > 0 {
                    context.shell.warn(format!("{damaged} of {} damaged: `cargo xtask build` rebuilds them", report.len()));
                    return Ok(ExitCode::FAILURE);
                }
                context.shell.status("Verified", format!("{} entries", report.len()));
                Ok(ExitCode::SUCCESS)
            }
            CacheCommand::Gc { all } => {
                let report = cache.gc(&referenced, all)?;
                for name in &report.removed {
                    context.shell.status("Removed", name);
                }
                for name in &report.busy {
                    context.shell.warn(format!("{name} is being built by another process; kept"));
                }
                context.shell.status(
                    "Freed",
                    format!("{} ({} removed, {} kept)", human_bytes(report.freed_bytes), report.removed.len(), report.kept.len()),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn human_age(seconds: u64) -> String {
    match seconds {
        0..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}m", seconds / 60),
        7200..=172_799 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}
