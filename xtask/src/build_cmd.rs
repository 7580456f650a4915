//! `cargo xtask build qemu|rootfs|kernel|ndctl|all [--stack distro|source] [--locked]`: builds or
//! downloads what is missing and prints where each artifact is. The source stack builds QEMU, the
//! kernel (with the test modules) and ndctl from source; its initramfs and root filesystem are the
//! distro stack's, the ndctl built laid over the root filesystem.
//! `build verify [--stack S]` builds every artifact of the stack twice into scratch caches and
//! says, per artifact, whether both builds gave the same bytes (exit 1 when not).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use cxl_lab_core::stack::distro::{self, StackOptions};
use cxl_lab_core::stack::source;
use cxl_lab_core::stack::StackKind;
use cxl_lab_core::Shell;

use crate::Context;

#[derive(Clone, Copy, ValueEnum)]
pub enum BuildTarget {
    /// QEMU from source, with its firmware (the source stack).
    Qemu,
    /// The kernel with its modules (and, on the source stack, the `tools/testing/{nvdimm,cxl}`
    /// test modules: `modules` says the same; on the distro stack, with its initramfs).
    #[value(alias = "modules")]
    Kernel,
    /// The root filesystem image (on the source stack, with ndctl built from source in it).
    Rootfs,
    /// ndctl with its tests, for the guests' root filesystem (the source stack).
    Ndctl,
    All,
    /// Every artifact of the stack, twice, into two scratch caches; compares them.
    Verify,
}

#[derive(Args)]
pub struct BuildCommand {
    /// What to build: QEMU or ndctl (source stack), the kernel (with modules and initramfs), the
    /// root filesystem, all of the stack, or `verify` (all of it twice, compared).
    target: BuildTarget,
    /// The stack whose recipe (images/<stack>.yaml) is built.
    #[arg(long, default_value = "distro", value_parser = crate::stack_kind_parser())]
    stack: StackKind,
    /// Use images/<stack>.lock as it is; fail instead of resolving anything again.
    #[arg(long)]
    locked: bool,
}

