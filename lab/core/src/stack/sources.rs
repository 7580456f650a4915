//! Sources: where a component can come from, and picking the first that answers.
//!
//! A recipe lists [`Candidate`]s in order of preference (git, tarball, Debian archive, local
//! path). [`first_available`] asks a [`Resolver`] about each in turn; a candidate that cannot be
//! reached, answers 404, or is of a kind this build does not handle yet falls through to the next,
//! and the answer is a [`Resolution`]: a [`Pin`], exactly what was used (a commit, a sha256,
//! package versions), which the lock file keeps so a later run takes the same thing, and the
//! release the candidate found, if it names one (a kernel's, through its metapackage).
//!
//! The distro stack only resolves `debian` (binary packages) candidates; the source stack
//! (`stack/source/`) resolves git, tarball and `debian-source` (Debian source packages) too,
//! through the same [`Resolver`] trait.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sys::runner::RunError;

/// One place a component can come from, as written in a recipe.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Candidate {
    Git(GitCandidate),
    Tarball(TarballCandidate),
    Debian(DebianCandidate),
    DebianSource(DebianSourceCandidate),
    Local(LocalCandidate),
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GitCandidate {
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TarballCandidate {
    pub url: String,
    pub sha256: String,
}

/// A Debian binary package from one suite. `parts`, when given, are the packages actually
/// fetched, with `{release}` replaced by the release the metapackage `package` depends on
/// (the kernel: `linux-image-amd64` names `linux-image-<release>`, whose files are split over
/// `linux-binary-<release>` and `linux-modules-<release>`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebianCandidate {
    pub package: String,
    /// A suite name, `host` (the host's release) or `host-backports`.
    pub suite: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// Overrides the recipe's archive mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

/// A Debian source package (`.dsc` and the files it names) from one suite: the newest the suite
/// lists, or exactly `version` (an archive often lists versions it no longer serves).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebianSourceCandidate {
    pub package: String,
    /// A suite name, `host` or `host-backports`.
    pub suite: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Overrides the recipe's archive mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Only the upstream tarball (`.orig.tar.*`), no `.dsc` and no Debian patches: for packages
    /// whose `.dsc` the archive lists but does not serve (ndctl 81-1 in trixie answered 404 here
    /// for its `.dsc` and `.debian.tar.xz`, while its `.orig.tar.gz` downloads).
    #[serde(default, rename = "orig-only", skip_serializing_if = "is_false")]
    pub orig_only: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalCandidate {
    pub path: PathBuf,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Git(git) => write!(f, "git {} ({})", git.url, git.reference),
            Candidate::Tarball(tarball) => write!(f, "tarball {}", tarball.url),
            Candidate::Debian(debian) => write!(f, "Debian package {} from {}", debian.package, debian.suite),
            Candidate::DebianSource(source) => {
                match &source.version {
                    Some(version) => write!(f, "Debian source {} {version} from {}", source.package, source.suite)?,
                    None => write!(f, "Debian source {} from {}", source.package, source.suite)?,
                }
                if source.orig_only {
                    f.write_str(" (upstream tarball only)")?;
                }
                Ok(())
            }
            Candidate::Local(local) => write!(f, "local path {}", local.path.display()),
        }
    }
}

/// Exactly what a candidate resolved to; stored in the lock file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Pin {
    Git { url: String, commit: String },
    Tarball { url: String, sha256: String },
    Debian { suite: String, packages: Vec<DebPin> },
    DebianSource(SourcePin),
    Local { path: PathBuf },
}

/// A downloaded Debian source package: its `.dsc` and the files it names, each with its sha256.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct SourcePin {
    pub package: String,
    pub version: String,
    pub suite: String,
    /// The archive root it came from.
    pub mirror: String,
    /// The pool directory below the mirror (`pool/main/q/qemu`).
    pub directory: String,
    /// The `.dsc` first, then the files it names; with `orig-only`, the upstream tarball alone.
    pub files: Vec<SourceFile>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

impl SourceFile {
    /// The name it is kept under in the downloads directory: unique per content.
    pub fn file_name(&self) -> String {
        format!("{}_{}", &self.sha256[..16.min(self.sha256.len())], self.name)
    }
}

impl SourcePin {
    pub fn url(&self, file: &SourceFile) -> String {
        format!("{}/{}/{}", self.mirror.trim_end_matches('/'), self.directory, file.name)
    }

    /// The `.dsc` (the resolver puts it first).
    pub fn dsc(&self) -> Option<&SourceFile> {
        self.files.iter().find(|file| file.name.ends_with(".dsc"))
    }

    /// The upstream tarball (`<package>_<version>.orig.tar.<compression>`), if the pin has one.
    pub fn orig(&self) -> Option<&SourceFile> {
        self.files.iter().find(|file| is_orig_tarball(&file.name))
    }
}

