//! virtme-ng, the yardstick `cargo xtask bench boot` measures the lab's boot against: a pinned
//! version from PyPI in a private venv of the cache, booting the stack's kernel on the same QEMU
//! with the profile's CXL machine as a lab renders it (its `-machine` with the fixed windows,
//! `-m` with `maxmem`, the memory backends and the CXL devices; [`cxl_machine_options`]), and
//! running one command in its guest, which is the host's root file system, read-only.
//!
//! virtme-ng finds a kernel's modules beside its image (`<dir>/vmlinuz`, `<dir>/lib/modules/`);
//! the kernel artifact keeps them under `modules/`, so the boot gets a directory of links laid
//! out that way. Without KVM it runs q35 (microvm wants KVM), which the profile's `-machine`
//! extends with `cxl=on` and the windows. Its guest loads drivers through the host's udevd
//! (`host setup` installs it), as on any Debian machine. Its QEMU opens the step log again for
//! the guest's console (`-chardev file` on `/proc/self/fd/2`), which truncates it: the log holds
//! the last run's output only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::lab::bench::render_scratch_machine;
use crate::layout::{LabLayout, Layout};
use crate::shell::Shell;
use crate::stack::cache::Cache;
use crate::stack::host::{self, PYTHON_VENV, VIRTME_BUSYBOX, VIRTME_CXL, VIRTME_UDEV};
use crate::stack::{BootStack, StackKind};
use crate::sys::runner::{quote, CommandRunner};

/// The virtme-ng release `bench boot` installs: one version, so that anyone measures the same.
pub const VIRTME_NG_VERSION: &str = "1.42";

/// What virtme-ng is given of a lab's rendered QEMU argv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CxlMachineOptions {
    /// `--cpus`: the lab's `-smp`.
    pub cpus: String,
    /// `--memory`: the size of the lab's `-m` (its `maxmem` and `slots` come in `qemu_opts`).
    pub memory: String,
    /// `--qemu-opts`: the firmware directory (`-L`), `-machine`, `-m`, the memory backends and the
    /// CXL devices, in the lab's order. Not the lab's own plumbing (QMP, guest agent, serial,
    /// RNG, disk, 9p shares, network) nor a profile's raw `qemu_extra`.
    pub qemu_opts: Vec<String>,
}

/// The CXL machine of a lab's QEMU argv (`argv[0]` the binary), for virtme-ng.
pub fn cxl_machine_options(argv: &[String]) -> anyhow::Result<CxlMachineOptions> {
    let mut cpus = None;
    let mut memory = None;
    let mut qemu_opts = Vec::new();
    let mut arguments = argv.iter().skip(1).peekable();
    while let Some(option) = arguments.next() {
        // Options without a value (`-nodefaults`) are followed by the next option.
        let Some(value) = arguments.next_if(|value| !value.starts_with('-')) else { continue };
        let keep = match option.as_str() {
            "-smp" => {
                cpus = Some(value.clone());
                false
            }
            "-m" => {
                memory = Some(value.split(',').next().unwrap_or(value).to_owned());
                true
            }
            "-L" | "-machine" => true,
            "-object" => value.starts_with("memory-backend-"),
            "-device" => value.starts_with("pxb-cxl") || value.starts_with("cxl-"),
            _ => false,
        };
        if keep {
            qemu_opts.extend([option.clone(), value.clone()]);
        }
    }
    let (Some(cpus), Some(memory)) = (cpus, memory) else { bail!("the rendered argv has no `-smp` or no `-m`: {argv:?}") };
    Ok(CxlMachineOptions { cpus, memory, qemu_opts })
}

/// Counts the memory devices in `cxl list -M`'s JSON (one object, or an array of them).
pub fn memdevs_listed(output: &str) -> usize {
    output.matches("\"memdev\":").count()
}

/// A virtme-ng boot of a profile's CXL machine, ready to run commands in.
pub struct VirtmeBoot {
    venv: PathBuf,
    kernel: PathBuf,
    qemu: PathBuf,
    machine: CxlMachineOptions,
}

