//! `build verify`: builds every artifact of a stack twice, into two scratch caches, and compares
//! them file by file through their manifests (each records every file's size and blake3).
//!
//! The scratch caches live in `<cache>/tmp/verify-<stack>.<random>/{one,two}`; the downloads
//! (`downloads/`, debootstrap's package cache) of the real cache are copied into both (not
//! linked: debootstrap may rewrite a package in its cache in place), since the lock pins them by
//! sha256 and they are not what is being checked. Each build reads the
//! checkout's lock (what is not locked is resolved) and never writes it. The scratch caches are removed afterwards
//! (kept, and named, when a build fails, for its logs). Where Debian's `diffoscope` is on PATH it
//! is run on each differing file and the first lines of its report shown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use fs_err as fs;

use crate::layout::Layout;
use crate::shell::Shell;
use crate::stack::cache::{Cache, FileRecord};
use crate::stack::session::StackOptions;
use crate::stack::StackKind;
use crate::sys::runner::{CommandRunner, RunError};

/// Lines of a diffoscope report shown per differing file.
const DIFFOSCOPE_LINES: usize = 15;

/// One artifact as the two builds made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactVerdict {
    /// `<kind>-<key>`.
    pub name: String,
    /// Empty when both builds gave the same bytes.
    pub differences: Vec<FileDifference>,
}

/// A file of an artifact that is not the same in both builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDifference {
    /// Relative to the artifact's directory.
    pub path: String,
    pub what: String,
    /// The first lines of diffoscope's report, where it ran.
    pub diffoscope: Option<String>,
}

/// What `build verify` found.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub artifacts: Vec<ArtifactVerdict>,
    /// `None`: diffoscope is not installed.
    pub diffoscope: Option<PathBuf>,
}

impl VerifyReport {
    pub fn identical(&self) -> bool {
        self.artifacts.iter().all(|artifact| artifact.differences.is_empty())
    }
}

/// Builds `stack` twice into scratch caches below `paths`' cache and compares the artifacts.
pub fn verify_stack(paths: &Layout, shell: &Shell, stack: StackKind) -> anyhow::Result<VerifyReport> {
    // Held for the whole run: `cache gc` leaves `tmp/verify-<stack>.*` alone while it is.
    let _busy = Cache::new(paths).lock(&format!("verify-{stack}"))?;
    let scratch = tempfile::Builder::new().prefix(&format!("verify-{stack}.")).tempdir_in(ensure_dir(&paths.cache_tmp_dir())?)?;
    let mut caches = Vec::new();
    for name in ["one", "two"] {
        let layout = scratch_layout(paths, &scratch.path().join(name))?;
        shell.status("Verify", format!("building the {stack} stack into {}", layout.cache.display()));
        let options = StackOptions { locked: false, write_lock: false };
        if let Err(error) = crate::stack::ensure_boot_stack(&layout, shell, stack, &options) {
            let kept = scratch.keep();
            return Err(error.context(format!("build {name} of `build verify` failed; its cache and logs are kept in {}", kept.display())));
        }
        caches.push(Cache::new(&layout));
    }
    let mut artifacts = compare_caches(&caches[0], &caches[1])?;
    let diffoscope = crate::stack::host::find_program("diffoscope");
    if let Some(program) = &diffoscope {
        let runner = CommandRunner::new(paths.build_logs_dir());
        for artifact in &mut artifacts {
            for difference in &mut artifact.differences {
                let file = |cache: &Cache| cache.layout.artifacts_dir().join(&artifact.name).join(&difference.path);
                let summary = diffoscope_summary(&runner, program, &file(&caches[0]), &file(&caches[1]));
                difference.diffoscope = Some(summary.unwrap_or_else(|error| format!("diffoscope failed: {error:#}")));
            }
        }
    }
    shell.status("Verify", format!("removing the scratch caches in {}", scratch.path().display()));
    Ok(VerifyReport { artifacts, diffoscope })
}

