//! Choosing the accelerator: KVM only when it is proven to run a guest, TCG otherwise, and always
//! a reason the user can read.
//!
//! `/dev/kvm` existing proves nothing (on some hosts a KVM guest hangs at its first instruction),
//! so `auto` boots a probe: a 512-byte boot sector, generated here, that writes a marker to the
//! first serial port and halts. QEMU runs it through its firmware with `-accel kvm`; KVM is usable
//! iff the marker reaches the serial file within [`PROBE_TIMEOUT`]. The answer is cached per host
//! boot (keyed by `/proc/sys/kernel/random/boot_id` and the QEMU binary), so only the first
//! `lab up` after a reboot pays for the probe.
//!
//! Profiles that online CXL memory as system RAM always get TCG: under KVM the CXL windows are
//! emulated I/O, and a guest that runs code from them dies.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::layout::MachineRunDir;
use crate::qemu::{Accel, KVM_CPU_MODEL};
use crate::vm::supervisor::{prepare_run_dir, MachineSpec, RunningMachine};

/// How long the probe guest may take to print its marker. Firmware plus one boot sector takes
/// well under a second under a working KVM.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// What the probe guest writes to the serial port.
const PROBE_MARKER: &[u8] = b"CXLLAB-KVM-OK";

/// The chosen accelerator and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

/// Renamed whenever the probe changes, so a verdict of an older probe is never reused.
const PROBE_CACHE_FILE: &str = "kvm-probe-v2.json";

/// The cached outcome of a probe.
#[derive(Debug, Serialize, Deserialize)]
struct ProbeCacheEntry {
    boot_id: String,
    qemu_binary: PathBuf,
    kvm_works: bool,
    reason: String,
}

/// Decides the accelerator for a machine: `requested`, or with `None` (`auto`) KVM if the probe
/// proves it runs a guest.
///
/// `probe_dir` holds the probe's scratch files and its cache; `online_cxl_as_ram` says whether
/// the guest runs from CXL memory (the caller knows it from the profile).
pub fn resolve_accel(
    requested: Option<Accel>,
    online_cxl_as_ram: bool,
    qemu_binary: &Path,
    probe_dir: &Path,
) -> AccelDecision {
    if online_cxl_as_ram {
        let reason = "the profile onlines CXL memory as system RAM; under KVM CXL windows are emulated I/O and a guest running from them dies";
        return AccelDecision { accel: Accel::Tcg, reason: reason.to_owned() };
    }
    match requested {
        Some(Accel::Tcg) => AccelDecision { accel: Accel::Tcg, reason: "the profile asks for TCG".to_owned() },
        Some(Accel::Kvm) => AccelDecision { accel: Accel::Kvm, reason: "the profile asks for KVM".to_owned() },
        None => {
            let (kvm_works, reason) = kvm_usable_cached(qemu_binary, probe_dir);
            let accel = if kvm_works { Accel::Kvm } else { Accel::Tcg };
            AccelDecision { accel, reason }
        }
    }
}

/// The probe's verdict, from the cache when this host boot already ran it.
fn kvm_usable_cached(qemu_binary: &Path, probe_dir: &Path) -> (bool, String) {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned();
    let cache_file = probe_dir.join(PROBE_CACHE_FILE);
    if !boot_id.is_empty() {
        if let Ok(text) = std::fs::read_to_string(&cache_file) {
            if let Ok(entry) = serde_json::from_str::<ProbeCacheEntry>(&text) {
                if entry.boot_id == boot_id && entry.qemu_binary == qemu_binary {
                    return (entry.kvm_works, format!("{} (probed earlier this host boot)", entry.reason));
                }
            }
        }
    }
    let (kvm_works, reason) = probe_kvm(qemu_binary, probe_dir);
    if !boot_id.is_empty() {
        let entry = ProbeCacheEntry { boot_id, qemu_binary: qemu_binary.to_path_buf(), kvm_works, reason: reason.clone() };
        // A cache that cannot be written only costs the next `lab up` another probe.
        let _ = fs::create_dir_all(probe_dir)
            .and_then(|()| fs::write(&cache_file, serde_json::to_string_pretty(&entry).unwrap_or_default()));
    }
    (kvm_works, reason)
}

/// Proves KVM runs a guest: returns the verdict and a reason for the user.
pub fn probe_kvm(qemu_binary: &Path, probe_dir: &Path) -> (bool, String) {
    let kvm_device = Path::new("/dev/kvm");
    if !kvm_device.exists() {
        return (false, "/dev/kvm does not exist".to_owned());
    }
    if let Err(error) = std::fs::OpenOptions::new().read(true).write(true).open(kvm_device) {
        return (false, format!("/dev/kvm cannot be opened for reading and writing: {error}"));
    }
    match run_probe_guest(qemu_binary, "kvm", probe_dir) {
        Ok(elapsed) => (true, format!("KVM ran a probe guest in {:.1} s", elapsed.as_secs_f64())),
        Err(why) => (false, format!("/dev/kvm exists but KVM could not run a probe guest: {why}")),
    }
}

