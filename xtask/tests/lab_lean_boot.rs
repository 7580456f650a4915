//! The lean boot end to end, under TCG: `lab up --detach` of the seed profile boots lean (the
//! default), the guest agent answers, pid 1 is the lean init, `cxl list -M` lists the profile's
//! memdev (serial and size from the model), root stays locked (a lean guest runs nothing that
//! logs in, so `lab up` sets no password), an orphan of a guest command is reaped, a device announced later gets its driver
//! (modprobe of its MODALIAS, as udev would), `lab ssh` says that ssh needs the full boot, and
//! `lab down` leaves none of the lab's processes.
//!
//! Needs root, QEMU and the Debian archive, like `lab_lifecycle.rs` (skipped with the reason
//! outside CI, a failure under `CI=true`); the artifact cache is the caller's.

mod sandbox;

use std::time::{Duration, Instant};

use sandbox::Sandbox;

#[test]
fn lean_boot_answers_lists_the_memdevs_reaps_and_goes_down_clean() {
    let Some(lab) = Sandbox::for_guests("lean") else { return };
    let started = Instant::now();
    lab.run_ok(&["up", "--detach"]);
    eprintln!("lean `lab up` took {:.1} s", started.elapsed().as_secs_f64());
    assert!(lab.run_ok(&["status"]).contains("boot: lean"));

    let exec = |command: &str| lab.run_ok(&["exec", "--", "sh", "-c", command]);
    assert!(exec("cat /proc/1/cmdline").contains("/usr/lib/cxl-lab/lean-init"));
    assert_eq!(sandbox::listed_memdevs(&lab.run_ok(&["exec", "--", "cxl", "list", "-M"])), sandbox::expected_memdevs("seed"));
    // No sshd and no getty: `lab up` leaves root as the image has it, locked.
    assert!(exec("passwd -S root").starts_with("root L "));

    // A command's background child outlives it and is reparented to pid 1, which must reap it.
    exec("(sleep 0.3 &) ; true");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(exec("ps -eo stat=,pid=,comm= | awk '$1 ~ /^Z/'"), "", "zombies in the guest");

    // A device that appears later gets its driver by its uevent's MODALIAS, as under udev: the
    // RNG's driver unloaded, then its device announced again.
    exec("modprobe -r virtio_rng");
    let announce = "for device in /sys/bus/virtio/devices/*; do \
                    [ \"$(cat $device/device)\" = 0x0004 ] && echo add > $device/uevent; done; true";
    exec(announce);
    sandbox::wait_for("the uevent to load virtio_rng", Duration::from_secs(20), || {
        exec("grep -c '^virtio_rng ' /proc/modules || true").trim().eq("1").then_some(())
    });

    let ssh = lab.run(&["ssh", "--", "true"]);
    assert!(!ssh.status.success());
    let message = String::from_utf8_lossy(&ssh.stderr);
    assert!(message.contains("booted lean") && message.contains("--boot full"), "{message}");

    lab.answers_then_down();
}
