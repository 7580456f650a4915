//! The `source` stack: QEMU, the kernel and ndctl built from the first source of
//! `images/source.yaml` that answers.
//!
//! Like the distro stack, per component: the lock entry (or resolution through the candidates,
//! then `images/source.lock` is updated), the cache key from the pins and the build options, a
//! cache lookup, and only on a miss a fetch and a build. A warm run with a lock reads the recipe,
//! the lock and the artifact's manifest and stamp, and spawns nothing. `--locked` refuses to
//! resolve; a locked pin that is no longer served is resolved again (with a warning) unless
//! `--locked`.
//!
//! - [`resolve`] answers every kind of candidate ([`git`], [`tarball`], Debian source and binary
//!   packages, local trees), fetches a pin's files and unpacks its tree;
//! - [`ensure_source_qemu`] builds QEMU (`build::qemu`) with the firmware of Debian's packages;
//! - [`ensure_source_kernel`] the kernel with the lab's fragment (`build::linux`);
//! - [`ensure_source_ndctl`] ndctl with its tests (`build::ndctl`), in a chroot of a copy of the
//!   distro stack's debootstrapped tree. Not yet laid into the root image a lab boots.
//!
//! Each is a [`SourceComponent`] (its lock name and its recipe candidates), pinned with
//! [`Session::pinned`] and fetched with [`Session::fetched`].

pub mod git;
pub mod patches;
pub mod resolve;
pub mod tarball;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde_json::json;

use self::patches::SourcePatch;

use crate::layout::Layout;
use crate::qemu::QemuVersion;
use crate::shell::Shell;
use crate::stack::build::linux::{self, ConfigBase, Fragment};
use crate::stack::build::rootfs::RootOverlay;
use crate::stack::build::{kernel, ndctl as ndctl_build, qemu as qemu_build, rootfs};
use crate::stack::distro;
use crate::stack::cache::{ArtifactKind, Cache, CacheKey};
use crate::stack::debian::DebianResolver;
use crate::stack::session::{RecipeRun, StackOptions, StackRun};
use crate::stack::host;
use crate::stack::lock::{self, ComponentLock, StackLock};
use crate::stack::recipe::{self, LoadedRecipe, SourceRecipe};
use crate::stack::sources::{self, Candidate, Pin, Resolution, SourceError};
use crate::stack::StackKind;

use self::resolve::SourceResolver;

/// What the source stack resolves, by its name in the lock (`sources.<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceComponent {
    /// QEMU's source tree.
    Qemu,
    /// The ROM packages QEMU's build is given (all of them, from one suite).
    QemuFirmware,
    /// The kernel's source tree (`build::linux`).
    Kernel,
    /// ndctl's source tree (`build::ndctl`).
    Ndctl,
}

impl SourceComponent {
    pub const ALL: [SourceComponent; 4] = [SourceComponent::Qemu, SourceComponent::QemuFirmware, SourceComponent::Kernel, SourceComponent::Ndctl];

    pub fn name(self) -> &'static str {
        match self {
            SourceComponent::Qemu => "qemu",
            SourceComponent::QemuFirmware => "qemu-firmware",
            SourceComponent::Kernel => "kernel",
            SourceComponent::Ndctl => "ndctl",
        }
    }

    /// As a sentence names it.
    pub fn display_name(self) -> &'static str {
        match self {
            SourceComponent::Qemu => "QEMU's source",
            SourceComponent::QemuFirmware => "QEMU's firmware",
            SourceComponent::Kernel => "the kernel's source",
            SourceComponent::Ndctl => "ndctl's source",
        }
    }

    /// The recipe's candidates for it, in order (the firmware's: every package, all needed).
    pub fn candidates(self, recipe: &SourceRecipe) -> Vec<Candidate> {
        match self {
            SourceComponent::Qemu => recipe.qemu.sources.clone(),
            SourceComponent::QemuFirmware => recipe.qemu.firmware.candidates(),
            SourceComponent::Kernel => recipe.kernel.sources.clone(),
            SourceComponent::Ndctl => recipe.ndctl.sources.clone(),
        }
    }
}

