//! Where the lab meets the stack and secrets layers (built on the `artifacts` branch): the only
//! module that calls them, so the lab code depends on two functions only.
//!
//! Until that branch is merged, both functions say so instead of booting anything.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::lab::state::BootStack;
use crate::lab::up::StackKind;
use crate::lab::LabContext;

/// The lab's root password and SSH key pair.
pub struct LabCredentials {
    pub root_password: String,
    pub ssh_private_key: PathBuf,
    /// The `ssh-ed25519 AAAA... comment` line.
    pub ssh_public_key: String,
}

/// The stack's artifacts, resolved and built as needed.
pub fn resolve_boot_stack(_context: &LabContext, kind: StackKind) -> anyhow::Result<BootStack> {
    bail!("the {} stack is not available on this branch yet (it comes with the artifacts branch)", kind.name())
}

/// The lab's credentials, generated on first use and kept 0600 in the lab directory.
pub fn ensure_credentials(_lab_dir: &Path) -> anyhow::Result<LabCredentials> {
    bail!("lab secrets are not available on this branch yet (they come with the artifacts branch)")
}
