//! Real QEMU accepts every shipped profile: each host's rendered argv starts paused (`-S`), QMP
//! answers `query-status`, and `quit` ends it. Uses the host's qemu-system-x86_64 (installed by
//! `.ci/run` from the Debian archive).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cxl_lab_core::backing::prepare_backend_files;
use cxl_lab_core::paths::MachineRunDir;
use cxl_lab_core::profile::load_topology;
use cxl_lab_core::render::{features, render_with_templates, Accel, RenderInputs};
use serde_json::{json, Value};

const QEMU: &str = "qemu-system-x86_64";

/// Kills QEMU if the test fails before `quit`.
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The smallest QMP exchange: greeting, capabilities, commands; events are skipped.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(socket: &Path, qemu: &mut Child) -> Qmp {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            if let Ok(stream) = UnixStream::connect(socket) {
                break stream;
            }
            if let Some(status) = qemu.try_wait().unwrap() {
                panic!("QEMU exited with {status} before QMP came up");
            }
            assert!(Instant::now() < deadline, "QMP socket {} never answered", socket.display());
            std::thread::sleep(Duration::from_millis(50));
        };
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        let greeting = qmp.read_message();
        assert!(greeting.get("QMP").is_some(), "not a QMP greeting: {greeting}");
        qmp.execute("qmp_capabilities");
        qmp
    }

    fn read_message(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("bad QMP line {line:?}: {error}"))
    }

    fn execute(&mut self, command: &str) -> Value {
        if let Err(error) = writeln!(self.writer, "{}", json!({ "execute": command })) {
            panic!("sending {command}: {error}");
        }
        loop {
            let message = self.read_message();
            if message.get("event").is_some() {
                continue;
            }
            return message;
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn qemu_starts_every_shipped_profile_paused() {
    let version = features::detect_qemu_version(Path::new(QEMU)).expect("qemu-system-x86_64 is installed");
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(workspace().join("profiles"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    profiles.sort();
    let mut started = Vec::new();
    for profile in profiles {
        let topology = load_topology(&profile).unwrap();
        let lab = tempfile::tempdir().unwrap();
        let memory_dir = lab.path().join("memory");
        for (index, host) in topology.hosts.iter().enumerate() {
            let run_dir = MachineRunDir::new(lab.path().join("run").join(&host.name));
            std::fs::create_dir_all(&run_dir.dir).unwrap();
            prepare_backend_files(&topology, host, &memory_dir).unwrap();
            let inputs = RenderInputs {
                qemu_binary: PathBuf::from(QEMU),
                qemu_version: version,
                run_dir: run_dir.clone(),
                memory_dir: memory_dir.clone(),
                accel: Accel::Tcg,
                paused: true,
                boot: None,
            };
            let argv = render_with_templates(&workspace().join("templates"), &topology, index, &inputs).unwrap().argv;
            let stderr_path = run_dir.dir.join("stderr.log");
            let child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .unwrap();
            let mut qemu = QemuGuard(child);
            let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let exchange = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut qmp = Qmp::connect(&run_dir.qmp_socket(), &mut qemu.0);
                let status = qmp.execute("query-status");
                (qmp, status)
            }));
            let Ok((mut qmp, status)) = exchange else {
                panic!("{}/{}: QMP failed; QEMU said: {}", topology.name, host.name, stderr());
            };
            let stderr = stderr();
            assert_eq!(
                status["return"]["status"], "prelaunch",
                "{}/{}: unexpected status {status}; QEMU said: {stderr}",
                topology.name, host.name
            );
            assert_eq!(status["return"]["running"], false);
            qmp.execute("quit");
            let exit = qemu.0.wait().unwrap();
            assert!(exit.success(), "{}/{}: QEMU exited with {exit}: {stderr}", topology.name, host.name);
            started.push(format!("{}/{}", topology.name, host.name));
        }
    }
    assert_eq!(
        started,
        ["dcd/host0", "interleave/host0", "mixed/host0", "seed/host0", "shared/host0", "shared/host1", "switch/host0", "volatile/host0"]
    );
}
