//! The `decode` suite fails on a real run when a granule's tag is not where the decode model puts
//! it: `lab run --stack source --profile interleave --suite decode --move-tag 5` boots the
//! interleaved profile on the source stack, the guest tags every granule of the 4-way region, the
//! runner moves granule 5's tag into another device's real backing file before the host checks,
//! and the run fails naming that granule's HPA, the device and DPA the model expected, and where
//! the tag is.
//!
//! Needs the source stack in the cache (`scripts/test-source-stack.sh` builds it, then runs this):
//! CXL_LAB_CACHE=<cache> cargo test -p xtask --test lab_decode -- --ignored

mod sandbox;

use sandbox::Sandbox;

#[test]
#[ignore = "boots the source stack's kernel: run it explicitly (see the module doc)"]
fn a_moved_tag_fails_the_decode_suite_naming_its_hpa_and_device() {
    let Some(lab) = Sandbox::for_guests("decode") else { return };
    let out = lab.root.join("decode");
    let arguments = ["run", "--stack", "source", "--profile", "interleave", "--suite", "decode", "--move-tag", "5", "--out", out.to_str().unwrap()];
    let run = lab.run(&arguments);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "a moved tag must fail the run: {stderr}");
    assert!(stderr.contains("1 of 131072 granules do not hold their tag where the model puts them"), "{stderr}");
    // Granule 5 of 4 ways at 8 KiB is position 1 (cxl-pmem2, DPA 8 KiB); the next member is cxl-pmem1.
    let named = "(granule 5): the model puts it on cxl-pmem2 at DPA 0x2000 (cxl-mem2.raw offset 0x2000), which holds no tag; \
                 its tag is on cxl-pmem1 at DPA 0x3000 (cxl-mem1.raw offset 0x3000)";
    let line = stderr.lines().find(|line| line.contains(named)).unwrap_or_else(|| panic!("no line names granule 5: {stderr}"));
    assert!(line.trim_start().starts_with("HPA 0x"), "{line}");
    assert!(out.join("decode-host0").join("serial.log").is_file(), "no evidence kept");
    assert!(lab.lab_json().is_none(), "`lab run` left the lab it booted up");
}
