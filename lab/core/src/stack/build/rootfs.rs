//! The root filesystem, in two cached steps:
//!
//! 1. `rootfs-tree`: `debootstrap` of the recipe's suite and packages into `tree/`, plus
//!    `packages.txt` (every installed `package version`, sorted) for the lock, and
//!    `source-date-epoch`. The slow step (minutes), rebuilt only when the suite, mirror or package
//!    list changes.
//! 2. `rootfs`: a hard-link copy of the tree, with an optional [`RootOverlay`] laid over it (the
//!    source stack's ndctl), configured ([`super::rootfs_config`]), made into `rootfs.img` by
//!    `mkfs.ext4 -d`: no loop device, no mount. Seconds.
//!
//! # Reproducible bytes
//!
//! The same package versions and configuration give the same `rootfs.img` (docs/REPRODUCIBILITY.md).
//! The tree is scrubbed of what differs between two runs ([`rootfs_config::scrub`]). Its SOURCE_DATE_EPOCH is the newest modification time of its
//! `usr/share/doc/*/changelog.Debian.gz` files: dpkg keeps the times the .debs carry, and Debian
//! builds stamp those with the package's changelog date, so the epoch follows the package
//! versions and not the day of the build. Every time in the tree newer than it is clamped to it
//! before the tree is published. The image step clamps what it creates itself (the copy's
//! directories, the files configuration writes: the only entries not hard-linked to a published
//! artifact, whose inodes it never touches); `mkfs.ext4` gets a fixed UUID and directory hash seed
//! and the epoch as its clock (`E2FSPROGS_FAKE_TIME`); it sorts directory entries itself
//! (e2fsprogs 1.47.0 reads directories with `scandir` and `alphasort`). `mkfs.ext4 -d` copies each
//! source file's ctime and atime, which no program can set, so `debugfs` then sets both to the
//! epoch on every inode in use.
//!
//! debootstrap is the only step that needs root (it chroots to run maintainer scripts). It runs
//! in its own mount and pid namespaces (`unshare`): the /proc and /sys it mounts in the tree and
//! every process it starts in the chroot live there, so when it ends, or dies with the tool
//! (the runner's parent-death signal kills `unshare`, whose `--kill-child` kills debootstrap, the
//! namespace's init, and the kernel then kills the rest), no process keeps running and no mount
//! is left in the staging directory to stop its removal.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use fs_err as fs;

use super::rootfs_config::{self, ConfigItem};
use crate::stack::recipe::{ArchiveRecipe, RootfsRecipe};
use crate::sys::runner::CommandRunner;

pub const IMAGE_LABEL: &str = "cxl-root";
const MIB: u64 = 1024 * 1024;

pub fn tree_dir(tree_artifact: &Path) -> PathBuf {
    tree_artifact.join("tree")
}

pub fn packages_list(tree_artifact: &Path) -> PathBuf {
    tree_artifact.join("packages.txt")
}

pub fn image_path(rootfs_artifact: &Path) -> PathBuf {
    rootfs_artifact.join("rootfs.img")
}

/// The tree's SOURCE_DATE_EPOCH (seconds), as decimal text.
pub fn epoch_file(tree_artifact: &Path) -> PathBuf {
    tree_artifact.join("source-date-epoch")
}

/// The image's file system UUID and directory hash seed: fixed, so that the bytes are.
pub const IMAGE_UUID: &str = "c7a1ab00-0000-4000-8000-000000000001";
pub const IMAGE_HASH_SEED: &str = "c7a1ab00-0000-4000-8000-000000000002";

/// A tree laid over the root filesystem's (files replace the tree's, directories merge), and the
/// cache key it was built under (part of the image's key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootOverlay {
    /// What it is, for messages (`ndctl 81`).
    pub name: String,
    pub root: PathBuf,
    pub key: crate::stack::cache::CacheKey,
}

/// `unshare`'s words before the command it runs: private mounts, a pid namespace whose init is
/// the command, killed when `unshare` dies.
pub const PRIVATE_NAMESPACES: &[&str] = &["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--"];

/// The exact debootstrap command for `recipe`, in its own namespaces.
pub fn debootstrap_command(recipe: &RootfsRecipe, archive: &ArchiveRecipe, tree: &Path, debs_cache: &Path) -> Command {
    let mut command = Command::new(crate::stack::host::program("unshare"));
    command
        .args(PRIVATE_NAMESPACES)
        .arg(crate::stack::host::program("debootstrap"))
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg("--arch=amd64")
        .arg(format!("--include={}", recipe.packages.join(",")))
        .arg(format!("--keyring={}", archive.keyring.display()))
        .arg(format!("--cache-dir={}", debs_cache.display()))
        .arg(&recipe.suite)
        .arg(tree)
        .arg(recipe.mirror.as_deref().unwrap_or(&archive.mirror));
    command
}

