//! `lab run` end to end under TCG on the distro stack, its JUnit read back by a real JUnit
//! consumer (Python's junitparser, which `cargo xtask host setup` installs):
//! - `lab run --profile seed --suite smoke,topology,region` boots the seed, passes smoke and
//!   topology, skips every region step with the reason (Debian's kernel cannot commit a region in
//!   a VM), and takes the lab down;
//! - on a lab that is up, a deliberately wrong expectation (`--expect`: the seed's expected view
//!   with another size) fails topology with a readable diff and keeps the evidence, and the lab
//!   stays up.
//!
//! - a profile whose QEMU cannot start (an unknown raw option) still gets its reports: each suite
//!   is one JUnit error, with QEMU's argv and its own output (the refusal) kept as evidence.
//!
//! - Ctrl-C (SIGINT) once the first step passed: the run stops, the steps not run are errors,
//!   the reports are written and the lab the run booted is down.
//!
//! Needs root, QEMU, the Debian archive for a cold cache and junitparser (skipped with the reason
//! outside CI).

mod sandbox;

use std::path::Path;
use std::process::Command;

use cxl_lab_core::prerequisites::{require, Prerequisite};
use cxl_lab_core::stack::host::JUNITPARSER;
use serde_json::Value;

use sandbox::Sandbox;

/// Every test case of a JUnit file as junitparser reads it: suite, case, status, message.
const READ_JUNIT: &str = r#"
import json, sys
from junitparser import JUnitXml, Failure, Skipped, Error
cases = []
for suite in JUnitXml.fromfile(sys.argv[1]):
    for case in suite:
        status, message = "passed", ""
        for result in case.result:
            if isinstance(result, Error):
                status, message = "error", result.message or ""
            elif isinstance(result, Failure):
                status, message = "failed", result.message or ""
            elif isinstance(result, Skipped):
                status, message = "skipped", result.message or ""
        cases.append({"suite": suite.name, "case": case.name, "status": status, "message": message})
print(json.dumps(cases))
"#;

fn junit_cases(junit: &Path) -> Vec<Value> {
    // The system Python: junitparser is a Debian package.
    let output = Command::new("/usr/bin/python3").arg("-c").arg(READ_JUNIT).arg(junit).output().unwrap();
    assert!(output.status.success(), "junitparser could not read {}: {}", junit.display(), String::from_utf8_lossy(&output.stderr));
    let cases: Value = serde_json::from_slice(&output.stdout).unwrap();
    cases.as_array().unwrap().clone()
}

fn cases_of<'a>(cases: &'a [Value], suite: &str) -> Vec<&'a Value> {
    cases.iter().filter(|case| case["suite"].as_str().is_some_and(|name| name.starts_with(&format!("{suite}/")))).collect()
}

