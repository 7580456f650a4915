//! The QEMU in use: its version ([`QemuVersion`]), which CXL features it has ([`features`]), and
//! the accelerator a machine runs with ([`Accel`]; the renderer writes it, `vm` probes it).

pub mod features;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A QEMU version: what `qemu-system-x86_64 --version` prints, what the lock records and what a
/// recipe's `qemu.minimum_version` asks for (`major.minor`, micro 0). Written `major.minor.micro`
/// in files (the lock, lab state), read with or without the micro part.
/// The CPU model a KVM machine runs with. The KVM probe boots with the same model: a probe
/// without it passed on a host where `-cpu host` then failed to set an MSR at boot.
pub const KVM_CPU_MODEL: &str = "host";
/// The name of the virtio-serial port the guest agent listens on: the argv names it, and the lean
/// init looks for it (no udev makes `/dev/virtio-ports/<name>` there).
pub const AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

/// The accelerator a machine runs with, once `auto` has been resolved. Lowercase in files and
/// templates, as `-accel` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The accelerator's name as `-accel` takes it and as messages show it.
impl fmt::Display for Accel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl QemuVersion {
    pub const fn new(major: u32, minor: u32, micro: u32) -> QemuVersion {
        QemuVersion { major, minor, micro }
    }

    /// At least `major.minor`, whatever the micro version.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Reads `major.minor.micro` after "version" in QEMU's `--version` output.
    pub fn from_version_output(text: &str) -> Option<QemuVersion> {
        let after = text.split("version").nth(1)?.split_whitespace().next()?;
        let mut numbers = after.split('.').map(|part| part.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u32>());
        Some(QemuVersion::new(numbers.next()?.ok()?, numbers.next()?.ok()?, numbers.next().and_then(Result::ok).unwrap_or(0)))
    }

    /// `major.minor`, as recipes write a minimum.
    pub fn major_minor(self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// What a version in a file must look like.
pub const VERSION_FORM: &str = "expected `major.minor` or `major.minor.micro`, e.g. `8.1`";

impl FromStr for QemuVersion {
    type Err = String;

    /// `major.minor` or `major.minor.micro`, decimal numbers only.
    fn from_str(text: &str) -> Result<QemuVersion, String> {
        let numbers: Vec<&str> = text.split('.').collect();
        let number = |part: &str| (!part.is_empty() && part.chars().all(|c| c.is_ascii_digit())).then(|| part.parse::<u32>().ok()).flatten();
        let parsed: Option<Vec<u32>> = numbers.iter().map(|part| number(part)).collect();
        match parsed.as_deref() {
            Some(&[major, minor]) => Ok(QemuVersion::new(major, minor, 0)),
            Some(&[major, minor, micro]) => Ok(QemuVersion::new(major, minor, micro)),
            _ => Err(format!("`{text}`: {VERSION_FORM}")),
        }
    }
}

impl Serialize for QemuVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QemuVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<QemuVersion, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The file behind one `memory-backend-file` and the size QEMU maps: the renderer decides it,
/// the machine's owner creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendFile {
    pub path: std::path::PathBuf,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::{Accel, QemuVersion};

    /// `launch.json` and `lab.json` keep the text they had when the accelerator was a string.
    #[test]
    fn accel_is_written_as_accel_takes_it() {
        assert_eq!(serde_json::to_string(&Accel::Kvm).unwrap(), "\"kvm\"");
        assert_eq!(serde_json::from_str::<Accel>("\"tcg\"").unwrap(), Accel::Tcg);
        assert_eq!(Accel::Tcg.to_string(), "tcg");
    }

    #[test]
    fn reads_debian_version_line() {
        let text = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(QemuVersion::from_version_output(text), Some(QemuVersion::new(10, 0, 2)));
        assert_eq!(QemuVersion::from_version_output("QEMU emulator version 11.1.50 (v11.1.0-1234)"), Some(QemuVersion::new(11, 1, 50)));
        assert_eq!(QemuVersion::from_version_output("nonsense"), None);
    }

    #[test]
    fn version_comparison_uses_major_and_minor() {
        assert!(QemuVersion::new(10, 0, 2).at_least(8, 1));
        assert!(QemuVersion::new(8, 1, 0).at_least(8, 1));
        assert!(!QemuVersion::new(8, 0, 5).at_least(8, 1));
    }

    #[test]
    fn written_and_read_as_text() {
        assert_eq!("8.1".parse::<QemuVersion>(), Ok(QemuVersion::new(8, 1, 0)));
        assert_eq!("10.0.2".parse::<QemuVersion>().map(|version| version.to_string()), Ok("10.0.2".to_owned()));
        for bad in ["8", "8.", "8.1.2.3", "v8.1", "8.-1", ""] {
            assert!(bad.parse::<QemuVersion>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&QemuVersion::new(10, 0, 2)).unwrap(), "\"10.0.2\"");
    }
}
