//! The initramfs for a modular (distro) kernel: a gzip'd newc cpio built here, holding the static
//! busybox from `busybox-static`, the modules the root needs (with their dependencies from
//! `modules.dep`, decompressed so busybox `insmod` loads them), `/dev/console`, and `/init`
//! (`init.sh` beside this file).
//!
//! # Kernel command line contract of `/init`
//!
//! - `root=/dev/vda` (or `LABEL=...`, `UUID=...`): the root device, waited for up to
//!   `cxllab.rootwait=<seconds>` (default 30); `rootfstype=` (default ext4), `rootflags=`, `ro`/`rw`
//!   (default rw) and `init=` (default /sbin/init) as the kernel's own.
//! - The 9p tag `modshare` (another with `cxllab.modshare=<tag>`) is mounted at
//!   `<root>/lib/modules` before `switch_root`, so udev in the root can load CXL modules at
//!   coldplug. Without the device the root's own `/lib/modules` stays.
//! - `cxllab.bare=1`: after loading the modules, print `cxl-lab: bare initramfs ready` on the
//!   console (or `... degraded: N modules failed to load`) and power off. Used to time the kernel
//!   alone on a topology, and by the boot test.
//! - `cxllab.rescue=1`: on failure, a shell on the console instead of powering off.
//!
//! Every message starts with `cxl-lab: `.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cpio::NewcBuilder;
use fs_err as fs;

use crate::stack::debian::apt;
use crate::sys::runner::CommandRunner;

pub const INIT_SCRIPT: &str = include_str!("init.sh");
/// The line `/init` prints when booted with `cxllab.bare=1` and every module loaded.
pub const BARE_READY_MARKER: &str = "cxl-lab: bare initramfs ready";
/// The list of modules `/init` loads, in order, relative to `/lib/modules/`.
const MODULE_LIST: &str = "etc/cxl-lab/modules";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitramfsError {
    #[error("module `{module}` is neither in modules.dep nor built in (kernel {release})")]
    UnknownModule { module: String, release: String },
    #[error("module `{module}` depends on `{dependency}`, which modules.dep does not list")]
    MissingDependency { module: String, dependency: String },
}

/// `modules.dep` and `modules.builtin` of one kernel, by module name (`-` and `_` are the same).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    release: String,
    /// name → (path relative to the release dir, dependency paths).
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    pub fn parse(release: &str, modules_dep: &str, modules_builtin: &str) -> ModuleIndex {
        let mut modules = HashMap::new();
        for line in modules_dep.lines() {
            let Some((path, dependencies)) = line.split_once(':') else { continue };
            let dependencies = dependencies.split_whitespace().map(str::to_owned).collect();
            modules.insert(module_name(path), (path.to_owned(), dependencies));
        }
        let builtin = modules_builtin.lines().filter(|line| !line.is_empty()).map(module_name).collect();
        ModuleIndex { release: release.to_owned(), modules, builtin }
    }

    pub fn read(release_dir: &Path, release: &str) -> anyhow::Result<ModuleIndex> {
        let dep = fs::read_to_string(release_dir.join("modules.dep"))?;
        // modules.builtin comes from linux-base; a kernel without it just has no builtins listed.
        let builtin = std::fs::read_to_string(release_dir.join("modules.builtin")).unwrap_or_default();
        Ok(ModuleIndex::parse(release, &dep, &builtin))
    }

    /// Module files (relative paths) to load for `wanted`, dependencies before dependents, each
    /// once. Built-in modules need nothing.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<String>, InitramfsError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for module in wanted {
            let name = module.replace('-', "_");
            if self.builtin.contains(&name) && !self.modules.contains_key(&name) {
                continue;
            }
            let (path, _) = self
                .modules
                .get(&name)
                .ok_or_else(|| InitramfsError::UnknownModule { module: module.clone(), release: self.release.clone() })?;
            self.visit(&name, path, &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, path: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) -> Result<(), InitramfsError> {
        if !seen.insert(path.to_owned()) {
            return Ok(());
        }
        let (_, dependencies) = &self.modules[name];
        for dependency in dependencies {
            let dependency_name = module_name(dependency);
            if !self.modules.contains_key(&dependency_name) {
                return Err(InitramfsError::MissingDependency { module: name.to_owned(), dependency: dependency.clone() });
            }
            self.visit(&dependency_name, dependency, seen, order)?;
        }
        order.push(path.to_owned());
        Ok(())
    }
}

