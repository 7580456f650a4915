//! The content-addressed artifact cache.
//!
//! An artifact (a kernel with its modules, an initramfs, a root filesystem image) lives in
//! `<cache>/artifacts/<kind>-<key>/` where `key` is the blake3 hash of every input that shapes it
//! (recipe text, resolved versions and sha256s, [`FORMAT_VERSION`]). It is built in
//! `<cache>/tmp/<kind>-<key>.<random>/` and published by one `rename`, so an interrupted build leaves
//! no half artifact, only a tmp directory that the next build of the same key (or `cache gc`)
//! removes. A `manifest.json` inside says what it is and every file it holds, with its size and
//! blake3 hash. An exclusive file lock per key (`<cache>/locks/`) makes a second `lab up` wait
//! for the first build instead of repeating it.
//!
//! # Damage
//!
//! [`Cache::check`] reads the manifest and `lstat`s every file it records: a missing file, a size
//! or a file type that differs is damage, found on every lookup. Contents are hashed only when a
//! file's (inode, size, mtime, ctime) differs from the stamp `<cache>/verified/<kind>-<key>`
//! written when it was last hashed, so a warm run reads no big file. Any write through the file
//! system (a `dd` into the image, an editor, `truncate`) changes ctime, which no one can set back,
//! and is caught; a bit flip below the file system (the disk, a write to the block device) keeps
//! all four and is found only by `cache verify`, which hashes everything. The caller decides what
//! damage means (`distro.rs`: rebuild, or refuse with `--locked`); [`Cache::get_or_build`] replaces
//! a damaged artifact. A manifest from before file hashes is adopted: its files are hashed as they
//! are now and recorded ([`Lookup::Adopted`]), so damage done before that goes unseen.

use std::collections::HashSet;
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use fs4::fs_std::FileExt;
use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Bumped when the way artifacts are built changes in a way their inputs do not show.
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST: &str = "manifest.json";

/// Free space below which a failed build is said to have run out of it: an external program that
/// fills the file system often cannot even write why into its log, which lives on the same one.
const NEARLY_FULL_BYTES: u64 = 16 * 1024 * 1024;

/// What an artifact is. Its name starts the artifact's directory (`<kind>-<key>`) and is hashed
/// into its key, so a name never changes: existing caches stay valid. Entries of kinds this
/// version does not know (left by another) are listed and collected by their directory name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// vmlinuz and the depmod'ed module tree.
    Kernel,
    Initramfs,
    /// The configured ext4 image.
    Rootfs,
    /// The debootstrapped tree the image is made of.
    RootfsTree,
    /// QEMU built from source, with its firmware (the source stack).
    Qemu,
    /// ndctl built with its tests for the root filesystem (the source stack).
    Ndctl,
    /// A lean-booted machine's saved state and disk (`lab up --snapshot`).
    Snapshot,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 7] = [
        ArtifactKind::Kernel,
        ArtifactKind::Initramfs,
        ArtifactKind::Rootfs,
        ArtifactKind::RootfsTree,
        ArtifactKind::Qemu,
        ArtifactKind::Ndctl,
        ArtifactKind::Snapshot,
    ];

    /// The name in directory names, manifests and keys.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Kernel => "kernel",
            ArtifactKind::Initramfs => "initramfs",
            ArtifactKind::Rootfs => "rootfs",
            ArtifactKind::RootfsTree => "rootfs-tree",
            ArtifactKind::Qemu => "qemu",
            ArtifactKind::Ndctl => "ndctl",
            ArtifactKind::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hash of every input of one artifact.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey(pub String);

impl CacheKey {
    /// Hashes `kind`'s name and `inputs` (serialized as JSON, so field order is the struct's).
    pub fn of<T: Serialize>(kind: ArtifactKind, inputs: &T) -> CacheKey {
        let json = serde_json::to_vec(inputs).expect("cache inputs serialize to JSON");
        let mut hasher = blake3::Hasher::new();
        hasher.update(format!("cxl-lab artifact v{FORMAT_VERSION}\0{}\0", kind.name()).as_bytes());
        hasher.update(&json);
        CacheKey(hasher.finalize().to_hex()[..32].to_owned())
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `manifest.json` records about an artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// An [`ArtifactKind`]'s name, or another version's kind.
    pub kind: String,
    pub key: CacheKey,
    /// Seconds since the epoch.
    pub created: u64,
    pub size_bytes: u64,
    /// A readable summary of the inputs (versions, suites), not the inputs themselves.
    pub inputs: serde_json::Value,
    /// Every regular file and symlink, as built. `None` in manifests written before file hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileRecord>>,
}

/// One file of an artifact as it was published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative to the artifact's directory.
    pub path: String,
    /// Bytes; a symlink's is the length of its target.
    pub size: u64,
    /// blake3 of the contents (of the target, for a symlink), 32 hex digits.
    pub blake3: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub symlink: bool,
}

