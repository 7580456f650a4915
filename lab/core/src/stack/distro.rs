//! Everything `lab up` needs on disk before QEMU starts, for a stack: [`ensure_distro_stack`].
//!
//! Order of work per component: the lock entry (or resolution through `sources`, then the lock is
//! updated), the cache key from the recipe and the pin, a cache lookup, and only on a miss a
//! download and build. A warm run with a lock reads the recipe, the lock and each artifact's
//! manifest and stamp, and `lstat`s the files the manifests record: no network, no process, no
//! big file read.
//!
//! A damaged artifact or download (a file missing, of another size, or whose contents changed:
//! `cache.rs`) is rebuilt or downloaded again with a warning naming each file; with `--locked`
//! it is an error naming them instead.
//!
//! The distro stack's QEMU is the host's `qemu-system-x86_64` (installed from the host release's
//! backports by `host setup`); its version is remembered in `<cache>/probes/` keyed by the
//! binary's inode, size and mtime, so the warm path does not spawn it.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::stack::build::rootfs::RootOverlay;
use crate::stack::build::{initramfs, kernel, rootfs, rootfs_config};
use crate::stack::cache::{ArtifactKind, Cache, CacheKey};
use crate::stack::debian::{self, DebianResolver};
use crate::stack::host;
use crate::stack::recipe::{self, LoadedRecipe, StackRecipe};
use crate::stack::lock::{self, Component, ComponentLock, KernelLock, QemuLock, RootfsLock, StackLock};
use crate::layout::Layout;
use crate::qemu::QemuVersion;
use crate::stack::StackKind;
use crate::shell::Shell;
use crate::stack::sources::{self, Pin, Resolution};
use crate::stack::session::{RecipeRun, StackRun};
pub use crate::stack::session::StackOptions;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuBinary {
    pub path: PathBuf,
    /// From `qemu-system-x86_64 --version`.
    pub version: QemuVersion,
}

/// The kernel side of a stack: what `-kernel`, `-initrd` and the `modshare` tag take.
#[derive(Clone, Debug)]
pub struct KernelArtifacts {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Served as the 9p tag `modshare`; holds `<kernel_release>/`.
    pub modules_dir: PathBuf,
    pub kernel_release: String,
}

#[derive(Clone, Debug)]
pub struct StackArtifacts {
    pub qemu: QemuBinary,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub modules_dir: PathBuf,
    pub kernel_release: String,
    /// The ext4 base image; never modified: VMs boot a qcow2 overlay of it.
    pub rootfs_image: PathBuf,
    /// Which source each component came from, one line each.
    pub source_notes: Vec<String>,
    /// Seconds spent per stage in this run (empty stages left out).
    pub timings: Vec<(String, f64)>,
}

/// Makes sure every artifact of the distro stack exists, building what is missing.
pub fn ensure_distro_stack(paths: &Layout, shell: &Shell, options: &StackOptions) -> anyhow::Result<StackArtifacts> {
    let mut session = Session::open(paths, shell, options, &[])?;
    let qemu = session.qemu()?;
    let kernel = session.kernel()?;
    session.save_lock()?;
    let rootfs_image = session.rootfs(None)?;
    session.save_lock()?;
    Ok(StackArtifacts {
        qemu,
        kernel: kernel.kernel,
        initrd: kernel.initrd,
        modules_dir: kernel.modules_dir,
        kernel_release: kernel.kernel_release,
        rootfs_image,
        source_notes: session.run.notes,
        timings: session.run.timings,
    })
}

/// The kernel and initramfs only (no root, no debootstrap): `build kernel` and the boot test.
pub fn ensure_distro_kernel(paths: &Layout, shell: &Shell, options: &StackOptions) -> anyhow::Result<(KernelArtifacts, Vec<(String, f64)>)> {
    let mut session = Session::open(paths, shell, options, KERNEL_TOOLS)?;
    let kernel = session.kernel()?;
    session.save_lock()?;
    Ok((kernel, session.run.timings))
}

