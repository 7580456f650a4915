//! The Debian archive through apt with a private state directory.
//!
//! Each (mirror, suite) gets its own directory under the cache with its own sources list, package
//! lists and archive cache; apt is pointed at it with `-o Dir::...` options, so the host's apt
//! configuration (`/etc/apt/sources.list*`, preferences, lists) is never read for sources nor
//! written. The host's `apt.conf.d` is still read: a proxy configured there keeps working.
//!
//! One suite a directory keeps "candidate" simple: the newest version that suite offers, with no
//! pinning priorities in between (a backports suite alone is not outranked by its base release).
//!
//! Downloads go through `apt-helper download-file` with the sha256 from the signed package lists
//! (or from the lock file), so a pinned .deb is fetched again without refreshing any list. A .deb
//! already in the cache is used only once its size and sha256 match the pin ([`check_deb`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use fs_err as fs;

use crate::sys::runner::{CommandRunner, RunError};
use crate::stack::sources::{DebPin, SourceError, SourceFile};

/// Lists older than this are refreshed before a package is resolved against them.
const LISTS_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Index targets apt would fetch besides `Packages`; none of them is needed to download a package.
const SKIPPED_INDEX_TARGETS: &[&str] =
    &["DEP-11", "DEP-11-icons-small", "DEP-11-icons", "DEP-11-icons-hidpi", "CNF", "Contents-deb", "Translations"];

/// apt for one suite of one mirror, all of its state below `root`.
#[derive(Clone, Debug)]
pub struct PrivateApt {
    pub root: PathBuf,
    pub mirror: String,
    /// Concrete suites (`trixie-backports`), never the `host` words.
    pub suites: Vec<String>,
    pub keyring: PathBuf,
    /// When set, apt sees the host's dpkg status: used only by `host setup` to install packages.
    pub host_status: bool,
    /// `deb-src` lines (the `Sources` index) instead of `deb` ones.
    pub source_index: bool,
    /// Suites of other archives, as (archive URL, suite): the host's security updates.
    pub extra_sources: Vec<(String, String)>,
}

/// One stanza of `apt-cache show`: the fields cxl-lab needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageRecord {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub depends: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

impl PrivateApt {
    /// The state directory for `suites` of `mirror`, below `apt_dir` (`<cache>/apt`).
    pub fn new(apt_dir: &Path, mirror: &str, suites: &[String], keyring: &Path) -> PrivateApt {
        let mirror_hash = blake3::hash(mirror.as_bytes()).to_hex();
        let name = format!("{}-{}", suites.join("+"), &mirror_hash[..8]);
        PrivateApt {
            root: apt_dir.join(name),
            mirror: mirror.to_owned(),
            suites: suites.to_vec(),
            keyring: keyring.to_path_buf(),
            host_status: false,
            source_index: false,
            extra_sources: Vec::new(),
        }
    }

    /// The same with `suite` of the archive at `mirror` too, in a directory of its own.
    pub fn with_extra_source(mut self, mirror: &str, suite: &str) -> PrivateApt {
        let name = format!("{}+{suite}", self.root.file_name().unwrap_or_default().to_string_lossy());
        self.root.set_file_name(name);
        self.extra_sources.push((mirror.to_owned(), suite.to_owned()));
        self
    }

    /// The state directory for the source packages of `suites` (`deb-src`), beside the binary one.
    pub fn for_sources(apt_dir: &Path, mirror: &str, suites: &[String], keyring: &Path) -> PrivateApt {
        let binary = PrivateApt::new(apt_dir, mirror, suites, keyring);
        let name = format!("src-{}", binary.root.file_name().unwrap_or_default().to_string_lossy());
        PrivateApt { root: apt_dir.join(name), source_index: true, ..binary }
    }

    pub fn sources_list_path(&self) -> PathBuf {
        self.root.join("sources.list")
    }

    pub fn sources_list(&self) -> String {
        self.suites
            .iter()
            .map(|suite| (self.mirror.as_str(), suite.as_str()))
            .chain(self.extra_sources.iter().map(|(mirror, suite)| (mirror.as_str(), suite.as_str())))
            .map(|(mirror, suite)| {
                let kind = if self.source_index { "deb-src" } else { "deb" };
                format!("{kind} [signed-by={}] {mirror} {suite} main\n", self.keyring.display())
            })
            .collect()
    }

