//! What the guest kernel says about itself: WARN, BUG and oops lines in its log, and whether its
//! configuration lets a region be committed in a VM.

use std::path::Path;

/// Where a guest finds its kernel's configuration, first found wins; the script prints the
/// `CONFIG_CXL_REGION_INVALIDATION_TEST` line, or nothing when no configuration is readable.
pub const REGION_CONFIG_SCRIPT: &str = "r=$(uname -r); \
    { if [ -r /proc/config.gz ]; then zcat /proc/config.gz; \
      elif [ -r /boot/config-$r ]; then cat /boot/config-$r; \
      elif [ -r /lib/modules/$r/config ]; then cat /lib/modules/$r/config; \
      else echo 'no kernel config'; fi; } | grep -E '^(# )?CONFIG_CXL_REGION_INVALIDATION_TEST[= ]|^no kernel config$'; \
    echo \"release $r\"";

/// Why a region cannot be committed in this guest, from [`REGION_CONFIG_SCRIPT`]'s output;
/// `None` when it can.
pub fn region_commit_unsupported(script_output: &str) -> Option<String> {
    let release = script_output.lines().find_map(|line| line.strip_prefix("release ")).unwrap_or("?");
    if script_output.lines().any(|line| line.trim() == "CONFIG_CXL_REGION_INVALIDATION_TEST=y") {
        return None;
    }
    if script_output.lines().any(|line| line.trim() == "no kernel config") {
        return Some(format!("the guest kernel {release} has no readable configuration (/proc/config.gz, /boot/config-{release}, /lib/modules/{release}/config): cannot tell whether it can commit a region"));
    }
    Some(format!(
        "the guest kernel {release} is built without CONFIG_CXL_REGION_INVALIDATION_TEST=y: a region cannot be committed in a VM \
         (`cxl create-region` fails \"failed to commit decode: No such device or address\" with a kernel WARN \"Failed to synchronize CPU cache state\"); \
         the source stack's kernel has it"
    ))
}

/// The region option's line of the configuration the stack keeps with its kernel (`config`
/// beside the source stack's vmlinuz, `lib/modules/<release>/config` in the distro stack's
/// modules), in [`REGION_CONFIG_SCRIPT`]'s form; `None` when there is none.
pub fn stack_config(kernel: &Path, modules_dir: &Path, release: &str) -> Option<String> {
    let candidates = [kernel.with_file_name("config"), modules_dir.join("lib/modules").join(release).join("config")];
    let text = candidates.iter().find_map(|path| std::fs::read_to_string(path).ok())?;
    let option = text.lines().filter(|line| line.contains("CONFIG_CXL_REGION_INVALIDATION_TEST")).collect::<Vec<_>>().join("\n");
    Some(format!("{option}\nrelease {release}\n"))
}

/// Prints the sysfs entries of the memdev with serial `serial` (`memdev memN`, then one name a
/// line) and the kernel release: a kernel with dynamic capacity support gives such a device a
/// `dynamic_ram_a` partition beside `ram` and `pmem`.
pub fn dynamic_capacity_script(serial: u64) -> String {
    format!(
        "for m in /sys/bus/cxl/devices/mem*; do \
           [ -r $m/serial ] && [ $(($(cat $m/serial))) -eq {serial} ] && {{ echo \"memdev ${{m##*/}}\"; ls $m; }}; \
         done; echo \"release $(uname -r)\""
    )
}

/// Why the guest kernel cannot take dynamic capacity, from [`dynamic_capacity_script`]'s
/// output; `None` when it can.
pub fn dynamic_capacity_unsupported(script_output: &str, serial: u64) -> Option<String> {
    let release = script_output.lines().find_map(|line| line.strip_prefix("release ")).unwrap_or("?");
    let Some(memdev) = script_output.lines().find_map(|line| line.strip_prefix("memdev ")) else {
        return Some(format!("the guest kernel {release} shows no memdev with serial {serial}: cannot tell whether it supports dynamic capacity"));
    };
    if script_output.lines().any(|line| line.trim() == "dynamic_ram_a") {
        return None;
    }
    Some(format!(
        "the guest kernel {release} has no dynamic capacity (DCD) support: {memdev} (serial {serial}) has no dynamic_ram_a partition in sysfs; \
         its CXL driver knows only ram and pmem partitions and reads no dynamic capacity event log (as Linux 7.3 on both stacks), \
         so capacity added through QMP would never reach the guest"
    ))
}

/// What Linux warns, once per boot, the first time a raw mailbox command is sent
/// (`CONFIG_CXL_MEM_RAW_COMMANDS`): how a guest presents a token to a capability-checked device.
pub const RAW_COMMAND_WARNING: &str = "raw command path used";

