//! Decode answers as text for people: the region, then an address's path level by level.

use std::fmt::Write as _;

use super::{window_name, Decoded, Region};
use crate::size::ByteSize;

/// What each level's decoder picks.
fn target_kind(level: &str) -> &'static str {
    match level {
        "window" => "host bridge",
        "host bridge" => "root port",
        _ => "downstream port",
    }
}

/// One paragraph: the window, mode, ways, granularity, placement and members in position order.
pub fn region_text(region: &Region<'_>) -> String {
    let mut text = format!(
        "region over {} of {}: {}, {} ways, granularity {}, HPA {:#x}..{:#x} ({}, {} per device)\n",
        window_name(region.window_index),
        region.host.name,
        region.mode.name(),
        region.ways(),
        ByteSize(region.granularity),
        region.base,
        region.end(),
        ByteSize(region.size),
        ByteSize(region.per_device()),
    );
    let members: Vec<String> =
        region.members().enumerate().map(|(position, device)| format!("{position}: {} (serial {})", device.id, device.serial)).collect();
    let _ = writeln!(text, "positions: {}", members.join(", "));
    text
}

/// The path of one address: each decoder with its ways, granularity and chosen target, then the
/// device, its DPA and the byte of the backing file.
pub fn path_text(decoded: &Decoded) -> String {
    let mut text = format!("HPA {:#x}: region offset {:#x}, position {}\n", decoded.hpa, decoded.offset, decoded.position);
    for hop in &decoded.hops {
        let port = hop.port.map(|port| format!(" (port {port})")).unwrap_or_default();
        let _ = writeln!(
            text,
            "  {:<12} {:<12} {:>2} ways at {:<4} target {:>2} -> {} {}{port}",
            hop.level.name,
            hop.decoder,
            hop.level.ways,
            ByteSize(hop.level.granularity).to_string(),
            hop.target_index,
            target_kind(hop.level.name),
            hop.target,
        );
    }
    let _ = writeln!(text, "  {:<12} {} (serial {}) DPA {:#x}", "device", decoded.device, decoded.serial, decoded.dpa);
    let _ = writeln!(text, "  {:<12} memory backend {} ({}.raw) offset {:#x}", "backing", decoded.backing.backend, decoded.backing.backend, decoded.backing.offset);
    text
}
