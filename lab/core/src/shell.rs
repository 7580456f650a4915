//! All user-facing output goes through [`Shell`]: status lines, warnings and progress.
//!
//! On a terminal, long steps show an indicatif bar or spinner; otherwise (CI, pipes) each step
//! prints plain start and finish lines, so logs stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Debug)]
pub struct Shell {
    verbose: bool,
    fancy: bool,
}

impl Shell {
    pub fn new(verbose: bool) -> Shell {
        let fancy = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
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