/// The debootstrapped tree the root filesystem image is made of (the `rootfs-tree` artifact, whose
/// `tree/` is `rootfs::tree_dir`, and its key): what the source stack builds ndctl against, in a chroot of a copy.
pub fn ensure_rootfs_tree(paths: &Layout, shell: &Shell, options: &StackOptions) -> anyhow::Result<RootfsTree> {
    let mut session = Session::open(paths, shell, options, &["debootstrap"])?;
    let artifact = session.rootfs_tree()?;
    Ok(RootfsTree { artifact, key: rootfs_keys(&session.recipe).0, timings: session.run.timings })
}

/// The `rootfs-tree` artifact, its key, and the time debootstrap took in this run, if it ran.
#[derive(Clone, Debug)]
pub struct RootfsTree {
    pub artifact: PathBuf,
    pub key: CacheKey,
    pub timings: Vec<(String, f64)>,
}

/// The key of the debootstrapped tree the recipe asks for (reads the recipe only).
pub fn rootfs_tree_key(paths: &Layout) -> anyhow::Result<CacheKey> {
    Ok(rootfs_keys(&recipe::load(&paths.images_dir(), StackKind::Distro)?).0)
}

/// The key of the image the recipe asks for with an overlay keyed `overlay` (reads the recipe only).
pub fn overlaid_rootfs_key(paths: &Layout, overlay: &CacheKey) -> anyhow::Result<CacheKey> {
    Ok(overlaid_image_key(&rootfs_keys(&recipe::load(&paths.images_dir(), StackKind::Distro)?).1, overlay))
}

fn overlaid_image_key(image: &CacheKey, overlay: &CacheKey) -> CacheKey {
    CacheKey::of(ArtifactKind::Rootfs, &json!({ "image": image, "overlay": overlay }))
}

/// The root filesystem image only, with `overlay` laid over it: `build rootfs`.
pub fn ensure_distro_rootfs(paths: &Layout, shell: &Shell, options: &StackOptions, overlay: Option<&RootOverlay>) -> anyhow::Result<(PathBuf, Vec<(String, f64)>)> {
    let mut session = Session::open(paths, shell, options, ROOTFS_TOOLS)?;
    let image = session.rootfs(overlay)?;
    session.save_lock()?;
    Ok((image, session.run.timings))
}

/// What another stack's kernel borrows from this one: the initramfs (this recipe's busybox and
/// module list, with the modules of the kernel artifact at `kernel_artifact`, cached under
/// `kernel_key`) and the root filesystem image with `overlay` laid over it. The source stack boots
/// its own kernel and ndctl this way.
pub fn ensure_initramfs_and_rootfs_for(
    paths: &Layout,
    shell: &Shell,
    options: &StackOptions,
    kernel_artifact: &Path,
    release: &str,
    kernel_key: &CacheKey,
    overlay: Option<&RootOverlay>,
) -> anyhow::Result<BorrowedArtifacts> {
    let tools: Vec<&str> = KERNEL_TOOLS.iter().chain(ROOTFS_TOOLS).copied().collect();
    let mut session = Session::open(paths, shell, options, &tools)?;
    let initramfs = loop {
        let busybox = session.pinned(Component::Busybox)?;
        // `None`: the locked busybox is no longer served and left the lock; resolve it again.
        if let Some(path) = session.initramfs_artifact(&busybox.pin, kernel_artifact, release, kernel_key)? {
            break path;
        }
    };
    session.save_lock()?;
    let rootfs_image = session.rootfs(overlay)?;
    session.save_lock()?;
    Ok(BorrowedArtifacts { initrd: initramfs.join("initrd.img"), rootfs_image, notes: session.run.notes, timings: session.run.timings })
}

/// The distro stack's initramfs for another kernel, and its root filesystem.
#[derive(Clone, Debug)]
pub struct BorrowedArtifacts {
    pub initrd: PathBuf,
    pub rootfs_image: PathBuf,
    pub notes: Vec<String>,
    pub timings: Vec<(String, f64)>,
}