fn ensure_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}

/// A layout over the scratch cache `cache` with copies of the real cache's downloads.
fn scratch_layout(paths: &Layout, cache: &Path) -> anyhow::Result<Layout> {
    let layout = Layout { workspace: paths.workspace.clone(), cache: cache.to_path_buf(), state: cache.join("state") };
    for (from, to) in [(paths.downloads_dir(), layout.downloads_dir()), (paths.debootstrap_debs_dir(), layout.debootstrap_debs_dir())] {
        copy_files(&from, &to)?;
    }
    Ok(layout)
}

/// Copies every regular file of `from` (if it exists) into `to`.
fn copy_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    let Ok(entries) = fs::read_dir(from) else { return Ok(()) };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Every artifact either cache holds, with the files that differ between the two.
pub fn compare_caches(one: &Cache, two: &Cache) -> anyhow::Result<Vec<ArtifactVerdict>> {
    let mut manifests: BTreeMap<String, [Option<Vec<FileRecord>>; 2]> = BTreeMap::new();
    for (index, cache) in [one, two].into_iter().enumerate() {
        for entry in cache.list()? {
            let files = entry.manifest.and_then(|manifest| manifest.files);
            let files = files.with_context(|| format!("{}: no manifest with file hashes", entry.path.display()))?;
            manifests.entry(entry.name).or_default()[index] = Some(files);
        }
    }
    Ok(manifests
        .into_iter()
        .map(|(name, [one, two])| {
            let differences = match (one, two) {
                (Some(one), Some(two)) => compare_files(&one, &two),
                (one, _) => vec![FileDifference {
                    path: String::new(),
                    what: format!("built only by the {} build (its key differs)", if one.is_some() { "first" } else { "second" }),
                    diffoscope: None,
                }],
            };
            ArtifactVerdict { name, differences }
        })
        .collect())
}

/// The files of two manifests of one artifact that are missing from one or have other contents.
pub fn compare_files(one: &[FileRecord], two: &[FileRecord]) -> Vec<FileDifference> {
    let by_path = |files: &[FileRecord]| files.iter().map(|file| (file.path.clone(), file.clone())).collect::<BTreeMap<_, _>>();
    let (one, two) = (by_path(one), by_path(two));
    let paths: BTreeSet<&String> = one.keys().chain(two.keys()).collect();
    paths
        .into_iter()
        .filter_map(|path| {
            let what = match (one.get(path), two.get(path)) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(a), Some(b)) if a.size != b.size => format!("{} bytes against {}", a.size, b.size),
                (Some(a), Some(b)) => format!("same size, other bytes (blake3 {} against {})", a.blake3, b.blake3),
                (Some(_), None) => "only in the first build".to_owned(),
                _ => "only in the second build".to_owned(),
            };
            Some(FileDifference { path: path.clone(), what, diffoscope: None })
        })
        .collect()
}

