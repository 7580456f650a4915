//! The one way cxl-lab runs an external program.
//!
//! Every command is logged exactly as it runs (argv, quoted for a shell) into its step's log file,
//! together with everything it prints. A failure names the step, the command, the last lines it
//! printed and the path of the whole log, so nobody has to rerun anything to see what went wrong.
//!
//! A command dies with the tool: the kernel sends it SIGKILL when the tool dies, even by SIGKILL
//! ([`die_with_parent`]), so a killed `lab up` leaves no `mkfs.ext4` or `qemu-img` running (a
//! command with a time limit gets SIGTERM instead, to stop cleanly: [`CommandRunner::run_within`]). A
//! command that starts a tree of its own (debootstrap) is run in its own namespaces so that the
//! whole tree goes with it (see `build::rootfs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fs_err as fs;
use nix::sys::signal::Signal;

use crate::sys::process::die_with_parent;

/// How many lines of a failed command's output an error message quotes.
const TAIL_LINES: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("step `{step}` could not start `{command}`: {source}\n  log: {log}")]
    Spawn { step: String, command: String, log: PathBuf, source: std::io::Error },
    #[error("step `{step}` failed ({status}): `{command}`\n{tail}\n  full log: {log}")]
    Failed { step: String, command: String, status: std::process::ExitStatus, tail: String, log: PathBuf },
    #[error("step `{step}` could not write its log {log}: {source}")]
    Log { step: String, log: PathBuf, source: std::io::Error },
}

/// How a command run with a time limit ([`CommandRunner::run_within`]) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(ExitStatus),
    /// It ran past its time and was stopped (SIGTERM, then SIGKILL).
    TimedOut,
}

/// How long a command stopped for its time limit has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs commands for named steps, each step appending to `<log_dir>/<step>.log`.
#[derive(Clone, Debug)]
pub struct CommandRunner {
    log_dir: PathBuf,
}

impl CommandRunner {
    pub fn new(log_dir: impl Into<PathBuf>) -> CommandRunner {
        CommandRunner { log_dir: log_dir.into() }
    }

    pub fn log_path(&self, step: &str) -> PathBuf {
        self.log_dir.join(format!("{}.log", step.replace(['/', ' '], "-")))
    }

    /// Runs `command` to completion with its stdout and stderr going to the step log.
    pub fn run(&self, step: &str, command: &mut Command) -> Result<(), RunError> {
        self.run_inner(step, command, false).map(|_| ())
    }

    /// Runs `command` and returns its stdout; stderr goes to the step log.
    pub fn run_capture(&self, step: &str, command: &mut Command) -> Result<String, RunError> {
        self.run_inner(step, command, true)
    }

