//! The `regions` check's guest side, as commands and readers of their output: for each window the
//! model gives a region (`expect::RegionPlan`), `cxl create-region` over its devices (named from
//! their serials), the region checked against the plan, a DAX device on it (a devdax namespace
//! on a pmem region; the region's own on a RAM one), a pattern through it, a RAM region onlined
//! as a new NUMA node (a node with memory), and the region taken away again.

use std::collections::BTreeMap;

use serde_json::Value;

/// Where `lab run` puts the lab's guest program.
pub const GUEST_TOOL: &str = "/usr/local/bin/cxl-lab-guest";
/// How much of the DAX device the pattern covers: eight of its 2 MiB alignment units.
pub const PATTERN_BYTES: u64 = 16 << 20;
/// Counts the guest's NUMA nodes that have memory (a CXL window's node exists, empty, before
/// its memory is onlined).
pub const NODE_COUNT_SCRIPT: &str = "grep -l 'MemTotal: *[1-9]' /sys/devices/system/node/node*/meminfo | wc -l";

/// A region the model plans, as the guest is asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned<'a> {
    pub decoder: usize,
    pub mode: &'a str,
    pub serials: &'a [u64],
    pub ways: usize,
    pub granularity: u64,
    pub size: u64,
}

/// Serial → memdev name, from `cxl list -M`.
pub fn memdev_names(listing: &Value) -> BTreeMap<u64, String> {
    listing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|memdev| Some((memdev.get("serial")?.as_u64()?, memdev.get("memdev")?.as_str()?.to_owned())))
        .collect()
}

