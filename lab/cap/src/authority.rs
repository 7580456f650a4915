//! Authority: what a chain of caveats grants, as the intersection of all of them
//!
//! Folding the caveats once yields a single range, a rights set, an earliest not-after and a
//! holder constraint. Because the fold is an intersection, appending a caveat can only shrink
//! the result (the property tests check this). The verifier checks a request against the
//! authority; the access-check table stores authorities so that later requests skip the MACs.

use crate::caveat::{Caveat, CaveatKind};
use crate::error::VerifyError;
use crate::values::{AccessKind, AddressRange, RequesterId, Rights, Timestamp};

/// The addresses a token may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeLimit {
    /// No range caveat: the whole device (only if the policy does not require a range).
    WholeDevice,
    /// The intersection of every range caveat.
    Within(AddressRange),
    /// Range caveats that do not overlap: no address at all.
    Nothing,
}

/// Who may present a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderLimit {
    /// No holder caveat: any requester (a bearer token).
    AnyRequester,
    /// Only this requester.
    Only(RequesterId),
    /// Holder caveats naming different requesters: nobody.
    Nobody,
}

/// What a verified chain of caveats grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authority {
    pub range: RangeLimit,
    pub rights: Rights,
    pub not_after: Option<Timestamp>,
    pub holder: HolderLimit,
}

impl Authority {
    /// What a token without caveats grants: everything on the device.
    pub const UNRESTRICTED: Authority = Authority {
        range: RangeLimit::WholeDevice,
        rights: Rights::READ_WRITE,
        not_after: None,
        holder: HolderLimit::AnyRequester,
    };

    /// Intersects `caveats` in chain order. Fails when a delegation limit is exceeded, since that
    /// depends on the chain itself rather than on any request.
    pub fn from_caveats(
        caveats: impl ExactSizeIterator<Item = Caveat>,
    ) -> Result<Authority, VerifyError> {
        let caveat_count = caveats.len();
        let mut fold = AuthorityFold::new();
        for (index, caveat) in caveats.enumerate() {
            fold.add(index, caveat_count, caveat);
        }
        fold.finish()
    }

    /// This authority with one more caveat applied.
    pub fn narrowed_by(self, caveat: Caveat) -> Authority {
        let mut narrowed = self;
        match caveat {
            Caveat::Range(range) => {
                narrowed.range = match self.range {
                    RangeLimit::WholeDevice => RangeLimit::Within(range),
                    RangeLimit::Within(current) => match current.intersection(range) {
                        Some(common) => RangeLimit::Within(common),
                        None => RangeLimit::Nothing,
                    },
                    RangeLimit::Nothing => RangeLimit::Nothing,
                }
            }
            Caveat::Rights(rights) => narrowed.rights = self.rights.intersection(rights),
            Caveat::NotAfter(not_after) => {
                narrowed.not_after = Some(match self.not_after {
                    Some(current) => current.min(not_after),
                    None => not_after,
                })
            }
            Caveat::Holder(requester) => {
                narrowed.holder = match self.holder {
                    HolderLimit::AnyRequester => HolderLimit::Only(requester),
                    HolderLimit::Only(current) if current == requester => {
                        HolderLimit::Only(current)
                    }
                    HolderLimit::Only(_) | HolderLimit::Nobody => HolderLimit::Nobody,
                }
            }
            Caveat::DelegationLimit(_) => {}
        }
        narrowed
    }

    /// The granted range clipped to a device of `capacity_bytes`, or `None` for no address.
    pub fn effective_range(&self, capacity_bytes: u64) -> Option<AddressRange> {
        match self.range {
            RangeLimit::WholeDevice => AddressRange::new(0, capacity_bytes).ok(),
            RangeLimit::Within(range) => Some(range),
            RangeLimit::Nothing => None,
        }
    }

    /// Whether `requester` may present the token.
    pub fn admits_holder(&self, requester: RequesterId) -> Result<(), VerifyError> {
        match self.holder {
            HolderLimit::AnyRequester => Ok(()),
            HolderLimit::Only(holder) if holder == requester => Ok(()),
            HolderLimit::Only(_) | HolderLimit::Nobody => Err(VerifyError::WrongHolder(requester)),
        }
    }

    /// Whether the token is still valid at device time `now`, given the device's allowance
    /// for clocks of attenuating hosts that run behind the device clock.
    pub fn admits_time(&self, now: Timestamp, skew_allowance_ms: u64) -> Result<(), VerifyError> {
        match self.not_after {
            Some(not_after) if now > not_after.saturating_add_millis(skew_allowance_ms) => {
                Err(VerifyError::Expired { not_after, now })
            }
            _ => Ok(()),
        }
    }

