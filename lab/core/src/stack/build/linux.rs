//! The kernel built from source: the lab's config, then the kernel, its modules and the CXL and
//! NVDIMM test modules (`tools/testing/cxl`, `tools/testing/nvdimm`), as a kernel artifact with
//! the layout of [`kernel`] (`vmlinuz`, `modules/lib/modules/<release>/`, depmod'ed).
//!
//! Configuring ([`configure`]): a base config (`make allnoconfig` for the lab, `defconfig` for the
//! talk's plain recipe), the fragment merged over it (each option the fragment names replaces the
//! base's line, like `scripts/kconfig/merge_config.sh`), `make olddefconfig`, then the result is
//! checked against the fragment ([`verify`]): every option that did not end as asked is reported,
//! and one under `#@ needed` fails the configuration naming it (a trim once dropped 9P_FS
//! silently). The config is made in `.config.lab` and copied over `.config` only when it differs,
//! so configuring an unchanged tree again costs no rebuild.
//!
//! Building ([`build`]): `make` (bzImage and modules), `make M=tools/testing/nvdimm`, `make
//! M=tools/testing/cxl`, then the three `modules_install` into the staging directory and one
//! depmod. The build tree is kept between builds (the caller's, e.g. `Layout::build_tree`): after
//! a change under `drivers/cxl`, make rebuilds only what depends on it. The staging directory
//! gets copies of the outputs, never links into the tree, since make rewrites files in place.
//!
//! The test trees build their own `cxl_core`, `cxl_acpi`, `libnvdimm`, `nfit`, ... (the in-tree
//! sources linked with `--wrap` mocks) and install them under `extra/`; depmod runs with a
//! configuration that searches `extra` before `kernel`, so `modprobe cxl_acpi` loads the
//! mockable build (which behaves as the in-tree driver until `cxl_test` registers its mocks).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use fs_err as fs;

use crate::shell::Shell;
use crate::stack::build::kernel;
use crate::stack::host;
use crate::sys::runner::{CommandRunner, RunError};

/// The lab's fragment, in `templates/`.
pub const LAB_FRAGMENT: &str = "kernel-lab.config";

/// The config file [`configure`] makes before it replaces `.config`.
const LAB_CONFIG: &str = ".config.lab";

/// Where the test trees' modules go below `lib/modules/<release>/` (kbuild's default for M=).
const TEST_MODULE_DIR: &str = "extra";

/// The test trees, in the order they are built and installed (the talk's order).
pub const TEST_TREES: [&str; 2] = ["tools/testing/nvdimm", "tools/testing/cxl"];

/// The config a fragment is merged over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigBase {
    /// Every option off: the fragment says everything the lab's guests need.
    Allnoconfig,
    /// The architecture's default config (the talk's recipe).
    Defconfig,
}

impl ConfigBase {
    pub fn make_target(self) -> &'static str {
        match self {
            ConfigBase::Allnoconfig => "allnoconfig",
            ConfigBase::Defconfig => "defconfig",
        }
    }
}

impl fmt::Display for ConfigBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.make_target())
    }
}

/// How much an option in a fragment matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A lab feature depends on it: configuring fails when it does not end as asked.
    Needed,
    /// Asked for; reported when it does not end as asked.
    Requested,
}

/// One option a fragment sets: `CONFIG_<name>=<value>`, or `n` for `# CONFIG_<name> is not set`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub value: String,
    pub need: Need,
    /// 1-based line in the fragment.
    pub line: usize,
}

/// A parsed fragment: its options (the last value of an option given twice, as kconfig takes it),
/// and what it holds that is not an option line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    pub requests: Vec<Request>,
    /// Lines that are neither an option, a comment nor a section marker (`CONFIG ACPI_NFIT=m`).
    pub malformed: Vec<(usize, String)>,
    /// Options given more than once, with every value in order (`EXT4_FS`: m, y).
    pub repeated: Vec<(String, Vec<String>)>,
}

