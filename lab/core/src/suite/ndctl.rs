//! ndctl's own CXL suite (`meson test --suite cxl`, against `cxl_test`) in the guest, each of its
//! tests one result of ours, read from meson's `testlog.json` (one JSON object a line).

use serde_json::Value;

use crate::suite::outcome::Outcome;

/// Where the source stack's root filesystem keeps ndctl's build tree with its tests.
pub const BUILD_DIR: &str = "/usr/src/ndctl/build";

/// Prints what the suite needs that the guest lacks, one line each; nothing when it has it all.
pub const NEEDS_SCRIPT: &str = "test -f /usr/src/ndctl/build/build.ninja || echo 'no ndctl build tree with its tests (/usr/src/ndctl/build: the source stack builds one; Debian ships ndctl without its tests)'; \
    modinfo cxl_test >/dev/null 2>&1 || echo 'no cxl_test module (the source stack builds it; Debian builds the CXL core into its kernel, so cxl_test cannot load)'; \
    test -d /run/udev || echo 'no udev (a lean boot): ndctl'\"'\"'s scripts wait on udev after they load cxl_test; boot with `--boot full`'";

/// Runs the suite (its own exit code is in the log), then prints meson's per-test log.
pub const RUN_SCRIPT: &str = "meson test -C /usr/src/ndctl/build --suite cxl --no-rebuild -t 4 >/dev/null 2>&1; cat /usr/src/ndctl/build/meson-logs/testlog.json";

/// The reason the suite cannot run here, from [`NEEDS_SCRIPT`]'s output; `None` when it can.
pub fn unmet(needs_output: &str) -> Option<String> {
    let reasons: Vec<&str> = needs_output.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    (!reasons.is_empty()).then(|| format!("ndctl's cxl suite cannot run in this guest: {}", reasons.join("; ")))
}

/// One test of meson's log: its name (`cxl-topology.sh`), outcome, seconds and output.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
    pub seconds: f64,
    pub output: String,
}

/// meson's `testlog.json`: each line a test; lines that are not JSON are named as such.
pub fn parse_testlog(text: &str) -> Result<Vec<TestResult>, String> {
    let mut results = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let test: Value = serde_json::from_str(line).map_err(|error| format!("meson's testlog.json holds a line that is not JSON ({error}): {line}"))?;
        let full_name = test["name"].as_str().unwrap_or("?");
        // `ndctl:cxl / cxl-topology.sh`
        let name = full_name.rsplit(" / ").next().unwrap_or(full_name).to_owned();
        let result = test["result"].as_str().unwrap_or("?");
        let output = [test["stdout"].as_str(), test["stderr"].as_str()].into_iter().flatten().collect::<Vec<_>>().join("");
        let outcome = match result {
            "OK" | "EXPECTEDFAIL" => Outcome::Passed,
            "SKIP" => Outcome::Skipped(format!("ndctl's test skipped itself: {}", last_line(&output))),
            _ => Outcome::Failed(format!("meson: {result} (exit code {}): {}", test["returncode"], failure_line(&output))),
        };
        results.push(TestResult { name, outcome, seconds: test["duration"].as_f64().unwrap_or(0.0), output });
    }
    if results.is_empty() {
        return Err("meson's testlog.json lists no test: the suite did not run".to_owned());
    }
    Ok(results)
}

/// Where ndctl's script says it failed (`test/cxl-topology.sh: failed at line 183`), else its
/// last line.
fn failure_line(output: &str) -> &str {
    output.lines().rev().find(|line| line.contains("failed at line")).unwrap_or_else(|| last_line(output))
}

fn last_line(output: &str) -> &str {
    output.trim().lines().last().unwrap_or("no output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_meson_test_is_one_result() {
        let log = r#"{"name": "ndctl:cxl / cxl-topology.sh", "stdout": "+ cxl enable-port\ntest/cxl-topology.sh: failed at line 183\n+ exit 1\n", "result": "FAIL", "returncode": 1, "duration": 12.3}
{"name": "ndctl:cxl / cxl-region-sysfs.sh", "stdout": "ok\n", "result": "OK", "returncode": 0, "duration": 20.1}
{"name": "ndctl:cxl / cxl-security.sh", "stdout": "no security support\n", "result": "SKIP", "returncode": 77, "duration": 0.5}
"#;
        let results = parse_testlog(log).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].name, "cxl-topology.sh");
        assert_eq!(results[0].outcome, Outcome::Failed("meson: FAIL (exit code 1): test/cxl-topology.sh: failed at line 183".to_owned()));
        assert_eq!((results[1].outcome.clone(), results[1].seconds), (Outcome::Passed, 20.1));
        assert_eq!(results[2].outcome, Outcome::Skipped("ndctl's test skipped itself: no security support".to_owned()));
        assert!(parse_testlog("").unwrap_err().contains("no test"));
        assert!(parse_testlog("Ok: 3\n").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn what_the_guest_lacks_is_the_reason() {
        assert_eq!(unmet("\n"), None);
        let reason = unmet("no cxl_test module (x)\nno udev (a lean boot)\n").unwrap();
        assert_eq!(reason, "ndctl's cxl suite cannot run in this guest: no cxl_test module (x); no udev (a lean boot)");
    }
}
