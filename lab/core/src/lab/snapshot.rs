//! Boot once, test many (`lab up --snapshot`; `lab run` and `lab matrix` by default): a machine
//! booted lean and settled is saved as a cache artifact (its state and its disk), and later labs
//! on the same profile, stack and command line start from it in about a second instead of booting.
//!
//! - **Key**: the machine's argv with the lab's own directory written as `@LAB@` (so every lab
//!   shares it; QEMU, the kernel, the initramfs and the modules are in it by their artifact
//!   paths, and so are the topology, the accelerator and the command line), the root filesystem
//!   image, and [`SNAPSHOT_FORMAT`]. Any change of input is another key.
//! - **Taking**: after the guest agent first answers on a fresh disk and before the lab's secrets
//!   are set (a snapshot holds no lab's password or key): wait until the guest's uevents are quiet
//!   and no `modprobe` runs, unmount the two 9p shares (QEMU refuses to migrate while a 9p export
//!   is mounted, and a share's files are the host's, not the snapshot's), stop, save the state,
//!   copy the disk (QEMU flushed and released it), resume and mount the shares again.
//! - **Restoring**: the machine's disk is the snapshot's, QEMU starts with `-incoming`, and is
//!   resumed once its state is loaded; when the agent answers, the shares are mounted and the
//!   guest's clock set (it stood still since the snapshot).
//! - A full boot is never saved (systemd's services hold the shares); where a snapshot cannot be
//!   taken the reason is said and the lab runs as booted.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use fs_err as fs;
use serde::Serialize;

use crate::lab::plan::LabPlan;
use crate::lab::state::{MachineState, PlannedMachine};
use crate::lab::LabContext;
use crate::model::BootMode;
use crate::stack::cache::{ArtifactKind, Cache, CacheKey, Lookup};
use crate::stack::BootStack;
use crate::sys::runner::CommandRunner;
use crate::vm::agent::GuestAgent;
use crate::vm::qmp::QmpClient;

/// Bumped when what a snapshot holds, or how it is taken, changes.
const SNAPSHOT_FORMAT: u32 = 1;
/// The machine's state (QEMU's migration stream) in a snapshot artifact.
const STATE_FILE: &str = "machine.state";
/// The machine's disk, a qcow2 over the stack's root filesystem image, as it was when saved.
const DISK_FILE: &str = "disk.qcow2";
/// Saving writes about 200 MB per machine; loading reads it back.
const SAVE_TIMEOUT: Duration = Duration::from_secs(180);
const LOAD_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the guest may take to finish loading drivers before it is saved.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet means: no new uevent for 0.4 s and no `modprobe` running (the lean init loads the
/// drivers of each device's uevent); gives up after 30 s.
const SETTLE_SCRIPT: &str = "last=; for i in $(seq 150); do read -r now < /sys/kernel/uevent_seqnum; \
    if [ \"$now\" = \"$last\" ] && ! pgrep -x modprobe >/dev/null; then exit 0; fi; last=$now; sleep 0.2; done; \
    echo 'uevents did not stop within 30 s' >&2; exit 1";
/// The 9p shares, by the names the image's fstab gives them.
const UNMOUNT_SHARES: &str = "umount /mnt/share && umount /lib/modules";
const MOUNT_SHARES: &str = "mountpoint -q /lib/modules || mount /lib/modules; mountpoint -q /mnt/share || mount /mnt/share";

/// What a lab does with snapshots, machine by machine in the plan's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snapshots {
    /// Not asked for, or not possible (the reason was said).
    Off,
    /// The machines boot, and each is saved under its key once its agent answers.
    Take(Vec<CacheKey>),
    /// The machines start from these snapshot artifacts.
    Restore(Vec<PathBuf>),
}

#[derive(Serialize)]
struct SnapshotInputs<'a> {
    format: u32,
    argv: Vec<String>,
    rootfs_image: &'a Path,
}

/// The snapshot key of a planned machine of the lab in `lab_dir`.
fn key_of(lab_dir: &Path, machine: &PlannedMachine, stack: &BootStack) -> (CacheKey, serde_json::Value) {
    let lab_dir = lab_dir.to_string_lossy();
    let argv = machine.argv.iter().map(|word| word.replace(lab_dir.as_ref(), "@LAB@")).collect();
    let inputs = SnapshotInputs { format: SNAPSHOT_FORMAT, argv, rootfs_image: &stack.rootfs_image };
    (CacheKey::of(ArtifactKind::Snapshot, &inputs), serde_json::to_value(&inputs).expect("snapshot inputs serialize"))
}

