//! A machine's state saved to a file and a machine started from one: QEMU's migration to and from
//! a `file:` URI. The state holds RAM (the memory backends' contents included) and every device,
//! not the disk: the caller copies the disk while the machine is stopped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::sys::runner::CommandRunner;
use crate::vm::qmp::QmpClient;

/// How often the migration's status is asked for.
const POLL: Duration = Duration::from_millis(20);

/// The `file:` URI QEMU migrates to or from; QEMU would read a comma as the start of an option.
fn file_uri(state_file: &Path) -> anyhow::Result<String> {
    let path = state_file.to_str().with_context(|| format!("{} is not UTF-8", state_file.display()))?;
    if path.contains(',') {
        bail!("QEMU cannot migrate to {path}: the path holds a comma");
    }
    Ok(format!("file:{path}"))
}

/// Stops the machine and writes its state to `state_file`, within `timeout`. The machine stays
/// stopped, its disks flushed and released, until [`resume`]. A migration blocker (a mounted 9p
/// share, for one) is QEMU's error, quoted.
pub fn save_state(qmp: &mut QmpClient, state_file: &Path, timeout: Duration) -> anyhow::Result<()> {
    let uri = file_uri(state_file)?;
    qmp.execute_raw("stop", None)?;
    qmp.execute_raw("migrate", Some(json!({ "uri": uri }))).context("QEMU refused to save the machine's state")?;
    let deadline = Instant::now() + timeout;
    loop {
        let info = qmp.execute_raw("query-migrate", None)?;
        match info.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some(status @ ("failed" | "cancelled")) => {
                let why = info.get("error-desc").and_then(Value::as_str).unwrap_or("QEMU gave no reason");
                bail!("saving the machine's state {status}: {why}");
            }
            _ if Instant::now() >= deadline => bail!("saving the machine's state took more than {} s", timeout.as_secs()),
            _ => std::thread::sleep(POLL),
        }
    }
}

/// The argv of a machine that starts from `state_file` instead of booting: the same machine (QEMU
/// checks that every device matches) told to load its state first.
pub fn incoming_argv(argv: &[String], state_file: &Path) -> anyhow::Result<Vec<String>> {
    let mut argv = argv.to_vec();
    argv.extend(["-incoming".to_owned(), file_uri(state_file)?]);
    Ok(argv)
}

/// Runs a machine again: one stopped by [`save_state`], or one started by [`incoming_argv`] once
/// its state is loaded (QEMU then waits paused, as the saved machine was).
pub fn resume(qmp: &mut QmpClient, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = qmp.query_status()?;
        match status.status.as_str() {
            "running" => return Ok(()),
            "inmigrate" if Instant::now() < deadline => std::thread::sleep(POLL),
            "inmigrate" => bail!("loading the machine's state took more than {} s", timeout.as_secs()),
            _ => return qmp.cont().context("resuming the machine"),
        }
    }
}

/// The CXL device types of `argv` (`-device cxl-...`, `pxb-cxl`) whose state `qemu_binary` does
/// not save: QEMU migrates a device without migration state silently, and the restored guest
/// then finds its CXL devices reset (config space all-ones, decoders gone). Asked of QEMU itself
/// (`-dump-vmstate` lists every device type that has migration state). Only CXL devices are
/// checked: virtio devices save through their bus and are not in that list.
pub fn cxl_devices_without_state(runner: &CommandRunner, qemu_binary: &Path, argv: &[String]) -> anyhow::Result<Vec<String>> {
    let dump = tempfile::NamedTempFile::new()?;
    let mut command = Command::new(qemu_binary);
    command.args(["-M", "none", "-nodefaults", "-display", "none", "-dump-vmstate"]).arg(dump.path());
    runner.run("list the device types QEMU saves the state of", &mut command)?;
    let saved: serde_json::Map<String, Value> = serde_json::from_slice(&std::fs::read(dump.path())?).context("reading QEMU's -dump-vmstate")?;
    Ok(cxl_device_types(argv).into_iter().filter(|device| !saved.contains_key(*device)).map(str::to_owned).collect())
}

/// The CXL device types an argv creates, each once, in order.
fn cxl_device_types(argv: &[String]) -> Vec<&str> {
    let mut types = Vec::new();
    for pair in argv.windows(2).filter(|pair| pair[0] == "-device") {
        let device = pair[1].split(',').next().unwrap_or_default();
        if (device.starts_with("cxl-") || device == "pxb-cxl") && !types.contains(&device) {
            types.push(device);
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_restored_machine_is_the_same_argv_told_to_load_its_state() {
        let argv = vec!["qemu".to_owned(), "-m".to_owned(), "2G".to_owned()];
        let incoming = incoming_argv(&argv, Path::new("/cache/snapshot-1/machine.state")).unwrap();
        assert_eq!(incoming, ["qemu", "-m", "2G", "-incoming", "file:/cache/snapshot-1/machine.state"]);
    }

    #[test]
    fn a_state_file_whose_path_qemu_would_misread_is_refused() {
        let error = incoming_argv(&[], &PathBuf::from("/cache/a,offset=9/machine.state")).unwrap_err();
        assert!(error.to_string().contains("holds a comma"), "{error}");
    }

    #[test]
    fn the_cxl_devices_of_an_argv_are_named_once_each() {
        let argv: Vec<String> = ["qemu", "-device", "pxb-cxl,bus_nr=12", "-device", "cxl-rp,port=0", "-device", "virtio-rng-pci", "-device", "cxl-rp,port=1", "-device", "cxl-type3,sn=1"]
            .iter()
            .map(|word| word.to_string())
            .collect();
        assert_eq!(cxl_device_types(&argv), ["pxb-cxl", "cxl-rp", "cxl-type3"]);
    }
}