/// Boots the probe boot sector with `accel` and waits for its marker on the serial port.
fn run_probe_guest(qemu_binary: &Path, accel: &str, probe_dir: &Path) -> Result<Duration, String> {
    let run_dir = MachineRunDir::new(probe_dir.join("kvm-probe"));
    prepare_run_dir(&run_dir).map_err(|error| error.to_string())?;
    let boot_sector = run_dir.dir.join("boot-sector.img");
    // SeaBIOS will not read a disk shorter than a few sectors, so pad the image to 64 KiB.
    let mut disk_image = probe_boot_sector().to_vec();
    disk_image.resize(64 * 1024, 0);
    fs::write(&boot_sector, disk_image).map_err(|error| error.to_string())?;
    let _ = fs::set_permissions(&boot_sector, std::fs::Permissions::from_mode(0o600));
    let serial_log = run_dir.serial_log();
    let argv: Vec<String> = vec![
        qemu_binary.display().to_string(),
        "-accel".into(),
        accel.into(),
        // `pc`, not `q35`: SeaBIOS boots the i440fx's built-in IDE disk directly, while q35 with
        // `-nodefaults` gives it no disk it can read. The probe only needs a CPU to run.
        "-machine".into(),
        "pc".into(),
        "-m".into(),
        "64".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", serial_log.display()),
        "-drive".into(),
        format!("format=raw,if=ide,file={}", boot_sector.display()),
    ];
    let mut argv = argv;
    if accel == "kvm" {
        argv.extend(["-cpu".to_owned(), KVM_CPU_MODEL.to_owned()]);
    }
    let spec = MachineSpec { name: "kvm-probe".to_owned(), argv, run_dir: run_dir.clone() };
    let started = Instant::now();
    // Dropping the machine on any path below kills the probe guest: a hung KVM guest never stays.
    let mut machine = RunningMachine::spawn(&spec).map_err(|error| error.to_string())?;
    while started.elapsed() < PROBE_TIMEOUT {
        if std::fs::read(&serial_log).map(|bytes| contains(&bytes, PROBE_MARKER)).unwrap_or(false) {
            return Ok(started.elapsed());
        }
        if let Some(status) = machine.try_exit_status() {
            let qemu_said = crate::sys::runner::tail_of(&run_dir.qemu_log());
            return Err(format!("QEMU exited with {status}:\n{qemu_said}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("no sign of life from the guest within {} s", PROBE_TIMEOUT.as_secs()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// A real-mode boot sector that writes [`PROBE_MARKER`] and a newline to COM1 (0x3f8) and halts.
///
/// QEMU's 16550 passes a byte written to its transmit register straight to the chardev, so no
/// UART setup is needed.
pub fn probe_boot_sector() -> [u8; 512] {
    let mut code = Vec::new();
    // mov dx, 0x3f8
    code.extend_from_slice(&[0xBA, 0xF8, 0x03]);
    for byte in PROBE_MARKER.iter().chain(b"\n") {
        // mov al, byte ; out dx, al
        code.extend_from_slice(&[0xB0, *byte, 0xEE]);
    }
    // cli ; hlt ; jmp back to hlt
    code.extend_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]);
    let mut sector = [0u8; 512];
    sector[..code.len()].copy_from_slice(&code);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    sector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_is_bootable_and_writes_the_marker() {
        let sector = probe_boot_sector();
        assert_eq!(&sector[510..], &[0x55, 0xAA]);
        assert_eq!(&sector[..3], &[0xBA, 0xF8, 0x03]);
        let written: Vec<u8> = sector[3..].chunks(3).take_while(|op| op[0] == 0xB0 && op[2] == 0xEE).map(|op| op[1]).collect();
        assert_eq!(written, b"CXLLAB-KVM-OK\n");
    }

    #[test]
    fn probe_guest_prints_its_marker_under_tcg() {
        // Guards the probe itself: a boot sector that never printed would make `auto` pick TCG on
        // every host, KVM or not.
        use crate::prerequisites::{require, test_qemu, Prerequisite};
        if !require(&[Prerequisite::Qemu]) {
            return;
        }
        let probe_dir = tempfile::tempdir().unwrap();
        run_probe_guest(Path::new(&test_qemu()), "tcg", probe_dir.path()).unwrap();
    }

    #[test]
    fn cxl_memory_as_ram_forces_tcg_whatever_was_asked() {
        let decision = resolve_accel(Some(Accel::Kvm), true, Path::new("/nonexistent/qemu"), Path::new("/nonexistent"));
        assert_eq!(decision.accel, Accel::Tcg);
        assert!(decision.reason.contains("emulated I/O"), "{}", decision.reason);
    }
}