/// Whether this lab restores its machines, saves them once booted, or neither (said why).
pub fn decide(context: &LabContext, plan: &LabPlan, boot: BootMode) -> anyhow::Result<Snapshots> {
    if boot != BootMode::Lean {
        context.shell.status("No snapshot", "only a lean boot is saved (a full boot's services hold the 9p shares); booting");
        return Ok(Snapshots::Off);
    }
    let runner = CommandRunner::new(context.files.logs_dir());
    let qemu = &plan.launch.boot_stack.qemu_binary;
    let mut unsaved = Vec::new();
    for machine in &plan.launch.machines {
        for device in crate::vm::snapshot::cxl_devices_without_state(&runner, qemu, &machine.argv)? {
            if !unsaved.contains(&device) {
                unsaved.push(device);
            }
        }
    }
    if !unsaved.is_empty() {
        context.shell.status(
            "No snapshot",
            format!(
                "{} (QEMU {}) does not save the state of {}: a restored guest would find those devices reset; booting (the source stack's QEMU saves them)",
                qemu.display(),
                plan.launch.boot_stack.qemu_version,
                unsaved.join(", ")
            ),
        );
        return Ok(Snapshots::Off);
    }
    let cache = Cache::new(&context.paths);
    let mut found = Vec::new();
    let mut keys = Vec::new();
    for machine in &plan.launch.machines {
        let (key, _) = key_of(&context.files.dir, machine, &plan.launch.boot_stack);
        match cache.check(ArtifactKind::Snapshot, &key)? {
            Lookup::Hit(path) | Lookup::Adopted(path) => found.push(path),
            Lookup::Damaged(damage) => context.shell.warn(format!("the snapshot of `{}` is damaged ({damage}); it is taken again", machine.host)),
            Lookup::Miss => {}
        }
        keys.push(key);
    }
    if found.len() == keys.len() {
        context.shell.status("Snapshot", format!("restoring {} machine(s) instead of booting", found.len()));
        Ok(Snapshots::Restore(found))
    } else {
        context.shell.status("Snapshot", "none yet for this profile, stack and command line: booting, then saving it");
        Ok(Snapshots::Take(keys))
    }
}

/// Makes each planned machine start from its snapshot: its disk becomes the snapshot's (over the
/// fresh overlay's base) and its argv loads the state. For [`Snapshots::Restore`] only.
pub fn start_from(plan: &mut LabPlan, snapshots: &[PathBuf]) -> anyhow::Result<()> {
    for (machine, snapshot) in plan.launch.machines.iter_mut().zip(snapshots) {
        fs::copy(snapshot.join(DISK_FILE), &machine.overlay)?;
        machine.argv = crate::vm::snapshot::incoming_argv(&machine.argv, &snapshot.join(STATE_FILE))?;
    }
    Ok(())
}

/// Runs a machine started from a snapshot once QEMU has loaded its state.
pub fn resume_restored(machine: &MachineState) -> anyhow::Result<()> {
    let mut qmp = connect_qmp(machine, LOAD_TIMEOUT)?;
    crate::vm::snapshot::resume(&mut qmp, LOAD_TIMEOUT).with_context(|| format!("starting `{}` from its snapshot", machine.host))
}

/// A restored guest, once its agent answers: the shares mounted, the clock set to now.
pub fn finish_restore(machine: &MachineState, agent: &mut GuestAgent) -> anyhow::Result<()> {
    guest_script(agent, MOUNT_SHARES, SCRIPT_TIMEOUT)?;
    // With `date`: the agent's `guest-set-time` also writes the RTC through `hwclock`, which the
    // image lacks.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
    let set_clock = format!("date -s @{}.{:09} >/dev/null", now.as_secs(), now.subsec_nanos());
    guest_script(agent, &set_clock, SCRIPT_TIMEOUT).with_context(|| format!("setting the clock of `{}` after its restore", machine.host))
}

