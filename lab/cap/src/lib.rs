//! Decentralized, macaroon-style capabilities for CXL device memory
//!
//! A capability is a small binary token (under 64 bytes for a range, rights and expiry) that
//! grants access to a range of one device's memory. Its holder can narrow it (smaller range,
//! fewer rights, sooner expiry, bound to one requester, limited further delegation) and hand it
//! on without asking anyone; only the device, which holds the root secret, can check it; nobody
//! can widen it or forge one. The wire format is specified in `docs/capability-format.md`.
//!
//! ```
//! use cxl_lab_cap::{
//!     AccessKind, AccessRequest, AddressRange, Caveat, Device, DeviceConfig, DeviceId,
//!     RequesterId, Rights, RootSecret, Timestamp, Token, VerifyError,
//! };
//!
//! // The device service owns the secret (from a hardware RNG in real life).
//! let device = Device::new(
//!     DeviceConfig::new(DeviceId(7), 1 << 30),
//!     RootSecret::from_bytes([0x5a; 32]),
//! )?;
//! let now = Timestamp::from_millis(1_760_000_000_000);
//!
//! // The device mints a read-write capability for 1 MiB at 16 MiB, valid for a minute.
//! let granted = device.mint(&[
//!     Caveat::Range(AddressRange::new(16 << 20, 1 << 20)?),
//!     Caveat::Rights(Rights::READ_WRITE),
//!     Caveat::NotAfter(now.saturating_add_millis(60_000)),
//! ])?;
//!
//! // Its holder narrows it to 4 KiB, read-only, for requester 3, without asking anyone.
//! let wire_bytes = granted.as_bytes().to_vec();
//! let narrowed = Token::decode(&wire_bytes)?.attenuate_all(&[
//!     Caveat::Range(AddressRange::new(16 << 20, 4096)?),
//!     Caveat::Rights(Rights::READ),
//!     Caveat::Holder(RequesterId(3)),
//! ])?;
//!
//! // Only the device can check it.
//! let read = AccessRequest {
//!     requester: RequesterId(3),
//!     address: 16 << 20,
//!     length: 64,
//!     access: AccessKind::Read,
//!     now,
//! };
//! assert!(device.verify(narrowed.as_bytes(), &read).is_ok());
//! let write = AccessRequest { access: AccessKind::Write, ..read };
//! assert_eq!(
//!     device.verify(narrowed.as_bytes(), &write),
//!     Err(VerifyError::RightsNotGranted(AccessKind::Write))
//! );
//!
//! // Installed once, each access is a table lookup instead of a MAC chain.
//! device.install_grant(narrowed.as_bytes(), RequesterId(3), now)?;
//! assert!(device.check_access(&read).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Code map:
//! - [`wire`]: minimal varints and a bounds-checked reader.
//! - `values`, `caveat`, `format`: the model and its canonical encoding.
//! - `mac`: MAC suites, key derivation, zeroizing secrets, constant-time comparison.
//! - `token`: minting and attenuation.
//! - `authority`: the intersection of a token's caveats.
//! - `verify`, `tag_cache`: the verification algorithm and the verified-tag cache.
//! - `grants`, `device`: the access-check table and the device that ties it all together.
//!
//! Invariants: no function outside `device` and `verify` ever sees an epoch key; nothing
//! prints a key or a tag; the decoder never skips a byte it does not understand.

mod authority;
mod caveat;
mod device;
mod error;
mod format;
mod grants;
mod mac;
mod tag_cache;
mod token;
mod values;
mod verify;
pub mod wire;

pub use authority::{Authority, HolderLimit, RangeLimit};
pub use caveat::{Caveat, CaveatKind, MAX_CAVEAT_LEN};
pub use device::{AccessDenied, Device, DeviceConfig, Revocation};
pub use error::{
    AttenuateError, CaveatError, ConfigError, DecodeError, EpochError, InstallError, MintError,
    RevokeError, VerifyError,
};
pub use format::{TokenIdentifier, FORMAT_VERSION, MAX_CAVEATS, MAX_TOKEN_LEN};
pub use grants::{GrantTable, InstalledGrant, RequesterIdHasher};
pub use mac::{Algorithm, RootSecret, TAG_LEN};
pub use token::Token;
pub use values::{
    AccessKind, AddressRange, DeviceId, Epoch, RequesterId, Rights, Timestamp, TokenId,
};
pub use verify::{AccessRequest, Policy, Verified};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_is_send_and_sync_for_sharing_across_service_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Device>();
        assert_send_sync::<Token>();
    }
}