    /// The `-o` options that confine apt to this directory.
    pub fn options(&self) -> Vec<String> {
        let root = self.root.display();
        let mut options = vec![
            format!("Dir::Etc::SourceList={}", self.sources_list_path().display()),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "Dir::Etc::Preferences=/dev/null".to_owned(),
            "Dir::Etc::PreferencesParts=/dev/null".to_owned(),
            format!("Dir::Cache={root}/cache"),
            "APT::Architecture=amd64".to_owned(),
            "APT::Architectures=amd64".to_owned(),
            "Acquire::Languages=none".to_owned(),
        ];
        if self.host_status {
            // Installing for real: only the lists are private; dpkg's status and apt's
            // auto-installed marks (extended_states) stay the host's own.
            options.push(format!("Dir::State::Lists={root}/state/lists"));
        } else {
            options.push(format!("Dir::State={root}/state"));
            options.push(format!("Dir::State::status={root}/state/status"));
        }
        if crate::sys::process::is_root() {
            // apt drops to `_apt` for downloads, which cannot write into root's private cache.
            options.push("APT::Sandbox::User=root".to_owned());
        }
        options.extend(
            SKIPPED_INDEX_TARGETS
                .iter()
                .map(|target| format!("Acquire::IndexTargets::deb::{target}::DefaultEnabled=false")),
        );
        options
    }