/// The module file as `insmod` takes it: decompressed, and its name in the initramfs.
fn load_module(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let compressed = fs::read(path)?;
    if let Some(stem) = name.strip_suffix(".xz") {
        let mut plain = Vec::new();
        lzma_rs::xz_decompress(&mut Cursor::new(compressed), &mut plain)
            .map_err(|error| anyhow::anyhow!("decompressing {}: {error:?}", path.display()))?;
        return Ok((stem.to_owned(), plain));
    }
    if let Some(stem) = name.strip_suffix(".gz") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(compressed.as_slice()).read_to_end(&mut plain)?;
        return Ok((stem.to_owned(), plain));
    }
    if name.ends_with(".ko") {
        return Ok((name, compressed));
    }
    anyhow::bail!("{}: modules compressed this way are not handled (xz and gzip are)", path.display())
}

/// One file of the archive, before it is written.
struct Entry {
    path: String,
    mode: u32,
    data: Vec<u8>,
    rdev: Option<(u32, u32)>,
}

impl Entry {
    fn dir(path: &str) -> Entry {
        Entry { path: path.to_owned(), mode: 0o040755, data: Vec::new(), rdev: None }
    }

    fn file(path: &str, mode: u32, data: Vec<u8>) -> Entry {
        Entry { path: path.to_owned(), mode: 0o100000 | mode, data, rdev: None }
    }
}

/// Builds `<staging>/initrd.img` from busybox's .deb and the kernel artifact's module tree.
pub fn build(
    staging: &Path,
    busybox_deb: &Path,
    release_dir: &Path,
    release: &str,
    wanted: &[String],
    runner: &CommandRunner,
) -> anyhow::Result<PathBuf> {
    let unpacked = staging.join("busybox");
    apt::extract(runner, busybox_deb, &unpacked)?;
    let busybox = ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|path| unpacked.join(path))
        .find(|path| path.is_file())
        .context("busybox-static holds no busybox binary")?;
    let busybox = fs::read(busybox)?;
    fs::remove_dir_all(&unpacked)?;

    let index = ModuleIndex::read(release_dir, release)?;
    let order = index.closure(wanted)?;
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::dir("dev"),
        Entry::dir("etc"),
        Entry::dir("etc/cxl-lab"),
        Entry::dir("lib"),
        Entry::dir("lib/modules"),
        Entry::dir("newroot"),
        Entry::dir("proc"),
        Entry::dir("run"),
        Entry::dir("sys"),
        // Without /dev/console the kernel starts /init with no stdout at all.
        Entry { path: "dev/console".into(), mode: 0o020600, data: Vec::new(), rdev: Some((5, 1)) },
        Entry::file("bin/busybox", 0o755, busybox),
        Entry::file("init", 0o755, INIT_SCRIPT.as_bytes().to_vec()),
    ];
    add_modules(&mut entries, release_dir, release, &order)?;

    let output = staging.join("initrd.img");
    write_cpio_gz(&entries, &output)?;
    Ok(output)
}

/// Adds the modules `order` names (relative to `release_dir`), decompressed, with their
/// directories, and the list `/init` loads them from, in that order.
fn add_modules(entries: &mut Vec<Entry>, release_dir: &Path, release: &str, order: &[String]) -> anyhow::Result<()> {
    let mut list = String::new();
    let mut made_dirs = HashSet::new();
    for relative in order {
        let (file_name, data) = load_module(&release_dir.join(relative))?;
        let parent = Path::new(relative).parent().map(|parent| parent.to_string_lossy().into_owned()).unwrap_or_default();
        let in_archive = format!("{release}/{parent}/{file_name}");
        let mut dir = String::from("lib/modules");
        for component in Path::new(&format!("{release}/{parent}")).components() {
            dir = format!("{dir}/{}", component.as_os_str().to_string_lossy());
            if made_dirs.insert(dir.clone()) {
                entries.push(Entry::dir(&dir));
            }
        }
        entries.push(Entry::file(&format!("lib/modules/{in_archive}"), 0o644, data));
        list.push_str(&in_archive);
        list.push('\n');
    }
    entries.push(Entry::file(MODULE_LIST, 0o644, list.into_bytes()));
    Ok(())
}