    /// Runs `command` with its output going to the step log, for at most `timeout`; whatever it
    /// exits with is the caller's to judge (a command whose failure is an outcome, not an error).
    /// The command must stop cleanly on SIGTERM, which ends it at the timeout and also when this
    /// tool dies (not SIGKILL, as for other commands): a matrix cell's `lab run` then still takes
    /// down the lab it booted.
    pub fn run_within(&self, step: &str, command: &mut Command, timeout: Duration) -> Result<Ended, RunError> {
        let (log, log_file, shown) = self.open_log(step, command)?;
        let log_error = |source| RunError::Log { step: step.to_owned(), log: log.clone(), source };
        die_with_parent(command, Signal::SIGTERM);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().map_err(log_error)?))
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|source| RunError::Spawn { step: step.to_owned(), command: shown.clone(), log: log.clone(), source })?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(log_error)? {
                return Ok(Ended::Exited(status));
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        crate::sys::process::signal_process(child.id(), Signal::SIGTERM);
        let stopped = Instant::now() + STOP_GRACE;
        while child.try_wait().map_err(log_error)?.is_none() {
            if Instant::now() >= stopped {
                let _ = child.kill();
                child.wait().map_err(log_error)?;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Ended::TimedOut)
    }

    /// The step's log, opened for appending, with the command written (and traced) first; the
    /// command as shown.
    fn open_log(&self, step: &str, command: &Command) -> Result<(PathBuf, std::fs::File, String), RunError> {
        let log = self.log_path(step);
        let log_error = |source| RunError::Log { step: step.to_owned(), log: log.clone(), source };
        fs::create_dir_all(&self.log_dir).map_err(log_error)?;
        let mut log_file =
            fs::OpenOptions::new().create(true).append(true).open(&log).map_err(log_error)?.into_parts().0;
        let shown = display_command(command);
        writeln!(log_file, "$ {shown}").map_err(log_error)?;
        crate::shell::trace_command(step, &shown);
        Ok((log, log_file, shown))
    }

    fn run_inner(&self, step: &str, command: &mut Command, capture: bool) -> Result<String, RunError> {
        let (log, mut log_file, shown) = self.open_log(step, command)?;
        let log_error = |source| RunError::Log { step: step.to_owned(), log: log.clone(), source };

        let stderr = log_file.try_clone().map_err(log_error)?;
        die_with_parent(command, Signal::SIGKILL);
        let stdout = if capture { Stdio::piped() } else { Stdio::from(log_file.try_clone().map_err(log_error)?) };
        let output = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(stderr))
            .output()
            .map_err(|source| RunError::Spawn { step: step.to_owned(), command: shown.clone(), log: log.clone(), source })?;
        let captured = String::from_utf8_lossy(&output.stdout).into_owned();
        if capture && !captured.is_empty() {
            // Keep captured output in the log too: the log is the whole story of the step.
            log_file.write_all(captured.as_bytes()).map_err(log_error)?;
        }
        if output.status.success() {
            return Ok(captured);
        }
        Err(RunError::Failed { step: step.to_owned(), command: shown, status: output.status, tail: tail_of(&log), log })
    }
}

/// A command as a user could paste it into a shell: environment additions, program, arguments.
pub fn display_command(command: &Command) -> String {
    let mut words: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.to_string_lossy(), value?.to_string_lossy())))
        .map(|assignment| quote(&assignment))
        .collect();
    words.push(quote(&command.get_program().to_string_lossy()));
    words.extend(command.get_args().map(|arg| quote(&arg.to_string_lossy())));
    words.join(" ")
}

/// Quotes one word for a POSIX shell, leaving plain words as they are.
pub fn quote(word: &str) -> String {
    shlex::try_quote(word).map(|quoted| quoted.into_owned()).unwrap_or_else(|_| format!("{word:?}"))
}

/// The last lines of a log file, indented, for an error message.
pub fn tail_of(log: &Path) -> String {
    let text = std::fs::read(log).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].iter().map(|line| format!("  | {line}")).collect::<Vec<_>>().join("\n")
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_step_command_tail_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let runner = CommandRunner::new(dir.path());
        let error = runner
            .run("demo step", Command::new("sh").args(["-c", "echo first; echo last-words >&2; exit 3"]))
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("step `demo step` failed"), "{message}");
        assert!(message.contains("sh -c 'echo first; echo last-words >&2; exit 3'"), "{message}");
        assert!(message.contains("  | last-words"), "{message}");
        assert!(message.contains(&dir.path().join("demo-step.log").display().to_string()), "{message}");
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt;
        // Linux sends the parent-death signal when the thread that forked ends: a thread that
        // ends stands for a tool that is killed.
        let mut child = std::thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("300");
            die_with_parent(&mut command, Signal::SIGKILL);
            command.spawn().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));
    }

    #[test]
    fn capture_returns_stdout_and_logs_it() {
        let dir = tempfile::tempdir().unwrap();
        let runner = CommandRunner::new(dir.path());
        let out = runner.run_capture("echo", Command::new("echo").arg("hello world")).unwrap();
        assert_eq!(out, "hello world\n");
        let log = std::fs::read_to_string(runner.log_path("echo")).unwrap();
        assert_eq!(log, "$ echo 'hello world'\nhello world\n");
    }
}
