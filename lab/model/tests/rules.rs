//! Every rejection rule of profile validation, each with a bad profile and the exact message
//! (file, line, column, field, text).

use cxl_lab_model::parse_profile;
use cxl_lab_model::validate::id_wellformed;

/// Validates `source` as `bad.yaml` and returns all error lines.
fn errors(source: &str) -> String {
    match parse_profile("bad.yaml", source, "bad") {
        Ok(_) => panic!("profile was accepted:\n{source}"),
        Err(errors) => errors.to_string(),
    }
}

/// A valid one-device host; tests append or replace parts of it.
const MACHINE: &str = "machine: {memory: 2G, maxmem: 8G}\n";

#[test]
fn accepts_a_minimal_profile() {
    let source = format!(
        "{MACHINE}memory_backends: [{{id: m0, size: 256M}}]
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - {{id: rp0, port: 0, chassis: 0, slot: 0, type3: {{id: d0, serial: 1, volatile: m0}}}}
fixed_windows: [{{targets: [hb0], size: 4G}}]
"
    );
    let topology = parse_profile("good.yaml", &source, "good").unwrap();
    assert_eq!(topology.name, "good");
    assert_eq!(topology.hosts[0].windows[0].granularity, 256);
}

#[test]
fn rejects_duplicate_ids() {
    let source = format!(
        "{MACHINE}host_bridges:
  - id: hb0
    bus_nr: 12
  - id: hb0
    bus_nr: 13
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:5:9: host_bridges[1].id: duplicate id `hb0` (first used by a host bridge at line 3)"
    );
}

#[test]
fn rejects_bus_zero() {
    let source = format!(
        "{MACHINE}host_bridges:
  - id: hb0
    bus_nr: 0
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:4:13: host_bridges[0].bus_nr: bus 0 is the machine's main PCI bus (pcie.0): a host bridge needs a bus of its own"
    );
}

#[test]
fn rejects_duplicate_bus_nr() {
    let source = format!(
        "{MACHINE}host_bridges:
  - id: hb0
    bus_nr: 12
  - id: hb1
    bus_nr: 12
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:6:13: host_bridges[1].bus_nr: bus_nr 12 is already used by host bridge `hb0` (line 4)"
    );
}

#[test]
fn rejects_duplicate_chassis_slot_across_the_machine() {
    let source = format!(
        "{MACHINE}host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports: [{{id: rp0, port: 0, chassis: 1, slot: 2}}]
  - id: hb1
    bus_nr: 13
    root_ports: [{{id: rp1, port: 0, chassis: 1, slot: 2}}]
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:8:55: host_bridges[1].root_ports[0].slot: chassis 1 slot 2 is already used by `rp0` (line 5)"
    );
}

#[test]
fn rejects_duplicate_ports_on_one_bus() {
    let source = format!(
        "{MACHINE}host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - {{id: rp0, port: 3, chassis: 0, slot: 0}}
      - {{id: rp1, port: 3, chassis: 0, slot: 1}}
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:7:25: host_bridges[0].root_ports[1].port: port 3 is already used on bus `hb0` by `rp0` (line 6)"
    );
}

#[test]
fn rejects_window_targets_that_are_not_host_bridges() {
    let source = format!(
        "{MACHINE}host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports: [{{id: rp0, port: 0, chassis: 0, slot: 0}}]
fixed_windows:
  - {{targets: [rp0], size: 4G}}
  - {{targets: [nowhere], size: 4G}}
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:7:16: fixed_windows[0].targets[0]: window target `rp0` is a root port, not a host bridge\n\
         bad.yaml:8:16: fixed_windows[1].targets[0]: window target `nowhere` is not a host bridge of this host"
    );
}

