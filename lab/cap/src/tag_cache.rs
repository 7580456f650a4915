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
//! flood the cache. Entries therefore carry the generation in which they were last used; a new
//! generation starts every `capacity / 2` insertions, and when the cache is full every entry
//! not used in the current generation is dropped. A parent in use (every child verification
//! looks it up) survives any flood, while entries nobody asks for age out. The worst a flood
//! achieves is cold verification of tokens not used in the meantime, never a wrong answer.

use std::collections::HashMap;

use crate::format::ParsedToken;
use crate::mac::ChainValue;

/// What the cache knows about a token's chain.
pub(crate) enum CachedChain {
    /// The chain value of the whole token, which matches its tag: no MAC needed.
    WholeToken(ChainValue),
    /// The chain value of the token without its last caveat: one MAC finishes the chain.
    Parent(ChainValue),
    /// Nothing: run the whole chain from the epoch key.
    Miss,
}

/// A chain value and the generation in which it was last inserted or looked up.
struct CachedChainValue {
    // Boxed: when the map grows or rehashes it moves its entries with a plain copy and never
    // wipes the old slots, so an inline value would leave copies of the tag behind.
    chain_value: Box<ChainValue>,
    last_used_generation: u64,
}

/// Bounded map from chain input to the chain value the device computed for it.
pub(crate) struct TagCache {
    capacity: usize,
    generation: u64,
    insertions_in_generation: usize,
    // SipHash with a random key (the std default) keeps attacker-chosen keys from colliding on
    // purpose; the keys are public token bytes, so comparing them in variable time is fine.
    entries: HashMap<Box<[u8]>, CachedChainValue>,
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
            generation: 0,
            insertions_in_generation: 0,
            entries: HashMap::with_capacity(capacity.min(1 << 16)),
            key_scratch: Vec::new(),
        }
    }

    /// The chain value stored for the chain input in the scratch buffer, marked as used now.
    fn get_scratch_key(&mut self) -> Option<ChainValue> {
        let entry = self.entries.get_mut(self.key_scratch.as_slice())?;
        entry.last_used_generation = self.generation;
        Some(ChainValue::clone(&entry.chain_value))
    }

    /// The longest cached chain value useful for `parsed`: the whole token if its tag matches
    /// (compared in constant time), else its parent.
    ///
    /// A cached chain input presented with another tag is a forgery. It goes on exactly as a
    /// miss does (the parent probe, then the MACs), so its verify time does not tell that the
    /// input is cached (docs/capability-format.md, "Timing"), and it does not keep the entry
    /// alive.
    pub fn lookup(&mut self, parsed: &ParsedToken<'_>) -> CachedChain {
        let caveat_count = parsed.caveat_count();
        write_chain_input(&mut self.key_scratch, parsed, caveat_count);
        let generation = self.generation;
        if let Some(entry) = self.entries.get_mut(self.key_scratch.as_slice()) {
            if entry.chain_value.matches(parsed.tag) {
                entry.last_used_generation = generation;
                return CachedChain::WholeToken(ChainValue::clone(&entry.chain_value));
            }
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
        if self.capacity == 0 {
            return;
        }
        // Evict first, then maybe start a new generation: what the current generation used (a
        // parent in use among it) is what survives.
        if self.entries.len() >= self.capacity {
            let current_generation = self.generation;
            self.entries
                .retain(|_, entry| entry.last_used_generation == current_generation);
            // Only reachable if more than half the cache was used in one generation, which
            // lookups alone can do; make room all the same.
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        if self.insertions_in_generation >= self.capacity.div_ceil(2) {
            self.generation += 1;
            self.insertions_in_generation = 0;
        }
        write_chain_input(&mut self.key_scratch, parsed, parsed.caveat_count());
        let cached = CachedChainValue {
            chain_value: Box::new(tag.clone()),
            last_used_generation: self.generation,
        };
        if self
            .entries
            .insert(self.key_scratch.as_slice().into(), cached)
            .is_none()
        {
            self.insertions_in_generation += 1;
        }
    }

    /// Forgets everything, e.g. when the key epoch changes.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of cached chain values.
    pub fn len(&self) -> usize {
        self.entries.len()
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

    #[test]
    fn a_cached_chain_input_with_another_tag_is_looked_up_as_a_miss() {
        let mut cache = TagCache::new(4);
        let parent = encoded(1, &[not_after(0)]);
        let parent_value = ChainValue::from_bytes([7; TAG_LEN]);
        cache.remember(&ParsedToken::parse(&parent).unwrap(), &parent_value);
        let child = encoded(1, &[not_after(0), not_after(1)]);
        cache.remember(
            &ParsedToken::parse(&child).unwrap(),
            &ChainValue::from_bytes([8; TAG_LEN]),
        );
        // `encoded` writes an all-zero tag, which matches neither cached value.
        match cache.lookup(&ParsedToken::parse(&child).unwrap()) {
            CachedChain::Parent(found) => assert!(found.matches(parent_value.as_bytes())),
            _ => panic!("a forged tag of a cached child must go on to the parent, as a miss"),
        }
        assert!(matches!(
            cache.lookup(&ParsedToken::parse(&parent).unwrap()),
            CachedChain::Miss
        ));
        let mut genuine_parent = parent.clone();
        let tag_start = genuine_parent.len() - TAG_LEN;
        genuine_parent[tag_start..].copy_from_slice(parent_value.as_bytes());
        assert!(matches!(
            cache.lookup(&ParsedToken::parse(&genuine_parent).unwrap()),
            CachedChain::WholeToken(_)
        ));
    }

    #[test]
    fn growing_the_map_leaves_no_copy_of_a_chain_value() {
        let mut cache = TagCache::new(4);
        let token = encoded(1, &[]);
        cache.remember(
            &ParsedToken::parse(&token).unwrap(),
            &ChainValue::from_bytes([9; TAG_LEN]),
        );
        let value_address = |cache: &TagCache| {
            let entry = cache.entries.values().next().expect("one entry");
            entry.chain_value.as_bytes().as_ptr()
        };
        let before = value_address(&cache);
        // What a cache larger than its preallocation does as it fills: the map reallocates
        // and moves every entry.
        cache.entries.reserve(1 << 12);
        assert_eq!(value_address(&cache), before);
    }
}
