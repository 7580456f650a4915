//! The content-addressed artifact cache.
//!
//! An artifact (a kernel with its modules, an initramfs, a root filesystem image) lives in
//! `<cache>/artifacts/<kind>-<key>/` where `key` is the blake3 hash of every input that shapes it
//! (recipe text, resolved versions and sha256s, [`FORMAT_VERSION`]). It is built in
//! `<cache>/tmp/<kind>-<key>.<random>/` and published by one `rename`, so an interrupted build leaves
//! no half artifact, only a tmp directory that `cache gc` removes. A `manifest.json` inside says what
//! it is. An exclusive file lock per key (`<cache>/locks/`) makes a second `lab up` wait for the
//! first build instead of repeating it.
//!
//! Lookups never read artifact contents: a warm run costs one `stat` per artifact.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use fs4::fs_std::FileExt;
use fs_err as fs;
use serde::{Deserialize, Serialize};

/// Bumped when the way artifacts are built changes in a way their inputs do not show.
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST: &str = "manifest.json";

/// A hash of every input of one artifact.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey(pub String);

impl CacheKey {
    /// Hashes `kind` and `inputs` (serialized as JSON, so field order is the struct's).
    pub fn of<T: Serialize>(kind: &str, inputs: &T) -> CacheKey {
        let json = serde_json::to_vec(inputs).expect("cache inputs serialize to JSON");
        let mut hasher = blake3::Hasher::new();
        hasher.update(format!("cxl-lab artifact v{FORMAT_VERSION}\0{kind}\0").as_bytes());
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
    pub kind: String,
    pub key: CacheKey,
    /// Seconds since the epoch.
    pub created: u64,
    pub size_bytes: u64,
    /// A readable summary of the inputs (versions, suites), not the inputs themselves.
    pub inputs: serde_json::Value,
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

#[derive(Clone, Debug)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Downloaded .deb files, named by package, version and hash.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Private apt state directories.
    pub fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }

    pub fn artifact_name(kind: &str, key: &CacheKey) -> String {
        format!("{kind}-{key}")
    }

    pub fn artifact_path(&self, kind: &str, key: &CacheKey) -> PathBuf {
        self.artifacts_dir().join(Cache::artifact_name(kind, key))
    }

    /// The artifact's directory if it is published. One `stat`.
    pub fn lookup(&self, kind: &str, key: &CacheKey) -> Option<PathBuf> {
        let path = self.artifact_path(kind, key);
        path.join(MANIFEST).is_file().then_some(path)
    }

    /// The lock file of entry `name` (created empty; only its flock matters).
    fn lock_file(&self, name: &str) -> anyhow::Result<(std::fs::File, PathBuf)> {
        fs::create_dir_all(self.locks_dir())?;
        let path = self.locks_dir().join(format!("{name}.lock"));
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

    /// Returns the artifact, building it first if needed: `build` fills an empty directory, which
    /// is published by rename once it returns `Ok`. On error the directory is removed.
    pub fn get_or_build(
        &self,
        kind: &str,
        key: &CacheKey,
        inputs: serde_json::Value,
        build: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        if let Some(path) = self.lookup(kind, key) {
            return Ok(path);
        }
        let name = Cache::artifact_name(kind, key);
        let _lock = self.lock(&name)?;
        // Another process may have built it while this one waited for the lock.
        if let Some(path) = self.lookup(kind, key) {
            return Ok(path);
        }
        fs::create_dir_all(self.tmp_dir())?;
        fs::create_dir_all(self.artifacts_dir())?;
        let staging = tempfile::Builder::new().prefix(&format!("{name}.")).tempdir_in(self.tmp_dir())?;
        build(staging.path()).with_context(|| format!("building {kind} artifact {}", key.short()))?;
        let manifest = Manifest {
            kind: kind.to_owned(),
            key: key.clone(),
            created: now_seconds(),
            size_bytes: disk_usage(staging.path()),
            inputs,
        };
        fs::write(staging.path().join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;
        let destination = self.artifact_path(kind, key);
        // A leftover without a manifest (a crash between an older rename and its manifest cannot
        // happen, but a hand-made directory can) is not an artifact: replace it.
        if destination.exists() {
            remove_tree(&destination)?;
        }
        let staged = staging.keep();
        fs::rename(&staged, &destination)?;
        Ok(destination)
    }

    /// Every published artifact, sorted by name.
    pub fn list(&self) -> anyhow::Result<Vec<ArtifactEntry>> {
        let mut entries = Vec::new();
        let Ok(read_dir) = fs::read_dir(self.artifacts_dir()) else { return Ok(entries) };
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
        if let Ok(read_dir) = fs::read_dir(self.downloads_dir()) {
            for entry in read_dir {
                let entry = entry?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let base = file_name.trim_end_matches(".partial");
                if all || !referenced.contains(&format!("downloads/{base}")) {
                    self.remove_unless_busy(&format!("download-{base}"), &entry.path(), &mut report)?;
                }
            }
        }
        if all {
            for dir in [self.apt_dir(), self.root.join("debootstrap-debs")] {
                if dir.exists() {
                    report.freed_bytes += disk_usage(&dir);
                    remove_tree(&dir)?;
                    report.removed.push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
                }
            }
        }
        if let Ok(read_dir) = fs::read_dir(self.tmp_dir()) {
            for entry in read_dir {
                let entry = entry?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                // tmp entries are `<kind>-<key>.<random>`: their lock is the artifact's.
                let name = file_name.split_once('.').map_or(file_name.as_str(), |(name, _)| name).to_owned();
                self.remove_unless_busy(&name, &entry.path(), &mut report)?;
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
        report.removed.push(path.file_name().unwrap_or_default().to_string_lossy().into_owned());
        Ok(())
    }
}

/// Bytes on disk below `path` (allocated blocks: sparse images count for what they use).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else { return 0 };
    let own = metadata.blocks() * 512;
    if !metadata.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|entry| disk_usage(&entry.path())).sum())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Inputs<'a> {
        recipe: &'a str,
        version: &'a str,
    }

