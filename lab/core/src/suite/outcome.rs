//! What a run found: each step passed, failed or skipped with its reason; a suite passed when
//! no step failed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
    /// The step could not be run at all: the lab did not boot, or the run was interrupted.
    Error(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(with = "seconds")]
    pub duration: Duration,
    /// What the step saw (a guest command's output, QEMU's reply), for the reader of a failure.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SuiteResult {
    pub suite: String,
    /// The machine the suite ran on.
    pub host: String,
    pub steps: Vec<StepResult>,
    #[serde(with = "seconds")]
    pub duration: Duration,
    /// The evidence kept for a failure (serial log, dmesg, argv, lock, `cxl list`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<PathBuf>,
}

/// One `lab run`: the suites on one profile and stack.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub profile: String,
    pub stack: String,
    pub kernel_release: String,
    /// Whether this run booted the lab (else it reused one that was up).
    pub booted: bool,
    pub suites: Vec<SuiteResult>,
    /// Machines whose QEMU ended while the suites ran (a crash, a kill): the run did not finish
    /// as asked, whatever its steps say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
}

/// Step counts, for the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
}

impl SuiteResult {
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|step| !matches!(step.outcome, Outcome::Failed(_) | Outcome::Error(_)))
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for step in &self.steps {
            match step.outcome {
                Outcome::Passed => counts.passed += 1,
                Outcome::Failed(_) => counts.failed += 1,
                Outcome::Skipped(_) => counts.skipped += 1,
                Outcome::Error(_) => counts.errors += 1,
            }
        }
        counts
    }
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.suites.iter().all(SuiteResult::passed)
    }

    pub fn counts(&self) -> Counts {
        self.suites.iter().map(SuiteResult::counts).fold(Counts::default(), |total, counts| Counts {
            passed: total.passed + counts.passed,
            failed: total.failed + counts.failed,
            skipped: total.skipped + counts.skipped,
            errors: total.errors + counts.errors,
        })
    }
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64((duration.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}
