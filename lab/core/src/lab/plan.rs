//! Planning `lab up`: which machines, each one's argv, and the launch plan the supervisor starts
//! from. Pure: everything it needs is given (the profile, the boot stack, the accelerator
//! decision, the lab's file locations, the SSH ports), so it is tested without QEMU or a stack;
//! [`crate::lab::up`] does the I/O around it (probe, ports, disks, supervisor, waiting).

use std::path::Path;

use anyhow::Context as _;

use crate::capability::ServiceConfig;
use crate::lab::state::{LaunchPlan, PlannedMachine};
use crate::layout::LabLayout;
use crate::model::schema::{AccelRequest, BootMode};
use crate::model::Topology;
use crate::profile::Profile;
use crate::qemu::Accel;
use crate::render::{backend_files, render_machine, BootMedia, RenderInputs};
use crate::stack::build::rootfs_config::LEAN_INIT;
use crate::stack::BootStack;
use crate::vm::accel::AccelDecision;
use crate::qemu::BackendFile;

/// What a lab's plan is made from.
#[derive(Clone, Copy, Debug)]
pub struct PlanRequest<'a> {
    pub files: &'a LabLayout,
    /// The profile as the user named it.
    pub profile_name: &'a str,
    pub profile: &'a Profile,
    pub boot_stack: &'a BootStack,
    pub accel: &'a AccelDecision,
    /// How the guests boot (the profile's `boot:` or the command's `--boot`).
    pub boot: BootMode,
    /// One free 127.0.0.1 port per host, in the profile's order, forwarded to the guest's SSH;
    /// none for a lean boot, which runs no sshd.
    pub ssh_ports: &'a [u16],
    pub detach: bool,
    /// Extra words for the guest kernel command line.
    pub extra_cmdline: &'a [String],
    /// The stack's QEMU has the lab's capability device ([`crate::vm::device_help`]): the
    /// profile's capability backends are then checked, each by its service.
    pub capability_device: bool,
}

/// A planned lab: what the supervisor launches, and the memory files to size before it does.
#[derive(Clone, Debug)]
pub struct LabPlan {
    pub launch: LaunchPlan,
    pub backend_files: Vec<BackendFile>,
}

/// The accelerator the profile asks for, as [`crate::vm::accel::resolve_accel`] takes it (`None`
/// is `auto`; the first host decides for the lab), and whether any host onlines CXL memory as RAM.
pub fn accel_request(topology: &Topology) -> anyhow::Result<(Option<Accel>, bool)> {
    let first_host = topology.hosts.first().context("the profile has no host")?;
    let requested = match first_host.machine.accel {
        AccelRequest::Kvm => Some(Accel::Kvm),
        AccelRequest::Tcg => Some(Accel::Tcg),
        AccelRequest::Auto => None,
    };
    Ok((requested, topology.hosts.iter().any(|host| host.machine.online_cxl_as_ram)))
}

/// Plans every host of the profile: its overlay, run directory, SSH port and argv.
pub fn plan_lab(request: &PlanRequest<'_>) -> anyhow::Result<LabPlan> {
    let PlanRequest { files, profile, boot_stack: stack, .. } = *request;
    let hosts = &profile.topology.hosts;
    let ports_needed = if request.boot == BootMode::Full { hosts.len() } else { 0 };
    anyhow::ensure!(request.ssh_ports.len() == ports_needed, "{} SSH port(s) for {ports_needed} host(s) with sshd", request.ssh_ports.len());
    let memory_dir = files.memory_dir();
    let mut machines = Vec::new();
    let mut all_backend_files = Vec::new();
    for (host_index, host) in hosts.iter().enumerate() {
        let ssh_port = request.ssh_ports.get(host_index).copied();
        let overlay = files.overlay(&host.name);
        all_backend_files.extend(backend_files(&profile.topology, host, &memory_dir)?);
        let run_dir = files.run_dir(&host.name);
        let boot = boot_media(stack, request.boot, &overlay, &files.data_dir(), ssh_port, request.extra_cmdline);
        let mut inputs = RenderInputs::new(&stack.qemu_binary, stack.qemu_version, stack.qemu_data_dir.as_deref(), run_dir.clone(), &memory_dir, request.accel.accel, Some(boot));
        inputs.capability_dir = request.capability_device.then(|| files.capability_dir());
        let argv = render_machine(profile, host_index, &inputs)?.argv;
        machines.push(PlannedMachine { host: host.name.clone(), argv, run_dir: run_dir.dir, overlay, ssh_port });
    }
    let launch = LaunchPlan {
        lab: files.name.clone(),
        profile: request.profile_name.to_owned(),
        profile_path: profile.path.clone(),
        boot_stack: stack.clone(),
        accel: request.accel.accel,
        accel_reason: request.accel.reason.clone(),
        detached: request.detach,
        boot: request.boot,
        machines,
        capabilities: if request.capability_device { capability_plans(files, &profile.topology) } else { Vec::new() },
    };
    Ok(LabPlan { launch, backend_files: all_backend_files })
}

