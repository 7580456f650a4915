//! The kernel artifact: `vmlinuz` and the module tree the guest mounts over 9p.
//!
//! Layout of a published kernel artifact:
//!
//! ```text
//! vmlinuz
//! modules/lib/modules/<release>/...   depmod'ed; the `modshare` 9p tag serves modules/lib/modules
//! ```
//!
//! Debian ships the kernel as `linux-binary-<release>` (vmlinuz under `usr/lib/modules/<release>/`),
//! `linux-modules-<release>` and `linux-base-<release>` (config, modules.order, modules.builtin).
//! Older packaging put vmlinuz in `/boot/vmlinuz-<release>` and modules under `/lib/modules`;
//! both are accepted.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use fs_err as fs;

use crate::stack::debian::apt;
use crate::sys::runner::CommandRunner;

/// Where the module tree of `release` sits inside a kernel artifact.
pub fn modules_release_dir(artifact: &Path, release: &str) -> PathBuf {
    modules_share_dir(artifact).join(release)
}

/// The directory served as the `modshare` 9p tag (it holds `<release>/`).
pub fn modules_share_dir(artifact: &Path) -> PathBuf {
    artifact.join("modules/lib/modules")
}

pub fn vmlinuz_path(artifact: &Path) -> PathBuf {
    artifact.join("vmlinuz")
}

/// Unpacks `debs` into `staging` as a kernel artifact of `release` and indexes its modules.
pub fn build(staging: &Path, debs: &[PathBuf], release: &str, runner: &CommandRunner) -> anyhow::Result<()> {
    let unpacked = staging.join("unpacked");
    for deb in debs {
        apt::extract(runner, deb, &unpacked)?;
    }
    let module_source = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|dir| unpacked.join(dir).join(release))
        .find(|dir| dir.is_dir())
        .with_context(|| format!("the kernel packages hold no modules directory for {release}"))?;
    let vmlinuz = [module_source.join("vmlinuz"), unpacked.join(format!("boot/vmlinuz-{release}"))]
        .into_iter()
        .find(|path| path.is_file())
        .with_context(|| format!("the kernel packages hold no vmlinuz for {release}"))?;
    fs::rename(&vmlinuz, vmlinuz_path(staging))?;

    let modules = modules_release_dir(staging, release);
    fs::create_dir_all(modules.parent().expect("release dir has a parent"))?;
    fs::rename(&module_source, &modules)?;
    fs::remove_dir_all(&unpacked)?;

    // depmod reads <base>/lib/modules/<release>; the packages ship no modules.dep of their own.
    runner.run(
        &format!("depmod-{release}"),
        Command::new(crate::stack::host::program("depmod")).arg("-b").arg(staging.join("modules")).arg(release),
    )?;
    if !modules.join("modules.dep").is_file() {
        anyhow::bail!("depmod wrote no modules.dep in {}", modules.display());
    }
    Ok(())
}
