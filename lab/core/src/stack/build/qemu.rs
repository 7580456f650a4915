//! The QEMU artifact: `qemu-system-x86_64` (and `qemu-img`, which the lab's overlays use from
//! beside it) built from an unpacked source tree, with Debian's firmware.
//!
//! Layout of a published QEMU artifact:
//!
//! ```text
//! usr/bin/qemu-system-x86_64, qemu-img, ...
//! usr/share/qemu/        QEMU's data and the firmware (bios-256k.bin, efi-*.rom, linuxboot_dma.bin, ...)
//! version                what `qemu-system-x86_64 --version` said after the build
//! configure.txt          the configure command line
//! ```
//!
//! QEMU finds its data directory relative to its binary, so the artifact runs from anywhere; the
//! firmware directory is also what `-L` takes. The build is `configure` with [`CONFIGURE_OPTIONS`]
//! (the x86_64 system emulator only; user networking for the SSH forward and virtfs for the 9p
//! shares are required, so a missing library fails configure instead of building a QEMU the lab
//! cannot use, and no debug information; the build's directories written as `src` and `build` in
//! the binaries, so two builds give the same bytes), then ninja of [`PROGRAMS`] only (not QEMU's unit and
//! qtest programs, which `ninja` alone builds too), copied into the artifact. Debian's `+ds` source
//! and release tarballs carry no usable ROMs (`--disable-install-blobs`): the firmware is copied
//! from Debian's seabios, ipxe-qemu and qemu-system-data packages (`/usr/share/qemu`,
//! `/usr/share/seabios`, `/usr/lib/ipxe/qemu`, symlinks resolved inside the unpacked packages),
//! and the build fails without the BIOS and the virtio NIC's ROM: never an empty placeholder.
//!
//! Python: configure runs with the system Python (`/usr/bin/python3`) and `--disable-download`,
//! so its venv finds meson (>= 1.5) and pycotap from the host packages `host setup --stack source`
//! installs (bookworm-backports), and nothing is fetched while building.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use fs_err as fs;

use crate::qemu::QemuVersion;
use crate::stack::debian::apt;
use crate::sys::runner::CommandRunner;

/// What configure is given besides `--prefix`; part of the artifact's key.
pub const CONFIGURE_OPTIONS: &[&str] = &[
    "--target-list=x86_64-softmmu",
    "--python=/usr/bin/python3",
    "--disable-download",
    "--disable-install-blobs",
    "--disable-docs",
    "--disable-werror",
    "--disable-user",
    "--disable-guest-agent",
    "--disable-gtk",
    "--disable-sdl",
    "--disable-opengl",
    "--disable-spice",
    "--disable-vnc",
    "--disable-xen",
    "--disable-rust",
    "--disable-debug-info",
    "--enable-slirp",
    "--enable-virtfs",
    "--enable-kvm",
    "--enable-tools",
];

/// The install prefix inside the artifact.
const PREFIX: &str = "/usr";

/// What the lab runs of a QEMU build, the only ninja targets built: the emulator, and `qemu-img`
/// for the disk overlays (found beside the emulator). Part of the artifact's key.
pub const PROGRAMS: &[&str] = &["qemu-system-x86_64", "qemu-img"];

pub fn binary_path(artifact: &Path) -> PathBuf {
    artifact.join("usr/bin/qemu-system-x86_64")
}

/// Where the firmware and QEMU's data are: what `-L` takes.
pub fn firmware_dir(artifact: &Path) -> PathBuf {
    artifact.join("usr/share/qemu")
}

/// The version the build recorded (no process is started).
pub fn recorded_version(artifact: &Path) -> anyhow::Result<QemuVersion> {
    let path = artifact.join("version");
    let text = fs::read_to_string(&path)?;
    QemuVersion::from_version_output(&text).with_context(|| format!("{} holds no QEMU version", path.display()))
}

/// Builds QEMU from the tree at `source` into `staging` (the artifact), building in `build_dir`
/// (removed afterwards), and copies the firmware of `firmware_debs` in. `log` shows progress.
pub fn build(source: &Path, build_dir: &Path, staging: &Path, firmware_debs: &[PathBuf], runner: &CommandRunner) -> anyhow::Result<QemuVersion> {
    fs::create_dir_all(build_dir)?;
    let mut configure = Command::new(source.join("configure"));
    configure.current_dir(build_dir).arg(format!("--prefix={PREFIX}")).args(CONFIGURE_OPTIONS);
    // The places of this build (temporary directories) stay out of the binaries, where the paths
    // of headers' assertions (`__FILE__`) would put them: two builds give the same bytes.
    configure.arg(format!("--extra-cflags={}", relative_paths(source, build_dir)));
    runner.run("qemu-configure", &mut configure)?;
    runner.run("qemu-build", Command::new("ninja").arg("-C").arg(build_dir).args(PROGRAMS))?;
    let bin = staging.join(PREFIX.trim_start_matches('/')).join("bin");
    fs::create_dir_all(&bin)?;
    for program in PROGRAMS {
        fs::copy(build_dir.join(program), bin.join(program))?;
    }
    fs::remove_dir_all(build_dir)?;

    install_firmware(staging, firmware_debs, runner)?;
    let binary = binary_path(staging);
    if !binary.is_file() {
        anyhow::bail!("the QEMU build installed no {}", binary.display());
    }
    let said = runner.run_capture("qemu-version", Command::new(&binary).arg("--version"))?;
    let version = QemuVersion::from_version_output(&said).with_context(|| format!("cannot read a version in `{} --version`: {said}", binary.display()))?;
    fs::write(staging.join("version"), said)?;
    let line: Vec<String> = std::iter::once(format!("--prefix={PREFIX}")).chain(CONFIGURE_OPTIONS.iter().map(|option| option.to_string())).collect();
    fs::write(staging.join("configure.txt"), line.join(" ") + "\n")?;
    Ok(version)
}