impl VirtmeBoot {
    /// Makes sure of the host programs virtme-ng needs (installs them as root, else says how),
    /// installs virtme-ng if the cache lacks it, lays out the stack's kernel for it and renders
    /// the first host of `profile` in scratch files under the lab `files` (its memory backend
    /// files are made there).
    pub fn prepare(paths: &Layout, shell: &Shell, runner: &CommandRunner, stack: &BootStack, profile: &str, files: &LabLayout) -> anyhow::Result<VirtmeBoot> {
        let recipe = crate::stack::recipe::load(&paths.images_dir(), StackKind::Distro)?;
        let programs = [PYTHON_VENV.program, VIRTME_BUSYBOX.program, VIRTME_UDEV.program, VIRTME_CXL.program];
        host::ensure_tools(StackKind::Distro, &programs, &paths.apt_dir(), &recipe.recipe.archive, runner, shell)?;
        let venv = ensure_virtme_ng(paths, runner)?;
        let scratch = files.virtme_boot_dir();
        let kernel = link_kernel_view(&scratch.kernel_view_dir(), stack)?;
        let (argv, _) = render_scratch_machine(paths, profile, stack, &scratch, None)?;
        let machine = cxl_machine_options(&argv)?;
        // vng pastes `--run` and `--qemu` into a shell command unquoted.
        for path in [&kernel, &stack.qemu_binary] {
            let text = path.to_string_lossy();
            if quote(&text) != text {
                bail!("virtme-ng cannot take the path {} (it passes it through a shell unquoted); move the lab's state or cache to a plain path", path.display());
            }
        }
        Ok(VirtmeBoot { venv, kernel, qemu: stack.qemu_binary.clone(), machine })
    }

    /// `vng` booting the machine under TCG and running `guest_command` in a shell of its guest;
    /// it exits when the command has run, with the command's stdout as its own.
    pub fn command(&self, guest_command: &str) -> Command {
        let bin = self.venv.join("bin");
        // vng starts `virtme-run` from PATH.
        let path = std::env::var_os("PATH").map(|path| format!("{}:{}", bin.display(), path.to_string_lossy())).unwrap_or_else(|| bin.display().to_string());
        let mut command = Command::new(bin.join("vng"));
        command.env("PATH", path).arg("--run").arg(&self.kernel).arg("--disable-kvm").arg("--qemu").arg(&self.qemu);
        command.args(["--cpus", &self.machine.cpus, "--memory", &self.machine.memory, "--exec", guest_command]);
        // vng joins these into a shell command: each one quoted survives it as one argument.
        let qemu_opts: Vec<String> = self.machine.qemu_opts.iter().map(|option| quote(option)).collect();
        command.arg(format!("--qemu-opts={}", qemu_opts.join(" ")));
        command
    }
}

/// The venv holding virtme-ng [`VIRTME_NG_VERSION`], made from PyPI the first time (under a cache
/// lock; a venv left half made by a killed run is made again).
fn ensure_virtme_ng(paths: &Layout, runner: &CommandRunner) -> anyhow::Result<PathBuf> {
    let venv = paths.python_venv_dir("virtme-ng", VIRTME_NG_VERSION);
    let installed = venv.join("cxl-lab-installed");
    let _lock = Cache::new(paths).lock(&format!("venv-virtme-ng-{VIRTME_NG_VERSION}"))?;
    if installed.is_file() {
        return Ok(venv);
    }
    if venv.exists() {
        fs_err::remove_dir_all(&venv)?;
    }
    // Debian's Python, whose venv module `host setup` installs (python3-venv), not a user's own
    // Python first in PATH.
    runner.run("virtme-ng-venv", Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(&venv))?;
    let requirement = format!("virtme-ng=={VIRTME_NG_VERSION}");
    runner.run("virtme-ng-install", Command::new(venv.join("bin/pip")).args(["install", "--disable-pip-version-check", "--no-input", &requirement]))?;
    fs_err::write(&installed, format!("{requirement}\n"))?;
    Ok(venv)
}

/// `dir/vmlinuz` and `dir/lib/modules` as links to the stack's kernel and its modules; returns
/// the kernel's path in `dir`.
fn link_kernel_view(dir: &Path, stack: &BootStack) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        fs_err::remove_dir_all(dir)?;
    }
    fs_err::create_dir_all(dir.join("lib"))?;
    let kernel = dir.join("vmlinuz");
    std::os::unix::fs::symlink(&stack.kernel, &kernel).with_context(|| format!("linking {}", kernel.display()))?;
    let modules = dir.join("lib/modules");
    std::os::unix::fs::symlink(&stack.modules_dir, &modules).with_context(|| format!("linking {}", modules.display()))?;
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    // What it keeps of each shipped profile's argv: `tests/profile_snapshots.rs`.

    #[test]
    fn an_argv_without_smp_is_an_error() {
        let argv: Vec<String> = ["qemu", "-m", "2G", "-machine", "q35"].map(str::to_owned).into();
        let error = cxl_machine_options(&argv).unwrap_err();
        assert!(error.to_string().contains("no `-smp`"), "{error}");
    }

    #[test]
    fn counts_memdevs_in_one_object_or_an_array() {
        assert_eq!(memdevs_listed(r#"{"memdev":"mem0","pmem_size":536870912,"serial":100}"#), 1);
        assert_eq!(memdevs_listed("[\n  {\n    \"memdev\":\"mem0\"\n  },\n  {\n    \"memdev\":\"mem1\"\n  }\n]"), 2);
        assert_eq!(memdevs_listed("  Warning: no matching devices found\n[\n]"), 0);
    }
}
