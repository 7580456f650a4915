//! The profile as written: YAML structures with the source location of every value.
//!
//! Nothing here is checked beyond types; [`crate::validate`] turns a [`ProfileFile`] into a
//! [`crate::Topology`] and reports each broken rule with the line and column of the value.
//! The format is documented in `docs/profiles.md`.

use serde::Deserialize;
pub use serde_saphyr::Spanned;

use crate::size::ByteSize;

/// A whole profile file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// Defaults to the file name without `.yaml`.
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub description: String,
    /// Memory backends (files with share=on), referenced by id from type-3 devices.
    #[serde(default)]
    pub memory_backends: Vec<MemoryBackendSpec>,
    /// Words appended to the kernel command line of every host, one kernel parameter each.
    #[serde(default)]
    pub kernel_cmdline: Vec<Spanned<String>>,
    /// Raw QEMU arguments appended to every host's argv, for what the schema does not cover: the
    /// one value no rule checks.
    #[serde(default)]
    pub qemu_extra: Vec<String>,
    /// How the guests boot: `lean` (default) or `full` (systemd); `lab up --boot` overrides it.
    #[serde(default)]
    pub boot: BootMode,

    /// Single-host form: the host is described at the top level.
    pub machine: Option<Spanned<MachineSpec>>,
    pub host_bridges: Option<Vec<HostBridgeSpec>>,
    pub fixed_windows: Option<Vec<FixedWindowSpec>>,

    /// Multi-host form: several machines, which may share memory backends.
    pub hosts: Option<Spanned<Vec<HostSpec>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: Spanned<String>,
    pub machine: Spanned<MachineSpec>,
    #[serde(default)]
    pub host_bridges: Vec<HostBridgeSpec>,
    #[serde(default)]
    pub fixed_windows: Vec<FixedWindowSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    /// Guest RAM (`-m`).
    pub memory: Spanned<ByteSize>,
    /// Defaults to memory plus the total size of the fixed windows.
    pub maxmem: Option<Spanned<ByteSize>>,
    /// Memory hotplug slots; default [`crate::validate::DEFAULT_SLOTS`].
    pub slots: Option<Spanned<u32>>,
    /// Default [`crate::validate::DEFAULT_CPUS`].
    pub cpus: Option<Spanned<u32>>,
    #[serde(default)]
    pub accel: AccelRequest,
    /// The guest onlines CXL memory as System RAM: such guests must run under TCG.
    #[serde(default)]
    pub online_cxl_as_ram: bool,
}

/// What the profile asks for; `auto` is resolved by probing before boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelRequest {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// How a guest boots. `lean`: the initramfs switches into the root filesystem and runs the lab's
/// lean init (mounts, the CXL modules, the guest agent; no systemd, no udev, no network, no SSH).
/// `full`: systemd, with udev, networking and SSH.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    #[default]
    Lean,
    Full,
}

impl BootMode {
    pub fn name(self) -> &'static str {
        match self {
            BootMode::Lean => "lean",
            BootMode::Full => "full",
        }
    }
}

impl std::fmt::Display for BootMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

impl std::str::FromStr for BootMode {
    type Err = String;
    fn from_str(text: &str) -> Result<BootMode, String> {
        match text {
            "lean" => Ok(BootMode::Lean),
            "full" => Ok(BootMode::Full),
            other => Err(format!("boot `{}` is neither `lean` nor `full`", other.escape_debug())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackendSpec {
    pub id: Spanned<String>,
    pub size: Spanned<ByteSize>,
    /// May back one device on each of several hosts (multi-headed or shared memory).
    #[serde(default)]
    pub shared: bool,
    /// The devices that use it as `volatile` memory check every access against the grants of the
    /// lab's capability service (`docs/capability-lab.md`); default false.
    pub capabilities: Option<Spanned<bool>>,
}

/// A CXL host bridge (`pxb-cxl`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostBridgeSpec {
    pub id: Spanned<String>,
    pub bus_nr: Spanned<u8>,
    /// Give a host bridge with a single root port its own HDM decoder (QEMU 8.0+).
    #[serde(default)]
    pub hdm_for_passthrough: bool,
    #[serde(default)]
    pub root_ports: Vec<PortSpec>,
}

/// A root port (`cxl-rp`) or a switch downstream port (`cxl-downstream`): what sits below it is
/// either a type-3 device or a switch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub id: Spanned<String>,
    pub port: Spanned<u8>,
    pub chassis: Spanned<u8>,
    pub slot: Spanned<u16>,
    pub type3: Option<Type3Spec>,
    pub switch: Option<Spanned<SwitchSpec>>,
}

/// A switch: its upstream port (`cxl-upstream`) and downstream ports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    pub id: Spanned<String>,
    /// The upstream port's number on the root port's bus.
    #[serde(default)]
    pub port: u8,
    pub serial: Option<u64>,
    /// Add a switch mailbox CCI (`cxl-switch-mailbox-cci`) for FM-API commands.
    #[serde(default)]
    pub mailbox_cci: bool,
    #[serde(default)]
    pub downstream_ports: Vec<PortSpec>,
}

/// A type-3 memory device (`cxl-type3`); its memory comes from backends named by id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Type3Spec {
    pub id: Spanned<String>,
    pub serial: Spanned<u64>,
    pub volatile: Option<Spanned<String>>,
    pub persistent: Option<Spanned<String>>,
    /// Label storage area: required with persistent memory.
    pub lsa: Option<Spanned<String>>,
    pub dynamic_capacity: Option<Spanned<DynamicCapacitySpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicCapacitySpec {
    pub backend: Spanned<String>,
    pub regions: Spanned<u8>,
}

/// A CXL fixed memory window (`-M cxl-fmw.N...`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedWindowSpec {
    pub targets: Spanned<Vec<Spanned<String>>>,
    pub size: Spanned<ByteSize>,
    pub granularity: Option<Spanned<ByteSize>>,
}
