//! What a QEMU binary's device types take, asked of QEMU itself (`-device TYPE,help`): whether it
//! is the lab's QEMU, whose `cxl-type3` is the capability-checking device, or a stock one.

use std::path::Path;
use std::process::Command;

use crate::qemu::features::CAPABILITY_DEVICE_PROPERTY;
use crate::sys::runner::CommandRunner;

/// The properties `qemu_binary` lists for device type `device`, in its order; none for a type
/// it does not have (QEMU then says so on stderr, and exits 0).
pub fn device_properties(runner: &CommandRunner, qemu_binary: &Path, device: &str) -> anyhow::Result<Vec<String>> {
    let help = runner.run_capture("qemu-device-help", Command::new(qemu_binary).args(["-device", &format!("{device},help")]))?;
    Ok(listed_properties(&help))
}

/// Whether `qemu_binary`'s `cxl-type3` takes [`CAPABILITY_DEVICE_PROPERTY`] (the lab's QEMU
/// patch): only then can a device be pointed at a capability service.
pub fn has_capability_device(runner: &CommandRunner, qemu_binary: &Path) -> anyhow::Result<bool> {
    Ok(device_properties(runner, qemu_binary, "cxl-type3")?.iter().any(|property| property == CAPABILITY_DEVICE_PROPERTY))
}

/// The property names of a `-device TYPE,help` listing: after a `TYPE options:` line, one
/// indented `name=<type>` per line, maybe followed by ` - description`.
fn listed_properties(help: &str) -> Vec<String> {
    help.lines()
        .filter(|line| line.starts_with(' '))
        .filter_map(|line| line.trim_start().split_once('=').map(|(name, _)| name.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of Debian's QEMU 10.0.2 answer to `-device cxl-type3,help`, and a line as the
    /// lab's patch adds it.
    const STOCK: &str = "cxl-type3 options:
  acpi-index=<uint32>    -  (default: 0)
  addr=<str>             - Slot and optional function number, example: 06.0 or 06 (default: -1)
  busnr=<busnr>
  lsa=<link<memory-backend>>
  num-dc-regions=<uint8> -  (default: 0)
  sn=<uint64>            -  (default: 18446744073709551615)
  volatile-memdev=<link<memory-backend>>
  x-max-bounce-buffer-size=<size> - Maximum buffer size allocated for bounce buffers used for mapped access to indirect DMA memory (default: 4096)
";

    #[test]
    fn reads_the_property_names_of_a_device_listing() {
        assert_eq!(
            listed_properties(STOCK),
            ["acpi-index", "addr", "busnr", "lsa", "num-dc-regions", "sn", "volatile-memdev", "x-max-bounce-buffer-size"]
        );
        assert!(!listed_properties(STOCK).iter().any(|property| property == CAPABILITY_DEVICE_PROPERTY));
        let patched = format!("{STOCK}  cap-service=<str>\n");
        assert!(listed_properties(&patched).iter().any(|property| property == CAPABILITY_DEVICE_PROPERTY));
    }

    /// A type QEMU lacks is named on stderr only: no property.
    #[test]
    fn an_unknown_device_type_has_no_property() {
        assert!(listed_properties("").is_empty());
    }
}
