//! What the lab's guest program and the host agree on: the tag the `decode` suite writes at the
//! start of every granule of a region, so that the host finds each one in a backing file; and the
//! capability device's protocol ([`capability`]: the Present Capability command, its verdict, the
//! denial event), which the host's capability service encodes and the guest parses.
//!
//! [`mailbox`] sends a raw mailbox command from the guest (Linux's `CXL_MEM_SEND_COMMAND`).

pub mod capability;
pub mod mailbox;

/// Bytes of a tag: the start of a granule (the smallest granularity is 256 bytes).
pub const TAG_BYTES: usize = 64;

/// The tag of granule `index` (at `hpa`) of region `label`: readable text, NUL-padded, that
/// names where it was meant to go, so a tag found in the wrong place says whose it is.
pub fn granule_tag(label: &str, index: u64, hpa: u64) -> [u8; TAG_BYTES] {
    let text = format!("cxl-lab {label} granule {index} hpa {hpa:#x}");
    let mut tag = [0u8; TAG_BYTES];
    let length = text.len().min(TAG_BYTES);
    tag[..length].copy_from_slice(&text.as_bytes()[..length]);
    tag
}

/// A number, in hex with `0x` (what the guest program and `lab cap` take on their command lines).
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The text of a tag as found in memory, up to its padding.
pub fn tag_text(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_their_granule_and_read_back_as_text() {
        let tag = granule_tag("region0", 7, 0x3_8000_e000);
        assert_eq!(tag_text(&tag), "cxl-lab region0 granule 7 hpa 0x38000e000");
        assert_ne!(tag, granule_tag("region0", 8, 0x3_8001_0000));
    }
}