/// What [`Cache::check`] found.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// Published, every recorded file present with its size (and hash, where it was checked).
    Hit(PathBuf),
    /// Published by a cxl-lab before file hashes: its files were hashed and recorded as they are
    /// now, so damage done before this lookup is not seen.
    Adopted(PathBuf),
    Miss,
    Damaged(Damage),
}

/// Files of a published artifact that are not as its manifest records.
#[derive(Clone, Debug)]
pub struct Damage {
    pub artifact: PathBuf,
    /// Each damaged file (its full path) and what is wrong with it.
    pub files: Vec<(PathBuf, String)>,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        let shown: Vec<String> =
            self.files.iter().take(SHOWN).map(|(path, what)| format!("{}: {what}", path.display())).collect();
        f.write_str(&shown.join("; "))?;
        if self.files.len() > SHOWN {
            write!(f, "; and {} more files of {}", self.files.len() - SHOWN, self.artifact.display())?;
        }
        Ok(())
    }
}

/// What `cache verify` found in one artifact or download.
#[derive(Clone, Debug)]
pub struct VerifyEntry {
    pub name: String,
    /// `None` when whole.
    pub problem: Option<String>,
}

/// The identity of a file's current contents as far as `lstat` can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    inode: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Fingerprint {
    fn of(metadata: &std::fs::Metadata) -> Fingerprint {
        Fingerprint {
            inode: metadata.ino(),
            size: metadata.size(),
            mtime_ns: metadata.mtime().saturating_mul(1_000_000_000).saturating_add(metadata.mtime_nsec()),
            ctime_ns: metadata.ctime().saturating_mul(1_000_000_000).saturating_add(metadata.ctime_nsec()),
        }
    }

    fn line(&self) -> String {
        format!("{} {} {} {}", self.inode, self.size, self.mtime_ns, self.ctime_ns)
    }

    fn parse(line: &str) -> Option<Fingerprint> {
        let mut numbers = line.split(' ');
        let fingerprint = Fingerprint {
            inode: numbers.next()?.parse().ok()?,
            size: numbers.next()?.parse().ok()?,
            mtime_ns: numbers.next()?.parse().ok()?,
            ctime_ns: numbers.next()?.parse().ok()?,
        };
        numbers.next().is_none().then_some(fingerprint)
    }
}

/// One published artifact, as `cache ls` shows it.
#[derive(Clone, Debug)]
pub struct ArtifactEntry {
    pub name: String,
    pub path: PathBuf,
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    pub freed_bytes: u64,
    /// Entries another process holds a lock on.
    pub busy: Vec<String>,
}

/// The artifact cache under the layout's cache root (`Layout::artifacts_dir` and its siblings).
#[derive(Clone, Debug)]
pub struct Cache {
    pub layout: Layout,
}

impl Cache {
    pub fn new(layout: &Layout) -> Cache {
        Cache { layout: layout.clone() }
    }

    pub fn artifact_name(kind: ArtifactKind, key: &CacheKey) -> String {
        entry_name(kind.name(), key)
    }

    pub fn artifact_path(&self, kind: ArtifactKind, key: &CacheKey) -> PathBuf {
        self.layout.artifacts_dir().join(Cache::artifact_name(kind, key))
    }

