//! Attacks on what a token grants: widening caveats, range arithmetic, requests outside the
//! grant or the device, wrong holders, expiry at the boundary and with skew, missing caveats

use cxl_lab_cap::{
    AccessKind, AccessRequest, AddressRange, AttenuateError, Authority, Caveat, CaveatError,
    CaveatKind, DecodeError, MintError, Policy, RangeLimit, RequesterId, Rights, Timestamp,
    VerifyError,
};

use crate::fixtures::*;

#[test]
fn later_range_caveat_cannot_widen_range() {
    let device = device();
    let widened = standard_token(&device)
        .attenuate(Caveat::Range(range(0, CAPACITY_BYTES)))
        .unwrap();
    let outside_original = request_at(GRANT_BASE + GRANT_LENGTH, 64, AccessKind::Read);
    assert_eq!(
        device.verify(widened.as_bytes(), &outside_original),
        Err(VerifyError::OutsideGrantedRange {
            address: GRANT_BASE + GRANT_LENGTH,
            length: 64
        })
    );
    let verified = device.verify(widened.as_bytes(), &read_request()).unwrap();
    assert_eq!(
        verified.authority.range,
        RangeLimit::Within(range(GRANT_BASE, GRANT_LENGTH))
    );
}

#[test]
fn later_rights_caveat_cannot_widen_rights() {
    let device = device();
    let token = standard_token(&device)
        .attenuate_all(&[
            Caveat::Rights(Rights::READ),
            Caveat::Rights(Rights::READ_WRITE),
        ])
        .unwrap();
    let write = request_at(GRANT_BASE, 64, AccessKind::Write);
    assert_eq!(
        device.verify(token.as_bytes(), &write),
        Err(VerifyError::RightsNotGranted(AccessKind::Write))
    );
}

#[test]
fn later_not_after_cannot_extend_expiry() {
    let device = device();
    let later = NOT_AFTER.saturating_add_millis(3_600_000);
    let token = standard_token(&device)
        .attenuate(Caveat::NotAfter(later))
        .unwrap();
    let after_original = AccessRequest {
        now: NOT_AFTER.saturating_add_millis(1),
        ..read_request()
    };
    assert_eq!(
        device.verify(token.as_bytes(), &after_original),
        Err(VerifyError::Expired {
            not_after: NOT_AFTER,
            now: after_original.now
        })
    );
}

#[test]
fn later_holder_cannot_rebind_token() {
    let device = device();
    let token = standard_token(&device)
        .attenuate_all(&[
            Caveat::Holder(REQUESTER),
            Caveat::Holder(RequesterId(0x0b2)),
        ])
        .unwrap();
    for requester in [REQUESTER, RequesterId(0x0b2)] {
        let request = AccessRequest {
            requester,
            ..read_request()
        };
        assert_eq!(
            device.verify(token.as_bytes(), &request),
            Err(VerifyError::WrongHolder(requester))
        );
    }
}

#[test]
fn later_delegation_limit_cannot_raise_limit() {
    let device = device();
    let limited = standard_token(&device)
        .attenuate(Caveat::DelegationLimit(1))
        .unwrap();
    let raised = limited.attenuate(Caveat::DelegationLimit(10)).unwrap();
    assert_eq!(
        raised.attenuate(Caveat::Rights(Rights::READ)),
        Err(AttenuateError::DelegationLimitReached { index: 3 })
    );
    // Built by hand, bypassing the courtesy check, the device still refuses it.
    let bypassed = append_raw_caveat(&raised, &caveat_bytes(Caveat::Rights(Rights::READ)));
    assert_eq!(
        device.verify(&bypassed, &read_request()),
        Err(VerifyError::DelegationLimitExceeded {
            index: 3,
            limit: 1,
            following: 2
        })
    );
}

