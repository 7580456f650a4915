//! A faithful macaroon baseline: libmacaroons' V2 binary format and HMAC-SHA256 chain
//!
//! What libmacaroons does for a first-party macaroon, step by step: the root key is first
//! stretched as `HMAC-SHA256("macaroons-key-generator" zero-padded to 32 bytes, root key)`;
//! the signature starts as `HMAC(derived key, identifier)` and each caveat replaces it with
//! `HMAC(signature, caveat id)`. The V2 binary encoding is a version byte `0x02`, then fields
//! of `type, varint length, bytes` (1 location, 2 identifier, 4 verifier id, 6 signature)
//! with `0x00` closing each section. Caveats are text predicates the verifier parses.
//!
//! `tests/macaroon_baseline.rs` checks this code against published reference vectors: the
//! libmacaroons example signatures (as collected by the macarooncompat project) and a V2
//! binary encoding from the `macaroon` crate's tests, so the baseline is the real construction
//! and format, not a strawman. HMAC-SHA256 here is RustCrypto's (SHA-NI when the CPU has it),
//! the same code the HMAC suite of cxl-lab-cap uses, so the comparison isolates the construction.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const VERSION: u8 = 2;
const EOS: u8 = 0;
const LOCATION: u8 = 1;
const IDENTIFIER: u8 = 2;
const SIGNATURE: u8 = 6;
const KEY_GENERATOR: &[u8; 32] = b"macaroons-key-generator\0\0\0\0\0\0\0\0\0";

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut hmac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    hmac.update(message);
    hmac.finalize().into_bytes().into()
}

/// libmacaroons' key derivation from a root key of any length.
pub fn derive_key(root_key: &[u8]) -> [u8; 32] {
    hmac_sha256(KEY_GENERATOR, root_key)
}

fn push_varint(mut value: usize, output: &mut Vec<u8>) {
    while value >= 0x80 {
        output.push((value as u8) | 0x80);
        value >>= 7;
    }
    output.push(value as u8);
}

fn push_field(field_type: u8, value: &[u8], output: &mut Vec<u8>) {
    output.push(field_type);
    push_varint(value.len(), output);
    output.extend_from_slice(value);
}

/// The libmacaroons signature of a first-party macaroon: the chain over identifier and caveats.
/// The location is not MACed, as in libmacaroons.
pub fn signature(derived_key: &[u8; 32], identifier: &[u8], caveats: &[&str]) -> [u8; 32] {
    let mut signature = hmac_sha256(derived_key, identifier);
    for caveat in caveats {
        signature = hmac_sha256(&signature, caveat.as_bytes());
    }
    signature
}

/// The V2 binary encoding of a first-party macaroon.
pub fn encode(
    location: Option<&str>,
    identifier: &[u8],
    caveats: &[&str],
    signature: &[u8; 32],
) -> Vec<u8> {
    let mut encoded = vec![VERSION];
    if let Some(location) = location {
        push_field(LOCATION, location.as_bytes(), &mut encoded);
    }
    push_field(IDENTIFIER, identifier, &mut encoded);
    encoded.push(EOS);
    for caveat in caveats {
        push_field(IDENTIFIER, caveat.as_bytes(), &mut encoded);
        encoded.push(EOS);
    }
    encoded.push(EOS);
    push_field(SIGNATURE, signature, &mut encoded);
    encoded
}

/// Mints a first-party macaroon without location and returns its V2 binary encoding.
pub fn mint(derived_key: &[u8; 32], identifier: &[u8], caveats: &[&str]) -> Vec<u8> {
    let signature = signature(derived_key, identifier, caveats);
    encode(None, identifier, caveats, &signature)
}

/// A decoded V2 macaroon, borrowing from the encoding.
pub struct Decoded<'bytes> {
    // Not MACed and not needed to verify; tests/macaroon_baseline.rs reads it.
    #[allow(dead_code)]
    pub location: Option<&'bytes [u8]>,
    pub identifier: &'bytes [u8],
    pub caveats: Vec<&'bytes [u8]>,
    pub signature: &'bytes [u8],
}

struct Reader<'bytes> {
    bytes: &'bytes [u8],
    position: usize,
}

impl<'bytes> Reader<'bytes> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.position)?;
        self.position += 1;
        Some(byte)
    }

    fn field_body(&mut self) -> Option<&'bytes [u8]> {
        let mut length = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            length |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                let body = self.bytes.get(self.position..self.position + length)?;
                self.position += length;
                return Some(body);
            }
        }
        None
    }

    fn expect_field(&mut self, field_type: u8) -> Option<&'bytes [u8]> {
        (self.byte()? == field_type).then_some(())?;
        self.field_body()
    }
}

/// Decodes a V2 macaroon with first-party caveats only (third-party ones are not used here).
pub fn decode(bytes: &[u8]) -> Option<Decoded<'_>> {
    let mut reader = Reader { bytes, position: 0 };
    (reader.byte()? == VERSION).then_some(())?;
    let location = match bytes.get(reader.position) {
        Some(&LOCATION) => reader.expect_field(LOCATION),
        _ => None,
    };
    let identifier = reader.expect_field(IDENTIFIER)?;
    (reader.byte()? == EOS).then_some(())?;
    let mut caveats = Vec::with_capacity(4);
    loop {
        match reader.byte()? {
            EOS => break,
            IDENTIFIER => {
                caveats.push(reader.field_body()?);
                (reader.byte()? == EOS).then_some(())?;
            }
            _ => return None,
        }
    }
    let signature = reader.expect_field(SIGNATURE)?;
    (reader.position == bytes.len() && signature.len() == 32).then_some(Decoded {
        location,
        identifier,
        caveats,
        signature,
    })
}

/// Decodes, checks every caveat with `caveat_holds`, recomputes the chain and compares the
/// signature in constant time, as libmacaroons' `macaroon_verify` does.
pub fn verify(derived_key: &[u8; 32], bytes: &[u8], caveat_holds: impl Fn(&[u8]) -> bool) -> bool {
    let Some(decoded) = decode(bytes) else {
        return false;
    };
    let mut signature = hmac_sha256(derived_key, decoded.identifier);
    let mut every_caveat_holds = true;
    for caveat in &decoded.caveats {
        every_caveat_holds &= caveat_holds(caveat);
        signature = hmac_sha256(&signature, caveat);
    }
    every_caveat_holds && bool::from(signature.ct_eq(decoded.signature))
}
