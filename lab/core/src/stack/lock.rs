//! The lock file, `images/<stack>.lock`: what each component resolved to, so a later run (and
//! `--locked`) takes exactly the same thing and a warm run needs no network and no hashing of
//! big files.
//!
//! Each entry remembers a digest of the recipe candidates it was resolved from: when the recipe
//! changes, the entry no longer applies and the component is resolved again (an error with
//! `--locked`).
//!
//! The distro stack's lock also records the bytes each artifact was built as ([`ArtifactLock`]),
//! so that another machine can tell whether it built the same: other bytes under the same key
//! are refused with `--locked`, naming the parts (files or directories) that differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::qemu::QemuVersion;
use crate::stack::cache::FileRecord;
use crate::stack::recipe::StackRecipe;
use crate::stack::StackKind;
use crate::stack::sources::{Candidate, DebPin, Pin, Resolution, SourcePin};

pub const LOCK_FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackLock {
    pub format: u32,
    pub stack: StackKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<QemuLock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelLock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busybox: Option<ComponentLock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsLock>,
    /// The source stack's components by name (`qemu`, `qemu-firmware`; the kernel and ndctl
    /// builders add theirs): each pin is what its build is keyed by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, ComponentLock>,
    /// The bytes each artifact was built as, by artifact kind (`kernel`, `initramfs`,
    /// `rootfs-tree`, `rootfs`): a second machine tells whether it built the same ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, ArtifactLock>,
}

/// An artifact's content as built: blake3 over its manifest's file records (paths, sizes,
/// hashes; not its creation time), and the same per part (a file, or the files below a
/// directory [`PART_DEPTH`] deep), so that a difference can be named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactLock {
    /// The cache key it was built under.
    pub key: String,
    pub content: String,
    pub parts: BTreeMap<String, String>,
}

/// Path components that name a part of an artifact in the lock (`tree/usr`, `rootfs.img`).
pub const PART_DEPTH: usize = 2;

impl ArtifactLock {
    pub fn of(key: &str, files: &[FileRecord]) -> ArtifactLock {
        let mut parts: BTreeMap<String, blake3::Hasher> = BTreeMap::new();
        let mut content = blake3::Hasher::new();
        for file in files {
            let line = serde_json::to_vec(file).expect("a file record serializes");
            content.update(&line);
            let part = file.path.splitn(PART_DEPTH + 1, '/').take(PART_DEPTH).collect::<Vec<_>>().join("/");
            parts.entry(part).or_default().update(&line);
        }
        let hex = |hasher: &blake3::Hasher| hasher.finalize().to_hex()[..32].to_owned();
        ArtifactLock { key: key.to_owned(), content: hex(&content), parts: parts.iter().map(|(part, hasher)| (part.clone(), hex(hasher))).collect() }
    }

    /// The parts whose contents differ between the two, or that only one has.
    pub fn differing_parts(&self, other: &ArtifactLock) -> Vec<String> {
        let parts: std::collections::BTreeSet<&String> = self.parts.keys().chain(other.parts.keys()).collect();
        parts.into_iter().filter(|part| self.parts.get(*part) != other.parts.get(*part)).cloned().collect()
    }
}

/// A resolved component and the recipe candidates it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentLock {
    /// [`candidates_digest`] of the recipe entry this was resolved from.
    pub candidates: String,
    pub pin: Pin,
}

/// A component the lock pins from the recipe's candidates: the distro stack's QEMU is the host's
/// and its root filesystem is built, so these two are all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Kernel,
    Busybox,
}

impl Component {
    pub const ALL: [Component; 2] = [Component::Kernel, Component::Busybox];

    /// Its name in resolution notes, messages and the lock file.
    pub fn name(self) -> &'static str {
        match self {
            Component::Kernel => "kernel",
            Component::Busybox => "busybox",
        }
    }

    /// As a sentence names it: "resolving and downloading the kernel".
    pub fn display_name(self) -> &'static str {
        match self {
            Component::Kernel => "the kernel",
            Component::Busybox => "busybox",
        }
    }

    /// The recipe's candidates for it, in order.
    pub fn candidates(self, recipe: &StackRecipe) -> &[Candidate] {
        match self {
            Component::Kernel => &recipe.kernel.sources,
            Component::Busybox => &recipe.initramfs.busybox,
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLock {
    #[serde(flatten)]
    pub component: ComponentLock,
    /// `uname -r` of the kernel, e.g. `7.3.4+deb13-amd64`.
    pub release: String,
}

/// The host QEMU the distro stack runs: the package version installed and the binary's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuLock {
    pub package: String,
    pub package_version: String,
    pub suite: String,
    /// As `qemu-system-x86_64 --version` says.
    pub version: QemuVersion,
}

/// debootstrap installs the suite's current versions; the lock records what the built image holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsLock {
    pub suite: String,
    pub key: String,
    /// blake3 of the sorted `package version` lines installed in the image.
    pub packages_digest: String,
    pub package_count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock file {path}: {message}")]
    Read { path: PathBuf, message: String },
    // Not a `source`: the message already quotes it, and `{:#}` would print it twice.
    #[error("cannot write lock file {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
}

