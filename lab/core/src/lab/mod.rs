//! Labs: the commands users type (`lab up`, `exec`, `switch`, `down`...) on top of the profile,
//! render, stack and vm layers. A lab is a named set of machines booted from one profile; its
//! files live in `<state>/labs/<name>/` ([`state::LabLayout`]), its QEMUs are owned by one
//! supervisor process ([`supervise`]), and one `lab up` at a time holds it ([`lock`]).

pub mod bench;
pub mod capability;
pub mod control;
pub mod lock;
pub mod plan;
pub mod secrets;
pub mod snapshot;
pub mod state;
pub mod supervise;
pub mod up;
pub mod virtme;

use std::path::PathBuf;
use std::time::SystemTime;

use crate::layout::LabLayout;
use crate::layout::Layout;
use crate::shell::Shell;

/// How to start this tool as the supervisor of a lab (`<exe> lab --lab NAME supervise`): the
/// command line knows its own syntax, the library does not.
#[derive(Clone, Debug)]
pub struct SupervisorLauncher {
    pub program: PathBuf,
    pub arguments: Vec<String>,
}

/// What every lab command works with.
pub struct LabContext {
    pub paths: Layout,
    pub shell: Shell,
    pub files: LabLayout,
    pub supervisor_launcher: SupervisorLauncher,
    /// When the command started, to measure the tool's own time before QEMU runs.
    pub invocation_started: SystemTime,
}

impl LabContext {
    /// ` --lab NAME` for commands the user is told to type, unless the lab is the default one.
    pub fn lab_flag(&self) -> String {
        if self.files.name == state::DEFAULT_LAB {
            String::new()
        } else {
            format!(" --lab {}", self.files.name)
        }
    }
}

/// When this process started, from `/proc` (10 ms resolution), so the tool's own time before QEMU
/// runs includes loading the binary; the current time when `/proc` cannot tell.
pub fn process_start_time() -> SystemTime {
    let now = SystemTime::now();
    let age = (|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let after_name = &stat[stat.rfind(')')? + 2..];
        // `starttime` is field 22 of the whole line, the 20th after the name; in clock ticks,
        // which Linux fixes at 100 a second for user space.
        let start_ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
        Some(std::time::Duration::from_secs_f64((uptime - start_ticks / 100.0).max(0.0)))
    })();
    age.and_then(|age| now.checked_sub(age)).unwrap_or(now)
}
