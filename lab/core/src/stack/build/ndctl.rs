//! ndctl built with its test suite for the guests' root filesystem (the source stack).
//!
//! The build runs in a chroot of a writable copy of the distro stack's debootstrapped tree (the
//! `rootfs-tree` artifact, never modified): `usr/` is hard-linked (dpkg replaces files there by
//! rename, never in place), everything else is copied (apt and dpkg append to logs and rewrite
//! state under `var/` and `etc/`). In the chroot, apt installs [`BUILD_PACKAGES`] from the tree's
//! own sources list, then `meson setup` with [`MESON_OPTIONS`], `meson compile` and `meson
//! install` into a destdir; the installed `ndctl` and `cxl` are run there once (`--version`).
//! Like debootstrap (`rootfs.rs`), each chroot step runs in its own mount and pid namespaces, so
//! none of its processes outlives it.
//!
//! The artifact (`ArtifactKind::Ndctl`) is a tree to lay over the guest's root:
//! - `root/usr/bin/{ndctl,cxl,daxctl}`, `root/usr/lib/x86_64-linux-gnu/lib{ndctl,cxl,daxctl}.so*`,
//!   `root/etc/`;
//! - `root/usr/src/ndctl/`: the source and its meson build directory with the test binaries,
//!   at the path they were built at, so `meson test -C /usr/src/ndctl/build --suite cxl` runs in
//!   a guest that has meson and the runtime libraries (`build-packages.txt` lists what the build
//!   installed; the runtime side of it is what the guest needs);
//! - `version` (`ndctl --version`), `meson-options.txt`, `build-packages.txt`.
//!
//! libcxlmi and mctp have no source reachable here; nothing of this build needs them. The source
//! stack lays `root/` over its root filesystem image (`rootfs::RootOverlay`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use fs_err as fs;

use crate::sys::runner::CommandRunner;

/// meson's options: the test suite, its destructive tests (`cxl`'s need them), no docs
/// (asciidoctor), no systemd units (the unit directory comes from systemd's pkg-config file), and
/// the libraries where Debian's ndctl has them, so the overlay replaces those (`libcxl.so.1`, ...)
/// instead of leaving the guest's `cxl` to load Debian's older ones first.
pub const MESON_OPTIONS: &[&str] = &["-Dtest=enabled", "-Ddestructive=enabled", "-Ddocs=disabled", "-Dsystemd=disabled", "--libdir=lib/x86_64-linux-gnu"];

/// The libraries' directory under the install prefix, as `--libdir` above says.
const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";

/// What the build installs in the chroot (trixie's names).
pub const BUILD_PACKAGES: &[&str] = &[
    "meson",
    "ninja-build",
    "gcc",
    "pkgconf",
    "libkmod-dev",
    "libudev-dev",
    "uuid-dev",
    "libjson-c-dev",
    "libkeyutils-dev",
    "libiniparser-dev",
    "libtraceevent-dev",
    "libtracefs-dev",
    "bash-completion",
];

/// What the build directory records of the build itself (times, durations), which `meson test
/// --no-rebuild` does not read: left out of the artifact so that two builds give the same bytes.
pub const BUILD_LOGS: &[&str] = &[".ninja_log", ".ninja_deps", "meson-logs/meson-log.txt"];

/// `meson setup` through this launcher. meson keeps random names in the build directory's state
/// (`meson-private/*.dat`, `meson-info/`), which `meson test` reads, so it cannot be left out:
/// each anonymous dependency is `dep<uuid4>`, and the compiler checks' cache holds their
/// temporary file names (meson's and gcc's). Counting ids, and the checks' cache dropped when
/// the state is saved (a cache: a regeneration runs the checks again), give two setups the same
/// state. `argv[0]` stays `/usr/bin/meson`: meson records its own command for regeneration, and
/// the guest has no launcher. Part of the key.
pub const MESON_LAUNCHER: &str = "import itertools, sys, uuid\n\
ids = itertools.count(1)\n\
uuid.uuid4 = lambda: uuid.UUID(int=next(ids))\n\
from mesonbuild import coredata\n\
save = coredata.save\n\
def save_without_checks(data, build_dir):\n\
\x20   data.compiler_check_cache.clear()\n\
\x20   data.run_check_cache.clear()\n\
\x20   return save(data, build_dir)\n\
coredata.save = save_without_checks\n\
sys.argv[0] = '/usr/bin/meson'\n\
from mesonbuild.mesonmain import main\n\
sys.exit(main())\n";

/// Where the source and build tree live, in the chroot and in the guest.
pub const GUEST_SOURCE_DIR: &str = "usr/src/ndctl";

/// The tree to lay over the guest's root.
pub fn root_dir(artifact: &Path) -> PathBuf {
    artifact.join("root")
}

/// The build directory with the test binaries.
pub fn build_dir(artifact: &Path) -> PathBuf {
    root_dir(artifact).join(GUEST_SOURCE_DIR).join("build")
}

pub fn version_file(artifact: &Path) -> PathBuf {
    artifact.join("version")
}