    /// `program` with this directory's options.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        for option in self.options() {
            command.arg("-o").arg(option);
        }
        command
    }

    /// Creates the directory layout and writes the sources list.
    pub fn prepare(&self) -> std::io::Result<()> {
        fs::create_dir_all(self.root.join("state/lists/partial"))?;
        fs::create_dir_all(self.root.join("cache/archives/partial"))?;
        fs::write(self.sources_list_path(), self.sources_list())?;
        let status = self.root.join("state/status");
        if !status.exists() {
            fs::write(status, "")?;
        }
        Ok(())
    }

    fn lists_stamp(&self) -> PathBuf {
        self.root.join("state/updated")
    }

    /// Whether the package lists were fetched less than [`LISTS_MAX_AGE`] ago.
    pub fn lists_fresh(&self) -> bool {
        fs::metadata(self.lists_stamp())
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE)
    }

    /// `apt-get update` into the private lists. An unreachable mirror is `Unavailable`; a
    /// signature apt cannot check is fatal, with the keyring named.
    pub fn update(&self, runner: &CommandRunner) -> Result<(), SourceError> {
        self.prepare().map_err(|error| SourceError::Fatal(error.into()))?;
        let step = format!("apt-update-{}", self.suites.join("+"));
        let mut command = self.command("apt-get");
        command.arg("update");
        let unverifiable = |log: &Path| {
            SourceError::Fatal(anyhow::anyhow!(
                "the archive's signature for {} cannot be checked with {} (log: {}); a newer debian-archive-keyring \
                 (from the host release's updates or backports) has the keys",
                self.suites.join(", "),
                self.keyring.display(),
                log.display()
            ))
        };
        let output = match runner.run_capture(&step, &mut command) {
            Ok(output) => output,
            Err(RunError::Failed { tail, log, .. }) if is_unverifiable(&tail) => return Err(unverifiable(&log)),
            Err(error) => return Err(classify(error)),
        };
        if is_unverifiable(&output) {
            return Err(unverifiable(&runner.log_path(&step)));
        }
        // apt-get update exits 0 when a source fails with a warning; it must not pass silently.
        if output.lines().any(|line| line.starts_with("Err:") || line.starts_with("W: Failed to fetch")) {
            return Err(SourceError::Unavailable(format!(
                "apt-get update of {} could not fetch every list (log: {})",
                self.suites.join(", "),
                runner.log_path(&step).display()
            )));
        }
        fs::write(self.lists_stamp(), "").map_err(|error| SourceError::Fatal(error.into()))?;
        Ok(())
    }

    /// Refreshes the lists when they are missing or old.
    pub fn ensure_lists(&self, runner: &CommandRunner) -> Result<(), SourceError> {
        if self.lists_fresh() {
            return Ok(());
        }
        self.update(runner)
    }

    /// The candidate version of `package` (the newest the suites offer).
    pub fn candidate(&self, runner: &CommandRunner, package: &str) -> Result<PackageRecord, SourceError> {
        self.show(runner, package, &["--no-all-versions", package])
    }

    /// `package` at exactly `version`.
    pub fn exact(&self, runner: &CommandRunner, package: &str, version: &str) -> Result<PackageRecord, SourceError> {
        self.show(runner, package, &["--no-all-versions", &format!("{package}={version}")])
    }

    /// The source package `package` (exactly `version` if given, else the newest the suites
    /// list) with its files as `apt-get source` would fetch them: apt picks the version,
    /// `apt-cache showsrc` says its epoch and pool directory.
    pub fn source(&self, runner: &CommandRunner, package: &str, version: Option<&str>) -> Result<SourceRecord, SourceError> {
        assert!(self.source_index, "source packages need a deb-src state directory");
        let step = format!("apt-source-{}", self.suites.join("+"));
        let wanted = match version {
            Some(version) => format!("{package}={version}"),
            None => package.to_owned(),
        };
        let not_offered = || SourceError::Unavailable(format!("{} does not offer the source {wanted}", self.suites.join(", ")));
        let mut command = self.command("apt-get");
        command.args(["source", "--print-uris", "-qq", "--only-source"]).arg(&wanted);
        let uris = runner.run_capture(&step, &mut command).map_err(|error| match error {
            RunError::Failed { .. } => not_offered(),
            other => SourceError::Fatal(other.into()),
        })?;
        let files = parse_print_uris(&uris);
        let dsc = files.iter().find(|file| file.name.ends_with(".dsc")).ok_or_else(not_offered)?;
        let mut command = self.command("apt-cache");
        command.args(["showsrc", "--only-source", package]);
        let stanzas = runner.run_capture(&step, &mut command).map_err(|error| SourceError::Fatal(error.into()))?;
        let mut record = parse_source_records(&stanzas)
            .into_iter()
            .find(|record| record.package == package && record.files.iter().any(|file| file == dsc))
            .ok_or_else(not_offered)?;
        // The .dsc first: it is what dpkg-source unpacks.
        record.files.sort_by_key(|file| !file.name.ends_with(".dsc"));
        Ok(record)
    }

    fn show(&self, runner: &CommandRunner, package: &str, arguments: &[&str]) -> Result<PackageRecord, SourceError> {
        let mut command = self.command("apt-cache");
        command.arg("show").args(arguments);
        let step = format!("apt-show-{}", self.suites.join("+"));
        let output = runner.run_capture(&step, &mut command).map_err(|error| match error {
            RunError::Failed { .. } => SourceError::Unavailable(format!(
                "{} does not offer {}",
                self.suites.join(", "),
                arguments.last().copied().unwrap_or(package)
            )),
            other => SourceError::Fatal(other.into()),
        })?;
        parse_records(&output)
            .into_iter()
            .find(|record| record.package == package)
            .ok_or_else(|| SourceError::Unavailable(format!("{} does not offer {package}", self.suites.join(", "))))
    }

    /// `apt-get -s <arguments>`: what apt would install, against this directory's dpkg status
    /// (empty unless a test wrote one), so a resolution can be proved without installing anything.
    pub fn simulate(&self, runner: &CommandRunner, arguments: &[String]) -> Result<Vec<SimulatedInstall>, RunError> {
        assert!(!self.host_status, "a simulation never reads the host's dpkg status");
        let mut command = self.command("apt-get");
        command.arg("-s").args(arguments);
        let output = runner.run_capture(&format!("apt-simulate-{}", self.suites.join("+")), &mut command)?;
        Ok(output.lines().filter_map(SimulatedInstall::parse).collect())
    }

    /// The dpkg status file a simulation reads.
    pub fn status_path(&self) -> PathBuf {
        self.root.join("state/status")
    }

    /// The pin of a resolved record from this mirror.
    pub fn pin(&self, record: &PackageRecord) -> DebPin {
        DebPin {
            package: record.package.clone(),
            version: record.version.clone(),
            mirror: self.mirror.clone(),
            filename: record.filename.clone(),
            sha256: record.sha256.clone(),
            size: record.size,
        }
    }
}

