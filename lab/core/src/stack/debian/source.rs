//! `debian-source` candidates: a Debian source package (`.dsc` and the files it names) through a
//! private apt state with `deb-src` lines ([`PrivateApt::for_sources`]).
//!
//! apt picks the version (`apt-get source --print-uris`: the newest the suite lists, or the one
//! asked) and gives each file's sha256 from the signed `Sources` index; each file is fetched with
//! `apt-helper download-file` against it into `<cache>/downloads/`. The archive lists more than
//! it serves: a file that answers 404 makes the candidate fall through, like an unreachable host.
//! [`unpack`] runs `dpkg-source -x` (which checks the files against the `.dsc` once more).
//! With `orig-only` the pin holds the upstream tarball alone (no `.dsc`, no Debian patches); the
//! source stack unpacks it like a release tarball.

use std::path::{Path, PathBuf};
use std::process::Command;

use fs_err as fs;

use super::apt::{self, Download, PrivateApt};
use crate::shell::StepProgress;
use crate::stack::cache::Cache;
use crate::stack::recipe::ArchiveRecipe;
use crate::stack::sources::{is_orig_tarball, DebianSourceCandidate, SourceError, SourcePin};
use crate::sys::runner::CommandRunner;

/// Resolves `candidate` to a pin and downloads its files (a candidate answers only once they are
/// all here).
pub fn resolve(
    cache: &Cache,
    runner: &CommandRunner,
    archive: &ArchiveRecipe,
    host_codename: &str,
    candidate: &DebianSourceCandidate,
    progress: Option<&StepProgress>,
) -> Result<SourcePin, SourceError> {
    let suite = apt::concrete_suite(&candidate.suite, host_codename);
    let mirror = candidate.mirror.as_deref().unwrap_or(&archive.mirror);
    let apt = PrivateApt::for_sources(&cache.layout.apt_dir(), mirror, std::slice::from_ref(&suite), &archive.keyring);
    let apt_name = apt.root.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let _apt_lock = cache.lock(&format!("apt-{apt_name}"))?;
    apt.ensure_lists(runner)?;
    let mut record = apt.source(runner, &candidate.package, candidate.version.as_deref())?;
    if candidate.orig_only {
        // The .dsc and Debian's patches are left out: the archive lists them but may not serve them.
        record.files.retain(|file| is_orig_tarball(&file.name));
        if record.files.is_empty() {
            return Err(SourceError::Unavailable(format!("{} {} has no .orig.tar.* file", record.package, record.version)));
        }
    }
    let pin = SourcePin {
        package: record.package,
        version: record.version,
        suite,
        mirror: mirror.to_owned(),
        directory: record.directory,
        files: record.files,
    };
    fetch(cache, runner, &pin, progress)?;
    Ok(pin)
}

/// The downloads of `pin`'s files.
fn downloads(pin: &SourcePin) -> Vec<Download> {
    pin.files
        .iter()
        .map(|file| Download { url: pin.url(file), file_name: file.file_name(), sha256: file.sha256.clone(), size: Some(file.size) })
        .collect()
}

/// Downloads every file of `pin` (those already here with their size and sha256 are kept),
/// showing the bytes arrived on `progress`.
pub fn fetch(cache: &Cache, runner: &CommandRunner, pin: &SourcePin, progress: Option<&StepProgress>) -> Result<Vec<PathBuf>, SourceError> {
    let dir = cache.layout.downloads_dir();
    let files = downloads(pin);
    let watched: Vec<PathBuf> =
        files.iter().flat_map(|file| [dir.join(&file.file_name), apt::partial_path(&dir, &file.file_name)]).collect();
    let total = files.iter().filter_map(|file| file.size).sum();
    let download_all = || {
        files
            .iter()
            .map(|file| {
                let _lock = cache.lock(&format!("download-{}", file.file_name))?;
                apt::download_file(runner, &format!("download-{}", pin.package), file, &dir)
            })
            .collect()
    };
    match progress {
        Some(progress) => progress.follow_growth(&watched, total, download_all),
        None => download_all(),
    }
}

/// The names `pin` keeps in the downloads directory (what `cache gc` must keep).
pub fn download_names(pin: &SourcePin) -> Vec<String> {
    pin.files.iter().map(|file| file.file_name()).collect()
}

/// Unpacks the downloaded `pin` into `dest` (which must not exist) with `dpkg-source -x`,
/// Debian's patches applied.
pub fn unpack(cache: &Cache, runner: &CommandRunner, pin: &SourcePin, dest: &Path) -> anyhow::Result<()> {
    let downloads = cache.layout.downloads_dir();
    // dpkg-source wants the files under the names the .dsc gives, side by side.
    let named = tempfile::Builder::new().prefix("dsc.").tempdir_in(dest.parent().unwrap_or(Path::new("/tmp")))?;
    for file in &pin.files {
        std::os::unix::fs::symlink(downloads.join(file.file_name()), named.path().join(&file.name))?;
    }
    let dsc = pin.dsc().ok_or_else(|| anyhow::anyhow!("the pin of {} {} names no .dsc", pin.package, pin.version))?;
    let mut command = Command::new("dpkg-source");
    command.arg("--no-copy").arg("-x").arg(named.path().join(&dsc.name)).arg(dest);
    runner.run(&format!("dpkg-source-{}", pin.package), &mut command)?;
    fs::remove_dir_all(named.path())?;
    Ok(())
}
