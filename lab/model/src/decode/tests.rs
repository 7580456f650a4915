use proptest::prelude::*;

use super::*;
use crate::size::GIB;
use crate::{parse_profile, Topology};

/// A generated profile: `bridges` host bridges in one window, `ports` root ports each, and below
/// each root port a device or (with `switch_ports > 0`) a switch with that many devices.
struct Shape {
    bridges: usize,
    ports: usize,
    switch_ports: usize,
    granularity: u64,
    device_size: &'static str,
    window_size: &'static str,
}

impl Shape {
    fn flat(bridges: usize, ports: usize, granularity: u64) -> Shape {
        Shape { bridges, ports, switch_ports: 0, granularity, device_size: "256M", window_size: "16G" }
    }

    fn yaml(&self) -> String {
        let mut backends = String::new();
        let mut bridges = String::new();
        let (mut device, mut slot) = (0, 0);
        let mut next_device = |backends: &mut String, indent: &str| {
            backends.push_str(&format!("  - {{ id: mem{device}, size: {} }}\n", self.device_size));
            let text = format!("{indent}type3: {{ id: dev{device}, serial: {}, volatile: mem{device} }}\n", 100 + device);
            device += 1;
            text
        };
        for bridge in 0..self.bridges {
            bridges.push_str(&format!("  - id: hb{bridge}\n    bus_nr: {}\n    root_ports:\n", 10 + bridge * 10));
            for port in 0..self.ports {
                bridges.push_str(&format!("      - id: hb{bridge}rp{port}\n        port: {port}\n        chassis: 0\n        slot: {slot}\n"));
                slot += 1;
                if self.switch_ports == 0 {
                    bridges.push_str(&next_device(&mut backends, "        "));
                } else {
                    bridges.push_str(&format!("        switch:\n          id: sw{bridge}_{port}\n          downstream_ports:\n"));
                    for downstream in 0..self.switch_ports {
                        bridges.push_str(&format!(
                            "            - id: sw{bridge}_{port}p{downstream}\n              port: {downstream}\n              chassis: 1\n              slot: {slot}\n"
                        ));
                        slot += 1;
                        bridges.push_str(&next_device(&mut backends, "              "));
                    }
                }
            }
        }
        let targets: Vec<String> = (0..self.bridges).map(|bridge| format!("hb{bridge}")).collect();
        format!(
            "machine: {{ memory: 1G }}\nmemory_backends:\n{backends}host_bridges:\n{bridges}fixed_windows:\n  - {{ targets: [{}], size: {}, granularity: {} }}\n",
            targets.join(", "),
            self.window_size,
            self.granularity
        )
    }

    fn topology(&self) -> Topology {
        let yaml = self.yaml();
        parse_profile("test.yaml", &yaml, "test").unwrap_or_else(|errors| panic!("{errors}\n{yaml}"))
    }
}

fn region(topology: &Topology) -> Region<'_> {
    Region::over_window(&topology.hosts[0], 0, 0).unwrap()
}

/// ndctl `test/cxl-translate.sh`, sample sets `Sample_4R_4H` and `Sample_12R_12H` (modulo
/// arithmetic): a DPA, the region's ways, granularity 256 and the expected HPA per position.
#[test]
fn ndctl_translate_sample_sets() {
    let vectors: [(usize, u64, &[u64]); 5] = [
        (4, 0, &[0, 256, 512, 768]),
        (4, 256, &[1024, 1280, 1536, 1792]),
        (4, 2048, &[8192, 8448, 8704, 8960]),
        (12, 0, &[0, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 2560, 2816]),
        (12, 512, &[6144, 6400, 6656, 6912, 7168, 7424, 7680, 7936, 8192, 8448, 8704, 8960]),
    ];
    for (ways, dpa, expected) in vectors {
        let topology = Shape::flat(ways, 1, 256).topology();
        let region = region(&topology);
        for (position, hpa) in expected.iter().enumerate() {
            let device = format!("dev{position}");
            assert_eq!(region.position_of(&device), Some(position));
            assert_eq!(region.encode(&device, dpa), Ok(*hpa), "{ways} ways, dpa {dpa}, position {position}");
            let decoded = region.decode(*hpa).unwrap();
            assert_eq!((decoded.device.as_str(), decoded.dpa), (device.as_str(), dpa));
        }
    }
}

