//! Typed errors of every operation: decoding, minting, attenuating, verifying, installing grants
//!
//! Each verification failure has its own variant so that a device service can log why a request
//! was refused and so that the conformance tests can assert the exact reason, not just "denied".
//! Messages never contain key material or tags.

use crate::caveat::CaveatKind;
use crate::mac::Algorithm;
use crate::values::{AccessKind, AddressRange, DeviceId, Epoch, RequesterId, Timestamp, TokenId};

/// A caveat value that cannot exist: the wire decoder and the constructors both report these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaveatError {
    /// An address range of zero bytes would grant nothing and has no canonical base.
    #[error("address range has zero length")]
    ZeroLength,
    /// `base + length` does not fit in 64 bits.
    #[error("address range base {base:#x} plus length {length:#x} overflows 64 bits")]
    RangeOverflow { base: u64, length: u64 },
    /// A rights byte with bits other than read and write set.
    #[error("rights byte {0:#04x} sets undefined bits")]
    UndefinedRightsBits(u8),
    /// A holder caveat whose requester id does not fit in 16 bits.
    #[error("requester id {0} does not fit in 16 bits")]
    RequesterIdTooLarge(u64),
}

/// Why a byte string is not a canonical token encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field, or a length points past the end.
    #[error("token ends at byte {offset} inside the {field}")]
    UnexpectedEnd { offset: usize, field: &'static str },
    /// A varint with a redundant trailing zero group; canonical encoding allows only one form.
    #[error("varint at byte {offset} is not minimally encoded")]
    NonMinimalVarint { offset: usize },
    /// A varint longer than ten bytes or with bits beyond 64.
    #[error("varint at byte {offset} overflows 64 bits")]
    VarintOverflow { offset: usize },
    /// A format version this library does not speak.
    #[error("unsupported token format version {0}")]
    UnsupportedVersion(u8),
    /// An algorithm byte naming no known MAC suite.
    #[error("unknown MAC algorithm {0}")]
    UnknownAlgorithm(u8),
    /// More caveats than the format allows; checked before any caveat is read.
    #[error("token declares {count} caveats, the format allows at most {max}")]
    TooManyCaveats { count: usize, max: usize },
    /// A caveat type byte this library does not know: fail closed, never skip.
    #[error("unknown caveat type {type_byte:#04x} at byte {offset}")]
    UnknownCaveatType { offset: usize, type_byte: u8 },
    /// A caveat of a known type whose value cannot exist.
    #[error("invalid caveat at byte {offset}: {reason}")]
    InvalidCaveat { offset: usize, reason: CaveatError },
    /// Bytes after the tag.
    #[error("{count} trailing bytes after the tag")]
    TrailingBytes { count: usize },
}

/// Why the device refused to mint a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// A range caveat reaching past the device's capacity.
    #[error("range {range:?} reaches past the device capacity of {capacity_bytes:#x} bytes")]
    RangeBeyondDevice {
        range: AddressRange,
        capacity_bytes: u64,
    },
    /// More caveats than the device's policy accepts.
    #[error("{count} caveats exceed the limit of {max}")]
    TooManyCaveats { count: usize, max: usize },
    /// The caveats break one of their own delegation limits; the device would refuse the token.
    #[error("caveat {index} allows {limit} further caveats, {following} follow it")]
    DelegationLimitExceeded {
        index: usize,
        limit: u8,
        following: usize,
    },
    /// Every token id of the epoch is used up (the counter never wraps, since a reused id
    /// would make one revocation hit two tokens). Bumping the epoch restarts the ids.
    #[error("every token id of epoch {epoch:?} has been minted; bump the epoch")]
    TokenIdsExhausted { epoch: Epoch },
}

/// Why a holder could not attenuate a token. Attenuation needs no secret; these are the format
/// limits, checked early as a courtesy since the verifier would refuse the result anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttenuateError {
    /// The token already holds the maximum number of caveats.
    #[error("token already holds {max} caveats, the format maximum")]
    TooManyCaveats { max: usize },
    /// An earlier delegation-limit caveat forbids another caveat.
    #[error("delegation limit of caveat {index} allows no further caveat")]
    DelegationLimitReached { index: usize },
}

