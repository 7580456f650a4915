//! The validated topology: the one graph that the renderer, the expected-view predictor and the
//! decode checker all read. Every value here has passed [`crate::validate`]; nothing downstream
//! re-checks a rule.

use serde::{Deserialize, Serialize};

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
    /// The devices using it as `volatile` memory are checked by a capability service.
    pub capabilities: bool,
}

/// A (host, type-3 device) pair that uses a capability backend, and the requester id the lab
/// gives it (QEMU's `cap-requester`; `cxl_lab_cap::RequesterId`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityRequester {
    pub host: String,
    /// The device's QEMU id.
    pub device: String,
    pub serial: u64,
    /// 1-based, in profile order: hosts in order, each host's devices in [`Host::devices`] order.
    pub requester: u16,
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

    /// The backends marked `capabilities: true`, in profile order (each with its size).
    pub fn capability_backends(&self) -> impl Iterator<Item = &MemoryBackend> {
        self.backends.iter().filter(|backend| backend.capabilities)
    }

    /// Every device that uses capability backend `backend` as its `volatile` memory, with its
    /// host, in profile order; none when `backend` is not a capability backend.
    pub fn capability_devices<'a>(&'a self, backend: &'a str) -> impl Iterator<Item = (&'a Host, &'a Type3Device)> {
        let hosts = if self.backend(backend).is_some_and(|used| used.capabilities) { &self.hosts[..] } else { &[] };
        hosts.iter().flat_map(move |host| {
            (host.devices().into_iter())
                .filter(move |placement| placement.device.volatile.as_ref().is_some_and(|used| used.backend == backend))
                .map(move |placement| (host, placement.device))
        })
    }

    /// The requester ids of the devices a capability backend serves: 1, 2, ... in the order of
    /// [`Topology::capability_devices`]. The validator keeps them within 16 bits.
    pub fn capability_requesters(&self, backend: &str) -> Vec<CapabilityRequester> {
        (1..=u16::MAX)
            .zip(self.capability_devices(backend))
            .map(|(requester, (host, device))| CapabilityRequester {
                host: host.name.clone(),
                device: device.id.clone(),
                serial: device.serial,
                requester,
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// host0 uses the capability backend `cap` through its second device, host1 through its only
    /// one; `plain` is an ordinary backend.
    const PROFILE: &str = "
memory_backends:
  - {id: plain, size: 256M}
  - {id: cap, size: 512M, shared: true, capabilities: true}
hosts:
  - name: host0
    machine: {memory: 1G, maxmem: 2G}
    host_bridges:
      - id: hb
        bus_nr: 1
        root_ports:
          - {id: rp0, port: 0, chassis: 0, slot: 0, type3: {id: d0, serial: 10, volatile: plain}}
          - {id: rp1, port: 1, chassis: 0, slot: 1, type3: {id: d1, serial: 11, volatile: cap}}
  - name: host1
    machine: {memory: 1G, maxmem: 2G}
    host_bridges:
      - id: hb
        bus_nr: 1
        root_ports:
          - {id: rp0, port: 0, chassis: 0, slot: 0, type3: {id: e0, serial: 20, volatile: cap}}
";

    #[test]
    fn requesters_are_numbered_from_one_in_profile_order() {
        let topology = crate::parse_profile("t.yaml", PROFILE, "t").unwrap();
        let backends: Vec<(&str, u64)> = topology.capability_backends().map(|backend| (backend.id.as_str(), backend.size)).collect();
        assert_eq!(backends, [("cap", 512 << 20)]);
        let requester = |host: &str, device: &str, serial, requester| CapabilityRequester {
            host: host.to_owned(),
            device: device.to_owned(),
            serial,
            requester,
        };
        assert_eq!(topology.capability_requesters("cap"), [requester("host0", "d1", 11, 1), requester("host1", "e0", 20, 2)]);
        assert!(topology.capability_requesters("plain").is_empty());
        assert!(topology.capability_requesters("no-such-backend").is_empty());
    }
}
