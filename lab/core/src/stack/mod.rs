//! What a lab boots, from recipe to cached artifact:
//! - [`recipe`] reads `images/<stack>.yaml`; [`sources`] tries its candidates in order; [`lock`]
//!   pins what answered in `images/<stack>.lock`;
//! - [`debian`] resolves and downloads Debian packages through a private apt state;
//! - [`build`] makes the kernel, initramfs and root filesystem artifacts; [`cache`] keeps them by
//!   content; [`host`] is the host programs the builds and the lab need;
//! - [`distro`] puts these together for the `distro` stack; [`source`] builds the `source` stack
//!   (QEMU, the kernel with its test modules, ndctl with its tests) from git, tarballs and Debian
//!   source packages;
//! - [`reproduce`] builds a stack twice and compares the artifacts (`build verify`).

pub mod build;
pub mod cache;
pub mod debian;
pub mod distro;
pub mod host;
pub mod lock;
pub mod recipe;
pub mod reproduce;
pub mod session;
pub mod source;
pub mod sources;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::qemu::QemuVersion;
use crate::shell::Shell;
use crate::stack::session::StackOptions;

/// Which stack a lab boots: where its QEMU, kernel and root filesystem come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    /// Debian's packaged QEMU and kernel: the default.
    #[default]
    Distro,
    /// QEMU and the kernel built from source.
    Source,
}

impl StackKind {
    pub const ALL: [StackKind; 2] = [StackKind::Distro, StackKind::Source];

    /// The name in recipes (`images/<name>.yaml`), locks, lab state and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StackKind::Distro => "distro",
            StackKind::Source => "source",
        }
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StackKind {
    type Err = String;

    fn from_str(text: &str) -> Result<StackKind, String> {
        StackKind::ALL.into_iter().find(|kind| kind.name() == text).ok_or_else(|| format!("`{text}` is not a stack (distro or source)"))
    }
}

/// The kernel, root filesystem and QEMU a lab boots; `lab switch` reuses them as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootStack {
    pub stack: StackKind,
    pub qemu_binary: PathBuf,
    pub qemu_version: QemuVersion,
    /// The firmware directory a QEMU built from source runs with (`-L`); none for the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_data_dir: Option<PathBuf>,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub modules_dir: PathBuf,
    pub kernel_release: String,
    /// The raw ext4 base image; never written: each host boots a qcow2 overlay of it.
    pub rootfs_image: PathBuf,
}

/// The stack's artifacts for a lab, resolved and built as needed; says where each came from
/// (verbose).
pub fn ensure_boot_stack(paths: &Layout, shell: &Shell, kind: StackKind, options: &StackOptions) -> anyhow::Result<BootStack> {
    let (stack, notes) = match kind {
        StackKind::Distro => {
            let artifacts = distro::ensure_distro_stack(paths, shell, options)?;
            let stack = BootStack {
                stack: kind,
                qemu_binary: artifacts.qemu.path,
                qemu_version: artifacts.qemu.version,
                qemu_data_dir: None,
                kernel: artifacts.kernel,
                initrd: Some(artifacts.initrd),
                modules_dir: artifacts.modules_dir,
                kernel_release: artifacts.kernel_release,
                rootfs_image: artifacts.rootfs_image,
            };
            (stack, artifacts.source_notes)
        }
        StackKind::Source => ensure_source_boot_stack(paths, shell, options)?,
    };
    for note in &notes {
        shell.verbose(note);
    }
    Ok(stack)
}

/// The source stack boots QEMU and the kernel built from source, with the distro stack's
/// initramfs (for this kernel's modules) and root filesystem, the ndctl built from source laid
/// over it.
fn ensure_source_boot_stack(paths: &Layout, shell: &Shell, options: &StackOptions) -> anyhow::Result<(BootStack, Vec<String>)> {
    let qemu = source::ensure_source_qemu(paths, shell, options)?;
    let kernel = source::ensure_source_kernel(paths, shell, options)?;
    let ndctl = source::ensure_source_ndctl(paths, shell, options)?;
    let built = &kernel.artifact;
    let overlay = ndctl.artifact.overlay();
    let borrowed = distro::ensure_initramfs_and_rootfs_for(paths, shell, options, &built.artifact, &built.release, &built.key, Some(&overlay))?;
    let stack = BootStack {
        stack: StackKind::Source,
        qemu_binary: qemu.artifact.binary,
        qemu_version: qemu.artifact.version,
        qemu_data_dir: Some(qemu.artifact.firmware_dir),
        kernel: built.vmlinuz.clone(),
        initrd: Some(borrowed.initrd),
        modules_dir: built.modules_dir.clone(),
        kernel_release: built.release.clone(),
        rootfs_image: borrowed.rootfs_image,
    };
    Ok((stack, [qemu.notes, kernel.notes, ndctl.notes, borrowed.notes].concat()))
}