/// A QEMU built from source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceQemu {
    pub binary: PathBuf,
    pub version: QemuVersion,
    /// QEMU's data directory with the firmware: what `-L` takes (QEMU finds it by itself).
    pub firmware_dir: PathBuf,
    pub artifact: PathBuf,
}

/// A kernel built from source with the lab's config (`build::linux`), in the distro kernel's
/// artifact layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceKernel {
    pub vmlinuz: PathBuf,
    /// Served as the 9p tag `modshare`; holds `<release>/` with the test trees' modules.
    pub modules_dir: PathBuf,
    pub release: String,
    pub artifact: PathBuf,
    /// The artifact's key: what an initramfs for this kernel is keyed by.
    pub key: CacheKey,
}

/// ndctl built with its tests for the guests' root filesystem (`build::ndctl`): the source
/// stack's image is the distro stack's with `root` laid over it (the distro recipe installs meson
/// and the libraries the build and its tests use), so `meson test --suite cxl` runs in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceNdctl {
    /// The tree to lay over the guest's root (`usr/bin/ndctl`, `usr/bin/cxl`, ...).
    pub root: PathBuf,
    /// The meson build directory with the test binaries (`/usr/src/ndctl/build` in the guest).
    pub tests: PathBuf,
    /// What `ndctl --version` printed.
    pub version: String,
    pub artifact: PathBuf,
    pub key: CacheKey,
}

impl SourceNdctl {
    /// What the source stack lays over the root filesystem.
    pub fn overlay(&self) -> RootOverlay {
        RootOverlay { name: format!("ndctl {}", self.version), root: self.root.clone(), key: self.key.clone() }
    }
}

/// The config the kernel is built with: the lab's fragment over `allnoconfig`.
const KERNEL_BASE: ConfigBase = ConfigBase::Allnoconfig;

/// What a run built, and what it said on the way.
#[derive(Clone, Debug)]
pub struct Built<T> {
    pub artifact: T,
    /// Which candidate each component came from and why others were skipped, one line each.
    pub notes: Vec<String>,
    /// Seconds per stage in this run (empty when everything was cached).
    pub timings: Vec<(String, f64)>,
}

/// Host programs QEMU's build runs (besides apt's, which resolve and download).
const QEMU_TOOLS: &[&str] = &["apt-get", "dpkg-deb"];

/// QEMU from the recipe's first source that answers, built on a miss.
pub fn ensure_source_qemu(paths: &Layout, shell: &Shell, options: &StackOptions) -> anyhow::Result<Built<SourceQemu>> {
    let programs: Vec<&str> = QEMU_TOOLS.iter().copied().chain(host::SOURCE_BUILD_TOOLS.iter().map(|tool| tool.program)).collect();
    run_session(paths, shell, options, &programs, |session| session.qemu())
}