/// Writes a gzip'd newc archive; mtimes are 0 and inodes sequential, so equal inputs give equal bytes.
fn write_cpio_gz(entries: &[Entry], output: &Path) -> anyhow::Result<()> {
    let file = fs::File::create(output)?;
    let encoder = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::new(6));
    let inputs = entries.iter().map(|entry| {
        let mut builder = NewcBuilder::new(&entry.path).mode(entry.mode).uid(0).gid(0).mtime(0).nlink(1);
        if let Some((major, minor)) = entry.rdev {
            builder = builder.rdev_major(major).rdev_minor(minor);
        }
        if entry.mode & 0o170000 == 0o040000 {
            builder = builder.nlink(2);
        }
        (builder, Cursor::new(entry.data.as_slice()))
    });
    let encoder = cpio::write_cpio(inputs, encoder)?;
    let mut writer = encoder.finish()?;
    std::io::Write::flush(&mut writer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULES_DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/net/9p/9pnet.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz
kernel/fs/9p/9p.ko.xz: kernel/fs/netfs/netfs.ko.xz kernel/net/9p/9pnet.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/drivers/cxl/cxl_pci.ko.xz: kernel/drivers/cxl/core/cxl_core.ko.xz
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n";

    fn wanted(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn closure_puts_dependencies_first_once_and_skips_builtins() {
        let index = ModuleIndex::parse("7.3.4+deb13-amd64", MODULES_DEP, BUILTIN);
        let order = index.closure(&wanted(&["virtio_pci", "virtio-blk", "virtio_console", "ext4", "9p", "9pnet_virtio"])).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/block/virtio_blk.ko.xz",
                "kernel/lib/crc16.ko.xz",
                "kernel/fs/mbcache.ko.xz",
                "kernel/fs/jbd2/jbd2.ko.xz",
                "kernel/fs/ext4/ext4.ko.xz",
                "kernel/fs/netfs/netfs.ko.xz",
                "kernel/net/9p/9pnet.ko.xz",
                "kernel/fs/9p/9p.ko.xz",
                "kernel/net/9p/9pnet_virtio.ko.xz",
            ]
        );
    }

    #[test]
    fn closure_names_unknown_and_missing_modules() {
        let index = ModuleIndex::parse("7.3.4", MODULES_DEP, BUILTIN);
        assert_eq!(
            index.closure(&wanted(&["nvme"])).unwrap_err(),
            InitramfsError::UnknownModule { module: "nvme".into(), release: "7.3.4".into() }
        );
        assert_eq!(
            index.closure(&wanted(&["cxl_pci"])).unwrap_err(),
            InitramfsError::MissingDependency { module: "cxl_pci".into(), dependency: "kernel/drivers/cxl/core/cxl_core.ko.xz".into() }
        );
    }

    #[test]
    fn archive_is_reproducible_and_has_a_console() {
        let dir = tempfile::tempdir().unwrap();
        let entries = || {
            vec![
                Entry::dir("dev"),
                Entry { path: "dev/console".into(), mode: 0o020600, data: Vec::new(), rdev: Some((5, 1)) },
                Entry::file("init", 0o755, INIT_SCRIPT.as_bytes().to_vec()),
            ]
        };
        write_cpio_gz(&entries(), &dir.path().join("a")).unwrap();
        write_cpio_gz(&entries(), &dir.path().join("b")).unwrap();
        let bytes = fs::read(dir.path().join("a")).unwrap();
        assert_eq!(bytes, fs::read(dir.path().join("b")).unwrap());

        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut plain).unwrap();
        let mut reader = cpio::NewcReader::new(Cursor::new(plain)).unwrap();
        let mut names = Vec::new();
        while !reader.entry().is_trailer() {
            let entry = reader.entry();
            names.push((entry.name().to_owned(), entry.mode(), entry.rdev_major(), entry.rdev_minor()));
            reader = cpio::NewcReader::new(reader.finish().unwrap()).unwrap();
        }
        assert_eq!(names[1], ("dev/console".to_owned(), 0o020600, 5, 1));
        assert_eq!(names[2].0, "init");
    }

    #[test]
    fn init_script_honours_the_documented_contract() {
        for word in ["cxllab.bare=1", "cxllab.modshare=", "cxllab.rootwait=", "cxllab.rescue=1", "switch_root"] {
            assert!(INIT_SCRIPT.contains(word), "{word}");
        }
        assert!(INIT_SCRIPT.contains(&format!("say \"{}\"", BARE_READY_MARKER.trim_start_matches("cxl-lab: "))));
    }
}
