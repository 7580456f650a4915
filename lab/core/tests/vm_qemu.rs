//! The VM layer against the real, installed QEMU (TCG, machines created paused with `-S`, no guest
//! OS): QMP handshake and commands, QEMU's own errors, that no QEMU outlives its owner, and what
//! its devices take. Each test needs a QEMU (skipped with the reason outside CI when there is
//! none).

use std::path::Path;
use std::time::Duration;

use cxl_lab_core::layout::MachineRunDir;
use cxl_lab_core::prerequisites::{require, test_qemu, Prerequisite};
use cxl_lab_core::qemu::Accel;
use cxl_lab_core::vm::accel::resolve_accel;
use cxl_lab_core::vm::device_help::{device_properties, has_capability_device};
use cxl_lab_core::vm::qmp::QmpError;
use cxl_lab_core::sys::process::{process_runs_program, wait_until_gone};
use cxl_lab_core::vm::supervisor::{MachineSpec, RunningMachine};
use serde_json::json;

/// A paused q35 machine with one CXL type-3 device (the seed's shape) and the lab's sockets, written
/// by hand so these tests do not depend on the renderer.
fn paused_cxl_machine(run_dir: &MachineRunDir, memory_dir: &Path) -> MachineSpec {
    let argv = format!(
        "{qemu} -machine q35,cxl=on -accel tcg -S -nodefaults -display none -m 512M \
         -qmp unix:{qmp},server=on,wait=off \
         -chardev socket,id=qga0,path={qga},server=on,wait=off \
         -device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
         -serial file:{serial} \
         -object memory-backend-file,id=cxl-mem0-backend,share=on,mem-path={memory}/cxl-mem0.raw,size=256M \
         -object memory-backend-file,id=cxl-lsa0-backend,share=on,mem-path={memory}/cxl-lsa0.raw,size=1M \
         -device pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1 \
         -device cxl-rp,port=0,bus=cxl.1,id=root_port13,chassis=0,slot=2 \
         -device cxl-type3,bus=root_port13,persistent-memdev=cxl-mem0-backend,lsa=cxl-lsa0-backend,id=cxl-mem0,sn=0x100 \
         -M cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G,cxl-fmw.0.interleave-granularity=8k",
        qemu = test_qemu(),
        qmp = run_dir.qmp_socket().display(),
        qga = run_dir.agent_socket().display(),
        serial = run_dir.serial_log().display(),
        memory = memory_dir.display(),
    );
    MachineSpec { name: "test".to_owned(), argv: argv.split_whitespace().map(str::to_owned).collect(), run_dir: run_dir.clone() }
}

fn spawn_paused(scratch: &Path) -> RunningMachine {
    let run_dir = MachineRunDir::new(scratch.join("run"));
    let memory_dir = scratch.join("memory");
    std::fs::create_dir_all(&memory_dir).unwrap();
    RunningMachine::spawn(&paused_cxl_machine(&run_dir, &memory_dir)).unwrap()
}

#[test]
fn qmp_handshake_status_version_and_cont_against_installed_qemu() {
    if !require(&[Prerequisite::Qemu]) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut machine = spawn_paused(scratch.path());
    let mut qmp = machine.wait_for_qmp(Duration::from_secs(20)).unwrap();

    let version = qmp.query_version().unwrap();
    assert_eq!(version, qmp.greeting().version);
    assert!(version.major >= 8, "QEMU {version:?} is older than the lab supports");

    let status = qmp.query_status().unwrap();
    assert_eq!((status.running, status.status.as_str()), (false, "prelaunch"));
    qmp.cont().unwrap();
    let status = qmp.query_status().unwrap();
    assert!(status.running, "{status:?}");
    // `cont` emits RESUME; the client keeps events it does not need instead of failing on them.
    assert!(qmp.take_events().iter().any(|event| event.name == "RESUME"));
}

#[test]
fn cxl_inject_poison_is_accepted_and_malformed_arguments_get_qemus_error() {
    if !require(&[Prerequisite::Qemu]) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut machine = spawn_paused(scratch.path());
    let mut qmp = machine.wait_for_qmp(Duration::from_secs(20)).unwrap();

    let accepted = qmp
        .execute_raw("cxl-inject-poison", Some(json!({ "path": "/machine/peripheral/cxl-mem0", "start": 0, "length": 64 })))
        .unwrap();
    assert_eq!(accepted, json!({}));

    let malformed = qmp.execute_raw("cxl-inject-poison", Some(json!({ "path": 5, "start": 0, "length": 64 }))).unwrap_err();
    match malformed {
        QmpError::Refused { class, desc, .. } => {
            assert_eq!(class, "GenericError");
            assert!(desc.contains("path"), "{desc}");
        }
        other => panic!("expected QEMU's error, got {other}"),
    }
    let unknown = qmp.execute_raw("no-such-command", None).unwrap_err();
    assert!(matches!(unknown, QmpError::Refused { ref class, .. } if class == "CommandNotFound"), "{unknown}");
    // The session survives QEMU's errors.
    assert!(!qmp.query_status().unwrap().running);
}