/// Host programs the kernel side runs (apt-get resolves, apt-helper downloads, dpkg-deb unpacks).
const KERNEL_TOOLS: &[&str] = &["apt-get", "dpkg-deb", "depmod"];
const ROOTFS_TOOLS: &[&str] = &["debootstrap", "mkfs.ext4"];

/// Cache entry names the current recipe and lock point at (`cache ls` marks them, `cache gc`
/// keeps them), and their downloads as `downloads/<file>`. Reads no network and builds nothing.
pub fn referenced_artifacts(paths: &Layout) -> anyhow::Result<HashSet<String>> {
    let recipe = recipe::load(&paths.images_dir(), StackKind::Distro)?;
    let lock = StackLock::read(&lock::lock_path(&paths.images_dir(), StackKind::Distro))?.unwrap_or_else(|| StackLock::empty(StackKind::Distro));
    let mut names = HashSet::new();
    let (tree_key, image_key) = rootfs_keys(&recipe);
    names.insert(Cache::artifact_name(ArtifactKind::RootfsTree, &tree_key));
    names.insert(Cache::artifact_name(ArtifactKind::Rootfs, &image_key));
    for entry in Component::ALL.into_iter().filter_map(|component| lock.entry(component)) {
        if let Pin::Debian { packages, .. } = &entry.pin {
            names.extend(packages.iter().map(|package| format!("downloads/{}", package.file_name())));
        }
    }
    if let Some(kernel) = locked(&lock, &recipe, Component::Kernel) {
        let kernel_key = kernel_key(&kernel.pin, &kernel_release(&kernel)?);
        names.insert(Cache::artifact_name(ArtifactKind::Kernel, &kernel_key));
        if let Some(busybox) = locked(&lock, &recipe, Component::Busybox) {
            names.insert(Cache::artifact_name(ArtifactKind::Initramfs, &initramfs_key(&recipe, &kernel_key, &busybox.pin)));
        }
    }
    Ok(names)
}

/// What the lock pins `component` to, if its entry answers the recipe's candidates.
fn locked(lock: &StackLock, recipe: &LoadedRecipe, component: Component) -> Option<Resolution> {
    lock.resolution_for(component, component.candidates(&recipe.recipe))
}

/// The release a kernel resolution found: it names the module directory and goes into the key.
fn kernel_release(kernel: &Resolution) -> anyhow::Result<String> {
    kernel.release.clone().context("the kernel source gave no release: give the debian candidate `parts`")
}

fn kernel_key(pin: &Pin, release: &str) -> CacheKey {
    CacheKey::of(ArtifactKind::Kernel, &json!({ "pin": pin, "release": release }))
}

fn initramfs_key(recipe: &LoadedRecipe, kernel_key: &CacheKey, busybox: &Pin) -> CacheKey {
    CacheKey::of(
        ArtifactKind::Initramfs,
        &json!({
            "kernel": kernel_key,
            "busybox": busybox,
            "modules": recipe.recipe.initramfs.modules,
            "init": blake3::hash(initramfs::INIT_SCRIPT.as_bytes()).to_hex().to_string(),
        }),
    )
}

/// Keys of the debootstrap tree and of the configured image.
fn rootfs_keys(recipe: &LoadedRecipe) -> (CacheKey, CacheKey) {
    let rootfs = &recipe.recipe.rootfs;
    let mirror = rootfs.mirror.as_deref().unwrap_or(&recipe.recipe.archive.mirror);
    // `scrub` and `times`: what the tree loses and that its times are clamped to its
    // SOURCE_DATE_EPOCH before it is published (`rootfs.rs`).
    let tree = CacheKey::of(
        ArtifactKind::RootfsTree,
        &json!({
            "suite": rootfs.suite, "mirror": mirror, "packages": rootfs.packages,
            "scrub": rootfs_config::scrub(), "times": rootfs::TIME_RULE,
        }),
    );
    let image = CacheKey::of(
        ArtifactKind::Rootfs,
        &json!({ "tree": tree, "config": rootfs_config::render(rootfs), "headroom_mib": rootfs.headroom_mib, "image": rootfs::IMAGE_RECIPE }),
    );
    (tree, image)
}

