//! A truncated or corrupted cached artifact (kernel, initramfs, root filesystem image) or
//! downloaded .deb, done for real to a byte copy in a scratch cache, through `cargo xtask build`:
//! with `--locked` the run is refused naming the damaged file; without, the warning names it and
//! the artifact is rebuilt (or the .deb downloaded again, here from a local `copy://` mirror),
//! and the next `--locked` run is clean.
//!
//! Damage that keeps a file's size and puts its mtime back is caught too (ctime moves); a bit
//! flip below the file system is not (only `cache verify` hashes everything).

mod scratch;

use std::path::{Path, PathBuf};

use cxl_lab_core::stack::cache::sha256_file;
use cxl_lab_core::prerequisites::{require, Prerequisite};
use cxl_lab_core::shell::Shell;
use cxl_lab_core::stack::distro::{self, StackOptions};
use scratch::{caller_paths, flip_byte_keeping_mtime, truncate, Scratch};

/// The path after `label` in `build`'s output (`kernel      /path/vmlinuz (release)`).
fn printed_path(stdout: &str, label: &str) -> PathBuf {
    let line = stdout.lines().find(|line| line.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` line in {stdout}"));
    PathBuf::from(line[label.len()..].trim().split(' ').next().unwrap())
}

/// `--locked` refuses naming `file` and `what`; a plain run warns the same and repairs it;
/// then `--locked` is clean again.
fn refused_then_repaired(scratch: &Scratch, target: &str, file: &Path, what: &str) {
    let refused = scratch.fails(&["build", target, "--locked"]);
    assert!(refused.contains("--locked, but"), "{refused}");
    assert!(refused.contains(&format!("{}: {what}", file.display())), "expected `{}: {what}` in {refused}", file.display());
    let repaired = scratch.succeeds(&["build", target]);
    assert!(repaired.contains(&format!("{}: {what}", file.display())), "the warning names the file: {repaired}");
    let clean = scratch.succeeds(&["build", target, "--locked"]);
    assert!(!clean.contains("warning"), "{clean}");
}

#[test]
fn damaged_kernel_initramfs_and_debs_are_refused_when_locked_and_rebuilt_otherwise() {
    let Some(scratch) = Scratch::new("kern").with_local_mirror() else { return };
    let built = scratch.xtask(&["build", "kernel", "--locked"]);
    assert!(built.status.success());
    let stdout = String::from_utf8(built.stdout).unwrap();
    let vmlinuz = printed_path(&stdout, "kernel");
    let initrd = printed_path(&stdout, "initrd");
    let kernel_dir = vmlinuz.parent().unwrap().to_path_buf();
    let vmlinuz_sha256 = sha256_file(&vmlinuz).unwrap();
    let vmlinuz_size = std::fs::metadata(&vmlinuz).unwrap().len();

    // Truncated: caught by size on every lookup.
    truncate(&vmlinuz, vmlinuz_size / 2);
    refused_then_repaired(&scratch, "kernel", &vmlinuz, &format!("{} bytes, the manifest records {vmlinuz_size}", vmlinuz_size / 2));
    assert_eq!(sha256_file(&vmlinuz).unwrap(), vmlinuz_sha256);

    // Same size, mtime put back: ctime moved, so it is hashed again and caught.
    flip_byte_keeping_mtime(&initrd, 4096);
    refused_then_repaired(&scratch, "kernel", &initrd, "contents changed");

    // One module file of thousands gone.
    let module = walk_files(&kernel_dir.join("modules")).into_iter().find(|path| path.to_string_lossy().ends_with(".ko.xz")).unwrap();
    std::fs::remove_file(&module).unwrap();
    refused_then_repaired(&scratch, "kernel", &module, "missing");
    assert!(module.is_file());

    // A manifest cut in half is damage too.
    let manifest = kernel_dir.join("manifest.json");
    truncate(&manifest, std::fs::metadata(&manifest).unwrap().len() / 2);
    refused_then_repaired(&scratch, "kernel", &manifest, "does not parse");

    // A manifest from before file hashes: adopted (hashed as the files are), with a warning.
    let mut old: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("files");
    std::fs::write(&manifest, serde_json::to_vec(&old).unwrap()).unwrap();
    let adopted = scratch.succeeds(&["build", "kernel", "--locked"]);
    assert!(adopted.contains(&format!("{} was cached by an older cxl-lab without file hashes", kernel_dir.display())), "{adopted}");
    assert!(!scratch.succeeds(&["build", "kernel", "--locked"]).contains("warning"));
    truncate(&vmlinuz, 4096);
    refused_then_repaired(&scratch, "kernel", &vmlinuz, &format!("4096 bytes, the manifest records {vmlinuz_size}"));

    // Downloaded .debs are checked against the pin's size and sha256 before a build uses them.
    let debs = scratch.debs();
    let binary = debs.iter().find(|pin| pin.package.starts_with("linux-binary-")).unwrap();
    let binary_path = scratch.cache.join("downloads").join(binary.file_name());
    flip_byte_keeping_mtime(&binary_path, binary.size / 2);
    std::fs::remove_dir_all(&kernel_dir).unwrap();
    refused_then_repaired(&scratch, "kernel", &binary_path, "sha256 ");
    assert_eq!(sha256_file(&binary_path).unwrap(), binary.sha256);

    let busybox = debs.iter().find(|pin| pin.package == "busybox-static").unwrap();
    let busybox_path = scratch.cache.join("downloads").join(busybox.file_name());
    truncate(&busybox_path, 1000);
    std::fs::remove_dir_all(initrd.parent().unwrap()).unwrap();
    refused_then_repaired(&scratch, "kernel", &busybox_path, &format!("1000 bytes, the pin says {}", busybox.size));
    assert_eq!(sha256_file(&busybox_path).unwrap(), busybox.sha256);

    // Nothing damaged is left: a full hash of everything agrees.
    assert!(scratch.xtask(&["cache", "verify"]).status.success());
}

#[test]
fn damaged_rootfs_image_is_refused_when_locked_and_rebuilt_otherwise() {
    if !require(&[Prerequisite::Root]) {
        return;
    }
    let caller = caller_paths();
    let referenced = distro::referenced_artifacts(&caller).unwrap();
    let mut names: Vec<&String> = referenced.iter().filter(|name| name.starts_with("rootfs-")).collect();
    names.sort();
    let present = names.iter().all(|name| caller.cache.join("artifacts").join(name).join("manifest.json").is_file());
    if !present {
        // debootstrap and mkfs into the caller's cache, as `lab up` would (minutes, once).
        if !require(&[Prerequisite::Archive]) {
            return;
        }
        let options = StackOptions { locked: false, write_lock: false };
        distro::ensure_distro_rootfs(&caller, &Shell::plain(), &options, None).unwrap();
    }
    let scratch = Scratch::new("rootfs");
    std::fs::create_dir_all(scratch.cache.join("artifacts")).unwrap();
    for name in names {
        // A byte copy (no reflink, no hard link): the test damages it.
        let status = std::process::Command::new("cp")
            .args(["-a", "--reflink=never", "--sparse=always"])
            .arg(caller.cache.join("artifacts").join(name))
            .arg(scratch.cache.join("artifacts"))
            .status()
            .unwrap();
        assert!(status.success(), "copying {name}");
    }
    let built = scratch.xtask(&["build", "rootfs", "--locked"]);
    assert!(built.status.success());
    let image = printed_path(&String::from_utf8(built.stdout).unwrap(), "rootfs");

    // A bit flipped in the superblock's block, the mtime put back.
    flip_byte_keeping_mtime(&image, 1024 + 100);
    refused_then_repaired(&scratch, "rootfs", &image, "contents changed");

    // The rebuilt image's size follows the tree's disk usage: read it again.
    let size = std::fs::metadata(&image).unwrap().len();
    truncate(&image, 1024 * 1024);
    refused_then_repaired(&scratch, "rootfs", &image, &format!("1048576 bytes, the manifest records {size}"));
    let checked = std::process::Command::new("e2fsck").args(["-fn"]).arg(&image).output().unwrap();
    assert!(checked.status.success(), "the rebuilt image is a clean ext4: {}", String::from_utf8_lossy(&checked.stdout));
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
