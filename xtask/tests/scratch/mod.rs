//! A private world for the data-fault tests, under `/tmp/cxl-d-<pid>-<tag>/`: `images/` (the
//! checkout's recipe, and its lock with every .deb served by a local `copy://` mirror, so that a
//! download done again needs no network), an empty artifact cache and lab state. Everything runs
//! through the real command line. The caller's cache (`CXL_LAB_CACHE` or the default) is only
//! read: what a test damages is always a byte copy in the scratch cache.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cxl_lab_core::stack::debian::apt::{check_deb, DebFile};
use cxl_lab_core::stack::cache::Cache;
use cxl_lab_core::stack::lock::{self, StackLock};
use cxl_lab_core::prerequisites::{require, Prerequisite};
use cxl_lab_core::sys::runner::CommandRunner;
use cxl_lab_core::stack::sources::{DebPin, Pin};
use cxl_lab_core::Layout;

pub struct Scratch {
    pub root: PathBuf,
    pub images: PathBuf,
    pub cache: PathBuf,
    pub state: PathBuf,
    pub mirror: PathBuf,
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The caller's paths: the checkout, and the cache `CXL_LAB_CACHE` names (or the default).
pub fn caller_paths() -> Layout {
    let mut paths = Layout::for_workspace(workspace());
    paths.state = std::env::temp_dir().join("cxl-d-unused-state");
    paths
}

/// Every .deb the checkout's lock pins (kernel parts, then busybox).
pub fn locked_debs() -> Vec<DebPin> {
    let lock = StackLock::read(&lock::lock_path(&workspace().join("images"), cxl_lab_core::stack::StackKind::Distro))
        .unwrap()
        .expect("images/distro.lock exists (it is committed)");
    let mut debs = Vec::new();
    for pin in [lock.kernel.map(|kernel| kernel.component.pin), lock.busybox.map(|busybox| busybox.pin)].into_iter().flatten() {
        if let Pin::Debian { packages, .. } = pin {
            debs.extend(packages);
        }
    }
    assert!(!debs.is_empty(), "images/distro.lock pins no .deb");
    debs
}

impl Scratch {
    /// An empty scratch world with a copy of the checkout's recipe and lock.
    pub fn new(tag: &str) -> Scratch {
        let root = PathBuf::from(format!("/tmp/cxl-d-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let scratch = Scratch {
            images: root.join("images"),
            cache: root.join("cache"),
            state: root.join("state"),
            mirror: root.join("mirror"),
            root,
        };
        for dir in [&scratch.images, &scratch.cache, &scratch.state, &scratch.mirror] {
            std::fs::create_dir_all(dir).unwrap();
        }
        for file in ["distro.yaml", "distro.lock"] {
            std::fs::copy(workspace().join("images").join(file), scratch.images.join(file)).unwrap();
        }
        scratch
    }

    /// Serves every locked .deb from `mirror/` (`copy://`, a real copy by apt's own method) and
    /// points the scratch lock at it. The .debs come from the caller's cache, downloaded there
    /// first when missing (then the Debian archive must answer). `None` when a test must skip.
    pub fn with_local_mirror(self) -> Option<Scratch> {
        let caller = caller_paths();
        let cache = Cache::new(&caller);
        let debs = locked_debs();
        let missing: Vec<DebPin> = debs
            .iter()
            .filter(|pin| check_deb(&cache.layout.downloads_dir().join(pin.file_name()), pin).unwrap() != DebFile::Whole)
            .cloned()
            .collect();
        if !missing.is_empty() {
            if !require(&[Prerequisite::Archive]) {
                return None;
            }
            // Through the cache's own download path (its locks, its checks).
            let runner = CommandRunner::new(caller.build_logs_dir());
            let pin = Pin::Debian { suite: String::new(), packages: missing };
            cxl_lab_core::stack::debian::fetch(&cache, &runner, &pin, None).unwrap();
        }
        let url = format!("copy://{}", self.mirror.display());
        for pin in &debs {
            let served = self.mirror.join(&pin.filename);
            std::fs::create_dir_all(served.parent().unwrap()).unwrap();
            std::fs::copy(cache.layout.downloads_dir().join(pin.file_name()), &served).unwrap();
        }
        let lock_path = self.images.join("distro.lock");
        let mut lock: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&lock_path).unwrap()).unwrap();
        for component in ["kernel", "busybox"] {
            for package in lock[component]["pin"]["packages"].as_array_mut().unwrap() {
                package["mirror"] = serde_json::Value::String(url.clone());
            }
        }
        std::fs::write(&lock_path, serde_json::to_string_pretty(&lock).unwrap()).unwrap();
        Some(self)
    }

    /// The scratch lock's pins (with the mirror rewritten).
    pub fn debs(&self) -> Vec<DebPin> {
        let lock = StackLock::read(&self.images.join("distro.lock")).unwrap().unwrap();
        [lock.kernel.map(|kernel| kernel.component.pin), lock.busybox.map(|busybox| busybox.pin)]
            .into_iter()
            .flatten()
            .flat_map(|pin| match pin {
                Pin::Debian { packages, .. } => packages,
                _ => Vec::new(),
            })
            .collect()
    }

    /// `xtask ARGS` against the scratch images, cache and state. Nothing it prints may be a panic.
    pub fn xtask(&self, arguments: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(arguments)
            .env("CXL_LAB_IMAGES", &self.images)
            .env("CXL_LAB_CACHE", &self.cache)
            .env("CXL_LAB_STATE", &self.state)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("$ xtask {}\n  exit: {}\n  stdout: {}\n  stderr: {stderr}", arguments.join(" "), output.status, String::from_utf8_lossy(&output.stdout));
        assert!(!stderr.contains("panicked"), "`xtask {}` panicked", arguments.join(" "));
        output
    }

    /// Runs a command that must succeed; its stderr.
    pub fn succeeds(&self, arguments: &[&str]) -> String {
        let output = self.xtask(arguments);
        assert!(output.status.success(), "`xtask {}` failed", arguments.join(" "));
        String::from_utf8(output.stderr).unwrap()
    }

    /// Runs a command that must fail with exit code 1; its stderr.
    pub fn fails(&self, arguments: &[&str]) -> String {
        let output = self.xtask(arguments);
        assert_eq!(output.status.code(), Some(1), "`xtask {}` should fail with 1", arguments.join(" "));
        String::from_utf8(output.stderr).unwrap()
    }

    /// Entries of a scratch cache directory (`tmp`, `artifacts`, `downloads`), sorted.
    pub fn entries(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cache.join(dir))
            .map(|entries| entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Overwrites one byte at `offset` with its complement and puts the mtime back, as a bit flip
/// through the file system would look to anything that trusts mtimes.
pub fn flip_byte_keeping_mtime(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt as _;
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    let file = std::fs::File::options().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[!byte[0]], offset).unwrap();
    file.set_modified(modified).unwrap();
}

/// Cuts a file to `length` bytes.
pub fn truncate(path: &Path, length: u64) {
    std::fs::File::options().write(true).open(path).unwrap().set_len(length).unwrap();
}
