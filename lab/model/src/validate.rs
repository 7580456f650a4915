//! From the profile as written to the typed [`Topology`]: every rule QEMU (and the lab) imposes is
//! checked here, once, before anything starts. Each broken rule becomes a [`ProfileError`] at the
//! line and column of the value that broke it; all of them are reported, not just the first.
//!
//! Profiles are shared data, so the rules also keep a profile inside the lab: every name that
//! reaches the argv or a path is a QEMU identifier (it cannot add an option, split an argument or
//! leave a directory), and kernel command line words are single parameters. `qemu_extra` is the
//! one value left unchecked, by design.

use std::collections::HashMap;

use crate::error::{parse_yaml, ErrorSink, ProfileErrors};
use crate::schema::*;
use crate::size::{ByteSize, KIB, MIB};
use crate::topology::*;

/// Sizes of CXL memory (windows, static capacity) are multiples of this.
pub const CXL_SIZE_ALIGN: u64 = 256 * MIB;
/// Interleave granularities QEMU accepts for a fixed memory window.
pub const GRANULARITIES: [u64; 7] = [256, 512, KIB, 2 * KIB, 4 * KIB, 8 * KIB, 16 * KIB];
/// Interleave target counts QEMU supports; 3, 6 and 12 only since QEMU 10.0 (the renderer checks
/// the version).
pub const WINDOW_TARGET_COUNTS: [usize; 8] = [1, 2, 4, 8, 16, 3, 6, 12];
/// The most dynamic-capacity regions a device has.
pub const MAX_DC_REGIONS: u8 = 8;
/// Memory hotplug slots when the profile does not say.
pub const DEFAULT_SLOTS: u32 = 8;
/// CPUs when the profile does not say.
pub const DEFAULT_CPUS: u32 = 1;
/// A backend's file is `<id>.raw` and file names stay below 255 bytes.
pub const MAX_BACKEND_ID_LEN: usize = 250;
/// A host's name is its run directory, which holds unix sockets (`run/<host>/qmp.sock`) whose
/// whole path must stay below 108 bytes: a short name leaves room for the lab directory.
pub const MAX_HOST_NAME_LEN: usize = 32;
/// A capability backend's id names the directory of its service's unix sockets
/// (`run/capability/<id>/device.sock`): this keeps them as long below the lab directory as a
/// host's (`run/<host>/qmp.sock`).
pub const MAX_CAPABILITY_BACKEND_ID_LEN: usize = 18;
/// Requester ids are 16-bit and 0 is nobody: the most devices one capability backend serves.
pub const MAX_CAPABILITY_REQUESTERS: usize = u16::MAX as usize;
/// With a capability backend, `run/capability/` holds the services' files beside the hosts' run
/// directories (`run/<host>/`): no host may have that name.
pub const CAPABILITY_DIR_NAME: &str = "capability";

/// QEMU's rule for ids (util/id.c `id_wellformed`): a letter, then letters, digits, `-`, `.` and
/// `_`. Such a name cannot add options to an argument (`,` `=`), split one (whitespace, newline) or
/// leave a directory (`/`, `..`, a leading `.`).
pub fn id_wellformed(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic())
        && chars.all(|other| other.is_ascii_alphanumeric() || matches!(other, '-' | '.' | '_'))
}

