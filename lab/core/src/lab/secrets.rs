//! Per-lab credentials: a random root password and an ed25519 SSH key pair.
//!
//! The root filesystem image has root locked and no key; the VM supervisor sets both at boot
//! through the guest agent. They live in `<lab>/secrets/` (0700), each file 0600, are created once
//! and reused, and are never printed: [`LabSecrets`] redacts the password in `Debug` and zeroes it
//! on drop.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use fs_err::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use fs_err as fs;
use rand::Rng;
use zeroize::Zeroizing;

use crate::layout::LabLayout;
use crate::sys::runner::CommandRunner;

const PASSWORD_LENGTH: usize = 24;
/// No look-alike characters: the password may have to be typed on a serial console.
const PASSWORD_ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

pub struct LabSecrets {
    pub root_password: Zeroizing<String>,
    pub ssh_private_key: PathBuf,
    /// The `ssh-ed25519 AAAA... comment` line.
    pub ssh_public_key: String,
}

impl std::fmt::Debug for LabSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabSecrets")
            .field("root_password", &"<redacted>")
            .field("ssh_private_key", &self.ssh_private_key)
            .field("ssh_public_key", &self.ssh_public_key)
            .finish()
    }
}

/// The lab's SSH private key (made by [`ensure_lab_secrets`] when the lab came up).
pub fn ssh_key_path(lab: &LabLayout) -> PathBuf {
    lab.secrets_dir().join("id_ed25519")
}

/// Creates the lab's secrets if missing and returns them.
pub fn ensure_lab_secrets(lab: &LabLayout) -> anyhow::Result<LabSecrets> {
    let dir = lab.secrets_dir();
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;

    let password_path = dir.join("root-password");
    if !password_path.exists() {
        write_private(&password_path, generate_password().as_bytes())?;
    }
    let root_password = Zeroizing::new(fs::read_to_string(&password_path)?.trim().to_owned());
    if root_password.len() < 16 {
        anyhow::bail!("{} holds a password shorter than 16 characters: delete it to have a new one made", password_path.display());
    }

    let ssh_private_key = ssh_key_path(lab);
    let public_path = dir.join("id_ed25519.pub");
    if !ssh_private_key.exists() || !public_path.exists() {
        // A half pair (killed mid-way) is replaced whole.
        let _ = fs::remove_file(&ssh_private_key);
        let _ = fs::remove_file(&public_path);
        let comment = format!("cxl-lab@{}", lab.name);
        let runner = CommandRunner::new(lab.logs_dir());
        runner
            .run(
                "ssh-keygen",
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
                    .arg(&ssh_private_key),
            )
            .context("generating the lab's SSH key (ssh-keygen is in openssh-client)")?;
        fs::set_permissions(&public_path, std::fs::Permissions::from_mode(0o600))?;
    }
    fs::set_permissions(&ssh_private_key, std::fs::Permissions::from_mode(0o600))?;
    let ssh_public_key = fs::read_to_string(&public_path)?.trim().to_owned();
    Ok(LabSecrets { root_password, ssh_private_key, ssh_public_key })
}

fn generate_password() -> Zeroizing<String> {
    let mut rng = rand::rng();
    Zeroizing::new(
        (0..PASSWORD_LENGTH)
            .map(|_| PASSWORD_ALPHABET[rng.random_range(0..PASSWORD_ALPHABET.len())] as char)
            .collect(),
    )
}

/// Creates `path` with mode 0600 from the start, so the secret is never readable by others.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_once_private_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let lab = Layout::for_cache(dir.path()).lab("default");
        let first = ensure_lab_secrets(&lab).unwrap();
        assert_eq!(first.root_password.len(), PASSWORD_LENGTH);
        assert!(first.ssh_public_key.starts_with("ssh-ed25519 "), "{}", first.ssh_public_key);
        assert!(first.ssh_public_key.ends_with("cxl-lab@default"));
        assert_eq!(mode(&lab.secrets_dir()), 0o700);
        for file in ["root-password", "id_ed25519", "id_ed25519.pub"] {
            assert_eq!(mode(&lab.secrets_dir().join(file)), 0o600, "{file}");
        }
        let shown = format!("{first:?}");
        assert!(!shown.contains(first.root_password.as_str()), "{shown}");

        let second = ensure_lab_secrets(&lab).unwrap();
        assert_eq!(*second.root_password, *first.root_password);
        assert_eq!(second.ssh_public_key, first.ssh_public_key);
    }

    #[test]
    fn passwords_differ() {
        assert_ne!(*generate_password(), *generate_password());
    }
}
