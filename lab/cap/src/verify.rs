//! Verification: the device policy, the request type, and the checks a token must pass
//!
//! Order matters for cost, not for safety: cheap identifier checks (size, device, suite, epoch,
//! deny set) come first so that junk costs no MAC; then the MAC chain, shortened by the tag
//! cache when it can be; only a token whose tag matches has its caveats read for meaning.
//! Every caveat must allow the request; a caveat this library does not understand never gets
//! this far, because the decoder refuses it.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::authority::{Authority, AuthorityFold};
use crate::caveat::CaveatKind;
use crate::error::VerifyError;
use crate::format::{ParsedToken, MAX_CAVEATS, MAX_TOKEN_LEN};
use crate::mac::{chain_step, derive_epoch_keys, Algorithm, ChainValue, RootSecret};
use crate::tag_cache::{CachedChain, TagCache};
use crate::values::{AccessKind, DeviceId, Epoch, RequesterId, Timestamp, TokenId};

/// What a device demands of every token, beyond a genuine tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Caveat kinds every token must carry; a token without one is refused even if genuine.
    /// Default: a range, so that no token grants the whole device by accident.
    pub required_caveats: Vec<CaveatKind>,
    /// Most caveats accepted, at most the format's [`MAX_CAVEATS`].
    pub max_caveats: usize,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// How far past a not-after the device still accepts a token, in milliseconds, to absorb
    /// the clock skew of hosts that set not-after from their own clocks. Default: 0.
    pub clock_skew_allowance_ms: u64,
    /// MAC suites accepted.
    pub accepted_algorithms: Vec<Algorithm>,
    /// Chain values kept by the verified-tag cache; 0 turns the cache off.
    pub tag_cache_capacity: usize,
    /// Installed grants per requester in the access-check table. A CXL GFAM device has 8
    /// translation ranges per requester; the default matches it.
    pub max_grants_per_requester: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            required_caveats: vec![CaveatKind::Range],
            max_caveats: MAX_CAVEATS,
            max_token_bytes: MAX_TOKEN_LEN,
            clock_skew_allowance_ms: 0,
            accepted_algorithms: Algorithm::ALL.to_vec(),
            tag_cache_capacity: 4096,
            max_grants_per_requester: 8,
        }
    }
}

/// One memory access as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRequest {
    /// Who issues the access (e.g. the CXL SPID of the requesting port).
    pub requester: RequesterId,
    /// First device address touched.
    pub address: u64,
    /// Bytes touched; zero is refused.
    pub length: u64,
    /// Load or store.
    pub access: AccessKind,
    /// The device clock when the access arrived.
    pub now: Timestamp,
}

/// A token that verified, and what it grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The token id (shared by all descendants of one minted token).
    pub token_id: TokenId,
    /// The intersection of the token's caveats.
    pub authority: Authority,
    /// MACs computed for this verification: `caveats + 1` cold, 1 for the child of a cached
    /// token, 0 for a cached token.
    pub macs_computed: u32,
}

/// Keys and deny set of the device's current epoch.
pub(crate) struct EpochKeys {
    pub epoch: Epoch,
    // Boxed: replacing or moving the state moves a pointer, not the keys (`mac::derive_epoch_keys`).
    keys_by_algorithm: Box<[ChainValue; Algorithm::ALL.len()]>,
    pub revoked_token_ids: HashSet<TokenId>,
}

impl EpochKeys {
    pub fn derive(root_secret: &RootSecret, device_id: DeviceId, epoch: Epoch) -> Self {
        EpochKeys {
            epoch,
            keys_by_algorithm: derive_epoch_keys(root_secret, device_id, epoch),
            revoked_token_ids: HashSet::new(),
        }
    }

    pub fn key(&self, algorithm: Algorithm) -> &ChainValue {
        &self.keys_by_algorithm[algorithm.index()]
    }
}

/// The parts of a device that verification reads.
pub(crate) struct VerifierContext<'device> {
    pub device_id: DeviceId,
    pub capacity_bytes: u64,
    pub policy: &'device Policy,
    pub epoch_keys: &'device EpochKeys,
    pub tag_cache: Option<&'device Mutex<TagCache>>,
}