#[test]
fn lab_run_reports_passes_skips_and_a_readable_diff() {
    if !require(&[Prerequisite::Tool(JUNITPARSER)]) {
        return;
    }
    let Some(lab) = Sandbox::for_guests("suites") else { return };
    let out = lab.root.join("distro");
    let out_text = out.to_str().unwrap();
    lab.run_ok(&["run", "--profile", "seed", "--suite", "smoke,topology,region", "--out", out_text]);
    assert!(lab.lab_json().is_none(), "`lab run` left the lab it booted up");

    let cases = junit_cases(&out.join("junit.xml"));
    for suite in ["smoke", "topology"] {
        let suite_cases = cases_of(&cases, suite);
        assert!(!suite_cases.is_empty(), "no {suite} cases in {cases:?}");
        assert!(suite_cases.iter().all(|case| case["status"] == "passed"), "{suite}: {suite_cases:?}");
    }
    let region = cases_of(&cases, "region");
    let skipped: Vec<&&Value> = region.iter().filter(|case| case["status"] == "skipped").collect();
    assert!(!skipped.is_empty(), "region skipped nothing: {region:?}");
    for case in skipped {
        assert!(case["message"].as_str().unwrap().contains("without CONFIG_CXL_REGION_INVALIDATION_TEST=y"), "{case}");
    }
    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["stack"], "distro");
    assert_eq!(results["booted"], true);

    // A wrong expectation, on a lab that is up: the seed's device is 512 MiB, not 256 MiB.
    lab.run_ok(&["up", "--detach"]);
    let expected = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["profile", "expect", "seed"]).output().unwrap();
    assert!(expected.status.success());
    let wrong = String::from_utf8(expected.stdout).unwrap().replace("\"pmem_size\": 536870912", "\"pmem_size\": 268435456");
    let wrong_path = lab.root.join("wrong.json");
    std::fs::write(&wrong_path, wrong).unwrap();
    let wrong_out = lab.root.join("wrong");
    let run = lab.run(&["run", "--suite", "topology", "--expect", wrong_path.to_str().unwrap(), "--out", wrong_out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "a wrong expectation must fail the run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let diff_line = "memdev serial 100: pmem_size: expected 268435456, guest 536870912";
    assert!(stderr.contains(diff_line), "{stderr}");
    let failed: Vec<Value> = junit_cases(&wrong_out.join("junit.xml")).into_iter().filter(|case| case["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    for evidence in ["serial.log", "dmesg.txt", "qemu-argv.txt", "distro.lock", "cxl-list.json"] {
        assert!(wrong_out.join("topology-host0").join(evidence).is_file(), "no {evidence} kept");
    }
    assert!(lab.lab_json().is_some(), "`lab run` took down a lab it did not boot");
    lab.answers_then_down();
}

#[test]
fn a_boot_that_fails_still_reports_each_suite_as_an_error() {
    if !require(&[Prerequisite::Tool(JUNITPARSER)]) {
        return;
    }
    let Some(lab) = Sandbox::for_guests("suites-boot") else { return };
    let seed = std::fs::read_to_string(sandbox::workspace().join("profiles/seed.yaml")).unwrap();
    let profile = lab.root.join("no-qemu.yaml");
    std::fs::write(&profile, seed.replace("name: seed", "name: no-qemu") + "qemu_extra: [\"-no-such-option\"]\n").unwrap();
    let out = lab.root.join("no-qemu-out");
    let run = lab.run(&["run", "--profile", profile.to_str().unwrap(), "--suite", "smoke,topology", "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "a boot that failed must fail the run: {}", String::from_utf8_lossy(&run.stderr));
    assert!(lab.lab_json().is_none(), "a lab that did not boot is left behind");

    let cases = junit_cases(&out.join("junit.xml"));
    assert_eq!(cases.len(), 2, "{cases:?}");
    for case in &cases {
        assert_eq!((case["case"].as_str(), case["status"].as_str()), (Some("the lab boots"), Some("error")), "{case}");
        assert!(case["message"].as_str().unwrap().starts_with("the lab did not boot: QEMU of `host0` exited"), "{case}");
    }
    for suite in ["smoke", "topology"] {
        let evidence = out.join(format!("{suite}-host0"));
        let qemu_log = std::fs::read_to_string(evidence.join("qemu.log")).unwrap();
        assert!(qemu_log.contains("-no-such-option: invalid option"), "{qemu_log}");
        assert!(std::fs::read_to_string(evidence.join("qemu-argv.txt")).unwrap().contains("-no-such-option"));
    }
    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["suites"][0]["steps"][0]["status"], "error");
    assert_eq!(results["booted"], false);
}

#[test]
fn ctrl_c_writes_the_results_so_far_and_takes_the_booted_lab_down() {
    if !require(&[Prerequisite::Tool(JUNITPARSER)]) {
        return;
    }
    let Some(lab) = Sandbox::for_guests("suites-int") else { return };
    let out = lab.root.join("interrupted");
    let mut run = lab.spawn("run", &["run", "--profile", "seed", "--suite", "smoke,topology", "--out", out.to_str().unwrap()]);
    lab.wait_while_running(&mut run, "run", "a first step passed", std::time::Duration::from_secs(600), || {
        lab.output_of("run").contains("Passed smoke").then_some(())
    });
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", lab.output_of("run"));
    assert!(lab.lab_json().is_none(), "the lab the interrupted run booted is still up");
    lab.assert_none_left(std::time::Duration::from_secs(30), "after an interrupted `lab run`");

    let cases = junit_cases(&out.join("junit.xml"));
    assert!(cases.iter().any(|case| case["status"] == "passed"), "{cases:?}");
    let errors: Vec<&Value> = cases.iter().filter(|case| case["status"] == "error").collect();
    assert!(!errors.is_empty() && cases_of(&cases, "topology").iter().all(|case| case["status"] == "error"), "{cases:?}");
    for case in errors {
        assert!(case["message"].as_str().unwrap().contains("interrupted (SIGINT)"), "{case}");
    }
}
