//! Snapshots of what every shipped profile becomes: the QEMU argv (with and without a guest, and
//! for a pre-8.1 QEMU), the expected guest view and the tree. Review changes with
//! `cargo insta review`; a changed argv is a changed lab.

use std::path::{Path, PathBuf};

use cxl_lab_core::model::expect::expected_view;
use cxl_lab_core::paths::MachineRunDir;
use cxl_lab_core::profile::load_topology;
use cxl_lab_core::render::{picture, render_with_templates, Accel, BootMedia, RenderInputs};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped_profiles() -> Vec<(String, cxl_lab_core::model::Topology)> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("profiles"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 7, "expected the shipped profiles, found {names:?}");
    names
        .into_iter()
        .map(|name| {
            let topology = load_topology(&workspace().join(format!("profiles/{name}.yaml"))).unwrap();
            (name, topology)
        })
        .collect()
}

/// Fixed inputs so snapshots do not depend on the machine.
fn inputs(host: &str, version: (u32, u32, u32), boot: bool) -> RenderInputs {
    RenderInputs {
        qemu_binary: PathBuf::from("qemu-system-x86_64"),
        qemu_version: version,
        run_dir: MachineRunDir::new(format!("/lab/run/{host}")),
        memory_dir: PathBuf::from("/lab/memory"),
        accel: Accel::Tcg,
        paused: false,
        boot: boot.then(|| BootMedia {
            kernel: PathBuf::from("/cache/kernel/vmlinuz"),
            initrd: Some(PathBuf::from("/cache/kernel/initrd.img")),
            rootfs_overlay: PathBuf::from(format!("/lab/run/{host}/rootfs.qcow2")),
            modules_dir: PathBuf::from("/cache/kernel/modules"),
            data_dir: PathBuf::from("/lab/share"),
            ssh_port: Some(10022),
            extra_cmdline: vec!["quiet".to_owned()],
        }),
    }
}

fn argv_text(topology: &cxl_lab_core::model::Topology, version: (u32, u32, u32), boot: bool) -> String {
    let mut text = String::new();
    for (index, host) in topology.hosts.iter().enumerate() {
        let rendered =
            render_with_templates(&workspace().join("templates"), topology, index, &inputs(&host.name, version, boot)).unwrap();
        text.push_str(&format!("# host {}\n{}\n", host.name, rendered.argv.join("\n")));
    }
    text
}

#[test]
fn rendered_argv_of_every_profile() {
    for (name, topology) in shipped_profiles() {
        insta::assert_snapshot!(format!("argv_{name}"), argv_text(&topology, (10, 0, 2), false));
    }
}

#[test]
fn rendered_argv_with_a_guest() {
    for (name, topology) in shipped_profiles() {
        if name == "seed" || name == "shared" {
            insta::assert_snapshot!(format!("boot_argv_{name}"), argv_text(&topology, (10, 0, 2), true));
        }
    }
}

#[test]
fn seed_renders_the_deprecated_memdev_before_qemu_8_1() {
    let (_, seed) = shipped_profiles().into_iter().find(|(name, _)| name == "seed").unwrap();
    let old = argv_text(&seed, (8, 0, 0), false);
    assert!(old.contains("cxl-type3,bus=root_port13,id=cxl-pmem0,sn=100,memdev=cxl-mem1,lsa=cxl-lsa1"), "{old}");
    let new = argv_text(&seed, (8, 1, 0), false);
    assert!(new.contains(",persistent-memdev=cxl-mem1,"), "{new}");
}

#[test]
fn refuses_features_the_qemu_lacks() {
    let (_, dcd) = shipped_profiles().into_iter().find(|(name, _)| name == "dcd").unwrap();
    let error = render_with_templates(&workspace().join("templates"), &dcd, 0, &inputs("host0", (9, 0, 0), false))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "profile `dcd` cannot run on this QEMU:\n  device `cxl-dcd0`: dynamic_capacity needs QEMU 9.1 or newer; this QEMU is 9.0.0"
    );
}

#[test]
fn expected_view_of_every_profile() {
    for (name, topology) in shipped_profiles() {
        insta::assert_json_snapshot!(format!("expect_{name}"), expected_view(&topology));
    }
}

#[test]
fn tree_of_every_profile() {
    for (name, topology) in shipped_profiles() {
        insta::assert_snapshot!(format!("tree_{name}"), picture::tree(&topology));
    }
}

#[test]
fn dot_of_the_shared_profile() {
    let (_, shared) = shipped_profiles().into_iter().find(|(name, _)| name == "shared").unwrap();
    insta::assert_snapshot!("dot_shared", picture::dot(&shared));
}
