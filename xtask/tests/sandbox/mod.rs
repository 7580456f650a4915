//! A private world for the fault tests: lab state, a copy of `images/` (a run must never rewrite
//! the checkout's lock) and optionally a scratch artifact cache, all under one directory in
//! `/tmp`, and the processes the test's commands start, found by the `CXL_LAB_STATE` they all
//! inherit (`lab up`, its supervisor, QEMU, and every build step down to debootstrap's chroot).
//! Dropping the sandbox takes the lab down, kills whatever of it still runs, and removes the
//! directory: a failing test leaves no QEMU, supervisor or build behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cxl_lab_core::prerequisites::{require, Prerequisite};
use serde_json::Value;

pub struct Sandbox {
    pub root: PathBuf,
    pub state: PathBuf,
    pub images: PathBuf,
    /// The scratch cache, when the test has one; otherwise the commands use the caller's.
    pub cache: Option<PathBuf>,
    pub lab: String,
    /// One sandbox at a time in a test binary: two cores do not boot two guests in parallel
    /// within anyone's timeout. Released after `drop` has cleaned up.
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Sandbox {
    /// A sandbox for a test that boots guests (root, QEMU, and the archive for a cold cache), or
    /// `None` when the test is skipped (see `prerequisites`). `tag` names the lab and the
    /// directory; keep it short (unix socket paths below the state directory must stay under 108
    /// bytes).
    pub fn for_guests(tag: &str) -> Option<Sandbox> {
        require(&[Prerequisite::Root, Prerequisite::Qemu, Prerequisite::Archive]).then(|| Sandbox::new(tag))
    }

    fn new(tag: &str) -> Sandbox {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let root = PathBuf::from(format!("/tmp/cxl-f-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let state = root.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let images = root.join("images");
        let status = Command::new("cp").arg("-a").arg(workspace().join("images")).arg(&images).status().unwrap();
        assert!(status.success(), "copying images/");
        Sandbox { root, state, images, cache: None, lab: tag.to_owned(), _one_at_a_time: one_at_a_time }
    }

    /// A scratch cache holding `entries` of the caller's cache (paths relative to it, missing
    /// ones skipped), hard-linked (artifacts are never written after they are published, the
    /// shared downloads and package caches are only added to), copied across file systems.
    pub fn with_scratch_cache(mut self, entries: &[String]) -> Sandbox {
        let source = caller_cache();
        let cache = self.root.join("cache");
        for entry in entries {
            let from = source.join(entry);
            if !from.exists() {
                eprintln!("sandbox: {} is not in the caller's cache; it will be built", from.display());
                continue;
            }
            let to = cache.join(entry);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let copied = Command::new("cp").arg("-al").arg(&from).arg(&to).status().unwrap().success();
            if !copied {
                let _ = std::fs::remove_dir_all(&to);
                assert!(Command::new("cp").arg("-a").arg(&from).arg(&to).status().unwrap().success(), "copying {}", from.display());
            }
        }
        self.cache = Some(cache);
        self
    }

    /// `xtask lab --lab <tag> ARGS` in this sandbox.
    pub fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command.args(["lab", "--lab", &self.lab]).args(arguments).env("CXL_LAB_STATE", &self.state).env("CXL_LAB_IMAGES", &self.images);
        if let Some(cache) = &self.cache {
            command.env("CXL_LAB_CACHE", cache);
        }
        command
    }

    pub fn run(&self, arguments: &[&str]) -> Output {
        let output = self.command(arguments).stdin(Stdio::null()).output().unwrap();
        report(arguments, &output);
        output
    }

    pub fn run_ok(&self, arguments: &[&str]) -> String {
        let output = self.run(arguments);
        assert!(output.status.success(), "`lab {}` failed", arguments.join(" "));
        String::from_utf8(output.stdout).unwrap()
    }

    /// Starts a command in the background, its output going to `<root>/<name>.out`.
    pub fn spawn(&self, name: &str, arguments: &[&str]) -> Child {
        let log = std::fs::File::create(self.root.join(format!("{name}.out"))).unwrap();
        self.command(arguments).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap()
    }

    /// Polls `probe` while `child` (spawned as `name`) runs; fails, with what it printed, if it
    /// ends first.
    pub fn wait_while_running<T>(&self, child: &mut Child, name: &str, what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
        wait_for(what, within, || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("`{name}` ended ({status}) before {what}:\n{}", self.output_of(name));
            }
            probe()
        })
    }

