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
//! fill the cache. When the cache is full it is emptied; the worst an attacker achieves is
//! cold verification for everyone, never a wrong answer.

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

/// Bounded map from chain input to the chain value the device computed for it.
pub(crate) struct TagCache {
    capacity: usize,
    // SipHash with a random key (the std default) keeps attacker-chosen keys from colliding on
    // purpose; the keys are public token bytes, so comparing them in variable time is fine.
    chain_values: HashMap<Box<[u8]>, ChainValue>,
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
    /// A cache of at most `capacity` chain values.
    pub fn new(capacity: usize) -> Self {
        TagCache {
            capacity,
            chain_values: HashMap::with_capacity(capacity.min(1 << 16)),
            key_scratch: Vec::new(),
        }
    }

    /// The longest cached chain value useful for `parsed`: the whole token, else its parent.
    pub fn lookup(&mut self, parsed: &ParsedToken<'_>) -> CachedChain {
        let caveat_count = parsed.caveat_spans().len();
        write_chain_input(&mut self.key_scratch, parsed, caveat_count);
        if let Some(whole_token) = self.chain_values.get(self.key_scratch.as_slice()) {
            return CachedChain::WholeToken(whole_token.clone());
        }
        if caveat_count == 0 {
            return CachedChain::Miss;
        }
        write_chain_input(&mut self.key_scratch, parsed, caveat_count - 1);
        match self.chain_values.get(self.key_scratch.as_slice()) {
            Some(parent) => CachedChain::Parent(parent.clone()),
            None => CachedChain::Miss,
        }
    }

    /// Remembers `tag` as the chain value of all of `parsed`. Call only after the device's own
    /// computation matched the token's tag.
    pub fn remember(&mut self, parsed: &ParsedToken<'_>, tag: &ChainValue) {
        if self.capacity == 0 {
            return;
        }
        if self.chain_values.len() >= self.capacity {
            self.chain_values.clear();
        }
        write_chain_input(&mut self.key_scratch, parsed, parsed.caveat_spans().len());
        self.chain_values
            .insert(self.key_scratch.as_slice().into(), tag.clone());
    }

    /// Forgets everything, e.g. when the key epoch changes.
    pub fn clear(&mut self) {
        self.chain_values.clear();
    }

    /// Number of cached chain values.
    pub fn len(&self) -> usize {
        self.chain_values.len()
    }
}
