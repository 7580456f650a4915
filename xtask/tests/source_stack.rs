//! The source stack's guest check: `lab up --stack source` boots the seed profile on QEMU and the
//! kernel built from source, and in the guest a CXL region over the seed device commits with no
//! kernel warning (Debian's kernel fails exactly here under a hypervisor), and `cxl_test` loads
//! and shows its mock bus.
//!
//! It builds QEMU and a kernel from source when the cache lacks them (on two cores, tens of
//! minutes cold; an incremental kernel rebuild about a minute), so it runs only when asked:
//!
//! ```text
//! CXL_LAB_CACHE=<cache> cargo test -p xtask --test source_stack -- --ignored --nocapture
//! ```

mod sandbox;

use serde_json::Value;

use sandbox::Sandbox;

/// Lines of the guest's kernel log that mean something went wrong.
const KERNEL_TROUBLE: &[&str] = &["WARNING:", "Call Trace", "BUG:", "Oops"];

#[test]
#[ignore = "builds QEMU and the kernel from source: run it explicitly (see the module doc)"]
fn source_stack_commits_a_region_and_loads_cxl_test() {
    let Some(lab) = Sandbox::for_guests("src") else { return };
    lab.run_ok(&["up", "--stack", "source", "--detach"]);
    let guest = |command: &[&str]| lab.run_ok(&[&["exec", "--"][..], command].concat());

    let memdevs: Value = serde_json::from_str(&guest(&["cxl", "list", "-M"])).unwrap();
    assert_eq!(memdevs[0]["serial"], 100, "the seed device: {memdevs}");
    let region: Value = serde_json::from_str(&guest(&["cxl", "create-region", "-m", "-d", "decoder0.0", "-w", "1", "-t", "pmem", "mem0"])).unwrap();
    assert_eq!(region["decode_state"], "commit", "{region}");
    assert_eq!(region["size"], 512u64 << 20, "{region}");

    assert_eq!(guest(&["modprobe", "cxl_test"]), "");
    let mock: Value = serde_json::from_str(&guest(&["cxl", "list", "-b", "cxl_test", "-M"])).unwrap();
    assert!(mock.as_array().is_some_and(|memdevs| !memdevs.is_empty()), "cxl_test's bus has no memdev: {mock}");

    let log = guest(&["dmesg"]);
    let trouble: Vec<&str> = log.lines().filter(|line| KERNEL_TROUBLE.iter().any(|mark| line.contains(mark))).collect();
    assert!(trouble.is_empty(), "the guest kernel complained:\n{}", trouble.join("\n"));
    lab.answers_then_down();
}