impl BuildCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let options = StackOptions { locked: self.locked, ..StackOptions::default() };
        let (paths, shell) = (&context.paths, &context.shell);
        let timings = match (self.stack, self.target) {
            (_, BuildTarget::Verify) if self.locked => {
                anyhow::bail!("`build verify` reads the lock and never writes it: --locked has nothing to hold it to (build with --locked to compare with the lock)")
            }
            (stack, BuildTarget::Verify) => return verify(shell, cxl_lab_core::stack::reproduce::verify_stack(paths, shell, stack)?),
            (StackKind::Source, BuildTarget::Qemu) => {
                report(shell, source::ensure_source_qemu(paths, shell, &options)?, |qemu| {
                    vec![format!("qemu        {} ({})", qemu.binary.display(), qemu.version), format!("firmware    {}", qemu.firmware_dir.display())]
                })
            }
            (StackKind::Source, BuildTarget::Kernel) => {
                report(shell, source::ensure_source_kernel(paths, shell, &options)?, |kernel| {
                    vec![format!("kernel      {} ({})", kernel.vmlinuz.display(), kernel.release), format!("modules     {}", kernel.modules_dir.display())]
                })
            }
            (StackKind::Source, BuildTarget::Ndctl) => {
                report(shell, source::ensure_source_ndctl(paths, shell, &options)?, |ndctl| {
                    vec![
                        format!("ndctl       {} ({})", ndctl.root.join("usr/bin/ndctl").display(), ndctl.version),
                        format!("root        {}", ndctl.root.display()),
                        format!("tests       {}", ndctl.tests.display()),
                    ]
                })
            }
            (StackKind::Source, BuildTarget::All) => {
                let started = std::time::Instant::now();
                let stack = cxl_lab_core::stack::ensure_boot_stack(paths, shell, StackKind::Source, &options)?;
                shell.out(format!("qemu        {} ({})", stack.qemu_binary.display(), stack.qemu_version));
                let initrd = stack.initrd.clone().unwrap_or_default();
                print_kernel(shell, &stack.kernel_release, &stack.kernel, &initrd, &stack.modules_dir);
                shell.out(format!("rootfs      {}", stack.rootfs_image.display()));
                vec![("source stack".to_owned(), started.elapsed().as_secs_f64())]
            }
            (StackKind::Source, BuildTarget::Rootfs) => {
                let ndctl = source::ensure_source_ndctl(paths, shell, &options)?;
                let (image, timings) = distro::ensure_distro_rootfs(paths, shell, &options, Some(&ndctl.artifact.overlay()))?;
                shell.out(format!("rootfs      {} (with ndctl {})", image.display(), ndctl.artifact.version));
                [ndctl.timings, timings].concat()
            }
            (StackKind::Distro, _) => self.build_distro(self.target, &options, context)?,
        };
        if timings.is_empty() {
            shell.status("Fresh", "everything was in the cache");
        }
        for (stage, seconds) in timings {
            shell.status("Timing", format!("{stage}: {seconds:.1} s"));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The distro stack's artifacts.
    fn build_distro(&self, target: BuildTarget, options: &StackOptions, context: &Context) -> anyhow::Result<Vec<(String, f64)>> {
        let (paths, shell) = (&context.paths, &context.shell);
        Ok(match target {
            BuildTarget::Qemu => anyhow::bail!("the distro stack's QEMU is the host's: `cargo xtask host setup` installs it"),
            BuildTarget::Ndctl => anyhow::bail!("the distro stack's ndctl is Debian's package in the root filesystem: build ndctl --stack source"),
            BuildTarget::Kernel => {
                let (kernel, timings) = distro::ensure_distro_kernel(paths, shell, options)?;
                print_kernel(shell, &kernel.kernel_release, &kernel.kernel, &kernel.initrd, &kernel.modules_dir);
                timings
            }
            BuildTarget::Rootfs => {
                let (image, timings) = distro::ensure_distro_rootfs(paths, shell, options, None)?;
                shell.out(format!("rootfs      {}", image.display()));
                timings
            }
            BuildTarget::Verify => unreachable!("`run` verifies before it builds"),
            BuildTarget::All => {
                let artifacts = distro::ensure_distro_stack(paths, shell, options)?;
                shell.out(format!("qemu        {} ({})", artifacts.qemu.path.display(), artifacts.qemu.version));
                print_kernel(shell, &artifacts.kernel_release, &artifacts.kernel, &artifacts.initrd, &artifacts.modules_dir);
                shell.out(format!("rootfs      {}", artifacts.rootfs_image.display()));
                for note in &artifacts.source_notes {
                    shell.verbose(note);
                }
                artifacts.timings
            }
        })
    }
}

/// Prints where a source-stack artifact is (`lines`), its notes with `-v`; returns its timings.
fn report<T>(shell: &Shell, built: source::Built<T>, lines: impl FnOnce(&T) -> Vec<String>) -> Vec<(String, f64)> {
    for note in &built.notes {
        shell.verbose(note);
    }
    for line in lines(&built.artifact) {
        shell.out(line);
    }
    built.timings
}

/// Prints one line per artifact (and per differing file); exit 1 when anything differs.
fn verify(shell: &Shell, report: cxl_lab_core::stack::reproduce::VerifyReport) -> anyhow::Result<ExitCode> {
    for artifact in &report.artifacts {
        let verdict = if artifact.differences.is_empty() { "identical" } else { "differs" };
        shell.out(format!("{:<45} {verdict}", artifact.name));
        for file in &artifact.differences {
            shell.out(format!("    {}: {}", file.path, file.what));
            for line in file.diffoscope.iter().flat_map(|summary| summary.lines()) {
                shell.out(format!("        {line}"));
            }
        }
    }
    if report.diffoscope.is_none() && !report.identical() {
        shell.out("diffoscope is not installed (Debian package `diffoscope`): no report of what differs inside the files");
    }
    Ok(if report.identical() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_kernel(shell: &Shell, release: &str, kernel: &std::path::Path, initrd: &std::path::Path, modules: &std::path::Path) {
    shell.out(format!("kernel      {} ({release})", kernel.display()));
    shell.out(format!("initrd      {}", initrd.display()));
    shell.out(format!("modules     {}", modules.display()));
}