#[test]
fn rejects_target_counts_qemu_does_not_support() {
    let source = "machine: {memory: 2G}
host_bridges:
  - {id: a, bus_nr: 1}
  - {id: b, bus_nr: 2}
  - {id: c, bus_nr: 3}
  - {id: d, bus_nr: 4}
  - {id: e, bus_nr: 5}
fixed_windows:
  - {targets: [a, b, c, d, e], size: 4G}
";
    assert_eq!(
        errors(source),
        "bad.yaml:9:15: fixed_windows[0].targets: 5 targets: QEMU interleaves 1, 2, 4, 8 or 16 host bridges (3, 6 or 12 since QEMU 10.0)"
    );
}

#[test]
fn rejects_sizes_that_are_not_multiples_of_256_mib() {
    let source = format!(
        "{MACHINE}memory_backends: [{{id: m0, size: 300M}}]
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - {{id: rp0, port: 0, chassis: 0, slot: 0, type3: {{id: d0, serial: 1, volatile: m0}}}}
fixed_windows: [{{targets: [hb0], size: 1000M}}]
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:7:86: host_bridges[0].root_ports[0].type3.volatile: memory backend `m0` is 300M, not a multiple of 256 MiB\n\
         bad.yaml:8:40: fixed_windows[0].size: window size 1000M is not a multiple of 256 MiB"
    );
}

#[test]
fn rejects_granularities_outside_256_bytes_to_16_kib() {
    let source = format!(
        "{MACHINE}host_bridges: [{{id: hb0, bus_nr: 12}}]
fixed_windows:
  - {{targets: [hb0], size: 1G, granularity: 128}}
  - {{targets: [hb0], size: 1G, granularity: 32k}}
  - {{targets: [hb0], size: 1G, granularity: 3k}}
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:4:45: fixed_windows[0].granularity: interleave granularity 128 is not one of 256, 512, 1k, 2k, 4k, 8k, 16k\n\
         bad.yaml:5:45: fixed_windows[1].granularity: interleave granularity 32k is not one of 256, 512, 1k, 2k, 4k, 8k, 16k\n\
         bad.yaml:6:45: fixed_windows[2].granularity: interleave granularity 3k is not one of 256, 512, 1k, 2k, 4k, 8k, 16k"
    );
}

#[test]
fn rejects_persistent_memory_without_a_label_area() {
    let source = format!(
        "{MACHINE}memory_backends: [{{id: m0, size: 256M}}]
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - id: rp0
        port: 0
        chassis: 0
        slot: 0
        type3: {{id: d0, serial: 1, persistent: m0}}
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:11:48: host_bridges[0].root_ports[0].type3.persistent: persistent memory needs a label area: add `lsa: <backend id>`"
    );
}

#[test]
fn rejects_a_memory_backend_used_twice() {
    let source = format!(
        "{MACHINE}memory_backends: [{{id: m0, size: 256M}}]
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - {{id: rp0, port: 0, chassis: 0, slot: 0, type3: {{id: d0, serial: 1, volatile: m0}}}}
      - {{id: rp1, port: 1, chassis: 0, slot: 1, type3: {{id: d1, serial: 2, volatile: m0}}}}
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:8:86: host_bridges[0].root_ports[1].type3.volatile: memory backend `m0` is already used by `d0` (line 7)"
    );
}

#[test]
fn rejects_a_backend_shared_by_two_hosts_unless_marked_shared() {
    let host = |name: &str| {
        format!(
            "  - name: {name}
    machine: {{memory: 1G, maxmem: 2G}}
    host_bridges:
      - id: hb0
        bus_nr: 12
        root_ports: [{{id: rp0, port: 0, chassis: 0, slot: 0, type3: {{id: d0, serial: 1, volatile: m0}}}}]
"
        )
    };
    let unshared = format!("memory_backends: [{{id: m0, size: 256M}}]\nhosts:\n{}{}", host("a"), host("b"));
    assert_eq!(
        errors(&unshared),
        "bad.yaml:14:99: hosts[1].host_bridges[0].root_ports[0].type3.volatile: memory backend `m0` is already used by host `a` (line 8); mark it `shared: true` to share it"
    );
    let shared = unshared.replace("size: 256M}", "size: 256M, shared: true}");
    assert_eq!(parse_profile("ok.yaml", &shared, "ok").unwrap().hosts.len(), 2);
}