#[test]
fn lower_levels_interleave_at_granularity_times_ways_above() {
    let topology = Shape { switch_ports: 2, ..Shape::flat(2, 2, 256) }.topology();
    let region = region(&topology);
    let levels: Vec<(usize, u64)> = region.levels.iter().map(|level| (level.ways, level.granularity)).collect();
    assert_eq!(levels, [(2, 256), (2, 512), (2, 1024)]);
    // HPA granule 5 = position 5 = host bridge 1, root port (5/2)%2 = 0, switch port (5/4)%2 = 1.
    let decoded = region.decode(5 * 256 + 7).unwrap();
    let targets: Vec<&str> = decoded.hops.iter().map(|hop| hop.target.as_str()).collect();
    assert_eq!(targets, ["hb1", "hb1rp0", "sw1_0p1"]);
    assert_eq!((decoded.position, decoded.dpa), (5, 7));
}

#[test]
fn pmem_follows_the_volatile_partition_in_the_dpa_and_starts_its_own_file() {
    let yaml = "machine: { memory: 1G }\nmemory_backends:\n  - { id: v, size: 512M }\n  - { id: p, size: 256M }\n  - { id: l, size: 1M }\nhost_bridges:\n  - id: hb\n    bus_nr: 10\n    root_ports:\n      - id: rp\n        port: 0\n        chassis: 0\n        slot: 0\n        type3: { id: d, serial: 1, volatile: v, persistent: p, lsa: l }\nfixed_windows:\n  - { targets: [hb], size: 1G }\n";
    let topology = parse_profile("t.yaml", yaml, "t").unwrap();
    let host = &topology.hosts[0];
    let ram = Region::with_members(host, 0, 0, &["d"]).unwrap();
    assert_eq!((ram.mode, ram.size), (RegionMode::Ram, 512 * MIB));
    assert_eq!(backing(host.devices()[0].device, 512 * MIB + 3), Backing { backend: "p".into(), offset: 3 });
    assert_eq!(ram.decode(5).unwrap().backing, Backing { backend: "v".into(), offset: 5 });
}

#[test]
fn a_window_too_small_for_one_decoder_unit_per_device_has_no_region() {
    let topology = Shape { window_size: "256M", ..Shape::flat(2, 1, 256) }.topology();
    let refused = Region::over_window(&topology.hosts[0], 0, 0).unwrap_err();
    assert_eq!(refused, NoRegion::WindowTooSmall { ways: 2, room: 256 * MIB });
    assert!(refused.to_string().contains("each device would get 128M"), "{refused}");
}

#[test]
fn a_granularity_the_host_bridge_cannot_encode_has_no_region() {
    // 4 host bridges at 8 KiB: each host bridge would interleave its 2 ports at 32 KiB.
    let topology = Shape::flat(4, 2, 8192).topology();
    let refused = Region::over_window(&topology.hosts[0], 0, 0).unwrap_err();
    assert_eq!(refused, NoRegion::GranularityNotEncodable { level: "host bridge", granularity: 32 * KIB });
}

#[test]
fn below_a_one_way_window_the_region_is_at_256_unless_another_granularity_is_chosen() {
    // One host bridge, 2 root ports with a 2-port switch each: a one-way 4k window.
    let topology = Shape { switch_ports: 2, ..Shape::flat(1, 2, 4096) }.topology();
    let region = region(&topology);
    assert_eq!(region.granularity, ONE_WAY_GRANULARITY);
    assert_eq!(region.locate(0x105).unwrap(), (1, 0x5));
    let at_4k = region.with_granularity(4096).unwrap();
    let levels: Vec<(usize, u64)> = at_4k.levels.iter().map(|level| (level.ways, level.granularity)).collect();
    assert_eq!(levels, [(1, 4096), (2, 4096), (2, 8192)]);
    assert_eq!(at_4k.locate(0x1005).unwrap(), (1, 0x5));
    assert_eq!(at_4k.with_granularity(100).unwrap_err(), NoRegion::GranularityNotEncodable { level: "the region", granularity: 100 });
}

#[test]
fn an_interleaved_window_fixes_the_region_granularity() {
    let topology = Shape::flat(2, 1, 4096).topology();
    assert_eq!(region(&topology).with_granularity(256).unwrap_err(), NoRegion::GranularityFixed { window: 4096, granularity: 256 });
    assert_eq!(region(&topology).with_granularity(4096).unwrap().granularity, 4096);
}

