//! The distro kernel, fetched through the private apt, boots the initramfs cxl-lab builds.
//!
//! Real downloads (kernel and busybox-static from the Debian archive, about 125 MB, cached in
//! `target/tmp` or `$CXL_LAB_CACHE`), a real initramfs, and a real QEMU under TCG on q35 with
//! `cxllab.bare=1`: `/init` loads its modules, prints the marker and powers off. Needs the Debian
//! archive and a QEMU (skipped with the reason outside CI when either is missing).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cxl_lab_core::stack::build::initramfs::BARE_READY_MARKER;
use cxl_lab_core::prerequisites::{require, test_qemu, Prerequisite};
use cxl_lab_core::stack::distro::{self, StackOptions};
use cxl_lab_core::{Layout, Shell};

/// TCG boots this kernel to /init in about 5 s here; CI machines may be slower.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// QEMU is killed and reaped however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn test_paths() -> Layout {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut paths = Layout::for_workspace(workspace);
    if std::env::var_os("CXL_LAB_CACHE").is_none() {
        paths.cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cxl-lab-cache");
    }
    paths
}

#[test]
fn distro_kernel_boots_the_generated_initramfs() {
    if !require(&[Prerequisite::Archive, Prerequisite::Qemu]) {
        return;
    }
    let paths = test_paths();
    // The checked-in lock is used when it still answers; the test never rewrites it.
    let options = StackOptions { locked: false, write_lock: false };
    let (kernel, _) = distro::ensure_distro_kernel(&paths, &Shell::plain(), &options).expect("kernel and initramfs");
    let qemu = Command::new(test_qemu())
        .args(["-accel", "tcg", "-machine", "q35", "-m", "512", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.kernel)
        .arg("-initrd")
        .arg(&kernel.initrd)
        .args(["-append", "console=ttyS0 cxllab.bare=1 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let mut qemu = KillOnDrop(qemu);

    let (lines_sender, lines) = mpsc::channel();
    let stdout = qemu.0.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });

    let started = Instant::now();
    let mut serial = Vec::new();
    let mut found = false;
    while let Some(remaining) = BOOT_TIMEOUT.checked_sub(started.elapsed()) {
        match lines.recv_timeout(remaining) {
            Ok(line) => {
                found |= line.trim_end() == BARE_READY_MARKER;
                serial.push(line);
            }
            Err(_) => break,
        }
    }
    let transcript = serial.join("\n");
    assert!(found, "no `{BARE_READY_MARKER}` within {BOOT_TIMEOUT:?}; serial output:\n{transcript}");
    assert!(!transcript.contains("cxl-lab: insmod"), "a module failed to load:\n{transcript}");
    let status = qemu.0.wait().expect("qemu exits");
    assert!(status.success(), "qemu exited with {status} after powering off:\n{transcript}");
    eprintln!("bare initramfs booted in {:.1} s (kernel {})", started.elapsed().as_secs_f64(), kernel.kernel_release);
}
