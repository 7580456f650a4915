//! The lab's guest program (`lab/guest`, `cxl-lab-guest`), built on the host with cargo and
//! copied into a guest that needs it.

use std::path::PathBuf;
use std::process::Command;

use crate::layout::Layout;
use crate::sys::runner::CommandRunner;

/// Builds `cxl-lab-guest` (release) into the checkout's target directory; returns the binary.
pub fn build(paths: &Layout, runner: &CommandRunner) -> anyhow::Result<PathBuf> {
    let target = paths.target_dir();
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "--release", "--quiet", "-p", "cxl-lab-guest", "--target-dir"]).arg(&target).current_dir(&paths.workspace);
    runner.run("build cxl-lab-guest", &mut cargo)?;
    Ok(target.join("release").join("cxl-lab-guest"))
}