/// Why the device refused a token or a request made with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The bytes are not a canonical token.
    #[error("malformed token: {0}")]
    Decode(#[from] DecodeError),
    /// The token is longer than the device's policy accepts.
    #[error("token is {length} bytes, policy accepts at most {max}")]
    TokenTooLarge { length: usize, max: usize },
    /// The token has more caveats than the device's policy accepts.
    #[error("token has {count} caveats, policy accepts at most {max}")]
    TooManyCaveats { count: usize, max: usize },
    /// The token was minted by another device.
    #[error("token is for device {found:?}, this is device {expected:?}")]
    WrongDevice { expected: DeviceId, found: DeviceId },
    /// The token's MAC suite is not accepted by this device's policy.
    #[error("algorithm {0:?} is not accepted by this device")]
    AlgorithmNotAccepted(Algorithm),
    /// The token belongs to another key epoch: an old one after a bump, or one not yet reached.
    #[error("token is from key epoch {token_epoch:?}, the device is at {current_epoch:?}")]
    WrongEpoch {
        token_epoch: Epoch,
        current_epoch: Epoch,
    },
    /// The token id is in the deny set.
    #[error("token {0:?} has been revoked")]
    Revoked(TokenId),
    /// The tag does not match the chain recomputed from the device key: forged or altered.
    #[error("tag does not match the caveat chain")]
    BadTag,
    /// The device's policy demands a caveat kind the token lacks.
    #[error("policy requires a {0:?} caveat")]
    MissingRequiredCaveat(CaveatKind),
    /// More caveats follow a delegation-limit caveat than it allows.
    #[error("caveat {index} allows {limit} further caveats, {following} follow it")]
    DelegationLimitExceeded {
        index: usize,
        limit: u8,
        following: usize,
    },
    /// A range caveat reaches past the end of the device.
    #[error("range {range:?} reaches past the device capacity of {capacity_bytes:#x} bytes")]
    RangeBeyondDevice {
        range: AddressRange,
        capacity_bytes: u64,
    },
    /// Range caveats that do not overlap: the token grants no address at all.
    #[error("range caveats do not overlap, no address is granted")]
    NoAddressGranted,
    /// A request for zero bytes.
    #[error("request has zero length")]
    EmptyRequest,
    /// `address + length` of the request overflows 64 bits.
    #[error("request at {address:#x} of {length:#x} bytes overflows 64 bits")]
    RequestOverflow { address: u64, length: u64 },
    /// The request reaches past the end of the device.
    #[error("request at {address:#x} of {length:#x} bytes reaches past the device")]
    RequestBeyondDevice { address: u64, length: u64 },
    /// Some byte of the request lies outside the intersection of the token's ranges.
    #[error("request at {address:#x} of {length:#x} bytes is outside the granted range")]
    OutsideGrantedRange { address: u64, length: u64 },
    /// The token does not grant this kind of access.
    #[error("{0:?} access is not granted")]
    RightsNotGranted(AccessKind),
    /// The device clock is past the token's not-after plus the allowed skew.
    #[error("token expired at {not_after:?}, device time is {now:?}")]
    Expired {
        not_after: Timestamp,
        now: Timestamp,
    },
    /// The token is bound to another requester.
    #[error("token is not held by requester {0:?}")]
    WrongHolder(RequesterId),
}

/// Why a grant could not be installed in the access-check table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// The token does not verify for this requester at this time.
    #[error("token does not verify: {0}")]
    Verify(#[from] VerifyError),
    /// The requester already holds the maximum number of installed grants.
    #[error("requester {requester:?} already holds {max} installed grants")]
    TableFull { requester: RequesterId, max: usize },
}

/// Why the device's configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A device of zero bytes.
    #[error("device capacity is zero")]
    ZeroCapacity,
    /// A policy caveat limit above what the format can carry.
    #[error("policy allows {requested} caveats, the format carries at most {max}")]
    CaveatLimitAboveFormat { requested: usize, max: usize },
    /// The device would mint tokens it then refuses.
    #[error("mint algorithm {0:?} is not in the accepted algorithms")]
    MintAlgorithmNotAccepted(Algorithm),
    /// A grant table that can hold nothing.
    #[error("grants per requester is zero")]
    NoGrantsPerRequester,
}

/// Why the device refused to move to the next key epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// The epoch counter is at its maximum. Wrapping would bring back the keys of epoch 0 and
    /// with them every token of that epoch, so the device stays where it is: it needs a new
    /// root secret.
    #[error("key epoch {0:?} is the last one; provision a new root secret instead of bumping")]
    Exhausted(Epoch),
}

/// Why a revocation was refused. Revoking is scoped to one epoch: token ids restart at 1 in
/// every epoch, so an id alone does not name a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// No token of this epoch can exist yet; revoking would kill a token before it is minted.
    #[error("epoch {requested:?} has not begun, the device is in epoch {current:?}")]
    FutureEpoch { requested: Epoch, current: Epoch },
    /// This id has not been minted in the current epoch; revoking it would kill a token minted
    /// later.
    #[error("token id {token_id:?} has not been minted in epoch {epoch:?}")]
    NotMinted { epoch: Epoch, token_id: TokenId },
}