/// Builds ndctl from the source tree `source` (moved into the chroot) against the debootstrapped
/// `tree` into `staging` (the artifact layout above). `version_tag` is what `--version` prints.
pub fn build(staging: &Path, tree: &Path, source: &Path, version_tag: &str, runner: &CommandRunner) -> anyhow::Result<String> {
    if !crate::sys::process::is_root() {
        anyhow::bail!("ndctl is built in a chroot of the root filesystem's tree: run the build as root");
    }
    let chroot = staging.join("chroot");
    writable_copy(tree, &chroot, runner)?;
    // The chroot's apt resolves names with the host's resolver configuration.
    let resolv = chroot.join("etc/resolv.conf");
    if resolv.symlink_metadata().is_ok() {
        fs::remove_file(&resolv)?;
    }
    fs::copy("/etc/resolv.conf", &resolv).context("copying /etc/resolv.conf into the build chroot")?;
    let source_in_chroot = chroot.join(GUEST_SOURCE_DIR);
    fs::create_dir_all(source_in_chroot.parent().context("the source dir has a parent")?)?;
    fs::rename(source, &source_in_chroot)?;

    fs::write(chroot.join("ndctl-deps.sh"), deps_script())?;
    runner.run("ndctl-deps", &mut in_chroot(&chroot, "/ndctl-deps.sh"))?;
    fs::write(chroot.join("ndctl-build.sh"), build_script(version_tag))?;
    fs::write(chroot.join("ndctl-meson.py"), MESON_LAUNCHER)?;
    runner.run("ndctl-build", &mut in_chroot(&chroot, "/ndctl-build.sh"))?;

    let root = root_dir(staging);
    fs::rename(chroot.join("ndctl-dest"), &root)?;
    let source_in_root = root.join(GUEST_SOURCE_DIR);
    fs::create_dir_all(source_in_root.parent().context("the source dir has a parent")?)?;
    fs::rename(&source_in_chroot, &source_in_root)?;
    for log in BUILD_LOGS {
        let path = build_dir(staging).join(log);
        if path.exists() {
            fs::remove_file(path)?;
        }
    }
    let version = fs::read_to_string(chroot.join("ndctl-version.txt"))?.trim().to_owned();
    fs::write(version_file(staging), format!("{version}\n"))?;
    fs::copy(chroot.join("build-packages.txt"), staging.join("build-packages.txt"))?;
    fs::write(staging.join("meson-options.txt"), MESON_OPTIONS.join("\n") + "\n")?;
    fs::remove_dir_all(&chroot)?;
    Ok(version)
}

/// `tree` into `dest`: `usr/` hard-linked, the rest copied.
fn writable_copy(tree: &Path, dest: &Path, runner: &CommandRunner) -> anyhow::Result<()> {
    fs::create_dir_all(dest)?;
    let mut copy = Command::new("cp");
    copy.arg("-a");
    let mut any = false;
    for entry in fs::read_dir(tree)? {
        let entry = entry?;
        if entry.file_name() == "usr" {
            runner.run("ndctl-chroot-link", Command::new("cp").arg("-al").arg(entry.path()).arg(dest.join("usr")))?;
        } else {
            copy.arg(entry.path());
            any = true;
        }
    }
    if any {
        runner.run("ndctl-chroot-copy", copy.arg(dest))?;
    }
    Ok(())
}

fn in_chroot(chroot: &Path, script: &str) -> Command {
    let mut command = Command::new(crate::stack::host::program("unshare"));
    command
        .args(super::rootfs::PRIVATE_NAMESPACES)
        .arg(crate::stack::host::program("chroot"))
        .arg(chroot)
        .args(["/bin/sh", "-ex", script])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C.UTF-8")
        .env("PYTHONHASHSEED", "0")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

fn deps_script() -> String {
    format!(
        "apt-get -o Acquire::Retries=3 update\n\
         apt-get install -y --no-install-recommends {}\n\
         dpkg-query -W -f '${{Package}} ${{Version}}\\n' {} > /build-packages.txt\n",
        BUILD_PACKAGES.join(" "),
        BUILD_PACKAGES.join(" ")
    )
}

fn build_script(version_tag: &str) -> String {
    format!(
        "cd /{GUEST_SOURCE_DIR}\n\
         python3 /ndctl-meson.py setup build --prefix=/usr --sysconfdir=/etc -Dversion-tag={version_tag} {}\n\
         meson compile -C build\n\
         DESTDIR=/ndctl-dest meson install -C build\n\
         LD_LIBRARY_PATH=/ndctl-dest/{LIB_DIR} /ndctl-dest/usr/bin/ndctl --version > /ndctl-version.txt\n\
         LD_LIBRARY_PATH=/ndctl-dest/{LIB_DIR} /ndctl-dest/usr/bin/cxl --version\n",
        MESON_OPTIONS.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_asks_for_the_tests() {
        let script = build_script("81");
        assert!(script.contains("-Dtest=enabled -Ddestructive=enabled"), "{script}");
        assert!(script.contains("-Dversion-tag=81"), "{script}");
        assert!(script.contains("python3 /ndctl-meson.py setup build"), "setup goes through the launcher: {script}");
    }
}
