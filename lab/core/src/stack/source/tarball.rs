//! `tarball` candidates: a release archive by URL, accepted only with the recipe's sha256.
//!
//! The file is fetched with `apt-helper download-file` against that sha256 into
//! `<cache>/downloads/<first 16 hex digits of the sha256>_<file name>`, beside the `.partial` it
//! is written to first: a wrong sha256 is refused and leaves neither. An unreachable host or a
//! 404 falls through to the next candidate.

use std::path::{Path, PathBuf};
use std::process::Command;

use fs_err as fs;

use crate::stack::cache::Cache;
use crate::stack::debian::apt::{self, Download};
use crate::stack::sources::SourceError;
use crate::sys::runner::CommandRunner;

/// What the downloads directory keeps the tarball of `url` under.
pub fn download_name(url: &str, sha256: &str) -> String {
    let base = url.rsplit('/').next().filter(|base| !base.is_empty()).unwrap_or("tarball");
    format!("{}_{base}", &sha256[..16.min(sha256.len())].to_lowercase())
}

/// Downloads the tarball (or finds it whole in the cache) and returns its path.
pub fn fetch(cache: &Cache, runner: &CommandRunner, url: &str, sha256: &str) -> Result<PathBuf, SourceError> {
    let download = Download { url: url.to_owned(), file_name: download_name(url, sha256), sha256: sha256.to_lowercase(), size: None };
    let _lock = cache.lock(&format!("download-{}", download.file_name))?;
    apt::download_file(runner, "download-tarball", &download, &cache.layout.downloads_dir())
}

/// Unpacks `tarball` into `dest`: the one top directory release archives have becomes `dest`.
pub fn unpack(runner: &CommandRunner, tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    let scratch = dest.with_extension("unpacking");
    fs::create_dir_all(&scratch)?;
    runner.run("tar-unpack", Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&scratch))?;
    let entries: Vec<PathBuf> = fs::read_dir(&scratch)?.map(|entry| entry.map(|entry| entry.path())).collect::<Result<_, _>>()?;
    match &entries[..] {
        [single] if single.is_dir() => {
            fs::rename(single, dest)?;
            fs::remove_dir(&scratch)?;
        }
        _ => fs::rename(&scratch, dest)?,
    }
    Ok(())
}
