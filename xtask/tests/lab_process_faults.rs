//! Process faults around a booting lab, done for real through the command line under TCG
//! (`docs/RELIABILITY.md`): `kill -9` of `lab up` while its guest boots (detached, attached, and
//! together with its supervisor), two `lab up` on one lab at once, and a guest that never
//! answers. Each test runs in its own sandbox (lab state, images) and uses the caller's artifact
//! cache (`CXL_LAB_CACHE`), so a warm cache boots in seconds; a cold one is built first.

mod sandbox;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use sandbox::{alive, kill_9, Sandbox};
use serde_json::Value;

/// How long a `lab up` may take to reach a booting guest: a cold cache builds the stack first.
const UNTIL_BOOTING: Duration = Duration::from_secs(900);
/// How long what a killed `lab up` started may take to go (the supervisor stops QEMU).
const TO_GO: Duration = Duration::from_secs(60);

/// Starts `lab ARGS` (an `up`) and waits until its supervisor has started QEMU and the guest has
/// printed on its serial console, while `lab up` still waits for the guest agent.
fn start_booting(lab: &Sandbox, name: &str, arguments: &[&str]) -> (Child, Value) {
    let mut up = lab.spawn(name, arguments);
    let state = lab.wait_while_running(&mut up, name, "the guest's first serial lines", UNTIL_BOOTING, || {
        let state = lab.lab_json()?;
        let serial = PathBuf::from(state["machines"][0]["serial_log"].as_str()?);
        (std::fs::metadata(serial).ok()?.len() > 0).then_some(state)
    });
    assert!(up.try_wait().unwrap().is_none(), "`lab up` was ready before it could be killed during boot");
    (up, state)
}

fn pid_of(state: &Value, pointer: &str) -> u64 {
    state.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("{pointer} in {state}"))
}

/// The files a running lab keeps: its state files and the first machine's sockets and pid file.
fn runtime_files(lab: &Sandbox, state: &Value) -> Vec<PathBuf> {
    let run_dir = PathBuf::from(state["machines"][0]["run_dir"].as_str().unwrap());
    let mut files = vec![lab.lab_dir().join("lab.json"), lab.lab_dir().join("launch.json")];
    files.extend(["qmp.sock", "qga.sock", "qemu.pid"].map(|name| run_dir.join(name)));
    files
}

#[test]
fn kill_9_of_lab_up_while_qemu_boots_leaves_nothing_and_the_next_up_recovers() {
    let Some(lab) = Sandbox::for_guests("boot") else { return };

    // `lab up` alone killed: its supervisor gets SIGTERM from the kernel and stops the lab in
    // order. Detached, it would otherwise run on: it is released only once the guest answered.
    for (name, arguments) in [("detached", &["up", "--detach"][..]), ("attached", &["up"][..])] {
        let (mut up, state) = start_booting(&lab, name, arguments);
        let (supervisor, qemu) = (pid_of(&state, "/supervisor_pid"), pid_of(&state, "/machines/0/qemu_pid"));
        kill_9(up.id());
        up.wait().unwrap();
        lab.assert_none_left(TO_GO, &format!("`lab up` ({name}) was killed while its guest booted"));
        assert!(!alive(supervisor) && !alive(qemu));
        for file in runtime_files(&lab, &state) {
            assert!(!file.exists(), "{} is left after `lab up` ({name}) was killed", file.display());
        }
        assert_eq!(lab.run(&["status"]).status.code(), Some(3));
    }

    // `lab up` and its supervisor killed together (`lab up` frozen first, so it cannot react):
    // QEMU dies with the supervisor, and the state, sockets and pid file stay behind, stale.
    let (mut up, state) = start_booting(&lab, "both", &["up", "--detach"]);
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(up.id() as i32, libc::SIGSTOP) }, 0);
    kill_9(pid_of(&state, "/supervisor_pid") as u32);
    kill_9(up.id());
    up.wait().unwrap();
    lab.assert_none_left(TO_GO, "`lab up` and its supervisor were killed while the guest booted");
    for file in runtime_files(&lab, &state) {
        assert!(file.exists(), "{} should be left stale by a killed supervisor", file.display());
    }

    // The next `lab up` needs no cleanup by hand.
    lab.run_ok(&["up", "--detach"]);
    let recovered = lab.lab_json().unwrap();
    assert_ne!(pid_of(&recovered, "/supervisor_pid"), pid_of(&state, "/supervisor_pid"));
    lab.answers_then_down();
}

