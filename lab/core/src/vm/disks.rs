//! A machine's disk: a qcow2 overlay over a read-only raw base image, so the base (a published
//! artifact) is never written and each machine keeps its own changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use fs_err as fs;

use crate::sys::runner::CommandRunner;

/// Creates `overlay`, a qcow2 over the raw image `base`, unless one over this very base exists
/// (or `fresh` asks for a new one). Uses the `qemu-img` of the QEMU that will boot it.
///
/// The overlay records its base by path only, so a sidecar file remembers the base's size and
/// modification time: a rebuilt base image (same path, new contents) gets a fresh overlay rather
/// than one whose blocks no longer match.
pub fn ensure_overlay(runner: &CommandRunner, qemu_binary: &Path, base: &Path, overlay: &Path, fresh: bool) -> anyhow::Result<()> {
    let base_metadata = fs::metadata(base).with_context(|| format!("the stack's root filesystem image {}", base.display()))?;
    let modified = base_metadata.modified().ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok());
    let modified_ms = modified.map(|elapsed| elapsed.as_millis() as u64).unwrap_or_default();
    let identity = format!("{}\n{}\n{}\n", base.display(), base_metadata.len(), modified_ms);
    let sidecar = overlay.with_extension("qcow2.base");
    let current = std::fs::read_to_string(&sidecar).unwrap_or_default();
    if !fresh && overlay.exists() && current == identity {
        return Ok(());
    }
    if let Some(parent) = overlay.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(overlay);
    runner.run(
        "create disk overlay",
        Command::new(qemu_img_for(qemu_binary)).args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(base).arg(overlay),
    )?;
    fs::write(&sidecar, identity)?;
    Ok(())
}

/// The `qemu-img` of the same installation as the QEMU binary, else the one on `PATH`.
fn qemu_img_for(qemu_binary: &Path) -> PathBuf {
    let sibling = qemu_binary.with_file_name("qemu-img");
    if qemu_binary.is_absolute() && sibling.exists() {
        sibling
    } else {
        PathBuf::from("qemu-img")
    }
}
