//! Shared fixtures: a device, a standard three-caveat token, requests, and raw byte surgery
//! that an adversary could perform without the device secret

use cxl_lab_cap::{
    AccessKind, AccessRequest, AddressRange, Caveat, Device, DeviceConfig, DeviceId, Epoch, Policy,
    RequesterId, Revocation, Rights, RootSecret, Timestamp, Token,
};

pub const DEVICE_ID: DeviceId = DeviceId(0x42);
pub const CAPACITY_BYTES: u64 = 1 << 34;
pub const GRANT_BASE: u64 = 0x1_0000_0000;
pub const GRANT_LENGTH: u64 = 0x10_0000;
pub const NOW: Timestamp = Timestamp::from_millis(1_760_000_000_000);
pub const NOT_AFTER: Timestamp = Timestamp::from_millis(1_760_000_060_000);
pub const REQUESTER: RequesterId = RequesterId(0x0a1);
pub const TAG_LEN: usize = cxl_lab_cap::TAG_LEN;

pub fn secret() -> RootSecret {
    RootSecret::from_bytes(*b"cxl-lab-cap conformance secret!!")
}

pub fn device_with_policy(policy: Policy) -> Device {
    let mut config = DeviceConfig::new(DEVICE_ID, CAPACITY_BYTES);
    config.policy = policy;
    Device::new(config, secret()).expect("valid test configuration")
}

pub fn device() -> Device {
    device_with_policy(Policy::default())
}

/// A device with the standard secret that starts in `epoch`.
pub fn device_at_epoch(epoch: Epoch) -> Device {
    let mut config = DeviceConfig::new(DEVICE_ID, CAPACITY_BYTES);
    config.initial_epoch = epoch;
    Device::new(config, secret()).expect("valid test configuration")
}

/// Revokes `token` and its family, named by epoch and id as the device's owner names it.
pub fn revoke(device: &Device, token: &Token) -> Revocation {
    let identifier = token.identifier();
    device
        .revoke_token(identifier.epoch, identifier.token_id)
        .expect("a token this device minted")
}

pub fn range(base: u64, length: u64) -> AddressRange {
    AddressRange::new(base, length).expect("valid test range")
}

/// Range, rights and not-after: the capability the benchmarks measure too.
pub fn standard_caveats() -> [Caveat; 3] {
    [
        Caveat::Range(range(GRANT_BASE, GRANT_LENGTH)),
        Caveat::Rights(Rights::READ_WRITE),
        Caveat::NotAfter(NOT_AFTER),
    ]
}

pub fn standard_token(device: &Device) -> Token {
    device
        .mint(&standard_caveats())
        .expect("mint standard token")
}

/// A read of 64 bytes at the start of the standard grant, by the standard requester, now.
pub fn read_request() -> AccessRequest {
    AccessRequest {
        requester: REQUESTER,
        address: GRANT_BASE,
        length: 64,
        access: AccessKind::Read,
        now: NOW,
    }
}

pub fn request_at(address: u64, length: u64, access: AccessKind) -> AccessRequest {
    AccessRequest {
        address,
        length,
        access,
        ..read_request()
    }
}

/// Offset of the caveat count byte: right after the identifier.
pub fn caveat_count_offset(token: &Token) -> usize {
    let mut identifier_bytes = Vec::new();
    token.identifier().encode(&mut identifier_bytes);
    identifier_bytes.len()
}

/// The token's tag, which its holder knows.
pub fn tag_of(token_bytes: &[u8]) -> [u8; TAG_LEN] {
    token_bytes[token_bytes.len() - TAG_LEN..]
        .try_into()
        .unwrap()
}

/// The encoding of one caveat.
pub fn caveat_bytes(caveat: Caveat) -> Vec<u8> {
    let mut bytes = Vec::new();
    caveat.encode(&mut bytes);
    bytes
}

/// What an adversary holding a keyed-BLAKE3 token can build without the device: the token
/// with `raw_caveat` appended (any bytes at all) and a correctly chained tag.
pub fn append_raw_caveat(token: &Token, raw_caveat: &[u8]) -> Vec<u8> {
    let bytes = token.as_bytes();
    let count_offset = caveat_count_offset(token);
    let new_tag = blake3::keyed_hash(&tag_of(bytes), raw_caveat);
    let mut forged = bytes[..bytes.len() - TAG_LEN].to_vec();
    forged[count_offset] += 1;
    forged.extend_from_slice(raw_caveat);
    forged.extend_from_slice(new_tag.as_bytes());
    forged
}

/// The token's bytes between the count byte and the tag, one slice per caveat.
pub fn caveat_slices(token: &Token) -> Vec<Vec<u8>> {
    token
        .caveats()
        .iter()
        .map(|caveat| caveat_bytes(*caveat))
        .collect()
}

/// Reassembles a token from an identifier prefix (up to and excluding the count byte),
/// caveat encodings and a tag, with a count byte that matches.
pub fn assemble(identifier_bytes: &[u8], caveats: &[Vec<u8>], tag: &[u8; TAG_LEN]) -> Vec<u8> {
    let mut bytes = identifier_bytes.to_vec();
    bytes.push(caveats.len() as u8);
    for caveat in caveats {
        bytes.extend_from_slice(caveat);
    }
    bytes.extend_from_slice(tag);
    bytes
}

/// The identifier bytes of a token.
pub fn identifier_bytes(token: &Token) -> Vec<u8> {
    token.as_bytes()[..caveat_count_offset(token)].to_vec()
}
