//! Every kind of candidate the source stack takes, behind one [`Resolver`]: `git`
//! ([`super::git`]), `tarball` ([`super::tarball`]), `debian-source` and `debian` (binary
//! packages: `linux-source-*` carries a kernel tarball; the firmware), and `local` trees. Then,
//! for a pin (just resolved or from the lock), [`fetch`] makes sure its files are in the cache and
//! [`unpack`] writes its source tree where a build wants it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::shell::StepProgress;
use crate::stack::cache::Cache;
use crate::stack::debian::{self, apt, DebianResolver};
use crate::stack::recipe::ArchiveRecipe;
use crate::stack::sources::{Candidate, Pin, Resolution, Resolver, SourceError};
use crate::sys::runner::CommandRunner;

use super::{git, tarball};

pub struct SourceResolver<'a> {
    pub cache: &'a Cache,
    pub runner: &'a CommandRunner,
    pub archive: &'a ArchiveRecipe,
    pub host_codename: String,
    /// The step that shows download progress, if any.
    pub progress: Option<&'a StepProgress>,
}

impl<'a> SourceResolver<'a> {
    pub fn new(cache: &'a Cache, runner: &'a CommandRunner, archive: &'a ArchiveRecipe) -> anyhow::Result<Self> {
        Ok(SourceResolver { cache, runner, archive, host_codename: apt::host_codename()?, progress: None })
    }
}

impl Resolver for SourceResolver<'_> {
    fn resolve(&mut self, candidate: &Candidate) -> Result<Resolution, SourceError> {
        let pin = match candidate {
            Candidate::Git(git) => Pin::Git { url: git.url.clone(), commit: git::resolve(self.cache, self.runner, git)? },
            Candidate::Tarball(tarball) => {
                tarball::fetch(self.cache, self.runner, &tarball.url, &tarball.sha256)?;
                Pin::Tarball { url: tarball.url.clone(), sha256: tarball.sha256.to_lowercase() }
            }
            Candidate::DebianSource(source) => Pin::DebianSource(debian::source::resolve(
                self.cache,
                self.runner,
                self.archive,
                &self.host_codename,
                source,
                self.progress,
            )?),
            Candidate::Debian(_) => {
                let mut binary = DebianResolver { cache: self.cache, progress: self.progress, runner: self.runner, archive: self.archive, host_codename: self.host_codename.clone() };
                return binary.resolve(candidate);
            }
            Candidate::Local(local) => {
                if !local.path.is_dir() {
                    return Err(SourceError::Unavailable(format!("{} is not a directory", local.path.display())));
                }
                Pin::Local { path: local.path.clone() }
            }
        };
        Ok(Resolution { pin, release: None })
    }
}

/// Makes sure the files of `pin` are in the cache (downloads or fetches what is missing or
/// damaged); returns the downloaded files of Debian binary pins (in the pin's order), else none.
pub fn fetch(cache: &Cache, runner: &CommandRunner, pin: &Pin, progress: Option<&StepProgress>) -> Result<Vec<PathBuf>, SourceError> {
    match pin {
        Pin::Git { url, commit } => git::fetch(cache, runner, url, commit, None).map(|()| Vec::new()),
        Pin::Tarball { url, sha256 } => tarball::fetch(cache, runner, url, sha256).map(|path| vec![path]),
        Pin::DebianSource(source) => debian::source::fetch(cache, runner, source, progress),
        Pin::Debian { .. } => debian::fetch(cache, runner, pin, progress),
        Pin::Local { path } if path.is_dir() => Ok(Vec::new()),
        Pin::Local { path } => Err(SourceError::Unavailable(format!("{} is not a directory", path.display()))),
    }
}

/// Writes the source tree of a fetched `pin` into `dest` (which must not exist yet): a git
/// commit's tree, an unpacked tarball, a Debian source package with its patches, the files of
/// Debian binary packages, or a copy of a local tree.
pub fn unpack(cache: &Cache, runner: &CommandRunner, pin: &Pin, dest: &Path) -> anyhow::Result<()> {
    match pin {
        Pin::Git { url, commit } => git::unpack(cache, runner, url, commit, dest),
        Pin::Tarball { url, sha256 } => {
            tarball::unpack(runner, &cache.layout.downloads_dir().join(tarball::download_name(url, sha256)), dest)
        }
        // `orig-only`: the upstream tarball alone, unpacked like a release tarball.
        Pin::DebianSource(source) if source.dsc().is_none() => match source.orig() {
            Some(orig) => tarball::unpack(runner, &cache.layout.downloads_dir().join(orig.file_name()), dest),
            None => anyhow::bail!("the pin of {} {} names neither a .dsc nor an .orig.tar.* file", source.package, source.version),
        },
        Pin::DebianSource(source) => debian::source::unpack(cache, runner, source, dest),
        Pin::Debian { .. } => {
            for deb in debian::cached_debs(cache, pin)?.paths {
                apt::extract(runner, &deb, dest)?;
            }
            Ok(())
        }
        Pin::Local { path } => {
            runner.run("copy-local-source", Command::new("cp").arg("-a").arg(path).arg(dest))?;
            Ok(())
        }
    }
}

/// The names `pin` keeps in `<cache>/downloads/` (what `cache gc` keeps).
pub fn download_names(pin: &Pin) -> Vec<String> {
    match pin {
        Pin::Tarball { url, sha256 } => vec![tarball::download_name(url, sha256)],
        Pin::DebianSource(source) => debian::source::download_names(source),
        Pin::Debian { packages, .. } => packages.iter().map(|package| package.file_name()).collect(),
        Pin::Git { .. } | Pin::Local { .. } => Vec::new(),
    }
}
