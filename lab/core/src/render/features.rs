//! Which QEMU version brought which CXL feature, so a profile is rendered for the QEMU actually
//! used, or refused before QEMU starts with the reason.

use cxl_lab_model::{Host, Topology};

/// A QEMU version, as `qemu-system-x86_64 --version` prints it.
pub type QemuVersion = (u32, u32, u32);

pub fn at_least(version: QemuVersion, major: u32, minor: u32) -> bool {
    (version.0, version.1) >= (major, minor)
}

/// `persistent-memdev` replaced the pmem `memdev` property of cxl-type3 in QEMU 8.1.
pub fn has_persistent_memdev(version: QemuVersion) -> bool {
    at_least(version, 8, 1)
}

/// Every feature the host uses that the QEMU version lacks, as messages.
pub fn missing_features(topology: &Topology, host: &Host, version: QemuVersion) -> Vec<String> {
    let mut missing = Vec::new();
    let mut require = |needed: bool, major: u32, minor: u32, what: String| {
        if needed && !at_least(version, major, minor) {
            missing.push(format!(
                "{what} needs QEMU {major}.{minor} or newer; this QEMU is {}.{}.{}",
                version.0, version.1, version.2
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
    fn version_comparison_uses_major_and_minor() {
        assert!(at_least((10, 0, 2), 8, 1));
        assert!(at_least((8, 1, 0), 8, 1));
        assert!(!at_least((8, 0, 5), 8, 1));
        assert!(has_persistent_memdev((9, 2, 0)));
        assert!(!has_persistent_memdev((8, 0, 0)));
    }
}

/// Reads `major.minor.micro` after "version" in QEMU's `--version` output.
pub fn parse_qemu_version(text: &str) -> Option<QemuVersion> {
    let after = text.split("version").nth(1)?.split_whitespace().next()?;
    let mut numbers = after.split('.').map(|part| part.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u32>());
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?, numbers.next().and_then(Result::ok).unwrap_or(0)))
}

#[cfg(test)]
mod version_text_tests {
    #[test]
    fn reads_debian_version_line() {
        let text = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(super::parse_qemu_version(text), Some((10, 0, 2)));
        assert_eq!(super::parse_qemu_version("QEMU emulator version 11.1.50 (v11.1.0-1234)"), Some((11, 1, 50)));
        assert_eq!(super::parse_qemu_version("nonsense"), None);
    }
}
