//! `lab matrix`: each cell is this program's own `lab --lab <cell's lab> run`, a process of its
//! own, so a cell that crashes, hangs or loses its QEMU is recorded and never stops the others.
//! Cells run side by side, `jobs` at a time; each ends within the matrix's cell timeout.
//!
//! A cell's directory holds what its `lab run` wrote (`junit.xml`, `results.json`, the evidence of
//! failures), its output (`cell.log`) and its lab's logs (`lab-logs/`: each host's serial
//! console, QEMU's log and argv, the supervisor's log).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::layout::Layout;
use crate::matrix::plan::{Cell, MatrixPlan};
use crate::shell::Shell;
use crate::sys::runner::{CommandRunner, Ended};

/// What starts a cell: this program, whose `lab --lab NAME run ...` runs the cell's suites.
#[derive(Clone, Debug)]
pub struct CellLauncher {
    pub program: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    /// Every step skipped (with its reason).
    Skipped,
    /// The cell did not finish its run: a crash, a hang, a timeout, a QEMU that ended.
    Error,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SuiteCell {
    pub suite: String,
    pub status: Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct CellResult {
    pub profile: String,
    pub stack: String,
    pub lab: String,
    pub status: Status,
    /// Why a cell is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub seconds: f64,
    /// The cell's directory, relative to the matrix's output.
    pub dir: String,
    /// Each suite of the matrix (all `error` when the cell is).
    pub suites: Vec<SuiteCell>,
    /// The files the cell left, relative to the matrix's output.
    pub files: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MatrixResult {
    pub profiles: Vec<String>,
    pub stacks: Vec<String>,
    pub suites: Vec<String>,
    pub jobs: usize,
    pub wall_seconds: f64,
    pub cells: Vec<CellResult>,
}

impl MatrixResult {
    pub fn passed(&self) -> bool {
        self.cells.iter().all(|cell| matches!(cell.status, Status::Passed | Status::Skipped))
    }

    /// Every cell finished its run (whatever its suites found).
    pub fn finished(&self) -> bool {
        self.cells.iter().all(|cell| cell.status != Status::Error)
    }

    pub fn cell(&self, profile: &str, stack: &str) -> Option<&CellResult> {
        self.cells.iter().find(|cell| cell.profile == profile && cell.stack == stack)
    }
}

/// Runs every cell, `jobs` at a time, a progress line as each ends; the results in cell order.
pub fn run(paths: &Layout, shell: &Shell, launcher: &CellLauncher, plan: &MatrixPlan, out: &Path, jobs: usize) -> anyhow::Result<MatrixResult> {
    fs_err::create_dir_all(out)?;
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::channel();
    let mut results: Vec<Option<CellResult>> = vec![None; plan.cells.len()];
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(cell) = plan.cells.get(index) else { break };
                let result = run_cell(paths, launcher, plan, cell, out);
                if sender.send((index, result)).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        for (finished, (index, result)) in receiver.iter().enumerate() {
            show_progress(shell, finished + 1, plan.cells.len(), &result);
            results[index] = Some(result);
        }
    });
    let cells = results.into_iter().map(|result| result.expect("every cell sends its result")).collect();
    Ok(MatrixResult {
        profiles: plan.profiles.clone(),
        stacks: plan.stacks.iter().map(|stack| stack.to_string()).collect(),
        suites: plan.suites.clone(),
        jobs,
        wall_seconds: started.elapsed().as_secs_f64(),
        cells,
    })
}

fn show_progress(shell: &Shell, finished: usize, total: usize, cell: &CellResult) {
    let verb = match cell.status {
        Status::Passed => "Passed",
        Status::Failed => "Failed",
        Status::Skipped => "Skipped",
        Status::Error => "Error",
    };
    let suites: Vec<String> = cell.suites.iter().map(|suite| format!("{} {}", suite.suite, suite.status.name())).collect();
    let reason = cell.reason.as_deref().map(|reason| format!(": {reason}")).unwrap_or_default();
    shell.status(verb, format!("[{finished}/{total}] {}/{} ({:.1} s; {}){reason}", cell.profile, cell.stack, cell.seconds, suites.join(", ")));
}

/// One cell: its `lab run`, then its lab's logs; a cell that did not end its run has its lab
/// taken down, so no QEMU of it outlives the matrix.
fn run_cell(paths: &Layout, launcher: &CellLauncher, plan: &MatrixPlan, cell: &Cell, out: &Path) -> CellResult {
    let started = Instant::now();
    let dir = out.join(cell.dir_name());
    let _ = fs_err::remove_dir_all(&dir);
    let runner = CommandRunner::new(&dir);
    let mut command = lab_command(launcher, cell);
    command.args(["run", "--profile", &cell.profile, "--stack", cell.stack.name(), "--suite", &plan.suites.join(",")]).arg("--out").arg(&dir);
    let ended = runner.run_within("cell", &mut command, plan.cell_timeout);
    let results = read_results(&dir.join("results.json"));
    let (status, reason, suites) = match (&ended, &results) {
        (Ok(Ended::Exited(_)), Some(results)) => judge_results(plan, results),
        (Ok(Ended::Exited(status)), None) => (Status::Error, Some(error_line(&runner.log_path("cell")).unwrap_or_else(|| format!("`lab run` ended ({status}) without results"))), Vec::new()),
        (Ok(Ended::TimedOut), _) => (Status::Error, Some(format!("timed out after {} s", plan.cell_timeout.as_secs())), Vec::new()),
        (Err(error), _) => (Status::Error, Some(error.to_string()), Vec::new()),
    };
    if status == Status::Error {
        // A cell stopped half way may leave its lab up (`lab run` detaches the lab it boots).
        let _ = runner.run("down", lab_command(launcher, cell).arg("down"));
    }
    keep_lab_logs(&paths.lab(&cell.lab), &dir.join("lab-logs"));
    let suites = if status == Status::Error { plan.suites.iter().map(|suite| SuiteCell { suite: suite.clone(), status: Status::Error }).collect() } else { suites };
    CellResult {
        profile: cell.profile.clone(),
        stack: cell.stack.to_string(),
        lab: cell.lab.clone(),
        status,
        reason,
        seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        dir: cell.dir_name(),
        suites,
        files: files_under(&dir, out),
    }
}

fn lab_command(launcher: &CellLauncher, cell: &Cell) -> Command {
    let mut command = Command::new(&launcher.program);
    command.args(["lab", "--lab", &cell.lab]);
    command
}

fn read_results(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A finished run's verdict per suite (all its hosts together); machines whose QEMU ended during
/// the run make the cell an error.
fn judge_results(plan: &MatrixPlan, results: &Value) -> (Status, Option<String>, Vec<SuiteCell>) {
    let suites: Vec<SuiteCell> = plan.suites.iter().map(|suite| SuiteCell { suite: suite.clone(), status: suite_status(results, suite) }).collect();
    let lost: Vec<&str> = results["lost"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !lost.is_empty() {
        return (Status::Error, Some(lost.join("; ")), suites);
    }
    let status = if suites.iter().any(|suite| suite.status == Status::Failed) {
        Status::Failed
    } else if suites.iter().all(|suite| suite.status == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Passed
    };
    (status, None, suites)
}

/// A suite's verdict over every host it ran on: failed if a step failed anywhere, skipped if
/// every step skipped, else passed.
fn suite_status(results: &Value, suite: &str) -> Status {
    let runs: Vec<&Value> = results["suites"].as_array().into_iter().flatten().filter(|run| run["suite"] == suite).collect();
    let steps: Vec<&str> = runs.iter().flat_map(|run| run["steps"].as_array().into_iter().flatten()).filter_map(|step| step["status"].as_str()).collect();
    // The kernel-log step closing every suite always runs; a suite skipped is one whose other
    // steps all skipped.
    let own_steps = runs.iter().map(|run| run["steps"].as_array().map_or(0, Vec::len).saturating_sub(1)).sum::<usize>();
    if runs.is_empty() {
        Status::Error
    } else if steps.contains(&"failed") {
        Status::Failed
    } else if steps.iter().filter(|status| **status == "skipped").count() >= own_steps {
        Status::Skipped
    } else {
        Status::Passed
    }
}

/// The cell's own error line (`error: ...`), else its last line.
fn error_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    let line = lines.iter().find(|line| line.starts_with("error:")).or(lines.last())?;
    Some(line.trim_start_matches("error:").trim().to_owned())
}

/// Copies each host's serial console, QEMU log and argv and the supervisor's log of a lab.
fn keep_lab_logs(lab: &crate::layout::LabLayout, into: &Path) {
    let mut copies = vec![(lab.supervisor_log(), "supervisor.log".to_owned())];
    for entry in std::fs::read_dir(lab.dir.join("run")).into_iter().flatten().flatten() {
        let host = entry.file_name().to_string_lossy().into_owned();
        let run_dir = lab.run_dir(&host);
        for (source, name) in [(run_dir.serial_log(), "serial.log"), (run_dir.qemu_log(), "qemu.log"), (run_dir.argv_file(), "qemu.argv")] {
            copies.push((source, format!("{host}-{name}")));
        }
    }
    for (source, name) in copies.into_iter().filter(|(source, _)| source.is_file()) {
        if std::fs::create_dir_all(into).is_ok() {
            let _ = std::fs::copy(&source, into.join(name));
        }
    }
}

/// Every file under `dir`, as a path relative to `base`, sorted.
fn files_under(dir: &Path, base: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(base) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn plan(suites: &[&str]) -> MatrixPlan {
        MatrixPlan { profiles: vec![], stacks: vec![], suites: suites.iter().map(|suite| suite.to_string()).collect(), cells: vec![], cell_timeout: Duration::from_secs(1) }
    }

    fn run_of(suite: &str, host: &str, statuses: &[&str]) -> Value {
        let steps: Vec<Value> = statuses.iter().map(|status| json!({"name": "s", "status": status})).collect();
        json!({"suite": suite, "host": host, "steps": steps})
    }

    #[test]
    fn suites_are_judged_over_every_host() {
        let results = json!({"suites": [
            run_of("smoke", "host0", &["passed", "passed"]),
            run_of("smoke", "host1", &["passed", "failed"]),
            run_of("region", "host0", &["skipped", "skipped", "passed"]),
            run_of("topology", "host0", &["passed", "skipped", "passed"]),
        ]});
        let (status, reason, suites) = judge_results(&plan(&["smoke", "region", "topology", "poison"]), &results);
        let statuses: Vec<Status> = suites.iter().map(|suite| suite.status).collect();
        assert_eq!(statuses, [Status::Failed, Status::Skipped, Status::Passed, Status::Error]);
        assert_eq!((status, reason), (Status::Failed, None));
    }

    #[test]
    fn a_qemu_that_ended_during_the_run_makes_the_cell_an_error() {
        let results = json!({"suites": [run_of("smoke", "host0", &["failed"])], "lost": ["QEMU of `host0` (pid 7) ended during the run"]});
        let (status, reason, _) = judge_results(&plan(&["smoke"]), &results);
        assert_eq!(status, Status::Error);
        assert_eq!(reason.as_deref(), Some("QEMU of `host0` (pid 7) ended during the run"));
    }
}