pub fn lock_path(images_dir: &Path, stack: StackKind) -> PathBuf {
    images_dir.join(format!("{stack}.lock"))
}

/// A short digest of a candidate list, so a lock entry knows which recipe it answers.
pub fn candidates_digest(candidates: &[Candidate]) -> String {
    let json = serde_json::to_vec(candidates).expect("candidates serialize");
    blake3::hash(&json).to_hex()[..16].to_owned()
}

/// A pinned .deb names files in the cache and a URL: every part must be what apt would write.
fn check_deb_pin(pin: &DebPin) -> Result<(), String> {
    if !crate::stack::recipe::is_package_name(&pin.package) {
        return Err("not a Debian package name".to_owned());
    }
    if pin.version.is_empty() || !pin.version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-')) {
        return Err(format!("version `{}` is not a Debian version", pin.version));
    }
    if pin.sha256.len() != 64 || !pin.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("sha256 `{}` is not 64 hex digits", pin.sha256));
    }
    if !crate::stack::recipe::is_mirror_url(&pin.mirror) {
        return Err(format!("mirror `{}` is not an archive URL", pin.mirror));
    }
    if pin.filename.starts_with('/') || pin.filename.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(format!("filename `{}` is not a path below the mirror", pin.filename));
    }
    Ok(())
}

/// A pinned source package names files in the cache and URLs: as for a .deb.
fn check_source_pin(pin: &SourcePin) -> Result<(), String> {
    if !crate::stack::recipe::is_package_name(&pin.package) {
        return Err("not a Debian package name".to_owned());
    }
    if !crate::stack::recipe::is_debian_version(&pin.version) {
        return Err(format!("version `{}` is not a Debian version", pin.version));
    }
    if !crate::stack::recipe::is_mirror_url(&pin.mirror) {
        return Err(format!("mirror `{}` is not an archive URL", pin.mirror));
    }
    if pin.directory.starts_with('/') || pin.directory.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(format!("directory `{}` is not a path below the mirror", pin.directory));
    }
    for file in &pin.files {
        if file.name.is_empty() || file.name.contains('/') || file.name.starts_with('.') {
            return Err(format!("`{}` is not a file name", file.name));
        }
        if !is_sha256(&file.sha256) {
            return Err(format!("sha256 `{}` is not 64 hex digits", file.sha256));
        }
    }
    Ok(())
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// Every pin's words that name files or URLs.
fn check_pin(pin: &Pin) -> Result<(), String> {
    match pin {
        Pin::Debian { packages, .. } => packages.iter().try_for_each(|package| check_deb_pin(package).map_err(|message| format!("{}: {message}", package.package))),
        Pin::DebianSource(source) => check_source_pin(source).map_err(|message| format!("{}: {message}", source.package)),
        Pin::Tarball { sha256, .. } if !is_sha256(sha256) => Err(format!("sha256 `{sha256}` is not 64 hex digits")),
        Pin::Git { commit, .. } if !crate::stack::recipe::is_commit_id(commit) => Err(format!("`{commit}` is not a commit id")),
        _ => Ok(()),
    }
}

impl StackLock {
    pub fn empty(stack: StackKind) -> StackLock {
        StackLock { format: LOCK_FORMAT, stack, ..StackLock::default() }
    }