/// `cxl create-region` for the plan, the devices named by their serials' current names.
pub fn create_command(plan: &Planned, names: &BTreeMap<u64, String>) -> Result<String, String> {
    let memdevs = plan
        .serials
        .iter()
        .map(|serial| names.get(serial).cloned().ok_or_else(|| format!("the guest shows no memdev with serial {serial}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        "cxl create-region -d decoder0.{} -t {} -m -w {} -g {} -s {} {}",
        plan.decoder,
        plan.mode,
        plan.ways,
        plan.granularity,
        plan.size,
        memdevs.join(" ")
    ))
}

/// The created region's name when `cxl create-region`'s JSON matches the plan.
pub fn check_created(plan: &Planned, created: &Value) -> Result<String, String> {
    let region = created_region(created);
    let name = created_name(created).ok_or_else(|| format!("`cxl create-region` printed no region: {created}"))?;
    let number = |field: &str| region.get(field).and_then(Value::as_u64);
    let mut wrong = Vec::new();
    for (field, want) in [("size", plan.size), ("interleave_ways", plan.ways as u64), ("interleave_granularity", plan.granularity)] {
        if number(field) != Some(want) {
            wrong.push(format!("{field}: expected {want}, guest {}", region.get(field).unwrap_or(&Value::Null)));
        }
    }
    if region.get("decode_state").and_then(Value::as_str) != Some("commit") {
        wrong.push(format!("decode_state: expected commit, guest {}", region.get("decode_state").unwrap_or(&Value::Null)));
    }
    if wrong.is_empty() {
        Ok(name.to_owned())
    } else {
        Err(format!("{name} differs from the plan: {}", wrong.join("; ")))
    }
}

/// The region `cxl create-region` printed (it prints a list of one or the region itself).
fn created_region(created: &Value) -> &Value {
    created.as_array().and_then(|regions| regions.first()).unwrap_or(created)
}

/// The name of the region `cxl create-region` printed, if it printed one.
pub fn created_name(created: &Value) -> Option<&str> {
    created_region(created).get("region").and_then(Value::as_str)
}

/// Sets `nd` to the nvdimm region Linux made of the pmem CXL `region` (the one at its address).
fn nd_region_of(region: &str) -> String {
    format!(
        "nd=; at=$(($(cat /sys/bus/cxl/devices/{region}/resource))); \
         for r in /sys/bus/nd/devices/region*; do [ $(($(cat $r/resource))) -eq $at ] && nd=$(basename $r); done; \
         test -n \"$nd\" || {{ echo \"no nvdimm region at the address of {region}\" >&2; exit 1; }}"
    )
}

/// Prints the name of a DAX device on `region` (`dax0.1`): a devdax namespace on a pmem region's
/// nvdimm region, or the DAX device Linux gives a RAM region.
pub fn dax_script(mode: &str, region: &str) -> String {
    if mode == "pmem" {
        format!(
            "{}; ndctl create-namespace -f -r $nd -m devdax | sed -n 's/.*\"chardev\":\"\\(dax[0-9.]*\\)\".*/\\1/p'",
            nd_region_of(region)
        )
    } else {
        // Linux adds the region's DAX device a moment after the region commits.
        format!(
            "for i in $(seq 50); do d=$(ls -d /sys/bus/cxl/devices/{region}/dax_{region}/dax*.* 2>/dev/null | head -n 1); \
             [ -n \"$d\" ] && break; sleep 0.2; done; \
             test -n \"$d\" || {{ echo \"no DAX device on {region} after 10 s\" >&2; exit 1; }}; basename $d"
        )
    }
}

/// Prints the name of a block device (`pmem0`) on a raw namespace over all of the pmem
/// `region`: a raw namespace keeps no info block, so its first byte is the region's.
pub fn raw_namespace_script(region: &str) -> String {
    format!(
        "{}; ndctl create-namespace -f -r $nd -m raw | sed -n 's/.*\"blockdev\":\"\\(pmem[0-9.]*\\)\".*/\\1/p'",
        nd_region_of(region)
    )
}

/// Gives a RAM region's DAX device back to device DAX (from kmem, if Linux onlined it already).
pub fn devdax_command(dax: &str) -> String {
    format!("daxctl reconfigure-device --mode=devdax --force {dax}")
}

/// Onlines a RAM region's DAX device as system RAM (kmem).
pub fn online_command(dax: &str) -> String {
    format!("daxctl reconfigure-device --mode=system-ram --force {dax}")
}

/// Takes the region away again, so the suite can run again on the lab: a pmem region's
/// namespaces first; a RAM region's memory offlined first (its DAX device back to devdax).
pub fn teardown_script(mode: &str, region: &str, dax: Option<&str>) -> String {
    match (mode, dax) {
        ("pmem", _) => format!("{}; ndctl destroy-namespace -f all -r $nd && cxl destroy-region -f {region}", nd_region_of(region)),
        (_, Some(dax)) => format!("{} >/dev/null && cxl destroy-region -f {region}", devdax_command(dax)),
        (_, None) => format!("cxl destroy-region -f {region}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: Planned = Planned { decoder: 0, mode: "pmem", serials: &[100], ways: 1, granularity: 256, size: 512 << 20 };

    #[test]
    fn devices_are_named_by_serial() {
        let names = memdev_names(&serde_json::json!([{"memdev": "mem1", "serial": 100}, {"memdev": "mem0", "serial": 101}]));
        assert_eq!(create_command(&PLAN, &names).unwrap(), "cxl create-region -d decoder0.0 -t pmem -m -w 1 -g 256 -s 536870912 mem1");
        assert_eq!(create_command(&PLAN, &BTreeMap::new()).unwrap_err(), "the guest shows no memdev with serial 100");
    }

    #[test]
    fn the_created_region_is_checked_against_the_plan() {
        let created = serde_json::json!({"region": "region0", "size": 536870912u64, "interleave_ways": 1, "interleave_granularity": 256, "decode_state": "commit"});
        assert_eq!(check_created(&PLAN, &created).unwrap(), "region0");
        let smaller = serde_json::json!({"region": "region0", "size": 268435456u64, "interleave_ways": 1, "interleave_granularity": 256, "decode_state": "reset"});
        assert_eq!(
            check_created(&PLAN, &smaller).unwrap_err(),
            "region0 differs from the plan: size: expected 536870912, guest 268435456; decode_state: expected commit, guest \"reset\""
        );
    }
}
