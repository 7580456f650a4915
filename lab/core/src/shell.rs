//! All output goes through [`Shell`]: results on stdout ([`Shell::out`]), and status lines,
//! warnings, errors and progress on stderr. Nothing else in the workspace prints
//! (`xtask/tests/architecture.rs` checks it).
//!
//! On a terminal, long steps show an indicatif bar or spinner; otherwise (CI, pipes) each step
//! prints plain start and finish lines, so logs stay readable.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Debug)]
pub struct Shell {
    verbose: bool,
    fancy: bool,
}

/// Whether the command line asked for `-v`: one answer per process, recorded by [`Shell::new`],
/// so that [`trace_command`] (called by the runner, which carries no shell) can honour it.
static VERBOSE: AtomicBool = AtomicBool::new(false);

impl Shell {
    /// The command line's shell; `verbose` also turns on [`trace_command`] for this process.
    pub fn new(verbose: bool) -> Shell {
        let fancy = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        if verbose {
            VERBOSE.store(true, Ordering::Relaxed);
        }
        Shell { verbose, fancy }
    }

    /// A shell that prints plain lines only (tests, pipes).
    pub fn plain() -> Shell {
        Shell { verbose: false, fancy: false }
    }

    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// A one-line status: `   Verb message`, cargo style.
    pub fn status(&self, verb: &str, message: impl std::fmt::Display) {
        if self.fancy {
            eprintln!("{:>12} {message}", console::style(verb).green().bold());
        } else {
            eprintln!("{verb:>12} {message}");
        }
    }

    pub fn warn(&self, message: impl std::fmt::Display) {
        if self.fancy {
            eprintln!("{} {message}", console::style("warning:").yellow().bold());
        } else {
            eprintln!("warning: {message}");
        }
    }

    /// Only shown with `-v`.
    pub fn verbose(&self, message: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("{:>12} {message}", "note");
        }
    }

    /// A command's result: one line on stdout, for people and for pipes.
    pub fn out(&self, line: impl std::fmt::Display) {
        println!("{line}");
    }

    /// A line on stderr as it is: a message that carries its own `file:line:` prefix.
    pub fn err(&self, line: impl std::fmt::Display) {
        eprintln!("{line}");
    }

    /// Bytes passed through as they are (a guest command's output, a console): `Ok(())` once
    /// written and flushed.
    pub fn out_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes)?;
        stdout.flush()
    }

    /// Bytes passed through to stderr (a guest command's own stderr).
    pub fn err_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(bytes)?;
        stderr.flush()
    }

    /// Where a command streams its result (`lab console --follow`).
    pub fn stdout(&self) -> std::io::StdoutLock<'static> {
        std::io::stdout().lock()
    }

    /// A failure the command cannot go on from: `error: ...` with the whole cause chain.
    pub fn error(&self, error: &anyhow::Error) {
        if self.fancy {
            eprintln!("{} {error:#}", console::style("error:").red().bold());
        } else {
            eprintln!("error: {error:#}");
        }
    }

    /// Starts a long step with an unknown length: a spinner, or a plain line.
    pub fn step(&self, name: &str) -> StepProgress {
        self.start(name, None)
    }

    /// Starts a long step that counts up to `total` (bytes or items).
    pub fn step_with_total(&self, name: &str, total: u64) -> StepProgress {
        self.start(name, Some(total))
    }

    fn start(&self, name: &str, total: Option<u64>) -> StepProgress {
        let bar = if self.fancy {
            let bar = match total {
                Some(total) => {
                    let bar = ProgressBar::new(total);
                    bar.set_style(
                        ProgressStyle::with_template("{spinner:.green} {msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
                            .expect("progress template is valid")
                            .progress_chars("=> "),
                    );
                    bar
                }
                None => {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("{spinner:.green} {msg} {elapsed}").expect("spinner template is valid"),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                }
            };
            bar.set_message(name.to_owned());
            Some(bar)
        } else {
            eprintln!("{:>12} {name}", "Starting");
            None
        };
        StepProgress { name: name.to_owned(), bar, started: Instant::now() }
    }
}

/// The last non-empty line of a log (its last 2 KiB), shortened for a spinner.
fn last_line(log: &Path) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(2048))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    Some(line.chars().take(70).collect())
}

/// With `-v`: an external command as it starts, `[step] $ command` (the runner's trace).
pub fn trace_command(step: &str, shown: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("[{step}] $ {shown}");
    }
}

/// An integration test skipped for a missing prerequisite, straight to the stream: the test
/// harness captures the `eprintln!` of passing tests.
pub fn report_skipped_test(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// A running step; finish it with [`StepProgress::done`] or drop it on failure.
pub struct StepProgress {
    name: String,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl StepProgress {
    pub fn set_position(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    pub fn set_message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}: {}", self.name, message.into()));
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Runs `work` while the step's spinner shows the last line of its log, so a long step
    /// (minutes of debootstrap) shows what it is doing. Without a terminal this only runs `work`.
    pub fn follow_log<T>(&self, log: &Path, work: impl FnOnce() -> T) -> T {
        self.while_running(work, || {
            if let Some(line) = last_line(log) {
                self.set_message(line);
            }
        })
    }

    /// Runs `work` while the step shows how many of `total` bytes the `files` hold (downloads).
    pub fn follow_growth<T>(&self, files: &[PathBuf], total: u64, work: impl FnOnce() -> T) -> T {
        const MIB: u64 = 1024 * 1024;
        self.while_running(work, || {
            let arrived: u64 = files.iter().filter_map(|file| std::fs::metadata(file).ok()).map(|metadata| metadata.len()).sum();
            self.set_position(arrived);
            self.set_message(format!("{} of {} MiB", arrived / MIB, total.div_ceil(MIB)));
        })
    }

    /// Runs `work`, calling `update` about four times a second on another thread until it ends.
    fn while_running<T>(&self, work: impl FnOnce() -> T, update: impl Fn() + Sync) -> T {
        if self.bar.is_none() {
            return work();
        }
        let finished = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    update();
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
            let result = work();
            finished.store(true, Ordering::Relaxed);
            result
        })
    }

    /// Ends the step with a finish line that says how long it took.
    pub fn done(self, detail: impl std::fmt::Display) -> Duration {
        let elapsed = self.started.elapsed();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{:>12} {} ({detail}, {:.1} s)", "Finished", self.name, elapsed.as_secs_f64());
        elapsed
    }
}

impl Drop for StepProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