/// debootstraps into `<staging>/tree` and records the installed packages.
pub fn build_tree(
    staging: &Path,
    recipe: &RootfsRecipe,
    archive: &ArchiveRecipe,
    debs_cache: &Path,
    runner: &CommandRunner,
) -> anyhow::Result<()> {
    if !crate::sys::process::is_root() {
        anyhow::bail!("debootstrap needs root (it chroots into the new tree): run the build as root");
    }
    fs::create_dir_all(debs_cache)?;
    let tree = tree_dir(staging);
    runner.run("debootstrap", &mut debootstrap_command(recipe, archive, &tree, debs_cache))?;
    let status = fs::read_to_string(tree.join("var/lib/dpkg/status"))?;
    fs::write(packages_list(staging), installed_packages(&status).join("\n") + "\n")?;
    let epoch = source_date_epoch(&tree)?;
    rootfs_config::apply(&tree, &rootfs_config::scrub(), epoch).context("scrubbing the debootstrapped tree")?;
    clamp_times(&tree, epoch, &|_| true)?;
    fs::write(epoch_file(staging), format!("{epoch}\n"))?;
    Ok(())
}

/// The newest modification time of the tree's `usr/share/doc/*/changelog.Debian.gz` (the module
/// documentation says why).
pub fn source_date_epoch(tree: &Path) -> anyhow::Result<i64> {
    use std::os::unix::fs::MetadataExt as _;
    let doc = tree.join("usr/share/doc");
    let mut newest = None;
    for entry in fs::read_dir(&doc)? {
        let changelog = entry?.path().join("changelog.Debian.gz");
        if let Ok(metadata) = std::fs::symlink_metadata(&changelog) {
            if metadata.is_file() {
                newest = newest.max(Some(metadata.mtime()));
            }
        }
    }
    newest.with_context(|| format!("{}: no package changelog (*/changelog.Debian.gz) to take SOURCE_DATE_EPOCH from", doc.display()))
}

/// The SOURCE_DATE_EPOCH the tree artifact recorded.
pub fn read_epoch(tree_artifact: &Path) -> anyhow::Result<i64> {
    let path = epoch_file(tree_artifact);
    let text = fs::read_to_string(&path)?;
    text.trim().parse().with_context(|| format!("{}: `{}` is not a number of seconds", path.display(), text.trim()))
}

/// How the tree's times are made: each of an entry's access and modification times clamped to
/// the SOURCE_DATE_EPOCH on its own (an older time is kept: whether a read moved an atime depends
/// on the host's mount options). Part of the tree's key.
pub const TIME_RULE: &str = "source-date-epoch, atime and mtime each clamped";

/// What makes the image's bytes besides the tree and its configuration: part of its key.
pub const IMAGE_RECIPE: &str = "mkfs.ext4 -d of the tree's apparent size, fixed uuid c7a1ab00-…01 and hash seed c7a1ab00-…02, \
     E2FSPROGS_FAKE_TIME, overlay clamped, debugfs atime and ctime of every inode";

/// Clamps, to `epoch`, each of the access and modification times of every entry below `root`
/// (itself included) that `select` picks and that is newer; symlinks themselves, not their
/// targets.
pub fn clamp_times(root: &Path, epoch: i64, select: &dyn Fn(&std::fs::Metadata) -> bool) -> anyhow::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if metadata.is_dir() {
        for entry in fs::read_dir(root)? {
            clamp_times(&entry?.path(), epoch, select)?;
        }
    }
    if select(&metadata) && (metadata.mtime() > epoch || metadata.atime() > epoch) {
        let clamped = |seconds: i64| if seconds > epoch { TimeSpec::new(epoch, 0) } else { TimeSpec::UTIME_OMIT };
        utimensat(nix::fcntl::AT_FDCWD, root, &clamped(metadata.atime()), &clamped(metadata.mtime()), UtimensatFlags::NoFollowSymlink)
            .with_context(|| format!("setting the times of {}", root.display()))?;
    }
    Ok(())
}

/// Bytes the tree's files take whatever file system holds them (a 4 KiB block per started block
/// of a file, one per directory and symlink): the image's size must not depend on the host's.
fn apparent_usage(path: &Path) -> u64 {
    const BLOCK: u64 = 4096;
    crate::stack::cache::tree_usage(path, &|metadata| if metadata.is_dir() { BLOCK } else { metadata.len().div_ceil(BLOCK).max(1) * BLOCK })
}

/// `package version` of every installed package in a dpkg status file, sorted.
pub fn installed_packages(status: &str) -> Vec<String> {
    let mut packages = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |name: &str| stanza.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
        if let (Some(package), Some(version), Some(state)) = (field("Package:"), field("Version:"), field("Status:")) {
            if state.ends_with("installed") && !state.contains("not-installed") {
                packages.push(format!("{package} {version}"));
            }
        }
    }
    packages.sort();
    packages
}

