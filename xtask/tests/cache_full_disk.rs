//! The artifact cache on a full file system, for real: a tmpfs mounted as the scratch cache, sized
//! from the locked .debs so that first a download cannot fit, then the downloads fit but the
//! unpacked kernel does not; each run must fail with an error naming the step, the path and "No
//! space left on device", leave no partial download, staging directory or artifact behind, and
//! the run after the file system is grown must succeed. Needs root (mount).

mod scratch;

use std::path::{Path, PathBuf};
use std::process::Command;

use cxl_lab_core::stack::debian::apt::{check_deb, DebFile};
use cxl_lab_core::prerequisites::{require, Prerequisite};
use scratch::Scratch;

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted over a directory, unmounted however the test ends.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Tmpfs {
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={}k", bytes / 1024), "tmpfs"]).arg(dir).status().unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs { dir: dir.to_path_buf() }
    }

    fn resize(&self, bytes: u64) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={}k", bytes / 1024)]).arg(&self.dir).status().unwrap();
        assert!(status.success(), "resizing the tmpfs on {}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !Command::new("umount").arg(&self.dir).status().is_ok_and(|status| status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Nothing half-written: no staging directory, no artifact, no partial download, and every
/// download there is whole (its pinned size and sha256).
fn nothing_half_written(scratch: &Scratch) {
    assert_eq!(scratch.entries("tmp"), Vec::<String>::new(), "staging directories left behind");
    assert_eq!(scratch.entries("artifacts"), Vec::<String>::new(), "an artifact was published");
    let debs = scratch.debs();
    for name in scratch.entries("downloads") {
        assert!(!name.ends_with(".partial"), "a partial download was left: {name}");
        let pin = debs.iter().find(|pin| pin.file_name() == name).unwrap_or_else(|| panic!("unexpected download {name}"));
        assert_eq!(check_deb(&scratch.cache.join("downloads").join(&name), pin).unwrap(), DebFile::Whole, "{name}");
    }
}

#[test]
fn a_full_cache_file_system_fails_clearly_leaves_nothing_half_written_and_recovers() {
    if !require(&[Prerequisite::Root]) {
        return;
    }
    let Some(scratch) = Scratch::new("full").with_local_mirror() else { return };
    let debs: u64 = scratch.debs().iter().map(|pin| pin.size).sum();
    let largest = scratch.debs().iter().map(|pin| pin.size).max().unwrap();
    let downloads = scratch.cache.join("downloads");

    // Too small for the largest .deb: refused before a byte of it is written.
    let tmpfs = Tmpfs::mount(&scratch.cache, largest / 2);
    let error = scratch.fails(&["build", "kernel", "--locked"]);
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains("downloading kernel"), "the step: {error}");
    assert!(error.contains(&downloads.display().to_string()), "the path: {error}");
    nothing_half_written(&scratch);

    // Room for every .deb but not for the unpacked kernel: dpkg-deb fills the disk.
    tmpfs.resize(debs + 16 * MIB);
    let error = scratch.fails(&["build", "kernel", "--locked"]);
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains("building kernel artifact"), "{error}");
    assert!(error.contains("step `extract-linux-"), "the step: {error}");
    assert!(error.contains(&scratch.cache.join("tmp").display().to_string()), "the path: {error}");
    nothing_half_written(&scratch);
    assert!(!scratch.entries("downloads").is_empty(), "the whole downloads are kept for the next run");

    // With room, the next run works and what it publishes is whole.
    tmpfs.resize(4 * debs + 64 * MIB);
    scratch.succeeds(&["build", "kernel", "--locked"]);
    assert_eq!(scratch.entries("tmp"), Vec::<String>::new());
    assert_eq!(scratch.entries("artifacts").len(), 2, "kernel and initramfs");
    assert!(scratch.xtask(&["cache", "verify"]).status.success());
    drop(tmpfs);
}
