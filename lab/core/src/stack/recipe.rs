//! Recipes in `images/`: where each piece of a stack comes from and how it is put together.
//!
//! A recipe is a YAML file parsed once: `images/distro.yaml` into [`StackRecipe`],
//! `images/source.yaml` into [`SourceRecipe`] (the two share the archive, the candidate syntax and
//! the checks of every word that reaches apt, git or a URL); errors name the file, line, column
//! and field. Everything downstream trusts the parsed recipe. The format is documented in
//! `docs/images.md`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::qemu::QemuVersion;
use crate::stack::StackKind;
use crate::stack::sources::Candidate;

/// The suite word that means "the host release's backports" (`bookworm-backports` on bookworm).
pub const HOST_BACKPORTS: &str = "host-backports";
/// The suite word that means "the host's own release" (`bookworm` on bookworm).
pub const HOST_RELEASE: &str = "host";

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    // Not a `source`: the message already quotes it, and `{:#}` would print it twice.
    #[error("cannot read recipe {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: u64, column: u64, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// The distro stack's recipe: QEMU, kernel, initramfs, root filesystem.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackRecipe {
    /// The stack this recipe builds (`distro`).
    pub stack: StackKind,
    /// The Debian archive every `debian` source and debootstrap use unless they name another.
    #[serde(default)]
    pub archive: ArchiveRecipe,
    pub qemu: QemuRecipe,
    pub kernel: KernelRecipe,
    pub initramfs: InitramfsRecipe,
    pub rootfs: RootfsRecipe,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRecipe {
    pub mirror: String,
    /// The keyring apt and debootstrap check the archive's signatures with.
    pub keyring: PathBuf,
}

impl Default for ArchiveRecipe {
    fn default() -> ArchiveRecipe {
        ArchiveRecipe {
            mirror: "http://deb.debian.org/debian".to_owned(),
            keyring: PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg"),
        }
    }
}

/// QEMU for the distro stack: the host's own `qemu-system-x86_64`, installed from these sources.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QemuRecipe {
    pub sources: Vec<Candidate>,
    /// The oldest QEMU the lab accepts (`major.minor`).
    #[serde(default)]
    pub minimum_version: Option<QemuVersion>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KernelRecipe {
    pub sources: Vec<Candidate>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitramfsRecipe {
    /// Where the static busybox comes from.
    pub busybox: Vec<Candidate>,
    /// Modules loaded before the root is mounted, in this order (their dependencies first).
    pub modules: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RootfsRecipe {
    #[serde(default = "default_rootfs_suite")]
    pub suite: String,
    /// Overrides the archive mirror for debootstrap.
    #[serde(default)]
    pub mirror: Option<String>,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    pub packages: Vec<String>,
    /// Free space left in the ext4 image beyond the tree's size.
    #[serde(default = "default_headroom")]
    pub headroom_mib: u64,
}

fn default_rootfs_suite() -> String {
    "trixie".to_owned()
}

fn default_hostname() -> String {
    "cxl-lab".to_owned()
}

fn default_headroom() -> u64 {
    2048
}

/// The source stack's recipe (`images/source.yaml`): QEMU, the kernel and ndctl built from
/// source. What it boots besides them (initramfs, root filesystem) is added with their builders.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceRecipe {
    /// `source`.
    pub stack: StackKind,
    #[serde(default)]
    pub archive: ArchiveRecipe,
    pub qemu: SourceQemuRecipe,
    pub kernel: KernelRecipe,
    pub ndctl: NdctlRecipe,
}

/// QEMU built from the first source that answers, with Debian's firmware.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceQemuRecipe {
    pub sources: Vec<Candidate>,
    /// The oldest QEMU the lab accepts (`major.minor`): a source that builds an older one fails.
    #[serde(default)]
    pub minimum_version: Option<QemuVersion>,
    /// The lab's patches, relative to the images directory, applied in order (`patch -p1`).
    #[serde(default)]
    pub patches: Vec<PathBuf>,
    pub firmware: FirmwareRecipe,
}

/// The ROMs QEMU loads (BIOS, option ROMs), from Debian binary packages of one suite: source
/// releases and Debian's `+ds` source carry none that are built.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirmwareRecipe {
    /// A suite name, `host` or `host-backports`.
    pub suite: String,
    pub packages: Vec<String>,
    /// Overrides the archive's mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

