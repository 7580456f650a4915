//! What Linux should show for a topology: the expected guest view that suites diff against
//! `cxl list` JSON.
//!
//! Devices are matched by serial, never by name: Linux numbers memdevs in probe order (on a
//! four-device switch mem0..mem3 came up as serials 102, 101, 103, 100), so names are not
//! predicted. Field names follow `cxl list` where it has one.

use serde::{Deserialize, Serialize};

use crate::decode::{region_granularity, Region};
use crate::topology::{Host, Topology};

/// The expected view of every host of a topology.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedView {
    pub profile: String,
    pub hosts: Vec<ExpectedHost>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedMemdev {
    pub serial: u64,
    /// Volatile capacity (`ram_size` in `cxl list`), omitted when zero as `cxl list` does.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ram_size: u64,
    /// Persistent capacity (`pmem_size`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pmem_size: u64,
    /// Dynamic capacity, all regions together.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dynamic_capacity_size: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dynamic_capacity_regions: u64,
    /// The uid of the host bridge the device is below.
    pub host_bridge_uid: u8,
    /// The QEMU id, for people reading a diff; not matched.
    pub qemu_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedHostBridge {
    /// ACPI0016 `_UID`: QEMU sets it to the pxb-cxl `bus_nr`.
    pub uid: u8,
    pub qemu_id: String,
    /// Root port numbers, as the host bridge port's dport ids.
    pub dports: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedSwitch {
    pub qemu_id: String,
    pub host_bridge_uid: u8,
    /// The root port number the switch's upstream port is attached to.
    pub root_port: u8,
    /// Downstream port numbers, as the switch port's dport ids.
    pub dports: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedRootDecoder {
    pub index: usize,
    pub size: u64,
    pub interleave_ways: usize,
    pub interleave_granularity: u64,
    /// Host bridge uids in interleave order.
    pub targets: Vec<u8>,
    pub volatile_capable: bool,
    pub pmem_capable: bool,
    /// The region a suite creates in this window, or why it holds none.
    pub region: RegionPlan,
}

/// The region a window can hold: over every device below its host bridges, each giving the same
/// share, a multiple of the 256 MiB decoder unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "holds", rename_all = "snake_case")]
pub enum RegionPlan {
    Region {
        /// `pmem` or `ram`, as `cxl create-region -t` takes it.
        mode: String,
        /// Serials of the devices in interleave position order.
        memdevs: Vec<u64>,
        ways: usize,
        granularity: u64,
        size: u64,
    },
    None { reason: String },
}


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

    let root_decoders: Vec<ExpectedRootDecoder> = host
        .windows
        .iter()
        .enumerate()
        .map(|(index, window)| ExpectedRootDecoder {
            index,
            size: window.size,
            interleave_ways: window.targets.len(),
            interleave_granularity: region_granularity(window),
            targets: window
                .targets
                .iter()
                .filter_map(|target| host.host_bridge(target).map(|host_bridge| host_bridge.bus_nr))
                .collect(),
            // QEMU's fixed memory windows advertise both volatile and persistent use.
            volatile_capable: true,
            pmem_capable: true,
            region: RegionPlan::None { reason: String::new() },
        })
        .collect();
    let root_decoders = plan_regions(host, root_decoders);

    ExpectedHost { host: host.name.clone(), memdevs, host_bridges, switches, root_decoders }
}

/// Each window's region, in window order: the region Linux builds over it
/// ([`Region::over_window`]), unless an earlier window's region took a device's capacity.
fn plan_regions(host: &Host, decoders: Vec<ExpectedRootDecoder>) -> Vec<ExpectedRootDecoder> {
    let mut taken: Vec<u64> = Vec::new();
    decoders
        .into_iter()
        .map(|decoder| {
            let region = plan_region(host, &decoder, &taken);
            if let RegionPlan::Region { memdevs, .. } = &region {
                taken.extend(memdevs);
            }
            ExpectedRootDecoder { region, ..decoder }
        })
        .collect()
}

fn plan_region(host: &Host, decoder: &ExpectedRootDecoder, taken: &[u64]) -> RegionPlan {
    let region = match Region::over_window(host, decoder.index, 0) {
        Ok(region) => region,
        Err(reason) => return RegionPlan::None { reason: reason.to_string() },
    };
    let memdevs: Vec<u64> = region.members().map(|device| device.serial).collect();
    if memdevs.iter().any(|serial| taken.contains(serial)) {
        return RegionPlan::None { reason: "its devices' capacity is taken by an earlier window's region".to_owned() };
    }
    RegionPlan::Region { mode: region.mode.name().to_owned(), memdevs, ways: region.ways(), granularity: region.granularity, size: region.size }
}

fn sorted(values: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut values: Vec<u8> = values.collect();
    values.sort_unstable();
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(windows: &str) -> Vec<RegionPlan> {
        let profile = format!(
            "machine: {{memory: 2G}}
memory_backends: [{{id: m0, size: 256M}}, {{id: m1, size: 256M}}]
host_bridges:
  - {{id: hb0, bus_nr: 12, root_ports: [{{id: rp0, port: 0, chassis: 0, slot: 2, type3: {{id: d0, serial: 100, volatile: m0}}}}]}}
  - {{id: hb1, bus_nr: 13, root_ports: [{{id: rp1, port: 0, chassis: 0, slot: 3, type3: {{id: d1, serial: 101, volatile: m1}}}}]}}
fixed_windows: {windows}
"
        );
        let topology = crate::parse_profile("t.yaml", &profile, "t").unwrap_or_else(|errors| panic!("{errors}"));
        expected_view(&topology).hosts[0].root_decoders.iter().map(|decoder| decoder.region.clone()).collect()
    }

    #[test]
    fn a_window_too_small_for_a_decoder_unit_per_device_holds_no_region() {
        assert_eq!(
            plans("[{targets: [hb0, hb1], size: 256M, granularity: 4k}]"),
            [RegionPlan::None { reason: "a 2-way region needs 512M of window (256M per device) but the window has 256M: each device would get 128M".to_owned() }]
        );
    }

    #[test]
    fn devices_take_positions_round_robin_over_the_window_targets() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../profiles/interleave.yaml");
        let topology = crate::parse_profile("interleave.yaml", &std::fs::read_to_string(path).unwrap(), "interleave").unwrap();
        let RegionPlan::Region { memdevs, ways, .. } = &expected_view(&topology).hosts[0].root_decoders[0].region else { panic!() };
        // cxl.1 holds 100 and 101, cxl.2 holds 102 and 103: positions alternate between them.
        assert_eq!((memdevs.as_slice(), *ways), (&[100, 102, 101, 103][..], 4));
    }

    #[test]
    fn each_device_serves_one_window_with_the_decoder_granularity() {
        let plans = plans("[{targets: [hb0, hb1], size: 1G, granularity: 4k}, {targets: [hb0], size: 1G}]");
        let region = RegionPlan::Region { mode: "ram".to_owned(), memdevs: vec![100, 101], ways: 2, granularity: 4096, size: 512 << 20 };
        assert_eq!(plans[0], region);
        assert_eq!(plans[1], RegionPlan::None { reason: "its devices' capacity is taken by an earlier window's region".to_owned() });
    }
}