    /// Whether the `length` bytes at `address` may be accessed as `access_kind`, ignoring time
    /// and holder. The device capacity bounds the request even without a range caveat.
    pub fn admits_access(
        &self,
        address: u64,
        length: u64,
        access_kind: AccessKind,
        capacity_bytes: u64,
    ) -> Result<(), VerifyError> {
        if length == 0 {
            return Err(VerifyError::EmptyRequest);
        }
        let Some(request_end) = address.checked_add(length) else {
            return Err(VerifyError::RequestOverflow { address, length });
        };
        if request_end > capacity_bytes {
            return Err(VerifyError::RequestBeyondDevice { address, length });
        }
        let inside = match self.effective_range(capacity_bytes) {
            Some(range) => range.contains_span(address, length),
            None => false,
        };
        if !inside {
            return Err(VerifyError::OutsideGrantedRange { address, length });
        }
        if !self.rights.allows(access_kind) {
            return Err(VerifyError::RightsNotGranted(access_kind));
        }
        Ok(())
    }

    /// Whether every access this authority admits is also admitted by `wider`. Used by the
    /// property tests to state "attenuation never widens".
    pub fn is_within(&self, wider: &Authority, capacity_bytes: u64) -> bool {
        let range_within = match (
            self.effective_range(capacity_bytes),
            wider.effective_range(capacity_bytes),
        ) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(narrow), Some(wide)) => wide.contains_range(narrow),
        };
        let time_within = match (self.not_after, wider.not_after) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(narrow), Some(wide)) => narrow <= wide,
        };
        let holder_within = match (self.holder, wider.holder) {
            (HolderLimit::Nobody, _) | (_, HolderLimit::AnyRequester) => true,
            (HolderLimit::Only(narrow), HolderLimit::Only(wide)) => narrow == wide,
            _ => false,
        };
        range_within && time_within && holder_within && self.rights.is_subset_of(wider.rights)
    }
}

/// Caveats folded in chain order, one at a time, as the decoder reads them: the authority so
/// far plus what the device's token policy asks about (kinds present, the range reaching
/// farthest, the first broken delegation limit).
pub(crate) struct AuthorityFold {
    authority: Authority,
    kinds_present: u8,
    farthest_range: Option<AddressRange>,
    first_delegation_violation: Option<VerifyError>,
}

impl AuthorityFold {
    pub const fn new() -> Self {
        AuthorityFold {
            authority: Authority::UNRESTRICTED,
            kinds_present: 0,
            farthest_range: None,
            first_delegation_violation: None,
        }
    }

    /// Adds caveat number `index` of a chain of `caveat_count`.
    pub fn add(&mut self, index: usize, caveat_count: usize, caveat: Caveat) {
        self.authority = self.authority.narrowed_by(caveat);
        self.kinds_present |= caveat.kind().bit();
        match caveat {
            Caveat::Range(range) => {
                if self
                    .farthest_range
                    .is_none_or(|farthest| range.end() > farthest.end())
                {
                    self.farthest_range = Some(range);
                }
            }
            Caveat::DelegationLimit(limit) => {
                let following = caveat_count - index - 1;
                if following > usize::from(limit) && self.first_delegation_violation.is_none() {
                    self.first_delegation_violation = Some(VerifyError::DelegationLimitExceeded {
                        index,
                        limit,
                        following,
                    });
                }
            }
            Caveat::Rights(_) | Caveat::NotAfter(_) | Caveat::Holder(_) => {}
        }
    }

    /// Whether some caveat of `kind` was added.
    pub fn has_kind(&self, kind: CaveatKind) -> bool {
        self.kinds_present & kind.bit() != 0
    }

    /// The range caveat whose end is highest, if any.
    pub fn farthest_range(&self) -> Option<AddressRange> {
        self.farthest_range
    }

    /// The authority, unless a delegation limit was broken.
    pub fn finish(self) -> Result<Authority, VerifyError> {
        match self.first_delegation_violation {
            Some(violation) => Err(violation),
            None => Ok(self.authority),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(base: u64, length: u64) -> Caveat {
        Caveat::Range(AddressRange::new(base, length).unwrap())
    }

    #[test]
    fn disjoint_ranges_grant_nothing_and_two_holders_admit_nobody() {
        let authority = Authority::from_caveats(
            [
                range(0, 0x100),
                range(0x200, 0x100),
                Caveat::Holder(RequesterId(1)),
                Caveat::Holder(RequesterId(2)),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(authority.range, RangeLimit::Nothing);
        assert_eq!(authority.holder, HolderLimit::Nobody);
        assert_eq!(
            authority.admits_holder(RequesterId(1)),
            Err(VerifyError::WrongHolder(RequesterId(1)))
        );
    }

    #[test]
    fn delegation_limit_counts_only_the_caveats_after_it() {
        let within_limit = [Caveat::DelegationLimit(1), Caveat::Rights(Rights::READ)];
        assert!(Authority::from_caveats(within_limit.into_iter()).is_ok());
        let past_limit = [Caveat::DelegationLimit(0), Caveat::Rights(Rights::READ)];
        assert_eq!(
            Authority::from_caveats(past_limit.into_iter()),
            Err(VerifyError::DelegationLimitExceeded {
                index: 0,
                limit: 0,
                following: 1
            })
        );
    }
}