/// blake3 of `packages.txt` and its line count, for the lock.
pub fn packages_digest(tree_artifact: &Path) -> anyhow::Result<(String, usize)> {
    let text = fs::read_to_string(packages_list(tree_artifact))?;
    Ok((blake3::hash(text.as_bytes()).to_hex()[..32].to_owned(), text.lines().count()))
}

/// Configures a hard-link copy of the cached tree, `overlay` laid over it, and makes
/// `<staging>/rootfs.img` of it.
pub fn build_image(
    staging: &Path,
    tree_artifact: &Path,
    overlay: Option<&RootOverlay>,
    items: &[ConfigItem],
    headroom_mib: u64,
    runner: &CommandRunner,
) -> anyhow::Result<()> {
    let epoch = read_epoch(tree_artifact)?;
    let tree = staging.join("tree");
    // A hard-link copy costs seconds, not the tree's size; apply() unlinks before it writes.
    runner.run("rootfs-copy", Command::new("cp").arg("-al").arg(tree_dir(tree_artifact)).arg(&tree))?;
    if let Some(overlay) = overlay {
        // Copied (not linked, so its times are clamped below like the rest of what this step
        // made); --remove-destination unlinks a file of the tree before copying the overlay's in
        // its place, so nothing is written through a link into the tree artifact.
        let mut lay = Command::new("cp");
        lay.args(["-a", "--remove-destination"]).arg(overlay.root.join(".")).arg(&tree);
        runner.run("rootfs-overlay", &mut lay).with_context(|| format!("laying {} over the root filesystem", overlay.name))?;
        // Before configuring: the stamps systemd reads are written from /usr's time, which the
        // overlay's directories just brought from the overlay's build.
        clamp_times(&tree, epoch, &made_here)?;
    }
    rootfs_config::apply(&tree, items, epoch).context("configuring the root filesystem")?;
    clamp_times(&tree, epoch, &made_here)?;

    let size_mib = apparent_usage(&tree).div_ceil(MIB) + headroom_mib;
    let image = image_path(staging);
    fs::File::create(&image)?.set_len(size_mib * MIB)?;
    runner.run("mkfs-rootfs", &mut mkfs_command(&tree, &image, epoch))?;
    fs::remove_dir_all(&tree)?;
    settle_inode_times(staging, &image, epoch, runner)
}

/// What the image step made, whose times it clamps: the copy's directories and the files the
/// overlay and configuration wrote. A hard link (more than one name) is an inode of a published
/// artifact.
fn made_here(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    metadata.is_dir() || metadata.nlink() == 1
}

/// `mkfs.ext4 -d` of `tree` into `image`, with a fixed UUID and hash seed and `epoch` as its clock.
pub fn mkfs_command(tree: &Path, image: &Path, epoch: i64) -> Command {
    let mut command = Command::new(crate::stack::host::program("mkfs.ext4"));
    command
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .args(["-q", "-F", "-L", IMAGE_LABEL, "-U", IMAGE_UUID, "-E"])
        .arg(format!("root_owner=0:0,hash_seed={IMAGE_HASH_SEED}"))
        .arg("-d")
        .arg(tree)
        .arg(image);
    command
}

/// Sets the access and change times of every inode in use in `image` to `epoch` (`mkfs -d`
/// copied the host's), through one `debugfs` script written in `staging`.
fn settle_inode_times(staging: &Path, image: &Path, epoch: i64, runner: &CommandRunner) -> anyhow::Result<()> {
    let groups = runner.run_capture("dumpe2fs-rootfs", Command::new(crate::stack::host::program("dumpe2fs")).arg(image))?;
    let inodes = used_inodes(&groups).with_context(|| format!("reading the inode bitmaps of {} from dumpe2fs", image.display()))?;
    let script: String = inodes.iter().map(|inode| format!("sif <{inode}> atime @{epoch}\nsif <{inode}> ctime @{epoch}\n")).collect();
    let script_path = staging.join("inode-times.debugfs");
    fs::write(&script_path, script)?;
    let mut debugfs = Command::new(crate::stack::host::program("debugfs"));
    debugfs.env("E2FSPROGS_FAKE_TIME", epoch.to_string()).arg("-w").arg("-f").arg(&script_path).arg(image);
    runner.run("debugfs-rootfs", &mut debugfs)?;
    fs::remove_file(&script_path)?;
    Ok(())
}

