//! Recipes in `images/`: where each piece of a stack comes from and how it is put together.
//!
//! A recipe is a YAML file (`images/distro.yaml`) parsed once into [`StackRecipe`]; errors name
//! the file, line, column and field. Everything downstream trusts the parsed recipe. The format is
//! documented in `docs/images.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::Candidate;

/// The suite word that means "the host release's backports" (`bookworm-backports` on bookworm).
pub const HOST_BACKPORTS: &str = "host-backports";
/// The suite word that means "the host's own release" (`bookworm` on bookworm).
pub const HOST_RELEASE: &str = "host";

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: u64, column: u64, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// One stack's recipe: QEMU, kernel, initramfs, root filesystem.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackRecipe {
    /// The stack this recipe builds (`distro`).
    pub stack: String,
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
    pub minimum_version: Option<String>,
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

/// A recipe as read from disk: the parsed form and its exact text (the text feeds cache keys).
#[derive(Clone, Debug)]
pub struct LoadedRecipe {
    pub path: PathBuf,
    pub text: String,
    pub recipe: StackRecipe,
}

/// The recipe file of a stack: `images/<stack>.yaml`.
pub fn recipe_path(images_dir: &Path, stack: &str) -> PathBuf {
    images_dir.join(format!("{stack}.yaml"))
}

/// Reads and validates `images/<stack>.yaml`.
pub fn load(images_dir: &Path, stack: &str) -> Result<LoadedRecipe, RecipeError> {
    let path = recipe_path(images_dir, stack);
    let text = std::fs::read_to_string(&path).map_err(|source| RecipeError::Read { path: path.clone(), source })?;
    let recipe = parse(&path, &text)?;
    Ok(LoadedRecipe { path, text, recipe })
}

/// Parses recipe text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<StackRecipe, RecipeError> {
    let recipe: StackRecipe = serde_saphyr::from_str(text).map_err(|error| {
        let (line, column) = error.location().map(|location| (location.line(), location.column())).unwrap_or((0, 0));
        let message = first_line(&error.to_string());
        let message = match field_path_at(text, line) {
            Some(field) if !message.contains(&field) => format!("{field}: {message}"),
            _ => message,
        };
        RecipeError::Parse { path: path.to_path_buf(), line, column, message }
    })?;
    validate(path, &recipe)?;
    Ok(recipe)
}

/// serde-saphyr renders a snippet under its message and repeats the position before it; the
/// message itself is what we quote, after our own `file:line:column`.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, rest)) if position.contains(" column ") => rest.to_owned(),
        _ => line.to_owned(),
    }
}

/// The dotted key path of the mapping entry on `line` (1-based), from indentation: serde-saphyr
/// knows where an error is but not always which field it is in.
fn field_path_at(text: &str, line: u64) -> Option<String> {
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
    Some(path.join("."))
}

fn validate(path: &Path, recipe: &StackRecipe) -> Result<(), RecipeError> {
    let invalid = |field: &str, message: &str| RecipeError::Invalid {
        path: path.to_path_buf(),
        field: field.to_owned(),
        message: message.to_owned(),
    };
    if recipe.stack != "distro" {
        return Err(invalid("stack", "only the `distro` stack is built from recipes so far"));
    }
    for (field, sources) in [
        ("qemu.sources", &recipe.qemu.sources),
        ("kernel.sources", &recipe.kernel.sources),
        ("initramfs.busybox", &recipe.initramfs.busybox),
    ] {
        if sources.is_empty() {
            return Err(invalid(field, "lists no source"));
        }
    }
    if recipe.initramfs.modules.is_empty() {
        return Err(invalid("initramfs.modules", "lists no module: the root could not be mounted"));
    }
    if recipe.rootfs.packages.iter().any(|package| package.contains([',', ' '])) {
        return Err(invalid("rootfs.packages", "one package a list item, without commas or spaces"));
    }
    if recipe.rootfs.hostname.is_empty() || !recipe.rootfs.hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(invalid("rootfs.hostname", "letters, digits and `-` only"));
    }
    if let Some(minimum) = &recipe.qemu.minimum_version {
        if parse_major_minor(minimum).is_none() {
            return Err(invalid("qemu.minimum_version", "expected `major.minor`, e.g. `8.1`"));
        }
    }
    Ok(())
}

pub fn parse_major_minor(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
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
        assert_eq!(error, "images/distro.yaml: rootfs.packages: one package a list item, without commas or spaces");
    }

    #[test]
    fn the_checked_in_recipe_parses() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let loaded = load(&images, "distro").unwrap();
        assert!(loaded.recipe.rootfs.packages.iter().any(|package| package == "ndctl"));
    }
}