/// The first lines of diffoscope's text report on two files (it exits 1 when they differ).
fn diffoscope_summary(runner: &CommandRunner, program: &Path, one: &Path, two: &Path) -> anyhow::Result<String> {
    let step = "diffoscope";
    let _ = std::fs::remove_file(runner.log_path(step));
    let mut command = Command::new(program);
    // Only the first lines are shown: a report of a whole image would be gigabytes.
    command.args(["--text", "-", "--max-text-report-size", "262144"]).arg(one).arg(two);
    match runner.run(step, &mut command) {
        Ok(()) => return Ok("diffoscope finds no difference".to_owned()),
        Err(RunError::Failed { status, .. }) if status.code() == Some(1) => {}
        Err(error) => return Err(error.into()),
    }
    let log = fs::read_to_string(runner.log_path(step))?;
    // The log's first line is the command.
    Ok(log.lines().skip(1).take(DIFFOSCOPE_LINES).collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::cache::{ArtifactKind, CacheKey};

    fn build(cache: &Cache, kind: ArtifactKind, files: &[(&str, String)]) {
        let key = CacheKey::of(kind, &"verify");
        cache
            .get_or_build(kind, &key, serde_json::Value::Null, |staging| {
                for (path, contents) in files {
                    fs::write(staging.join(path), contents)?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn two_caches() -> (tempfile::TempDir, Cache, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (Cache::new(&Layout::for_cache(dir.path().join("one"))), Cache::new(&Layout::for_cache(dir.path().join("two"))));
        (dir, one, two)
    }

    #[test]
    fn names_the_artifact_and_file_that_differ() {
        let (_dir, one, two) = two_caches();
        for (cache, initrd) in [(&one, "initrd one"), (&two, "initrd two")] {
            build(cache, ArtifactKind::Kernel, &[("vmlinuz", "same".to_owned())]);
            build(cache, ArtifactKind::Initramfs, &[("initrd.img", initrd.to_owned()), ("modules", "same".to_owned())]);
        }
        let verdicts = compare_caches(&one, &two).unwrap();
        let kernel = verdicts.iter().find(|verdict| verdict.name.starts_with("kernel-")).unwrap();
        assert!(kernel.differences.is_empty(), "{kernel:?}");
        let initramfs = verdicts.iter().find(|verdict| verdict.name.starts_with("initramfs-")).unwrap();
        assert_eq!(initramfs.differences.len(), 1, "{initramfs:?}");
        assert_eq!(initramfs.differences[0].path, "initrd.img");
        assert!(initramfs.differences[0].what.starts_with("same size, other bytes"), "{:?}", initramfs.differences[0]);
    }

    #[test]
    fn a_file_stamped_with_the_build_time_is_named() {
        let (_dir, one, two) = two_caches();
        for cache in [&one, &two] {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            build(cache, ArtifactKind::Rootfs, &[("rootfs.img", "image".to_owned()), ("build-time", format!("{now}\n"))]);
        }
        let verdicts = compare_caches(&one, &two).unwrap();
        let differing: Vec<(&str, &str)> =
            verdicts.iter().flat_map(|verdict| verdict.differences.iter().map(|file| (verdict.name.as_str(), file.path.as_str()))).collect();
        assert_eq!(differing.len(), 1, "{differing:?}");
        assert!(differing[0].0.starts_with("rootfs-") && differing[0].1 == "build-time", "{differing:?}");
    }

    #[test]
    fn diffoscope_s_report_is_read_from_its_log_when_it_finds_a_difference() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // Stands in for diffoscope: prints a report and exits 1, as diffoscope does on a difference.
        let program = dir.path().join("diffoscope");
        fs::write(&program, "#!/bin/sh\nfor arg; do one=$two; two=$arg; done\necho \"--- $one\"\necho \"+++ $two\"\necho '│ -1700000000'\nexit 1\n").unwrap();
        fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let runner = CommandRunner::new(dir.path().join("logs"));
        let summary = diffoscope_summary(&runner, &program, Path::new("/one/stamp"), Path::new("/two/stamp")).unwrap();
        assert_eq!(summary, "--- /one/stamp\n+++ /two/stamp\n│ -1700000000");
    }

    #[test]
    fn files_missing_from_one_build_and_artifacts_built_once_are_named() {
        let (_dir, one, two) = two_caches();
        build(&one, ArtifactKind::Kernel, &[("vmlinuz", "v".to_owned()), ("extra", "x".to_owned())]);
        build(&two, ArtifactKind::Kernel, &[("vmlinuz", "v".to_owned())]);
        build(&two, ArtifactKind::Initramfs, &[("initrd.img", "i".to_owned())]);
        let verdicts = compare_caches(&one, &two).unwrap();
        let described: Vec<String> =
            verdicts.iter().flat_map(|verdict| verdict.differences.iter().map(|file| format!("{} {}", file.path, file.what))).collect();
        assert_eq!(described, [" built only by the second build (its key differs)", "extra only in the first build"]);
    }
}
