//! Building artifacts from fetched sources, one module an artifact: the kernel with its modules
//! ([`kernel`]), the initramfs that mounts the root ([`initramfs`]), the root filesystem image
//! ([`rootfs`], configured by [`rootfs_config`]). Each builds into a staging directory that the
//! cache publishes; none of them decides what to build or where it comes from.

pub mod initramfs;
pub mod kernel;
pub mod rootfs;
pub mod rootfs_config;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::shell::StepProgress;

/// Runs `work` while the step's spinner shows the last line of its log, so a long step (minutes
/// of debootstrap) shows what it is doing. Without a terminal the spinner is off and this only runs `work`.
pub fn follow_log<T>(progress: &StepProgress, log: &Path, work: impl FnOnce() -> T) -> T {
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                if let Some(line) = last_line(log) {
                    progress.set_message(line);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let result = work();
        finished.store(true, Ordering::Relaxed);
        result
    })
}

/// Runs `work` while the step shows how many of `total` bytes the `files` hold (downloads).
pub fn follow_growth<T>(progress: &StepProgress, files: &[PathBuf], total: u64, work: impl FnOnce() -> T) -> T {
    const MIB: u64 = 1024 * 1024;
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                let arrived: u64 = files.iter().filter_map(|file| std::fs::metadata(file).ok()).map(|metadata| metadata.len()).sum();
                progress.set_position(arrived);
                progress.set_message(format!("{} of {} MiB", arrived / MIB, total.div_ceil(MIB)));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let result = work();
        finished.store(true, Ordering::Relaxed);
        result
    })
}

fn last_line(log: &Path) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(2048))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    Some(line.chars().take(70).collect())
}