/// One `Inst` line of `apt-get -s`: a package apt would install or upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedInstall {
    pub package: String,
    pub version: String,
    /// The archive's label and suite, e.g. `Debian Backports:oldstable-backports`.
    pub origin: String,
}

impl SimulatedInstall {
    /// `Inst qemu-utils [1:7.2] (1:10.0.2+ds-2 Debian Backports:oldstable-backports [amd64])`.
    fn parse(line: &str) -> Option<SimulatedInstall> {
        let rest = line.strip_prefix("Inst ")?;
        let (package, rest) = rest.split_once(' ')?;
        let inner = rest.split_once('(')?.1.rsplit_once(')')?.0;
        let (version, origin) = inner.split_once(' ')?;
        let origin = origin.rsplit_once(" [").map_or(origin, |(origin, _)| origin);
        Some(SimulatedInstall { package: package.to_owned(), version: version.to_owned(), origin: origin.to_owned() })
    }
}

/// What the cache holds of one pinned .deb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebFile {
    Missing,
    /// Size and sha256 as pinned.
    Whole,
    /// There, but not what the pin names: why.
    Damaged(String),
}

/// Whether `path` holds exactly `pin`: its size, then its sha256 (the whole file is read).
pub fn check_deb(path: &Path, pin: &DebPin) -> std::io::Result<DebFile> {
    check_download(path, &Download { url: pin.url(), file_name: pin.file_name(), sha256: pin.sha256.clone(), size: Some(pin.size) })
}

/// Downloads `pin` into `dir` (kept there: a later call checks its size and sha256) and returns
/// its path; a file there that is not the pin's is replaced. A 404 or an unreachable mirror is
/// `Unavailable`; a hash mismatch or a full disk is fatal, and leaves no partial file.
pub fn download(runner: &CommandRunner, pin: &DebPin, dir: &Path) -> Result<PathBuf, SourceError> {
    let file = Download { url: pin.url(), file_name: pin.file_name(), sha256: pin.sha256.clone(), size: Some(pin.size) };
    download_file(runner, &format!("download-{}", pin.package), &file, dir)
}

/// One file to fetch: where from, the name it is kept under, and what it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    pub url: String,
    pub file_name: String,
    pub sha256: String,
    /// Known from a package index; a recipe's tarball gives only its sha256.
    pub size: Option<u64>,
}

/// Whether `path` holds exactly `file`: its size when known, then its sha256 (the whole file is
/// read).
pub fn check_download(path: &Path, file: &Download) -> std::io::Result<DebFile> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(DebFile::Missing),
        Err(error) => return Err(error),
    };
    if !metadata.is_file() {
        return Ok(DebFile::Damaged("not a regular file".to_owned()));
    }
    if let Some(size) = file.size.filter(|size| *size != metadata.len()) {
        return Ok(DebFile::Damaged(format!("{} bytes, the pin says {size}", metadata.len())));
    }
    let sha256 = crate::stack::cache::sha256_file(path)?;
    if !sha256.eq_ignore_ascii_case(&file.sha256) {
        return Ok(DebFile::Damaged(format!("sha256 {sha256}, the pin says {}", file.sha256)));
    }
    Ok(DebFile::Whole)
}