#[test]
fn delegation_limit_zero_forbids_any_further_caveat() {
    let device = device();
    let sealed = standard_token(&device)
        .attenuate(Caveat::DelegationLimit(0))
        .unwrap();
    assert!(device.verify(sealed.as_bytes(), &read_request()).is_ok());
    let bypassed = append_raw_caveat(&sealed, &caveat_bytes(Caveat::Rights(Rights::READ)));
    assert_eq!(
        device.verify(&bypassed, &read_request()),
        Err(VerifyError::DelegationLimitExceeded {
            index: 3,
            limit: 0,
            following: 1
        })
    );
    assert_eq!(
        device
            .mint(&[Caveat::DelegationLimit(0), Caveat::Rights(Rights::READ)])
            .unwrap_err(),
        MintError::DelegationLimitExceeded {
            index: 0,
            limit: 0,
            following: 1
        }
    );
}

#[test]
fn range_base_plus_length_overflow_is_rejected() {
    assert_eq!(
        AddressRange::new(u64::MAX - 10, 11),
        Err(CaveatError::RangeOverflow {
            base: u64::MAX - 10,
            length: 11
        })
    );
    let device = device();
    let token = standard_token(&device);
    let mut overflowing = vec![0x01];
    cxl_lab_cap::wire::encode_varint(u64::MAX - 10, &mut overflowing);
    cxl_lab_cap::wire::encode_varint(11, &mut overflowing);
    let forged = append_raw_caveat(&token, &overflowing);
    assert!(matches!(
        device.verify(&forged, &read_request()),
        Err(VerifyError::Decode(DecodeError::InvalidCaveat {
            reason: CaveatError::RangeOverflow { .. },
            ..
        }))
    ));
}

#[test]
fn zero_length_range_is_rejected() {
    assert_eq!(
        AddressRange::new(GRANT_BASE, 0),
        Err(CaveatError::ZeroLength)
    );
    let device = device();
    let mut zero_length = vec![0x01];
    cxl_lab_cap::wire::encode_varint(GRANT_BASE, &mut zero_length);
    zero_length.push(0);
    let forged = append_raw_caveat(&standard_token(&device), &zero_length);
    assert!(matches!(
        device.verify(&forged, &read_request()),
        Err(VerifyError::Decode(DecodeError::InvalidCaveat {
            reason: CaveatError::ZeroLength,
            ..
        }))
    ));
}

#[test]
fn zero_length_request_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    let empty = request_at(GRANT_BASE, 0, AccessKind::Read);
    assert_eq!(
        device.verify(token.as_bytes(), &empty),
        Err(VerifyError::EmptyRequest)
    );
}

#[test]
fn request_partly_outside_range_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    let straddling_start = request_at(GRANT_BASE - 8, 16, AccessKind::Read);
    let straddling_end = request_at(GRANT_BASE + GRANT_LENGTH - 8, 16, AccessKind::Read);
    let covering_whole = request_at(GRANT_BASE - 1, GRANT_LENGTH + 2, AccessKind::Read);
    for request in [straddling_start, straddling_end, covering_whole] {
        assert_eq!(
            device.verify(token.as_bytes(), &request),
            Err(VerifyError::OutsideGrantedRange {
                address: request.address,
                length: request.length
            })
        );
    }
    let last_bytes = request_at(GRANT_BASE + GRANT_LENGTH - 8, 8, AccessKind::Read);
    assert!(device.verify(token.as_bytes(), &last_bytes).is_ok());
}

#[test]
fn request_overflowing_address_space_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    let wrapping = request_at(u64::MAX - 4, 16, AccessKind::Read);
    assert_eq!(
        device.verify(token.as_bytes(), &wrapping),
        Err(VerifyError::RequestOverflow {
            address: u64::MAX - 4,
            length: 16
        })
    );
}

