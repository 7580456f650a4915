//! A run's results as CI systems read them: JUnit XML (one test suite per suite and host, one
//! test case per step) and JSON (the same, with every step's output).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::suite::outcome::{Outcome, RunResult, SuiteResult};
use crate::sys::atomic_file::replace_file;

/// The files a run writes into its output directory.
pub struct ReportFiles {
    pub junit: PathBuf,
    pub json: PathBuf,
}

/// Writes `junit.xml` and `results.json` into `out`.
pub fn write(out: &Path, result: &RunResult) -> anyhow::Result<ReportFiles> {
    fs_err::create_dir_all(out)?;
    let files = ReportFiles { junit: out.join("junit.xml"), json: out.join("results.json") };
    // Replaced whole: a reader (a CI job, the matrix) sees the last run's report or this one's.
    let junit_text = junit(result).to_string().context("serializing the JUnit report")?;
    replace_file(&files.junit, junit_text.as_bytes()).with_context(|| format!("writing {}", files.junit.display()))?;
    replace_file(&files.json, (serde_json::to_string_pretty(result)? + "\n").as_bytes()).with_context(|| format!("writing {}", files.json.display()))?;
    Ok(files)
}

/// Where the evidence of a failed suite on a host goes (`<out>/<suite>-<host>/`).
pub fn evidence_dir(out: &Path, suite: &str, host: &str) -> PathBuf {
    out.join(format!("{suite}-{host}"))
}

/// Removes what an earlier run into `out` kept of these suites on these hosts, so that evidence
/// in `out` is always this run's.
pub fn clear_evidence(out: &Path, suites: &[&str], hosts: &[&str]) -> anyhow::Result<()> {
    for suite in suites {
        for host in hosts {
            let dir = evidence_dir(out, suite, host);
            if dir.exists() {
                fs_err::remove_dir_all(&dir)?;
            }
        }
    }
    Ok(())
}

/// The JUnit report of a run.
pub fn junit(result: &RunResult) -> Report {
    let mut report = Report::new("cxl-lab");
    report.add_test_suites(result.suites.iter().map(|suite| junit_suite(result, suite)));
    report.set_time(result.suites.iter().map(|suite| suite.duration).sum());
    report
}

fn junit_suite(result: &RunResult, suite: &SuiteResult) -> TestSuite {
    let mut junit = TestSuite::new(format!("{}/{}/{}/{}", suite.suite, result.profile, result.stack, suite.host));
    junit.add_property(("profile", result.profile.as_str()));
    junit.add_property(("stack", result.stack.as_str()));
    junit.add_property(("kernel", result.kernel_release.as_str()));
    junit.set_time(suite.duration);
    let classname = format!("{}.{}.{}", suite.suite, result.profile, result.stack);
    for step in &suite.steps {
        let mut status = match &step.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Failed(reason) | Outcome::Error(reason) => {
                let kind = if matches!(step.outcome, Outcome::Error(_)) { NonSuccessKind::Error } else { NonSuccessKind::Failure };
                let mut status = TestCaseStatus::non_success(kind);
                status.set_message(reason.lines().next().unwrap_or_default()).set_description(reason.as_str());
                status
            }
            Outcome::Skipped(reason) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(reason.as_str());
                status
            }
        };
        if matches!(step.outcome, Outcome::Failed(_) | Outcome::Error(_)) && !suite.evidence.is_empty() {
            let evidence: Vec<String> = suite.evidence.iter().map(|path| path.display().to_string()).collect();
            status.set_type(format!("evidence: {}", evidence.join(" ")));
        }
        let mut case = TestCase::new(step.name.as_str(), status);
        case.set_classname(classname.as_str()).set_time(step.duration);
        if !step.output.is_empty() {
            case.set_system_out(step.output.as_str());
        }
        junit.add_test_case(case);
    }
    junit
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::suite::outcome::StepResult;

    fn step(name: &str, outcome: Outcome) -> StepResult {
        StepResult { name: name.to_owned(), outcome, duration: Duration::from_millis(250), output: String::new() }
    }

    #[test]
    fn steps_become_test_cases_with_their_reasons() {
        let suite = SuiteResult {
            suite: "region".to_owned(),
            host: "host0".to_owned(),
            steps: vec![
                step("cxl list answers", Outcome::Passed),
                step("create a region", Outcome::Skipped("no region <here> & now".to_owned())),
                step("topology", Outcome::Failed("memdev serial 100: pmem_size: expected 1, guest 2".to_owned())),
            ],
            duration: Duration::from_secs(1),
            evidence: vec![PathBuf::from("out/region-host0/dmesg.txt")],
        };
        let result = RunResult { profile: "seed".into(), stack: "distro".into(), kernel_release: "7.3".into(), booted: true, suites: vec![suite], lost: Vec::new() };
        let xml = junit(&result).to_string().unwrap();
        assert!(xml.contains(r#"<testsuite name="region/seed/distro/host0" tests="3" skipped="1" errors="0" failures="1""#), "{xml}");
        assert!(xml.contains(r#"<skipped message="no region &lt;here&gt; &amp; now"/>"#), "{xml}");
        assert!(xml.contains("evidence: out/region-host0/dmesg.txt"), "{xml}");
        let json: serde_json::Value = serde_json::to_value(&result).unwrap();
        assert_eq!(json["suites"][0]["steps"][1]["status"], "skipped");
        assert_eq!(json["suites"][0]["steps"][2]["reason"], "memdev serial 100: pmem_size: expected 1, guest 2");
    }

    #[test]
    fn a_boot_that_failed_is_an_error_with_its_evidence() {
        let suite = SuiteResult {
            suite: "smoke".to_owned(),
            host: "host0".to_owned(),
            steps: vec![step("the lab boots", Outcome::Error("the lab did not boot: QEMU exited 1".to_owned()))],
            duration: Duration::from_secs(1),
            evidence: vec![PathBuf::from("out/smoke-host0/qemu.log")],
        };
        let result = RunResult { profile: "seed".into(), stack: "distro".into(), kernel_release: String::new(), booted: false, lost: Vec::new(), suites: vec![suite] };
        assert!(!result.passed());
        assert_eq!(result.counts().errors, 1);
        let xml = junit(&result).to_string().unwrap();
        assert!(xml.contains(r#"errors="1" failures="0""#), "{xml}");
        assert!(xml.contains(r#"<error message="the lab did not boot: QEMU exited 1" type="evidence: out/smoke-host0/qemu.log">"#), "{xml}");
        assert_eq!(serde_json::to_value(&result).unwrap()["suites"][0]["steps"][0]["status"], "error");
    }
}