/// Downloads `file` into `dir` with `apt-helper download-file` against its sha256 (kept there: a
/// later call checks it again) and returns its path; a file there that is not the pinned one is
/// replaced. A 404 or an unreachable host is `Unavailable`; a hash mismatch or a full disk is
/// fatal, and leaves no partial file.
pub fn download_file(runner: &CommandRunner, step: &str, file: &Download, dir: &Path) -> Result<PathBuf, SourceError> {
    let fatal = |error: std::io::Error| SourceError::Fatal(error.into());
    let destination = dir.join(&file.file_name);
    match check_download(&destination, file).map_err(fatal)? {
        DebFile::Whole => return Ok(destination),
        DebFile::Damaged(_) => fs::remove_file(&destination).map_err(fatal)?,
        DebFile::Missing => {}
    }
    fs::create_dir_all(dir).map_err(fatal)?;
    let size = file.size.unwrap_or(0);
    let no_room = |free: u64| {
        SourceError::Fatal(anyhow::anyhow!(
            "No space left on device: downloading {} ({size} bytes) into {}, whose file system has {free} bytes free",
            file.file_name,
            dir.display()
        ))
    };
    // Refused before anything is written when it cannot fit.
    if let Some(free) = crate::stack::cache::free_space(dir).filter(|free| *free < size) {
        return Err(no_room(free));
    }
    // Download beside the destination and rename: a killed download leaves no file that looks whole.
    let partial = partial_path(dir, &file.file_name);
    let mut command = Command::new("/usr/lib/apt/apt-helper");
    if crate::sys::process::is_root() {
        command.args(["-o", "APT::Sandbox::User=root"]);
    }
    command.arg("download-file").arg(&file.url).arg(&partial).arg(format!("SHA256:{}", file.sha256));
    if let Err(error) = runner.run(step, &mut command) {
        // apt keeps a file whose hash did not match as `<file>.FAILED`: nothing of it may stay.
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(format!("{}.FAILED", partial.display()));
        // The disk filled while downloading (another writer): apt-helper's own words may not
        // have fit into its log.
        if let (RunError::Failed { tail, .. }, Some(free)) = (&error, crate::stack::cache::free_space(dir)) {
            if !tail.contains("No space left on device") && free < size {
                return Err(SourceError::Fatal(anyhow::Error::new(error).context(no_room(free).to_string())));
            }
        }
        return Err(classify(error));
    }
    fs::rename(&partial, &destination).map_err(fatal)?;
    Ok(destination)
}

/// Where [`download_file`] writes `file_name` before it is complete.
pub fn partial_path(dir: &Path, file_name: &str) -> PathBuf {
    dir.join(format!("{file_name}.partial"))
}

/// `dpkg-deb -x`: unpacks a .deb's files (not its scripts) into `dir`.
pub fn extract(runner: &CommandRunner, deb: &Path, dir: &Path) -> Result<(), RunError> {
    let step = format!("extract-{}", deb.file_stem().unwrap_or_default().to_string_lossy());
    runner.run(&step, Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))
}

/// Network trouble and 404s fall through to the next source; anything else is fatal.
fn classify(error: RunError) -> SourceError {
    match &error {
        RunError::Failed { tail, .. } if is_unreachable(tail) => SourceError::unavailable(&error),
        _ => SourceError::Fatal(error.into()),
    }
}

fn is_unreachable(output: &str) -> bool {
    // A file whose hash did not match is never "unreachable", whatever digits its hash shows; a
    // full disk fails every source alike (apt then also reports the fetch it could not write).
    if output.contains("Hash Sum mismatch") || output.contains("No space left on device") {
        return false;
    }
    ["404  Not Found", "404 Not Found", "Could not resolve", "Could not connect", "Failed to connect", "Temporary failure", "Connection timed out", "No route"]
        .iter()
        .any(|needle| output.contains(needle))
}

fn is_unverifiable(output: &str) -> bool {
    output.contains("NO_PUBKEY") || output.contains("is not signed") || output.contains("EXPKEYSIG")
}

/// Parses deb822 stanzas as `apt-cache show` prints them.
pub fn parse_records(text: &str) -> Vec<PackageRecord> {
    let mut records = Vec::new();
    let mut record = PackageRecord::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !record.package.is_empty() {
                records.push(std::mem::take(&mut record));
            }
            continue;
        }
        let Some((field, value)) = line.split_once(':') else { continue };
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let value = value.trim().to_owned();
        match field {
            "Package" => record.package = value,
            "Version" => record.version = value,
            "Architecture" => record.architecture = value,
            "Depends" => record.depends = value,
            "Filename" => record.filename = value,
            "SHA256" => record.sha256 = value,
            "Size" => record.size = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    records
}

/// A source package as `apt-cache showsrc` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRecord {
    pub package: String,
    pub version: String,
    /// The pool directory below the mirror.
    pub directory: String,
    pub files: Vec<SourceFile>,
}

