//! What the `cargo xtask bench` commands measure inside the tool: the lab's kernel and initramfs
//! booted bare (`cxllab.bare=1`: the initramfs prints a marker and powers off) on a profile's
//! topology, the floor that the lab's own boot to a guest agent is compared with; and a profile's
//! machine rendered into scratch files, which virtme-ng's boot ([`crate::lab::virtme`]) takes its
//! CXL arguments from.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::lab::plan::boot_media;
use crate::layout::LabLayout;
use crate::layout::Layout;
use crate::layout::MachineRunDir;
use crate::model::BootMode;
use crate::qemu::Accel;
use crate::render::{backend_files, render_machine, BootMedia, RenderInputs};
use crate::stack::build::initramfs::BARE_READY_MARKER;
use crate::stack::BootStack;
use crate::sys::runner::CommandRunner;
use crate::vm::backing::prepare_backend_files;
use crate::vm::disks::ensure_overlay;
use crate::vm::supervisor::{MachineSpec, RunningMachine};

/// How long the bare initramfs may take to print its marker.
const BARE_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The argv of the first host of `profile` as a lab renders it under TCG, with its run directory,
/// in the scratch lab `scratch`, whose memory backend files it creates; `boot` as in a lab, or
/// `None` for the machine alone.
pub fn render_scratch_machine(paths: &Layout, profile: &str, stack: &BootStack, scratch: &LabLayout, boot: Option<BootMedia>) -> anyhow::Result<(Vec<String>, MachineRunDir)> {
    let profile = crate::profile::load(paths, profile)?;
    let host = &profile.topology.hosts[0];
    let run_dir = scratch.run_dir(&host.name);
    let memory_dir = scratch.memory_dir();
    prepare_backend_files(&backend_files(&profile.topology, host, &memory_dir)?)?;
    let inputs = RenderInputs::new(&stack.qemu_binary, stack.qemu_version, stack.qemu_data_dir.as_deref(), run_dir.clone(), &memory_dir, Accel::Tcg, boot);
    Ok((render_machine(&profile, 0, &inputs)?.argv, run_dir))
}

/// Boots `profile`'s topology with the stack's kernel and initramfs in bare mode, in scratch files
/// under the lab `files`; returns QEMU's spawn to the initramfs's ready marker.
pub fn bare_initramfs_boot(paths: &Layout, runner: &CommandRunner, stack: &BootStack, profile: &str, files: &LabLayout) -> anyhow::Result<Duration> {
    let scratch = files.bare_boot_dir();
    let overlay = scratch.overlay("unused-root");
    std::fs::create_dir_all(&scratch.dir).with_context(|| format!("creating {}", scratch.dir.display()))?;
    // The initramfs powers off before it looks for a root; the disk is there so the argv matches
    // the lab's exactly.
    ensure_overlay(runner, &stack.qemu_binary, &stack.rootfs_image, &overlay, false)?;
    // The lean boot's argv, so that the two differ only in `cxllab.bare=1`.
    let boot = boot_media(stack, BootMode::Lean, &overlay, &files.data_dir(), None, &["cxllab.bare=1".to_owned()]);
    let (argv, run_dir) = render_scratch_machine(paths, profile, stack, &scratch, Some(boot))?;
    let spec = MachineSpec { name: "bare".to_owned(), argv, run_dir: run_dir.clone() };
    let started = Instant::now();
    let mut machine = RunningMachine::spawn(&spec)?;
    let deadline = started + BARE_BOOT_TIMEOUT;
    while Instant::now() < deadline {
        let serial = std::fs::read(run_dir.serial_log()).unwrap_or_default();
        if String::from_utf8_lossy(&serial).contains(BARE_READY_MARKER) {
            return Ok(started.elapsed());
        }
        machine.check_running("before the bare initramfs was ready")?;
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the bare initramfs did not print `{BARE_READY_MARKER}` within {} s; see {}", BARE_BOOT_TIMEOUT.as_secs(), run_dir.serial_log().display())
}