impl FirmwareRecipe {
    /// Each package as a `debian` candidate, resolved one by one (all of them are needed).
    pub fn candidates(&self) -> Vec<Candidate> {
        self.packages
            .iter()
            .map(|package| {
                Candidate::Debian(crate::stack::sources::DebianCandidate {
                    package: package.clone(),
                    suite: self.suite.clone(),
                    parts: Vec::new(),
                    mirror: self.mirror.clone(),
                })
            })
            .collect()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NdctlRecipe {
    pub sources: Vec<Candidate>,
}

/// A recipe as read from disk: the parsed form and its exact text (the text feeds cache keys).
#[derive(Clone, Debug)]
pub struct LoadedRecipe<R = StackRecipe> {
    pub path: PathBuf,
    pub text: String,
    pub recipe: R,
}

/// The recipe file of a stack: `images/<stack>.yaml`.
pub fn recipe_path(images_dir: &Path, stack: StackKind) -> PathBuf {
    images_dir.join(format!("{stack}.yaml"))
}

/// Reads and validates `images/distro.yaml` (`stack` is the distro stack).
pub fn load(images_dir: &Path, stack: StackKind) -> Result<LoadedRecipe, RecipeError> {
    load_with(images_dir, stack, parse)
}

/// Reads and validates `images/source.yaml`.
pub fn load_source(images_dir: &Path) -> Result<LoadedRecipe<SourceRecipe>, RecipeError> {
    load_with(images_dir, StackKind::Source, parse_source)
}

fn load_with<R>(images_dir: &Path, stack: StackKind, parse: fn(&Path, &str) -> Result<R, RecipeError>) -> Result<LoadedRecipe<R>, RecipeError> {
    let path = recipe_path(images_dir, stack);
    let text = std::fs::read_to_string(&path).map_err(|error| RecipeError::Read { path: path.clone(), error })?;
    let recipe = parse(&path, &text)?;
    Ok(LoadedRecipe { path, text, recipe })
}

/// Parses distro recipe text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<StackRecipe, RecipeError> {
    let recipe: StackRecipe = parse_yaml(path, text)?;
    validate(path, &recipe)?;
    Ok(recipe)
}

/// Parses source recipe text; `path` is only used in messages.
pub fn parse_source(path: &Path, text: &str) -> Result<SourceRecipe, RecipeError> {
    let recipe: SourceRecipe = parse_yaml(path, text)?;
    validate_source(path, &recipe)?;
    Ok(recipe)
}

/// YAML to `T`, with errors at the file, line, column and field.
fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, RecipeError> {
    if text.trim().is_empty() {
        return Err(RecipeError::Parse { path: path.to_path_buf(), line: 1, column: 1, message: "the recipe is empty".to_owned() });
    }
    serde_saphyr::from_str(text).map_err(|error| {
        let (line, column) = error.location().map(|location| (location.line(), location.column())).unwrap_or((0, 0));
        let message = crate::yaml::error_message(&error.to_string());
        // A missing field is reported at the last key of the mapping that lacks it: the mapping
        // is that key's parent (the whole recipe at the top level).
        let at_key = message.starts_with("missing field");
        let message = match field_path_at(text, line, column, at_key) {
            Some(field) if !message.contains(&field) => format!("{field}: {message}"),
            _ => message,
        };
        RecipeError::Parse { path: path.to_path_buf(), line, column, message }
    })
}

/// The dotted key path of the mapping entry on `line` (1-based), from indentation: serde-saphyr
/// knows where an error is but not always which field it is in. With `parent_if_at_key`, a
/// position on the key itself (not on its value) names the mapping that holds the key.
fn field_path_at(text: &str, line: u64, column: u64, parent_if_at_key: bool) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let key_of = |raw: &str| -> Option<(usize, String)> {
        let indent = raw.len() - raw.trim_start().len();
        let body = raw.trim_start().trim_start_matches("- ");
        let (key, _) = body.split_once(':')?;
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        plain.then(|| (indent + (raw.trim_start().len() - body.len()), key.to_owned()))
    };
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let (mut indent, key) = key_of(lines.get(index)?)?;
    let on_key = u64::try_from(indent).is_ok_and(|indent| indent + 1 == column);
    let mut path = vec![key];
    for raw in lines[..index].iter().rev() {
        if let Some((parent_indent, parent)) = key_of(raw) {
            if parent_indent < indent {
                path.push(parent);
                indent = parent_indent;
            }
        }
    }
    path.reverse();
    if parent_if_at_key && on_key {
        path.pop();
    }
    (!path.is_empty()).then(|| path.join("."))
}