impl VerifierContext<'_> {
    /// Decodes `bytes`, checks the identifier against this device, and checks the tag.
    /// Returns the parsed token, its caveats folded (not yet checked against the policy), and
    /// how many MACs the tag check took.
    pub fn authenticate<'bytes>(
        &self,
        bytes: &'bytes [u8],
    ) -> Result<(ParsedToken<'bytes>, AuthorityFold, u32), VerifyError> {
        if bytes.len() > self.policy.max_token_bytes {
            return Err(VerifyError::TokenTooLarge {
                length: bytes.len(),
                max: self.policy.max_token_bytes,
            });
        }
        let mut fold = AuthorityFold::new();
        let parsed = ParsedToken::parse_visiting(bytes, |index, caveat_count, caveat| {
            fold.add(index, caveat_count, caveat)
        })?;
        let caveat_count = parsed.caveat_count();
        if caveat_count > self.policy.max_caveats {
            return Err(VerifyError::TooManyCaveats {
                count: caveat_count,
                max: self.policy.max_caveats,
            });
        }
        let identifier = parsed.identifier;
        if identifier.device_id != self.device_id {
            return Err(VerifyError::WrongDevice {
                expected: self.device_id,
                found: identifier.device_id,
            });
        }
        if !self
            .policy
            .accepted_algorithms
            .contains(&identifier.algorithm)
        {
            return Err(VerifyError::AlgorithmNotAccepted(identifier.algorithm));
        }
        if identifier.epoch != self.epoch_keys.epoch {
            return Err(VerifyError::WrongEpoch {
                token_epoch: identifier.epoch,
                current_epoch: self.epoch_keys.epoch,
            });
        }
        let revoked = &self.epoch_keys.revoked_token_ids;
        if !revoked.is_empty() && revoked.contains(&identifier.token_id) {
            return Err(VerifyError::Revoked(identifier.token_id));
        }
        let macs_computed = self.check_tag(&parsed)?;
        Ok((parsed, fold, macs_computed))
    }

    /// Recomputes the chain (from the cache where possible) and compares it with the tag in
    /// constant time. Returns how many MACs that took.
    ///
    /// A forged tag costs what a cache miss costs whether or not its chain input (or its
    /// parent's) is cached: the cache answers a cached chain input with another tag as it
    /// answers a miss (the same probes), and a child of a cached parent whose tag does not
    /// match runs the rest of a miss's MACs. So verify time tells whether a token is cached
    /// only to whoever could compute its tag (docs/capability-format.md, "Timing").
    fn check_tag(&self, parsed: &ParsedToken<'_>) -> Result<u32, VerifyError> {
        let algorithm = parsed.identifier.algorithm;
        let caveat_count = parsed.caveat_count();
        let cached = match self.tag_cache {
            Some(cache) => lock_ignoring_poison(cache).lookup(parsed),
            None => CachedChain::Miss,
        };
        let (chain_value, macs_computed, newly_computed) = match cached {
            CachedChain::WholeToken(chain_value) => (chain_value, 0, false),
            CachedChain::Parent(parent) => {
                let last_caveat = parsed.caveat_bytes(caveat_count - 1);
                let chain_value = chain_step(algorithm, &parent, last_caveat);
                if !chain_value.matches(parsed.tag) {
                    // The MACs a miss would have run besides this last one.
                    std::hint::black_box(self.chain_from_key(parsed, caveat_count - 1));
                    return Err(VerifyError::BadTag);
                }
                (chain_value, 1, true)
            }
            CachedChain::Miss => (
                self.chain_from_key(parsed, caveat_count),
                caveat_count as u32 + 1,
                true,
            ),
        };
        if !chain_value.matches(parsed.tag) {
            return Err(VerifyError::BadTag);
        }
        if let (Some(cache), true) = (self.tag_cache, newly_computed) {
            lock_ignoring_poison(cache).remember(parsed, &chain_value);
        }
        Ok(macs_computed)
    }

    /// The chain value of the identifier and the first `caveat_prefix_len` caveats of
    /// `parsed`, computed from the epoch key: `caveat_prefix_len + 1` MACs.
    fn chain_from_key(&self, parsed: &ParsedToken<'_>, caveat_prefix_len: usize) -> ChainValue {
        let algorithm = parsed.identifier.algorithm;
        let epoch_key = self.epoch_keys.key(algorithm);
        let mut chain_value = chain_step(algorithm, epoch_key, parsed.identifier_bytes());
        for index in 0..caveat_prefix_len {
            chain_value = chain_step(algorithm, &chain_value, parsed.caveat_bytes(index));
        }
        chain_value
    }

    /// The authority of an authenticated token, after the token-level policy checks: required
    /// caveats present, no range reaching past the device, delegation limits kept.
    pub fn token_authority(&self, fold: AuthorityFold) -> Result<Authority, VerifyError> {
        if let Some(missing) = self
            .policy
            .required_caveats
            .iter()
            .find(|kind| !fold.has_kind(**kind))
        {
            return Err(VerifyError::MissingRequiredCaveat(*missing));
        }
        if let Some(range) = fold
            .farthest_range()
            .filter(|range| range.end() > self.capacity_bytes)
        {
            return Err(VerifyError::RangeBeyondDevice {
                range,
                capacity_bytes: self.capacity_bytes,
            });
        }
        fold.finish()
    }

    /// Full verification of one access: authenticate, then every caveat must allow it.
    pub fn verify_access(
        &self,
        bytes: &[u8],
        request: &AccessRequest,
    ) -> Result<Verified, VerifyError> {
        let (parsed, fold, macs_computed) = self.authenticate(bytes)?;
        let authority = self.token_authority(fold)?;
        authority.admits_holder(request.requester)?;
        authority.admits_time(request.now, self.policy.clock_skew_allowance_ms)?;
        authority.admits_access(
            request.address,
            request.length,
            request.access,
            self.capacity_bytes,
        )?;
        Ok(Verified {
            token_id: parsed.identifier.token_id,
            authority,
            macs_computed,
        })
    }
}

/// Locks a mutex even if another thread panicked while holding it. Every critical section in
/// this crate leaves its data consistent at each step (a cache insert or clear), so the data
/// behind a poisoned lock is still sound.
pub(crate) fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
