//! The token byte layout: identifier, caveat count, caveats, tag
//!
//! ```text
//! version u8 | algorithm u8 | device id varint | epoch varint | token id varint   (identifier)
//! caveat count u8 | caveat 0 | ... | caveat n-1 | tag [u8; 32]
//! ```
//!
//! The parser here does not allocate: it records each caveat and its byte span in a fixed array
//! so that the verifier can MAC the exact bytes it decoded. It accepts only the canonical
//! encoding: minimal varints, known types, no trailing bytes. Whether the tag is right is not
//! its business; see `verify.rs`.

use crate::caveat::{Caveat, MAX_CAVEAT_LEN};
use crate::error::DecodeError;
use crate::mac::{Algorithm, TAG_LEN};
use crate::values::{DeviceId, Epoch, TokenId};
use crate::wire::{encode_varint, ByteReader, MAX_VARINT_LEN};

/// The only format version this library reads and writes.
pub const FORMAT_VERSION: u8 = 1;

/// Most caveats one token can carry. A hard format limit, checked from the count byte before
/// any caveat is read; device policy may set a lower one.
pub const MAX_CAVEATS: usize = 16;

/// Longest identifier: two fixed bytes and three ten-byte varints.
const MAX_IDENTIFIER_LEN: usize = 2 + 3 * MAX_VARINT_LEN;

/// Longest possible canonical token, so buffers and policies can be sized statically.
pub const MAX_TOKEN_LEN: usize = MAX_IDENTIFIER_LEN + 1 + MAX_CAVEATS * MAX_CAVEAT_LEN + TAG_LEN;

/// The identifier of a token: which device and key verify it, and which token it is. All of it
/// is the first MAC input, so none of it can be changed without the device key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenIdentifier {
    pub algorithm: Algorithm,
    pub device_id: DeviceId,
    pub epoch: Epoch,
    pub token_id: TokenId,
}

impl TokenIdentifier {
    /// Appends the canonical identifier bytes, version first.
    pub fn encode(&self, output: &mut Vec<u8>) {
        output.push(FORMAT_VERSION);
        output.push(self.algorithm.byte());
        encode_varint(self.device_id.0, output);
        encode_varint(self.epoch.0, output);
        encode_varint(self.token_id.0, output);
    }

    fn decode(reader: &mut ByteReader<'_>) -> Result<Self, DecodeError> {
        let version = reader.read_u8("version")?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let algorithm = Algorithm::from_byte(reader.read_u8("algorithm")?)?;
        let device_id = DeviceId(reader.read_varint("device id")?);
        let epoch = Epoch(reader.read_varint("epoch")?);
        let token_id = TokenId(reader.read_varint("token id")?);
        Ok(TokenIdentifier {
            algorithm,
            device_id,
            epoch,
            token_id,
        })
    }
}

/// A canonical token, decoded in place.
///
/// Only the end offset of each caveat is kept, not the decoded caveat: the struct stays small
/// (it is returned by value on the verification hot path), and the caveats, already validated,
/// are decoded again in a few nanoseconds when their meaning is needed.
pub(crate) struct ParsedToken<'bytes> {
    pub bytes: &'bytes [u8],
    pub identifier: TokenIdentifier,
    /// End of the identifier, which is also the offset of the caveat count byte.
    pub identifier_end: usize,
    caveat_count: usize,
    // Tokens are at most MAX_TOKEN_LEN (401) bytes, so u16 offsets suffice.
    caveat_ends: [u16; MAX_CAVEATS],
    pub tag: &'bytes [u8; TAG_LEN],
}

impl<'bytes> ParsedToken<'bytes> {
    /// Decodes `bytes`, which must be exactly one canonical token.
    pub fn parse(bytes: &'bytes [u8]) -> Result<Self, DecodeError> {
        Self::parse_visiting(bytes, |_, _, _| {})
    }

