//! The validated topology: the one graph that the renderer, the expected-view predictor and the
//! decode checker all read. Every value here has passed [`crate::validate`]; nothing downstream
//! re-checks a rule.

use serde::Serialize;

pub use crate::schema::{AccelRequest, BootMode};

/// A whole lab: one or more hosts and the memory backends they use.
#[derive(Clone, Debug, Serialize)]
pub struct Topology {
    pub name: String,
    pub description: String,
    pub backends: Vec<MemoryBackend>,
    pub hosts: Vec<Host>,
    pub kernel_cmdline: Vec<String>,
    pub qemu_extra: Vec<String>,
    /// How every host boots unless the command says otherwise.
    pub boot: BootMode,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryBackend {
    pub id: String,
    pub size: u64,
    pub shared: bool,
}

/// One QEMU machine.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub name: String,
    pub machine: Machine,
    pub host_bridges: Vec<HostBridge>,
    pub windows: Vec<FixedWindow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub memory: u64,
    pub maxmem: u64,
    pub slots: u32,
    pub cpus: u32,
    pub accel: AccelRequest,
    pub online_cxl_as_ram: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostBridge {
    pub id: String,
    pub bus_nr: u8,
    pub hdm_for_passthrough: bool,
    pub root_ports: Vec<Port>,
}

/// A root port or a switch downstream port.
#[derive(Clone, Debug, Serialize)]
pub struct Port {
    pub id: String,
    pub port: u8,
    pub chassis: u8,
    pub slot: u16,
    pub below: Option<Below>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Below {
    Type3(Type3Device),
    Switch(Switch),
}

#[derive(Clone, Debug, Serialize)]
pub struct Switch {
    pub id: String,
    pub port: u8,
    pub serial: Option<u64>,
    pub mailbox_cci: bool,
    /// Downstream ports only ever hold type-3 devices: one switch level.
    pub downstream_ports: Vec<Port>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Type3Device {
    pub id: String,
    pub serial: u64,
    pub volatile: Option<BackendUse>,
    pub persistent: Option<BackendUse>,
    pub lsa: Option<BackendUse>,
    pub dynamic_capacity: Option<DynamicCapacity>,
}

/// A device's use of a memory backend, with the backend's size copied in for convenience.
#[derive(Clone, Debug, Serialize)]
pub struct BackendUse {
    pub backend: String,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DynamicCapacity {
    pub backend: BackendUse,
    pub regions: u8,
}

#[derive(Clone, Debug, Serialize)]
pub struct FixedWindow {
    /// Host bridge ids, in interleave order.
    pub targets: Vec<String>,
    pub size: u64,
    pub granularity: u64,
    /// Where the window is written, for what later stages find wrong with it (no region fits).
    #[serde(skip)]
    pub at: SourceAt,
}

/// Where a value was written in its profile: its field path, line and column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceAt {
    pub field: String,
    pub line: u64,
    pub column: u64,
}

/// Where a type-3 device sits: the chain of ports from its host bridge down.
#[derive(Clone, Copy, Debug)]
pub struct DevicePlacement<'a> {
    pub host_bridge: &'a HostBridge,
    pub root_port: &'a Port,
    /// The switch and its downstream port, for devices below a switch.
    pub switch: Option<(&'a Switch, &'a Port)>,
    pub device: &'a Type3Device,
}

impl DevicePlacement<'_> {
    /// The port the device is plugged into (its QEMU `bus`).
    pub fn parent_port(&self) -> &Port {
        self.switch.map(|(_, downstream)| downstream).unwrap_or(self.root_port)
    }
}

impl Host {
    /// Every type-3 device of the host, in profile order, with its placement.
    pub fn devices(&self) -> Vec<DevicePlacement<'_>> {
        let mut placements = Vec::new();
        for host_bridge in &self.host_bridges {
            for root_port in &host_bridge.root_ports {
                match &root_port.below {
                    Some(Below::Type3(device)) => {
                        placements.push(DevicePlacement { host_bridge, root_port, switch: None, device })
                    }
                    Some(Below::Switch(switch)) => {
                        for downstream in &switch.downstream_ports {
                            if let Some(Below::Type3(device)) = &downstream.below {
                                placements.push(DevicePlacement {
                                    host_bridge,
                                    root_port,
                                    switch: Some((switch, downstream)),
                                    device,
                                });
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        placements
    }

    pub fn switches(&self) -> impl Iterator<Item = (&Port, &Switch)> {
        self.host_bridges.iter().flat_map(|host_bridge| {
            host_bridge.root_ports.iter().filter_map(|root_port| match &root_port.below {
                Some(Below::Switch(switch)) => Some((root_port, switch)),
                _ => None,
            })
        })
    }

    pub fn host_bridge(&self, id: &str) -> Option<&HostBridge> {
        self.host_bridges.iter().find(|host_bridge| host_bridge.id == id)
    }
}

impl Topology {
    pub fn backend(&self, id: &str) -> Option<&MemoryBackend> {
        self.backends.iter().find(|backend| backend.id == id)
    }

    /// The backends one host uses, in the order its devices use them.
    pub fn backends_of(&self, host: &Host) -> Vec<&MemoryBackend> {
        let mut used: Vec<&MemoryBackend> = Vec::new();
        for placement in host.devices() {
            let device = placement.device;
            let uses = [&device.volatile, &device.persistent, &device.lsa]
                .into_iter()
                .flatten()
                .chain(device.dynamic_capacity.as_ref().map(|dc| &dc.backend));
            for backend_use in uses {
                if let Some(backend) = self.backend(&backend_use.backend) {
                    if !used.iter().any(|seen| seen.id == backend.id) {
                        used.push(backend);
                    }
                }
            }
        }
        used
    }
}