/// One run over the distro stack.
type Session<'a> = RecipeRun<'a, StackRecipe>;

impl<'a> Session<'a> {
    /// Loads recipe and lock and makes sure the host programs `tools` (all when empty) are there.
    fn open(paths: &Layout, shell: &'a Shell, options: &'a StackOptions, tools: &[&str]) -> anyhow::Result<Session<'a>> {
        let recipe = recipe::load(&paths.images_dir(), StackKind::Distro)?;
        let run = StackRun::open(paths, shell, options, StackKind::Distro)?;
        host::ensure_tools(StackKind::Distro, tools, &run.cache.layout.apt_dir(), &recipe.recipe.archive, &run.runner, shell)?;
        Ok(Session { run, recipe })
    }

    /// The host QEMU, installing it when missing and root.
    fn qemu(&mut self) -> anyhow::Result<QemuBinary> {
        // Session::open installed it if it was missing.
        let binary = host::find_program("qemu-system-x86_64").context("qemu-system-x86_64 is missing")?;
        let version = match probe_cached(&self.cache, &binary) {
            Some(version) if self.lock.qemu.is_some() => version,
            _ => self.probe_qemu(&binary)?,
        };
        if let Some(minimum) = self.recipe.recipe.qemu.minimum_version {
            if version < minimum {
                let outdated = host::Outdated { tool: host::QEMU_TOOL, path: binary, version, minimum };
                bail!("{outdated}: `cargo xtask host setup` installs a newer one");
            }
        }
        Ok(QemuBinary { path: binary, version })
    }

    fn probe_qemu(&mut self, binary: &Path) -> anyhow::Result<QemuVersion> {
        let version = host::qemu_version(&self.runner, binary)?;
        let package = "qemu-system-x86";
        let package_version = self
            .runner
            .run_capture("dpkg-query-qemu", Command::new("dpkg-query").args(["-W", "-f=${Version}", package]))
            .unwrap_or_else(|_| "not from a package".to_owned());
        let suite = self.recipe.recipe.qemu.sources.iter().find_map(|candidate| match candidate {
            sources::Candidate::Debian(debian) => Some(debian.suite.clone()),
            _ => None,
        });
        let entry = QemuLock {
            package: package.to_owned(),
            package_version,
            suite: suite.unwrap_or_default(),
            version,
        };
        if self.lock.qemu.as_ref() != Some(&entry) {
            if self.options.locked {
                bail!("--locked, but the host QEMU ({} {}) is not the one in {}", entry.package_version, entry.version, self.lock_path.display());
            }
            self.lock.qemu = Some(entry.clone());
        }
        self.notes.push(format!("qemu: host {} ({} {})", binary.display(), entry.package, entry.package_version));
        write_probe(&self.cache, binary, version)?;
        Ok(version)
    }

    /// Resolves the kernel and busybox (or takes them from the lock), then builds both artifacts.
    fn kernel(&mut self) -> anyhow::Result<KernelArtifacts> {
        let downloads_started = Instant::now();
        let kernel = self.pinned(Component::Kernel)?;
        let busybox = self.pinned(Component::Busybox)?;
        let release = kernel_release(&kernel)?;
        let kernel_key = kernel_key(&kernel.pin, &release);
        // `None`: a locked pin is no longer served and left the lock; resolve everything again.
        let Some(kernel_artifact) = self.kernel_artifact(&kernel.pin, &release, &kernel_key, downloads_started)? else {
            return self.kernel();
        };
        let Some(initramfs_artifact) = self.initramfs_artifact(&busybox.pin, &kernel_artifact, &release, &kernel_key)? else {
            return self.kernel();
        };
        self.hold_artifact(ArtifactKind::Kernel, &kernel_key)?;
        let initramfs_key = initramfs_key(&self.recipe, &kernel_key, &busybox.pin);
        self.hold_artifact(ArtifactKind::Initramfs, &initramfs_key)?;
        Ok(KernelArtifacts {
            kernel: kernel::vmlinuz_path(&kernel_artifact),
            initrd: initramfs_artifact.join("initrd.img"),
            modules_dir: kernel::modules_share_dir(&kernel_artifact),
            kernel_release: release,
        })
    }

    /// The kernel artifact of `pin`, downloaded and unpacked on a miss; `None` when the pin is no
    /// longer served.
    fn kernel_artifact(&mut self, pin: &Pin, release: &str, key: &CacheKey, downloads_started: Instant) -> anyhow::Result<Option<PathBuf>> {
        if let Some(path) = self.lookup(ArtifactKind::Kernel, key)? {
            return Ok(Some(path));
        }
        let Some(debs) = self.fetch_or_refuse(Component::Kernel, pin)? else { return Ok(None) };
        self.time("downloads", downloads_started);
        let progress = self.shell.step(&format!("unpacking kernel {release}"));
        let started = Instant::now();
        let inputs = json!({ "release": release, "pin": pin.to_string() });
        let path = self.cache.get_or_build(ArtifactKind::Kernel, key, inputs, |staging| {
            kernel::build(staging, &debs, release, &self.runner)
        })?;
        progress.done(format!("depmod'ed, {}", key.short()));
        self.time("kernel", started);
        Ok(Some(path))
    }

    /// The initramfs of the kernel artifact with busybox `busybox`, built on a miss; `None` when
    /// busybox's pin is no longer served.
    fn initramfs_artifact(&mut self, busybox: &Pin, kernel_artifact: &Path, release: &str, kernel_key: &CacheKey) -> anyhow::Result<Option<PathBuf>> {
        let key = initramfs_key(&self.recipe, kernel_key, busybox);
        if let Some(path) = self.lookup(ArtifactKind::Initramfs, &key)? {
            return Ok(Some(path));
        }
        let Some(debs) = self.fetch_or_refuse(Component::Busybox, busybox)? else { return Ok(None) };
        let progress = self.shell.step("building the initramfs");
        let started = Instant::now();
        let release_dir = kernel::modules_release_dir(kernel_artifact, release);
        let modules = self.recipe.recipe.initramfs.modules.clone();
        let inputs = json!({ "kernel": kernel_key, "busybox": busybox.to_string(), "modules": modules });
        let path = self.cache.get_or_build(ArtifactKind::Initramfs, &key, inputs, |staging| {
            initramfs::build(staging, &debs[0], &release_dir, release, &modules, &self.runner).map(|_| ())
        })?;
        progress.done(format!("{} modules, {}", modules.len(), key.short()));
        self.time("initramfs", started);
        Ok(Some(path))
    }

    /// `component`'s pin (and the kernel's release) from the lock when its entry answers the
    /// recipe, else resolved now.
    fn pinned(&mut self, component: Component) -> anyhow::Result<Resolution> {
        match locked(&self.lock, &self.recipe, component) {
            Some(resolution) => Ok(resolution),
            None => self.resolve(component),
        }
    }

    /// Resolves `component` from the recipe's candidates (which downloads it) and pins it in the
    /// lock; a kernel must name its release.
    fn resolve(&mut self, component: Component) -> anyhow::Result<Resolution> {
        self.refuse_if_locked(component.display_name())?;
        let candidates = component.candidates(&self.recipe.recipe).to_vec();
        let progress = self.shell.step(&format!("resolving and downloading {}", component.display_name()));
        let mut resolver = DebianResolver::new(&self.cache, &self.runner, &self.recipe.recipe.archive)?;
        resolver.progress = Some(&progress);
        let resolved = sources::first_available(component.name(), &candidates, &mut resolver)?;
        let resolution = resolved.resolution;
        let entry = ComponentLock { candidates: lock::candidates_digest(&candidates), pin: resolution.pin.clone() };
        match component {
            Component::Kernel => {
                let release = kernel_release(&resolution)?;
                progress.done(&release);
                self.lock.kernel = Some(KernelLock { component: entry, release });
            }
            Component::Busybox => {
                progress.done(&entry.pin);
                self.lock.busybox = Some(entry);
            }
        }
        self.notes.extend(resolved.notes);
        Ok(resolution)
    }

    /// Downloads a pinned component. When the archive no longer serves it (and not `--locked`),
    /// drops its lock entry and returns `None`: the caller resolves again.
    fn fetch_or_refuse(&mut self, component: Component, pin: &Pin) -> anyhow::Result<Option<Vec<PathBuf>>> {
        let total = match pin {
            Pin::Debian { packages, .. } => packages.iter().map(|package| package.size).sum(),
            _ => 0,
        };
        // Just resolved (the resolver downloads) or fetched by an earlier run: no step to show.
        let cached = debian::cached_debs(&self.cache, pin).map_err(anyhow::Error::from)?;
        if cached.complete() {
            return Ok(Some(cached.paths));
        }
        if !cached.damaged.is_empty() {
            let damaged: Vec<String> = cached.damaged.iter().map(|(path, why)| format!("{}: {why}", path.display())).collect();
            let damaged = damaged.join("; ");
            if self.options.locked {
                bail!("--locked, but downloaded {component} files are damaged: {damaged}; run without --locked to download them again");
            }
            self.shell.warn(format!("downloaded {component} files are damaged, downloading them again: {damaged}"));
        }
        let progress = self.shell.step_with_total(&format!("downloading {component}"), total);
        match debian::fetch(&self.cache, &self.runner, pin, Some(&progress)) {
            Ok(debs) => {
                progress.done(pin);
                Ok(Some(debs))
            }
            Err(sources::SourceError::Unavailable(reason)) if !self.options.locked && !self.re_resolved => {
                drop(progress);
                self.shell.warn(format!("the locked {component} is no longer served ({reason}); resolving it again"));
                self.re_resolved = true;
                self.lock.remove(component);
                Ok(None)
            }
            Err(error) => Err(self.cache.note_if_full(error.into())).with_context(|| format!("downloading {component} as locked ({pin})")),
        }
    }

    /// The debootstrapped tree (`rootfs-tree`), built on a miss.
    fn rootfs_tree(&mut self) -> anyhow::Result<PathBuf> {
        let recipe = self.recipe.clone();
        let rootfs = &recipe.recipe.rootfs;
        let (tree_key, _) = rootfs_keys(&recipe);
        let path = match self.lookup(ArtifactKind::RootfsTree, &tree_key)? {
            Some(path) => path,
            None => {
                let progress = self.shell.step(&format!("debootstrap {} ({} packages asked)", rootfs.suite, rootfs.packages.len()));
                let started = Instant::now();
                let log = self.runner.log_path("debootstrap");
                let inputs = json!({ "suite": rootfs.suite, "packages": rootfs.packages.len() });
                let debs_cache = self.cache.layout.debootstrap_debs_dir();
                let path = progress.follow_log(&log, || {
                    self.cache.get_or_build(ArtifactKind::RootfsTree, &tree_key, inputs, |staging| {
                        rootfs::build_tree(staging, rootfs, &recipe.recipe.archive, &debs_cache, &self.runner)
                    })
                })?;
                progress.done(tree_key.short());
                self.time("debootstrap", started);
                path
            }
        };
        Ok(path)
    }

    /// debootstraps (cached) and makes the image (cached), with `overlay` laid over the tree. The
    /// lock records the image without an overlay: the overlay is the other stack's, keyed by its
    /// own lock.
    fn rootfs(&mut self, overlay: Option<&RootOverlay>) -> anyhow::Result<PathBuf> {
        let recipe = self.recipe.clone();
        let rootfs = &recipe.recipe.rootfs;
        let (tree_key, base_key) = rootfs_keys(&recipe);
        if let Some(entry) = &self.lock.rootfs {
            if self.options.locked && (entry.suite != rootfs.suite || entry.key != base_key.0) {
                bail!("--locked, but the recipe's rootfs differs from {}: run once without --locked", self.lock_path.display());
            }
        }
        let image_key = match overlay {
            Some(overlay) => overlaid_image_key(&base_key, &overlay.key),
            None => base_key.clone(),
        };
        if let Some(path) = self.lookup(ArtifactKind::Rootfs, &image_key)? {
            if overlay.is_none() {
                self.hold_artifact(ArtifactKind::Rootfs, &image_key)?;
            }
            return Ok(rootfs::image_path(&path));
        }
        let tree = self.rootfs_tree()?;
        let with = overlay.map(|overlay| format!(" with {}", overlay.name)).unwrap_or_default();
        let progress = self.shell.step(&format!("making the root filesystem image{with}"));
        let started = Instant::now();
        let items = rootfs_config::render(rootfs);
        let inputs = json!({ "tree": tree_key, "suite": rootfs.suite, "hostname": rootfs.hostname, "overlay": overlay.map(|overlay| &overlay.name) });
        let image = self.cache.get_or_build(ArtifactKind::Rootfs, &image_key, inputs, |staging| {
            rootfs::build_image(staging, &tree, overlay, &items, rootfs.headroom_mib, &self.runner)
        })?;
        progress.done(image_key.short());
        self.time("image", started);

        let (packages_digest, package_count) = rootfs::packages_digest(&tree)?;
        if let Some(entry) = &self.lock.rootfs {
            if entry.packages_digest != packages_digest {
                self.shell.warn("the root filesystem's packages differ from the lock's: debootstrap installs the suite's current versions");
            }
        }
        self.lock.rootfs = Some(RootfsLock { suite: rootfs.suite.clone(), key: base_key.0.clone(), packages_digest, package_count });
        if overlay.is_none() {
            self.hold_artifact(ArtifactKind::RootfsTree, &tree_key)?;
            self.hold_artifact(ArtifactKind::Rootfs, &image_key)?;
        }
        self.notes.push(format!("rootfs: debootstrap {} from {}, {package_count} packages", rootfs.suite, rootfs.mirror.as_deref().unwrap_or(&recipe.recipe.archive.mirror)));
        Ok(rootfs::image_path(&image))
    }
}