#[test]
fn dropping_the_machine_kills_qemu_and_removes_its_sockets() {
    if !require(&[Prerequisite::Qemu]) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut machine = spawn_paused(scratch.path());
    machine.wait_for_qmp(Duration::from_secs(20)).unwrap();
    let pid = machine.pid().unwrap();
    let run_dir = machine.run_dir().clone();
    assert!(run_dir.qmp_socket().exists() && run_dir.agent_socket().exists());
    assert_eq!(std::fs::read_to_string(run_dir.pid_file()).unwrap().trim(), pid.to_string());
    let mode = std::fs::metadata(&run_dir.dir).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o700);

    drop(machine);
    assert!(!process_runs_program(pid, &test_qemu()), "QEMU {pid} survived the drop");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "QEMU {pid} was not reaped");
    assert!(!run_dir.qmp_socket().exists() && !run_dir.agent_socket().exists() && !run_dir.pid_file().exists());
}

const OWNER_ENV: &str = "CXL_LAB_TEST_OWNER_SCRATCH";

/// The owner's side of [`qemu_dies_when_its_owner_is_killed`]: that test starts this test binary
/// again, filtered to itself, with the scratch directory in the environment; the child starts
/// QEMU, says its pid and waits to be killed.
fn own_qemu_until_killed(scratch: &Path) -> ! {
    let mut machine = spawn_paused(scratch);
    machine.wait_for_qmp(Duration::from_secs(20)).unwrap();
    std::fs::write(scratch.join("qemu-pid"), machine.pid().unwrap().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(600));
    panic!("the owner process was not killed within 600 s");
}

#[test]
fn qemu_dies_when_its_owner_is_killed() {
    if let Some(scratch) = std::env::var_os(OWNER_ENV) {
        own_qemu_until_killed(Path::new(&scratch));
    }
    if !require(&[Prerequisite::Qemu]) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut owner = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "qemu_dies_when_its_owner_is_killed", "--nocapture", "--test-threads=1"])
        .env(OWNER_ENV, scratch.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = scratch.path().join("qemu-pid");
    let appeared = wait_until_gone(Duration::from_secs(30), || !pid_file.exists());
    if !appeared {
        let _ = owner.kill();
        panic!("the owner process never started QEMU");
    }
    std::thread::sleep(Duration::from_millis(50));
    let qemu_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(process_runs_program(qemu_pid, &test_qemu()));

    owner.kill().unwrap(); // SIGKILL: no destructor runs in the owner.
    owner.wait().unwrap();
    let gone = wait_until_gone(Duration::from_secs(5), || process_runs_program(qemu_pid, &test_qemu()));
    if !gone {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu_pid as i32), nix::sys::signal::Signal::SIGKILL).ok();
        panic!("QEMU {qemu_pid} outlived its owner");
    }
}

#[test]
fn accel_auto_picks_tcg_on_this_host() {
    if !require(&[Prerequisite::Qemu]) {
        return;
    }
    // This host (and CI runners without KVM access) cannot run KVM guests: /dev/kvm is missing,
    // closed to us, or hangs. On a host where KVM works, set CXL_LAB_TEST_KVM_WORKS=1.
    let kvm_expected = std::env::var_os("CXL_LAB_TEST_KVM_WORKS").is_some();
    let probe_dir = tempfile::tempdir().unwrap();
    let decision = resolve_accel(None, false, Path::new(&test_qemu()), probe_dir.path());
    let expected = if kvm_expected { Accel::Kvm } else { Accel::Tcg };
    assert_eq!(decision.accel, expected, "{}", decision.reason);
    assert!(!decision.reason.is_empty());
    // The second decision comes from the per-boot cache and agrees.
    let cached = resolve_accel(None, false, Path::new(&test_qemu()), probe_dir.path());
    assert_eq!(cached.accel, decision.accel);
    assert!(cached.reason.contains("probed earlier"), "{}", cached.reason);
}

/// The host's QEMU is Debian's: its `cxl-type3` has the stock properties and not the lab's
/// capability device, so a capability profile runs unchecked on the distro stack.
#[test]
fn the_installed_qemu_has_no_capability_device() {
    if !require(&[Prerequisite::Qemu]) {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let runner = cxl_lab_core::sys::runner::CommandRunner::new(logs.path());
    let stock = Path::new(cxl_lab_core::stack::host::QEMU_PROGRAM);
    let properties = device_properties(&runner, stock, "cxl-type3").unwrap();
    assert!(properties.iter().any(|property| property == "volatile-memdev"), "{properties:?}");
    assert!(!has_capability_device(&runner, stock).unwrap(), "{properties:?}");
    assert!(device_properties(&runner, stock, "no-such-device").unwrap().is_empty());
}