    /// The lab answers `lab exec`; then `lab down` leaves none of the sandbox's processes.
    pub fn answers_then_down(&self) {
        assert_eq!(self.run_ok(&["exec", "--", "echo", "answers"]), "answers\n");
        self.run_ok(&["down"]);
        self.assert_none_left(Duration::ZERO, "`lab down` returned");
    }

    /// What a background command printed so far.
    pub fn output_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(format!("{name}.out"))).unwrap_or_default()
    }

    pub fn lab_dir(&self) -> PathBuf {
        self.state.join("labs").join(&self.lab)
    }

    pub fn lab_json(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.lab_dir().join("lab.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every live process the sandbox's commands started (pid, command line), zombies aside.
    pub fn processes(&self) -> Vec<(u32, String)> {
        let marker = format!("CXL_LAB_STATE={}", self.state.display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            if pid == std::process::id() {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if environ.split(|byte| *byte == 0).any(|variable| variable == marker.as_bytes()) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if !cmdline.is_empty() {
                    found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end().to_owned()));
                }
            }
        }
        found
    }

    /// Waits until none of the sandbox's processes runs; fails naming those that still do.
    pub fn assert_none_left(&self, within: Duration, after: &str) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.processes();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{after}, these still run after {within:?}: {left:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Mount points below the sandbox, as the host sees them.
    pub fn mounts_below(&self) -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts.lines().filter_map(|line| line.split(' ').nth(4)).filter(|point| Path::new(point).starts_with(&self.root)).map(str::to_owned).collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).output();
        for _ in 0..50 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                // SAFETY: kill has no memory effects; the pid is one of this sandbox's processes.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Never reach into a mount (a leak would be the bug under test, reported by its assert).
        if self.mounts_below().is_empty() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("sandbox: {} kept: mounts below it: {:?}", self.root.display(), self.mounts_below());
        }
    }
}

/// The memdevs a `cxl list -M` listing shows, as (serial, pmem_size, ram_size), sorted by serial.
pub fn listed_memdevs(listing: &str) -> Vec<(u64, u64, u64)> {
    let listing: Value = serde_json::from_str(listing).unwrap();
    let mut memdevs: Vec<(u64, u64, u64)> = listing
        .as_array()
        .expect("cxl list -M prints an array")
        .iter()
        .map(|memdev| {
            let number = |field: &str| memdev.get(field).and_then(Value::as_u64).unwrap_or(0);
            (number("serial"), number("pmem_size"), number("ram_size"))
        })
        .collect();
    memdevs.sort();
    memdevs
}

/// The memdevs the model predicts for the first host of shipped profile `profile`, as
/// [`listed_memdevs`] gives them.
pub fn expected_memdevs(profile: &str) -> Vec<(u64, u64, u64)> {
    let topology = cxl_lab_core::profile::load_topology(&workspace().join("profiles").join(format!("{profile}.yaml"))).unwrap();
    let mut memdevs: Vec<(u64, u64, u64)> = cxl_lab_core::model::expect::expected_view(&topology).hosts[0]
        .memdevs
        .iter()
        .map(|memdev| (memdev.serial, memdev.pmem_size, memdev.ram_size))
        .collect();
    memdevs.sort();
    memdevs
}

/// Shows what `lab ARGS` did (the harness prints it when the test fails).
pub fn report(arguments: &[&str], output: &Output) {
    eprintln!(
        "$ lab {}\n  exit: {}\n  stdout: {}\n  stderr: {}",
        arguments.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `probe` until it gives a value; fails with `what` after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` runs (a zombie has exited).
pub fn alive(pid: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| !cmdline.is_empty())
}

pub fn kill_9(pid: u32) {
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0, "kill -9 {pid}");
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The artifact cache the test was run with (`CXL_LAB_CACHE` or the default).
pub fn caller_cache() -> PathBuf {
    cxl_lab_core::layout::Layout::for_workspace(workspace()).cache
}