/// One downloaded .deb: enough to fetch it again without the archive's package lists.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct DebPin {
    pub package: String,
    pub version: String,
    /// The archive root it came from, e.g. `http://deb.debian.org/debian`.
    pub mirror: String,
    /// The path below the mirror (`pool/main/...`).
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

impl DebPin {
    pub fn url(&self) -> String {
        format!("{}/{}", self.mirror.trim_end_matches('/'), self.filename)
    }

    /// The file name the .deb is kept under: unique per package version and content.
    pub fn file_name(&self) -> String {
        format!("{}_{}_{}.deb", self.package, self.version.replace(':', "%3a"), &self.sha256[..16.min(self.sha256.len())])
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Git { url, commit } => write!(f, "git {url} at {commit}"),
            Pin::Tarball { url, sha256 } => write!(f, "tarball {url} (sha256 {})", &sha256[..12.min(sha256.len())]),
            Pin::Debian { suite, packages } => {
                let names: Vec<String> =
                    packages.iter().map(|package| format!("{} {}", package.package, package.version)).collect();
                write!(f, "Debian {suite}: {}", names.join(", "))
            }
            Pin::DebianSource(source) => write!(f, "Debian source {} {} ({})", source.package, source.version, source.suite),
            Pin::Local { path } => write!(f, "local {}", path.display()),
        }
    }
}

/// Why a candidate did not answer. `Unavailable` and `Unsupported` fall through to the next
/// candidate; `Fatal` stops resolution (a corrupt download, a full disk).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Unavailable(String),
    #[error("not handled by this stack yet: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Fatal(#[from] anyhow::Error),
}

impl SourceError {
    /// A program could not reach its source: the line of its output that says why (`fatal:`,
    /// `E:`, `Err:` ... or its last line) and where its whole log is.
    pub fn unavailable(error: &RunError) -> SourceError {
        let RunError::Failed { tail, log, .. } = error else { return SourceError::Unavailable(error.to_string()) };
        let lines: Vec<&str> = tail.lines().map(|line| line.trim_start_matches("  |").trim()).filter(|line| !line.is_empty()).collect();
        let why = lines
            .iter()
            .rev()
            .find(|line| line.starts_with("fatal:") || line.starts_with("E: Failed") || line.contains("Not Found") || line.starts_with("Could not"))
            .or(lines.last())
            .copied()
            .unwrap_or("failed");
        SourceError::Unavailable(format!("{why} (log: {})", log.display()))
    }
}

/// What one candidate answered: its pin, and the release it found when it names one through a
/// metapackage (a kernel's `uname -r`, which the pin alone does not say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub pin: Pin,
    pub release: Option<String>,
}

/// Answers for one kind of candidate at a time.
pub trait Resolver {
    fn resolve(&mut self, candidate: &Candidate) -> Result<Resolution, SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no source of {component} answered:\n{tried}")]
    NoneAnswered { component: String, tried: String },
    #[error("resolving {component} from {candidate}: {source:#}")]
    Fatal { component: String, candidate: String, source: anyhow::Error },
}

/// What resolution chose: which candidate, what it answered, and why earlier ones were skipped.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub index: usize,
    pub resolution: Resolution,
    /// One line per skipped candidate and one for the chosen one, for the user.
    pub notes: Vec<String>,
}