/// The compiler options that write `source` as `src` and `build_dir` as `build` in the output
/// ([`RELATIVE_PATHS`] in the key says so).
fn relative_paths(source: &Path, build_dir: &Path) -> String {
    format!("-ffile-prefix-map={}=src -ffile-prefix-map={}=build", source.display(), build_dir.display())
}

/// Part of the artifact's key: the build maps its directories to `src` and `build`.
pub const RELATIVE_PATHS: &str = "-ffile-prefix-map <source>=src <build>=build";

/// Where Debian's firmware packages put what QEMU loads: QEMU's own data, SeaBIOS (BIOS and VGA
/// BIOS) and the iPXE option ROMs. Debian's QEMU searches them all (`--firmwarepath`); the built
/// one finds them in its data directory, where they are copied in this order.
const FIRMWARE_DIRS: &[&str] = &["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"];

/// ROMs every lab machine loads: the BIOS and the virtio NIC's option ROM.
const REQUIRED_FIRMWARE: &[&str] = &["bios-256k.bin", "efi-virtio.rom"];

/// Unpacks the firmware packages and copies their firmware directories into the artifact's data
/// directory, each symlink replaced by the file it names inside the unpacked packages.
pub fn install_firmware(staging: &Path, debs: &[PathBuf], runner: &CommandRunner) -> anyhow::Result<()> {
    let unpacked = staging.join("firmware-debs");
    for deb in debs {
        apt::extract(runner, deb, &unpacked)?;
    }
    let to = firmware_dir(staging);
    let mut copied = 0;
    for dir in FIRMWARE_DIRS.iter().map(|dir| unpacked.join(dir)).filter(|dir| dir.is_dir()) {
        copied += copy_resolved(&unpacked, &dir, &to)?;
    }
    fs::remove_dir_all(&unpacked)?;
    if let Some(missing) = REQUIRED_FIRMWARE.iter().find(|name| !to.join(name).is_file()) {
        anyhow::bail!("the firmware packages hold no {missing} in {} (copied {copied} files)", FIRMWARE_DIRS.join(", "));
    }
    Ok(())
}

/// Copies the tree `from` into `to`, following symlinks inside `root` (absolute targets are read
/// below `root`); returns how many files it copied. A link leading out of `root` or nowhere is
/// an error.
fn copy_resolved(root: &Path, from: &Path, to: &Path) -> anyhow::Result<usize> {
    fs::create_dir_all(to)?;
    let mut copied = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let target = resolve_inside(root, &path)?;
        let destination = to.join(entry.file_name());
        if target.is_dir() {
            copied += copy_resolved(root, &target, &destination)?;
        } else {
            if destination.exists() {
                fs::remove_file(&destination)?;
            }
            fs::copy(&target, &destination)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Follows `path`'s symlinks as if `root` were `/`.
fn resolve_inside(root: &Path, path: &Path) -> anyhow::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..16 {
        let metadata = fs::symlink_metadata(&current)?;
        if !metadata.is_symlink() {
            return Ok(current);
        }
        let link = fs::read_link(&current)?;
        current = match link.strip_prefix("/") {
            Ok(relative) => root.join(relative),
            Err(_) => current.parent().unwrap_or(root).join(link),
        };
        if !current.starts_with(root) || !current.exists() {
            anyhow::bail!("{} points to {}, which the firmware packages do not hold", path.display(), current.display());
        }
    }
    anyhow::bail!("{} is a symlink loop", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_symlinks_are_resolved_inside_the_packages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("usr/share/seabios")).unwrap();
        fs::create_dir_all(root.join("usr/share/qemu/keymaps")).unwrap();
        fs::write(root.join("usr/share/seabios/bios-256k.bin"), b"bios").unwrap();
        fs::write(root.join("usr/share/qemu/keymaps/en-us"), b"map").unwrap();
        std::os::unix::fs::symlink("/usr/share/seabios/bios-256k.bin", root.join("usr/share/qemu/bios-256k.bin")).unwrap();
        std::os::unix::fs::symlink("../seabios/bios-256k.bin", root.join("usr/share/qemu/bios.bin")).unwrap();
        let to = dir.path().join("out");
        assert_eq!(copy_resolved(&root, &root.join("usr/share/qemu"), &to).unwrap(), 3);
        assert_eq!(fs::read(to.join("bios-256k.bin")).unwrap(), b"bios");
        assert_eq!(fs::read(to.join("bios.bin")).unwrap(), b"bios");
        assert!(!fs::symlink_metadata(to.join("bios.bin")).unwrap().is_symlink());

        std::os::unix::fs::symlink("/usr/lib/ipxe/qemu/efi-e1000.rom", root.join("usr/share/qemu/efi-e1000.rom")).unwrap();
        let error = copy_resolved(&root, &root.join("usr/share/qemu"), &dir.path().join("out2")).unwrap_err().to_string();
        assert!(error.contains("efi-e1000.rom points to"), "{error}");
    }
}
