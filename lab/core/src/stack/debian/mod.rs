//! Resolving and fetching `debian` candidates (binary packages) through [`PrivateApt`].
//!
//! A candidate names a package in a suite. With `parts`, the package is a metapackage whose
//! dependency names the release (`linux-image-amd64` → `linux-image-7.3.4+deb13-amd64`), and the
//! parts, with `{release}` filled in, are what is fetched: Debian's split kernel packaging puts
//! vmlinuz in `linux-binary-*` and the modules in `linux-modules-*`.
//!
//! A candidate answers only when its .debs are downloaded: a listed file that 404s falls through
//! to the next candidate like an unreachable mirror.

use std::path::PathBuf;

pub mod apt;
pub mod source;

use self::apt::PrivateApt;
use crate::stack::cache::Cache;
use crate::stack::recipe::ArchiveRecipe;
use crate::sys::runner::CommandRunner;
use crate::shell::StepProgress;
use crate::stack::sources::{Candidate, Pin, Resolution, Resolver, SourceError};

pub struct DebianResolver<'a> {
    pub cache: &'a Cache,
    /// The step that shows download progress, if any.
    pub progress: Option<&'a StepProgress>,
    pub runner: &'a CommandRunner,
    pub archive: &'a ArchiveRecipe,
    pub host_codename: String,
}

impl<'a> DebianResolver<'a> {
    pub fn new(cache: &'a Cache, runner: &'a CommandRunner, archive: &'a ArchiveRecipe) -> anyhow::Result<Self> {
        Ok(DebianResolver { cache, progress: None, runner, archive, host_codename: apt::host_codename()? })
    }
}

impl Resolver for DebianResolver<'_> {
    /// A candidate with `parts` answers with the release its metapackage named.
    fn resolve(&mut self, candidate: &Candidate) -> Result<Resolution, SourceError> {
        let Candidate::Debian(debian) = candidate else {
            return Err(SourceError::Unsupported(format!("{candidate} (the distro stack takes Debian packages)")));
        };
        let suite = apt::concrete_suite(&debian.suite, &self.host_codename);
        let mirror = debian.mirror.as_deref().unwrap_or(&self.archive.mirror);
        let apt = PrivateApt::new(&self.cache.layout.apt_dir(), mirror, std::slice::from_ref(&suite), &self.archive.keyring);
        // apt fails rather than waits on its own lists lock: another lab up may be refreshing them.
        let apt_name = apt.root.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let _apt_lock = self.cache.lock(&format!("apt-{apt_name}"))?;
        apt.ensure_lists(self.runner)?;
        let record = apt.candidate(self.runner, &debian.package)?;
        if debian.parts.is_empty() {
            let pin = Pin::Debian { suite, packages: vec![apt.pin(&record)] };
            fetch(self.cache, self.runner, &pin, self.progress)?;
            return Ok(Resolution { pin, release: None });
        }
        let release = release_from_dependencies(&debian.package, &apt::dependency_names(&record.depends)).ok_or_else(|| {
            SourceError::Unavailable(format!(
                "{} {} names no versioned package in its Depends ({})",
                record.package, record.version, record.depends
            ))
        })?;
        let mut packages = Vec::new();
        for part in &debian.parts {
            let name = part.replace("{release}", &release);
            packages.push(apt.pin(&apt.candidate(self.runner, &name)?));
        }
        let pin = Pin::Debian { suite, packages };
        // The archive lists more than it serves: a candidate answers only once its files are here.
        fetch(self.cache, self.runner, &pin, self.progress)?;
        Ok(Resolution { pin, release: Some(release) })
    }
}

/// The release a metapackage points at: the dependency that extends one of the metapackage's own
/// prefixes with a version (`linux-image-amd64` depends on `linux-image-7.3.4+deb13-amd64`).
pub fn release_from_dependencies(metapackage: &str, dependencies: &[String]) -> Option<String> {
    let boundaries: Vec<usize> = metapackage.match_indices('-').map(|(index, _)| index + 1).collect();
    for &end in boundaries.iter().rev() {
        let prefix = &metapackage[..end];
        for dependency in dependencies {
            if let Some(rest) = dependency.strip_prefix(prefix) {
                if rest.starts_with(|c: char| c.is_ascii_digit()) {
                    return Some(rest.to_owned());
                }
            }
        }
    }
    None
}

/// What the downloads directory holds of a pin's .debs, each checked against its size and sha256.
#[derive(Debug, Default)]
pub struct CachedDebs {
    /// Where each .deb of the pin is (or will be), in the pin's order.
    pub paths: Vec<PathBuf>,
    /// Packages not downloaded yet.
    pub missing: Vec<String>,
    /// Files there that are not what the pin names, and why.
    pub damaged: Vec<(PathBuf, String)>,
}

impl CachedDebs {
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.damaged.is_empty()
    }
}

/// Checks the downloaded .debs of a pin (reads each whole: only called before a build).
pub fn cached_debs(cache: &Cache, pin: &Pin) -> Result<CachedDebs, SourceError> {
    let Pin::Debian { packages, .. } = pin else {
        return Err(SourceError::Unsupported(format!("fetching {pin}")));
    };
    let dir = cache.layout.downloads_dir();
    let mut cached = CachedDebs::default();
    for package in packages {
        let path = dir.join(package.file_name());
        match apt::check_deb(&path, package).map_err(|error| SourceError::Fatal(anyhow::Error::new(error).context(format!("checking {}", path.display()))))? {
            apt::DebFile::Whole => {}
            apt::DebFile::Missing => cached.missing.push(package.package.clone()),
            apt::DebFile::Damaged(why) => cached.damaged.push((path.clone(), why)),
        }
        cached.paths.push(path);
    }
    Ok(cached)
}

/// Downloads every .deb of a Debian pin into the cache's downloads directory, showing the bytes
/// arrived on `progress`.
pub fn fetch(
    cache: &Cache,
    runner: &CommandRunner,
    pin: &Pin,
    progress: Option<&StepProgress>,
) -> Result<Vec<PathBuf>, SourceError> {
    let Pin::Debian { packages, .. } = pin else {
        return Err(SourceError::Unsupported(format!("fetching {pin}")));
    };
    let dir = cache.layout.downloads_dir();
    let watched: Vec<PathBuf> = packages
        .iter()
        .flat_map(|package| [dir.join(package.file_name()), apt::partial_path(&dir, &package.file_name())])
        .collect();
    let total: u64 = packages.iter().map(|package| package.size).sum();
    let download_all = || {
        packages
            .iter()
            .map(|package| {
                // Two processes must not write the same partial file.
                let _lock = cache.lock(&format!("download-{}", package.file_name()))?;
                apt::download(runner, package, &dir)
            })
            .collect()
    };
    match progress {
        Some(progress) => progress.follow_growth(&watched, total, download_all),
        None => download_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_release_a_metapackage_names() {
        let dependencies = ["linux-base-amd64".to_owned(), "linux-image-7.3.4+deb13-amd64".to_owned(), "linux-modules-amd64".to_owned()];
        assert_eq!(release_from_dependencies("linux-image-amd64", &dependencies).as_deref(), Some("7.3.4+deb13-amd64"));
        let cloud = ["linux-image-7.3.4+deb13-cloud-amd64".to_owned()];
        assert_eq!(release_from_dependencies("linux-image-cloud-amd64", &cloud).as_deref(), Some("7.3.4+deb13-cloud-amd64"));
        assert_eq!(release_from_dependencies("busybox-static", &["libc6".to_owned()]), None);
    }
}
