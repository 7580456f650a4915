//! Host setup: the programs cxl-lab runs on the host, which Debian package provides each, and
//! installing the missing ones.
//!
//! As root, `host setup` installs through apt with a private sources list (the host's release and
//! its backports) but the host's real dpkg status: the host's `/etc/apt` is not touched and needs
//! no backports line. QEMU, qemu-utils and debootstrap come together from the host release's
//! backports: taking qemu-system-x86 from one suite and qemu-utils from another removed the newer
//! qemu-utils on this machine. Not root, the exact `apt-get install` line is printed instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::apt::PrivateApt;
use crate::images::{ArchiveRecipe, HOST_BACKPORTS};
use crate::render::features::{parse_qemu_version, QemuVersion};
use crate::runner::CommandRunner;

/// A host program and the Debian package (and suite word) that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTool {
    pub program: &'static str,
    pub package: &'static str,
    /// `host-backports` or `host`.
    pub suite: &'static str,
    pub purpose: &'static str,
}

pub const HOST_TOOLS: &[HostTool] = &[
    HostTool { program: "qemu-system-x86_64", package: "qemu-system-x86", suite: HOST_BACKPORTS, purpose: "runs the lab" },
    HostTool { program: "qemu-img", package: "qemu-utils", suite: HOST_BACKPORTS, purpose: "makes VM disk overlays" },
    HostTool { program: "debootstrap", package: "debootstrap", suite: HOST_BACKPORTS, purpose: "builds the root filesystem" },
    HostTool { program: "mkfs.ext4", package: "e2fsprogs", suite: "host", purpose: "makes the root filesystem image" },
    HostTool { program: "dpkg-deb", package: "dpkg", suite: "host", purpose: "unpacks downloaded packages" },
    HostTool { program: "apt-get", package: "apt", suite: "host", purpose: "resolves packages in the Debian archive" },
    HostTool { program: "depmod", package: "kmod", suite: "host", purpose: "indexes kernel modules" },
    HostTool { program: "ssh-keygen", package: "openssh-client", suite: "host", purpose: "makes the per-lab SSH key" },
];

/// Where the archive's signing keys come from; checked like a program.
const KEYRING_PACKAGE: &str = "debian-archive-keyring";

#[derive(Clone, Debug, Default)]
pub struct HostReport {
    pub found: Vec<(HostTool, PathBuf)>,
    pub missing: Vec<HostTool>,
    pub keyring_missing: bool,
}

impl HostReport {
    pub fn is_ready(&self) -> bool {
        self.missing.is_empty() && !self.keyring_missing
    }

    /// The packages to install, `name/suite` for those that must come from a given suite.
    pub fn install_arguments(&self, host_codename: &str) -> Vec<String> {
        let mut arguments: Vec<String> = Vec::new();
        for tool in &self.missing {
            let argument = if tool.suite == HOST_BACKPORTS {
                format!("{}/{}", tool.package, crate::apt::concrete_suite(tool.suite, host_codename))
            } else {
                tool.package.to_owned()
            };
            if !arguments.contains(&argument) {
                arguments.push(argument);
            }
        }
        // qemu-utils must move with qemu-system-x86: one suite for both, or apt removes one.
        if self.missing.iter().any(|tool| tool.package == "qemu-system-x86") {
            let utils = format!("qemu-utils/{host_codename}-backports");
            if !arguments.contains(&utils) {
                arguments.push(utils);
            }
        }
        if self.keyring_missing {
            arguments.push(KEYRING_PACKAGE.to_owned());
        }
        arguments
    }

    /// The line a user runs by hand (not root).
    pub fn install_line(&self, host_codename: &str) -> String {
        format!(
            "sudo apt-get install --no-install-recommends {}  # needs {host_codename}-backports in your apt sources; `sudo cargo xtask host setup` does not",
            self.install_arguments(host_codename).join(" ")
        )
    }
}

/// Looks for every host tool.
pub fn check(keyring: &Path) -> HostReport {
    let mut report = HostReport::default();
    for tool in HOST_TOOLS {
        match find_program(tool.program) {
            Some(path) => report.found.push((*tool, path)),
            None => report.missing.push(*tool),
        }
    }
    report.keyring_missing = !keyring.is_file();
    report
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

/// Makes sure the host tools running `programs` are there (all of them when empty): installs the
/// missing ones as root, otherwise fails with the exact `apt-get install` line. Costs a few
/// `stat`s when nothing is missing.
pub fn ensure_tools(
    programs: &[&str],
    apt_dir: &Path,
    archive: &ArchiveRecipe,
    runner: &CommandRunner,
    shell: &crate::Shell,
) -> anyhow::Result<()> {
    let mut report = check(&archive.keyring);
    if !programs.is_empty() {
        report.missing.retain(|tool| programs.contains(&tool.program));
    }
    if report.is_ready() {
        return Ok(());
    }
    let codename = crate::apt::host_codename()?;
    if !is_root() {
        anyhow::bail!("host programs are missing; install them with:\n  {}", report.install_line(&codename));
    }
    let progress = shell.step(&format!("installing host packages: {}", report.install_arguments(&codename).join(" ")));
    install(&report, apt_dir, archive, runner)?;
    progress.done("installed");
    Ok(())
}

pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        // The effective uid is the second field of `Uid:`; no libc binding needed for it.
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| line.strip_prefix("Uid:").map(|ids| ids.split_whitespace().nth(1) == Some("0")))
            })
            .unwrap_or(false)
    })
}

/// Installs what `report` lists as missing (root only).
pub fn install(
    report: &HostReport,
    apt_dir: &Path,
    archive: &ArchiveRecipe,
    runner: &CommandRunner,
) -> anyhow::Result<()> {
    let codename = crate::apt::host_codename()?;
    if !is_root() {
        anyhow::bail!("installing host packages needs root; run:\n  {}", report.install_line(&codename));
    }
    let suites = vec![codename.clone(), format!("{codename}-backports")];
    let mut apt = PrivateApt::new(apt_dir, &archive.mirror, &suites, &archive.keyring);
    apt.host_status = true;
    apt.update(runner).map_err(anyhow::Error::from)?;
    let mut command = apt.command("apt-get");
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(report.install_arguments(&codename));
    runner.run("host-install", &mut command)?;
    Ok(())
}

/// `qemu-system-x86_64 --version` → (major, minor, patch), run through the runner so it is logged.
pub fn qemu_version(runner: &CommandRunner, qemu: &Path) -> anyhow::Result<QemuVersion> {
    let output = runner.run_capture("qemu-version", Command::new(qemu).arg("--version"))?;
    parse_qemu_version(&output).ok_or_else(|| anyhow::anyhow!("cannot read a version in `{} --version`: {output}", qemu.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_line_keeps_qemu_packages_in_one_suite() {
        let report = HostReport {
            missing: vec![HOST_TOOLS[0], HOST_TOOLS[3]],
            ..HostReport::default()
        };
        assert_eq!(
            report.install_arguments("bookworm"),
            ["qemu-system-x86/bookworm-backports", "e2fsprogs", "qemu-utils/bookworm-backports"]
        );
        assert!(report.install_line("bookworm").starts_with(
            "sudo apt-get install --no-install-recommends qemu-system-x86/bookworm-backports e2fsprogs qemu-utils/bookworm-backports"
        ));
    }

    #[test]
    fn finds_programs_in_sbin() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-cxl-lab").is_none());
    }
}