/// Checks what the types cannot say, one section after another in a fixed order: the first
/// problem found is the one reported.
fn validate(path: &Path, recipe: &StackRecipe) -> Result<(), RecipeError> {
    let invalid = |(field, message): Problem| RecipeError::Invalid { path: path.to_path_buf(), field, message };
    if recipe.stack != StackKind::Distro {
        return Err(invalid(problem("stack", "this is the `distro` stack's recipe format (the source stack's is images/source.yaml)")));
    }
    check_lists(recipe).map_err(invalid)?;
    check_candidates(&source_lists(recipe)).map_err(invalid)?;
    check_archive_and_rootfs(recipe).map_err(invalid)?;
    check_names(recipe).map_err(invalid)
}

/// The source recipe's checks: its stack, that each list has a candidate, every candidate's
/// words, the firmware's suite and packages, the archive.
fn validate_source(path: &Path, recipe: &SourceRecipe) -> Result<(), RecipeError> {
    let invalid = |(field, message): Problem| RecipeError::Invalid { path: path.to_path_buf(), field, message };
    if recipe.stack != StackKind::Source {
        return Err(invalid(problem("stack", "this is the `source` stack's recipe format (the distro stack's is images/distro.yaml)")));
    }
    let lists: [(&str, &[Candidate]); 3] =
        [("qemu.sources", &recipe.qemu.sources), ("kernel.sources", &recipe.kernel.sources), ("ndctl.sources", &recipe.ndctl.sources)];
    if let Some((field, _)) = lists.iter().find(|(_, sources)| sources.is_empty()) {
        return Err(invalid(problem(field, "lists no source")));
    }
    check_candidates(&lists).map_err(invalid)?;
    let firmware = &recipe.qemu.firmware;
    if !is_suite(&firmware.suite) {
        return Err(invalid(problem("qemu.firmware.suite", SUITE_RULE)));
    }
    if firmware.packages.is_empty() || firmware.packages.iter().any(|package| !is_package_name(package)) {
        return Err(invalid(problem("qemu.firmware.packages", PACKAGE_NAME_RULE)));
    }
    if firmware.mirror.as_deref().is_some_and(|mirror| !is_mirror_url(mirror)) {
        return Err(invalid(problem("qemu.firmware.mirror", MIRROR_RULE)));
    }
    if !is_mirror_url(&recipe.archive.mirror) {
        return Err(invalid(problem("archive.mirror", MIRROR_RULE)));
    }
    check_patches(path, &recipe.qemu.patches).map_err(invalid)
}

/// Each patch a file below the recipe's directory, named by a plain relative path.
fn check_patches(recipe_path: &Path, patches: &[PathBuf]) -> Result<(), Problem> {
    let images_dir = recipe_path.parent().unwrap_or(Path::new("."));
    for (index, patch) in patches.iter().enumerate() {
        let field = format!("qemu.patches[{index}]");
        if !patch.components().all(|part| matches!(part, std::path::Component::Normal(_))) {
            return Err((field, format!("`{}` must be a path below the images directory, without `..`", patch.display())));
        }
        if !images_dir.join(patch).is_file() {
            return Err((field, format!("no patch file {}", images_dir.join(patch).display())));
        }
    }
    Ok(())
}

/// A field and what is wrong with it.
type Problem = (String, String);

fn problem(field: &str, message: &str) -> Problem {
    (field.to_owned(), message.to_owned())
}