/// Tries `candidates` in order and returns the first answer.
pub fn first_available(
    component: &str,
    candidates: &[Candidate],
    resolver: &mut dyn Resolver,
) -> Result<Resolved, ResolveError> {
    let mut notes = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        match resolver.resolve(candidate) {
            Ok(resolution) => {
                notes.push(format!("{component}: {} (from {candidate})", resolution.pin));
                return Ok(Resolved { index, resolution, notes });
            }
            Err(SourceError::Fatal(source)) => {
                return Err(ResolveError::Fatal {
                    component: component.to_owned(),
                    candidate: candidate.to_string(),
                    source,
                })
            }
            Err(skip) => notes.push(format!("{component}: skipped {candidate}: {skip}")),
        }
    }
    Err(ResolveError::NoneAnswered {
        component: component.to_owned(),
        tried: notes.iter().map(|note| format!("  {note}")).collect::<Vec<_>>().join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted(Vec<Result<Pin, SourceError>>);

    impl Resolver for Scripted {
        fn resolve(&mut self, _candidate: &Candidate) -> Result<Resolution, SourceError> {
            self.0.remove(0).map(|pin| Resolution { pin, release: None })
        }
    }

    fn candidates() -> Vec<Candidate> {
        serde_saphyr::from_str(
            "- git: { url: 'https://example.invalid/qemu.git', ref: cxl-2025 }\n\
             - tarball: { url: 'https://example.invalid/q.tar.xz', sha256: abc }\n\
             - local: { path: /opt/qemu }\n",
        )
        .unwrap()
    }

    #[test]
    fn falls_through_unreachable_and_unsupported() {
        let mut resolver = Scripted(vec![
            Err(SourceError::Unavailable("cannot reach example.invalid".into())),
            Err(SourceError::Unsupported("tarball".into())),
            Ok(Pin::Local { path: "/opt/qemu".into() }),
        ]);
        let resolved = first_available("qemu", &candidates(), &mut resolver).unwrap();
        assert_eq!(resolved.index, 2);
        assert_eq!(
            resolved.notes,
            [
                "qemu: skipped git https://example.invalid/qemu.git (cxl-2025): cannot reach example.invalid",
                "qemu: skipped tarball https://example.invalid/q.tar.xz: not handled by this stack yet: tarball",
                "qemu: local /opt/qemu (from local path /opt/qemu)",
            ]
        );
    }

    #[test]
    fn fatal_stops_and_none_lists_everything() {
        let mut fatal = Scripted(vec![Err(SourceError::Fatal(anyhow::anyhow!("sha256 mismatch")))]);
        let error = first_available("kernel", &candidates(), &mut fatal).unwrap_err().to_string();
        assert!(error.starts_with("resolving kernel from git"), "{error}");

        let mut none = Scripted((0..3).map(|_| Err(SourceError::Unavailable("404".into()))).collect());
        let error = first_available("kernel", &candidates(), &mut none).unwrap_err().to_string();
        assert_eq!(error.lines().count(), 4, "{error}");
    }

    #[test]
    fn an_unreachable_source_is_said_in_one_line() {
        let failed = std::process::Command::new("sh").args(["-c", "exit 128"]).status().unwrap();
        let error = RunError::Failed {
            step: "git-ls-remote".into(),
            command: "git ls-remote".into(),
            status: failed,
            tail: "  | $ git ls-remote https://gitlab.com/x.git\n  | fatal: unable to access 'https://gitlab.com/x.git/': Could not resolve host: gitlab.com".into(),
            log: "/c/logs/git-ls-remote.log".into(),
        };
        assert_eq!(
            SourceError::unavailable(&error).to_string(),
            "fatal: unable to access 'https://gitlab.com/x.git/': Could not resolve host: gitlab.com (log: /c/logs/git-ls-remote.log)"
        );
    }

    #[test]
    fn deb_pin_url_and_file_name() {
        let pin = DebPin {
            package: "busybox-static".into(),
            version: "1:1.37.0-6+b9".into(),
            mirror: "http://deb.debian.org/debian/".into(),
            filename: "pool/main/b/busybox/busybox-static_1.37.0-6+b9_amd64.deb".into(),
            sha256: "598a3fd92bdafc34cd81196b2952ad36e910e47a4ecf162f8ce5e8e262598e53".into(),
            size: 955316,
        };
        assert_eq!(pin.url(), "http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.37.0-6+b9_amd64.deb");
        assert_eq!(pin.file_name(), "busybox-static_1%3a1.37.0-6+b9_598a3fd92bdafc34.deb");
    }
}

/// Whether `name` is a source package's upstream tarball (not its signature, not a component's).
pub fn is_orig_tarball(name: &str) -> bool {
    name.rsplit_once(".orig.tar.").is_some_and(|(stem, compression)| !stem.contains(".orig-") && !compression.contains('.'))
}

#[cfg(test)]
mod orig_tests {
    use super::*;

    #[test]
    fn knows_an_upstream_tarball() {
        assert!(is_orig_tarball("ndctl_81.orig.tar.gz"));
        assert!(is_orig_tarball("qemu_10.2.2+ds.orig.tar.xz"));
        assert!(!is_orig_tarball("ndctl_81.orig.tar.gz.asc"));
        assert!(!is_orig_tarball("ndctl_81-1.dsc"));
        assert!(!is_orig_tarball("ndctl_81-1.debian.tar.xz"));
        assert!(!is_orig_tarball("linux_7.3.orig-extra.tar.xz"));
    }

    #[test]
    fn orig_only_is_left_out_when_false() {
        let candidate: Candidate = serde_json::from_str(r#"{"debian-source":{"package":"ndctl","suite":"trixie"}}"#).unwrap();
        assert!(!serde_json::to_string(&candidate).unwrap().contains("orig"));
        let candidate: Candidate = serde_json::from_str(r#"{"debian-source":{"package":"ndctl","suite":"trixie","orig-only":true}}"#).unwrap();
        assert!(candidate.to_string().ends_with("(upstream tarball only)"), "{candidate}");
    }
}