#[test]
fn range_beyond_device_is_rejected() {
    let device = device();
    let past_end = range(CAPACITY_BYTES - 0x1000, 0x2000);
    assert_eq!(
        device.mint(&[Caveat::Range(past_end)]).unwrap_err(),
        MintError::RangeBeyondDevice {
            range: past_end,
            capacity_bytes: CAPACITY_BYTES
        }
    );
    // A holder can still append such a range; the device refuses the whole token.
    let attenuated = device
        .mint(&[Caveat::Range(range(0, CAPACITY_BYTES))])
        .unwrap()
        .attenuate(Caveat::Range(past_end))
        .unwrap();
    assert_eq!(
        device.verify(attenuated.as_bytes(), &read_request()),
        Err(VerifyError::RangeBeyondDevice {
            range: past_end,
            capacity_bytes: CAPACITY_BYTES
        })
    );
}

#[test]
fn request_beyond_device_without_range_caveat_is_rejected() {
    let device = device_with_policy(Policy {
        required_caveats: vec![],
        ..Policy::default()
    });
    let whole_device = device.mint(&[]).unwrap();
    let past_end = request_at(CAPACITY_BYTES - 8, 16, AccessKind::Read);
    assert_eq!(
        device.verify(whole_device.as_bytes(), &past_end),
        Err(VerifyError::RequestBeyondDevice {
            address: CAPACITY_BYTES - 8,
            length: 16
        })
    );
    let last_bytes = request_at(CAPACITY_BYTES - 8, 8, AccessKind::Read);
    assert!(device.verify(whole_device.as_bytes(), &last_bytes).is_ok());
}

#[test]
fn several_range_caveats_intersect() {
    let device = device();
    let token = standard_token(&device)
        .attenuate(Caveat::Range(range(GRANT_BASE + 0x800, GRANT_LENGTH)))
        .unwrap();
    let verified = device
        .verify(
            token.as_bytes(),
            &request_at(GRANT_BASE + 0x800, 64, AccessKind::Read),
        )
        .unwrap();
    assert_eq!(
        verified.authority.range,
        RangeLimit::Within(range(GRANT_BASE + 0x800, GRANT_LENGTH - 0x800))
    );
    assert!(device.verify(token.as_bytes(), &read_request()).is_err());
}

#[test]
fn disjoint_range_caveats_grant_nothing() {
    let device = device();
    let token = standard_token(&device)
        .attenuate(Caveat::Range(range(GRANT_BASE + GRANT_LENGTH, 0x1000)))
        .unwrap();
    for address in [GRANT_BASE, GRANT_BASE + GRANT_LENGTH] {
        let request = request_at(address, 8, AccessKind::Read);
        assert_eq!(
            device.verify(token.as_bytes(), &request),
            Err(VerifyError::OutsideGrantedRange { address, length: 8 })
        );
    }
    assert_eq!(
        device
            .install_grant(token.as_bytes(), REQUESTER, NOW)
            .unwrap_err(),
        cxl_lab_cap::InstallError::Verify(VerifyError::NoAddressGranted)
    );
}

#[test]
fn token_without_caveats_is_rejected_when_policy_requires_them() {
    let device = device();
    let bare = device.mint(&[]).unwrap();
    assert_eq!(
        device.verify(bare.as_bytes(), &read_request()),
        Err(VerifyError::MissingRequiredCaveat(CaveatKind::Range))
    );
    let strict = device_with_policy(Policy {
        required_caveats: vec![CaveatKind::Range, CaveatKind::NotAfter, CaveatKind::Holder],
        ..Policy::default()
    });
    let without_holder = standard_token(&strict);
    assert_eq!(
        strict.verify(without_holder.as_bytes(), &read_request()),
        Err(VerifyError::MissingRequiredCaveat(CaveatKind::Holder))
    );
    let with_holder = without_holder.attenuate(Caveat::Holder(REQUESTER)).unwrap();
    assert!(strict
        .verify(with_holder.as_bytes(), &read_request())
        .is_ok());
}

