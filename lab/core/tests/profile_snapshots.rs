//! Snapshots of what every shipped profile becomes: the QEMU argv (with and without a guest, for
//! a pre-8.1 QEMU, and for a QEMU with the lab's capability device), the expected guest view and
//! the tree. Review changes with
//! `cargo insta review`; a changed argv is a changed lab.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cxl_lab_core::model::expect::expected_view;
use cxl_lab_core::model::validate::id_wellformed;
use cxl_lab_core::model::{Host, Topology};
use cxl_lab_core::lab::virtme::cxl_machine_options;
use cxl_lab_core::layout::MachineRunDir;
use cxl_lab_core::profile::load_topology;
use cxl_lab_core::qemu::{Accel, QemuVersion};
use cxl_lab_core::render::{picture, render_with_templates, BootMedia, RenderInputs};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped_profiles() -> Vec<(String, Topology)> {
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
fn inputs(host: &str, version: QemuVersion, boot: bool) -> RenderInputs {
    let run_dir = MachineRunDir::new(format!("/lab/run/{host}"));
    let boot = boot.then(|| BootMedia {
            kernel: PathBuf::from("/cache/kernel/vmlinuz"),
            initrd: Some(PathBuf::from("/cache/kernel/initrd.img")),
            rootfs_overlay: PathBuf::from(format!("/lab/run/{host}/rootfs.qcow2")),
            modules_dir: PathBuf::from("/cache/kernel/modules"),
            data_dir: PathBuf::from("/lab/share"),
            ssh_port: Some(10022),
            // The full boot (systemd); the lean boot's command line is `lab::plan`'s test.
            init: None,
            extra_cmdline: vec!["quiet".to_owned()],
        });
    RenderInputs::new(Path::new("qemu-system-x86_64"), version, None, run_dir, Path::new("/lab/memory"), Accel::Tcg, boot)
}

/// Each host's argv.
fn render_hosts(topology: &Topology, version: QemuVersion, boot: bool) -> Vec<(&Host, Vec<String>)> {
    render_hosts_with(topology, |host| inputs(host, version, boot))
}

/// Each host's argv, from the inputs `inputs` gives for the host's name.
fn render_hosts_with(topology: &Topology, inputs: impl Fn(&str) -> RenderInputs) -> Vec<(&Host, Vec<String>)> {
    let templates = workspace().join("templates");
    let mut rendered = Vec::new();
    for (index, host) in topology.hosts.iter().enumerate() {
        let argv = render_with_templates(&templates, topology, index, &inputs(&host.name)).unwrap().argv;
        rendered.push((host, argv));
    }
    rendered
}

fn argv_text(topology: &Topology, version: QemuVersion, boot: bool) -> String {
    hosts_text(render_hosts(topology, version, boot))
}

fn hosts_text(hosts: Vec<(&Host, Vec<String>)>) -> String {
    hosts.into_iter().map(|(host, argv)| format!("# host {}\n{}\n", host.name, argv.join("\n"))).collect()
}

/// Every id the topology gives QEMU for one host: host bridges, ports, switches, devices, backends.
fn topology_ids<'a>(topology: &'a Topology, host: &'a Host) -> BTreeSet<&'a str> {
    let mut ids: BTreeSet<&str> = topology.backends_of(host).into_iter().map(|backend| backend.id.as_str()).collect();
    for host_bridge in &host.host_bridges {
        ids.insert(&host_bridge.id);
        ids.extend(host_bridge.root_ports.iter().map(|port| port.id.as_str()));
    }
    for (_, switch) in host.switches() {
        ids.insert(&switch.id);
        ids.extend(switch.downstream_ports.iter().map(|port| port.id.as_str()));
    }
    ids.extend(host.devices().into_iter().map(|placement| placement.device.id.as_str()));
    ids
}

#[test]
fn rendered_argv_of_every_profile() {
    for (name, topology) in shipped_profiles() {
        insta::assert_snapshot!(format!("argv_{name}"), argv_text(&topology, QemuVersion::new(10, 0, 2), false));
    }
}

#[test]
fn rendered_argv_with_a_guest() {
    for (name, topology) in shipped_profiles() {
        if name == "seed" || name == "shared" {
            insta::assert_snapshot!(format!("boot_argv_{name}"), argv_text(&topology, QemuVersion::new(10, 0, 2), true));
        }
    }
}

/// Every `id=` and `bus=` (a bus is named by a device id) in a `-device`, `-object` or `-chardev`
/// argument, and the `-name`, is a QEMU identifier, and every id of the topology is among them: a
/// template change that lets a name add options or split an argument fails here.
#[test]
fn every_rendered_id_is_a_qemu_identifier() {
    for (name, topology) in shipped_profiles() {
        for (host, argv) in render_hosts(&topology, QemuVersion::new(10, 0, 2), true) {
            let mut rendered_ids = BTreeSet::new();
            for pair in argv.windows(2) {
                let (option, value) = (pair[0].as_str(), pair[1].as_str());
                if option == "-name" {
                    assert!(id_wellformed(value), "{name}: -name {value}");
                }
                if !matches!(option, "-device" | "-object" | "-chardev") {
                    continue;
                }
                for (key, id) in value.split(',').filter_map(|property| property.split_once('=')) {
                    if key == "id" || key == "bus" {
                        assert!(id_wellformed(id), "{name}, host {}: `{id}` in {option} {value}", host.name);
                    }
                    if key == "id" {
                        rendered_ids.insert(id);
                    }
                }
            }
            let expected = topology_ids(&topology, host);
            let missing: Vec<_> = expected.difference(&rendered_ids).collect();
            assert!(missing.is_empty(), "{name}, host {}: ids not rendered as id=: {missing:?}", host.name);
        }
    }
}

/// What `bench boot` gives virtme-ng of each profile's lab argv (with a guest, so the disk, shares
/// and network are there to be left out): the snapshot, and every id of the topology kept.
#[test]
fn virtme_options_of_every_profile() {
    for (name, topology) in shipped_profiles() {
        let (host, argv) = render_hosts(&topology, QemuVersion::new(10, 0, 2), true).remove(0);
        let options = cxl_machine_options(&argv).unwrap();
        let kept: BTreeSet<&str> =
            options.qemu_opts.iter().flat_map(|option| option.split(',')).filter_map(|property| property.strip_prefix("id=")).collect();
        let missing: Vec<_> = topology_ids(&topology, host).into_iter().filter(|id| !kept.contains(id)).collect();
        assert!(missing.is_empty(), "{name}: ids left out of virtme-ng's options: {missing:?}");
        let text = format!("--cpus {} --memory {}\n{}\n", options.cpus, options.memory, options.qemu_opts.join("\n"));
        insta::assert_snapshot!(format!("virtme_options_{name}"), text);
    }
}

/// With a QEMU that has the lab's capability device, each device on the shared profile's
/// capability backend names the service's socket and grant table and its requester id (host0's 1,
/// host1's 2); every other profile renders the same argv as without it.
#[test]
fn capability_properties_only_where_a_backend_asks_for_them() {
    let version = QemuVersion::new(10, 2, 2);
    let with_capability_device = |host: &str| RenderInputs { capability_dir: Some(PathBuf::from("/lab/run/capability")), ..inputs(host, version, false) };
    for (name, topology) in shipped_profiles() {
        let checked = hosts_text(render_hosts_with(&topology, with_capability_device));
        if name == "shared" {
            insta::assert_snapshot!("capability_argv_shared", checked);
        } else {
            assert_eq!(checked, argv_text(&topology, version, false), "{name}");
        }
    }
}

#[test]
fn seed_renders_the_deprecated_memdev_before_qemu_8_1() {
    let (_, seed) = shipped_profiles().into_iter().find(|(name, _)| name == "seed").unwrap();
    let old = argv_text(&seed, QemuVersion::new(8, 0, 0), false);
    assert!(old.contains("cxl-type3,bus=root_port13,id=cxl-pmem0,sn=100,memdev=cxl-mem1,lsa=cxl-lsa1"), "{old}");
    let new = argv_text(&seed, QemuVersion::new(8, 1, 0), false);
    assert!(new.contains(",persistent-memdev=cxl-mem1,"), "{new}");
}

#[test]
fn refuses_features_the_qemu_lacks() {
    let (_, dcd) = shipped_profiles().into_iter().find(|(name, _)| name == "dcd").unwrap();
    let error = render_with_templates(&workspace().join("templates"), &dcd, 0, &inputs("host0", QemuVersion::new(9, 0, 0), false))
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