#[test]
fn rejects_dynamic_capacity_with_0_or_more_than_8_regions() {
    for regions in [0, 9] {
        let source = format!(
            "{MACHINE}memory_backends: [{{id: dc, size: 4G}}]
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - id: rp0
        port: 0
        chassis: 0
        slot: 0
        type3: {{id: d0, serial: 1, dynamic_capacity: {{backend: dc, regions: {regions}}}}}
"
        );
        assert_eq!(
            errors(&source),
            format!("bad.yaml:11:77: host_bridges[0].root_ports[0].type3.dynamic_capacity.regions: dynamic capacity has {regions} regions; QEMU supports 1 to 8")
        );
    }
}

#[test]
fn rejects_dynamic_capacity_not_a_multiple_of_regions_times_256_mib() {
    let source = format!(
        "{MACHINE}memory_backends: [{{id: dc, size: 768M}}]
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - id: rp0
        port: 0
        chassis: 0
        slot: 0
        type3: {{id: d0, serial: 1, dynamic_capacity: {{backend: dc, regions: 2}}}}
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:11:64: host_bridges[0].root_ports[0].type3.dynamic_capacity.backend: dynamic capacity backend `dc` is 768M, not a multiple of 2 regions × 256 MiB (512M)"
    );
}

#[test]
fn rejects_a_second_switch_level() {
    let source = format!(
        "{MACHINE}host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - id: rp0
        port: 0
        chassis: 0
        slot: 0
        switch:
          id: sw0
          downstream_ports:
            - id: dp0
              port: 0
              chassis: 0
              slot: 1
              switch: {{id: sw1}}
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:17:23: host_bridges[0].root_ports[0].switch.downstream_ports[0].switch: a switch below a switch: QEMU emulates one switch level only"
    );
}

#[test]
fn rejects_windows_that_do_not_fit_maxmem() {
    let source = "machine: {memory: 2G, maxmem: 4G}
host_bridges: [{id: hb0, bus_nr: 12}]
fixed_windows: [{targets: [hb0], size: 4G}]
";
    assert_eq!(
        errors(source),
        "bad.yaml:1:31: machine.maxmem: the fixed windows need 4G but maxmem 4G minus memory 2G leaves 2G"
    );
}

#[test]
fn reports_yaml_type_errors_and_unknown_fields_with_their_location() {
    let unknown = format!("{MACHINE}host_bridges: [{{id: hb0, bus_number: 12}}]\n");
    let message = errors(&unknown);
    assert!(message.starts_with("bad.yaml:2:26: (yaml): unknown field `bus_number`, expected one of id, bus_nr, hdm_for_passthrough, root_ports"), "{message}");
    let wrong_type = format!("{MACHINE}host_bridges: [{{id: hb0, bus_nr: twelve}}]\n");
    let message = errors(&wrong_type);
    assert!(message.starts_with("bad.yaml:2:34: (yaml): "), "{message}");
}

#[test]
fn reports_every_broken_rule_not_just_the_first() {
    let source = format!(
        "{MACHINE}host_bridges:
  - {{id: hb0, bus_nr: 12}}
  - {{id: hb0, bus_nr: 12}}
"
    );
    assert_eq!(errors(&source).lines().count(), 2);
}

#[test]
fn id_wellformed_is_qemus_rule() {
    for good in ["a", "cxl.1", "root_port13", "cxl-mem0", "Z9-._"] {
        assert!(id_wellformed(good), "{good}");
    }
    for bad in ["", "1a", "-a", ".a", "_a", "a,b", "a=b", "a b", "a/b", "a\nb", "é", "aé"] {
        assert!(!id_wellformed(bad), "{bad:?}");
    }
}