    /// The lock at `path`, or `None` when there is none yet.
    pub fn read(path: &Path) -> Result<Option<StackLock>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(LockError::Read { path: path.to_path_buf(), message: error.to_string() }),
        };
        let lock: StackLock = serde_json::from_str(&text)
            .map_err(|error| LockError::Read { path: path.to_path_buf(), message: error.to_string() })?;
        if lock.format != LOCK_FORMAT {
            return Err(LockError::Read {
                path: path.to_path_buf(),
                message: format!("format {} is not {LOCK_FORMAT}: delete it to resolve again", lock.format),
            });
        }
        let entries = Component::ALL.into_iter().filter_map(|component| lock.entry(component).map(|entry| (component.name(), entry)));
        for (name, entry) in entries.chain(lock.sources.iter().map(|(name, entry)| (name.as_str(), entry))) {
            if let Err(message) = check_pin(&entry.pin) {
                return Err(LockError::Read { path: path.to_path_buf(), message: format!("{name}: {message}") });
            }
        }
        Ok(Some(lock))
    }

    /// Writes the lock if its content changed (write beside, then rename).
    pub fn write(&self, path: &Path) -> Result<bool, LockError> {
        let mut text = serde_json::to_string_pretty(self).expect("lock serializes");
        text.push('\n');
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        crate::sys::atomic_file::replace_file(path, text.as_bytes())
            .map_err(|error| LockError::Write { path: path.to_path_buf(), error })?;
        Ok(true)
    }

    /// The entry of `component`, whichever candidates it was resolved from.
    pub fn entry(&self, component: Component) -> Option<&ComponentLock> {
        match component {
            Component::Kernel => self.kernel.as_ref().map(|kernel| &kernel.component),
            Component::Busybox => self.busybox.as_ref(),
        }
    }

    /// What `component` is pinned to, if its entry answers these candidates: the pin and, for
    /// the kernel, its release.
    pub fn resolution_for(&self, component: Component, candidates: &[Candidate]) -> Option<Resolution> {
        let entry = self.entry(component).filter(|entry| entry.candidates == candidates_digest(candidates))?;
        let release = match component {
            Component::Kernel => self.kernel.as_ref().map(|kernel| kernel.release.clone()),
            Component::Busybox => None,
        };
        Some(Resolution { pin: entry.pin.clone(), release })
    }

    /// Drops the entry of `component` (its pin is no longer served): it is resolved again.
    pub fn remove(&mut self, component: Component) {
        match component {
            Component::Kernel => self.kernel = None,
            Component::Busybox => self.busybox = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_locks_read_and_write_byte_identically() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        for stack in StackKind::ALL {
            let path = lock_path(&images, stack);
            let Some(lock) = StackLock::read(&path).unwrap() else { continue };
            let mut text = serde_json::to_string_pretty(&lock).unwrap();
            text.push('\n');
            assert_eq!(text, std::fs::read_to_string(&path).unwrap(), "{} changes when written again", path.display());
        }
    }

    #[test]
    fn an_artifact_lock_names_the_part_that_differs() {
        let record = |path: &str, blake3: &str| FileRecord { path: path.into(), size: 1, blake3: blake3.into(), symlink: false };
        let built = ArtifactLock::of("k", &[record("rootfs.img", "a"), record("tree/usr/lib/x/y", "b"), record("tree/usr/lib/z", "c")]);
        assert_eq!(built.parts.keys().collect::<Vec<_>>(), ["rootfs.img", "tree/usr"]);
        assert_eq!(built, ArtifactLock::of("k", &[record("rootfs.img", "a"), record("tree/usr/lib/x/y", "b"), record("tree/usr/lib/z", "c")]));
        let other = ArtifactLock::of("k", &[record("rootfs.img", "a"), record("tree/usr/lib/x/y", "B"), record("tree/etc", "d")]);
        assert_ne!(built.content, other.content);
        assert_eq!(built.differing_parts(&other), ["tree/etc", "tree/usr"]);
    }

    #[test]
    fn round_trips_and_writes_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), StackKind::Distro);
        assert_eq!(StackLock::read(&path).unwrap(), None);
        let candidates: Vec<Candidate> = serde_saphyr::from_str("- debian: { package: busybox-static, suite: trixie }").unwrap();
        let mut lock = StackLock::empty(StackKind::Distro);
        lock.busybox = Some(ComponentLock {
            candidates: candidates_digest(&candidates),
            pin: Pin::Debian {
                suite: "trixie".into(),
                packages: vec![DebPin {
                    package: "busybox-static".into(),
                    version: "1:1.37.0-6+b9".into(),
                    mirror: "http://deb.debian.org/debian".into(),
                    filename: "pool/main/b/busybox/busybox-static_1.37.0-6+b9_amd64.deb".into(),
                    sha256: "598a3fd92bdafc34cd81196b2952ad36e910e47a4ecf162f8ce5e8e262598e53".into(),
                    size: 955316,
                }],
            },
        });
        assert!(lock.write(&path).unwrap());
        assert!(!lock.write(&path).unwrap());
        let read = StackLock::read(&path).unwrap().unwrap();
        assert_eq!(read, lock);
        assert!(read.resolution_for(Component::Busybox, &candidates).is_some());
        let other: Vec<Candidate> = serde_saphyr::from_str("- debian: { package: busybox-static, suite: sid }").unwrap();
        assert!(read.resolution_for(Component::Busybox, &other).is_none());

        // A pin that would write outside the downloads directory is refused when read.
        let text = std::fs::read_to_string(&path).unwrap().replace("\"busybox-static\"", "\"../../busybox\"");
        std::fs::write(&path, text).unwrap();
        let error = StackLock::read(&path).unwrap_err().to_string();
        assert!(error.ends_with("distro.lock: busybox: ../../busybox: not a Debian package name"), "{error}");
    }
}