impl Fragment {
    /// Parses a fragment. Sections: lines after `#@ needed` are [`Need::Needed`], after
    /// `#@ requested` (and before any marker) [`Need::Requested`].
    pub fn parse(text: &str) -> Fragment {
        let mut fragment = Fragment::default();
        let mut need = Need::Requested;
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if let Some(marker) = line.strip_prefix("#@") {
                match marker.trim() {
                    "needed" => need = Need::Needed,
                    "requested" => need = Need::Requested,
                    _ => fragment.malformed.push((index + 1, raw.to_owned())),
                }
                continue;
            }
            let parsed = parse_option_line(line);
            match parsed {
                Some((name, value)) => {
                    seen.entry(name.clone()).or_default().push(value.clone());
                    // Given twice, the last value counts (as in kconfig) and needed stays needed.
                    let was_needed = fragment.requests.iter().any(|request| request.name == name && request.need == Need::Needed);
                    fragment.requests.retain(|request| request.name != name);
                    let need = if was_needed { Need::Needed } else { need };
                    fragment.requests.push(Request { name, value, need, line: index + 1 });
                }
                None if line.is_empty() || line.starts_with('#') => {}
                None => fragment.malformed.push((index + 1, raw.to_owned())),
            }
        }
        fragment.requests.sort_by_key(|request| request.line);
        fragment.repeated = seen.into_iter().filter(|(_, values)| values.len() > 1).collect();
        fragment
    }

    pub fn needed(&self) -> impl Iterator<Item = &Request> {
        self.requests.iter().filter(|request| request.need == Need::Needed)
    }

    /// The fragment as kconfig reads it: one line per option, markers and comments dropped.
    pub fn to_config_lines(&self) -> String {
        self.requests.iter().map(|request| format!("{}\n", config_line(&request.name, &request.value))).collect()
    }
}

/// `CONFIG_X=v` → (X, v); `# CONFIG_X is not set` → (X, n).
fn parse_option_line(line: &str) -> Option<(String, String)> {
    if let Some(rest) = line.strip_prefix("# CONFIG_") {
        let name = rest.strip_suffix(" is not set")?;
        return valid_name(name).then(|| (name.to_owned(), "n".to_owned()));
    }
    let rest = line.strip_prefix("CONFIG_")?;
    let (name, value) = rest.split_once('=')?;
    (valid_name(name) && !value.is_empty()).then(|| (name.to_owned(), value.to_owned()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn config_line(name: &str, value: &str) -> String {
    if value == "n" {
        format!("# CONFIG_{name} is not set")
    } else {
        format!("CONFIG_{name}={value}")
    }
}

/// The options a `.config` sets, by name; `is not set` reads as `n`.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|line| parse_option_line(line.trim())).collect()
}

/// `base` with every option of `fragment` replaced by the fragment's value (appended at the end,
/// as `merge_config.sh` does); kconfig's `olddefconfig` then resolves dependencies.
pub fn merge(base: &str, fragment: &Fragment) -> String {
    let named: std::collections::HashSet<&str> = fragment.requests.iter().map(|request| request.name.as_str()).collect();
    let mut merged: String = base
        .lines()
        .filter(|line| parse_option_line(line.trim()).is_none_or(|(name, _)| !named.contains(name.as_str())))
        .map(|line| format!("{line}\n"))
        .collect();
    merged.push_str("# cxl-lab fragment\n");
    merged.push_str(&fragment.to_config_lines());
    merged
}

/// An option that did not end as its fragment asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    pub name: String,
    pub asked: String,
    /// What `.config` says; `None` when it does not name the option (its dependencies are off,
    /// or this kernel has no such option).
    pub got: Option<String>,
    pub need: Need,
    pub line: usize,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let got = match self.got.as_deref() {
            Some("n") => "is not set".to_owned(),
            Some(value) => format!("is {value}"),
            None => "is absent (its dependencies are off, or this kernel has no such option)".to_owned(),
        };
        write!(f, "CONFIG_{}={} (fragment line {}) {got}", self.name, self.asked, self.line)
    }
}

/// What configuring made: the base, how big the result is, and what did not end as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigReport {
    pub base: ConfigBase,
    /// Options set to `y`.
    pub builtin: usize,
    /// Options set to `m`.
    pub modules: usize,
    /// Every requested or needed option that did not end as asked, in fragment order.
    pub unmet: Vec<Unmet>,
    pub malformed: Vec<(usize, String)>,
    pub repeated: Vec<(String, Vec<String>)>,
    /// Whether `.config` was replaced (a changed config: make rebuilds what depends on it).
    pub changed: bool,
}

impl ConfigReport {
    pub fn needed_unmet(&self) -> impl Iterator<Item = &Unmet> {
        self.unmet.iter().filter(|unmet| unmet.need == Need::Needed)
    }