/// What a name becomes, which decides its length limit; `what` names it in errors.
struct NameUse {
    what: &'static str,
    /// The most bytes it may have, and why.
    limit: Option<(usize, &'static str)>,
}

/// Host bridge, port, switch and device ids: QEMU ids and bus names.
const DEVICE_ID: NameUse = NameUse { what: "id", limit: None };
const BACKEND_ID: NameUse = NameUse {
    what: "memory backend id",
    limit: Some((MAX_BACKEND_ID_LEN, "its file `<id>.raw` must stay below 255 bytes")),
};
const HOST_NAME: NameUse = NameUse {
    what: "host name",
    limit: Some((MAX_HOST_NAME_LEN, "it names the directory of the host's unix sockets, whose paths must stay below 108 bytes")),
};
const CAPABILITY_BACKEND_ID: NameUse = NameUse {
    what: "memory backend id",
    limit: Some((
        MAX_CAPABILITY_BACKEND_ID_LEN,
        "with `capabilities: true` it names the directory of its capability service's unix sockets, whose paths must stay below 108 bytes",
    )),
};
/// QEMU's `-name <profile>-<host>`.
const PROFILE_NAME: NameUse = NameUse { what: "profile name", limit: None };

/// Why `name` cannot be used as `name_use`, if it cannot. Values are shown escaped: a hostile one
/// must not write control characters to the terminal.
fn name_problem(name: &str, name_use: &NameUse) -> Option<String> {
    let what = name_use.what;
    if name.is_empty() {
        return Some(format!("{what} is empty"));
    }
    if !id_wellformed(name) {
        return Some(format!(
            "{what} `{}` is not a QEMU identifier: a letter first, then only letters, digits, `-`, `.` or `_`",
            name.escape_debug()
        ));
    }
    match name_use.limit {
        Some((max, why)) if name.len() > max => Some(format!("{what} is {} bytes, more than {max}: {why}", name.len())),
        _ => None,
    }
}

/// Why capability backend `id` cannot serve `devices` devices, if it cannot. (A profile with more
/// than 65,535 hosts is beyond the YAML parser's node budget today; the limit holds regardless.)
fn capability_devices_problem(id: &str, devices: usize) -> Option<String> {
    match devices {
        0 => Some(format!("memory backend `{id}` has `capabilities: true` but no type-3 device uses it as `volatile` memory")),
        _ if devices > MAX_CAPABILITY_REQUESTERS => Some(format!(
            "memory backend `{id}` has `capabilities: true` and {devices} devices use it; requester ids are 16-bit, so at most {MAX_CAPABILITY_REQUESTERS}"
        )),
        _ => None,
    }
}

/// Parses and validates one profile. `file` is how errors name the file; `default_name` is the
/// profile's name when it gives none (its file stem).
pub fn parse_profile(file: &str, source: &str, default_name: &str) -> Result<Topology, ProfileErrors> {
    let parsed: ProfileFile = parse_yaml(file, source)?;
    let mut validator = Validator { sink: ErrorSink::new(file) };
    let topology = validator.profile(parsed, default_name);
    validator.sink.finish(topology)
}

struct Validator<'a> {
    sink: ErrorSink<'a>,
}

/// Where something was first seen, to point back at it in a duplicate error.
#[derive(Clone)]
struct Seen {
    owner: String,
    line: u64,
}