    /// Whether the artifact is published and whole: reads its manifest and `lstat`s each file it
    /// records; hashes only files changed since their stamp (see the module documentation).
    pub fn check(&self, kind: ArtifactKind, key: &CacheKey) -> anyhow::Result<Lookup> {
        let name = Cache::artifact_name(kind, key);
        let path = self.layout.artifacts_dir().join(&name);
        let manifest_path = path.join(MANIFEST);
        let bytes = match std::fs::read(&manifest_path) {
            Ok(bytes) => bytes,
            // A directory without a manifest is a hand-made leftover, not an artifact.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::Miss),
            Err(error) => return Err(error).with_context(|| format!("reading {}", manifest_path.display())),
        };
        let damaged = |what: String| Ok(Lookup::Damaged(Damage { artifact: path.clone(), files: vec![(manifest_path.clone(), what)] }));
        let mut manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(manifest) => manifest,
            Err(error) => return damaged(format!("does not parse ({error})")),
        };
        if manifest.kind != kind.name() || manifest.key != *key {
            return damaged(format!("describes {} instead", entry_name(&manifest.kind, &manifest.key)));
        }
        let Some(files) = &manifest.files else {
            let (files, fingerprints) = record_files(&path)?;
            manifest.files = Some(files);
            let bytes = serde_json::to_vec_pretty(&manifest)?;
            crate::sys::atomic_file::replace_file(&manifest_path, &bytes)
                .with_context(|| format!("recording the file hashes of {}", path.display()))?;
            self.write_stamp(&name, &bytes, &fingerprints);
            return Ok(Lookup::Adopted(path));
        };
        let problems = self.verify_files(&path, &name, &bytes, files, false)?;
        if problems.is_empty() {
            Ok(Lookup::Hit(path))
        } else {
            Ok(Lookup::Damaged(Damage { artifact: path, files: problems }))
        }
    }

    /// Damaged files of an artifact (empty when whole). Hashes the files whose fingerprint differs
    /// from the stamp (all of them when `full`), and stamps the artifact again when all are whole.
    fn verify_files(
        &self,
        artifact: &Path,
        name: &str,
        manifest_bytes: &[u8],
        files: &[FileRecord],
        full: bool,
    ) -> anyhow::Result<Vec<(PathBuf, String)>> {
        let stamp = if full { None } else { self.read_stamp(name, manifest_bytes, files.len()) };
        let mut problems = Vec::new();
        let mut fingerprints = Vec::with_capacity(files.len());
        let mut to_hash = Vec::new();
        for (index, record) in files.iter().enumerate() {
            let path = artifact.join(&record.path);
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    problems.push((path, "missing".to_owned()));
                    continue;
                }
                Err(error) => return Err(error).with_context(|| format!("checking {}", path.display())),
            };
            let fingerprint = Fingerprint::of(&metadata);
            if metadata.is_symlink() != record.symlink || !(metadata.is_symlink() || metadata.is_file()) {
                let was = if record.symlink { "a symlink" } else { "a regular file" };
                problems.push((path, format!("is no longer {was}")));
            } else if metadata.len() != record.size {
                problems.push((path, format!("{} bytes, the manifest records {}", metadata.len(), record.size)));
            } else if stamp.as_ref().and_then(|stamp| stamp.get(index)) != Some(&fingerprint) {
                to_hash.push(index);
            }
            fingerprints.push(fingerprint);
        }
        if !problems.is_empty() {
            return Ok(problems);
        }
        for &index in &to_hash {
            let record = &files[index];
            let path = artifact.join(&record.path);
            let hash = content_hash(&path, record.symlink).with_context(|| format!("hashing {}", path.display()))?;
            if hash != record.blake3 {
                problems.push((path, format!("contents changed (blake3 {hash}, the manifest records {})", record.blake3)));
            }
        }
        if !problems.is_empty() {
            // Found by a full hash with unchanged fingerprints: the next lookup must hash again.
            let _ = std::fs::remove_file(self.layout.verified_dir().join(name));
        } else if stamp.is_none() || !to_hash.is_empty() {
            self.write_stamp(name, manifest_bytes, &fingerprints);
        }
        Ok(problems)
    }

    /// The stamp of `name` if it was written for this very manifest.
    fn read_stamp(&self, name: &str, manifest_bytes: &[u8], count: usize) -> Option<Vec<Fingerprint>> {
        let text = std::fs::read_to_string(self.layout.verified_dir().join(name)).ok()?;
        let mut lines = text.lines();
        if lines.next()? != format!("manifest {}", blake3::hash(manifest_bytes).to_hex()) {
            return None;
        }
        let fingerprints: Vec<Fingerprint> = lines.map(Fingerprint::parse).collect::<Option<_>>()?;
        (fingerprints.len() == count).then_some(fingerprints)
    }

    /// Best effort: without a stamp (a full disk, a read-only cache) the files are hashed again
    /// next time, nothing worse.
    fn write_stamp(&self, name: &str, manifest_bytes: &[u8], fingerprints: &[Fingerprint]) {
        let mut text = format!("manifest {}\n", blake3::hash(manifest_bytes).to_hex());
        for fingerprint in fingerprints {
            text.push_str(&fingerprint.line());
            text.push('\n');
        }
        let _ = crate::sys::atomic_file::replace_file(&self.layout.verified_dir().join(name), text.as_bytes());
    }

    /// Hashes every file of every artifact (ignoring stamps) and every download (against the
    /// sha256 its name carries): what a bit flip below the file system needs. Reads everything.
    pub fn verify_all(&self) -> anyhow::Result<Vec<VerifyEntry>> {
        let mut report = Vec::new();
        for entry in self.list()? {
            let manifest_path = entry.path.join(MANIFEST);
            let problem = match (fs::read(&manifest_path), &entry.manifest) {
                (Err(error), _) => Some(error.to_string()),
                (Ok(_), None) => Some(format!("{} does not parse", manifest_path.display())),
                (Ok(_), Some(Manifest { files: None, .. })) => {
                    Some("no file hashes (cached by an older cxl-lab; the next lookup records them)".to_owned())
                }
                (Ok(bytes), Some(Manifest { files: Some(files), .. })) => {
                    let problems = self.verify_files(&entry.path, &entry.name, &bytes, files, true)?;
                    (!problems.is_empty()).then(|| Damage { artifact: entry.path.clone(), files: problems }.to_string())
                }
            };
            report.push(VerifyEntry { name: entry.name, problem });
        }
        if let Ok(read_dir) = fs::read_dir(self.layout.downloads_dir()) {
            let mut downloads: Vec<PathBuf> = read_dir.map(|entry| entry.map(|entry| entry.path())).collect::<Result<_, _>>()?;
            downloads.sort();
            for path in downloads.into_iter().filter(|path| path.extension().is_some_and(|extension| extension == "deb")) {
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                // `<package>_<version>_<first 16 hex digits of its sha256>.deb`
                let Some(expected) = name.strip_suffix(".deb").and_then(|stem| stem.rsplit_once('_')).map(|(_, hash)| hash.to_owned())
                else {
                    continue;
                };
                let actual = sha256_file(&path)?;
                let problem =
                    (!actual.starts_with(&expected)).then(|| format!("{}: sha256 {actual}, its name says {expected}…", path.display()));
                report.push(VerifyEntry { name: format!("downloads/{name}"), problem });
            }
        }
        Ok(report)
    }

    /// `error`, with the full file system named when the cache's has (almost) no space left: a
    /// program that ran out of it often could not write why into its log on the same file system.
    pub fn note_if_full(&self, error: anyhow::Error) -> anyhow::Error {
        if format!("{error:#}").contains("No space left on device") {
            return error;
        }
        match free_space(&self.layout.cache) {
            Some(free) if free < NEARLY_FULL_BYTES => error.context(format!(
                "No space left on device: the file system of {} has {free} bytes free",
                self.layout.cache.display()
            )),
            _ => error,
        }
    }

    /// The lock file of entry `name` (created empty; only its flock matters).
    fn lock_file(&self, name: &str) -> anyhow::Result<(std::fs::File, PathBuf)> {
        fs::create_dir_all(self.layout.cache_locks_dir())?;
        let path = self.layout.cache_locks_dir().join(format!("{name}.lock"));
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?.into_parts().0;
        Ok((file, path))
    }

    /// Takes the lock `name` (an artifact's, or a shared resource's such as a download or a
    /// private apt directory), waiting for another process that holds it. Released on drop.
    pub fn lock(&self, name: &str) -> anyhow::Result<std::fs::File> {
        let (file, path) = self.lock_file(name)?;
        FileExt::lock_exclusive(&file).with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    /// Returns the artifact, building it first if it is missing or damaged (the caller has
    /// decided a damaged one may be replaced): `build` fills an empty directory, whose files are
    /// then hashed into the manifest and which is published by rename. On error the directory is
    /// removed.
    pub fn get_or_build(
        &self,
        kind: ArtifactKind,
        key: &CacheKey,
        inputs: serde_json::Value,
        build: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        if let Lookup::Hit(path) | Lookup::Adopted(path) = self.check(kind, key)? {
            return Ok(path);
        }
        let name = Cache::artifact_name(kind, key);
        let _lock = self.lock(&name)?;
        // Another process may have built it while this one waited for the lock.
        if let Lookup::Hit(path) | Lookup::Adopted(path) = self.check(kind, key)? {
            return Ok(path);
        }
        self.remove_stale_staging(&name);
        fs::create_dir_all(self.layout.cache_tmp_dir())?;
        fs::create_dir_all(self.layout.artifacts_dir())?;
        let staging = tempfile::Builder::new().prefix(&format!("{name}.")).tempdir_in(self.layout.cache_tmp_dir())?;
        let built = build(staging.path()).and_then(|()| {
            let (files, fingerprints) = record_files(staging.path())?;
            let manifest = Manifest {
                kind: kind.name().to_owned(),
                key: key.clone(),
                created: now_seconds(),
                size_bytes: disk_usage(staging.path()),
                inputs,
                files: Some(files),
            };
            let bytes = serde_json::to_vec_pretty(&manifest)?;
            fs::write(staging.path().join(MANIFEST), &bytes)?;
            Ok((bytes, fingerprints))
        });
        // Measured while the staging directory still holds what filled the disk.
        let (manifest_bytes, fingerprints) =
            built.map_err(|error| self.note_if_full(error).context(format!("building {kind} artifact {}", key.short())))?;
        let destination = self.artifact_path(kind, key);
        // What is there is damaged, or a hand-made directory without a manifest: replace it.
        if destination.exists() {
            remove_tree(&destination)?;
        }
        let staged = staging.keep();
        fs::rename(&staged, &destination)?;
        // The rename keeps every inode: the fingerprints taken in staging hold.
        self.write_stamp(&name, &manifest_bytes, &fingerprints);
        Ok(destination)
    }

    /// Removes `tmp/<name>.*`: staging directories of builders of `name` killed outright, which
    /// could not remove them. Call with the lock of `name` held: it says their builders are gone.
    /// One with a mount below it (debootstrap outside its namespaces) is left alone.
    fn remove_stale_staging(&self, name: &str) {
        let Ok(entries) = std::fs::read_dir(self.layout.cache_tmp_dir()) else { return };
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = format!("{name}.");
        for path in entries.flatten().filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix)).map(|entry| entry.path()) {
            if !mounts.lines().filter_map(|line| line.split(' ').nth(4)).any(|point| Path::new(point).starts_with(&path)) {
                let _ = remove_tree(&path);
            }
        }
    }

    /// The manifest of a published artifact.
    pub fn manifest(&self, kind: ArtifactKind, key: &CacheKey) -> anyhow::Result<Manifest> {
        let path = self.artifact_path(kind, key).join(MANIFEST);
        serde_json::from_slice(&fs::read(&path)?).with_context(|| format!("reading {}", path.display()))
    }

    /// Every published artifact, sorted by name.
    pub fn list(&self) -> anyhow::Result<Vec<ArtifactEntry>> {
        let mut entries = Vec::new();
        let Ok(read_dir) = fs::read_dir(self.layout.artifacts_dir()) else { return Ok(entries) };
        for entry in read_dir {
            let entry = entry?;
            let path = entry.path();
            let manifest = fs::read(path.join(MANIFEST)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
            entries.push(ArtifactEntry { name: entry.file_name().to_string_lossy().into_owned(), path, manifest });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Removes tmp leftovers, every artifact not named in `referenced` and every download not
    /// named there as `downloads/<file>` (all of them with `all`, and then the private apt lists
    /// and debootstrap's package cache too). Entries whose lock another process holds are left alone.
    pub fn gc(&self, referenced: &HashSet<String>, all: bool) -> anyhow::Result<GcReport> {
        let mut report = GcReport::default();
        for entry in self.list()? {
            if !all && referenced.contains(&entry.name) {
                report.kept.push(entry.name);
                continue;
            }
            self.remove_unless_busy(&entry.name, &entry.path, &mut report)?;
        }
        if let Ok(read_dir) = fs::read_dir(self.layout.downloads_dir()) {
            for entry in read_dir {
                let entry = entry?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let base = file_name.trim_end_matches(".partial");
                if all || !referenced.contains(&format!("downloads/{base}")) {
                    self.remove_unless_busy(&format!("download-{base}"), &entry.path(), &mut report)?;
                }
            }
        }
        // Kept build trees: `trees/<name>`, locked as `tree-<name>` by the build that uses them.
        if let Ok(read_dir) = fs::read_dir(self.layout.build_trees_dir()) {
            for entry in read_dir {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if all || !referenced.contains(&format!("trees/{name}")) {
                    self.remove_unless_busy(&format!("tree-{name}"), &self.layout.build_tree(&name), &mut report)?;
                }
            }
        }
        if all {
            for dir in [self.layout.apt_dir(), self.layout.debootstrap_debs_dir(), self.layout.git_dir()] {
                if dir.exists() {
                    report.freed_bytes += disk_usage(&dir);
                    remove_tree(&dir)?;
                    report.removed.push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
                }
            }
        }
        if let Ok(read_dir) = fs::read_dir(self.layout.cache_tmp_dir()) {
            for entry in read_dir {
                let entry = entry?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                // tmp entries are `<kind>-<key>.<random>`: their lock is the artifact's.
                let name = file_name.split_once('.').map_or(file_name.as_str(), |(name, _)| name).to_owned();
                self.remove_unless_busy(&name, &entry.path(), &mut report)?;
            }
        }
        // Stamps of artifacts that are gone (removed by hand, or by an older gc).
        if let Ok(read_dir) = fs::read_dir(self.layout.verified_dir()) {
            for entry in read_dir {
                let entry = entry?;
                if !self.layout.artifacts_dir().join(entry.file_name()).exists() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(report)
    }

    fn remove_unless_busy(&self, name: &str, path: &Path, report: &mut GcReport) -> anyhow::Result<()> {
        let (lock, _) = self.lock_file(name)?;
        if !FileExt::try_lock_exclusive(&lock)? {
            report.busy.push(name.to_owned());
            return Ok(());
        }
        report.freed_bytes += disk_usage(path);
        remove_tree(path)?;
        let _ = std::fs::remove_file(self.layout.verified_dir().join(name));
        report.removed.push(path.file_name().unwrap_or_default().to_string_lossy().into_owned());
        Ok(())
    }
}

/// `<kind>-<key>`, for any kind name: a manifest may record one this version does not know.
fn entry_name(kind: &str, key: &CacheKey) -> String {
    format!("{kind}-{key}")
}

/// Every regular file and symlink below `dir` (except the manifest), hashed, with the
/// fingerprints they had when hashed. Other file types (device nodes in a root tree) are left out.
fn record_files(dir: &Path) -> anyhow::Result<(Vec<FileRecord>, Vec<Fingerprint>)> {
    let mut records = Vec::new();
    let mut fingerprints = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir.join(&relative))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let child = relative.join(entry.file_name());
            if child.as_os_str() == MANIFEST {
                continue;
            }
            let path = dir.join(&child);
            let metadata = fs::symlink_metadata(&path)?;
            if metadata.is_dir() {
                pending.push(child);
                continue;
            }
            if !(metadata.is_file() || metadata.is_symlink()) {
                continue;
            }
            let text = child.to_str().with_context(|| format!("{}: the cache records UTF-8 file names only", path.display()))?;
            let blake3 = content_hash(&path, metadata.is_symlink()).with_context(|| format!("hashing {}", path.display()))?;
            records.push(FileRecord { path: text.to_owned(), size: metadata.len(), blake3, symlink: metadata.is_symlink() });
            fingerprints.push(Fingerprint::of(&metadata));
        }
    }
    // Deterministic order whatever the walk's: the manifest's and the stamp's lines pair up.
    let mut paired: Vec<(FileRecord, Fingerprint)> = records.into_iter().zip(fingerprints).collect();
    paired.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(paired.into_iter().unzip())
}

/// blake3 of a file's contents, or of a symlink's target, as 32 hex digits.
fn content_hash(path: &Path, symlink: bool) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    if symlink {
        hasher.update(std::fs::read_link(path)?.as_os_str().as_bytes());
    } else {
        hash_sparse(&mut std::fs::File::open(path)?, &mut hasher)?;
    }
    Ok(hasher.finalize().to_hex()[..32].to_owned())
}