/// The recipe's candidate lists, by field.
fn source_lists(recipe: &StackRecipe) -> [(&'static str, &[Candidate]); 3] {
    [
        ("qemu.sources", &recipe.qemu.sources),
        ("kernel.sources", &recipe.kernel.sources),
        ("initramfs.busybox", &recipe.initramfs.busybox),
    ]
}

/// Every candidate list and the initramfs's module list have something in them.
fn check_lists(recipe: &StackRecipe) -> Result<(), Problem> {
    if let Some((field, _)) = source_lists(recipe).into_iter().find(|(_, sources)| sources.is_empty()) {
        return Err(problem(field, "lists no source"));
    }
    if recipe.initramfs.modules.is_empty() {
        return Err(problem("initramfs.modules", "lists no module: the root could not be mounted"));
    }
    Ok(())
}

/// The words of candidates reach apt, git and URLs: package names, suites, versions, parts and
/// mirrors; git URLs and refs; tarball URLs and sha256s.
fn check_candidates(lists: &[(&str, &[Candidate])]) -> Result<(), Problem> {
    for (field, sources) in lists {
        for (index, candidate) in sources.iter().enumerate() {
            check_candidate(candidate).map_err(|(name, message)| (format!("{field}[{index}].{name}"), message))?;
        }
    }
    Ok(())
}

/// One candidate's words; the problem's field is below the candidate (`debian.suite`).
fn check_candidate(candidate: &Candidate) -> Result<(), Problem> {
    let (kind, package, suite, mirror) = match candidate {
        Candidate::Debian(debian) => {
            if debian.parts.iter().any(|part| !is_package_name(&part.replace("{release}", "0"))) {
                return Err(problem("debian.parts", "package names, with `{release}` where the release goes"));
            }
            ("debian", &debian.package, &debian.suite, &debian.mirror)
        }
        Candidate::DebianSource(source) => {
            if source.version.as_deref().is_some_and(|version| !is_debian_version(version)) {
                return Err(problem("debian-source.version", "a Debian version (`1:10.2.2+ds-1`)"));
            }
            ("debian-source", &source.package, &source.suite, &source.mirror)
        }
        Candidate::Git(git) => {
            if !["https://", "http://", "git://", "file://", "/"].iter().any(|scheme| git.url.starts_with(scheme)) || git.url.contains(char::is_whitespace) {
                return Err(problem("git.url", "a repository URL (`https://`, `http://`, `git://`, `file://`) or an absolute path"));
            }
            if git.reference.is_empty() || git.reference.starts_with('-') || git.reference.contains(|c: char| c.is_whitespace() || c == ':') {
                return Err(problem("git.ref", "a branch, tag or commit id"));
            }
            return Ok(());
        }
        Candidate::Tarball(tarball) => {
            if !["https://", "http://"].iter().any(|scheme| tarball.url.starts_with(scheme)) || tarball.url.contains(char::is_whitespace) {
                return Err(problem("tarball.url", "an `https://` or `http://` URL (a local tree is a `local` source)"));
            }
            if tarball.sha256.len() != 64 || !tarball.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(problem("tarball.sha256", "64 hex digits"));
            }
            return Ok(());
        }
        Candidate::Local(_) => return Ok(()),
    };
    if !is_package_name(package) {
        return Err(problem(&format!("{kind}.package"), PACKAGE_NAME_RULE));
    }
    if !is_suite(suite) {
        return Err(problem(&format!("{kind}.suite"), SUITE_RULE));
    }
    if mirror.as_deref().is_some_and(|mirror| !is_mirror_url(mirror)) {
        return Err(problem(&format!("{kind}.mirror"), MIRROR_RULE));
    }
    Ok(())
}

/// The archive's mirror and what reaches debootstrap and mkfs: mirror, suite, packages, headroom.
fn check_archive_and_rootfs(recipe: &StackRecipe) -> Result<(), Problem> {
    let rootfs = &recipe.rootfs;
    if !is_mirror_url(&recipe.archive.mirror) {
        return Err(problem("archive.mirror", MIRROR_RULE));
    }
    if rootfs.mirror.as_deref().is_some_and(|mirror| !is_mirror_url(mirror)) {
        return Err(problem("rootfs.mirror", MIRROR_RULE));
    }
    if !is_suite(&rootfs.suite) {
        return Err(problem("rootfs.suite", SUITE_RULE));
    }
    if let Some(package) = rootfs.packages.iter().find(|package| !is_package_name(package)) {
        return Err(problem("rootfs.packages", &format!("`{package}`: one package a list item, without commas or spaces ({PACKAGE_NAME_RULE})")));
    }
    if rootfs.headroom_mib > MAX_HEADROOM_MIB {
        return Err(problem("rootfs.headroom_mib", "at most 1048576 (1 TiB)"));
    }
    Ok(())
}

