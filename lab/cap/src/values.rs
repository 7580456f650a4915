//! Plain value types of the capability model: identifiers, time, rights and address ranges
//!
//! Every type here is valid by construction. An [`AddressRange`] can never have zero length or
//! run past the end of the 64-bit address space, and [`Rights`] can never carry undefined bits,
//! so code that holds one of these values never re-checks it.

use std::num::NonZeroU64;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::CaveatError;

/// Identifies the device that minted a token and is the only party able to verify it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u64);

/// Key epoch of a device: bumping it derives a new root key and kills every older token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

/// Identifies one minted token (and all of its attenuated descendants) within a device epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub u64);

/// Identifies the endpoint that issues a memory request, e.g. the CXL source port id (SPID).
///
/// CXL port ids are 12 bits wide; 16 bits leave room for virtualised requesters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequesterId(pub u16);

/// A point in time on the device's clock: milliseconds since the Unix epoch (UTC).
///
/// The device clock is the only clock that decides expiry; see the clock model in
/// `docs/capability-format.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `milliseconds_since_unix_epoch` milliseconds after 1970-01-01T00:00:00Z.
    pub const fn from_millis(milliseconds_since_unix_epoch: u64) -> Self {
        Self(milliseconds_since_unix_epoch)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The host's wall clock now; a clock before 1970 reads as the epoch itself.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    /// This timestamp moved `milliseconds` later, saturating at the end of time.
    pub const fn saturating_add_millis(self, milliseconds: u64) -> Self {
        Self(self.0.saturating_add(milliseconds))
    }
}

/// The kind of a single memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A load, or a CXL.mem read.
    Read,
    /// A store, or a CXL.mem write.
    Write,
}

/// A set of access rights. Only the read and write bits are defined.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rights(u8);

impl Rights {
    /// No access at all: a token narrowed to this grants nothing.
    pub const NONE: Rights = Rights(0);
    /// Loads only.
    pub const READ: Rights = Rights(0b01);
    /// Stores only.
    pub const WRITE: Rights = Rights(0b10);
    /// Loads and stores.
    pub const READ_WRITE: Rights = Rights(0b11);

    const DEFINED_BITS: u8 = 0b11;

    /// Rights from their wire byte; undefined bits are an error so that a future right can never
    /// be silently ignored by an old verifier.
    pub const fn from_bits(bits: u8) -> Result<Self, CaveatError> {
        if bits & !Self::DEFINED_BITS != 0 {
            return Err(CaveatError::UndefinedRightsBits(bits));
        }
        Ok(Rights(bits))
    }

    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether these rights permit an access of `access_kind`.
    pub const fn allows(self, access_kind: AccessKind) -> bool {
        let needed = match access_kind {
            AccessKind::Read => Self::READ.0,
            AccessKind::Write => Self::WRITE.0,
        };
        self.0 & needed == needed
    }

    /// The rights both sets grant.
    pub const fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// Whether every right in `self` is also in `other`.
    pub const fn is_subset_of(self, other: Rights) -> bool {
        self.0 & !other.0 == 0
    }
}

impl std::fmt::Debug for Rights {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let read = if self.allows(AccessKind::Read) {
            "r"
        } else {
            "-"
        };
        let write = if self.allows(AccessKind::Write) {
            "w"
        } else {
            "-"
        };
        write!(formatter, "Rights({read}{write})")
    }
}

/// A non-empty half-open range `[base, base + length)` of device addresses.
///
/// `base + length` must fit in a `u64`, so the very last byte of the 64-bit space is never
/// addressable; no device is that large, and the rule keeps every end computation exact.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressRange {
    base: u64,
    length: NonZeroU64,
}

impl AddressRange {
    /// The range of `length` bytes starting at `base`.
    pub const fn new(base: u64, length: u64) -> Result<Self, CaveatError> {
        let Some(nonzero_length) = NonZeroU64::new(length) else {
            return Err(CaveatError::ZeroLength);
        };
        if base.checked_add(length).is_none() {
            return Err(CaveatError::RangeOverflow { base, length });
        }
        Ok(AddressRange {
            base,
            length: nonzero_length,
        })
    }

    /// First address in the range.
    pub const fn base(self) -> u64 {
        self.base
    }

    /// Number of bytes in the range, never zero.
    pub const fn length(self) -> u64 {
        self.length.get()
    }

    /// One past the last address in the range; never overflows by construction.
    pub const fn end(self) -> u64 {
        self.base + self.length.get()
    }

    /// Whether the whole of `other` lies inside `self`.
    pub const fn contains_range(self, other: AddressRange) -> bool {
        self.base <= other.base && other.end() <= self.end()
    }

    /// Whether the `length` bytes at `address` lie inside `self`. An empty or overflowing span is
    /// never contained.
    pub const fn contains_span(self, address: u64, length: u64) -> bool {
        match address.checked_add(length) {
            Some(span_end) => length != 0 && self.base <= address && span_end <= self.end(),
            None => false,
        }
    }

    /// The addresses both ranges cover, or `None` when they are disjoint.
    pub fn intersection(self, other: AddressRange) -> Option<AddressRange> {
        let base = self.base.max(other.base);
        let end = self.end().min(other.end());
        if base < end {
            AddressRange::new(base, end - base).ok()
        } else {
            None
        }
    }
}

impl std::fmt::Debug for AddressRange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "[{:#x}, {:#x})", self.base, self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_range_rejects_zero_length_and_overflow() {
        assert_eq!(AddressRange::new(0x1000, 0), Err(CaveatError::ZeroLength));
        assert_eq!(
            AddressRange::new(u64::MAX, 1),
            Err(CaveatError::RangeOverflow {
                base: u64::MAX,
                length: 1
            })
        );
        let top = AddressRange::new(u64::MAX - 1, 1).expect("last representable byte range");
        assert_eq!(top.end(), u64::MAX);
    }

    #[test]
    fn address_range_intersection_is_the_common_part() {
        let left = AddressRange::new(0x1000, 0x1000).unwrap();
        let right = AddressRange::new(0x1800, 0x1000).unwrap();
        assert_eq!(
            left.intersection(right),
            Some(AddressRange::new(0x1800, 0x800).unwrap())
        );
        let disjoint = AddressRange::new(0x2000, 0x10).unwrap();
        assert_eq!(left.intersection(disjoint), None);
    }

    #[test]
    fn contains_span_rejects_empty_overflowing_and_partial_spans() {
        let range = AddressRange::new(0x1000, 0x100).unwrap();
        assert!(range.contains_span(0x1000, 0x100));
        assert!(!range.contains_span(0x1000, 0));
        assert!(!range.contains_span(0x10ff, 2));
        assert!(!range.contains_span(u64::MAX, 2));
    }

    #[test]
    fn rights_reject_undefined_bits_and_intersect() {
        assert_eq!(
            Rights::from_bits(0b100),
            Err(CaveatError::UndefinedRightsBits(0b100))
        );
        assert_eq!(Rights::READ_WRITE.intersection(Rights::READ), Rights::READ);
        assert!(Rights::READ.is_subset_of(Rights::READ_WRITE));
        assert!(!Rights::READ_WRITE.is_subset_of(Rights::WRITE));
        assert!(Rights::WRITE.allows(AccessKind::Write));
        assert!(!Rights::WRITE.allows(AccessKind::Read));
    }
}