/// Feeds a file's bytes to `hasher`, its holes as zeros without reading them: the root image is
/// 3 GB of which a third is data, and reading holes costs the kernel seconds of zeroed pages.
fn hash_sparse(file: &mut std::fs::File, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    use nix::unistd::{lseek, Whence};
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let length = file.metadata()?.len();
    let mut position = 0u64;
    while position < length {
        let data = match lseek(&*file, position as i64, Whence::SeekData) {
            Ok(offset) => offset as u64,
            // No data after `position`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => length,
            // A file system without SEEK_DATA: read everything that is left.
            Err(_) => {
                file.seek(SeekFrom::Start(position))?;
                hasher.update_reader(file.take(length - position))?;
                return Ok(());
            }
        };
        let mut zeros = data.min(length) - position;
        while zeros > 0 {
            let chunk = zeros.min(ZEROS.len() as u64) as usize;
            hasher.update(&ZEROS[..chunk]);
            zeros -= chunk as u64;
        }
        if data >= length {
            break;
        }
        let hole = (lseek(&*file, data as i64, Whence::SeekHole).map_err(std::io::Error::from)? as u64).min(length);
        file.seek(SeekFrom::Start(data))?;
        hasher.update_reader(file.by_ref().take(hole - data))?;
        position = hole;
    }
    Ok(())
}