/// Names written into the initramfs's module list and the image's hostname files.
fn check_names(recipe: &StackRecipe) -> Result<(), Problem> {
    if let Some(module) = recipe.initramfs.modules.iter().find(|module| module.is_empty() || !module.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        return Err(problem("initramfs.modules", &format!("`{module}` is not a module name (letters, digits, `_`, `-`)")));
    }
    if recipe.rootfs.hostname.is_empty() || !recipe.rootfs.hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(problem("rootfs.hostname", "letters, digits and `-` only"));
    }
    Ok(())
}

const PACKAGE_NAME_RULE: &str = "a Debian package name: lowercase letters, digits, `+`, `-` and `.`";
const SUITE_RULE: &str = "a suite name (`trixie`, `trixie-backports`), `host` or `host-backports`";
const MIRROR_RULE: &str = "an archive URL: `http://`, `https://`, `file:/` or `copy:/`";
/// Free space an image may be given beyond its tree (keeps the image size within a u64 of bytes).
const MAX_HEADROOM_MIB: u64 = 1024 * 1024;

/// Debian policy: at least two characters, starting with a letter or digit.
pub(crate) fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

/// A full commit id (40 hex digits, or 64 for a SHA-256 repository).
pub(crate) fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// A Debian version: `[epoch:]upstream[-revision]` in Debian's characters.
pub(crate) fn is_debian_version(version: &str) -> bool {
    !version.is_empty()
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-'))
}

