//! What every stack's run shares: the options, the cache and the runner, the lock as it evolves
//! (written after each component, so a later failure does not lose what was resolved), cache
//! lookups that report damage (refused with `--locked`), and what the run did (notes, timings).
//! `distro.rs` and `source/` each add their recipe ([`RecipeRun`]) and their components.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;

use crate::layout::Layout;
use crate::shell::Shell;
use crate::stack::cache::{ArtifactKind, Cache, CacheKey, Lookup};
use crate::stack::lock::{self, ArtifactLock, StackLock};
use crate::stack::recipe::LoadedRecipe;
use crate::stack::StackKind;
use crate::sys::runner::CommandRunner;

#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Use the lock file as it is: fail rather than resolve anything again.
    pub locked: bool,
    /// Write what was resolved back to `images/<stack>.lock` (tests turn this off).
    pub write_lock: bool,
}

impl Default for StackOptions {
    fn default() -> StackOptions {
        StackOptions { locked: false, write_lock: true }
    }
}

/// One run over a stack, below its recipe.
pub struct StackRun<'a> {
    pub shell: &'a Shell,
    pub options: &'a StackOptions,
    pub cache: Cache,
    pub runner: CommandRunner,
    pub lock_path: PathBuf,
    pub lock: StackLock,
    lock_on_disk: Option<StackLock>,
    /// Where each component came from, one line each (`-v` shows them).
    pub notes: Vec<String>,
    /// Seconds spent per stage in this run (empty stages left out).
    pub timings: Vec<(String, f64)>,
    /// A locked pin was found gone and resolved again; a second time is an error.
    pub re_resolved: bool,
}

impl<'a> StackRun<'a> {
    /// Reads `stack`'s lock (none is an error with `--locked`).
    pub fn open(paths: &Layout, shell: &'a Shell, options: &'a StackOptions, stack: StackKind) -> anyhow::Result<StackRun<'a>> {
        let lock_path = lock::lock_path(&paths.images_dir(), stack);
        let lock_on_disk = StackLock::read(&lock_path)?;
        if options.locked && lock_on_disk.is_none() {
            bail!("--locked, but there is no lock file {}: run once without --locked", lock_path.display());
        }
        Ok(StackRun {
            shell,
            options,
            cache: Cache::new(paths),
            runner: CommandRunner::new(paths.build_logs_dir()),
            lock: lock_on_disk.clone().unwrap_or_else(|| StackLock::empty(stack)),
            lock_on_disk,
            lock_path,
            notes: Vec::new(),
            timings: Vec::new(),
            re_resolved: false,
        })
    }

    pub fn time(&mut self, stage: &str, started: Instant) {
        self.timings.push((stage.to_owned(), started.elapsed().as_secs_f64()));
    }

    /// The artifact if it is cached and whole. Damage is refused with `--locked`; otherwise it is
    /// reported and the artifact counts as missing (`get_or_build` replaces it).
    pub fn lookup(&self, kind: ArtifactKind, key: &CacheKey) -> anyhow::Result<Option<PathBuf>> {
        match self.cache.check(kind, key)? {
            Lookup::Hit(path) => Ok(Some(path)),
            Lookup::Adopted(path) => {
                self.shell.warn(format!(
                    "{} was cached by an older cxl-lab without file hashes: recorded them as the files are now \
                     (damage done before now is not detected; `cargo xtask cache gc --all` starts over)",
                    path.display()
                ));
                Ok(Some(path))
            }
            Lookup::Miss => Ok(None),
            Lookup::Damaged(damage) if self.options.locked => {
                bail!("--locked, but the cached {kind} artifact is damaged: {damage}; run without --locked to rebuild it")
            }
            Lookup::Damaged(damage) => {
                self.shell.warn(format!("the cached {kind} artifact is damaged, rebuilding it: {damage}"));
                Ok(None)
            }
        }
    }

    /// Records the content of the published artifact `kind`/`key` in the lock. When the lock
    /// holds other bytes for the same key: refused with `--locked`, naming the parts that differ;
    /// otherwise a warning, and the new bytes are recorded.
    pub fn hold_artifact(&mut self, kind: ArtifactKind, key: &CacheKey) -> anyhow::Result<()> {
        let manifest = self.cache.manifest(kind, key)?;
        let built = ArtifactLock::of(&key.0, manifest.files.as_deref().unwrap_or_default());
        let locked = self.lock.artifacts.get(kind.name()).filter(|locked| locked.key == key.0);
        if locked == Some(&built) {
            return Ok(());
        }
        // The same content recorded in parts of another depth is recorded again, silently.
        if let Some(locked) = locked.filter(|locked| locked.content != built.content) {
            let artifact = self.cache.artifact_path(kind, key);
            let parts = locked.differing_parts(&built).join(", ");
            if self.options.locked {
                bail!(
                    "--locked, but {} holds other bytes than {} records for it: {parts} differ; \
                     `cargo xtask build verify` shows whether this machine builds it reproducibly",
                    artifact.display(),
                    self.lock_path.display()
                );
            }
            self.shell.warn(format!("{} holds other bytes than the lock records ({parts} differ): recording them", artifact.display()));
        }
        self.lock.artifacts.insert(kind.name().to_owned(), built);
        Ok(())
    }

    pub fn refuse_if_locked(&self, what: &str) -> anyhow::Result<()> {
        if self.options.locked {
            bail!("--locked, but {} has no entry for {what} as the recipe now asks: run once without --locked", self.lock_path.display());
        }
        Ok(())
    }

    /// Writes what changed to the lock; called after each component.
    pub fn save_lock(&mut self) -> anyhow::Result<()> {
        if self.options.write_lock && self.lock_on_disk.as_ref() != Some(&self.lock) {
            if self.lock.write(&self.lock_path)? {
                self.shell.status("Locked", self.lock_path.display());
            }
            self.lock_on_disk = Some(self.lock.clone());
        }
        Ok(())
    }
}