/// Saves a freshly booted machine under `key` and lets it run on; its shares are mounted again
/// whatever happened. An error says why there is no snapshot; the machine runs either way.
pub fn take(context: &LabContext, key: &CacheKey, machine: &PlannedMachine, state: &MachineState, stack: &BootStack, agent: &mut GuestAgent) -> anyhow::Result<()> {
    guest_script(agent, SETTLE_SCRIPT, SETTLE_TIMEOUT).context("the guest did not settle")?;
    let unmounted = guest_script(agent, UNMOUNT_SHARES, SCRIPT_TIMEOUT).context("unmounting the 9p shares");
    let saved = unmounted.and_then(|()| {
        let mut qmp = connect_qmp(state, SCRIPT_TIMEOUT)?;
        let (_, inputs) = key_of(&context.files.dir, machine, stack);
        let saved = Cache::new(&context.paths).get_or_build(ArtifactKind::Snapshot, key, inputs, |staging| {
            crate::vm::snapshot::save_state(&mut qmp, &staging.join(STATE_FILE), SAVE_TIMEOUT)?;
            fs::copy(&machine.overlay, staging.join(DISK_FILE))?;
            Ok(())
        });
        // Also when saving failed half-way: the machine may be stopped.
        let resumed = crate::vm::snapshot::resume(&mut qmp, SCRIPT_TIMEOUT);
        saved.and_then(|path| resumed.map(|()| path))
    });
    let mounted = guest_script(agent, MOUNT_SHARES, SCRIPT_TIMEOUT).context("mounting the 9p shares again");
    let path = saved?;
    mounted?;
    context.shell.status("Snapshot", format!("saved `{}` ({})", state.host, path.display()));
    Ok(())
}

/// QMP of a machine whose QEMU may still be creating its socket.
fn connect_qmp(machine: &MachineState, timeout: Duration) -> anyhow::Result<QmpClient> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match QmpClient::connect(&machine.qmp_socket) {
            Ok(mut qmp) => {
                qmp.set_command_timeout(timeout);
                return Ok(qmp);
            }
            Err(error) if std::time::Instant::now() >= deadline || !machine.qemu_runs() => {
                return Err(error).with_context(|| format!("QMP of `{}`", machine.host));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs a shell script in the guest; an exit code other than 0 is an error quoting its stderr.
fn guest_script(agent: &mut GuestAgent, script: &str, timeout: Duration) -> anyhow::Result<()> {
    let argv = ["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let output = agent.exec(&argv, None, timeout)?;
    if output.exit_code != Some(0) {
        bail!("`{script}` ended with {:?}: {}", output.exit_code, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(argv: &[&str]) -> PlannedMachine {
        PlannedMachine {
            host: "host0".to_owned(),
            argv: argv.iter().map(|word| word.to_string()).collect(),
            run_dir: PathBuf::from("/state/labs/a/run/host0"),
            overlay: PathBuf::from("/state/labs/a/disks/host0.qcow2"),
            ssh_port: None,
        }
    }

    fn stack() -> BootStack {
        BootStack {
            stack: crate::stack::StackKind::Distro,
            qemu_binary: PathBuf::from("/q/qemu-system-x86_64"),
            qemu_version: crate::qemu::QemuVersion::new(10, 0, 2),
            qemu_data_dir: None,
            kernel: PathBuf::from("/c/vmlinuz"),
            initrd: None,
            modules_dir: PathBuf::from("/c/modules"),
            kernel_release: "7.3.4".to_owned(),
            rootfs_image: PathBuf::from("/c/rootfs-1/rootfs.img"),
        }
    }

    #[test]
    fn labs_share_a_snapshot_and_any_other_input_is_another_key() {
        let in_lab_a = machine(&["qemu", "-qmp", "unix:/state/labs/a/run/host0/qmp.sock", "-m", "2G"]);
        let in_lab_b = machine(&["qemu", "-qmp", "unix:/state/labs/b/run/host0/qmp.sock", "-m", "2G"]);
        let (a, _) = key_of(Path::new("/state/labs/a"), &in_lab_a, &stack());
        let (b, _) = key_of(Path::new("/state/labs/b"), &in_lab_b, &stack());
        assert_eq!(a, b);
        let more_memory = machine(&["qemu", "-qmp", "unix:/state/labs/a/run/host0/qmp.sock", "-m", "4G"]);
        assert_ne!(key_of(Path::new("/state/labs/a"), &more_memory, &stack()).0, a);
        let other_image = BootStack { rootfs_image: PathBuf::from("/c/rootfs-2/rootfs.img"), ..stack() };
        assert_ne!(key_of(Path::new("/state/labs/a"), &in_lab_a, &other_image).0, a);
    }
}
