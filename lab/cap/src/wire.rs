//! Wire primitives: minimal unsigned LEB128 varints and a bounds-checked byte reader
//!
//! Canonical encoding means exactly one byte string per token, so the varint decoder rejects
//! every padded form (a last group of zero after a continuation bit, which would let `1` also be
//! written `81 00`) and every value past 64 bits. All reads are bounds-checked and report the
//! offset, so no length field can point past the end of the input.

use crate::error::DecodeError;

/// Longest varint: ten 7-bit groups carry 64 bits.
pub const MAX_VARINT_LEN: usize = 10;

/// Appends the minimal LEB128 encoding of `value`.
pub fn encode_varint(mut value: u64, output: &mut Vec<u8>) {
    while value >= 0x80 {
        output.push((value as u8) | 0x80);
        value >>= 7;
    }
    output.push(value as u8);
}

/// Length in bytes of the minimal encoding of `value`.
pub const fn varint_len(value: u64) -> usize {
    let significant_bits = 64 - value.leading_zeros() as usize;
    if significant_bits == 0 {
        1
    } else {
        significant_bits.div_ceil(7)
    }
}

/// A cursor over an input that never reads past its end.
pub struct ByteReader<'input> {
    bytes: &'input [u8],
    position: usize,
}

impl<'input> ByteReader<'input> {
    pub fn new(bytes: &'input [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Number of unread bytes.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// Reads one byte; `field` names what was being read for the error.
    #[inline]
    pub fn read_u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or(DecodeError::UnexpectedEnd {
                offset: self.position,
                field,
            })?;
        self.position += 1;
        Ok(byte)
    }

    /// Reads exactly `N` bytes.
    #[inline]
    pub fn read_array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<&'input [u8; N], DecodeError> {
        let end = self.position + N;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(DecodeError::UnexpectedEnd {
                offset: self.bytes.len(),
                field,
            })?;
        self.position = end;
        Ok(slice.try_into().expect("slice of length N"))
    }

    /// Reads a minimal LEB128 varint of at most 64 bits.
    #[inline]
    pub fn read_varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let start = self.position;
        // Most fields of real tokens (epochs, small ids, caveat counts) fit in one byte.
        if let Some(&byte) = self.bytes.get(start) {
            if byte < 0x80 {
                self.position += 1;
                return Ok(u64::from(byte));
            }
        }
        let mut value: u64 = 0;
        for group_index in 0..MAX_VARINT_LEN {
            let byte = self.read_u8(field)?;
            let group = u64::from(byte & 0x7f);
            // The tenth group may only carry the single top bit of a u64.
            if group_index == MAX_VARINT_LEN - 1 && group > 1 {
                return Err(DecodeError::VarintOverflow { offset: start });
            }
            value |= group << (7 * group_index);
            if byte & 0x80 == 0 {
                // A zero last group after other groups is padding: `81 00` would also mean 1.
                if byte == 0 && group_index > 0 {
                    return Err(DecodeError::NonMinimalVarint { offset: start });
                }
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow { offset: start })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: u64) -> Vec<u8> {
        let mut output = Vec::new();
        encode_varint(value, &mut output);
        output
    }

    #[test]
    fn varint_round_trips_at_every_group_boundary() {
        for shift in 0..64 {
            for value in [(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1] {
                let bytes = encoded(value);
                assert_eq!(bytes.len(), varint_len(value), "length of {value:#x}");
                let mut reader = ByteReader::new(&bytes);
                assert_eq!(reader.read_varint("test").unwrap(), value);
                assert_eq!(reader.remaining(), 0);
            }
        }
        assert_eq!(encoded(u64::MAX).len(), MAX_VARINT_LEN);
    }

    #[test]
    fn varint_rejects_padding_overflow_and_truncation() {
        let padded_one = [0x81, 0x00];
        assert_eq!(
            ByteReader::new(&padded_one).read_varint("test"),
            Err(DecodeError::NonMinimalVarint { offset: 0 })
        );
        let padded_zero = [0x80, 0x00];
        assert_eq!(
            ByteReader::new(&padded_zero).read_varint("test"),
            Err(DecodeError::NonMinimalVarint { offset: 0 })
        );
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(
            ByteReader::new(&too_big).read_varint("test"),
            Err(DecodeError::VarintOverflow { offset: 0 })
        );
        let eleven_groups = [0x80; 11];
        assert_eq!(
            ByteReader::new(&eleven_groups).read_varint("test"),
            Err(DecodeError::VarintOverflow { offset: 0 })
        );
        let truncated = [0x80];
        assert_eq!(
            ByteReader::new(&truncated).read_varint("test"),
            Err(DecodeError::UnexpectedEnd {
                offset: 1,
                field: "test"
            })
        );
    }
}