/// Parses `apt-cache showsrc` stanzas: the fields and the `Checksums-Sha256` list.
pub fn parse_source_records(text: &str) -> Vec<SourceRecord> {
    let mut records = Vec::new();
    let mut record = SourceRecord::default();
    let mut in_checksums = false;
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !record.package.is_empty() {
                records.push(std::mem::take(&mut record));
            }
            in_checksums = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if in_checksums {
                if let [sha256, size, name] = line.split_whitespace().collect::<Vec<_>>()[..] {
                    record.files.push(SourceFile { name: name.to_owned(), sha256: sha256.to_owned(), size: size.parse().unwrap_or(0) });
                }
            }
            continue;
        }
        let Some((field, value)) = line.split_once(':') else { continue };
        in_checksums = field == "Checksums-Sha256";
        let value = value.trim().to_owned();
        match field {
            "Package" => record.package = value,
            "Version" => record.version = value,
            "Directory" => record.directory = value,
            _ => {}
        }
    }
    records
}

/// `'URI' name size SHA256:hash` lines of `apt-get source --print-uris`, as source files.
pub fn parse_print_uris(text: &str) -> Vec<SourceFile> {
    text.lines()
        .filter_map(|line| {
            let [_, name, size, hash] = line.split_whitespace().collect::<Vec<_>>()[..] else { return None };
            let sha256 = hash.strip_prefix("SHA256:")?;
            Some(SourceFile { name: name.to_owned(), sha256: sha256.to_owned(), size: size.parse().ok()? })
        })
        .collect()
}

/// The names in a `Depends` field, alternatives included, versions dropped.
pub fn dependency_names(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|item| item.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name).to_owned())
        .collect()
}

/// The host's release codename (`bookworm`), from `/etc/os-release`.
pub fn host_codename() -> anyhow::Result<String> {
    let text = fs::read_to_string("/etc/os-release")?;
    codename_from_os_release(&text).ok_or_else(|| anyhow::anyhow!("/etc/os-release names no VERSION_CODENAME"))
}

