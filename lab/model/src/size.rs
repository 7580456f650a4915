//! Byte sizes as profiles write them (`512M`, `4G`, `8k`, `268435456`) and as QEMU reads them.
//!
//! Suffixes are binary (K = 1024), as in QEMU: `4G` in a profile is exactly `4G` on QEMU's command
//! line, so nobody has to wonder whether M meant 10^6.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// A size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `123`, `8k`, `512M`, `4G`, `1T`, with an optional `B` or `iB` after the suffix.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let trimmed = text.trim();
        let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (digits, suffix) = trimmed.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!("`{text}` is not a size (expected a number with an optional K, M, G or T suffix)"));
        }
        let number: u64 = digits.parse().map_err(|_| format!("`{text}` is too large"))?;
        let unit = match suffix.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
            "" => 1,
            "K" => KIB,
            "M" => MIB,
            "G" => GIB,
            "T" => GIB * 1024,
            _ => return Err(format!("`{text}` has an unknown suffix `{suffix}` (expected K, M, G or T)")),
        };
        number.checked_mul(unit).map(ByteSize).ok_or_else(|| format!("`{text}` is too large"))
    }
}

/// Shows the largest exact binary unit, the way QEMU accepts it: `512M`, `4G`, `8k`, `300`.
impl fmt::Display for ByteSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, suffix) in [(GIB * 1024, "T"), (GIB, "G"), (MIB, "M"), (KIB, "k")] {
            if bytes != 0 && bytes % unit == 0 {
                return write!(formatter, "{}{suffix}", bytes / unit);
            }
        }
        write!(formatter, "{bytes}")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumberOrText {
            Number(u64),
            Text(String),
        }
        match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(bytes) => Ok(ByteSize(bytes)),
            NumberOrText::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_suffixes() {
        assert_eq!(ByteSize::parse("512M"), Ok(ByteSize(512 * MIB)));
        assert_eq!(ByteSize::parse("4G"), Ok(ByteSize(4 * GIB)));
        assert_eq!(ByteSize::parse("8k"), Ok(ByteSize(8 * KIB)));
        assert_eq!(ByteSize::parse("16KiB"), Ok(ByteSize(16 * KIB)));
        assert_eq!(ByteSize::parse("256"), Ok(ByteSize(256)));
        assert!(ByteSize::parse("4X").unwrap_err().contains("unknown suffix"));
        assert!(ByteSize::parse("G").unwrap_err().contains("not a size"));
        assert!(ByteSize::parse("99999999999T").unwrap_err().contains("too large"));
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(4 * GIB).to_string(), "4G");
        assert_eq!(ByteSize(512 * MIB).to_string(), "512M");
        assert_eq!(ByteSize(1536 * MIB).to_string(), "1536M");
        assert_eq!(ByteSize(8 * KIB).to_string(), "8k");
        assert_eq!(ByteSize(300).to_string(), "300");
    }
}