    /// One line per finding, for the user.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!("base {}: {} options built in, {} modules", self.base, self.builtin, self.modules)];
        notes.extend(self.malformed.iter().map(|(line, text)| format!("fragment line {line} is not an option: `{text}`")));
        notes.extend(self.repeated.iter().map(|(name, values)| format!("CONFIG_{name} is given {} times ({}): the last counts", values.len(), values.join(", "))));
        notes.extend(self.unmet.iter().map(|unmet| match unmet.need {
            Need::Needed => format!("needed {unmet}"),
            Need::Requested => format!("requested {unmet}"),
        }));
        notes
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the kernel config lacks what the lab needs:\n{}\n  config: {config}", list(.unmet))]
    NeededOff { unmet: Vec<Unmet>, config: PathBuf },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn list(unmet: &[Unmet]) -> String {
    unmet.iter().map(|unmet| format!("  {unmet}")).collect::<Vec<_>>().join("\n")
}

/// Checks the final config against the fragment: every option that did not end as asked.
pub fn verify(fragment: &Fragment, config: &BTreeMap<String, String>) -> Vec<Unmet> {
    fragment
        .requests
        .iter()
        .filter_map(|request| {
            let got = config.get(&request.name).cloned();
            let met = match got.as_deref() {
                Some(value) => value == request.value,
                // Absent reads as off to kconfig.
                None => request.value == "n",
            };
            (!met).then(|| Unmet { name: request.name.clone(), asked: request.value.clone(), got, need: request.need, line: request.line })
        })
        .collect()
}

/// What kbuild is told about the build so that building the same source and config twice gives
/// the same bytes: who and where (`KBUILD_BUILD_USER`, `_HOST`), and the build number (kbuild
/// counts builds of a tree in `.version`: `#N` in `uname -v`). Part of the kernel's cache key.
pub const BUILD_IDENTITY: &[(&str, &str)] = &[("KBUILD_BUILD_USER", "cxl-lab"), ("KBUILD_BUILD_HOST", "cxl-lab"), ("KBUILD_BUILD_VERSION", "1")];

/// The test trees are external-module builds (`M=`), whose compiler sees the headers by their
/// absolute path: mapped back to the tree's relative one, as in-tree builds see them, so the
/// modules do not hold where the tree was kept. Part of the kernel's cache key.
pub const TEST_TREE_PATHS: &str = "KCFLAGS=-ffile-prefix-map=<tree>/=";

fn test_tree_paths(tree: &Path) -> String {
    TEST_TREE_PATHS.replace("<tree>", &tree.display().to_string())
}

fn make(tree: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(host::program("make"));
    command.current_dir(tree).envs(BUILD_IDENTITY.iter().copied());
    // The build's date is the source's (its top-level Makefile's time: the tarball's, or the
    // commit's for `git archive`), not today's: it lands in `uname -v` and the built-in initramfs.
    let modified = fs::metadata(tree.join("Makefile"))?.modified()?;
    command.env("KBUILD_BUILD_TIMESTAMP", humantime::format_rfc3339_seconds(modified).to_string());
    Ok(command)
}

fn jobs() -> String {
    format!("-j{}", std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs one make step with a progress line that follows its log.
fn run_step(runner: &CommandRunner, shell: &Shell, step: &str, title: &str, command: &mut Command) -> Result<(), RunError> {
    let progress = shell.step(title);
    progress.follow_log(&runner.log_path(step), || runner.run(step, command))?;
    progress.done("done");
    Ok(())
}

/// Configures `tree`: `base`, the fragment, `olddefconfig`, then [`verify`]. Fails naming every
/// needed option that did not end as asked; `.config` is then left as it was.
pub fn configure(tree: &Path, fragment: &Fragment, base: ConfigBase, runner: &CommandRunner, shell: &Shell) -> Result<ConfigReport, ConfigError> {
    let lab_config = tree.join(LAB_CONFIG);
    let kconfig = |command: &mut Command| {
        command.env("KCONFIG_CONFIG", LAB_CONFIG);
    };
    let mut base_command = make(tree)?;
    base_command.arg(base.make_target());
    kconfig(&mut base_command);
    run_step(runner, shell, "linux-config-base", &format!("make {base}"), &mut base_command)?;
    let base_text = fs::read_to_string(&lab_config).map_err(anyhow::Error::from)?;
    fs::write(&lab_config, merge(&base_text, fragment)).map_err(anyhow::Error::from)?;
    let mut olddefconfig = make(tree)?;
    olddefconfig.arg("olddefconfig");
    kconfig(&mut olddefconfig);
    run_step(runner, shell, "linux-olddefconfig", "make olddefconfig", &mut olddefconfig)?;

    let text = fs::read_to_string(&lab_config).map_err(anyhow::Error::from)?;
    let config = parse_config(&text);
    let unmet = verify(fragment, &config);
    let needed: Vec<Unmet> = unmet.iter().filter(|unmet| unmet.need == Need::Needed).cloned().collect();
    if !needed.is_empty() {
        return Err(ConfigError::NeededOff { unmet: needed, config: lab_config });
    }
    let current = tree.join(".config");
    let changed = std::fs::read_to_string(&current).ok().as_deref() != Some(text.as_str());
    if changed {
        fs::copy(&lab_config, &current).map_err(anyhow::Error::from)?;
    }
    Ok(ConfigReport {
        base,
        builtin: config.values().filter(|value| *value == "y").count(),
        modules: config.values().filter(|value| *value == "m").count(),
        unmet,
        malformed: fragment.malformed.clone(),
        repeated: fragment.repeated.clone(),
        changed,
    })
}

/// A kernel's release, `make -s kernelrelease` (`uname -r` in the guest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRelease(pub String);

impl fmt::Display for KernelRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// depmod's search order for the module tree: the test trees' builds (in [`TEST_MODULE_DIR`])
/// before the in-tree ones.
pub fn depmod_config() -> String {
    format!("search {TEST_MODULE_DIR} updates built-in\n")
}

/// Builds the configured `tree` and fills `staging` as a kernel artifact: `vmlinuz`, `config`,
/// `System.map` and `modules/lib/modules/<release>/` with the kernel's and both test trees'
/// modules, depmod'ed.
pub fn build(staging: &Path, tree: &Path, runner: &CommandRunner, shell: &Shell) -> anyhow::Result<KernelRelease> {
    run_step(runner, shell, "linux-make", "make (kernel and modules)", make(tree)?.arg(jobs()))?;
    for test_tree in TEST_TREES {
        let step = format!("linux-make-{}", test_step(test_tree));
        run_step(runner, shell, &step, &format!("make M={test_tree}"), make(tree)?.arg(jobs()).arg(format!("M={test_tree}")).arg(test_tree_paths(tree)))?;
    }
    let release = KernelRelease(runner.run_capture("linux-kernelrelease", make(tree)?.args(["-s", "kernelrelease"]))?.trim().to_owned());
    anyhow::ensure!(!release.0.is_empty() && !release.0.contains(char::is_whitespace), "make kernelrelease printed {:?}", release.0);
    install(staging, tree, &release, runner, shell)?;
    Ok(release)
}

fn test_step(test_tree: &str) -> &str {
    test_tree.rsplit('/').next().unwrap_or(test_tree)
}

/// Copies the outputs of a built tree into `staging` and indexes the modules.
fn install(staging: &Path, tree: &Path, release: &KernelRelease, runner: &CommandRunner, shell: &Shell) -> anyhow::Result<()> {
    fs::create_dir_all(staging)?;
    fs::copy(tree.join("arch/x86/boot/bzImage"), kernel::vmlinuz_path(staging))?;
    fs::copy(tree.join(".config"), staging.join("config"))?;
    fs::copy(tree.join("System.map"), staging.join("System.map"))?;
    let modules_root = staging.join("modules");
    let install_path = format!("INSTALL_MOD_PATH={}", modules_root.display());
    // One depmod at the end, with the lab's search order, instead of one per install.
    let no_depmod = "DEPMOD=true";
    let mut targets: Vec<Option<&str>> = vec![None];
    targets.extend(TEST_TREES.iter().map(|tree| Some(*tree)));
    for test_tree in targets {
        let mut command = make(tree)?;
        command.args([install_path.as_str(), no_depmod, "INSTALL_MOD_STRIP=1"]);
        let step = match test_tree {
            Some(test_tree) => {
                command.arg(format!("M={test_tree}")).arg(format!("INSTALL_MOD_DIR={TEST_MODULE_DIR}"));
                format!("linux-install-{}", test_step(test_tree))
            }
            None => "linux-install-modules".to_owned(),
        };
        command.arg("modules_install");
        run_step(runner, shell, &step, &format!("install modules{}", test_tree.map(|t| format!(" of {t}")).unwrap_or_default()), &mut command)?;
    }
    let modules = kernel::modules_release_dir(staging, &release.0);
    // `build` points into the build tree: nothing the guest can follow, nor the artifact keep.
    for link in ["build", "source"] {
        let path = modules.join(link);
        if path.symlink_metadata().is_ok() {
            fs::remove_file(&path)?;
        }
    }
    let depmod_conf = staging.join("depmod.conf");
    fs::write(&depmod_conf, depmod_config())?;
    runner.run(
        &format!("depmod-{release}"),
        Command::new(host::program("depmod")).arg("-C").arg(&depmod_conf).arg("-b").arg(&modules_root).arg(&release.0),
    )?;
    fs::remove_file(&depmod_conf)?;
    anyhow::ensure!(modules.join("modules.dep").is_file(), "depmod wrote no modules.dep in {}", modules.display());
    Ok(())
}

/// The release of a built kernel artifact: the one directory its module tree holds.
pub fn release_of(artifact: &Path) -> anyhow::Result<String> {
    let share = crate::stack::build::kernel::modules_share_dir(artifact);
    let mut releases: Vec<String> =
        fs::read_dir(&share)?.filter_map(|entry| entry.ok()).map(|entry| entry.file_name().to_string_lossy().into_owned()).collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        count => anyhow::bail!("{} holds {count} kernel releases, not one", share.display()),
    }
}

/// Unpacks a kernel source tarball into `tree` (its top directory stripped), unless `tree` is
/// already unpacked: a kept build tree is reused. Unpacks beside it and renames, so a killed
/// unpack leaves no half tree behind under the tree's name.
pub fn unpack_tree(tarball: &Path, tree: &Path, runner: &CommandRunner) -> anyhow::Result<bool> {
    if tree.join("Makefile").is_file() {
        return Ok(false);
    }
    let parent = tree.parent().context("a build tree has a parent directory")?;
    fs::create_dir_all(parent)?;
    let name = tree.file_name().context("a build tree has a name")?.to_string_lossy().into_owned();
    let partial = parent.join(format!("{name}.unpacking"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    runner.run(
        &format!("unpack-{name}"),
        Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&partial).arg("--strip-components=1"),
    )?;
    anyhow::ensure!(partial.join("Makefile").is_file(), "{} holds no kernel tree (no top-level Makefile)", tarball.display());
    fs::rename(&partial, tree)?;
    Ok(true)
}

/// The kernel source tarball a `linux-source-<version>` package unpacked into `dir` carries.
pub fn source_tarball_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let src = dir.join("usr/src");
    let mut found: Vec<PathBuf> = fs::read_dir(&src)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("linux-source-") && name.to_string_lossy().contains(".tar")))
        .collect();
    found.sort();
    found.pop().with_context(|| format!("no linux-source-*.tar.* in {}", src.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TALK: &str = include_str!("../../../tests/data/talk-kernel.config");
    const LAB: &str = include_str!("../../../../../templates/kernel-lab.config");

    #[test]
    fn test_trees_see_the_tree_by_its_relative_path() {
        assert_eq!(test_tree_paths(Path::new("/cache/trees/linux-1")), "KCFLAGS=-ffile-prefix-map=/cache/trees/linux-1/=");
    }

    #[test]
    fn the_talks_fragment_has_its_two_faults_found() {
        let fragment = Fragment::parse(TALK);
        assert_eq!(fragment.malformed, [(36, "CONFIG ACPI_NFIT=m".to_owned())]);
        assert_eq!(fragment.repeated, [("EXT4_FS".to_owned(), vec!["m".to_owned(), "y".to_owned()])]);
        let ext4: Vec<&Request> = fragment.requests.iter().filter(|request| request.name == "EXT4_FS").collect();
        assert_eq!(ext4.len(), 1);
        assert_eq!(ext4[0].value, "y");
        assert!(fragment.requests.iter().all(|request| request.need == Need::Requested));
    }

    #[test]
    fn the_labs_fragment_is_clean_and_marks_what_it_needs() {
        let fragment = Fragment::parse(LAB);
        assert_eq!(fragment.malformed, []);
        assert_eq!(fragment.repeated, []);
        let needed: Vec<&str> = fragment.needed().map(|request| request.name.as_str()).collect();
        for name in ["9P_FS", "NET_9P_VIRTIO", "VIRTIO_BLK", "EXT4_FS", "CXL_BUS", "CXL_PORT", "CXL_REGION_INVALIDATION_TEST", "DEBUG_FS"] {
            assert!(needed.contains(&name), "{name} is not needed");
        }
        let value = |name: &str| fragment.requests.iter().find(|request| request.name == name).map(|request| request.value.as_str());
        assert_eq!(value("CXL_BUS"), Some("m"));
        assert_eq!(value("CXL_PORT"), Some("m"));
        assert_eq!(value("EXT4_FS"), Some("y"));
        assert_eq!(value("ACPI_NFIT"), Some("m"));
        assert_eq!(fragment.requests.iter().find(|request| request.name == "NET_DEVMEM").map(|request| request.need), Some(Need::Requested));
    }

    #[test]
    fn sections_and_not_set() {
        let fragment = Fragment::parse("CONFIG_A=y\n#@ needed\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n#@ requested\nCONFIG_D=m\n#@ bogus\n# a comment\n#CONFIG_E=y\n");
        let got: Vec<(&str, &str, Need)> = fragment.requests.iter().map(|r| (r.name.as_str(), r.value.as_str(), r.need)).collect();
        assert_eq!(got, [("A", "y", Need::Requested), ("B", "n", Need::Needed), ("C", "\"x y\"", Need::Needed), ("D", "m", Need::Requested)]);
        // A commented-out option is a comment; an unknown marker is reported.
        assert_eq!(fragment.malformed, [(7, "#@ bogus".to_owned())]);
        // Needed once, needed always: a later `requested` line cannot demote it.
        let twice = Fragment::parse("#@ needed\nCONFIG_A=y\n#@ requested\nCONFIG_A=y\n");
        assert_eq!(twice.requests[0].need, Need::Needed);
    }

    #[test]
    fn merge_replaces_the_bases_lines() {
        let base = "#\n# Automatically generated\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n";
        let fragment = Fragment::parse("CONFIG_B=y\n# CONFIG_C is not set\nCONFIG_NEW=m\n");
        let merged = merge(base, &fragment);
        let config = parse_config(&merged);
        assert_eq!(config.get("A").map(String::as_str), Some("y"));
        assert_eq!(config.get("B").map(String::as_str), Some("y"));
        assert_eq!(config.get("C").map(String::as_str), Some("n"));
        assert_eq!(config.get("NEW").map(String::as_str), Some("m"));
        assert_eq!(merged.matches("CONFIG_B").count(), 1, "{merged}");
        assert!(merged.starts_with("#\n# Automatically generated\nCONFIG_A=y\n"), "{merged}");
    }

    #[test]
    fn verify_lists_what_did_not_end_as_asked() {
        let fragment = Fragment::parse("CONFIG_DAX=m\nCONFIG_DEV_DAX_HMEM=y\n#@ needed\nCONFIG_9P_FS=y\nCONFIG_CXL_BUS=m\n# CONFIG_DRM is not set\n");
        let config = parse_config("CONFIG_DAX=y\nCONFIG_DEV_DAX_HMEM=m\nCONFIG_CXL_BUS=m\n# CONFIG_9P_FS is not set\n");
        let unmet = verify(&fragment, &config);
        let shown: Vec<String> = unmet.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "CONFIG_DAX=m (fragment line 1) is y",
                "CONFIG_DEV_DAX_HMEM=y (fragment line 2) is m",
                "CONFIG_9P_FS=y (fragment line 4) is not set",
            ]
        );
        assert_eq!(unmet.iter().filter(|unmet| unmet.need == Need::Needed).count(), 1);
        // An option absent from the config is off: asking for off is met, asking for on is not.
        let absent = verify(&Fragment::parse("#@ needed\nCONFIG_GONE=y\n"), &config);
        assert_eq!(absent[0].got, None);
        assert!(absent[0].to_string().contains("is absent"), "{}", absent[0]);
    }

    #[test]
    fn a_needed_option_off_fails_naming_it() {
        let unmet = verify(&Fragment::parse("#@ needed\nCONFIG_9P_FS=y\n"), &parse_config("# CONFIG_9P_FS is not set\n"));
        let error = ConfigError::NeededOff { unmet, config: PathBuf::from("/tree/.config.lab") }.to_string();
        assert!(error.contains("CONFIG_9P_FS=y (fragment line 2) is not set"), "{error}");
        assert!(error.contains("/tree/.config.lab"), "{error}");
    }
}
