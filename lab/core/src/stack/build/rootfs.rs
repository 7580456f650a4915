//! The root filesystem, in two cached steps:
//!
//! 1. `rootfs-tree`: `debootstrap` of the recipe's suite and packages into `tree/`, plus
//!    `packages.txt` (every installed `package version`, sorted) for the lock. The slow step
//!    (minutes), rebuilt only when the suite, mirror or package list changes.
//! 2. `rootfs`: a hard-link copy of the tree, with an optional [`RootOverlay`] laid over it (the
//!    source stack's ndctl), configured ([`super::rootfs_config`]), made into `rootfs.img` by
//!    `mkfs.ext4 -d`: no loop device, no mount. Seconds.
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
    Ok(())
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
    let tree = staging.join("tree");
    // A hard-link copy costs seconds, not the tree's size; apply() unlinks before it writes.
    runner.run("rootfs-copy", Command::new("cp").arg("-al").arg(tree_dir(tree_artifact)).arg(&tree))?;
    if let Some(overlay) = overlay {
        // Hard links again; --remove-destination unlinks a file of the tree before linking the
        // overlay's in its place, so nothing is written through a link into either artifact.
        let mut lay = Command::new("cp");
        lay.args(["-al", "--remove-destination"]).arg(overlay.root.join(".")).arg(&tree);
        runner.run("rootfs-overlay", &mut lay).with_context(|| format!("laying {} over the root filesystem", overlay.name))?;
    }
    rootfs_config::apply(&tree, items).context("configuring the root filesystem")?;

    let used = crate::stack::cache::disk_usage(&tree);
    let size_mib = used.div_ceil(MIB) + headroom_mib;
    let image = image_path(staging);
    fs::File::create(&image)?.set_len(size_mib * MIB)?;
    runner.run(
        "mkfs-rootfs",
        Command::new(crate::stack::host::program("mkfs.ext4"))
            .args(["-q", "-F", "-L", IMAGE_LABEL, "-E", "root_owner=0:0", "-d"])
            .arg(&tree)
            .arg(&image),
    )?;
    fs::remove_dir_all(&tree)?;
    Ok(())
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
    fn lists_installed_packages_sorted() {
        let status = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.3\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: bash\nStatus: install ok installed\nVersion: 5.2\n";
        assert_eq!(installed_packages(status), ["bash 5.2", "zlib1g 1:1.3"]);
    }
}