/// The kernel log lines that mean the kernel went wrong: WARN, BUG, oops, panic. A `WARNING:`
/// line whose message (the line before it, as `WARN(cond, fmt)` prints them) holds one of `allowed` is no
/// problem: a warning the suite causes on purpose, such as the raw mailbox command's.
pub fn problems(log: &str, allowed: &[String]) -> Vec<String> {
    const MARKS: [&str; 6] = ["WARNING:", "BUG:", "kernel BUG at", "Oops:", "Kernel panic", "general protection fault"];
    let lines: Vec<&str> = log.lines().collect();
    let allowed_warning = |index: usize| {
        lines[index].contains("WARNING:") && index > 0 && allowed.iter().any(|message| lines[index - 1].contains(message.as_str()))
    };
    (0..lines.len())
        .filter(|&index| MARKS.iter().any(|mark| lines[index].contains(mark)) && !allowed_warning(index))
        .map(|index| lines[index].trim().to_owned())
        .collect()
}

/// Prints how many lines the kernel log has.
pub const LOG_LINES_SCRIPT: &str = "dmesg | wc -l";

/// Prints the kernel log after its first `seen` lines (the log grows; a suite owns what it added).
pub fn log_after_script(seen: usize) -> String {
    format!("dmesg | tail -n +{}", seen + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_commit_needs_the_invalidation_test_option() {
        assert_eq!(region_commit_unsupported("CONFIG_CXL_REGION_INVALIDATION_TEST=y\nrelease 6.18.0-lab\n"), None);
        let debian = region_commit_unsupported("# CONFIG_CXL_REGION_INVALIDATION_TEST is not set\nrelease 7.3.4+deb13-amd64\n").unwrap();
        assert!(debian.starts_with("the guest kernel 7.3.4+deb13-amd64 is built without CONFIG_CXL_REGION_INVALIDATION_TEST=y"), "{debian}");
        let unknown = region_commit_unsupported("no kernel config\nrelease 6.1\n").unwrap();
        assert!(unknown.contains("no readable configuration"), "{unknown}");
    }

    #[test]
    fn dynamic_capacity_needs_a_dynamic_partition() {
        // What Linux 7.3.4 shows for the dcd profile's device: no partition at all.
        let without = "memdev mem0\ndev\ndriver\nfirmware_version\npayload_max\npmem\nram\nserial\nrelease 7.3.4-lab\n";
        let reason = dynamic_capacity_unsupported(without, 99).unwrap();
        assert!(reason.starts_with("the guest kernel 7.3.4-lab has no dynamic capacity (DCD) support: mem0 (serial 99) has no dynamic_ram_a"), "{reason}");
        assert_eq!(dynamic_capacity_unsupported(&without.replace("pmem\n", "dynamic_ram_a\npmem\n"), 99), None);
        assert!(dynamic_capacity_unsupported("release 7.3\n", 99).unwrap().contains("no memdev with serial 99"));
        assert!(dynamic_capacity_script(99).contains("-eq 99"));
    }

    #[test]
    fn warn_bug_and_oops_are_problems() {
        let log = "[    1.0] cxl_acpi: probed\n[    2.0] WARNING: CPU: 0 PID: 1 at drivers/cxl/core/region.c:1 x\n[    3.0] BUG: kernel NULL pointer dereference\n[    4.0] Oops: 0002 [#1] SMP\n";
        assert_eq!(problems(log, &[]).len(), 3);
        assert_eq!(problems("[    1.0] all well\n", &[]), Vec::<String>::new());
    }

    #[test]
    fn only_the_allowed_warning_is_no_problem() {
        let raw = "[ 9.0] ------------[ cut here ]------------\n[ 9.0] cxl_pci 0000:0d:00.0: raw command path used\n[ 9.0] WARNING: CPU: 0 PID: 300 at drivers/cxl/core/mbox.c:425 cxl_send_cmd+0x1/0x2 [cxl_core]\n";
        let allowed = ["raw command path used".to_owned()];
        assert_eq!(problems(raw, &allowed), Vec::<String>::new());
        assert_eq!(problems(raw, &[]).len(), 1, "not allowed unless the suite says so");
        let other = format!("{raw}[ 10.0] WARNING: CPU: 0 PID: 1 at drivers/cxl/core/region.c:1 x\n");
        assert_eq!(problems(&other, &allowed).len(), 1, "another warning after it still counts");
        assert_eq!(log_after_script(0), "dmesg | tail -n +1");
    }
}
