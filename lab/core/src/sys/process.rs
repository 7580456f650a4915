//! Processes and signals: whether a pid is still the program we started, the stop signals a
//! waiting command holds, children that die with their parent, and whether we are root.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

/// Whether a process runs (or is a zombie not yet reaped) and its first argv word is `program`,
/// so a pid reused by an unrelated process is not taken for ours.
pub fn process_runs_program(pid: u32, program: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let first = cmdline.split(|byte| *byte == 0).next().unwrap_or_default();
    if first.is_empty() {
        // A zombie has an empty cmdline: it has exited, only its status waits to be collected.
        return false;
    }
    let first = String::from_utf8_lossy(first);
    first == program || Path::new(first.as_ref()).file_name() == Path::new(program).file_name()
}

/// The stop signals (SIGINT, SIGTERM, SIGHUP) a waiting command blocks, so that it can notice
/// them between checks and stop what it started instead of dying half way.
pub fn stop_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
}

/// A blocked stop signal waiting for this process, if any (see [`stop_signals`]).
pub fn pending_stop_signal() -> Option<Signal> {
    let mut pending = std::mem::MaybeUninit::<nix::libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given; it is read only when the call succeeded.
    let pending = unsafe {
        if nix::libc::sigpending(pending.as_mut_ptr()) != 0 {
            return None;
        }
        SigSet::from_sigset_t_unchecked(pending.assume_init())
    };
    stop_signals().iter().find(|signal| pending.contains(*signal))
}

/// Sends `signal` to a process, ignoring one that is already gone.
pub fn signal_process(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// Waits until `still_running` turns false or `timeout` passes; true if it turned false.
pub fn wait_until_gone(timeout: Duration, mut still_running: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !still_running() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !still_running()
}

/// Makes the child started by `command` get `signal` from the kernel when this process dies (any
/// way, SIGKILL included), without changing its process group: a Ctrl-C still reaches it.
///
/// Linux sends the signal when the *thread* that forked exits, so spawn from a thread that lives
/// as long as the child: the runner waits for its commands on the calling thread; long-running
/// children (QEMU, the lab supervisor) are spawned from the main thread.
pub fn die_with_parent(command: &mut Command, signal: Signal) {
    let owner = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != owner {
                return Err(std::io::Error::other("the parent died before the child started"));
            }
            Ok(())
        });
    }
}

pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        // The effective uid is the second field of `Uid:`; no libc binding needed for it.
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| line.strip_prefix("Uid:").map(|ids| ids.split_whitespace().nth(1) == Some("0")))
            })
            .unwrap_or(false)
    })
}
