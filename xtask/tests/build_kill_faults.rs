//! `kill -9` of `lab up` while the root filesystem is built (`docs/RELIABILITY.md`): during
//! debootstrap, once its second stage has mounted /proc in the tree, and during `mkfs.ext4 -d`.
//! Afterwards no process of the build runs, no mount is left, nothing is published, and the next
//! `lab up` removes the dead build's staging directory, builds, and boots.
//!
//! Each test has a scratch artifact cache seeded (hard links) from the caller's with everything
//! but what it kills: the kernel side, downloads, apt state and debootstrap's package cache (so
//! the rebuild after the kill downloads no package), and for the image test the debootstrap tree.

mod sandbox;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::{alive, caller_cache, kill_9, Sandbox};

/// A cold caller cache builds the kernel side first.
const UNTIL_STEP: Duration = Duration::from_secs(900);
const TO_GO: Duration = Duration::from_secs(60);

/// What the scratch cache starts with: the caller's artifacts whose names start with one of
/// `kinds`, and the shared downloads and package caches.
fn seed(kinds: &[&str]) -> Vec<String> {
    let mut entries: Vec<String> = ["downloads", "apt", "debootstrap-debs", "probes"].map(str::to_owned).to_vec();
    if let Ok(artifacts) = std::fs::read_dir(caller_cache().join("artifacts")) {
        for name in artifacts.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()) {
            if kinds.iter().any(|kind| is_kind(&name, kind)) {
                entries.push(format!("artifacts/{name}"));
            }
        }
    }
    entries
}

/// Whether cache entry `name` (`<kind>-<key>`) is of `kind` (`rootfs` is not `rootfs-tree`).
fn is_kind(name: &str, kind: &str) -> bool {
    name.strip_prefix(kind).and_then(|rest| rest.strip_prefix('-')).is_some_and(|key| !key.starts_with("tree-"))
}

/// Published artifacts of `kind`.
fn published(cache: &Path, kind: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cache.join("artifacts")) else { return Vec::new() };
    entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).filter(|name| is_kind(name, kind)).collect()
}

/// `<cache>/tmp/<entry>` that `path` lies in: a build's staging directory.
fn staging_of(cache: &Path, path: &Path) -> Option<PathBuf> {
    let entry = path.strip_prefix(cache.join("tmp")).ok()?.components().next()?;
    Some(cache.join("tmp").join(entry))
}

/// Whether another process holds the flock on `lock`.
fn lock_held(lock: &Path) -> bool {
    !std::process::Command::new("flock").arg("-n").arg(lock).arg("true").status().unwrap().success()
}

/// The recovery run and what it must leave: the staging directory removed, the artifact
/// published, a guest that answers; then the lab down with nothing left.
fn next_up_recovers(lab: &Sandbox, cache: &Path, staging: &Path, kind: &str) {
    lab.run_ok(&["up", "--detach"]);
    assert!(!staging.exists(), "the next build left the dead build's staging {}", staging.display());
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0, "staging directories left in {}", cache.join("tmp").display());
    assert_eq!(published(cache, kind).len(), 1, "{kind} not published by the next build");
    lab.answers_then_down();
}

#[test]
fn kill_9_of_lab_up_during_debootstrap_leaves_no_process_mount_or_artifact_and_the_next_up_recovers() {
    let Some(lab) = Sandbox::for_guests("dbs") else { return };
    let lab = lab.with_scratch_cache(&seed(&["kernel", "initramfs"]));
    let cache = lab.cache.clone().unwrap();
    let mut up = lab.spawn("up", &["up", "--detach"]);
    // debootstrap mounts /proc in the tree for its second stage (in its own mount namespace:
    // only its processes see it). Kill then: processes run in the chroot and a mount exists.
    let (proc_mount, staging) = lab.wait_while_running(&mut up, "up", "debootstrap to mount /proc in its tree", UNTIL_STEP, || {
        lab.processes().into_iter().find_map(|(pid, _)| {
            let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
            let point = mounts.lines().filter_map(|line| line.split(' ').nth(4)).find(|point| point.ends_with("/tree/proc"))?;
            let point = PathBuf::from(point);
            Some((point.clone(), staging_of(&cache, &point)?))
        })
    });
    eprintln!("debootstrap mounted {}; processes: {:#?}", proc_mount.display(), lab.processes());
    kill_9(up.id());
    up.wait().unwrap();

    lab.assert_none_left(TO_GO, "`lab up` was killed during debootstrap");
    assert_eq!(lab.mounts_below(), Vec::<String>::new(), "mounts left below the sandbox");
    assert_eq!(published(&cache, "rootfs-tree"), Vec::<String>::new(), "a tree was published");
    assert_eq!(published(&cache, "rootfs"), Vec::<String>::new(), "an image was published");
    assert!(staging.join("tree").is_dir(), "the killed build's staging {} (nobody left to remove it)", staging.display());
    let tree_name = staging.file_name().unwrap().to_string_lossy().split_once('.').unwrap().0.to_owned();
    assert!(!lock_held(&cache.join("locks").join(format!("{tree_name}.lock"))), "the tree's build lock is still held");

    next_up_recovers(&lab, &cache, &staging, "rootfs-tree");
}

#[test]
fn kill_9_of_lab_up_while_the_image_is_built_leaves_no_process_or_artifact_and_the_next_up_recovers() {
    let Some(lab) = Sandbox::for_guests("mkfs") else { return };
    let lab = lab.with_scratch_cache(&seed(&["kernel", "initramfs", "rootfs-tree"]));
    let cache = lab.cache.clone().unwrap();
    let mut up = lab.spawn("up", &["up", "--detach"]);
    let (mkfs, staging) = lab.wait_while_running(&mut up, "up", "mkfs.ext4 to run", UNTIL_STEP, || {
        lab.processes().into_iter().find_map(|(pid, cmdline)| {
            let image = cmdline.split(' ').find(|word| word.ends_with("/rootfs.img")).filter(|_| cmdline.contains("mkfs.ext4"))?;
            Some((pid, staging_of(&cache, Path::new(image))?))
        })
    });
    kill_9(up.id());
    up.wait().unwrap();

    lab.assert_none_left(TO_GO, "`lab up` was killed during mkfs.ext4");
    assert!(!alive(mkfs.into()));
    assert_eq!(published(&cache, "rootfs"), Vec::<String>::new(), "an image was published");
    assert!(staging.join("rootfs.img").is_file(), "the killed build's half image in {}", staging.display());

    next_up_recovers(&lab, &cache, &staging, "rootfs");
}
