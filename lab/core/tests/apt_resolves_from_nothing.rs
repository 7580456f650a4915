//! The packages the lab installs resolve on a machine that has none of them: apt in simulate mode
//! (`apt-get -s`) against a private, empty dpkg status, with the same plan `host setup` runs. So
//! CI fails on a resolution defect even where the packages are already installed (issue 7: on a
//! fresh bookworm, QEMU from backports failed with "held broken packages" while a machine that had
//! QEMU's libraries installed it fine). The root filesystem's package list is resolved the same way
//! in its own suite. Needs the Debian archive; no root.

use std::path::{Path, PathBuf};

use cxl_lab_core::stack::debian::apt::{self, PrivateApt, SimulatedInstall};
use cxl_lab_core::stack::host::{self, HostReport, Outdated, HOST_TOOLS, QEMU_TOOL};
use cxl_lab_core::stack::recipe::{self, LoadedRecipe};
use cxl_lab_core::prerequisites::{require, Prerequisite};
use cxl_lab_core::qemu::QemuVersion;
use cxl_lab_core::stack::StackKind;
use cxl_lab_core::sys::runner::CommandRunner;

fn recipe() -> LoadedRecipe {
    recipe::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images"), cxl_lab_core::stack::StackKind::Distro).unwrap()
}

/// A scratch apt directory of this test binary's (lists are kept between runs, refreshed when old).
fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("apt-from-nothing").join(name)
}

fn runner() -> CommandRunner {
    CommandRunner::new(scratch("logs"))
}

/// The host release's apt (release and backports), with a private status that `status` fills.
fn host_apt(name: &str, status: &str) -> PrivateApt {
    let recipe = recipe();
    let codename = apt::host_codename().unwrap();
    let apt = host::host_apt(&scratch(name), &recipe.recipe.archive, &codename);
    apt.ensure_lists(&runner()).unwrap();
    std::fs::write(apt.status_path(), status).unwrap();
    apt
}

/// Simulates every apt run of `report`'s plan; each named package must be among the installs.
fn simulate_plan(apt: &PrivateApt, report: &HostReport) -> Vec<SimulatedInstall> {
    let codename = apt::host_codename().unwrap();
    let mut installs = Vec::new();
    for run in report.install_plan(&codename) {
        let simulated = apt
            .simulate(&runner(), &run.arguments())
            .unwrap_or_else(|error| panic!("`apt-get {}` does not resolve from an empty machine:\n{error}", run.arguments().join(" ")));
        for package in &run.packages {
            assert!(simulated.iter().any(|install| install.package == *package), "{package} is not installed by {run:?}");
        }
        installs.extend(simulated);
    }
    installs
}

/// The QEMU version a Debian package version carries (`1:10.0.2+ds-2` → 10.0.2).
fn qemu_version_of(package_version: &str) -> QemuVersion {
    let upstream = package_version.split_once(':').map_or(package_version, |(_, rest)| rest);
    QemuVersion::from_version_output(&format!("QEMU emulator version {}", upstream.split(['+', '-', '~']).next().unwrap())).unwrap()
}

fn minimum_qemu() -> QemuVersion {
    recipe().recipe.qemu.minimum_version.expect("the recipe names a minimum QEMU")
}

fn assert_qemu_new_enough(installs: &[SimulatedInstall]) {
    let qemu = installs.iter().find(|install| install.package == QEMU_TOOL.package).expect("QEMU is installed");
    let version = qemu_version_of(&qemu.version);
    assert!(version >= minimum_qemu(), "host setup would install QEMU {version:?} ({}, {})", qemu.version, qemu.origin);
}

#[test]
fn host_setup_resolves_on_a_machine_without_any_host_package() {
    if !require(&[Prerequisite::Archive]) {
        return;
    }
    let apt = host_apt("empty", "");
    let report = HostReport { missing: HOST_TOOLS.to_vec(), keyring_missing: true, ..HostReport::default() };
    let installs = simulate_plan(&apt, &report);
    assert_qemu_new_enough(&installs);
}

#[test]
fn host_setup_of_the_source_stack_resolves_from_nothing() {
    if !require(&[Prerequisite::Archive]) {
        return;
    }
    // The lab's tools and the source stack's build tools (meson and pycotap from backports).
    let apt = host_apt("empty-source", "");
    let report = HostReport { missing: host::tools_for(StackKind::Source), keyring_missing: true, ..HostReport::default() };
    let installs = simulate_plan(&apt, &report);
    let meson = installs.iter().find(|install| install.package == "meson").expect("meson is installed");
    assert!(meson.origin.contains("Backports"), "meson {} comes from {}, not backports (QEMU needs >= 1.5)", meson.version, meson.origin);
    assert_qemu_new_enough(&installs);
}

#[test]
fn host_setup_replaces_the_host_releases_older_qemu() {
    if !require(&[Prerequisite::Archive]) {
        return;
    }
    // A machine where the host release's own QEMU (bookworm: 7.2) is installed: its status is what
    // apt would install for it from the release alone, each stanza marked installed.
    let apt = host_apt("old-qemu", "");
    let old = apt
        .simulate(&runner(), &["install".into(), "--no-install-recommends".into(), format!("{}/{}", QEMU_TOOL.package, apt.suites[0]), "qemu-utils".into()])
        .unwrap();
    let old_qemu = old.iter().find(|install| install.package == QEMU_TOOL.package).unwrap();
    let old_version = qemu_version_of(&old_qemu.version);
    if old_version >= minimum_qemu() {
        eprintln!("the host release's own QEMU ({}) is new enough: nothing to replace here", old_qemu.version);
        return;
    }
    let mut status = String::new();
    for install in &old {
        let stanza = apt.exact(&runner(), &install.package, &install.version).unwrap();
        status.push_str(&format!(
            "Package: {}\nStatus: install ok installed\nPriority: optional\nSection: misc\nArchitecture: {}\nVersion: {}\n{}\n",
            stanza.package,
            stanza.architecture,
            stanza.version,
            if stanza.depends.is_empty() { String::new() } else { format!("Depends: {}\n", stanza.depends) },
        ));
    }
    std::fs::write(apt.status_path(), status).unwrap();

    let report = HostReport {
        outdated: vec![Outdated { tool: QEMU_TOOL, path: "/usr/bin/qemu-system-x86_64".into(), version: old_version, minimum: minimum_qemu() }],
        ..HostReport::default()
    };
    let installs = simulate_plan(&apt, &report);
    assert_qemu_new_enough(&installs);
}

#[test]
fn rootfs_packages_resolve_in_their_suite_from_nothing() {
    if !require(&[Prerequisite::Archive]) {
        return;
    }
    let recipe = recipe();
    let rootfs = &recipe.recipe.rootfs;
    let mirror = rootfs.mirror.as_deref().unwrap_or(&recipe.recipe.archive.mirror);
    let apt = PrivateApt::new(&scratch("rootfs"), mirror, std::slice::from_ref(&rootfs.suite), &recipe.recipe.archive.keyring);
    apt.ensure_lists(&runner()).unwrap();
    std::fs::write(apt.status_path(), "").unwrap();
    let mut arguments = vec!["install".to_owned(), "--no-install-recommends".to_owned()];
    arguments.extend(rootfs.packages.iter().cloned());
    let installs = apt
        .simulate(&runner(), &arguments)
        .unwrap_or_else(|error| panic!("the root filesystem's packages do not resolve in {}:\n{error}", rootfs.suite));
    for package in &rootfs.packages {
        assert!(installs.iter().any(|install| install.package == *package), "{package} is not installed");
    }
}
