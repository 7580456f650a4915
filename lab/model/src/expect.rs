//! What Linux should show for a topology: the expected guest view that suites diff against
//! `cxl list` JSON.
//!
//! Devices are matched by serial, never by name: Linux numbers memdevs in probe order (on a
//! four-device switch mem0..mem3 came up as serials 102, 101, 103, 100), so names are not
//! predicted. Field names follow `cxl list` where it has one.

use serde::Serialize;

use crate::topology::{Host, Topology};

/// The expected view of every host of a topology.
#[derive(Clone, Debug, Serialize)]
pub struct ExpectedView {
    pub profile: String,
    pub hosts: Vec<ExpectedHost>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExpectedHost {
    pub host: String,
    /// Sorted by serial.
    pub memdevs: Vec<ExpectedMemdev>,
    /// Host bridges, as the dports of the CXL root (`root0`), sorted by uid.
    pub host_bridges: Vec<ExpectedHostBridge>,
    pub switches: Vec<ExpectedSwitch>,
    /// One root decoder per fixed memory window, in window order (`decoder0.N`).
    pub root_decoders: Vec<ExpectedRootDecoder>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpectedMemdev {
    pub serial: u64,
    /// Volatile capacity (`ram_size` in `cxl list`), omitted when zero as `cxl list` does.
    #[serde(skip_serializing_if = "is_zero")]
    pub ram_size: u64,
    /// Persistent capacity (`pmem_size`).
    #[serde(skip_serializing_if = "is_zero")]
    pub pmem_size: u64,
    /// Dynamic capacity, all regions together.
    #[serde(skip_serializing_if = "is_zero")]
    pub dynamic_capacity_size: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub dynamic_capacity_regions: u64,
    /// The uid of the host bridge the device is below.
    pub host_bridge_uid: u8,
    /// The QEMU id, for people reading a diff; not matched.
    pub qemu_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExpectedHostBridge {
    /// ACPI0016 `_UID`: QEMU sets it to the pxb-cxl `bus_nr`.
    pub uid: u8,
    pub qemu_id: String,
    /// Root port numbers, as the host bridge port's dport ids.
    pub dports: Vec<u8>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExpectedSwitch {
    pub qemu_id: String,
    pub host_bridge_uid: u8,
    /// The root port number the switch's upstream port is attached to.
    pub root_port: u8,
    /// Downstream port numbers, as the switch port's dport ids.
    pub dports: Vec<u8>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExpectedRootDecoder {
    pub index: usize,
    pub size: u64,
    pub interleave_ways: usize,
    pub interleave_granularity: u64,
    /// Host bridge uids in interleave order.
    pub targets: Vec<u8>,
    pub volatile_capable: bool,
    pub pmem_capable: bool,
}

/// The granularity Linux gives every one-way root decoder (`CXL_DECODER_MIN_GRANULARITY`).
pub const ONE_WAY_GRANULARITY: u64 = 256;

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Predicts the guest view of every host.
pub fn expected_view(topology: &Topology) -> ExpectedView {
    ExpectedView { profile: topology.name.clone(), hosts: topology.hosts.iter().map(expected_host).collect() }
}

fn expected_host(host: &Host) -> ExpectedHost {
    let mut memdevs: Vec<ExpectedMemdev> = host
        .devices()
        .into_iter()
        .map(|placement| {
            let device = placement.device;
            let dynamic = device.dynamic_capacity.as_ref();
            ExpectedMemdev {
                serial: device.serial,
                ram_size: device.volatile.as_ref().map_or(0, |backend| backend.size),
                pmem_size: device.persistent.as_ref().map_or(0, |backend| backend.size),
                dynamic_capacity_size: dynamic.map_or(0, |dc| dc.backend.size),
                dynamic_capacity_regions: dynamic.map_or(0, |dc| u64::from(dc.regions)),
                host_bridge_uid: placement.host_bridge.bus_nr,
                qemu_id: device.id.clone(),
            }
        })
        .collect();
    memdevs.sort_by_key(|memdev| memdev.serial);

    let mut host_bridges: Vec<ExpectedHostBridge> = host
        .host_bridges
        .iter()
        .map(|host_bridge| ExpectedHostBridge {
            uid: host_bridge.bus_nr,
            qemu_id: host_bridge.id.clone(),
            dports: sorted(host_bridge.root_ports.iter().map(|port| port.port)),
        })
        .collect();
    host_bridges.sort_by_key(|host_bridge| host_bridge.uid);

    let switches = host
        .host_bridges
        .iter()
        .flat_map(|host_bridge| {
            host_bridge.root_ports.iter().filter_map(move |root_port| match &root_port.below {
                Some(crate::topology::Below::Switch(switch)) => Some(ExpectedSwitch {
                    qemu_id: switch.id.clone(),
                    host_bridge_uid: host_bridge.bus_nr,
                    root_port: root_port.port,
                    dports: sorted(switch.downstream_ports.iter().map(|port| port.port)),
                }),
                _ => None,
            })
        })
        .collect();

    let root_decoders = host
        .windows
        .iter()
        .enumerate()
        .map(|(index, window)| ExpectedRootDecoder {
            index,
            size: window.size,
            interleave_ways: window.targets.len(),
            // Linux shows a one-way window at the smallest granularity, 256, whatever the CFMWS
            // says, "to advertise support for any valid region granularity" (drivers/cxl/acpi.c).
            interleave_granularity: if window.targets.len() == 1 { ONE_WAY_GRANULARITY } else { window.granularity },
            targets: window
                .targets
                .iter()
                .filter_map(|target| host.host_bridge(target).map(|host_bridge| host_bridge.bus_nr))
                .collect(),
            // QEMU's fixed memory windows advertise both volatile and persistent use.
            volatile_capable: true,
            pmem_capable: true,
        })
        .collect();

    ExpectedHost { host: host.name.clone(), memdevs, host_bridges, switches, root_decoders }
}

fn sorted(values: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut values: Vec<u8> = values.collect();
    values.sort_unstable();
    values
}