/// Bytes this process may still write below `path` (root may use the blocks ext4 reserves).
pub fn free_space(path: &Path) -> Option<u64> {
    if crate::sys::process::is_root() { fs4::free_space(path) } else { fs4::available_space(path) }.ok()
}

/// Bytes on disk below `path` (allocated blocks: sparse images count for what they use).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    tree_usage(path, &|metadata| metadata.blocks() * 512)
}

/// The sum of `measure` over `path` and every entry below it (symlinks not followed; what cannot
/// be read counts nothing).
pub fn tree_usage(path: &Path, measure: &dyn Fn(&std::fs::Metadata) -> u64) -> u64 {
    let Ok(metadata) = std::fs::symlink_metadata(path) else { return 0 };
    let own = measure(&metadata);
    if !metadata.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|entry| tree_usage(&entry.path(), measure)).sum())
        .unwrap_or(0);
    own + children
}

fn remove_tree(path: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)?;
    } else {
        fs::remove_file(path)?;
    }
    Ok(())
}

pub fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

/// The sha256 of a file's contents, in lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind the tests build: any will do, the cache treats them all alike.
    const DEMO: ArtifactKind = ArtifactKind::Kernel;

    #[derive(Serialize)]
    struct Inputs<'a> {
        recipe: &'a str,
        version: &'a str,
    }

    #[test]
    fn key_is_stable_and_sensitive_to_every_input() {
        let key = CacheKey::of(ArtifactKind::Kernel, &Inputs { recipe: "r", version: "7.3.4" });
        // Pinned: a change here invalidates every user's cache, so it must be deliberate.
        assert_eq!(key, CacheKey::of(ArtifactKind::Kernel, &Inputs { recipe: "r", version: "7.3.4" }));
        assert_eq!(key.0.len(), 32);
        assert_ne!(key, CacheKey::of(ArtifactKind::Kernel, &Inputs { recipe: "r", version: "7.3.5" }));
        assert_ne!(key, CacheKey::of(ArtifactKind::Initramfs, &Inputs { recipe: "r", version: "7.3.4" }));
        assert_eq!(key.0, CacheKey::of(ArtifactKind::Kernel, &serde_json::json!({"recipe": "r", "version": "7.3.4"})).0);
    }

    #[test]
    fn publishes_by_rename_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Layout::for_cache(dir.path()));
        let key = CacheKey::of(DEMO, &1);
        let mut builds = 0;
        for _ in 0..2 {
            let path = cache
                .get_or_build(DEMO, &key, serde_json::json!({"n": 1}), |staging| {
                    builds += 1;
                    fs::write(staging.join("payload"), "hello")?;
                    Ok(())
                })
                .unwrap();
            assert_eq!(fs::read_to_string(path.join("payload")).unwrap(), "hello");
        }
        assert_eq!(builds, 1);
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 1);
        let manifest = listed[0].manifest.as_ref().unwrap();
        assert_eq!((manifest.kind.as_str(), &manifest.key), (DEMO.name(), &key));
        assert_eq!(fs::read_dir(cache.layout.cache_tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Layout::for_cache(dir.path()));
        let key = CacheKey::of(DEMO, &2);
        let error = cache
            .get_or_build(DEMO, &key, serde_json::Value::Null, |staging| {
                fs::write(staging.join("half"), "half")?;
                anyhow::bail!("debootstrap died")
            })
            .unwrap_err();
        assert!(format!("{error:#}").contains("debootstrap died"));
        assert!(matches!(cache.check(DEMO, &key).unwrap(), Lookup::Miss));
        assert!(!cache.artifact_path(DEMO, &key).exists());
        assert_eq!(fs::read_dir(cache.layout.cache_tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn gc_keeps_referenced_and_removes_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Layout::for_cache(dir.path()));
        let keep = CacheKey::of(DEMO, &"keep");
        let drop = CacheKey::of(DEMO, &"drop");
        for key in [&keep, &drop] {
            cache.get_or_build(DEMO, key, serde_json::Value::Null, |_| Ok(())).unwrap();
        }
        // What a process killed mid-build leaves behind.
        fs::create_dir_all(cache.layout.cache_tmp_dir().join("demo-abc.XYZ/usr")).unwrap();
        fs::create_dir_all(cache.layout.downloads_dir()).unwrap();
        for file in ["kept.deb", "old.deb", "half.deb.partial"] {
            fs::write(cache.layout.downloads_dir().join(file), "deb").unwrap();
        }
        for tree in ["linux-kept", "linux-old"] {
            fs::create_dir_all(cache.layout.build_tree(tree).join("drivers/cxl")).unwrap();
        }
        let referenced: HashSet<String> =
            [Cache::artifact_name(DEMO, &keep), "downloads/kept.deb".to_owned(), "trees/linux-kept".to_owned()].into();
        let report = cache.gc(&referenced, false).unwrap();
        assert_eq!(report.removed.len(), 5, "{report:?}");
        assert!(cache.layout.build_tree("linux-kept").exists());
        assert!(!cache.layout.build_tree("linux-old").exists());
        assert!(cache.layout.downloads_dir().join("kept.deb").exists());
        assert!(!cache.layout.downloads_dir().join("old.deb").exists());
        assert!(matches!(cache.check(DEMO, &keep).unwrap(), Lookup::Hit(_)));
        assert!(matches!(cache.check(DEMO, &drop).unwrap(), Lookup::Miss));
        assert!(cache.layout.verified_dir().join(Cache::artifact_name(DEMO, &keep)).is_file());
        assert!(!cache.layout.verified_dir().join(Cache::artifact_name(DEMO, &drop)).exists());
        assert_eq!(fs::read_dir(cache.layout.cache_tmp_dir()).unwrap().count(), 0);
        cache.gc(&referenced, true).unwrap();
        assert!(cache.list().unwrap().is_empty());
    }

    #[test]
    fn keys_and_directory_names_are_the_ones_caches_already_hold() {
        let key = CacheKey::of(ArtifactKind::Kernel, &serde_json::json!({"recipe": "r", "version": "7.3.4"}));
        assert_eq!(key.0, "d76888f0af0af1ce53cc7d0fa1df0ce6");
        assert_eq!(Cache::artifact_name(ArtifactKind::Kernel, &key), "kernel-d76888f0af0af1ce53cc7d0fa1df0ce6");
        let tree = CacheKey::of(ArtifactKind::RootfsTree, &serde_json::json!({"suite": "trixie"}));
        assert_eq!(Cache::artifact_name(ArtifactKind::RootfsTree, &tree), "rootfs-tree-e05c98cc5bb2b130362ff9f5afecb62b");
        let names: Vec<&str> = ArtifactKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(names, ["kernel", "initramfs", "rootfs", "rootfs-tree", "qemu", "ndctl", "snapshot"]);
    }

    #[test]
    fn an_artifact_of_a_kind_this_version_does_not_know_is_listed_and_collected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Layout::for_cache(dir.path()));
        let name = "firmware-0123456789abcdef0123456789abcdef";
        fs::create_dir_all(cache.layout.artifacts_dir().join(name)).unwrap();
        let manifest = serde_json::json!({
            "kind": "firmware", "key": "0123456789abcdef0123456789abcdef", "created": 0, "size_bytes": 0, "inputs": null, "files": [],
        });
        fs::write(cache.layout.artifacts_dir().join(name).join(MANIFEST), manifest.to_string()).unwrap();
        let listed = cache.list().unwrap();
        assert_eq!((listed[0].name.as_str(), listed[0].manifest.as_ref().unwrap().kind.as_str()), (name, "firmware"));
        assert_eq!(cache.gc(&[name.to_owned()].into(), false).unwrap().kept, [name]);
        assert_eq!(cache.gc(&HashSet::new(), false).unwrap().removed, [name]);
        assert!(cache.list().unwrap().is_empty());
    }

    fn build_payload_and_link(staging: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(staging.join("sub"))?;
        fs::write(staging.join("sub/payload"), "hello world")?;
        fs_err::os::unix::fs::symlink("sub/payload", staging.join("link"))?;
        Ok(())
    }

    fn damage_of(cache: &Cache, key: &CacheKey) -> Vec<String> {
        match cache.check(DEMO, key).unwrap() {
            Lookup::Damaged(damage) => damage.files.iter().map(|(path, what)| format!("{}: {what}", path.file_name().unwrap().to_string_lossy())).collect(),
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn damage_is_found_by_size_type_and_contents_even_with_the_mtime_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Layout::for_cache(dir.path()));
        let key = CacheKey::of(DEMO, &3);
        let path = cache.get_or_build(DEMO, &key, serde_json::Value::Null, build_payload_and_link).unwrap();
        assert!(matches!(cache.check(DEMO, &key).unwrap(), Lookup::Hit(_)));

        // Same size, other bytes, mtime restored: ctime still moved, so the file is hashed again.
        let payload = path.join("sub/payload");
        let modified = fs::metadata(&payload).unwrap().modified().unwrap();
        fs::write(&payload, "HELLO world").unwrap();
        std::fs::File::options().write(true).open(&payload).unwrap().set_modified(modified).unwrap();
        let damage = damage_of(&cache, &key);
        assert!(damage.len() == 1 && damage[0].starts_with("payload: contents changed"), "{damage:?}");

        fs::write(&payload, "hello").unwrap();
        assert_eq!(damage_of(&cache, &key), ["payload: 5 bytes, the manifest records 11"]);
        fs::remove_file(&payload).unwrap();
        assert_eq!(damage_of(&cache, &key), ["payload: missing"]);
        fs::remove_file(path.join("link")).unwrap();
        fs::write(path.join("link"), "sub/payload").unwrap();
        assert_eq!(damage_of(&cache, &key), ["link: is no longer a symlink", "payload: missing"]);

        // A damaged artifact is replaced by the next get_or_build.
        let rebuilt = cache.get_or_build(DEMO, &key, serde_json::Value::Null, build_payload_and_link).unwrap();
        assert_eq!(fs::read_to_string(rebuilt.join("link")).unwrap(), "hello world");
        assert!(matches!(cache.check(DEMO, &key).unwrap(), Lookup::Hit(_)));
    }

    #[test]
    fn a_manifest_without_file_hashes_is_adopted_and_a_broken_one_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Layout::for_cache(dir.path()));
        let key = CacheKey::of(DEMO, &4);
        let path = cache
            .get_or_build(DEMO, &key, serde_json::Value::Null, |staging| Ok(fs::write(staging.join("payload"), "data")?))
            .unwrap();
        let manifest_path = path.join(MANIFEST);
        let mut old: serde_json::Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("files");
        fs::write(&manifest_path, serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(matches!(cache.check(DEMO, &key).unwrap(), Lookup::Adopted(_)));
        assert!(matches!(cache.check(DEMO, &key).unwrap(), Lookup::Hit(_)));

        let text = fs::read_to_string(&manifest_path).unwrap();
        fs::write(&manifest_path, &text[..text.len() / 2]).unwrap();
        let damage = damage_of(&cache, &key);
        assert!(damage[0].starts_with("manifest.json: does not parse"), "{damage:?}");
    }

    #[test]
    fn sparse_files_hash_as_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(3 * 1024 * 1024).unwrap();
        std::os::unix::fs::FileExt::write_at(&file, b"data in the middle", 1024 * 1024 + 7).unwrap();
        let plain = blake3::hash(&std::fs::read(&path).unwrap()).to_hex()[..32].to_owned();
        assert_eq!(content_hash(&path, false).unwrap(), plain);
        file.set_len(5).unwrap();
        assert_eq!(content_hash(&path, false).unwrap(), blake3::hash(&[0; 5]).to_hex()[..32].to_owned());
    }
}
