//! The lab's acceptance test, end to end through the command line, under TCG: `lab up --detach
//! --boot full` (systemd; `lab_lean_boot.rs` tests the lean boot) on the seed profile, `lab exec -- cxl list -M` shows the seed's memdev (serial and size from the
//! profile), `lab qmp` (status, poison injection, QEMU's error for a malformed argument), `lab cp`
//! both ways, `lab switch switch` shows four memdevs, and `lab down` leaves no QEMU and no socket.
//!
//! It boots real guests: the distro stack is built (or taken from the cache) on first use, which
//! takes minutes on a fresh machine. The lab state lives in a private directory, so it never
//! touches a user's labs; the artifact cache is the usual one, so a warm machine reuses it. Needs
//! root (debootstrap), QEMU and the Debian archive (skipped with the reason outside CI).

mod sandbox;

use std::path::PathBuf;
use std::process::{Command, Output};

use cxl_lab_core::prerequisites::{require, Prerequisite};
use serde_json::Value;

const LAB: &str = "acceptance";

struct Lab {
    state_dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        // Short: unix socket paths under it must stay below 108 bytes.
        let state_dir = std::env::temp_dir().join(format!("cxl-lab-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir).unwrap();
        Lab { state_dir }
    }

    fn run(&self, arguments: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["lab", "--lab", LAB])
            .args(arguments)
            .env("CXL_LAB_STATE", &self.state_dir)
            .output()
            .unwrap();
        sandbox::report(arguments, &output);
        output
    }

    fn run_ok(&self, arguments: &[&str]) -> String {
        let output = self.run(arguments);
        assert!(output.status.success(), "`lab {}` failed", arguments.join(" "));
        String::from_utf8(output.stdout).unwrap()
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.state_dir.join("labs").join(LAB).join("lab.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The memdevs the guest shows, as (serial, pmem_size, ram_size), sorted by serial.
    fn guest_memdevs(&self) -> Vec<(u64, u64, u64)> {
        sandbox::listed_memdevs(&self.run_ok(&["exec", "--", "cxl", "list", "-M"]))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Whatever failed, take the lab down; then the state directory can go.
        let _ = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["lab", "--lab", LAB, "down"])
            .env("CXL_LAB_STATE", &self.state_dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn process_alive(pid: u64) -> bool {
    // A zombie has an empty cmdline: it has exited.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| !cmdline.is_empty())
}

#[test]
fn lab_up_exec_qmp_cp_switch_down() {
    if !require(&[Prerequisite::Root, Prerequisite::Qemu, Prerequisite::Archive]) {
        return;
    }
    let lab = Lab::new();
    // The full boot (systemd); the lean one, the default, is `lab_lean_boot`'s.
    lab.run_ok(&["up", "--detach", "--boot", "full"]);

    // The seed's one memdev, with the profile's serial and size.
    let seed = sandbox::expected_memdevs("seed");
    assert_eq!(seed.len(), 1);
    assert_eq!(lab.guest_memdevs(), seed);

    let status: Value = serde_json::from_str(&lab.run_ok(&["qmp", "query-status"])).unwrap();
    assert_eq!(status["running"], Value::Bool(true), "{status}");
    assert_eq!(status["status"], "running");
    let poison = r#"{"path": "/machine/peripheral/cxl-pmem0", "start": 0, "length": 64}"#;
    assert_eq!(lab.run_ok(&["qmp", "cxl-inject-poison", poison]).trim(), "{}");
    let malformed = lab.run(&["qmp", "cxl-inject-poison", r#"{"path": 5, "start": 0, "length": 64}"#]);
    assert_eq!(malformed.status.code(), Some(1));
    let message = String::from_utf8_lossy(&malformed.stderr);
    assert!(message.contains("QEMU refused `cxl-inject-poison`: GenericError"), "{message}");
    assert!(!message.contains("panicked"), "{message}");

    // Files in and out through the guest agent; a failing guest command's exit code is ours.
    let scratch = lab.state_dir.join("scratch.txt");
    std::fs::write(&scratch, "written on the host\n").unwrap();
    lab.run_ok(&["cp", scratch.to_str().unwrap(), "guest:/root/scratch.txt"]);
    assert_eq!(lab.run_ok(&["exec", "--", "cat", "/root/scratch.txt"]), "written on the host\n");
    let copied_back = lab.state_dir.join("back.txt");
    lab.run_ok(&["cp", "guest:/root/scratch.txt", copied_back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&copied_back).unwrap(), "written on the host\n");
    assert_eq!(lab.run(&["exec", "--", "sh", "-c", "echo oops >&2; exit 7"]).status.code(), Some(7));

    // Another topology, same kernel and disk: four memdevs, and the file is still there.
    lab.run_ok(&["switch", "switch"]);
    let switch = sandbox::expected_memdevs("switch");
    assert_eq!(switch.len(), 4);
    assert_eq!(lab.guest_memdevs(), switch);
    assert_eq!(lab.run_ok(&["exec", "--", "cat", "/root/scratch.txt"]), "written on the host\n");

    let state = lab.state();
    let supervisor_pid = state["supervisor_pid"].as_u64().unwrap();
    let machines = state["machines"].as_array().unwrap().clone();
    lab.run_ok(&["down"]);
    assert!(!process_alive(supervisor_pid), "the supervisor {supervisor_pid} outlived `lab down`");
    for machine in machines {
        let pid = machine["qemu_pid"].as_u64().unwrap();
        assert!(!process_alive(pid), "QEMU {pid} outlived `lab down`");
        for socket in ["qmp_socket", "agent_socket"] {
            let path = PathBuf::from(machine[socket].as_str().unwrap());
            assert!(!path.exists(), "{} is left after `lab down`", path.display());
        }
    }
    assert!(!lab.state_dir.join("labs").join(LAB).join("lab.json").exists());
    assert_eq!(lab.run(&["status"]).status.code(), Some(3));
}
