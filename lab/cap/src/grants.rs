//! Access-check table: verified grants installed per requester, so that each memory access is
//! a table lookup instead of a MAC chain
//!
//! A requester presents a token once; the device verifies it and installs its authority (one
//! range, rights, expiry) under that requester. Each later access is a hash lookup of the
//! requester followed by a scan of its few grants (a CXL GFAM device has 8 ranges per
//! requester). Revocation evicts: an epoch bump empties the table, revoking a token id removes
//! its grants, and expiry is checked on every access (and can be purged in bulk).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::InstallError;
use crate::values::{AccessKind, AddressRange, RequesterId, Rights, Timestamp, TokenId};

/// One installed grant: the authority of a verified token, flattened for a fast check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledGrant {
    pub token_id: TokenId,
    pub range: AddressRange,
    pub rights: Rights,
    /// Last device time at which the grant admits an access: the token's not-after plus the
    /// device's skew allowance, or `None` when the token never expires.
    pub expires_after: Option<Timestamp>,
}

impl InstalledGrant {
    fn admits(&self, address: u64, length: u64, access: AccessKind, now: Timestamp) -> bool {
        self.range.contains_span(address, length)
            && self.rights.allows(access)
            && self
                .expires_after
                .is_none_or(|last_valid| now <= last_valid)
    }
}

/// Hasher for 16-bit requester ids: one multiplication by the 64-bit golden ratio spreads them
/// over the high bits the hash table uses. Requester ids are assigned by the fabric, and there
/// are only 65,536 of them, so deliberate collisions cannot degrade the table far.
#[derive(Default)]
pub struct RequesterIdHasher(u64);