#[test]
fn members_out_of_position_are_refused_with_the_position() {
    let topology = Shape::flat(2, 2, 256).topology();
    let host = &topology.hosts[0];
    // Canonical: dev0 (hb0rp0), dev2 (hb1rp0), dev1 (hb0rp1), dev3 (hb1rp1).
    assert!(Region::with_members(host, 0, 0, &["dev0", "dev2", "dev1", "dev3"]).is_ok());
    let wrong_bridge = Region::with_members(host, 0, 0, &["dev0", "dev1", "dev2", "dev3"]).unwrap_err();
    assert!(matches!(wrong_bridge, NoRegion::WrongHostBridge { position: 1, .. }), "{wrong_bridge}");
    let swapped = Region::with_members(host, 0, 0, &["dev0", "dev2", "dev0", "dev3"]).unwrap_err();
    assert_eq!(swapped, NoRegion::DuplicateMember("dev0".into()));
}

#[test]
fn a_region_starts_at_the_next_multiple_of_256_mib_times_ways() {
    let topology = Shape { window_size: "4G", ..Shape::flat(3, 1, 256) }.topology();
    let region = Region::over_window(&topology.hosts[0], 0, 4 * GIB + 256 * MIB).unwrap();
    assert_eq!(region.base, 4 * GIB + 512 * MIB);
    assert_eq!(region.size, 768 * MIB);
}

#[test]
fn a_region_placed_where_linux_put_it_decodes_from_there() {
    let topology = Shape::flat(2, 2, 8 * 1024).topology();
    let region = region(&topology).placed_at(0x4_9000_0000).unwrap();
    let first = region.decode(0x4_9000_0000 + 8 * 1024).unwrap();
    assert_eq!((first.position, first.dpa), (1, 0));
    assert_eq!(region.encode(&first.device, 0).unwrap(), 0x4_9000_0000 + 8 * 1024);
    assert!(region.clone().placed_at(0x4_9000_1000).is_none(), "off the 256 MiB unit");
}

#[test]
fn granules_cover_the_region_once() {
    let topology = Shape::flat(2, 1, 16 * 1024).topology();
    let region = region(&topology);
    let granules: Vec<Granule> = region.granules().collect();
    assert_eq!(granules.len() as u64, region.size / region.granularity);
    let mut places: Vec<(String, u64)> = granules.iter().map(|granule| (granule.device.clone(), granule.dpa)).collect();
    places.sort();
    places.dedup();
    assert_eq!(places.len(), granules.len());
}

fn shapes() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    let ways = prop::sample::select(vec![(1, 1), (2, 1), (3, 1), (4, 1), (6, 1), (12, 1), (16, 1), (2, 2), (3, 2), (1, 4), (4, 2)]);
    let granularity = prop::sample::select(vec![256u64, 512, 1024, 2048, 4096]);
    (ways, prop::sample::select(vec![0usize, 2]), granularity).prop_map(|((bridges, ports), switch, granularity)| {
        (bridges, ports, switch, granularity)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// HPA -> (device, DPA) -> HPA is the identity, the walk down the decoders reaches the device
    /// at the HPA's position, and (device, DPA) -> HPA -> (device, DPA) too: a bijection.
    #[test]
    fn decode_and_encode_are_inverse(
        (bridges, ports, switch_ports, granularity) in shapes(),
        window_base in prop::sample::select(vec![0u64, 4 * GIB + 256 * MIB, 5 * GIB]),
        fraction in 0.0f64..1.0,
        dpa_fraction in 0.0f64..1.0,
    ) {
        let shape = Shape { switch_ports, ..Shape::flat(bridges, ports, granularity) };
        let topology = shape.topology();
        // A window base that is no multiple of 3 × 256 MiB checks that the decoders' absolute
        // arithmetic and the endpoint's region-relative one agree for 3, 6 and 12 ways too.
        let Ok(region) = Region::over_window(&topology.hosts[0], 0, window_base) else { return Ok(()) };
        let hpa = region.base + (region.size as f64 * fraction) as u64;
        let decoded = region.decode(hpa).unwrap();
        prop_assert_eq!(&decoded.device, &region.members().nth(decoded.position).unwrap().id);
        prop_assert_eq!(region.encode(&decoded.device, decoded.dpa), Ok(hpa));
        let position = (decoded.position + 1) % region.ways();
        let device = region.members().nth(position).unwrap().id.clone();
        let dpa = (region.per_device() as f64 * dpa_fraction) as u64;
        let back = region.decode(region.encode(&device, dpa).unwrap()).unwrap();
        prop_assert_eq!((back.device, back.dpa), (device, dpa));
    }
}