/// Names seen within one host (ids, bus numbers, chassis/slot pairs, serials, backends).
#[derive(Default)]
struct HostScope {
    ids: HashMap<String, (Seen, &'static str)>,
    bus_numbers: HashMap<u8, Seen>,
    chassis_slots: HashMap<(u8, u16), Seen>,
    serials: HashMap<u64, Seen>,
    backends_used: HashMap<String, Seen>,
}

impl Validator<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, field: &str, message: String) {
        self.sink.at(at, field, message);
    }

    fn error_at_start(&mut self, field: &str, message: String) {
        self.sink.at_start(field, message);
    }

    fn check_name(&mut self, name: &Spanned<String>, field: &str, name_use: &NameUse) {
        if let Some(message) = name_problem(&name.value, name_use) {
            self.error(name, field, message);
        }
    }

    fn profile(&mut self, file: ProfileFile, default_name: &str) -> Topology {
        let name = match &file.name {
            Some(name) => {
                self.check_name(name, "name", &PROFILE_NAME);
                name.value.clone()
            }
            None => {
                if let Some(message) = name_problem(default_name, &PROFILE_NAME) {
                    self.error_at_start("name", format!("{message} (it comes from the file name; set `name:`)"));
                }
                default_name.to_owned()
            }
        };
        let backends = self.backends(&file.memory_backends);
        let mut topology = Topology {
            name,
            description: file.description.trim().to_owned(),
            backends,
            hosts: Vec::new(),
            kernel_cmdline: self.kernel_cmdline(&file.kernel_cmdline),
            qemu_extra: file.qemu_extra,
            boot: file.boot,
        };
        // Which host already uses each backend, to allow `shared` ones once per host.
        let mut backend_hosts: HashMap<String, Seen> = HashMap::new();
        let single_host = file.machine.is_some() || file.host_bridges.is_some() || file.fixed_windows.is_some();
        match (file.hosts, single_host) {
            (Some(hosts), true) => {
                self.error(&hosts, "hosts", "use either `hosts:` or a top-level `machine:`, not both".to_owned());
            }
            (Some(hosts), false) => {
                if hosts.value.is_empty() {
                    self.error(&hosts, "hosts", "`hosts:` is empty: a profile needs at least one host".to_owned());
                }
                let mut names: HashMap<String, u64> = HashMap::new();
                for (index, host) in hosts.value.into_iter().enumerate() {
                    let prefix = format!("hosts[{index}].");
                    self.check_name(&host.name, &format!("{prefix}name"), &HOST_NAME);
                    if host.name.value == CAPABILITY_DIR_NAME && topology.backends.iter().any(|backend| backend.capabilities) {
                        let message = format!(
                            "host name `{CAPABILITY_DIR_NAME}` is taken by the capability services' directory beside the hosts' run directories (the profile has a `capabilities: true` backend)"
                        );
                        self.error(&host.name, &format!("{prefix}name"), message);
                    }
                    if let Some(line) = names.insert(host.name.value.clone(), host.name.referenced.line()) {
                        let message = format!("duplicate host name `{}` (first used at line {line})", host.name.value);
                        self.error(&host.name, &format!("{prefix}name"), message);
                    }
                    let name = host.name.value.clone();
                    let host = self.host(
                        &topology,
                        &mut backend_hosts,
                        name,
                        &prefix,
                        host.machine,
                        host.host_bridges,
                        host.fixed_windows,
                    );
                    topology.hosts.push(host);
                }
            }
            (None, true) => match file.machine {
                Some(machine) => {
                    let host = self.host(
                        &topology,
                        &mut backend_hosts,
                        "host0".to_owned(),
                        "",
                        machine,
                        file.host_bridges.unwrap_or_default(),
                        file.fixed_windows.unwrap_or_default(),
                    );
                    topology.hosts.push(host);
                }
                None => self.error_at_start("machine", "missing `machine:` (memory, cpus, accel) for the host".to_owned()),
            },
            (None, false) => self.error_at_start(
                "machine",
                "a profile needs `machine:` and `host_bridges:` (one host) or `hosts:`".to_owned(),
            ),
        }
        self.capability_backends(&file.memory_backends, &topology);
        topology
    }

    /// A capability backend serves at least one device, as its `volatile` memory (where a device
    /// physical address is the byte offset in the file), and at most as many as requester ids
    /// can tell apart. The other kinds of use are refused where they are written
    /// ([`Self::use_backend`]).
    fn capability_backends(&mut self, specs: &[MemoryBackendSpec], topology: &Topology) {
        for (index, spec) in specs.iter().enumerate() {
            let Some(capabilities) = spec.capabilities.as_ref().filter(|capabilities| capabilities.value) else { continue };
            let field = format!("memory_backends[{index}].capabilities");
            let devices = topology.capability_devices(&spec.id.value).count();
            if let Some(message) = capability_devices_problem(&spec.id.value, devices) {
                self.error(capabilities, &field, message);
            }
        }
    }

    /// Each word is one kernel parameter: no whitespace to make it two, no control character.
    fn kernel_cmdline(&mut self, words: &[Spanned<String>]) -> Vec<String> {
        for (index, word) in words.iter().enumerate() {
            let problem = if word.value.chars().any(char::is_control) {
                "holds a control character"
            } else if word.value.is_empty() || word.value.chars().any(char::is_whitespace) {
                "is empty or holds whitespace: each item is one kernel parameter"
            } else {
                continue;
            };
            let message = format!("kernel command line word `{}` {problem}", word.value.escape_debug());
            self.error(word, &format!("kernel_cmdline[{index}]"), message);
        }
        words.iter().map(|word| word.value.clone()).collect()
    }

    fn backends(&mut self, specs: &[MemoryBackendSpec]) -> Vec<MemoryBackend> {
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut backends = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let id_field = format!("memory_backends[{index}].id");
            let capabilities = spec.capabilities.as_ref().is_some_and(|capabilities| capabilities.value);
            self.check_name(&spec.id, &id_field, if capabilities { &CAPABILITY_BACKEND_ID } else { &BACKEND_ID });
            if let Some(line) = seen.insert(&spec.id.value, spec.id.referenced.line()) {
                let message = format!("duplicate memory backend id `{}` (first used at line {line})", spec.id.value);
                self.error(&spec.id, &id_field, message);
            }
            if spec.size.value.bytes() == 0 {
                self.error(&spec.size, &format!("memory_backends[{index}].size"), "size must not be zero".to_owned());
            }
            backends.push(MemoryBackend { id: spec.id.value.clone(), size: spec.size.value.bytes(), shared: spec.shared, capabilities });
        }
        backends
    }

    #[allow(clippy::too_many_arguments)]
    fn host(
        &mut self,
        topology: &Topology,
        backend_hosts: &mut HashMap<String, Seen>,
        name: String,
        prefix: &str,
        machine: Spanned<MachineSpec>,
        host_bridge_specs: Vec<HostBridgeSpec>,
        window_specs: Vec<FixedWindowSpec>,
    ) -> Host {
        let mut scope = HostScope::default();
        for backend in &topology.backends {
            scope.ids.insert(backend.id.clone(), (Seen { owner: backend.id.clone(), line: 0 }, "memory backend"));
        }
        let mut host_bridges = Vec::new();
        for (index, spec) in host_bridge_specs.into_iter().enumerate() {
            let field = format!("{prefix}host_bridges[{index}]");
            host_bridges.push(self.host_bridge(topology, &mut scope, backend_hosts, &name, &field, spec));
        }
        let mut host = Host { name, machine: self.machine_shape(&machine, prefix), host_bridges, windows: Vec::new() };
        let has_windows = !window_specs.is_empty();
        for (index, spec) in window_specs.into_iter().enumerate() {
            let field = format!("{prefix}fixed_windows[{index}]");
            if let Some(window) = self.window(&host, &scope, &field, spec) {
                host.windows.push(window);
            }
        }
        self.fit_windows_in_maxmem(&mut host, &machine, prefix, has_windows);
        host
    }

    fn machine_shape(&mut self, machine: &Spanned<MachineSpec>, prefix: &str) -> Machine {
        let spec = &machine.value;
        if spec.memory.value.bytes() == 0 {
            self.error(&spec.memory, &format!("{prefix}machine.memory"), "memory must not be zero".to_owned());
        }
        Machine {
            memory: spec.memory.value.bytes(),
            maxmem: spec.maxmem.as_ref().map(|maxmem| maxmem.value.bytes()).unwrap_or(0),
            slots: self.count(spec.slots.as_ref(), DEFAULT_SLOTS, prefix, "slots"),
            cpus: self.count(spec.cpus.as_ref(), DEFAULT_CPUS, prefix, "cpus"),
            accel: spec.accel,
            online_cxl_as_ram: spec.online_cxl_as_ram,
        }
    }

    /// A machine count the profile may leave out (then `default`). Zero is always a mistake: QEMU
    /// refuses zero CPUs, and zero slots are a memory hotplug space with no slot.
    fn count(&mut self, count: Option<&Spanned<u32>>, default: u32, prefix: &str, name: &str) -> u32 {
        let Some(count) = count else { return default };
        if count.value == 0 {
            self.error(count, &format!("{prefix}machine.{name}"), format!("{name} must be at least 1"));
        }
        count.value
    }

    /// CXL windows are placed in the guest physical space the lab reserves with maxmem: their total
    /// must fit in `maxmem - memory`. Without maxmem, reserve exactly what the windows need. QEMU
    /// refuses memory slots when maxmem equals memory, so something must be reserved.
    fn fit_windows_in_maxmem(&mut self, host: &mut Host, machine: &Spanned<MachineSpec>, prefix: &str, has_windows: bool) {
        let windows_total: u64 = host.windows.iter().map(|window| window.size).sum();
        let memory = host.machine.memory;
        let no_room = "QEMU refuses memory slots without room above memory";
        match &machine.value.maxmem {
            None if !has_windows => {
                let message = format!("no fixed window and no `maxmem`: {no_room}; set `maxmem` above {}", ByteSize(memory));
                self.error(machine, &format!("{prefix}machine"), message);
            }
            None => host.machine.maxmem = memory + windows_total,
            Some(maxmem) if !has_windows && maxmem.value.bytes() == memory => {
                let message = format!("maxmem {} equals memory and no fixed window needs room: {no_room}", maxmem.value);
                self.error(maxmem, &format!("{prefix}machine.maxmem"), message);
            }
            Some(maxmem) if maxmem.value.bytes() < memory => {
                let message = format!("maxmem {} is smaller than memory {}", maxmem.value, ByteSize(memory));
                self.error(maxmem, &format!("{prefix}machine.maxmem"), message);
            }
            Some(maxmem) if windows_total > maxmem.value.bytes() - memory => {
                let message = format!(
                    "the fixed windows need {} but maxmem {} minus memory {} leaves {}",
                    ByteSize(windows_total),
                    maxmem.value,
                    ByteSize(memory),
                    ByteSize(maxmem.value.bytes() - memory)
                );
                self.error(maxmem, &format!("{prefix}machine.maxmem"), message);
            }
            Some(_) => {}
        }
    }

    fn claim_id(&mut self, scope: &mut HostScope, id: &Spanned<String>, kind: &'static str, field: &str) {
        self.check_name(id, &format!("{field}.id"), &DEVICE_ID);
        let seen = Seen { owner: id.value.clone(), line: id.referenced.line() };
        if let Some((first, first_kind)) = scope.ids.get(&id.value).cloned() {
            let message = if first.line == 0 {
                format!("duplicate id `{}`: a memory backend already has it", id.value)
            } else {
                format!("duplicate id `{}` (first used by a {first_kind} at line {})", id.value, first.line)
            };
            self.error(id, &format!("{field}.id"), message);
        } else {
            scope.ids.insert(id.value.clone(), (seen, kind));
        }
    }

    fn host_bridge(
        &mut self,
        topology: &Topology,
        scope: &mut HostScope,
        backend_hosts: &mut HashMap<String, Seen>,
        host_name: &str,
        field: &str,
        spec: HostBridgeSpec,
    ) -> HostBridge {
        self.claim_id(scope, &spec.id, "host bridge", field);
        if spec.bus_nr.value == 0 {
            self.error(&spec.bus_nr, &format!("{field}.bus_nr"), "bus 0 is the machine's main PCI bus (pcie.0): a host bridge needs a bus of its own".to_owned());
        }
        let seen = Seen { owner: spec.id.value.clone(), line: spec.bus_nr.referenced.line() };
        if let Some(first) = scope.bus_numbers.insert(spec.bus_nr.value, seen) {
            let message = format!(
                "bus_nr {} is already used by host bridge `{}` (line {})",
                spec.bus_nr.value, first.owner, first.line
            );
            self.error(&spec.bus_nr, &format!("{field}.bus_nr"), message);
        }
        let context = PortContext { topology, host_name, bus: spec.id.value.clone(), in_switch: false };
        let root_ports = self.ports(scope, backend_hosts, &context, &format!("{field}.root_ports"), &spec.root_ports);
        HostBridge {
            id: spec.id.value,
            bus_nr: spec.bus_nr.value,
            hdm_for_passthrough: spec.hdm_for_passthrough,
            root_ports,
        }
    }

    fn ports(
        &mut self,
        scope: &mut HostScope,
        backend_hosts: &mut HashMap<String, Seen>,
        context: &PortContext<'_>,
        field: &str,
        specs: &[PortSpec],
    ) -> Vec<Port> {
        let mut port_numbers: HashMap<u8, Seen> = HashMap::new();
        let mut ports = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let field = format!("{field}[{index}]");
            let kind = if context.in_switch { "downstream port" } else { "root port" };
            self.claim_id(scope, &spec.id, kind, &field);
            let seen = Seen { owner: spec.id.value.clone(), line: spec.port.referenced.line() };
            if let Some(first) = port_numbers.insert(spec.port.value, seen) {
                let message = format!(
                    "port {} is already used on bus `{}` by `{}` (line {})",
                    spec.port.value, context.bus, first.owner, first.line
                );
                self.error(&spec.port, &format!("{field}.port"), message);
            }
            let chassis_slot = (spec.chassis.value, spec.slot.value);
            let seen = Seen { owner: spec.id.value.clone(), line: spec.slot.referenced.line() };
            if let Some(first) = scope.chassis_slots.insert(chassis_slot, seen) {
                let message = format!(
                    "chassis {} slot {} is already used by `{}` (line {})",
                    chassis_slot.0, chassis_slot.1, first.owner, first.line
                );
                self.error(&spec.slot, &format!("{field}.slot"), message);
            }
            let below = self.below(scope, backend_hosts, context, &field, spec);
            ports.push(Port {
                id: spec.id.value.clone(),
                port: spec.port.value,
                chassis: spec.chassis.value,
                slot: spec.slot.value,
                below,
            });
        }
        ports
    }

    fn below(
        &mut self,
        scope: &mut HostScope,
        backend_hosts: &mut HashMap<String, Seen>,
        context: &PortContext<'_>,
        field: &str,
        spec: &PortSpec,
    ) -> Option<Below> {
        match (&spec.type3, &spec.switch) {
            (Some(_), Some(switch)) => {
                let message = "a port holds one thing: a `type3` device or a `switch`, not both".to_owned();
                self.error(switch, &format!("{field}.switch"), message);
                None
            }
            (Some(device), None) => {
                let device = self.type3(scope, backend_hosts, context, &format!("{field}.type3"), device);
                Some(Below::Type3(device))
            }
            (None, Some(switch)) if context.in_switch => {
                let message = "a switch below a switch: QEMU emulates one switch level only".to_owned();
                self.error(switch, &format!("{field}.switch"), message);
                None
            }
            (None, Some(switch)) => {
                let field = format!("{field}.switch");
                let switch_spec = &switch.value;
                self.claim_id(scope, &switch_spec.id, "switch", &field);
                let switch_context = PortContext {
                    topology: context.topology,
                    host_name: context.host_name,
                    bus: switch_spec.id.value.clone(),
                    in_switch: true,
                };
                let downstream_ports = self.ports(
                    scope,
                    backend_hosts,
                    &switch_context,
                    &format!("{field}.downstream_ports"),
                    &switch_spec.downstream_ports,
                );
                Some(Below::Switch(Switch {
                    id: switch_spec.id.value.clone(),
                    port: switch_spec.port,
                    serial: switch_spec.serial,
                    mailbox_cci: switch_spec.mailbox_cci,
                    downstream_ports,
                }))
            }
            (None, None) => None,
        }
    }

    fn type3(
        &mut self,
        scope: &mut HostScope,
        backend_hosts: &mut HashMap<String, Seen>,
        context: &PortContext<'_>,
        field: &str,
        spec: &Type3Spec,
    ) -> Type3Device {
        self.claim_id(scope, &spec.id, "type-3 device", field);
        let seen = Seen { owner: spec.id.value.clone(), line: spec.serial.referenced.line() };
        if let Some(first) = scope.serials.insert(spec.serial.value, seen) {
            let message =
                format!("serial {} is already used by `{}` (line {})", spec.serial.value, first.owner, first.line);
            self.error(&spec.serial, &format!("{field}.serial"), message);
        }
        let mut uses = BackendUses { scope, backend_hosts, context, device: &spec.id.value };
        let volatile =
            spec.volatile.as_ref().and_then(|id| self.use_backend(&mut uses, id, &format!("{field}.volatile"), BackendRole::Volatile));
        let persistent = (spec.persistent.as_ref())
            .and_then(|id| self.use_backend(&mut uses, id, &format!("{field}.persistent"), BackendRole::Persistent));
        let lsa = spec.lsa.as_ref().and_then(|id| self.use_backend(&mut uses, id, &format!("{field}.lsa"), BackendRole::LabelArea));
        let dynamic_capacity = spec.dynamic_capacity.as_ref().and_then(|dc| {
            let dc_field = format!("{field}.dynamic_capacity");
            let backend =
                self.use_backend(&mut uses, &dc.value.backend, &format!("{dc_field}.backend"), BackendRole::DynamicCapacity)?;
            let regions = dc.value.regions.value;
            if regions == 0 || regions > MAX_DC_REGIONS {
                let message = format!("dynamic capacity has {regions} regions; QEMU supports 1 to {MAX_DC_REGIONS}");
                self.error(&dc.value.regions, &format!("{dc_field}.regions"), message);
                return None;
            }
            let region_align = u64::from(regions) * CXL_SIZE_ALIGN;
            if backend.size % region_align != 0 {
                let message = format!(
                    "dynamic capacity backend `{}` is {}, not a multiple of {regions} regions × 256 MiB ({})",
                    backend.backend,
                    ByteSize(backend.size),
                    ByteSize(region_align)
                );
                self.error(&dc.value.backend, &format!("{dc_field}.backend"), message);
            }
            Some(DynamicCapacity { backend, regions })
        });
        if spec.volatile.is_none() && spec.persistent.is_none() && spec.dynamic_capacity.is_none() {
            let message = "a type-3 device needs `volatile`, `persistent` or `dynamic_capacity` memory".to_owned();
            self.error(&spec.id, &format!("{field}.id"), message);
        }
        if let (Some(persistent_spec), None) = (&spec.persistent, &spec.lsa) {
            let message = "persistent memory needs a label area: add `lsa: <backend id>`".to_owned();
            self.error(persistent_spec, &format!("{field}.persistent"), message);
        }
        Type3Device { id: spec.id.value.clone(), serial: spec.serial.value, volatile, persistent, lsa, dynamic_capacity }
    }

    /// Checks one use of a backend: it exists, is used once per host (and by one host unless
    /// shared), for static capacity is a multiple of 256 MiB, and with capabilities is volatile.
    fn use_backend(
        &mut self,
        uses: &mut BackendUses<'_, '_>,
        id: &Spanned<String>,
        field: &str,
        role: BackendRole,
    ) -> Option<BackendUse> {
        let Some(backend) = uses.context.topology.backend(&id.value) else {
            self.error(id, field, format!("no memory backend `{}` in `memory_backends`", id.value));
            return None;
        };
        let seen = Seen { owner: uses.device.to_owned(), line: id.referenced.line() };
        if let Some(first) = uses.scope.backends_used.insert(id.value.clone(), seen.clone()) {
            let message = format!("memory backend `{}` is already used by `{}` (line {})", id.value, first.owner, first.line);
            self.error(id, field, message);
        }
        let host_seen = Seen { owner: uses.context.host_name.to_owned(), line: id.referenced.line() };
        match uses.backend_hosts.get(&id.value) {
            Some(first) if first.owner != uses.context.host_name && !backend.shared => {
                let message = format!(
                    "memory backend `{}` is already used by host `{}` (line {}); mark it `shared: true` to share it",
                    id.value, first.owner, first.line
                );
                self.error(id, field, message);
            }
            Some(_) => {}
            None => {
                uses.backend_hosts.insert(id.value.clone(), host_seen);
            }
        }
        if backend.capabilities && role != BackendRole::Volatile {
            let message = format!(
                "memory backend `{}` has `capabilities: true`: only a device's `volatile` memory is capability-checked (grants name device physical addresses, which are byte offsets of the file only there)",
                id.value
            );
            self.error(id, field, message);
        }
        let static_capacity = matches!(role, BackendRole::Volatile | BackendRole::Persistent);
        if static_capacity && backend.size % CXL_SIZE_ALIGN != 0 {
            let message =
                format!("memory backend `{}` is {}, not a multiple of 256 MiB", id.value, ByteSize(backend.size));
            self.error(id, field, message);
        }
        Some(BackendUse { backend: backend.id.clone(), size: backend.size })
    }

    fn window(&mut self, host: &Host, scope: &HostScope, field: &str, spec: FixedWindowSpec) -> Option<FixedWindow> {
        let errors_before = self.sink.count();
        let targets = &spec.targets.value;
        if !WINDOW_TARGET_COUNTS.contains(&targets.len()) {
            let message = format!(
                "{} targets: QEMU interleaves 1, 2, 4, 8 or 16 host bridges (3, 6 or 12 since QEMU 10.0)",
                targets.len()
            );
            self.error(&spec.targets, &format!("{field}.targets"), message);
        }
        for (index, target) in targets.iter().enumerate() {
            let target_field = format!("{field}.targets[{index}]");
            if host.host_bridge(&target.value).is_some() {
                if targets[..index].iter().any(|earlier| earlier.value == target.value) {
                    self.error(target, &target_field, format!("host bridge `{}` is listed twice", target.value));
                }
            } else if let Some((_, kind)) = scope.ids.get(&target.value) {
                let message = format!("window target `{}` is a {kind}, not a host bridge", target.value);
                self.error(target, &target_field, message);
            } else {
                self.error(target, &target_field, format!("window target `{}` is not a host bridge of this host", target.value));
            }
        }
        let size = spec.size.value.bytes();
        if size == 0 || size % CXL_SIZE_ALIGN != 0 {
            let message = format!("window size {} is not a multiple of 256 MiB", spec.size.value);
            self.error(&spec.size, &format!("{field}.size"), message);
        }
        let granularity = spec.granularity.as_ref().map(|granularity| granularity.value.bytes()).unwrap_or(256);
        if let Some(granularity_spec) = &spec.granularity {
            if !GRANULARITIES.contains(&granularity) {
                let message = format!(
                    "interleave granularity {} is not one of 256, 512, 1k, 2k, 4k, 8k, 16k",
                    granularity_spec.value
                );
                self.error(granularity_spec, &format!("{field}.granularity"), message);
            }
        }
        (self.sink.count() == errors_before).then(|| FixedWindow {
            targets: targets.iter().map(|target| target.value.clone()).collect(),
            at: SourceAt { field: field.to_owned(), line: spec.targets.referenced.line(), column: spec.targets.referenced.column() },
            size,
            granularity,
        })
    }
}

/// What a device uses a backend as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BackendRole {
    Volatile,
    Persistent,
    LabelArea,
    DynamicCapacity,
}

struct PortContext<'a> {
    topology: &'a Topology,
    host_name: &'a str,
    /// The id of the bus the ports sit on (host bridge or switch upstream port).
    bus: String,
    in_switch: bool,
}

struct BackendUses<'scope, 'a> {
    scope: &'scope mut HostScope,
    backend_hosts: &'scope mut HashMap<String, Seen>,
    context: &'scope PortContext<'a>,
    device: &'scope str,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every device needs a requester id of its own, and 0 is nobody.
    #[test]
    fn a_capability_backend_serves_one_to_65535_devices() {
        assert_eq!(capability_devices_problem("m", 1), None);
        assert_eq!(capability_devices_problem("m", 65_535), None);
        assert_eq!(
            capability_devices_problem("m", 65_536).as_deref(),
            Some("memory backend `m` has `capabilities: true` and 65536 devices use it; requester ids are 16-bit, so at most 65535")
        );
        assert!(capability_devices_problem("m", 0).is_some_and(|message| message.contains("no type-3 device")));
    }
}