pub fn codename_from_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// Turns the recipe words `host` and `host-backports` into real suite names.
pub fn concrete_suite(suite: &str, host_codename: &str) -> String {
    match suite {
        crate::stack::recipe::HOST_RELEASE => host_codename.to_owned(),
        crate::stack::recipe::HOST_BACKPORTS => format!("{host_codename}-backports"),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apt() -> PrivateApt {
        PrivateApt::new(
            Path::new("/c/apt"),
            "http://deb.debian.org/debian",
            &["trixie-backports".to_owned()],
            Path::new("/usr/share/keyrings/debian-archive-keyring.gpg"),
        )
    }

    #[test]
    fn options_confine_apt_to_its_directory() {
        let apt = apt();
        let root = apt.root.display().to_string();
        assert!(root.starts_with("/c/apt/trixie-backports-"), "{root}");
        let options = apt.options();
        for expected in [
            format!("Dir::Etc::SourceList={root}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "Dir::Etc::Preferences=/dev/null".to_owned(),
            "Dir::Etc::PreferencesParts=/dev/null".to_owned(),
            format!("Dir::State={root}/state"),
            format!("Dir::State::status={root}/state/status"),
            format!("Dir::Cache={root}/cache"),
        ] {
            assert!(options.contains(&expected), "missing {expected} in {options:?}");
        }
        assert!(options.iter().all(|option| !option.contains("/etc/apt")), "{options:?}");
        assert_eq!(
            apt.sources_list(),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main\n"
        );
    }

    #[test]
    fn host_mode_keeps_the_real_dpkg_status() {
        let mut apt = apt();
        apt.host_status = true;
        let options = apt.options();
        assert!(options.iter().all(|option| !option.starts_with("Dir::State::status") && !option.starts_with("Dir::State=")));
        assert!(options.contains(&format!("Dir::State::Lists={}/state/lists", apt.root.display())));
    }

    #[test]
    fn parses_show_output_and_dependencies() {
        let text = "Package: linux-image-amd64\nVersion: 7.3.4-1~bpo13+1\nDepends: linux-base-amd64 (= 7.3.4-1~bpo13+1), linux-image-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)\nDescription: x\n more\nFilename: pool/main/l/x.deb\nSize: 1476\nSHA256: c91b\n\nPackage: other\nVersion: 1\n";
        let records = parse_records(text);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].version, "7.3.4-1~bpo13+1");
        assert_eq!(records[0].size, 1476);
        assert_eq!(
            dependency_names(&records[0].depends),
            ["linux-base-amd64", "linux-image-7.3.4+deb13-amd64"]
        );
        assert_eq!(dependency_names("dracut | initramfs-tools (>= 0.120), kmod:any"), ["dracut", "initramfs-tools", "kmod"]);
    }

    #[test]
    fn host_words_become_suites() {
        assert_eq!(concrete_suite("host-backports", "bookworm"), "bookworm-backports");
        assert_eq!(concrete_suite("host", "bookworm"), "bookworm");
        assert_eq!(concrete_suite("trixie", "bookworm"), "trixie");
        assert_eq!(codename_from_os_release("ID=debian\nVERSION_CODENAME=bookworm\n").as_deref(), Some("bookworm"));
    }

    #[test]
    fn parses_simulated_installs_and_upgrades() {
        assert_eq!(
            SimulatedInstall::parse("Inst qemu-utils [1:7.2+dfsg-7] (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])"),
            Some(SimulatedInstall {
                package: "qemu-utils".to_owned(),
                version: "1:10.0.2+ds-2+deb13u1~bpo12+1".to_owned(),
                origin: "Debian Backports:oldstable-backports".to_owned(),
            })
        );
        assert_eq!(SimulatedInstall::parse("Inst seabios (1.16.2-1 Debian:12.15/oldstable [all])").unwrap().origin, "Debian:12.15/oldstable");
        assert_eq!(SimulatedInstall::parse("Conf seabios (1.16.2-1 Debian:12.15/oldstable [all])"), None);
    }

    #[test]
    fn parses_source_stanzas_and_print_uris() {
        let showsrc = "Package: qemu\nVersion: 1:10.2.2+ds-1\nFiles:\n 0123 10994 qemu_10.2.2+ds-1.dsc\nChecksums-Sha256:\n f168 10994 qemu_10.2.2+ds-1.dsc\n be05 38669728 qemu_10.2.2+ds.orig.tar.xz\nDirectory: pool/main/q/qemu\n\nPackage: qemu\nVersion: 1:11.1.3+ds-1\n";
        let records = parse_source_records(showsrc);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].version, "1:10.2.2+ds-1");
        assert_eq!(records[0].directory, "pool/main/q/qemu");
        assert_eq!(records[0].files, [
            SourceFile { name: "qemu_10.2.2+ds-1.dsc".into(), sha256: "f168".into(), size: 10994 },
            SourceFile { name: "qemu_10.2.2+ds.orig.tar.xz".into(), sha256: "be05".into(), size: 38669728 },
        ]);
        let uris = "'http://deb.debian.org/debian/pool/main/q/qemu/qemu_10.2.2%2bds-1.dsc' qemu_10.2.2+ds-1.dsc 10994 SHA256:f168\n";
        assert_eq!(parse_print_uris(uris), [SourceFile { name: "qemu_10.2.2+ds-1.dsc".into(), sha256: "f168".into(), size: 10994 }]);
    }

    #[test]
    fn unreachable_is_recognised() {
        assert!(is_unreachable("  | Err:1 http://x/y.deb\n  |   404  Not Found"));
        assert!(!is_unreachable("  | Hash Sum mismatch"));
        // A hash that happens to show 404 is not a 404.
        assert!(!is_unreachable("  | Hash Sum mismatch\n  |    - SHA256:0dbefe63f5e2b549c4d6d94041eea1f8b1fc02c9"));
        assert!(!is_unreachable("  |    - SHA256:0dbefe63f5e2b549c4d6d94041eea1f8b1fc02c9"));
        // A full disk is not a source that fell away: every other source would fail the same.
        assert!(!is_unreachable("  | E: Write error - write (28: No space left on device)\n  | E: Could not connect to the next source"));
        assert!(is_unverifiable("W: GPG error: http://deb.debian.org/debian forky InRelease: NO_PUBKEY 762F67A0B2C39DE4"));
    }
}