    /// [`ParsedToken::parse`], handing each decoded caveat to `visit_caveat` as
    /// `(index, caveat count, caveat)`, so that a caller can fold the caveats in the same pass
    /// instead of decoding them again.
    pub fn parse_visiting(
        bytes: &'bytes [u8],
        mut visit_caveat: impl FnMut(usize, usize, Caveat),
    ) -> Result<Self, DecodeError> {
        let mut reader = ByteReader::new(bytes);
        let identifier = TokenIdentifier::decode(&mut reader)?;
        let identifier_end = reader.position();
        let caveat_count = usize::from(reader.read_u8("caveat count")?);
        if caveat_count > MAX_CAVEATS {
            return Err(DecodeError::TooManyCaveats {
                count: caveat_count,
                max: MAX_CAVEATS,
            });
        }
        let mut caveat_ends = [0u16; MAX_CAVEATS];
        for (index, caveat_end) in caveat_ends.iter_mut().take(caveat_count).enumerate() {
            visit_caveat(index, caveat_count, Caveat::decode(&mut reader)?);
            // Bounded by the count limit and MAX_CAVEAT_LEN, so never truncated.
            *caveat_end = reader.position() as u16;
        }
        let tag = reader.read_array::<TAG_LEN>("tag")?;
        if reader.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                count: reader.remaining(),
            });
        }
        Ok(ParsedToken {
            bytes,
            identifier,
            identifier_end,
            caveat_count,
            caveat_ends,
            tag,
        })
    }

    /// Number of caveats.
    pub fn caveat_count(&self) -> usize {
        self.caveat_count
    }

    /// The caveats in chain order, decoded again from their validated bytes.
    pub fn caveats(&self) -> impl ExactSizeIterator<Item = Caveat> + '_ {
        (0..self.caveat_count).map(|index| {
            Caveat::decode(&mut ByteReader::new(self.caveat_bytes(index)))
                .expect("caveat bytes were validated by parse")
        })
    }

    /// The identifier bytes, the first MAC input.
    pub fn identifier_bytes(&self) -> &'bytes [u8] {
        &self.bytes[..self.identifier_end]
    }

    fn caveat_start(&self, index: usize) -> usize {
        match index {
            0 => self.identifier_end + 1,
            _ => usize::from(self.caveat_ends[index - 1]),
        }
    }

    /// The encoded bytes of caveat `index`.
    pub fn caveat_bytes(&self, index: usize) -> &'bytes [u8] {
        &self.bytes[self.caveat_start(index)..usize::from(self.caveat_ends[index])]
    }

    /// The bytes of the first `caveat_prefix_len` caveats, contiguous after the count byte.
    pub fn caveat_prefix_bytes(&self, caveat_prefix_len: usize) -> &'bytes [u8] {
        &self.bytes[self.caveat_start(0)..self.caveat_start(caveat_prefix_len)]
    }
}

/// Writes a whole token. The caller guarantees at most [`MAX_CAVEATS`] caveats.
pub(crate) fn encode_token(
    identifier: &TokenIdentifier,
    caveats: &[Caveat],
    tag: &[u8; TAG_LEN],
) -> Vec<u8> {
    assert!(
        caveats.len() <= MAX_CAVEATS,
        "callers check the caveat limit first"
    );
    let caveats_len: usize = caveats.iter().map(Caveat::encoded_len).sum();
    let mut bytes = Vec::with_capacity(MAX_IDENTIFIER_LEN + 1 + caveats_len + TAG_LEN);
    identifier.encode(&mut bytes);
    bytes.push(caveats.len() as u8);
    for caveat in caveats {
        caveat.encode(&mut bytes);
    }
    bytes.extend_from_slice(tag);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{AddressRange, Rights};

    fn sample_identifier() -> TokenIdentifier {
        TokenIdentifier {
            algorithm: Algorithm::KeyedBlake3,
            device_id: DeviceId(0x42),
            epoch: Epoch(3),
            token_id: TokenId(1_000_000),
        }
    }

    #[test]
    fn parse_reads_back_what_encode_wrote_with_spans() {
        let caveats = [
            Caveat::Range(AddressRange::new(0x1000, 0x2000).unwrap()),
            Caveat::Rights(Rights::READ),
        ];
        let bytes = encode_token(&sample_identifier(), &caveats, &[9; TAG_LEN]);
        let parsed = ParsedToken::parse(&bytes).unwrap();
        assert_eq!(parsed.identifier, sample_identifier());
        let decoded: Vec<Caveat> = parsed.caveats().collect();
        assert_eq!(decoded, caveats);
        assert_eq!(parsed.tag, &[9; TAG_LEN]);
        let mut expected_prefix = Vec::new();
        caveats[0].encode(&mut expected_prefix);
        assert_eq!(parsed.caveat_prefix_bytes(1), expected_prefix.as_slice());
        assert_eq!(parsed.caveat_bytes(0), expected_prefix.as_slice());
        assert!(parsed.caveat_prefix_bytes(0).is_empty());
    }

    #[test]
    fn count_above_the_format_limit_is_rejected_before_reading_caveats() {
        let mut bytes = Vec::new();
        sample_identifier().encode(&mut bytes);
        bytes.push(MAX_CAVEATS as u8 + 1);
        assert_eq!(
            ParsedToken::parse(&bytes).err(),
            Some(DecodeError::TooManyCaveats {
                count: MAX_CAVEATS + 1,
                max: MAX_CAVEATS
            })
        );
    }

    #[test]
    fn max_token_len_bounds_the_largest_encoding() {
        let widest = Caveat::Range(AddressRange::new(1 << 62, (1 << 63) + 1).unwrap());
        let identifier = TokenIdentifier {
            algorithm: Algorithm::HmacSha256,
            device_id: DeviceId(u64::MAX),
            epoch: Epoch(u64::MAX),
            token_id: TokenId(u64::MAX),
        };
        let bytes = encode_token(&identifier, &[widest; MAX_CAVEATS], &[0; TAG_LEN]);
        assert!(
            bytes.len() <= MAX_TOKEN_LEN,
            "{} > {MAX_TOKEN_LEN}",
            bytes.len()
        );
        assert!(ParsedToken::parse(&bytes).is_ok());
    }
}