#[test]
fn wrong_holder_is_rejected() {
    let device = device();
    let bound = standard_token(&device)
        .attenuate(Caveat::Holder(REQUESTER))
        .unwrap();
    let stranger = AccessRequest {
        requester: RequesterId(0x0ff),
        ..read_request()
    };
    assert_eq!(
        device.verify(bound.as_bytes(), &stranger),
        Err(VerifyError::WrongHolder(RequesterId(0x0ff)))
    );
    assert_eq!(
        device
            .install_grant(bound.as_bytes(), RequesterId(0x0ff), NOW)
            .unwrap_err(),
        cxl_lab_cap::InstallError::Verify(VerifyError::WrongHolder(RequesterId(0x0ff)))
    );
    assert!(device.verify(bound.as_bytes(), &read_request()).is_ok());
}

#[test]
fn expiry_at_exact_boundary() {
    let device = device();
    let token = standard_token(&device);
    let at_not_after = AccessRequest {
        now: NOT_AFTER,
        ..read_request()
    };
    assert!(device.verify(token.as_bytes(), &at_not_after).is_ok());
    let one_millisecond_later = AccessRequest {
        now: NOT_AFTER.saturating_add_millis(1),
        ..read_request()
    };
    assert_eq!(
        device.verify(token.as_bytes(), &one_millisecond_later),
        Err(VerifyError::Expired {
            not_after: NOT_AFTER,
            now: one_millisecond_later.now
        })
    );
}

#[test]
fn expiry_with_clock_skew_allowance() {
    let skew_allowance_ms = 500;
    let device = device_with_policy(Policy {
        clock_skew_allowance_ms: skew_allowance_ms,
        ..Policy::default()
    });
    let token = standard_token(&device);
    let at_allowance = AccessRequest {
        now: NOT_AFTER.saturating_add_millis(skew_allowance_ms),
        ..read_request()
    };
    assert!(device.verify(token.as_bytes(), &at_allowance).is_ok());
    let past_allowance = AccessRequest {
        now: NOT_AFTER.saturating_add_millis(skew_allowance_ms + 1),
        ..read_request()
    };
    assert_eq!(
        device.verify(token.as_bytes(), &past_allowance),
        Err(VerifyError::Expired {
            not_after: NOT_AFTER,
            now: past_allowance.now
        })
    );
}

#[test]
fn expiry_near_end_of_time_saturates_instead_of_wrapping() {
    let device = device_with_policy(Policy {
        clock_skew_allowance_ms: u64::MAX,
        ..Policy::default()
    });
    let end_of_time = Timestamp::from_millis(u64::MAX);
    let token = device
        .mint(&[
            Caveat::Range(range(GRANT_BASE, GRANT_LENGTH)),
            Caveat::NotAfter(end_of_time),
        ])
        .unwrap();
    let request = AccessRequest {
        now: end_of_time,
        ..read_request()
    };
    assert!(device.verify(token.as_bytes(), &request).is_ok());
}

#[test]
fn earliest_not_after_wins() {
    let device = device();
    let sooner = Timestamp::from_millis(NOW.as_millis() + 10);
    let token = standard_token(&device)
        .attenuate(Caveat::NotAfter(sooner))
        .unwrap();
    let verified = device.verify(token.as_bytes(), &read_request()).unwrap();
    assert_eq!(verified.authority.not_after, Some(sooner));
    let after_sooner = AccessRequest {
        now: sooner.saturating_add_millis(1),
        ..read_request()
    };
    assert_eq!(
        device.verify(token.as_bytes(), &after_sooner),
        Err(VerifyError::Expired {
            not_after: sooner,
            now: after_sooner.now
        })
    );
}

#[test]
fn narrowed_to_no_rights_grants_nothing() {
    let device = device();
    let token = standard_token(&device)
        .attenuate(Caveat::Rights(Rights::NONE))
        .unwrap();
    let verified_authority: Result<Authority, _> = device
        .verify(token.as_bytes(), &read_request())
        .map(|verified| verified.authority);
    assert_eq!(
        verified_authority,
        Err(VerifyError::RightsNotGranted(AccessKind::Read))
    );
}