/// Inodes in use, from `dumpe2fs`'s per-group `Free inodes:` ranges (indented, unlike the
/// header's count): the root directory and every
/// inode after the reserved ones (1 to 10) that no group lists as free.
pub fn used_inodes(dumpe2fs: &str) -> anyhow::Result<Vec<u64>> {
    let field = |name: &str| dumpe2fs.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    let count: u64 = field("Inode count:").context("no `Inode count:`")?.parse()?;
    let mut free = vec![false; count as usize + 1];
    for line in dumpe2fs.lines().filter_map(|line| line.strip_prefix("  Free inodes: ")) {
        for range in line.split(", ").filter(|range| !range.is_empty()) {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            let (first, last): (u64, u64) = (first.trim().parse()?, last.trim().parse()?);
            for inode in first..=last.min(count) {
                free[inode as usize] = true;
            }
        }
    }
    Ok(std::iter::once(2).chain((11..=count).filter(|&inode| !free[inode as usize])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debootstrap_command_is_exact() {
        let recipe = RootfsRecipe {
            suite: "trixie".into(),
            mirror: None,
            hostname: "cxl-lab".into(),
            packages: vec!["openssh-server".into(), "ndctl".into()],
            headroom_mib: 2048,
        };
        let command = debootstrap_command(&recipe, &ArchiveRecipe::default(), Path::new("/c/tree"), Path::new("/c/debs"));
        let arguments: Vec<String> = command.get_args().map(|arg| arg.to_string_lossy().into_owned()).collect();
        let (namespaces, debootstrap) = arguments.split_at(PRIVATE_NAMESPACES.len());
        assert!(command.get_program().to_string_lossy().ends_with("unshare"));
        assert_eq!(namespaces.join(" "), "--mount --propagation private --pid --fork --kill-child --mount-proc --");
        assert!(debootstrap[0].ends_with("debootstrap"), "{}", debootstrap[0]);
        assert_eq!(
            debootstrap[1..].join(" "),
            "--arch=amd64 --include=openssh-server,ndctl --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
             --cache-dir=/c/debs trixie /c/tree http://deb.debian.org/debian"
        );
    }

    #[test]
    fn used_inodes_are_those_no_group_lists_as_free() {
        let dumpe2fs = "Inode count:              24\nFree inodes:              9\nInodes per group:         12\n\
                        Group 0: (Blocks 1-8191)\n  Free inodes: 14-15, 17\nGroup 1: (Blocks 8192-16383)\n  Free inodes: 19-24\n";
        assert_eq!(used_inodes(dumpe2fs).unwrap(), [2, 11, 12, 13, 16, 18]);
        assert!(format!("{:#}", used_inodes("Free inodes: 3\n").unwrap_err()).contains("Inode count"));
    }

    #[test]
    fn clamping_the_image_tree_never_touches_a_published_inode() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (cached, tree) = (dir.path().join("cached"), dir.path().join("tree"));
        fs::create_dir_all(cached.join("etc")).unwrap();
        fs::write(cached.join("etc/published"), "x").unwrap();
        assert!(Command::new("cp").arg("-al").arg(&cached).arg(&tree).status().unwrap().success());
        fs::write(tree.join("etc/written"), "y").unwrap();
        let epoch = 1_700_000_000;
        clamp_times(&tree, epoch, &|metadata| metadata.is_dir() || metadata.nlink() == 1).unwrap();
        let mtime = |path: &Path| fs::symlink_metadata(path).unwrap().mtime();
        assert_eq!((mtime(&tree), mtime(&tree.join("etc")), mtime(&tree.join("etc/written"))), (epoch, epoch, epoch));
        assert!(mtime(&cached.join("etc/published")) > epoch);
        clamp_times(&cached, epoch, &|_| true).unwrap();
        assert_eq!(mtime(&cached.join("etc/published")), epoch);
    }

    #[test]
    fn mkfs_is_given_a_fixed_uuid_hash_seed_and_clock() {
        let command = mkfs_command(Path::new("/s/tree"), Path::new("/s/rootfs.img"), 1_700_000_000);
        let arguments: Vec<String> = command.get_args().map(|arg| arg.to_string_lossy().into_owned()).collect();
        assert_eq!(
            arguments.join(" "),
            "-q -F -L cxl-root -U c7a1ab00-0000-4000-8000-000000000001 -E root_owner=0:0,hash_seed=c7a1ab00-0000-4000-8000-000000000002 \
             -d /s/tree /s/rootfs.img"
        );
        let clock: Vec<_> = command.get_envs().collect();
        assert_eq!(clock, [(std::ffi::OsStr::new("E2FSPROGS_FAKE_TIME"), Some(std::ffi::OsStr::new("1700000000")))]);
    }

    #[test]
    fn lists_installed_packages_sorted() {
        let status = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.3\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: bash\nStatus: install ok installed\nVersion: 5.2\n";
        assert_eq!(installed_packages(status), ["bash 5.2", "zlib1g 1:1.3"]);
    }
}