#[test]
fn rejects_ids_that_are_not_qemu_identifiers() {
    let source = format!(
        "{MACHINE}memory_backends: [{{id: \"mem0,share=off,mem-path=/etc/passwd\", size: 256M}}]
host_bridges:
  - id: ../../etc/x
    bus_nr: 12
    root_ports:
      - id: root port
        port: 0
        chassis: 0
        slot: 0
        switch:
          id: .us0
          downstream_ports:
            - {{id: dp0, port: 0, chassis: 0, slot: 1, type3: {{id: \"d0\\n-x\", serial: 1, volatile: \"mem0,share=off,mem-path=/etc/passwd\"}}}}
"
    );
    let rule = "is not a QEMU identifier: a letter first, then only letters, digits, `-`, `.` or `_`";
    assert_eq!(
        errors(&source),
        format!(
            "bad.yaml:2:24: memory_backends[0].id: memory backend id `mem0,share=off,mem-path=/etc/passwd` {rule}\n\
             bad.yaml:4:9: host_bridges[0].id: id `../../etc/x` {rule}\n\
             bad.yaml:7:13: host_bridges[0].root_ports[0].id: id `root port` {rule}\n\
             bad.yaml:12:15: host_bridges[0].root_ports[0].switch.id: id `.us0` {rule}\n\
             bad.yaml:14:67: host_bridges[0].root_ports[0].switch.downstream_ports[0].type3.id: id `d0\\n-x` {rule}"
        )
    );
}

#[test]
fn rejects_backend_ids_too_long_for_a_file_name() {
    let id = "m".repeat(251);
    let source = format!("{MACHINE}memory_backends: [{{id: {id}, size: 256M}}]\nhost_bridges: []\n");
    assert_eq!(
        errors(&source),
        "bad.yaml:2:24: memory_backends[0].id: memory backend id is 251 bytes, more than 250: its file `<id>.raw` must stay below 255 bytes"
    );
    let fits = source.replace(&id, &"m".repeat(250));
    assert!(parse_profile("ok.yaml", &fits, "ok").is_ok());
}

#[test]
fn rejects_host_names_that_leave_the_lab_directory() {
    let host = |name: &str| format!("  - name: {name}\n    machine: {{memory: 1G, maxmem: 2G}}\n");
    let long = "h".repeat(33);
    let source = format!("hosts:\n{}{}{}{}", host("../.."), host("\"\""), host(".h"), host(&long));
    let rule = "is not a QEMU identifier: a letter first, then only letters, digits, `-`, `.` or `_`";
    assert_eq!(
        errors(&source),
        format!(
            "bad.yaml:2:11: hosts[0].name: host name `../..` {rule}\n\
             bad.yaml:4:11: hosts[1].name: host name is empty\n\
             bad.yaml:6:11: hosts[2].name: host name `.h` {rule}\n\
             bad.yaml:8:11: hosts[3].name: host name is 33 bytes, more than 32: it names the directory of the host's unix sockets, whose paths must stay below 108 bytes"
        )
    );
}

#[test]
fn rejects_profile_names_that_are_not_qemu_identifiers() {
    let body = format!("{MACHINE}host_bridges: []\n");
    let named = format!("name: lab,debug-threads=on\n{body}");
    assert_eq!(
        errors(&named),
        "bad.yaml:1:7: name: profile name `lab,debug-threads=on` is not a QEMU identifier: a letter first, then only letters, digits, `-`, `.` or `_`"
    );
    // Without `name:` the file name is the profile name, and obeys the same rule.
    let Err(from_file) = parse_profile("my lab.yaml", &body, "my lab") else { panic!("accepted") };
    assert_eq!(
        from_file.to_string(),
        "my lab.yaml:1:1: name: profile name `my lab` is not a QEMU identifier: a letter first, then only letters, digits, `-`, `.` or `_` (it comes from the file name; set `name:`)"
    );
}

#[test]
fn rejects_zero_cpus_slots_and_memory() {
    let source = "machine: {memory: 0, maxmem: 8G, cpus: 0, slots: 0}\nhost_bridges: []\n";
    assert_eq!(
        errors(source),
        "bad.yaml:1:19: machine.memory: memory must not be zero\n\
         bad.yaml:1:40: machine.cpus: cpus must be at least 1\n\
         bad.yaml:1:50: machine.slots: slots must be at least 1"
    );
}

#[test]
fn rejects_an_empty_host_list() {
    assert_eq!(errors("hosts: []\n"), "bad.yaml:1:8: hosts: `hosts:` is empty: a profile needs at least one host");
}

#[test]
fn rejects_no_room_above_memory_for_the_memory_slots() {
    assert_eq!(
        errors("machine: {memory: 2G}\nhost_bridges: []\n"),
        "bad.yaml:1:10: machine: no fixed window and no `maxmem`: QEMU refuses memory slots without room above memory; set `maxmem` above 2G"
    );
    assert_eq!(
        errors("machine: {memory: 2G, maxmem: 2G}\nhost_bridges: []\n"),
        "bad.yaml:1:31: machine.maxmem: maxmem 2G equals memory and no fixed window needs room: QEMU refuses memory slots without room above memory"
    );
}

#[test]
fn rejects_kernel_cmdline_words_with_whitespace_or_control_characters() {
    let source = format!(
        "{MACHINE}host_bridges: []
kernel_cmdline:
  - cxl_acpi.dyndbg=+fplm
  - console=ttyS0 init=/bin/sh
  - \"quiet\\ninit=/bin/sh\"
  - \"\"
  - \"loglevel=7\\u0000\"
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:5:5: kernel_cmdline[1]: kernel command line word `console=ttyS0 init=/bin/sh` is empty or holds whitespace: each item is one kernel parameter\n\
         bad.yaml:6:5: kernel_cmdline[2]: kernel command line word `quiet\\ninit=/bin/sh` holds a control character\n\
         bad.yaml:7:5: kernel_cmdline[3]: kernel command line word `` is empty or holds whitespace: each item is one kernel parameter\n\
         bad.yaml:8:5: kernel_cmdline[4]: kernel command line word `loglevel=7\\0` holds a control character"
    );
}

#[test]
fn boot_is_lean_unless_the_profile_says_full_and_anything_else_is_refused_where_written() {
    let lean = parse_profile("good.yaml", &format!("{MACHINE}host_bridges: []\n"), "good").unwrap();
    assert_eq!(lean.boot, cxl_lab_model::BootMode::Lean);
    let full = parse_profile("good.yaml", &format!("{MACHINE}host_bridges: []\nboot: full\n"), "good").unwrap();
    assert_eq!(full.boot, cxl_lab_model::BootMode::Full);
    let message = errors(&format!("{MACHINE}host_bridges: []\nboot: fast\n"));
    assert!(message.starts_with("bad.yaml:3:7: (yaml): "), "{message}");
    assert!(message.contains("fast") && message.contains("lean") && message.contains("full"), "{message}");
}

#[test]
fn rejects_capabilities_on_memory_that_is_not_volatile() {
    let source = format!(
        "{MACHINE}memory_backends:
  - {{id: v, size: 256M, capabilities: true}}
  - {{id: p, size: 256M, capabilities: true}}
  - {{id: l, size: 1M, capabilities: true}}
  - {{id: dc, size: 256M, capabilities: true}}
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports:
      - {{id: rp0, port: 0, chassis: 0, slot: 0, type3: {{id: d0, serial: 1, volatile: v}}}}
      - {{id: rp1, port: 1, chassis: 0, slot: 1, type3: {{id: d1, serial: 2, persistent: p, lsa: l}}}}
      - {{id: rp2, port: 2, chassis: 0, slot: 2, type3: {{id: d2, serial: 3, dynamic_capacity: {{backend: dc, regions: 1}}}}}}
"
    );
    let why = "only a device's `volatile` memory is capability-checked (grants name device physical addresses, which are byte offsets of the file only there)";
    let unused = "but no type-3 device uses it as `volatile` memory";
    assert_eq!(
        errors(&source),
        format!(
            "bad.yaml:4:39: memory_backends[1].capabilities: memory backend `p` has `capabilities: true` {unused}\n\
             bad.yaml:5:37: memory_backends[2].capabilities: memory backend `l` has `capabilities: true` {unused}\n\
             bad.yaml:6:40: memory_backends[3].capabilities: memory backend `dc` has `capabilities: true` {unused}\n\
             bad.yaml:12:88: host_bridges[0].root_ports[1].type3.persistent: memory backend `p` has `capabilities: true`: {why}\n\
             bad.yaml:12:96: host_bridges[0].root_ports[1].type3.lsa: memory backend `l` has `capabilities: true`: {why}\n\
             bad.yaml:13:104: host_bridges[0].root_ports[2].type3.dynamic_capacity.backend: memory backend `dc` has `capabilities: true`: {why}"
        )
    );
}

#[test]
fn rejects_a_capability_backend_no_device_uses() {
    let source = format!("{MACHINE}memory_backends: [{{id: m0, size: 256M, capabilities: true}}]\nhost_bridges: []\n");
    assert_eq!(
        errors(&source),
        "bad.yaml:2:54: memory_backends[0].capabilities: memory backend `m0` has `capabilities: true` but no type-3 device uses it as `volatile` memory"
    );
    let off = source.replace("capabilities: true", "capabilities: false");
    assert!(parse_profile("ok.yaml", &off, "ok").unwrap().capability_backends().next().is_none());
}

// The third capability rule, at most 65,535 devices per backend (16-bit requester ids, 0 is
// nobody), is `validate`'s unit test: a profile with 65,536 hosts is beyond the YAML parser's
// node budget.

#[test]
fn rejects_capability_backend_ids_too_long_for_its_socket_paths() {
    let id = "m".repeat(19);
    let source = format!(
        "{MACHINE}memory_backends: [{{id: {id}, size: 256M, capabilities: true}}]
host_bridges:
  - id: hb0
    bus_nr: 12
    root_ports: [{{id: rp0, port: 0, chassis: 0, slot: 0, type3: {{id: d0, serial: 1, volatile: {id}}}}}]
"
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:2:24: memory_backends[0].id: memory backend id is 19 bytes, more than 18: with `capabilities: true` it names the directory of its capability service's unix sockets, whose paths must stay below 108 bytes"
    );
    assert!(parse_profile("ok.yaml", &source.replace(&id, &"m".repeat(18)), "ok").is_ok());
    assert!(parse_profile("ok.yaml", &source.replace(", capabilities: true", ""), "ok").is_ok());
}

#[test]
fn rejects_a_host_named_like_the_capability_directory() {
    let host = |name: &str| {
        format!(
            "  - name: {name}
    machine: {{memory: 1G, maxmem: 2G}}
    host_bridges: [{{id: hb0, bus_nr: 12, root_ports: [{{id: rp0, port: 0, chassis: 0, slot: 0, type3: {{id: d0, serial: 1, volatile: m0}}}}]}}]
"
        )
    };
    let source = format!(
        "memory_backends: [{{id: m0, size: 256M, shared: true, capabilities: true}}]\nhosts:\n{}{}",
        host("host0"),
        host("capability")
    );
    assert_eq!(
        errors(&source),
        "bad.yaml:6:11: hosts[1].name: host name `capability` is taken by the capability services' directory beside the hosts' run directories (the profile has a `capabilities: true` backend)"
    );
    let without = source.replace(", capabilities: true", "");
    assert_eq!(parse_profile("ok.yaml", &without, "ok").unwrap().hosts[1].name, "capability");
}