/// The lab's state and lock files, byte for byte.
fn lab_files(lab: &Sandbox) -> Vec<(String, Option<Vec<u8>>)> {
    ["lab.json", "launch.json", "lab.lock"].iter().map(|name| (name.to_string(), std::fs::read(lab.lab_dir().join(name)).ok())).collect()
}

#[test]
fn a_second_lab_up_on_the_same_lab_refuses_at_once_naming_the_holder() {
    let Some(lab) = Sandbox::for_guests("two") else { return };
    let (mut first, state) = start_booting(&lab, "first", &["up", "--detach"]);
    let supervisor = pid_of(&state, "/supervisor_pid");
    let ours: HashSet<u32> = [first.id() as u64, supervisor, pid_of(&state, "/machines/0/qemu_pid")].iter().map(|pid| *pid as u32).collect();

    // While the first boots: refused, naming the lab and the first `lab up`'s pid.
    let before = lab_files(&lab);
    let second = lab.run(&["up", "--detach"]);
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("lab `two` is busy"), "{message}");
    assert!(message.contains(&format!("`lab up` (pid {})", first.id())), "{message}");
    assert_eq!(lab_files(&lab), before, "the refused `lab up` touched the first's files");
    let running: HashSet<u32> = lab.processes().into_iter().map(|(pid, _)| pid).collect();
    assert!(running.is_subset(&ours), "processes other than the first lab's: {:?}", lab.processes());

    // The first comes up undisturbed.
    let status = first.wait().unwrap();
    assert!(status.success(), "the first `lab up` failed: {}", lab.output_of("first"));
    assert_eq!(lab.run_ok(&["exec", "--", "echo", "first"]), "first\n");

    // Against the running, detached lab: refused, naming its supervisor.
    let before = lab_files(&lab);
    let third = lab.run(&["up", "--detach"]);
    assert!(!third.status.success());
    let message = String::from_utf8_lossy(&third.stderr);
    assert!(message.contains("lab `two` is already running"), "{message}");
    assert!(message.contains(&format!("supervisor pid {supervisor}")), "{message}");
    assert_eq!(lab_files(&lab), before, "the refused `lab up` touched the running lab's files");
    lab.answers_then_down();
}

#[test]
fn a_guest_that_never_answers_fails_at_the_boot_timeout_with_the_serial_tail_and_leaves_nothing() {
    let Some(lab) = Sandbox::for_guests("mute") else { return };
    // init exits at once, the kernel panics, and `panic=0` (after the template's `panic=-1`)
    // makes it wait forever instead of rebooting: QEMU runs, the agent never comes.
    let output = lab.run(&["up", "--detach", "--boot-timeout", "60", "--cmdline", "init=/bin/false", "--cmdline", "panic=0"]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("`host0`: guest agent not ready within 60s"), "{message}");
    assert!(message.contains("last serial lines"), "{message}");
    assert!(message.contains("Kernel panic - not syncing"), "{message}");
    // `lab up` returns only once its supervisor stopped QEMU.
    lab.assert_none_left(Duration::ZERO, "`lab up` gave up");
    let run_dir = lab.lab_dir().join("run").join("host0");
    for file in [lab.lab_dir().join("lab.json"), lab.lab_dir().join("launch.json"), run_dir.join("qmp.sock"), run_dir.join("qga.sock")] {
        assert!(!file.exists(), "{} is left after the boot timeout", file.display());
    }
    assert_eq!(lab.run(&["status"]).status.code(), Some(3));
}