impl Hasher for RequesterIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u16(&mut self, value: u16) {
        self.0 = u64::from(value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Installed grants of every requester.
pub struct GrantTable {
    grants_by_requester:
        HashMap<RequesterId, Vec<InstalledGrant>, BuildHasherDefault<RequesterIdHasher>>,
    max_grants_per_requester: usize,
    installed_count: usize,
}

impl GrantTable {
    /// An empty table holding at most `max_grants_per_requester` grants per requester.
    pub fn new(max_grants_per_requester: usize) -> Self {
        GrantTable {
            grants_by_requester: HashMap::default(),
            max_grants_per_requester,
            installed_count: 0,
        }
    }

    /// Installs `grant` for `requester`. A grant with the same token id and range replaces the
    /// old one, so presenting a token twice does not use up a slot.
    pub fn install(
        &mut self,
        requester: RequesterId,
        grant: InstalledGrant,
    ) -> Result<(), InstallError> {
        let grants = self.grants_by_requester.entry(requester).or_default();
        if let Some(existing) = grants
            .iter_mut()
            .find(|existing| existing.token_id == grant.token_id && existing.range == grant.range)
        {
            *existing = grant;
            return Ok(());
        }
        if grants.len() >= self.max_grants_per_requester {
            return Err(InstallError::TableFull {
                requester,
                max: self.max_grants_per_requester,
            });
        }
        grants.push(grant);
        self.installed_count += 1;
        Ok(())
    }

    /// The token id of an installed grant that admits the access, or `None`.
    #[inline]
    pub fn check(
        &self,
        requester: RequesterId,
        address: u64,
        length: u64,
        access: AccessKind,
        now: Timestamp,
    ) -> Option<TokenId> {
        self.grants_by_requester
            .get(&requester)?
            .iter()
            .find(|grant| grant.admits(address, length, access, now))
            .map(|grant| grant.token_id)
    }

    /// The grants installed for `requester`.
    pub fn grants_of(&self, requester: RequesterId) -> &[InstalledGrant] {
        self.grants_by_requester
            .get(&requester)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Removes every grant of `token_id`; returns how many. A scan of the whole table:
    /// revocation is rare and the table is small, so no reverse index is kept.
    pub fn evict_token(&mut self, token_id: TokenId) -> usize {
        self.evict_where(|grant| grant.token_id == token_id)
    }

    /// Removes every grant that no longer admits anything at device time `now`.
    pub fn evict_expired(&mut self, now: Timestamp) -> usize {
        self.evict_where(|grant| {
            grant
                .expires_after
                .is_some_and(|last_valid| now > last_valid)
        })
    }

    /// Removes everything; returns how many grants there were.
    pub fn clear(&mut self) -> usize {
        let evicted = self.installed_count;
        self.grants_by_requester.clear();
        self.installed_count = 0;
        evicted
    }

    /// Number of installed grants.
    pub fn len(&self) -> usize {
        self.installed_count
    }

    /// Whether no grant is installed.
    pub fn is_empty(&self) -> bool {
        self.installed_count == 0
    }

    fn evict_where(&mut self, mut should_evict: impl FnMut(&InstalledGrant) -> bool) -> usize {
        let before = self.installed_count;
        self.grants_by_requester.retain(|_, grants| {
            grants.retain(|grant| !should_evict(grant));
            !grants.is_empty()
        });
        self.installed_count = self.grants_by_requester.values().map(Vec::len).sum();
        before - self.installed_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(token_id: u64, base: u64, length: u64, expires_after: Option<u64>) -> InstalledGrant {
        InstalledGrant {
            token_id: TokenId(token_id),
            range: AddressRange::new(base, length).unwrap(),
            rights: Rights::READ,
            expires_after: expires_after.map(Timestamp::from_millis),
        }
    }

    #[test]
    fn check_finds_the_covering_grant_and_nothing_else() {
        let mut table = GrantTable::new(8);
        let requester = RequesterId(7);
        table
            .install(requester, grant(1, 0x1000, 0x1000, None))
            .unwrap();
        table
            .install(requester, grant(2, 0x4000, 0x1000, Some(100)))
            .unwrap();
        let now = Timestamp::from_millis(50);
        assert_eq!(
            table.check(requester, 0x1800, 8, AccessKind::Read, now),
            Some(TokenId(1))
        );
        assert_eq!(
            table.check(requester, 0x4000, 8, AccessKind::Read, now),
            Some(TokenId(2))
        );
        assert_eq!(
            table.check(requester, 0x1800, 8, AccessKind::Write, now),
            None
        );
        assert_eq!(
            table.check(requester, 0x1ffc, 8, AccessKind::Read, now),
            None
        );
        assert_eq!(
            table.check(RequesterId(8), 0x1800, 8, AccessKind::Read, now),
            None
        );
        let later = Timestamp::from_millis(101);
        assert_eq!(
            table.check(requester, 0x4000, 8, AccessKind::Read, later),
            None
        );
    }

    #[test]
    fn reinstalling_replaces_and_a_full_requester_is_refused() {
        let mut table = GrantTable::new(2);
        let requester = RequesterId(1);
        table.install(requester, grant(1, 0, 0x100, None)).unwrap();
        table
            .install(requester, grant(1, 0, 0x100, Some(5)))
            .unwrap();
        assert_eq!(table.len(), 1);
        table.install(requester, grant(2, 0, 0x100, None)).unwrap();
        assert_eq!(
            table.install(requester, grant(3, 0, 0x100, None)),
            Err(InstallError::TableFull { requester, max: 2 })
        );
    }

    #[test]
    fn eviction_by_token_and_by_expiry_keeps_the_count_right() {
        let mut table = GrantTable::new(8);
        table
            .install(RequesterId(1), grant(1, 0, 0x100, None))
            .unwrap();
        table
            .install(RequesterId(2), grant(1, 0, 0x100, None))
            .unwrap();
        table
            .install(RequesterId(2), grant(2, 0, 0x100, Some(10)))
            .unwrap();
        assert_eq!(table.evict_token(TokenId(1)), 2);
        assert_eq!(table.len(), 1);
        assert_eq!(table.evict_expired(Timestamp::from_millis(10)), 0);
        assert_eq!(table.evict_expired(Timestamp::from_millis(11)), 1);
        assert!(table.is_empty());
        assert!(table.grants_of(RequesterId(2)).is_empty());
    }
}