/// Opens a session (checking the host programs `programs`), makes one artifact with `make`, saves
/// the lock, and returns the artifact with the run's notes and timings.
fn run_session<T>(
    paths: &Layout,
    shell: &Shell,
    options: &StackOptions,
    programs: &[&str],
    make: impl FnOnce(&mut Session<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<Built<T>> {
    let mut session = Session::open(paths, shell, options, programs)?;
    let artifact = make(&mut session)?;
    session.save_lock()?;
    Ok(Built { artifact, notes: session.run.notes, timings: session.run.timings })
}

/// The kernel from the recipe's first source that answers, configured with the lab's fragment and
/// built on a miss (in a build tree kept under `<cache>/trees/`, so a rebuild is incremental).
pub fn ensure_source_kernel(paths: &Layout, shell: &Shell, options: &StackOptions) -> anyhow::Result<Built<SourceKernel>> {
    let programs: Vec<&str> = KERNEL_TOOLS.iter().copied().chain(host::SOURCE_BUILD_TOOLS.iter().map(|tool| tool.program)).collect();
    run_session(paths, shell, options, &programs, |session| session.kernel())
}

/// ndctl from the recipe's first source that answers, built on a miss in a chroot of a copy of the
/// distro stack's debootstrapped tree (built first if missing), with its tests.
pub fn ensure_source_ndctl(paths: &Layout, shell: &Shell, options: &StackOptions) -> anyhow::Result<Built<SourceNdctl>> {
    // The tree (27k files to check) is looked at only when ndctl must be built.
    let tree_key = distro::rootfs_tree_key(paths)?;
    let mut tree_timings = Vec::new();
    let mut tree = || {
        let tree = distro::ensure_rootfs_tree(paths, shell, options)?;
        tree_timings = tree.timings;
        Ok(tree.artifact)
    };
    let mut built = run_session(paths, shell, options, NDCTL_TOOLS, |session| session.ndctl(&tree_key, &mut tree))?;
    built.timings.splice(0..0, tree_timings);
    Ok(built)
}

/// Host programs ndctl's fetch and build run (the compilers are the chroot's).
const NDCTL_TOOLS: &[&str] = &["apt-get", "dpkg-deb", "tar", "unshare", "chroot"];

/// The ndctl artifact's key: its source, the tree it is built against and the meson options.
pub fn ndctl_key(source: &Pin, tree_key: &CacheKey) -> CacheKey {
    CacheKey::of(
        ArtifactKind::Ndctl,
        &json!({ "source": source, "tree": tree_key, "meson": ndctl_build::MESON_OPTIONS, "packages": ndctl_build::BUILD_PACKAGES, "left_out": ndctl_build::BUILD_LOGS, "meson_launcher": ndctl_build::MESON_LAUNCHER }),
    )
}

/// Host programs the kernel's fetch and install run (besides the build tools).
const KERNEL_TOOLS: &[&str] = &["apt-get", "dpkg-deb", "depmod", "tar"];

/// The kernel artifact's key: its source, the base config and the lab's fragment.
pub fn kernel_key(source: &Pin, fragment: &str) -> CacheKey {
    CacheKey::of(ArtifactKind::Kernel, &json!({ "source": source, "base": KERNEL_BASE, "fragment": fragment, "identity": linux::BUILD_IDENTITY, "test_tree_paths": linux::TEST_TREE_PATHS }))
}

/// The kept build tree of a kernel source (`<cache>/trees/<name>`): one per source and base config,
/// so a new fragment reconfigures the same tree and rebuilds only what changed.
pub fn kernel_tree_name(source: &Pin, base: ConfigBase) -> String {
    format!("linux-{}", CacheKey::of(ArtifactKind::Kernel, &json!({ "tree": source, "base": base })).short())
}

/// Cache entries and downloads the source recipe and lock point at (for `cache ls` and `gc`);
/// empty when there is no `images/source.yaml`. Reads no network and builds nothing.
pub fn referenced_artifacts(paths: &Layout) -> anyhow::Result<HashSet<String>> {
    let mut names = HashSet::new();
    if !recipe::recipe_path(&paths.images_dir(), StackKind::Source).is_file() {
        return Ok(names);
    }
    let recipe = recipe::load_source(&paths.images_dir())?;
    let lock = StackLock::read(&lock::lock_path(&paths.images_dir(), StackKind::Source))?.unwrap_or_else(|| StackLock::empty(StackKind::Source));
    let pinned = |component: SourceComponent| locked(&lock, &recipe, component);
    for component in SourceComponent::ALL {
        if let Some(pin) = pinned(component) {
            names.extend(resolve::download_names(&pin).into_iter().map(|name| format!("downloads/{name}")));
        }
    }
    if let (Some(source), Some(firmware)) = (pinned(SourceComponent::Qemu), pinned(SourceComponent::QemuFirmware)) {
        let patches = patches::read(&paths.images_dir(), &recipe.recipe.qemu.patches)?;
        names.insert(Cache::artifact_name(ArtifactKind::Qemu, &qemu_key(&source, &firmware, &patches)));
    }
    if let Some(source) = pinned(SourceComponent::Ndctl) {
        let ndctl = ndctl_key(&source, &distro::rootfs_tree_key(paths)?);
        names.insert(Cache::artifact_name(ArtifactKind::Rootfs, &distro::overlaid_rootfs_key(paths, &ndctl)?));
        names.insert(Cache::artifact_name(ArtifactKind::Ndctl, &ndctl));
    }
    if let Some(source) = pinned(SourceComponent::Kernel) {
        names.insert(format!("trees/{}", kernel_tree_name(&source, KERNEL_BASE)));
        if let Ok(fragment) = std::fs::read_to_string(paths.templates_dir().join(linux::LAB_FRAGMENT)) {
            names.insert(Cache::artifact_name(ArtifactKind::Kernel, &kernel_key(&source, &fragment)));
        }
    }
    Ok(names)
}

/// The lock's pin of `component`, if its entry answers the recipe's candidates.
fn locked(lock: &StackLock, recipe: &LoadedRecipe<SourceRecipe>, component: SourceComponent) -> Option<Pin> {
    let entry = lock.sources.get(component.name())?;
    (entry.candidates == lock::candidates_digest(&component.candidates(&recipe.recipe))).then(|| entry.pin.clone())
}

/// What ndctl's `--version` says: the upstream version of a Debian pin (`81` of `81-1`), a
/// commit's first 12 digits, else `source`.
fn ndctl_version_tag(source: &Pin) -> String {
    match source {
        Pin::DebianSource(pin) => {
            let upstream = pin.version.rsplit_once('-').map_or(pin.version.as_str(), |(upstream, _)| upstream);
            upstream.rsplit_once(':').map_or(upstream, |(_, version)| version).to_owned()
        }
        Pin::Git { commit, .. } => commit.chars().take(12).collect(),
        _ => "source".to_owned(),
    }
}

/// The QEMU artifact's key: its source, the lab's patches, its firmware and how it is configured
/// (without patches, the key of a QEMU built before patches existed).
pub fn qemu_key(source: &Pin, firmware: &Pin, patches: &[SourcePatch]) -> CacheKey {
    let mut inputs = json!({ "source": source, "firmware": firmware, "configure": qemu_build::CONFIGURE_OPTIONS, "programs": qemu_build::PROGRAMS, "paths": qemu_build::RELATIVE_PATHS });
    if !patches.is_empty() {
        inputs["patches"] = json!(patches);
    }
    CacheKey::of(ArtifactKind::Qemu, &inputs)
}

/// One run over the source stack.
pub type Session<'a> = RecipeRun<'a, SourceRecipe>;

impl<'a> Session<'a> {
    /// Loads recipe and lock and makes sure the host programs `programs` are there.
    pub fn open(paths: &Layout, shell: &'a Shell, options: &'a StackOptions, programs: &[&str]) -> anyhow::Result<Session<'a>> {
        let recipe = recipe::load_source(&paths.images_dir())?;
        let run = StackRun::open(paths, shell, options, StackKind::Source)?;
        host::ensure_tools(StackKind::Source, programs, &run.cache.layout.apt_dir(), &recipe.recipe.archive, &run.runner, shell)?;
        Ok(Session { run, recipe })
    }

    /// Which candidate each component resolved so far came from, and why others were skipped.
    pub fn notes(&self) -> &[String] {
        &self.run.notes
    }

    /// `component`'s pin from the lock when its entry answers the recipe, else resolved now
    /// (which fetches it) and pinned.
    pub fn pinned(&mut self, component: SourceComponent) -> anyhow::Result<Pin> {
        match locked(&self.lock, &self.recipe, component) {
            Some(pin) => Ok(pin),
            None => self.resolve(component),
        }
    }

    fn resolve(&mut self, component: SourceComponent) -> anyhow::Result<Pin> {
        self.refuse_if_locked(component.display_name())?;
        let candidates = component.candidates(&self.recipe.recipe);
        let progress = self.shell.step(&format!("resolving and downloading {}", component.display_name()));
        let archive = self.recipe.recipe.archive.clone();
        let pin = match component {
            SourceComponent::QemuFirmware => {
                // Every package is needed: one resolution each, one pin for all.
                let mut resolver = DebianResolver::new(&self.run.cache, &self.run.runner, &archive)?;
                resolver.progress = Some(&progress);
                let mut suite = String::new();
                let mut packages = Vec::new();
                for candidate in &candidates {
                    let resolved = sources::first_available(component.name(), std::slice::from_ref(candidate), &mut resolver)?;
                    if let Pin::Debian { suite: answered, packages: more } = resolved.resolution.pin {
                        suite = answered;
                        packages.extend(more);
                    }
                    self.run.notes.extend(resolved.notes);
                }
                Pin::Debian { suite, packages }
            }
            SourceComponent::Qemu | SourceComponent::Kernel | SourceComponent::Ndctl => {
                let mut resolver = SourceResolver::new(&self.run.cache, &self.run.runner, &archive)?;
                resolver.progress = Some(&progress);
                let resolved = sources::first_available(component.name(), &candidates, &mut resolver)?;
                self.notes.extend(resolved.notes);
                let Resolution { pin, .. } = resolved.resolution;
                pin
            }
        };
        progress.done(&pin);
        let entry = ComponentLock { candidates: lock::candidates_digest(&candidates), pin: pin.clone() };
        self.lock.sources.insert(component.name().to_owned(), entry);
        Ok(pin)
    }

    /// Makes sure `pin`'s files are in the cache, returning the Debian binary packages' files.
    /// When a locked pin is no longer served (and not `--locked`), its entry leaves the lock and
    /// `None` says: resolve again.
    pub fn fetched(&mut self, component: SourceComponent, pin: &Pin) -> anyhow::Result<Option<Vec<PathBuf>>> {
        let progress = self.shell.step(&format!("fetching {}", component.display_name()));
        match resolve::fetch(&self.cache, &self.runner, pin, Some(&progress)) {
            Ok(files) => {
                progress.done(pin);
                Ok(Some(files))
            }
            Err(SourceError::Unavailable(reason)) if !self.options.locked && !self.re_resolved => {
                drop(progress);
                self.shell.warn(format!("the locked {} is no longer served ({reason}); resolving it again", component.display_name()));
                self.re_resolved = true;
                self.lock.sources.remove(component.name());
                Ok(None)
            }
            Err(error) => Err(self.cache.note_if_full(error.into())).with_context(|| format!("fetching {} as locked ({pin})", component.display_name())),
        }
    }

    /// QEMU: source and firmware pinned, then the artifact (built on a miss).
    fn qemu(&mut self) -> anyhow::Result<SourceQemu> {
        let source = self.pinned(SourceComponent::Qemu)?;
        let firmware = self.pinned(SourceComponent::QemuFirmware)?;
        self.save_lock()?;
        let patches = patches::read(&self.cache.layout.images_dir(), &self.recipe.recipe.qemu.patches)?;
        let key = qemu_key(&source, &firmware, &patches);
        let artifact = match self.lookup(ArtifactKind::Qemu, &key)? {
            Some(path) => path,
            None => {
                let Some(_) = self.fetched(SourceComponent::Qemu, &source)? else { return self.qemu() };
                let Some(firmware_debs) = self.fetched(SourceComponent::QemuFirmware, &firmware)? else { return self.qemu() };
                self.build_qemu(&source, &patches, &firmware_debs, &key)?
            }
        };
        self.hold_artifact(ArtifactKind::Qemu, &key)?;
        let version = qemu_build::recorded_version(&artifact)?;
        if let Some(minimum) = self.recipe.recipe.qemu.minimum_version {
            if version < minimum {
                bail!("QEMU {version} built from {source} is older than the {} the recipe asks for (qemu.minimum_version)", minimum.major_minor());
            }
        }
        let patched = patches.iter().map(|patch| patch.name.as_str()).collect::<Vec<_>>();
        let patched = if patched.is_empty() { String::new() } else { format!(", patched with {}", patched.join(", ")) };
        self.notes.push(format!("qemu: {version} from {source}{patched}, firmware from {firmware}"));
        Ok(SourceQemu { binary: qemu_build::binary_path(&artifact), version, firmware_dir: qemu_build::firmware_dir(&artifact), artifact })
    }

    /// The kernel: its source pinned, then the artifact (configured and built on a miss).
    fn kernel(&mut self) -> anyhow::Result<SourceKernel> {
        let source = self.pinned(SourceComponent::Kernel)?;
        self.save_lock()?;
        let fragment_path = self.cache.layout.templates_dir().join(linux::LAB_FRAGMENT);
        let fragment = fs_err::read_to_string(&fragment_path)?;
        let key = kernel_key(&source, &fragment);
        let artifact = match self.lookup(ArtifactKind::Kernel, &key)? {
            Some(path) => path,
            None => {
                let Some(_) = self.fetched(SourceComponent::Kernel, &source)? else { return self.kernel() };
                self.build_kernel(&source, &fragment, &key)?
            }
        };
        self.hold_artifact(ArtifactKind::Kernel, &key)?;
        let release = linux::release_of(&artifact)?;
        self.notes.push(format!("kernel: {release} from {source}, {} over {}", linux::LAB_FRAGMENT, KERNEL_BASE.make_target()));
        Ok(SourceKernel { vmlinuz: kernel::vmlinuz_path(&artifact), modules_dir: kernel::modules_share_dir(&artifact), release, artifact, key })
    }

    /// ndctl: its source pinned, then the artifact (built on a miss against the tree `tree` gives).
    fn ndctl(&mut self, tree_key: &CacheKey, tree: &mut dyn FnMut() -> anyhow::Result<PathBuf>) -> anyhow::Result<SourceNdctl> {
        let source = self.pinned(SourceComponent::Ndctl)?;
        self.save_lock()?;
        let key = ndctl_key(&source, tree_key);
        let artifact = match self.lookup(ArtifactKind::Ndctl, &key)? {
            Some(path) => path,
            None => {
                let Some(_) = self.fetched(SourceComponent::Ndctl, &source)? else { return self.ndctl(tree_key, tree) };
                self.build_ndctl(&source, &tree()?, &key)?
            }
        };
        self.hold_artifact(ArtifactKind::Ndctl, &key)?;
        let version = fs_err::read_to_string(ndctl_build::version_file(&artifact))?.trim().to_owned();
        self.notes.push(format!("ndctl: {version} from {source}, {}", ndctl_build::MESON_OPTIONS.join(" ")));
        self.notes.push("ndctl: libcxlmi and mctp have no source reachable here; nothing built needs them yet".to_owned());
        Ok(SourceNdctl { root: ndctl_build::root_dir(&artifact), tests: ndctl_build::build_dir(&artifact), version, artifact, key })
    }

    fn build_ndctl(&mut self, source: &Pin, tree_artifact: &Path, key: &CacheKey) -> anyhow::Result<PathBuf> {
        let progress = self.shell.step(&format!("building ndctl from {source} (in a chroot of the root filesystem's tree)"));
        let started = Instant::now();
        let tag = ndctl_version_tag(source);
        let inputs = json!({ "source": source.to_string(), "tree": tree_artifact, "meson": ndctl_build::MESON_OPTIONS });
        let (cache, runner) = (&self.cache, &self.runner);
        let tree = rootfs::tree_dir(tree_artifact);
        let mut version = String::new();
        let log = runner.log_path("ndctl-build");
        let path = progress.follow_log(&log, || {
            cache.get_or_build(ArtifactKind::Ndctl, key, inputs, |staging| {
                let src = staging.join("src");
                resolve::unpack(cache, runner, source, &src).with_context(|| format!("unpacking {source}"))?;
                version = ndctl_build::build(staging, &tree, &src, &tag, runner)?;
                Ok(())
            })
        })?;
        progress.done(if version.is_empty() { key.short().to_owned() } else { format!("{version}, {}", key.short()) });
        self.time("ndctl", started);
        Ok(path)
    }

    /// Unpacks the source into its kept tree (once), configures it and builds the artifact.
    fn build_kernel(&mut self, source: &Pin, fragment: &str, key: &CacheKey) -> anyhow::Result<PathBuf> {
        let tree_name = kernel_tree_name(source, KERNEL_BASE);
        // `cache gc` leaves a tree alone while a build holds its lock.
        let _tree_lock = self.cache.lock(&format!("tree-{tree_name}"))?;
        let tree = self.cache.layout.build_tree(&tree_name);
        self.prepare_kernel_tree(source, &tree)?;
        let progress = self.shell.step("configuring the kernel");
        let report = linux::configure(&tree, &Fragment::parse(fragment), KERNEL_BASE, &self.runner, self.shell)?;
        for note in report.notes() {
            self.shell.verbose(note);
        }
        progress.done(format!("{} over {}", linux::LAB_FRAGMENT, KERNEL_BASE.make_target()));
        let started = Instant::now();
        let inputs = json!({ "source": source.to_string(), "base": KERNEL_BASE, "tree": tree });
        let (runner, shell) = (&self.run.runner, self.run.shell);
        let path = self.run.cache.get_or_build(ArtifactKind::Kernel, key, inputs, |staging| linux::build(staging, &tree, runner, shell).map(drop))?;
        self.time("kernel", started);
        Ok(path)
    }

    /// The source tree in `tree`, unless it is there: a package that carries the source tarball
    /// (`linux-source-<version>`) is opened and its tarball unpacked; other pins unpack as a tree.
    fn prepare_kernel_tree(&self, source: &Pin, tree: &Path) -> anyhow::Result<()> {
        if tree.join("Makefile").is_file() {
            return Ok(());
        }
        let progress = self.shell.step("unpacking the kernel source");
        fs_err::create_dir_all(self.cache.layout.cache_tmp_dir())?;
        let scratch = tempfile::tempdir_in(self.cache.layout.cache_tmp_dir())?;
        resolve::unpack(&self.cache, &self.runner, source, scratch.path()).with_context(|| format!("unpacking {source}"))?;
        match source {
            Pin::Debian { .. } => {
                linux::unpack_tree(&linux::source_tarball_in(scratch.path())?, tree, &self.runner)?;
            }
            _ => {
                fs_err::create_dir_all(tree.parent().context("a build tree has a parent")?)?;
                fs_err::rename(scratch.path(), tree)?;
            }
        }
        progress.done(tree.display());
        Ok(())
    }

    fn build_qemu(&mut self, source: &Pin, patches: &[SourcePatch], firmware_debs: &[PathBuf], key: &CacheKey) -> anyhow::Result<PathBuf> {
        let progress = self.shell.step(&format!("building QEMU from {source}"));
        let started = Instant::now();
        let log = self.runner.log_path("qemu-build");
        let inputs = json!({ "source": source.to_string(), "patches": patches, "configure": qemu_build::CONFIGURE_OPTIONS });
        let (cache, runner) = (&self.cache, &self.runner);
        let mut version = None;
        let path = progress.follow_log(&log, || {
            cache.get_or_build(ArtifactKind::Qemu, key, inputs, |staging| {
                let tree = staging.join("src");
                resolve::unpack(cache, runner, source, &tree).with_context(|| format!("unpacking {source}"))?;
                patches::apply(runner, &tree, patches, &source.to_string())?;
                version = Some(qemu_build::build(&tree, &staging.join("build"), staging, firmware_debs, runner)?);
                fs_err::remove_dir_all(&tree)?;
                Ok(())
            })
        })?;
        progress.done(format!("{}, {}", version.map_or_else(|| "cached".to_owned(), |version| version.to_string()), key.short()));
        self.time("qemu", started);
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::sources::SourcePin;

    #[test]
    fn ndctl_says_its_upstream_version() {
        let pin = Pin::DebianSource(SourcePin {
            package: "ndctl".into(),
            version: "81-1".into(),
            suite: "trixie".into(),
            mirror: "http://deb.debian.org/debian".into(),
            directory: "pool/main/n/ndctl".into(),
            files: Vec::new(),
        });
        assert_eq!(ndctl_version_tag(&pin), "81");
        assert_eq!(ndctl_version_tag(&Pin::Git { url: "u".into(), commit: "0123456789abcdef".into() }), "0123456789ab");
    }
}