/// The capability service of each `capabilities: true` backend of `topology`, in `files`.
fn capability_plans(files: &LabLayout, topology: &Topology) -> Vec<ServiceConfig> {
    (topology.capability_backends())
        .map(|backend| ServiceConfig {
            backend: backend.id.clone(),
            capacity_bytes: backend.size,
            files: files.capability_files(&backend.id),
            secret: files.capability_secret(&backend.id),
            requesters: topology.capability_requesters(&backend.id),
        })
        .collect()
}

/// What `lab up` warns, and a suite that needs the checks gives as its reason to skip, when the
/// profile has capability backends but the stack's QEMU has no capability device; `None` when
/// it has no capability backend.
pub fn unchecked_capabilities_note(topology: &Topology, stack: &BootStack) -> Option<String> {
    let backends: Vec<String> = topology.capability_backends().map(|backend| format!("`{}`", backend.id)).collect();
    let (noun, verb) = if backends.len() == 1 { ("memory backend", "has") } else { ("memory backends", "have") };
    (!backends.is_empty()).then(|| {
        format!(
            "{noun} {} {verb} `capabilities: true` but QEMU {} ({}) has no capability device: the devices run unchecked (stock QEMU; the source stack's QEMU carries the lab's patch)",
            backends.join(", "),
            stack.qemu_version,
            stack.qemu_binary.display()
        )
    })
}