/// A stack's run with its recipe (`R`: the distro or the source recipe); the run's fields and
/// methods are reached through it. Each stack adds its own methods.
pub struct RecipeRun<'a, R> {
    pub run: StackRun<'a>,
    pub recipe: LoadedRecipe<R>,
}

impl<'a, R> std::ops::Deref for RecipeRun<'a, R> {
    type Target = StackRun<'a>;
    fn deref(&self) -> &StackRun<'a> {
        &self.run
    }
}

impl<R> std::ops::DerefMut for RecipeRun<'_, R> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes a one-file artifact holding `contents` in a fresh cache of `dir`.
    fn publish(dir: &std::path::Path, contents: &str) -> (Layout, CacheKey) {
        let layout = Layout::for_cache(dir.join(contents));
        let key = CacheKey::of(ArtifactKind::Initramfs, &"held");
        Cache::new(&layout).get_or_build(ArtifactKind::Initramfs, &key, serde_json::Value::Null, |staging| {
            Ok(std::fs::write(staging.join("initrd.img"), contents)?)
        }).unwrap();
        std::fs::create_dir_all(layout.images_dir()).unwrap();
        (layout, key)
    }

    #[test]
    fn the_lock_holds_each_artifacts_bytes_and_locked_refuses_others_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let shell = Shell::new(false);
        let (first, key) = publish(dir.path(), "built here");
        let options = StackOptions::default();
        let mut run = StackRun::open(&first, &shell, &options, StackKind::Distro).unwrap();
        run.hold_artifact(ArtifactKind::Initramfs, &key).unwrap();
        run.save_lock().unwrap();

        // A second machine with the same key but other bytes, and the first one's lock.
        let (second, _) = publish(dir.path(), "built there");
        let lock_path = lock::lock_path(&first.images_dir(), StackKind::Distro);
        std::fs::copy(&lock_path, lock::lock_path(&second.images_dir(), StackKind::Distro)).unwrap();
        let locked = StackOptions { locked: true, ..StackOptions::default() };
        let mut run = StackRun::open(&second, &shell, &locked, StackKind::Distro).unwrap();
        let error = run.hold_artifact(ArtifactKind::Initramfs, &key).unwrap_err().to_string();
        assert!(error.contains("initrd.img differ"), "{error}");
        let mut run = StackRun::open(&second, &shell, &options, StackKind::Distro).unwrap();
        run.hold_artifact(ArtifactKind::Initramfs, &key).unwrap();
        assert_ne!(run.lock.artifacts, StackLock::read(&lock_path).unwrap().unwrap().artifacts);
    }
}
