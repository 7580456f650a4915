//! Which QEMU version brought which CXL feature, so a profile is rendered for the QEMU actually
//! used, or refused before QEMU starts with the reason.

use cxl_lab_model::{Host, Topology};

use super::QemuVersion;

/// The `cxl-type3` property the lab's QEMU patch adds (the capability service's socket): a QEMU
/// whose `cxl-type3` lists it has the capability-checking device (`vm::device_help`); a version
/// number cannot tell, since the patch is the lab's own.
pub const CAPABILITY_DEVICE_PROPERTY: &str = "cap-service";

/// `persistent-memdev` replaced the pmem `memdev` property of cxl-type3 in QEMU 8.1.
pub fn has_persistent_memdev(version: QemuVersion) -> bool {
    version.at_least(8, 1)
}

/// Every feature the host uses that the QEMU version lacks, as messages.
pub fn missing_features(topology: &Topology, host: &Host, version: QemuVersion) -> Vec<String> {
    let mut missing = Vec::new();
    let mut require = |needed: bool, major: u32, minor: u32, what: String| {
        if needed && !version.at_least(major, minor) {
            missing.push(format!(
                "{what} needs QEMU {major}.{minor} or newer; this QEMU is {version}"
            ));
        }
    };
    require(true, 7, 1, format!("profile `{}`: CXL on q35", topology.name));
    for host_bridge in &host.host_bridges {
        require(host_bridge.hdm_for_passthrough, 8, 0, format!("host bridge `{}`: hdm_for_passthrough", host_bridge.id));
    }
    for (_, switch) in host.switches() {
        require(switch.mailbox_cci, 9, 0, format!("switch `{}`: mailbox_cci", switch.id));
    }
    for placement in host.devices() {
        let device = placement.device;
        require(device.dynamic_capacity.is_some(), 9, 1, format!("device `{}`: dynamic_capacity", device.id));
    }
    for (index, window) in host.windows.iter().enumerate() {
        let ways = window.targets.len();
        require(
            matches!(ways, 3 | 6 | 12),
            10,
            0,
            format!("fixed_windows[{index}]: {ways}-way interleave"),
        );
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_memdev_arrived_in_8_1() {
        assert!(has_persistent_memdev(QemuVersion::new(9, 2, 0)));
        assert!(!has_persistent_memdev(QemuVersion::new(8, 0, 0)));
    }
}