/// What a lab's machine boots from `stack`: its kernel, initramfs and modules, the machine's own
/// overlay of the root filesystem, and the root's pid 1 (the lean init, or systemd).
pub fn boot_media(stack: &BootStack, boot: BootMode, overlay: &Path, data_dir: &Path, ssh_port: Option<u16>, extra_cmdline: &[String]) -> BootMedia {
    BootMedia {
        kernel: stack.kernel.clone(),
        initrd: stack.initrd.clone(),
        rootfs_overlay: overlay.to_path_buf(),
        modules_dir: stack.modules_dir.clone(),
        data_dir: data_dir.to_path_buf(),
        ssh_port,
        init: (boot == BootMode::Lean).then(|| LEAN_INIT.to_owned()),
        extra_cmdline: extra_cmdline.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::qemu::QemuVersion;
    use crate::stack::StackKind;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn profile(name: &str) -> Profile {
        let path = workspace().join("profiles").join(format!("{name}.yaml"));
        Profile { topology: crate::profile::load_topology(&path).unwrap(), path, templates_dir: workspace().join("templates") }
    }

    fn stack() -> BootStack {
        BootStack {
            stack: StackKind::Distro,
            qemu_binary: PathBuf::from("/q/qemu-system-x86_64"),
            qemu_version: QemuVersion::new(10, 0, 2),
            qemu_data_dir: None,
            kernel: PathBuf::from("/c/vmlinuz"),
            initrd: Some(PathBuf::from("/c/initrd.img")),
            modules_dir: PathBuf::from("/c/modules"),
            kernel_release: "6.12.0-test".to_owned(),
            rootfs_image: PathBuf::from("/c/rootfs.img"),
        }
    }

    #[test]
    fn plans_each_host_in_the_labs_own_files() {
        let files = LabLayout { name: "t".to_owned(), dir: PathBuf::from("/labs/t") };
        let (profile, stack) = (profile("shared"), stack());
        let accel = AccelDecision { accel: Accel::Tcg, reason: "the profile asks for TCG".to_owned() };
        let extra = vec!["quiet".to_owned()];
        let request = PlanRequest {
            files: &files,
            profile_name: "shared",
            profile: &profile,
            boot_stack: &stack,
            accel: &accel,
            boot: BootMode::Full,
            ssh_ports: &[10022, 10023],
            detach: true,
            extra_cmdline: &extra,
            capability_device: false,
        };
        let plan = plan_lab(&request).unwrap();
        let launch = &plan.launch;
        assert_eq!((launch.lab.as_str(), launch.profile.as_str(), launch.accel, launch.detached), ("t", "shared", Accel::Tcg, true));
        let hosts: Vec<&str> = launch.machines.iter().map(|machine| machine.host.as_str()).collect();
        assert_eq!(hosts, ["host0", "host1"]);
        for (machine, port) in launch.machines.iter().zip([10022, 10023]) {
            assert_eq!(machine.argv[0], "/q/qemu-system-x86_64");
            assert_eq!(machine.run_dir, files.run_dir(&machine.host).dir);
            assert_eq!(machine.overlay, PathBuf::from(format!("/labs/t/disks/{}.qcow2", machine.host)));
            assert_eq!(machine.ssh_port, Some(port));
            let argv = machine.argv.join("\n");
            assert!(argv.contains(&format!("file=/labs/t/disks/{}.qcow2,", machine.host)), "{argv}");
            assert!(argv.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-:22")), "{argv}");
            assert!(argv.contains("-accel\ntcg\n"), "{argv}");
            assert!(!argv.contains("init="), "{argv}");
        }
        assert_eq!(launch.boot, BootMode::Full);
        assert!(!plan.backend_files.is_empty());
        assert!(plan.backend_files.iter().all(|file| file.path.starts_with("/labs/t/memory")), "{:?}", plan.backend_files);
    }

    /// A lean lab of profile `name` in `files`, on a QEMU with or without the capability device,
    /// asking for `ssh_ports`.
    fn plan_lean(files: &LabLayout, name: &str, capability_device: bool, ssh_ports: &[u16]) -> anyhow::Result<LabPlan> {
        let (profile, stack) = (profile(name), stack());
        let accel = AccelDecision { accel: Accel::Tcg, reason: "the profile asks for TCG".to_owned() };
        plan_lab(&PlanRequest {
            files,
            profile_name: name,
            profile: &profile,
            boot_stack: &stack,
            accel: &accel,
            boot: BootMode::Lean,
            ssh_ports,
            detach: true,
            extra_cmdline: &[],
            capability_device,
        })
    }

    /// A lean boot runs the lean init and no sshd: no port is asked for or forwarded.
    #[test]
    fn a_lean_lab_runs_the_lean_init_and_forwards_no_ssh() {
        let files = LabLayout { name: "t".to_owned(), dir: PathBuf::from("/labs/t") };
        let plan = plan_lean(&files, "seed", false, &[]).unwrap();
        assert_eq!(plan.launch.boot, BootMode::Lean);
        let machine = &plan.launch.machines[0];
        assert_eq!(machine.ssh_port, None);
        let append = machine.argv.iter().position(|argument| argument == "-append").unwrap();
        insta::assert_snapshot!(machine.argv[append + 1], @"root=/dev/vda rw console=ttyS0,115200 panic=-1 init=/usr/lib/cxl-lab/lean-init cxl_acpi.dyndbg=+fplm cxl_pci.dyndbg=+fplm cxl_core.dyndbg=+fplm cxl_mem.dyndbg=+fplm cxl_pmem.dyndbg=+fplm cxl_port.dyndbg=+fplm");
        assert!(!machine.argv.iter().any(|argument| argument.contains("hostfwd")), "{:?}", machine.argv);
        assert!(plan_lean(&files, "seed", false, &[10022]).is_err());
    }

    #[test]
    fn a_qemu_with_the_capability_device_gets_one_service_per_capability_backend() {
        let files = LabLayout { name: "t".to_owned(), dir: PathBuf::from("/labs/t") };
        let plan = plan_lean(&files, "shared", true, &[]).unwrap().launch;
        let requester = |host: &str, device: &str, serial, requester| crate::model::CapabilityRequester {
            host: host.to_owned(),
            device: device.to_owned(),
            serial,
            requester,
        };
        assert_eq!(
            plan.capabilities,
            [ServiceConfig {
                backend: "cxl-shared-mem".to_owned(),
                capacity_bytes: 256 << 20,
                files: files.capability_files("cxl-shared-mem"),
                secret: PathBuf::from("/labs/t/secrets/capability-cxl-shared-mem.key"),
                requesters: vec![requester("host0", "cxl-shared0", 200, 1), requester("host1", "cxl-shared1", 201, 2)],
            }]
        );
        let service = "cap-service=/labs/t/run/capability/cxl-shared-mem/device.sock,cap-grants=/labs/t/run/capability/cxl-shared-mem/grants.table";
        for (machine, id) in plan.machines.iter().zip(1..) {
            assert!(machine.argv.iter().any(|argument| argument.ends_with(&format!(",{service},cap-requester={id}"))), "{:?}", machine.argv);
        }
    }

    #[test]
    fn stock_qemu_runs_the_devices_unchecked_and_says_so() {
        let files = LabLayout { name: "t".to_owned(), dir: PathBuf::from("/labs/t") };
        let plan = plan_lean(&files, "shared", false, &[]).unwrap().launch;
        assert!(plan.capabilities.is_empty());
        assert!(plan.machines.iter().all(|machine| !machine.argv.iter().any(|argument| argument.contains("cap-"))));
        assert_eq!(
            unchecked_capabilities_note(&profile("shared").topology, &stack()).as_deref(),
            Some("memory backend `cxl-shared-mem` has `capabilities: true` but QEMU 10.0.2 (/q/qemu-system-x86_64) has no capability device: the devices run unchecked (stock QEMU; the source stack's QEMU carries the lab's patch)")
        );
        assert_eq!(unchecked_capabilities_note(&profile("seed").topology, &stack()), None);
        // A plan written before capabilities existed reads as one without.
        let mut written = serde_json::to_value(&plan).unwrap();
        written.as_object_mut().unwrap().remove("capabilities");
        assert!(serde_json::from_value::<LaunchPlan>(written).unwrap().capabilities.is_empty());
    }

    /// A profile without a capability backend plans the same lab whatever the QEMU has.
    #[test]
    fn no_capability_backend_no_difference() {
        let files = LabLayout { name: "t".to_owned(), dir: PathBuf::from("/labs/t") };
        let (with, without) = (plan_lean(&files, "seed", true, &[]).unwrap().launch, plan_lean(&files, "seed", false, &[]).unwrap().launch);
        assert_eq!(with.machines[0].argv, without.machines[0].argv);
        assert!(with.capabilities.is_empty());
    }

    /// The longest socket path of a realistic lab: the default state directory of a CI runner's
    /// user, a matrix cell's lab on the shared profile, and the longest capability backend id the
    /// profile rules allow. The supervisor refuses a longer one (`SocketPathTooLong`).
    #[test]
    fn capability_sockets_fit_a_unix_socket_path() {
        let files = LabLayout { name: "matrix-shared-source".to_owned(), dir: PathBuf::from("/home/runner/.local/state/cxl-lab/labs/matrix-shared-source") };
        let longest_id = "m".repeat(crate::model::validate::MAX_CAPABILITY_BACKEND_ID_LEN);
        let capability = files.capability_files(&longest_id);
        for socket in [capability.device_socket(), capability.owner_socket(), files.run_dir("host0").qmp_socket()] {
            let length = socket.as_os_str().len();
            assert!(length <= crate::vm::error::UNIX_SOCKET_PATH_MAX, "{} is {length} bytes", socket.display());
        }
        assert_eq!(capability.device_socket().as_os_str().len(), 105);
    }

    #[test]
    fn the_first_host_asks_and_cxl_memory_as_ram_on_any_host_is_seen() {
        let mut topology = profile("shared").topology;
        assert_eq!(accel_request(&topology).unwrap(), (None, false));
        topology.hosts[0].machine.accel = AccelRequest::Kvm;
        topology.hosts[1].machine.online_cxl_as_ram = true;
        assert_eq!(accel_request(&topology).unwrap(), (Some(Accel::Kvm), true));
        topology.hosts.clear();
        assert_eq!(accel_request(&topology).unwrap_err().to_string(), "the profile has no host");
    }
}
