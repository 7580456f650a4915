//! Caveats: the restrictions a token carries, and their canonical wire encoding
//!
//! Every caveat is a type byte followed by fixed-size or minimal-varint fields, so a caveat is
//! self-delimiting and the concatenation of caveats needs no length prefixes. Caveats only ever
//! restrict: the verifier requires every caveat to allow a request, so appending one can never
//! widen what a token grants. A type byte this library does not know is an error (fail closed),
//! never something to skip.

use crate::error::{CaveatError, DecodeError};
use crate::values::{AddressRange, RequesterId, Rights, Timestamp};
use crate::wire::{encode_varint, varint_len, ByteReader};

/// Wire type byte of each caveat. Zero is reserved so that a zeroed buffer never decodes.
mod type_byte {
    pub const RANGE: u8 = 0x01;
    pub const RIGHTS: u8 = 0x02;
    pub const NOT_AFTER: u8 = 0x03;
    pub const HOLDER: u8 = 0x04;
    pub const DELEGATION_LIMIT: u8 = 0x05;
}

/// Longest possible caveat encoding: a range caveat with two ten-byte varints.
pub const MAX_CAVEAT_LEN: usize = 1 + 2 * crate::wire::MAX_VARINT_LEN;

/// One restriction on a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caveat {
    /// Requests must lie entirely inside this range of device addresses. Several range
    /// caveats intersect.
    Range(AddressRange),
    /// Requests must be of a kind in this set. Several rights caveats intersect.
    Rights(Rights),
    /// Requests are refused once the device clock passes this time (plus the device's skew
    /// allowance). The earliest not-after wins.
    NotAfter(Timestamp),
    /// Only this requester may use the token. Two different holders leave nobody.
    Holder(RequesterId),
    /// At most this many caveats may follow this one, which bounds how far the token can be
    /// handed on and narrowed.
    DelegationLimit(u8),
}

/// The kind of a caveat, without its value: for policies and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaveatKind {
    Range,
    Rights,
    NotAfter,
    Holder,
    DelegationLimit,
}

impl CaveatKind {
    /// A distinct bit per kind, for sets of kinds.
    pub(crate) const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl Caveat {
    /// The kind of this caveat.
    pub const fn kind(&self) -> CaveatKind {
        match self {
            Caveat::Range(_) => CaveatKind::Range,
            Caveat::Rights(_) => CaveatKind::Rights,
            Caveat::NotAfter(_) => CaveatKind::NotAfter,
            Caveat::Holder(_) => CaveatKind::Holder,
            Caveat::DelegationLimit(_) => CaveatKind::DelegationLimit,
        }
    }

    /// Length of the canonical encoding.
    pub const fn encoded_len(&self) -> usize {
        1 + match self {
            Caveat::Range(range) => varint_len(range.base()) + varint_len(range.length()),
            Caveat::Rights(_) | Caveat::DelegationLimit(_) => 1,
            Caveat::NotAfter(not_after) => varint_len(not_after.as_millis()),
            Caveat::Holder(requester) => varint_len(requester.0 as u64),
        }
    }

    /// Appends the canonical encoding.
    pub fn encode(&self, output: &mut Vec<u8>) {
        match self {
            Caveat::Range(range) => {
                output.push(type_byte::RANGE);
                encode_varint(range.base(), output);
                encode_varint(range.length(), output);
            }
            Caveat::Rights(rights) => {
                output.push(type_byte::RIGHTS);
                output.push(rights.bits());
            }
            Caveat::NotAfter(not_after) => {
                output.push(type_byte::NOT_AFTER);
                encode_varint(not_after.as_millis(), output);
            }
            Caveat::Holder(requester) => {
                output.push(type_byte::HOLDER);
                encode_varint(u64::from(requester.0), output);
            }
            Caveat::DelegationLimit(limit) => {
                output.push(type_byte::DELEGATION_LIMIT);
                output.push(*limit);
            }
        }
    }

    /// Reads one caveat, rejecting unknown types and impossible values.
    pub(crate) fn decode(reader: &mut ByteReader<'_>) -> Result<Caveat, DecodeError> {
        let offset = reader.position();
        let invalid = |reason: CaveatError| DecodeError::InvalidCaveat { offset, reason };
        match reader.read_u8("caveat type")? {
            type_byte::RANGE => {
                let base = reader.read_varint("range base")?;
                let length = reader.read_varint("range length")?;
                AddressRange::new(base, length)
                    .map(Caveat::Range)
                    .map_err(invalid)
            }
            type_byte::RIGHTS => {
                let bits = reader.read_u8("rights")?;
                Rights::from_bits(bits).map(Caveat::Rights).map_err(invalid)
            }
            type_byte::NOT_AFTER => {
                let millis = reader.read_varint("not-after")?;
                Ok(Caveat::NotAfter(Timestamp::from_millis(millis)))
            }
            type_byte::HOLDER => {
                let requester = reader.read_varint("holder")?;
                let requester = u16::try_from(requester)
                    .map_err(|_| invalid(CaveatError::RequesterIdTooLarge(requester)))?;
                Ok(Caveat::Holder(RequesterId(requester)))
            }
            type_byte::DELEGATION_LIMIT => {
                Ok(Caveat::DelegationLimit(reader.read_u8("delegation limit")?))
            }
            unknown => Err(DecodeError::UnknownCaveatType {
                offset,
                type_byte: unknown,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Caveat> {
        vec![
            Caveat::Range(AddressRange::new(0x1_0000_0000, 0x10_0000).unwrap()),
            Caveat::Range(AddressRange::new(u64::MAX - 1, 1).unwrap()),
            Caveat::Rights(Rights::READ),
            Caveat::NotAfter(Timestamp::from_millis(1_790_000_000_000)),
            Caveat::Holder(RequesterId(u16::MAX)),
            Caveat::DelegationLimit(0),
        ]
    }

    #[test]
    fn every_caveat_kind_round_trips_with_its_predicted_length() {
        for caveat in every_kind() {
            let mut bytes = Vec::new();
            caveat.encode(&mut bytes);
            assert_eq!(bytes.len(), caveat.encoded_len(), "{caveat:?}");
            assert!(bytes.len() <= MAX_CAVEAT_LEN);
            let mut reader = ByteReader::new(&bytes);
            assert_eq!(Caveat::decode(&mut reader), Ok(caveat));
            assert_eq!(reader.remaining(), 0);
        }
    }

    #[test]
    fn holder_above_sixteen_bits_is_invalid() {
        let mut bytes = vec![type_byte::HOLDER];
        encode_varint(0x1_0000, &mut bytes);
        assert_eq!(
            Caveat::decode(&mut ByteReader::new(&bytes)),
            Err(DecodeError::InvalidCaveat {
                offset: 0,
                reason: CaveatError::RequesterIdTooLarge(0x1_0000)
            })
        );
    }

    #[test]
    fn reserved_type_zero_is_unknown() {
        assert_eq!(
            Caveat::decode(&mut ByteReader::new(&[0, 0])),
            Err(DecodeError::UnknownCaveatType {
                offset: 0,
                type_byte: 0
            })
        );
    }
}
