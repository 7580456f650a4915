//! The `topology` check: the guest's `cxl list` against the model's expected view, field by field.
//!
//! Both sides become facts, `subject: field = value`, keyed by what identifies a thing in both
//! (a memdev's serial, a host bridge's uid, a switch's host bridge and root port, a root
//! decoder's index), never by the names Linux gives in probe order. The diff names each fact that
//! differs, is missing or is extra.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::expect::ExpectedHost;

/// What the guest is asked: the whole CXL tree, and each root decoder's granularity (which `cxl
/// list` shows only for interleaved decoders).
pub const LISTING_COMMAND: &str = "cxl list -BMPDT";
pub const GRANULARITY_SCRIPT: &str = "grep -H . /sys/bus/cxl/devices/decoder0.*/interleave_granularity || true";

/// `(subject, field) -> value`.
pub type Facts = BTreeMap<(String, String), String>;

/// The facts the model predicts. Dynamic capacity is not in `cxl list -M`'s fields, so it is left
/// to the `dcd` suite.
pub fn expected_facts(host: &ExpectedHost) -> Facts {
    let mut facts = Facts::new();
    for memdev in &host.memdevs {
        let subject = format!("memdev serial {}", memdev.serial);
        put(&mut facts, &subject, "ram_size", memdev.ram_size);
        put(&mut facts, &subject, "pmem_size", memdev.pmem_size);
        put(&mut facts, &subject, "host_bridge_uid", memdev.host_bridge_uid);
    }
    for bridge in &host.host_bridges {
        put(&mut facts, &format!("host bridge uid {}", bridge.uid), "dports", list(&bridge.dports));
    }
    for switch in &host.switches {
        let subject = format!("switch at host bridge {} root port {}", switch.host_bridge_uid, switch.root_port);
        put(&mut facts, &subject, "dports", list(&switch.dports));
    }
    for decoder in &host.root_decoders {
        let subject = format!("root decoder decoder0.{}", decoder.index);
        put(&mut facts, &subject, "size", decoder.size);
        put(&mut facts, &subject, "interleave_ways", decoder.interleave_ways);
        put(&mut facts, &subject, "interleave_granularity", decoder.interleave_granularity);
        put(&mut facts, &subject, "targets", list(&decoder.targets));
        put(&mut facts, &subject, "volatile_capable", decoder.volatile_capable);
        put(&mut facts, &subject, "pmem_capable", decoder.pmem_capable);
    }
    facts
}

/// The facts the guest shows: `listing` is [`LISTING_COMMAND`]'s JSON, `granularities`
/// [`GRANULARITY_SCRIPT`]'s output.
pub fn guest_facts(listing: &Value, granularities: &str) -> Result<Facts, String> {
    let mut facts = Facts::new();
    let buses = listing.as_array().map(Vec::as_slice).unwrap_or_else(|| std::slice::from_ref(listing));
    for bus in buses.iter().filter(|bus| bus.get("bus").is_some()) {
        let uids: BTreeMap<String, u64> =
            items(bus, "dports").iter().filter_map(|dport| Some((text(dport, "dport")?, number(dport, "id")?))).collect();
        for port in keyed(bus, "ports:") {
            let uid = text(port, "host").and_then(|host| uids.get(&host).copied()).ok_or("a host bridge port whose host is no dport of the bus")?;
            put(&mut facts, &format!("host bridge uid {uid}"), "dports", list(&dport_ids(port)));
            host_bridge_port_facts(&mut facts, port, uid);
        }
        for decoder in keyed(bus, "decoders:") {
            root_decoder_facts(&mut facts, decoder);
        }
    }
    for line in granularities.lines() {
        // `/sys/bus/cxl/devices/decoder0.1/interleave_granularity:4096`
        let Some((path, value)) = line.rsplit_once(':') else { continue };
        if let Some(name) = path.split('/').find(|part| part.starts_with("decoder0.")) {
            put(&mut facts, &format!("root decoder {name}"), "interleave_granularity", value.trim());
        }
    }
    Ok(facts)
}

