//! The device: the one party that holds the root secret, mints, verifies and revokes
//!
//! [`Device`] is what a host-side device service embeds. It is `Send + Sync`; share it as
//! `Arc<Device>`. Its mutable state (current epoch keys, deny set, installed grants) sits
//! behind one `RwLock`, so verification and access checks run in parallel while revocation,
//! which takes the write lock, is atomic with respect to them: once `revoke_token` or
//! `bump_epoch` returns, no verification or access check can see the old state. Grant
//! installation verifies under the write lock for the same reason, so a grant can never be
//! installed from a token revoked in the meantime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::authority::Authority;
use crate::caveat::Caveat;
use crate::error::{ConfigError, EpochError, InstallError, MintError, RevokeError, VerifyError};
use crate::format::{ParsedToken, TokenIdentifier, MAX_CAVEATS};
use crate::grants::{GrantTable, InstalledGrant};
use crate::mac::{Algorithm, RootSecret};
use crate::tag_cache::TagCache;
use crate::token::Token;
use crate::values::{AccessKind, DeviceId, Epoch, RequesterId, Timestamp, TokenId};
use crate::verify::{
    lock_ignoring_poison, AccessRequest, EpochKeys, Policy, Verified, VerifierContext,
};

/// Everything a device needs besides its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    pub device_id: DeviceId,
    /// Size of the device address space in bytes; no grant reaches past it.
    pub capacity_bytes: u64,
    /// Suite of newly minted tokens.
    pub mint_algorithm: Algorithm,
    /// Epoch to start in. A service that restarts must start in a fresh epoch, since token ids
    /// restart at 1 in every epoch and the deny set is not persisted.
    pub initial_epoch: Epoch,
    pub policy: Policy,
}

impl DeviceConfig {
    /// A device with the default policy, keyed BLAKE3 and epoch 1.
    pub fn new(device_id: DeviceId, capacity_bytes: u64) -> Self {
        DeviceConfig {
            device_id,
            capacity_bytes,
            mint_algorithm: Algorithm::KeyedBlake3,
            initial_epoch: Epoch(1),
            policy: Policy::default(),
        }
    }
}

/// A refused access: no installed grant of the requester covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no installed grant of {requester:?} admits {access:?} of {length:#x} bytes at {address:#x}"
)]
pub struct AccessDenied {
    pub requester: RequesterId,
    pub address: u64,
    pub length: u64,
    pub access: AccessKind,
}

/// What [`Device::revoke_token`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The id is in the current epoch's deny set; this many installed grants were evicted.
    Denied { evicted_grants: usize },
    /// The token's epoch is over: it already fails verification and holds no grant.
    EpochAlreadyOver,
}

struct DeviceState {
    epoch_keys: EpochKeys,
    next_token_id: AtomicU64,
    grants: GrantTable,
}

/// A CXL memory device's capability authority.
pub struct Device {
    config: DeviceConfig,
    root_secret: RootSecret,
    state: RwLock<DeviceState>,
    tag_cache: Option<Mutex<TagCache>>,
}

impl Device {
    /// A device with `config`, keyed by `root_secret`.
    pub fn new(config: DeviceConfig, root_secret: RootSecret) -> Result<Device, ConfigError> {
        let policy = &config.policy;
        if config.capacity_bytes == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if policy.max_caveats > MAX_CAVEATS {
            return Err(ConfigError::CaveatLimitAboveFormat {
                requested: policy.max_caveats,
                max: MAX_CAVEATS,
            });
        }
        if !policy.accepted_algorithms.contains(&config.mint_algorithm) {
            return Err(ConfigError::MintAlgorithmNotAccepted(config.mint_algorithm));
        }
        if policy.max_grants_per_requester == 0 {
            return Err(ConfigError::NoGrantsPerRequester);
        }
        let state = DeviceState {
            epoch_keys: EpochKeys::derive(&root_secret, config.device_id, config.initial_epoch),
            next_token_id: AtomicU64::new(1),
            grants: GrantTable::new(policy.max_grants_per_requester),
        };
        let tag_cache = (policy.tag_cache_capacity > 0)
            .then(|| Mutex::new(TagCache::new(policy.tag_cache_capacity)));
        Ok(Device {
            config,
            root_secret,
            state: RwLock::new(state),
            tag_cache,
        })
    }

    /// The configuration the device was built with.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The current key epoch.
    pub fn epoch(&self) -> Epoch {
        self.read_state().epoch_keys.epoch
    }

