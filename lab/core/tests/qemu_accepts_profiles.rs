//! Real QEMU accepts every shipped profile: each host's rendered argv starts paused (`-S`) under
//! the lab's own supervisor, QMP answers `query-status`, and `quit` ends it. Uses the host's
//! qemu-system-x86_64 (installed by `cargo xtask host setup`; skipped with the reason outside CI
//! when there is none).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cxl_lab_core::layout::MachineRunDir;
use cxl_lab_core::prerequisites::{require, test_qemu, Prerequisite};
use cxl_lab_core::profile::load_topology;
use cxl_lab_core::qemu::Accel;
use cxl_lab_core::render::{backend_files, render_with_templates, RenderInputs};
use cxl_lab_core::sys::runner::CommandRunner;
use cxl_lab_core::vm::backing::prepare_backend_files;
use cxl_lab_core::vm::supervisor::{MachineSpec, RunningMachine};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn qemu_starts_every_shipped_profile_paused() {
    if !require(&[Prerequisite::Qemu]) {
        return;
    }
    let qemu = test_qemu();
    let logs = tempfile::tempdir().unwrap();
    let version = cxl_lab_core::stack::host::qemu_version(&CommandRunner::new(logs.path()), Path::new(&qemu))
        .expect("qemu-system-x86_64 is installed");
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(workspace().join("profiles"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    profiles.sort();
    let mut started = Vec::new();
    for profile in profiles {
        let topology = load_topology(&profile).unwrap();
        let lab = tempfile::tempdir().unwrap();
        let memory_dir = lab.path().join("memory");
        for (index, host) in topology.hosts.iter().enumerate() {
            let run_dir = MachineRunDir::new(lab.path().join("run").join(&host.name));
            prepare_backend_files(&backend_files(&topology, host, &memory_dir).unwrap()).unwrap();
            let inputs = RenderInputs {
                paused: true,
                ..RenderInputs::new(Path::new(&qemu), version, None, run_dir.clone(), &memory_dir, Accel::Tcg, None)
            };
            let argv = render_with_templates(&workspace().join("templates"), &topology, index, &inputs).unwrap().argv;
            let name = format!("{}/{}", topology.name, host.name);
            let spec = MachineSpec { name: name.clone(), argv, run_dir: run_dir.clone() };
            // Dropping the machine on any failure below kills QEMU.
            let mut machine = RunningMachine::spawn(&spec).unwrap_or_else(|error| panic!("{name}: {error}"));
            let mut qmp = machine.wait_for_qmp(Duration::from_secs(30)).unwrap_or_else(|error| panic!("{name}: {error}"));
            let status = qmp.query_status().unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(status.status, "prelaunch", "{name}: unexpected status {status:?}");
            assert!(!status.running, "{name}: running before `cont`");
            qmp.quit().unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(machine.wait_for_exit(Duration::from_secs(30)), "{name}: QEMU did not exit after `quit`");
            started.push(format!("{}/{}", topology.name, host.name));
        }
    }
    assert_eq!(
        started,
        ["dcd/host0", "interleave/host0", "mixed/host0", "seed/host0", "shared/host0", "shared/host1", "switch/host0", "volatile/host0"]
    );
}
