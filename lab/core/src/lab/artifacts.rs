//! Where the lab meets the stack and secrets layers: the only module that calls them, so the lab
//! code depends on two functions and one plain record ([`BootStack`]) only.

use std::path::Path;

use anyhow::bail;

use crate::lab::state::BootStack;
use crate::lab::up::StackKind;
use crate::lab::LabContext;

pub use crate::secrets::LabSecrets;

/// The stack's artifacts, resolved and built as needed.
pub fn resolve_boot_stack(context: &LabContext, kind: StackKind) -> anyhow::Result<BootStack> {
    let options = crate::stack::StackOptions::default();
    let artifacts = match kind {
        StackKind::Distro => crate::stack::ensure_distro_stack(&context.paths, &context.shell, &options)?,
        StackKind::Source => bail!("the source stack cannot boot a lab yet; use `--stack distro`"),
    };
    for note in &artifacts.source_notes {
        context.shell.verbose(note);
    }
    Ok(BootStack {
        stack: kind.name().to_owned(),
        qemu_binary: artifacts.qemu.path,
        qemu_version: artifacts.qemu.version,
        kernel: artifacts.kernel,
        initrd: Some(artifacts.initrd),
        modules_dir: artifacts.modules_dir,
        kernel_release: artifacts.kernel_release,
        rootfs_image: artifacts.rootfs_image,
    })
}

/// The lab's root password and SSH key pair, generated on first use and kept 0600 in the lab
/// directory.
pub fn ensure_credentials(lab_dir: &Path) -> anyhow::Result<LabSecrets> {
    crate::secrets::ensure_lab_secrets(lab_dir)
}