    // A panic inside a critical section cannot leave the state half-updated: each mutation
    // below replaces whole fields, so the data behind a poisoned lock is still sound.
    fn read_state(&self) -> RwLockReadGuard<'_, DeviceState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, DeviceState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn verifier<'device>(&'device self, state: &'device DeviceState) -> VerifierContext<'device> {
        VerifierContext {
            device_id: self.config.device_id,
            capacity_bytes: self.config.capacity_bytes,
            policy: &self.config.policy,
            epoch_keys: &state.epoch_keys,
            tag_cache: self.tag_cache.as_ref(),
        }
    }

    /// Mints a token of the current epoch carrying `caveats`, with a fresh token id.
    pub fn mint(&self, caveats: &[Caveat]) -> Result<Token, MintError> {
        let max_caveats = self.config.policy.max_caveats;
        if caveats.len() > max_caveats {
            return Err(MintError::TooManyCaveats {
                count: caveats.len(),
                max: max_caveats,
            });
        }
        for caveat in caveats {
            if let Caveat::Range(range) = caveat {
                if range.end() > self.config.capacity_bytes {
                    return Err(MintError::RangeBeyondDevice {
                        range: *range,
                        capacity_bytes: self.config.capacity_bytes,
                    });
                }
            }
        }
        // Refuse what verification would refuse, so the device never hands out a dead token.
        if let Err(VerifyError::DelegationLimitExceeded {
            index,
            limit,
            following,
        }) = Authority::from_caveats(caveats.iter().copied())
        {
            return Err(MintError::DelegationLimitExceeded {
                index,
                limit,
                following,
            });
        }
        let state = self.read_state();
        let epoch = state.epoch_keys.epoch;
        // Never wraps: a wrapped counter would hand out ids 0, 1, ... again in this epoch, and a
        // revocation of the old id would then also hit the new token (and the reverse).
        let token_id = state
            .next_token_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(1)
            })
            .map_err(|_| MintError::TokenIdsExhausted { epoch })?;
        let identifier = TokenIdentifier {
            algorithm: self.config.mint_algorithm,
            device_id: self.config.device_id,
            epoch,
            token_id: TokenId(token_id),
        };
        let token = Token::mint(
            identifier,
            state.epoch_keys.key(identifier.algorithm),
            caveats,
        );
        // The device just computed this chain, so remember it: the first verification of the
        // token then costs no MAC, and of a child made from it, one.
        if let Some(tag_cache) = &self.tag_cache {
            let parsed = ParsedToken::parse(token.as_bytes()).expect("minted tokens are canonical");
            lock_ignoring_poison(tag_cache).remember(&parsed, &token.tag());
        }
        Ok(token)
    }

    /// Verifies `token_bytes` for one access: the tag must be genuine and every caveat must
    /// allow the request.
    pub fn verify(
        &self,
        token_bytes: &[u8],
        request: &AccessRequest,
    ) -> Result<Verified, VerifyError> {
        let state = self.read_state();
        self.verifier(&state).verify_access(token_bytes, request)
    }

    /// Verifies `token_bytes` for `requester` at device time `now` and installs its authority in
    /// the access-check table, so that later accesses need no MAC.
    pub fn install_grant(
        &self,
        token_bytes: &[u8],
        requester: RequesterId,
        now: Timestamp,
    ) -> Result<InstalledGrant, InstallError> {
        let mut state = self.write_state();
        let verifier = self.verifier(&state);
        let (parsed, fold, _) = verifier.authenticate(token_bytes)?;
        let authority = verifier.token_authority(fold)?;
        authority.admits_holder(requester)?;
        let skew_allowance_ms = self.config.policy.clock_skew_allowance_ms;
        authority.admits_time(now, skew_allowance_ms)?;
        let range = authority
            .effective_range(self.config.capacity_bytes)
            .ok_or(VerifyError::NoAddressGranted)?;
        let grant = InstalledGrant {
            token_id: parsed.identifier.token_id,
            range,
            rights: authority.rights,
            expires_after: authority
                .not_after
                .map(|not_after| not_after.saturating_add_millis(skew_allowance_ms)),
        };
        state.grants.install(requester, grant)?;
        Ok(grant)
    }

    /// Checks one access against the installed grants: a lookup, no MAC. Returns the token id
    /// of the grant that admits it.
    #[inline]
    pub fn check_access(&self, request: &AccessRequest) -> Result<TokenId, AccessDenied> {
        self.read_state()
            .grants
            .check(
                request.requester,
                request.address,
                request.length,
                request.access,
                request.now,
            )
            .ok_or(AccessDenied {
                requester: request.requester,
                address: request.address,
                length: request.length,
                access: request.access,
            })
    }

    /// Revokes the token `token_id` of `epoch`, and with it every descendant (they share its
    /// id): in the current epoch the id joins the deny set and its installed grants are
    /// evicted; a token of an earlier epoch is already dead and nothing changes.
    ///
    /// The epoch is part of the name because ids restart at 1 in every epoch: id 3 of epoch 5
    /// and id 3 of epoch 6 are different tokens, and a revocation meant for one must never hit
    /// the other, even when an epoch bump happens between reading the id and revoking it. The
    /// epoch is compared under the same write lock that updates the deny set.
    pub fn revoke_token(&self, epoch: Epoch, token_id: TokenId) -> Result<Revocation, RevokeError> {
        let mut state = self.write_state();
        let current = state.epoch_keys.epoch;
        if epoch < current {
            return Ok(Revocation::EpochAlreadyOver);
        }
        if epoch > current {
            return Err(RevokeError::FutureEpoch {
                requested: epoch,
                current,
            });
        }
        let next_token_id = state.next_token_id.load(Ordering::Relaxed);
        if token_id.0 == 0 || token_id.0 >= next_token_id {
            return Err(RevokeError::NotMinted { epoch, token_id });
        }
        state.epoch_keys.revoked_token_ids.insert(token_id);
        // Every installed grant is of the current epoch (a bump empties the table), so the id
        // names exactly this token's grants.
        let evicted_grants = state.grants.evict_token(token_id);
        Ok(Revocation::Denied { evicted_grants })
    }

    /// Moves to the next key epoch: every token minted so far stops verifying, the deny set
    /// and tag cache are emptied (nothing in them can match any more), token ids restart, and
    /// every installed grant is evicted. Returns the new epoch.
    ///
    /// At the last epoch (`u64::MAX`) it refuses and changes nothing: wrapping to epoch 0 would
    /// re-derive that epoch's keys and bring its tokens back to life.
    pub fn bump_epoch(&self) -> Result<Epoch, EpochError> {
        let mut state = self.write_state();
        let current = state.epoch_keys.epoch;
        let next_epoch = Epoch(
            current
                .0
                .checked_add(1)
                .ok_or(EpochError::Exhausted(current))?,
        );
        state.epoch_keys = EpochKeys::derive(&self.root_secret, self.config.device_id, next_epoch);
        state.next_token_id = AtomicU64::new(1);
        state.grants.clear();
        if let Some(tag_cache) = &self.tag_cache {
            lock_ignoring_poison(tag_cache).clear();
        }
        Ok(next_epoch)
    }

    /// Evicts installed grants that expired by device time `now`; returns how many.
    pub fn purge_expired_grants(&self, now: Timestamp) -> usize {
        self.write_state().grants.evict_expired(now)
    }

    /// The installed grants of `requester` (what a device service publishes to the device).
    pub fn installed_grants(&self, requester: RequesterId) -> Vec<InstalledGrant> {
        self.read_state().grants.grants_of(requester).to_vec()
    }

    /// Number of installed grants.
    pub fn installed_grant_count(&self) -> usize {
        self.read_state().grants.len()
    }

    /// Number of chain values in the verified-tag cache.
    pub fn cached_tag_count(&self) -> usize {
        self.tag_cache
            .as_ref()
            .map_or(0, |cache| lock_ignoring_poison(cache).len())
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Device")
            .field("config", &self.config)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::AddressRange;

    fn device() -> Device {
        Device::new(
            DeviceConfig::new(DeviceId(1), 1 << 20),
            RootSecret::from_bytes([3; 32]),
        )
        .unwrap()
    }

    fn caveats() -> [Caveat; 1] {
        [Caveat::Range(AddressRange::new(0, 4096).unwrap())]
    }

    #[test]
    fn moving_a_device_moves_no_key_material() {
        let device = device();
        let secret_at = device.root_secret.bytes_address();
        let key_at: *const _ = device.read_state().epoch_keys.key(Algorithm::KeyedBlake3);
        let moved = std::hint::black_box(Box::new(device));
        assert_eq!(moved.root_secret.bytes_address(), secret_at);
        let key_now: *const _ = moved.read_state().epoch_keys.key(Algorithm::KeyedBlake3);
        assert_eq!(key_now, key_at);
    }

    #[test]
    fn token_ids_never_wrap_within_an_epoch() {
        let device = device();
        // 2^64 mints cannot run in a test; start the counter at its last id instead.
        device
            .write_state()
            .next_token_id
            .store(u64::MAX - 1, Ordering::Relaxed);
        let last = device.mint(&caveats()).unwrap();
        assert_eq!(last.identifier().token_id, TokenId(u64::MAX - 1));
        // A wrapped counter would mint id 0, then 1 again, and the revocation of the first
        // token of the epoch would hit that new one too.
        assert_eq!(
            device
                .mint(&caveats())
                .map(|token| token.identifier().token_id),
            Err(MintError::TokenIdsExhausted { epoch: Epoch(1) })
        );
        assert_eq!(
            device.revoke_token(Epoch(1), TokenId(u64::MAX - 1)),
            Ok(Revocation::Denied { evicted_grants: 0 })
        );
        assert_eq!(device.bump_epoch(), Ok(Epoch(2)));
        let fresh = device.mint(&caveats()).unwrap();
        assert_eq!(fresh.identifier().token_id, TokenId(1));
    }
}