/// Below a host bridge's port: its memdevs and its switches (ports one level down).
fn host_bridge_port_facts(facts: &mut Facts, port: &Value, uid: u64) {
    let root_ports: BTreeMap<String, u64> =
        items(port, "dports").iter().filter_map(|dport| Some((text(dport, "dport")?, number(dport, "id")?))).collect();
    memdev_facts(facts, port, uid);
    for switch in keyed(port, "ports:") {
        let root_port = text(switch, "parent_dport").and_then(|dport| root_ports.get(&dport).copied());
        let root_port = root_port.map_or_else(|| "?".to_owned(), |number| number.to_string());
        put(facts, &format!("switch at host bridge {uid} root port {root_port}"), "dports", list(&dport_ids(switch)));
        memdev_facts(facts, switch, uid);
    }
}

fn memdev_facts(facts: &mut Facts, port: &Value, uid: u64) {
    for memdev in keyed(port, "memdevs:") {
        let subject = format!("memdev serial {}", number(memdev, "serial").unwrap_or(0));
        put(facts, &subject, "ram_size", static_size(number(memdev, "ram_size").unwrap_or(0)));
        put(facts, &subject, "pmem_size", number(memdev, "pmem_size").unwrap_or(0));
        put(facts, &subject, "host_bridge_uid", uid);
    }
}

/// A partition size as the model means it. Linux (7.3) shows `ram_size` 1 for a device with no
/// static partition (a dynamic-capacity-only device): `cxl_ram_size()` reads partition 0 without
/// checking that there is one, and the unset partition is a RAM one (mode 0) spanning 0..=0. No
/// real capacity is one byte (it comes in 256 MiB units), so 1 means none.
fn static_size(size: u64) -> u64 {
    if size == 1 {
        0
    } else {
        size
    }
}

fn root_decoder_facts(facts: &mut Facts, decoder: &Value) {
    let subject = format!("root decoder {}", text(decoder, "decoder").unwrap_or_default());
    put(facts, &subject, "size", number(decoder, "size").unwrap_or(0));
    put(facts, &subject, "interleave_ways", number(decoder, "interleave_ways").unwrap_or(0));
    let mut targets: Vec<(u64, u64)> =
        items(decoder, "targets").iter().filter_map(|target| Some((number(target, "position")?, number(target, "id")?))).collect();
    targets.sort_unstable();
    put(facts, &subject, "targets", list(&targets.iter().map(|(_, id)| *id).collect::<Vec<_>>()));
    for capability in ["volatile_capable", "pmem_capable"] {
        put(facts, &subject, capability, decoder.get(capability).and_then(Value::as_bool).unwrap_or(false));
    }
}

/// One line per fact that differs: `memdev serial 100: pmem_size: expected 536870912, guest 0`.
pub fn diff(expected: &Facts, guest: &Facts) -> Vec<String> {
    let mut lines = Vec::new();
    for ((subject, field), want) in expected {
        match guest.get(&(subject.clone(), field.clone())) {
            Some(have) if have == want => {}
            Some(have) => lines.push(format!("{subject}: {field}: expected {want}, guest {have}")),
            None => lines.push(format!("{subject}: {field}: expected {want}, guest has none")),
        }
    }
    for ((subject, field), have) in guest {
        if !expected.contains_key(&(subject.clone(), field.clone())) {
            lines.push(format!("{subject}: {field}: not in the model, guest {have}"));
        }
    }
    lines
}

fn put(facts: &mut Facts, subject: &str, field: &str, value: impl ToString) {
    facts.insert((subject.to_owned(), field.to_owned()), value.to_string());
}

fn list<T: ToString>(values: &[T]) -> String {
    let words: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", words.join(", "))
}

fn dport_ids(port: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = items(port, "dports").iter().filter_map(|dport| number(dport, "id")).collect();
    ids.sort_unstable();
    ids
}

/// The arrays of `value` under keys starting with `prefix` (`ports:root0`, `memdevs:port1`).
fn keyed<'a>(value: &'a Value, prefix: &str) -> Vec<&'a Value> {
    let Some(object) = value.as_object() else { return Vec::new() };
    object.iter().filter(|(key, _)| key.starts_with(prefix)).flat_map(|(_, items)| items.as_array().into_iter().flatten()).collect()
}

fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A number as `cxl list` prints it: a JSON number, or a hex string with `-u`.
fn number(value: &Value, key: &str) -> Option<u64> {
    match value.get(key)? {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => u64::from_str_radix(text.strip_prefix("0x")?, 16).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::expect::expected_view;

    /// What the seed's guest printed for `cxl list -BMPDT` and the granularity (Debian's 7.3.4 kernel).
    const SEED_LISTING: &str = r#"[{"bus":"root0","provider":"ACPI.CXL","nr_dports":1,
        "dports":[{"dport":"pci0000:0c","alias":"ACPI0016:00","id":12}],
        "ports:root0":[{"port":"port1","host":"pci0000:0c","depth":1,"decoders_committed":0,"nr_dports":1,
          "dports":[{"dport":"0000:0c:00.0","id":0}],
          "memdevs:port1":[{"memdev":"mem0","pmem_size":536870912,"serial":100,"host":"0000:0d:00.0"}]}],
        "decoders:root0":[{"decoder":"decoder0.0","resource":19595788288,"size":4294967296,"interleave_ways":1,
          "pmem_capable":true,"volatile_capable":true,"nr_targets":1,
          "targets":[{"target":"pci0000:0c","alias":"ACPI0016:00","position":0,"id":12}]}]}]"#;
    const SEED_GRANULARITY: &str = "/sys/bus/cxl/devices/decoder0.0/interleave_granularity:256\n";

    fn expected(profile: &str) -> Facts {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../profiles/{profile}.yaml"));
        let topology = crate::profile::load_topology(&path).unwrap();
        expected_facts(&expected_view(&topology).hosts[0])
    }

    fn seed_expected() -> Facts {
        expected("seed")
    }

    #[test]
    fn the_switch_guest_matches_its_model() {
        // What the switch profile's guest printed (Debian's 7.3.4 kernel): four memdevs below a
        // switch's downstream ports, the switch below root port 0.
        let listing: Value = serde_json::from_str(include_str!("testdata/switch-cxl-list.json")).unwrap();
        let guest = guest_facts(&listing, include_str!("testdata/switch-granularity.txt")).unwrap();
        assert!(guest.contains_key(&("switch at host bridge 12 root port 0".to_owned(), "dports".to_owned())), "{guest:?}");
        assert_eq!(diff(&expected("switch"), &guest), Vec::<String>::new());
    }

    #[test]
    fn the_seed_guest_matches_its_model() {
        let guest = guest_facts(&serde_json::from_str(SEED_LISTING).unwrap(), SEED_GRANULARITY).unwrap();
        assert_eq!(diff(&seed_expected(), &guest), Vec::<String>::new());
    }

    #[test]
    fn a_device_without_static_capacity_has_no_ram() {
        // What Linux 7.3.4 printed for the dcd profile's device (both stacks): `ram_size` 1.
        let listing = r#"[{"bus":"root0","dports":[{"dport":"pci0000:0b","id":11}],
            "ports:root0":[{"port":"port1","host":"pci0000:0b","dports":[{"dport":"0000:0b:00.0","id":0}],
              "memdevs:port1":[{"memdev":"mem0","ram_size":1,"ram_qos_class":0,"serial":99,"host":"0000:0c:00.0"}]}]}]"#;
        let guest = guest_facts(&serde_json::from_str(listing).unwrap(), "").unwrap();
        assert_eq!(guest[&("memdev serial 99".to_owned(), "ram_size".to_owned())], "0");
        let expected = expected("dcd");
        assert_eq!(expected[&("memdev serial 99".to_owned(), "ram_size".to_owned())], "0");
    }

    #[test]
    fn a_difference_is_named_field_by_field() {
        let smaller = SEED_LISTING.replace("536870912", "268435456").replace(r#""id":0}"#, r#""id":1}"#);
        let guest = guest_facts(&serde_json::from_str(&smaller).unwrap(), "").unwrap();
        assert_eq!(
            diff(&seed_expected(), &guest),
            [
                "host bridge uid 12: dports: expected [0], guest [1]",
                "memdev serial 100: pmem_size: expected 536870912, guest 268435456",
                "root decoder decoder0.0: interleave_granularity: expected 256, guest has none",
            ]
        );
    }
}