/// What `<cache>/probes/qemu.json` remembers about a QEMU binary.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct QemuProbe {
    path: PathBuf,
    inode: u64,
    size: u64,
    mtime_ns: i64,
    version: QemuVersion,
}

fn probe_path(cache: &Cache) -> PathBuf {
    cache.layout.qemu_probe_file()
}

fn fingerprint(binary: &Path) -> Option<(u64, u64, i64)> {
    let metadata = std::fs::metadata(binary).ok()?;
    Some((metadata.ino(), metadata.size(), metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec()))
}

fn probe_cached(cache: &Cache, binary: &Path) -> Option<QemuVersion> {
    let probe: QemuProbe = serde_json::from_slice(&std::fs::read(probe_path(cache)).ok()?).ok()?;
    let (inode, size, mtime_ns) = fingerprint(binary)?;
    (probe.path == binary && probe.inode == inode && probe.size == size && probe.mtime_ns == mtime_ns).then_some(probe.version)
}

fn write_probe(cache: &Cache, binary: &Path, version: QemuVersion) -> anyhow::Result<()> {
    let Some((inode, size, mtime_ns)) = fingerprint(binary) else { return Ok(()) };
    let probe = QemuProbe { path: binary.to_path_buf(), inode, size, mtime_ns, version };
    crate::sys::atomic_file::replace_file(&probe_path(cache), &serde_json::to_vec(&probe)?)?;
    Ok(())
}