    #[test]
    fn key_is_stable_and_sensitive_to_every_input() {
        let key = CacheKey::of("kernel", &Inputs { recipe: "r", version: "7.3.4" });
        // Pinned: a change here invalidates every user's cache, so it must be deliberate.
        assert_eq!(key, CacheKey::of("kernel", &Inputs { recipe: "r", version: "7.3.4" }));
        assert_eq!(key.0.len(), 32);
        assert_ne!(key, CacheKey::of("kernel", &Inputs { recipe: "r", version: "7.3.5" }));
        assert_ne!(key, CacheKey::of("initramfs", &Inputs { recipe: "r", version: "7.3.4" }));
        assert_eq!(key.0, CacheKey::of("kernel", &serde_json::json!({"recipe": "r", "version": "7.3.4"})).0);
    }

    #[test]
    fn publishes_by_rename_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = CacheKey::of("demo", &1);
        let mut builds = 0;
        for _ in 0..2 {
            let path = cache
                .get_or_build("demo", &key, serde_json::json!({"n": 1}), |staging| {
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
        assert_eq!((manifest.kind.as_str(), &manifest.key), ("demo", &key));
        assert_eq!(fs::read_dir(cache.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = CacheKey::of("demo", &2);
        let error = cache
            .get_or_build("demo", &key, serde_json::Value::Null, |staging| {
                fs::write(staging.join("half"), "half")?;
                anyhow::bail!("debootstrap died")
            })
            .unwrap_err();
        assert!(format!("{error:#}").contains("debootstrap died"));
        assert!(cache.lookup("demo", &key).is_none());
        assert!(!cache.artifact_path("demo", &key).exists());
        assert_eq!(fs::read_dir(cache.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn gc_keeps_referenced_and_removes_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let keep = CacheKey::of("demo", &"keep");
        let drop = CacheKey::of("demo", &"drop");
        for key in [&keep, &drop] {
            cache.get_or_build("demo", key, serde_json::Value::Null, |_| Ok(())).unwrap();
        }
        // What a process killed mid-build leaves behind.
        fs::create_dir_all(cache.tmp_dir().join("demo-abc.XYZ/usr")).unwrap();
        fs::create_dir_all(cache.downloads_dir()).unwrap();
        for file in ["kept.deb", "old.deb", "half.deb.partial"] {
            fs::write(cache.downloads_dir().join(file), "deb").unwrap();
        }
        let referenced: HashSet<String> = [Cache::artifact_name("demo", &keep), "downloads/kept.deb".to_owned()].into();
        let report = cache.gc(&referenced, false).unwrap();
        assert_eq!(report.removed.len(), 4, "{report:?}");
        assert!(cache.downloads_dir().join("kept.deb").exists());
        assert!(!cache.downloads_dir().join("old.deb").exists());
        assert!(cache.lookup("demo", &keep).is_some());
        assert!(cache.lookup("demo", &drop).is_none());
        assert_eq!(fs::read_dir(cache.tmp_dir()).unwrap().count(), 0);
        cache.gc(&referenced, true).unwrap();
        assert!(cache.list().unwrap().is_empty());
    }
}
