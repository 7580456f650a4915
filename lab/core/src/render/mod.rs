//! From a validated profile to the exact QEMU argv of each host, through the minijinja templates in
//! `templates/` (strict undefined: a missing variable is an error, never an empty argument).
//!
//! The template prints one argument per line; the renderer splits lines into the argv vector, so no
//! shell ever parses it. The memory backends are files under the lab's memory directory with
//! share=on; QMP and the guest agent are unix sockets in the machine's private run directory.
//! A type-3 device on a `capabilities: true` backend names its capability service's socket and
//! grant table and its requester id, when the QEMU has the lab's capability device.

pub mod picture;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cxl_lab_model::validate::{id_wellformed, MAX_BACKEND_ID_LEN};
use cxl_lab_model::{ByteSize, Host, Topology};
use minijinja::{context, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::layout::{CapabilityFiles, MachineRunDir};
use crate::profile::Profile;
use crate::qemu::{features, Accel, BackendFile, QemuVersion, AGENT_PORT_NAME, KVM_CPU_MODEL};

/// The template of the QEMU argv, relative to `templates/`.
pub const ARGV_TEMPLATE: &str = "qemu-argv.j2";
/// The template of the guest kernel command line.
pub const CMDLINE_TEMPLATE: &str = "kernel-cmdline.j2";

/// Everything around the topology that the argv needs: which QEMU, where things live, what boots.
#[derive(Clone, Debug)]
pub struct RenderInputs {
    pub qemu_binary: PathBuf,
    pub qemu_version: QemuVersion,
    /// QEMU's firmware directory (`-L`): a QEMU built from source carries its ROMs there; `None`
    /// for an installed QEMU, which finds its own.
    pub qemu_data_dir: Option<PathBuf>,
    pub run_dir: MachineRunDir,
    /// Where memory backend files live; shared by the hosts of one lab.
    pub memory_dir: PathBuf,
    pub accel: Accel,
    /// Start with the CPUs stopped (`-S`).
    pub paused: bool,
    /// What the guest boots; `None` renders a machine with no guest (for validation runs).
    pub boot: Option<BootMedia>,
    /// The lab's capability directory ([`crate::layout::LabLayout::capability_dir`]) when the
    /// QEMU has the lab's capability device: each type-3 device on a `capabilities: true` backend
    /// then gets `cap-service`, `cap-grants` and `cap-requester`. `None` (what
    /// [`RenderInputs::new`] gives): stock QEMU, whose devices run unchecked.
    pub capability_dir: Option<PathBuf>,
}

impl RenderInputs {
    /// The inputs of one machine of a lab, started running: its QEMU, its run directory, the
    /// lab's memory directory, the accelerator, and what it boots (`None`: no guest, as
    /// `profile render` shows it). The one way the tool builds them, so every caller renders the
    /// same machine a lab runs.
    pub fn new(
        qemu_binary: &Path,
        qemu_version: QemuVersion,
        qemu_data_dir: Option<&Path>,
        run_dir: MachineRunDir,
        memory_dir: &Path,
        accel: Accel,
        boot: Option<BootMedia>,
    ) -> RenderInputs {
        let qemu_data_dir = qemu_data_dir.map(Path::to_path_buf);
        RenderInputs {
            qemu_binary: qemu_binary.to_path_buf(),
            qemu_version,
            qemu_data_dir,
            run_dir,
            memory_dir: memory_dir.to_path_buf(),
            accel,
            paused: false,
            boot,
            capability_dir: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BootMedia {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The machine's qcow2 overlay of the base root filesystem.
    pub rootfs_overlay: PathBuf,
    /// Served over 9p with the tag `modshare`, mounted at /lib/modules.
    pub modules_dir: PathBuf,
    /// Served over 9p with the tag `datashare`.
    pub data_dir: PathBuf,
    /// Host port forwarded to the guest's SSH, bound to 127.0.0.1.
    pub ssh_port: Option<u16>,
    /// The root filesystem's program the initramfs runs as pid 1 (`init=`); `None`: its default
    /// (systemd, the full boot).
    pub init: Option<String>,
    pub extra_cmdline: Vec<String>,
}

/// One host's rendered command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedMachine {
    /// `argv[0]` is the QEMU binary.
    pub argv: Vec<String>,
}

impl RenderedMachine {
    /// The argv quoted for a POSIX shell, one argument group per line, ready to paste.
    pub fn shell_command(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        let mut arguments = self.argv.iter().map(|arg| crate::sys::runner::quote(arg)).peekable();
        if let Some(program) = arguments.next() {
            lines.push(program);
        }
        while let Some(argument) = arguments.next() {
            // Keep an option and its value on one line.
            match arguments.peek() {
                Some(value) if argument.starts_with('-') && !value.starts_with('-') => {
                    let value = arguments.next().unwrap_or_default();
                    lines.push(format!("  {argument} {value}"));
                }
                _ => lines.push(format!("  {argument}")),
            }
        }
        lines.join(" \\\n")
    }
}

#[derive(Serialize)]
struct BackendView {
    id: String,
    size: u64,
    path: PathBuf,
}

/// What a capability-checked type-3 device adds to its `-device` (the lab's QEMU patch).
#[derive(Serialize)]
struct CapabilityView {
    /// `cap-service`: the service's socket for devices.
    service: PathBuf,
    /// `cap-grants`: the grant table the device maps.
    grants: PathBuf,
    /// `cap-requester`: this device's requester id.
    requester: u16,
}

/// What `profile validate` and `profile render` say about a profile with `qemu_extra`: those
/// arguments reach QEMU as written, checked by no rule, on the word of the profile's author.
pub fn unchecked_arguments_note(topology: &Topology) -> Option<String> {
    let extra = &topology.qemu_extra;
    (!extra.is_empty()).then(|| {
        let shown: Vec<String> = extra.iter().map(|argument| format!("{argument:?}")).collect();
        format!("profile `{}` adds {} raw QEMU argument(s) that no rule checks (qemu_extra): {}", topology.name, extra.len(), shown.join(" "))
    })
}

/// Warns through `shell` when the profile has `qemu_extra` ([`unchecked_arguments_note`]): every
/// command that renders or boots a profile says so.
pub fn warn_unchecked_arguments(shell: &crate::shell::Shell, topology: &Topology) {
    if let Some(note) = unchecked_arguments_note(topology) {
        shell.warn(note);
    }
}

/// Renders the argv of host `host_index` of `profile`.
pub fn render_machine(profile: &Profile, host_index: usize, inputs: &RenderInputs) -> anyhow::Result<RenderedMachine> {
    render_with_templates(&profile.templates_dir, &profile.topology, host_index, inputs)
}

/// Renders with an explicit templates directory (tests use the checkout's).
pub fn render_with_templates(
    templates_dir: &Path,
    topology: &Topology,
    host_index: usize,
    inputs: &RenderInputs,
) -> anyhow::Result<RenderedMachine> {
    let host = topology
        .hosts
        .get(host_index)
        .with_context(|| format!("profile `{}` has no host number {host_index}", topology.name))?;
    let missing = features::missing_features(topology, host, inputs.qemu_version);
    if !missing.is_empty() {
        bail!("profile `{}` cannot run on this QEMU:\n  {}", topology.name, missing.join("\n  "));
    }
    let environment = environment(templates_dir);
    let backends: Vec<BackendView> = (topology.backends_of(host).into_iter())
        .zip(backend_files(topology, host, &inputs.memory_dir)?)
        .map(|(backend, file)| BackendView { id: backend.id.clone(), size: file.size, path: file.path })
        .collect();
    let capability_devices = match &inputs.capability_dir {
        Some(capability_dir) => capability_views(topology, host, capability_dir)?,
        None => BTreeMap::new(),
    };
    let cmdline = match &inputs.boot {
        Some(boot) => Some(render_cmdline(&environment, topology, host, boot)?),
        None => None,
    };
    let run = &inputs.run_dir;
    let text = environment
        .get_template(ARGV_TEMPLATE)
        .and_then(|template| {
            template.render(context! {
                profile => &topology.name,
                host => host,
                backends => backends,
                qemu => context! {
                    binary => &inputs.qemu_binary,
                    data_dir => &inputs.qemu_data_dir,
                    persistent_memdev => features::has_persistent_memdev(inputs.qemu_version),
                },
                run => context! {
                    qmp_socket => run.qmp_socket(),
                    agent_socket => run.agent_socket(),
                    serial_log => run.serial_log(),
                },
                accel => inputs.accel,
                kvm_cpu => KVM_CPU_MODEL,
                agent_port => AGENT_PORT_NAME,
                paused => inputs.paused,
                boot => &inputs.boot,
                capability_devices => capability_devices,
                cmdline => cmdline,
                qemu_extra => &topology.qemu_extra,
            })
        })
        .map_err(|error| template_error(templates_dir, error))?;
    Ok(RenderedMachine { argv: split_argv(&text) })
}

/// The capability properties of each of `host`'s devices on a capability backend, by device id.
fn capability_views(topology: &Topology, host: &Host, capability_dir: &Path) -> anyhow::Result<BTreeMap<String, CapabilityView>> {
    let mut views = BTreeMap::new();
    for backend in topology.capability_backends() {
        if !names_a_file(&backend.id) {
            bail!("memory backend id `{}` cannot name a directory in {}", backend.id.escape_debug(), capability_dir.display());
        }
        let files = CapabilityFiles::new(capability_dir, &backend.id);
        for requester in topology.capability_requesters(&backend.id).into_iter().filter(|requester| requester.host == host.name) {
            let view = CapabilityView { service: files.device_socket(), grants: files.grant_table(), requester: requester.requester };
            views.insert(requester.device, view);
        }
    }
    Ok(views)
}

/// The file backing memory backend `id` in a lab's memory directory; an id that is not a QEMU
/// identifier of at most [`MAX_BACKEND_ID_LEN`] bytes (which could leave the directory) is an error.
///
/// The validator refuses such ids already; this checks again because a `Topology` can be built
/// without it, and these paths are created and sized ([`crate::vm::backing`]).
pub fn backend_file(memory_dir: &Path, backend_id: &str) -> anyhow::Result<PathBuf> {
    if !names_a_file(backend_id) {
        bail!("memory backend id `{}` cannot name a file in {}", backend_id.escape_debug(), memory_dir.display());
    }
    Ok(memory_dir.join(format!("{backend_id}.raw")))
}

/// Whether a backend id can name a file or directory inside a lab directory, and no further.
fn names_a_file(backend_id: &str) -> bool {
    id_wellformed(backend_id) && backend_id.len() <= MAX_BACKEND_ID_LEN
}

/// The file and size of every memory backend `host` uses, in `memory_dir`: what the argv names
/// and what must exist, sized, before QEMU starts.
pub fn backend_files(topology: &Topology, host: &Host, memory_dir: &Path) -> anyhow::Result<Vec<BackendFile>> {
    (topology.backends_of(host).into_iter())
        .map(|backend| Ok(BackendFile { path: backend_file(memory_dir, &backend.id)?, size: backend.size }))
        .collect()
}

fn render_cmdline(environment: &Environment<'_>, topology: &Topology, host: &Host, boot: &BootMedia) -> anyhow::Result<String> {
    let text = environment
        .get_template(CMDLINE_TEMPLATE)
        .and_then(|template| {
            template.render(context! {
                host => host,
                init => &boot.init,
                profile_cmdline => &topology.kernel_cmdline,
                extra_cmdline => &boot.extra_cmdline,
            })
        })
        .map_err(|error| template_error(Path::new("templates"), error))?;
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn environment(templates_dir: &Path) -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_trim_blocks(true);
    environment.set_lstrip_blocks(true);
    environment.set_loader(minijinja::path_loader(templates_dir));
    environment.add_filter("size", |bytes: u64| ByteSize(bytes).to_string());
    environment
}

fn template_error(templates_dir: &Path, error: minijinja::Error) -> anyhow::Error {
    let mut message = format!("rendering {}: {error}", templates_dir.display());
    if let Some(detail) = error.display_debug_info().to_string().lines().next() {
        if !detail.is_empty() {
            message.push_str(&format!(" ({detail})"));
        }
    }
    anyhow::anyhow!(message)
}

/// One argument per non-empty line; leading and trailing blanks of a line are layout, not data.
fn split_argv(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_raw_qemu_arguments() {
        let source = "name: raw\nmachine: {memory: 1G, maxmem: 2G}\nhost_bridges: []\n";
        let plain = cxl_lab_model::parse_profile("raw.yaml", source, "raw").unwrap();
        assert_eq!(unchecked_arguments_note(&plain), None);
        let with_extra = format!("{source}qemu_extra: [-device, \"pci-testdev,id=t\\n\"]\n");
        let topology = cxl_lab_model::parse_profile("raw.yaml", &with_extra, "raw").unwrap();
        assert_eq!(
            unchecked_arguments_note(&topology).as_deref(),
            Some(r#"profile `raw` adds 2 raw QEMU argument(s) that no rule checks (qemu_extra): "-device" "pci-testdev,id=t\n""#)
        );
    }

    /// One device on backend `m0` (256 MiB).
    fn one_device_topology() -> Topology {
        let source = "machine: {memory: 1G, maxmem: 2G}\nmemory_backends: [{id: m0, size: 256M}]\nhost_bridges:\n  - id: hb\n    bus_nr: 1\n    root_ports:\n      - {id: rp, port: 0, chassis: 0, slot: 0, type3: {id: d, serial: 1, volatile: m0}}\n";
        cxl_lab_model::parse_profile("t.yaml", source, "t").unwrap()
    }

    #[test]
    fn sizes_new_and_stale_files_exactly() {
        let topology = one_device_topology();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m0.raw"), b"stale and short").unwrap();
        let files = backend_files(&topology, &topology.hosts[0], dir.path()).unwrap();
        crate::vm::backing::prepare_backend_files(&files).unwrap();
        let paths: Vec<PathBuf> = files.iter().map(|file| file.path.clone()).collect();
        assert_eq!(paths, vec![dir.path().join("m0.raw")]);
        assert_eq!(std::fs::metadata(&paths[0]).unwrap().len(), 256 << 20);
    }

    /// A topology built without the validator still cannot size a file outside the directory.
    #[test]
    fn refuses_backend_ids_that_leave_the_memory_directory() {
        let mut topology = one_device_topology();
        let root = tempfile::tempdir().unwrap();
        let memory_dir = root.path().join("memory");
        let hostile = "../escaped";
        topology.backends[0].id = hostile.to_owned();
        let Some(cxl_lab_model::Below::Type3(device)) = &mut topology.hosts[0].host_bridges[0].root_ports[0].below else {
            unreachable!("the profile has one device")
        };
        device.volatile.as_mut().unwrap().backend = hostile.to_owned();
        let error = backend_files(&topology, &topology.hosts[0], &memory_dir).unwrap_err();
        assert_eq!(error.to_string(), format!("memory backend id `../escaped` cannot name a file in {}", memory_dir.display()));
        assert!(!root.path().join("escaped.raw").exists());
        for bad in ["", ".hidden", "a/b", "a\0b", &"m".repeat(MAX_BACKEND_ID_LEN + 1)] {
            assert!(backend_file(&memory_dir, bad).is_err(), "{bad:?}");
        }
    }

    /// A QEMU built from source runs with its own firmware directory; an installed one without `-L`.
    #[test]
    fn a_firmware_directory_follows_the_binary() {
        let topology = one_device_topology();
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
        let run_dir = MachineRunDir::new("/run/t");
        let version = QemuVersion::new(10, 2, 2);
        let with = RenderInputs::new(Path::new("/q/bin/qemu-system-x86_64"), version, Some(Path::new("/q/share/qemu")), run_dir.clone(), Path::new("/m"), Accel::Tcg, None);
        let argv = render_with_templates(&templates, &topology, 0, &with).unwrap().argv;
        assert_eq!(argv[..4], ["/q/bin/qemu-system-x86_64", "-L", "/q/share/qemu", "-name"]);
        let without = RenderInputs { qemu_data_dir: None, ..with };
        let argv = render_with_templates(&templates, &topology, 0, &without).unwrap().argv;
        assert!(!argv.contains(&"-L".to_owned()), "{argv:?}");
    }
}
