//! Tokens: minting (device only, crate-private) and attenuation (anyone, no secret)
//!
//! A [`Token`] owns its canonical bytes plus the decoded identifier and caveats. Attenuation
//! appends one caveat and replaces the tag with `MAC(old tag, caveat bytes)`: the old tag is
//! the key, so the holder needs nothing from the device, and the old tag is gone from the new
//! token, so nobody downstream can remove the caveat again.

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::caveat::Caveat;
use crate::error::{AttenuateError, DecodeError};
use crate::format::{encode_token, ParsedToken, TokenIdentifier, MAX_CAVEATS};
use crate::mac::{chain_step, ChainValue, TAG_LEN};

/// A capability token: identifier, caveats and tag, with its canonical bytes.
///
/// The tag is the bearer secret of the token, so `Debug` leaves it out, equality is
/// constant-time and the bytes are zeroized when the token is dropped.
#[derive(Clone)]
pub struct Token {
    bytes: Vec<u8>,
    identifier: TokenIdentifier,
    caveats: Vec<Caveat>,
}

impl Token {
    /// Runs the MAC chain from `epoch_key` over the identifier and `caveats`. Only the device
    /// holds an epoch key, so only the device can call this (through `Device::mint`).
    pub(crate) fn mint(
        identifier: TokenIdentifier,
        epoch_key: &ChainValue,
        caveats: &[Caveat],
    ) -> Token {
        let mut identifier_bytes = Vec::new();
        identifier.encode(&mut identifier_bytes);
        let mut chain_value = chain_step(identifier.algorithm, epoch_key, &identifier_bytes);
        let mut caveat_bytes = Vec::new();
        for caveat in caveats {
            caveat_bytes.clear();
            caveat.encode(&mut caveat_bytes);
            chain_value = chain_step(identifier.algorithm, &chain_value, &caveat_bytes);
        }
        Token {
            bytes: encode_token(&identifier, caveats, chain_value.as_bytes()),
            identifier,
            caveats: caveats.to_vec(),
        }
    }

    /// Decodes a canonical token. This checks the encoding only; whether the tag is genuine is
    /// something only the device can tell.
    pub fn decode(bytes: &[u8]) -> Result<Token, DecodeError> {
        let parsed = ParsedToken::parse(bytes)?;
        Ok(Token {
            bytes: bytes.to_vec(),
            identifier: parsed.identifier,
            caveats: parsed.caveats().collect(),
        })
    }

    /// The canonical encoding, to hand to another holder or to the device.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Encodes the token afresh from its decoded identifier, caveats and tag. Because the
    /// format is canonical this always equals [`Token::as_bytes`]; the property tests and the
    /// fuzzer check exactly that.
    pub fn reencode_from_parts(&self) -> Vec<u8> {
        encode_token(&self.identifier, &self.caveats, self.tag().as_bytes())
    }

    /// Which device, epoch, suite and token id this is.
    pub fn identifier(&self) -> &TokenIdentifier {
        &self.identifier
    }

    /// The caveats in chain order.
    pub fn caveats(&self) -> &[Caveat] {
        &self.caveats
    }

    /// The tag, which keys the next attenuation.
    pub(crate) fn tag(&self) -> ChainValue {
        let tag_start = self.bytes.len() - TAG_LEN;
        let tag_bytes: [u8; TAG_LEN] = self.bytes[tag_start..].try_into().expect("tag length");
        ChainValue::from_bytes(tag_bytes)
    }

    /// A new token that carries one more caveat. Needs no secret.
    ///
    /// Refuses what the verifier would refuse anyway (too many caveats, a delegation limit
    /// already used up) so that a holder finds out before handing the token on. It does not
    /// refuse a caveat that is wider than an earlier one: that is harmless, because every
    /// caveat must hold, and the verifier intersects them.
    pub fn attenuate(&self, caveat: Caveat) -> Result<Token, AttenuateError> {
        if self.caveats.len() >= MAX_CAVEATS {
            return Err(AttenuateError::TooManyCaveats { max: MAX_CAVEATS });
        }
        let caveats_after_new = self.caveats.len() + 1;
        for (index, existing) in self.caveats.iter().enumerate() {
            if let Caveat::DelegationLimit(limit) = existing {
                if caveats_after_new - index - 1 > usize::from(*limit) {
                    return Err(AttenuateError::DelegationLimitReached { index });
                }
            }
        }
        let mut caveat_bytes = Vec::with_capacity(caveat.encoded_len());
        caveat.encode(&mut caveat_bytes);
        let new_tag = chain_step(self.identifier.algorithm, &self.tag(), &caveat_bytes);
        let mut caveats = self.caveats.clone();
        caveats.push(caveat);
        Ok(Token {
            bytes: encode_token(&self.identifier, &caveats, new_tag.as_bytes()),
            identifier: self.identifier,
            caveats,
        })
    }

    /// [`Token::attenuate`] with each caveat of `caveats` in turn.
    pub fn attenuate_all(&self, caveats: &[Caveat]) -> Result<Token, AttenuateError> {
        let mut token = self.clone();
        for caveat in caveats {
            token = token.attenuate(*caveat)?;
        }
        Ok(token)
    }
}

impl PartialEq for Token {
    /// Compares the canonical bytes, tag included, in time that depends only on their lengths
    /// (which are public): a comparison with a guessed token must not tell how much of the tag
    /// was right. The identifier and caveats are decoded from the bytes, so equal bytes are
    /// equal tokens.
    fn eq(&self, other: &Token) -> bool {
        bool::from(self.bytes.as_slice().ct_eq(other.bytes.as_slice()))
    }
}

impl Eq for Token {}

impl Drop for Token {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Token")
            .field("identifier", &self.identifier)
            .field("caveats", &self.caveats)
            .field("length", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Algorithm;
    use crate::values::{DeviceId, Epoch, Rights, TokenId};

    #[test]
    fn equality_covers_the_whole_token_tag_included() {
        let identifier = TokenIdentifier {
            algorithm: Algorithm::KeyedBlake3,
            device_id: DeviceId(1),
            epoch: Epoch(1),
            token_id: TokenId(1),
        };
        let token = Token::mint(identifier, &ChainValue::from_bytes([1; TAG_LEN]), &[]);
        assert_eq!(token, Token::decode(token.as_bytes()).unwrap());
        let mut other_tag = token.as_bytes().to_vec();
        *other_tag.last_mut().unwrap() ^= 1;
        assert_ne!(token, Token::decode(&other_tag).unwrap());
        assert_ne!(
            token,
            token.attenuate(Caveat::Rights(Rights::READ)).unwrap()
        );
    }
}
