//! Verified-tag cache: chain values the device has already computed, keyed by the exact chain
//! input, so that re-verifying a token costs no MAC and verifying a child of a verified token
//! costs one
//!
//! The key is the chain input itself (identifier bytes followed by the caveat bytes), compared
//! byte for byte, and the value is the chain value the device computed from its own key. So a
//! hit is exactly as trustworthy as recomputing: no attacker-supplied tag is ever stored, only
//! tags that matched the device's own computation. The cache holds MAC validity only; epoch,
//! deny set, policy and caveats are checked on every verification, before and after the cache.
//!
//! Attenuation is free, so a holder of one valid token can mint endless valid children and
//! flood the cache. The cache therefore keeps two generations: new entries go into the current
//! one, and when it is full it becomes the previous one and the old previous one is dropped. A
//! hit in the previous generation moves the entry back into the current one, so a parent that
//! is in use (every child verification looks it up) survives any flood, while entries nobody
//! asks for age out after two generations. The worst a flood achieves is cold verification of
//! tokens not used in the meantime, never a wrong answer.

use std::collections::HashMap;

use crate::format::ParsedToken;
use crate::mac::ChainValue;

/// What the cache knows about a token's chain.
pub(crate) enum CachedChain {
    /// The chain value of the whole token: compare it with the tag, no MAC needed.
    WholeToken(ChainValue),
    /// The chain value of the token without its last caveat: one MAC finishes the chain.
    Parent(ChainValue),
    /// Nothing: run the whole chain from the epoch key.
    Miss,
}

/// Two-generation bounded map from chain input to the chain value the device computed for it.
pub(crate) struct TagCache {
    generation_capacity: usize,
    // SipHash with a random key (the std default) keeps attacker-chosen keys from colliding on
    // purpose; the keys are public token bytes, so comparing them in variable time is fine.
    current: HashMap<Box<[u8]>, ChainValue>,
    previous: HashMap<Box<[u8]>, ChainValue>,
    // Reused between calls so that a lookup does not allocate.
    key_scratch: Vec<u8>,
}

/// Writes the chain input of `parsed` restricted to its first `caveat_prefix_len` caveats: the
/// identifier followed by those caveats, without the caveat count byte (which differs between
/// a parent and its child while their chain inputs share a prefix).
fn write_chain_input(scratch: &mut Vec<u8>, parsed: &ParsedToken<'_>, caveat_prefix_len: usize) {
    scratch.clear();
    scratch.extend_from_slice(parsed.identifier_bytes());
    scratch.extend_from_slice(parsed.caveat_prefix_bytes(caveat_prefix_len));
}

impl TagCache {
    /// A cache of at most `capacity` chain values across both generations.
    pub fn new(capacity: usize) -> Self {
        let generation_capacity = capacity.div_ceil(2);
        TagCache {
            generation_capacity,
            current: HashMap::with_capacity(generation_capacity.min(1 << 15)),
            previous: HashMap::new(),
            key_scratch: Vec::new(),
        }
    }

    /// The chain value stored for the chain input in the scratch buffer, promoting it to the
    /// current generation if it was only in the previous one.
    fn get_scratch_key(&mut self) -> Option<ChainValue> {
        if let Some(chain_value) = self.current.get(self.key_scratch.as_slice()) {
            return Some(chain_value.clone());
        }
        let (key, chain_value) = self.previous.remove_entry(self.key_scratch.as_slice())?;
        self.insert(key, chain_value.clone());
        Some(chain_value)
    }

    fn insert(&mut self, key: Box<[u8]>, chain_value: ChainValue) {
        if self.current.len() >= self.generation_capacity {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, chain_value);
    }

    /// The longest cached chain value useful for `parsed`: the whole token, else its parent.
    pub fn lookup(&mut self, parsed: &ParsedToken<'_>) -> CachedChain {
        let caveat_count = parsed.caveat_count();
        write_chain_input(&mut self.key_scratch, parsed, caveat_count);
        if let Some(whole_token) = self.get_scratch_key() {
            return CachedChain::WholeToken(whole_token);
        }
        if caveat_count == 0 {
            return CachedChain::Miss;
        }
        write_chain_input(&mut self.key_scratch, parsed, caveat_count - 1);
        match self.get_scratch_key() {
            Some(parent) => CachedChain::Parent(parent),
            None => CachedChain::Miss,
        }
    }

    /// Remembers `tag` as the chain value of all of `parsed`. Call only after the device's own
    /// computation matched the token's tag.
    pub fn remember(&mut self, parsed: &ParsedToken<'_>, tag: &ChainValue) {
        if self.generation_capacity == 0 {
            return;
        }
        write_chain_input(&mut self.key_scratch, parsed, parsed.caveat_count());
        self.insert(self.key_scratch.as_slice().into(), tag.clone());
    }

    /// Forgets everything, e.g. when the key epoch changes.
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }

    /// Number of cached chain values.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caveat::Caveat;
    use crate::format::{encode_token, TokenIdentifier};
    use crate::mac::{Algorithm, TAG_LEN};
    use crate::values::{DeviceId, Epoch, Timestamp, TokenId};

    fn encoded(token_id: u64, caveats: &[Caveat]) -> Vec<u8> {
        let identifier = TokenIdentifier {
            algorithm: Algorithm::KeyedBlake3,
            device_id: DeviceId(1),
            epoch: Epoch(1),
            token_id: TokenId(token_id),
        };
        encode_token(&identifier, caveats, &[0; TAG_LEN])
    }

    fn not_after(millis: u64) -> Caveat {
        Caveat::NotAfter(Timestamp::from_millis(millis))
    }

    #[test]
    fn a_parent_in_use_survives_a_flood_of_its_children() {
        let mut cache = TagCache::new(8);
        let parent = encoded(1, &[not_after(0)]);
        let parent_value = ChainValue::from_bytes([7; TAG_LEN]);
        cache.remember(&ParsedToken::parse(&parent).unwrap(), &parent_value);
        for child_index in 1..100 {
            let child = encoded(1, &[not_after(0), not_after(child_index)]);
            let parsed_child = ParsedToken::parse(&child).unwrap();
            match cache.lookup(&parsed_child) {
                CachedChain::Parent(found) => assert!(found.matches(parent_value.as_bytes())),
                _ => panic!("parent lost after {child_index} children"),
            }
            cache.remember(
                &parsed_child,
                &ChainValue::from_bytes([child_index as u8; TAG_LEN]),
            );
            assert!(cache.len() <= 8);
        }
    }

    #[test]
    fn entries_nobody_uses_age_out_after_two_generations() {
        let mut cache = TagCache::new(4);
        let idle = encoded(1, &[]);
        cache.remember(
            &ParsedToken::parse(&idle).unwrap(),
            &ChainValue::from_bytes([1; TAG_LEN]),
        );
        for token_id in 2..7 {
            let other = encoded(token_id, &[]);
            cache.remember(
                &ParsedToken::parse(&other).unwrap(),
                &ChainValue::from_bytes([2; TAG_LEN]),
            );
        }
        assert!(matches!(
            cache.lookup(&ParsedToken::parse(&idle).unwrap()),
            CachedChain::Miss
        ));
    }
}