/// A plain word (it becomes a debootstrap argument and a directory name).
fn is_suite(suite: &str) -> bool {
    !suite.is_empty() && suite.starts_with(|c: char| c.is_ascii_alphanumeric()) && suite.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

pub(crate) fn is_mirror_url(url: &str) -> bool {
    ["http://", "https://", "file:/", "copy:/"].iter().any(|scheme| url.starts_with(scheme)) && !url.contains(char::is_whitespace)
}


#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
stack: distro
qemu:
  sources:
    - debian: { package: qemu-system-x86, suite: host-backports }
kernel:
  sources:
    - debian:
        package: linux-image-amd64
        suite: trixie-backports
        parts: ['linux-binary-{release}', 'linux-modules-{release}']
initramfs:
  busybox:
    - debian: { package: busybox-static, suite: trixie }
  modules: [virtio_blk, ext4]
rootfs:
  packages: [openssh-server, jq]
";

    #[test]
    fn parses_with_defaults() {
        let recipe = parse(Path::new("images/distro.yaml"), GOOD).unwrap();
        assert_eq!(recipe.rootfs.suite, "trixie");
        assert_eq!(recipe.rootfs.headroom_mib, 2048);
        assert_eq!(recipe.archive.mirror, "http://deb.debian.org/debian");
        assert_eq!(recipe.initramfs.modules, ["virtio_blk", "ext4"]);
    }

    #[test]
    fn unknown_field_names_file_line_and_column() {
        let text = GOOD.replace("  packages: [openssh-server, jq]", "  packages: [openssh-server, jq]\n  sutie: sid");
        let error = parse(Path::new("images/distro.yaml"), &text).unwrap_err().to_string();
        assert!(error.starts_with("images/distro.yaml:17:3: rootfs.sutie: unknown field `sutie`"), "{error}");
    }

    #[test]
    fn wrong_type_names_its_line() {
        let text = GOOD.replace("  packages: [openssh-server, jq]", "  packages: [openssh-server, jq]\n  headroom_mib: lots");
        let error = parse(Path::new("images/distro.yaml"), &text).unwrap_err().to_string();
        assert_eq!(error, "images/distro.yaml:17:17: rootfs.headroom_mib: invalid u64");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let text = GOOD.replace("[openssh-server, jq]", "[\"openssh-server,jq\"]");
        let error = parse(Path::new("images/distro.yaml"), &text).unwrap_err().to_string();
        assert_eq!(
            error,
            "images/distro.yaml: rootfs.packages: `openssh-server,jq`: one package a list item, without commas or spaces \
             (a Debian package name: lowercase letters, digits, `+`, `-` and `.`)"
        );
    }

    #[test]
    fn a_missing_field_names_the_mapping_that_lacks_it() {
        let error = |text: &str| parse(Path::new("r.yaml"), text).unwrap_err().to_string();
        let without_modules = GOOD.replace("  modules: [virtio_blk, ext4]\n", "");
        assert!(error(&without_modules).ends_with(": initramfs: missing field `modules`"), "{}", error(&without_modules));
        let without_stack = GOOD.replace("stack: distro\n", "");
        assert!(error(&without_stack).ends_with(": missing field `stack`"), "{}", error(&without_stack));
        let without_suite = GOOD.replace("{ package: busybox-static, suite: trixie }", "{ package: busybox-static }");
        assert!(error(&without_suite).ends_with(": initramfs.busybox.debian: missing field `suite`"), "{}", error(&without_suite));
        assert_eq!(error(""), "r.yaml:1:1: the recipe is empty");
    }

    #[test]
    fn words_that_reach_apt_and_debootstrap_are_checked() {
        let error = |from: &str, to: &str| parse(Path::new("r.yaml"), &GOOD.replace(from, to)).unwrap_err().to_string();
        assert!(error("suite: trixie }", "suite: --foo }").contains("initramfs.busybox[0].debian.suite: a suite name"));
        assert!(error("package: qemu-system-x86", "package: Qemu").contains("qemu.sources[0].debian.package"));
        assert!(error("  packages: [openssh-server, jq]", "  packages: [jq]\n  suite: '-x'").contains("rootfs.suite"));
        assert!(error("  packages: [openssh-server, jq]", "  packages: [jq]\n  mirror: deb.debian.org").contains("rootfs.mirror: an archive URL"));
        assert!(error("  packages: [openssh-server, jq]", "  packages: [jq]\n  headroom_mib: 18446744073709551615").contains("rootfs.headroom_mib: at most"));
        assert!(error("[virtio_blk, ext4]", "[virtio_blk, 'ext4 x']").contains("`ext4 x` is not a module name"));
    }

    #[test]
    fn the_checked_in_source_recipe_parses_and_its_candidates_are_checked() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let loaded = load_source(&images).unwrap();
        let kinds: Vec<&str> = loaded.recipe.qemu.sources.iter().map(|candidate| match candidate {
            Candidate::Git(_) => "git",
            Candidate::Tarball(_) => "tarball",
            Candidate::DebianSource(_) => "debian-source",
            Candidate::Debian(_) => "debian",
            Candidate::Local(_) => "local",
        }).collect();
        assert_eq!(kinds[..3], ["git", "tarball", "debian-source"]);
        assert_eq!(loaded.recipe.qemu.firmware.candidates().len(), 3);

        let error = |from: &str, to: &str| {
            let text = loaded.text.replace(from, to);
            assert_ne!(text, loaded.text, "{from} is not in the recipe");
            parse_source(Path::new("s.yaml"), &text).unwrap_err().to_string()
        };
        assert_eq!(error("sha256: e0517349", "sha256: x0517349"), "s.yaml: qemu.sources[1].tarball.sha256: 64 hex digits");
        assert!(error("version: \"1:10.2.2+ds-1\"", "version: \"--x\"").starts_with("s.yaml: qemu.sources[3].debian-source.version"));
        assert!(error("ref: cxl-2025-06-10", "ref: --upload-pack=x").starts_with("s.yaml: qemu.sources[0].git.ref"));
        assert!(error("packages: [seabios,", "packages: [Seabios,").starts_with("s.yaml: qemu.firmware.packages"));
        assert!(error("stack: source", "stack: distro").starts_with("s.yaml: stack: this is the `source` stack's"));
        // A patch is a file below the recipe's directory (here `.`, where `s.yaml` would be).
        assert!(error("- patches/qemu/0001", "- ../patches/qemu/0001").starts_with("s.yaml: qemu.patches[0]: `../patches/qemu/0001"));
        assert!(parse_source(Path::new("s.yaml"), &loaded.text).unwrap_err().to_string().starts_with("s.yaml: qemu.patches[0]: no patch file patches/qemu/0001"));
        // The distro format refuses the source recipe, naming the unknown field.
        assert!(parse(Path::new("s.yaml"), &loaded.text).unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn the_distro_recipe_serialises_as_before() {
        // No field the source stack added shows up in the distro recipe.
        let text = serde_json::to_string(&parse(Path::new("images/distro.yaml"), GOOD).unwrap()).unwrap();
        assert!(!text.contains("ndctl") && !text.contains("firmware") && !text.contains("version\":null,"), "{text}");
    }

    #[test]
    fn the_checked_in_recipe_parses() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let loaded = load(&images, StackKind::Distro).unwrap();
        assert!(loaded.recipe.rootfs.packages.iter().any(|package| package == "ndctl"));
    }
}
