//! Attacks across time: use after revocation or an epoch bump, stale cache entries and
//! installed grants that outlive their token

use std::sync::Arc;

use cxl_lab_cap::{
    AccessDenied, AccessKind, AccessRequest, Caveat, Epoch, EpochError, Revocation, RevokeError,
    Rights, TokenId, VerifyError,
};

use crate::fixtures::*;

#[test]
fn use_after_revocation_is_rejected_for_token_and_descendants() {
    let device = device();
    let token = standard_token(&device);
    let child = token.attenuate(Caveat::Rights(Rights::READ)).unwrap();
    let unrelated = standard_token(&device);
    device.verify(token.as_bytes(), &read_request()).unwrap();
    revoke(&device, &token);
    let token_id = token.identifier().token_id;
    assert_eq!(
        device.verify(token.as_bytes(), &read_request()),
        Err(VerifyError::Revoked(token_id))
    );
    assert_eq!(
        device.verify(child.as_bytes(), &read_request()),
        Err(VerifyError::Revoked(token_id))
    );
    assert!(device.verify(unrelated.as_bytes(), &read_request()).is_ok());
}

#[test]
fn use_after_epoch_bump_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    device.verify(token.as_bytes(), &read_request()).unwrap();
    assert_eq!(device.bump_epoch(), Ok(Epoch(2)));
    assert_eq!(
        device.verify(token.as_bytes(), &read_request()),
        Err(VerifyError::WrongEpoch {
            token_epoch: Epoch(1),
            current_epoch: Epoch(2)
        })
    );
    let fresh = standard_token(&device);
    assert_eq!(fresh.identifier().epoch, Epoch(2));
    assert_eq!(
        fresh.identifier().token_id,
        TokenId(1),
        "token ids restart per epoch"
    );
    assert!(device.verify(fresh.as_bytes(), &read_request()).is_ok());
}

#[test]
fn token_relabelled_to_current_epoch_after_bump_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    device.bump_epoch().unwrap();
    let mut relabelled = token.as_bytes().to_vec();
    assert_eq!(
        relabelled[3], 1,
        "epoch byte follows the one-byte device id"
    );
    relabelled[3] = 2;
    assert_eq!(
        device.verify(&relabelled, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn token_from_future_epoch_is_rejected() {
    let device = device();
    let future_device = device_at_epoch(Epoch(5));
    let future_token = standard_token(&future_device);
    assert_eq!(
        device.verify(future_token.as_bytes(), &read_request()),
        Err(VerifyError::WrongEpoch {
            token_epoch: Epoch(5),
            current_epoch: Epoch(1)
        })
    );
}

#[test]
fn epoch_bump_revives_no_denied_token_id() {
    // After a bump the deny set is emptied because old tokens fail the epoch check anyway;
    // a new token that reuses a denied id is a different token and verifies.
    let device = device();
    let old = standard_token(&device);
    revoke(&device, &old);
    device.bump_epoch().unwrap();
    let new_with_same_id = standard_token(&device);
    assert_eq!(
        new_with_same_id.identifier().token_id,
        old.identifier().token_id
    );
    assert!(device
        .verify(new_with_same_id.as_bytes(), &read_request())
        .is_ok());
    assert!(matches!(
        device.verify(old.as_bytes(), &read_request()),
        Err(VerifyError::WrongEpoch { .. })
    ));
}

#[test]
fn epoch_bump_at_the_last_epoch_is_refused_instead_of_wrapping() {
    // Wrapping would re-derive epoch 0's keys: a token of epoch 0 would verify again.
    let epoch_zero_device = device_at_epoch(Epoch(0));
    let epoch_zero_token = standard_token(&epoch_zero_device);
    let device = device_at_epoch(Epoch(u64::MAX - 1));
    let second_to_last = standard_token(&device);
    assert_eq!(device.bump_epoch(), Ok(Epoch(u64::MAX)));
    let last = standard_token(&device);
    assert_eq!(
        device.bump_epoch(),
        Err(EpochError::Exhausted(Epoch(u64::MAX)))
    );
    assert_eq!(device.epoch(), Epoch(u64::MAX));
    assert!(
        device.verify(last.as_bytes(), &read_request()).is_ok(),
        "a refused bump changes nothing"
    );
    for dead in [&epoch_zero_token, &second_to_last] {
        assert!(matches!(
            device.verify(dead.as_bytes(), &read_request()),
            Err(VerifyError::WrongEpoch { .. })
        ));
    }
}

#[test]
fn revocation_is_scoped_to_its_epoch() {
    let device = device();
    let old = standard_token(&device);
    let old_identifier = *old.identifier();
    device.bump_epoch().unwrap();
    let new_with_same_id = standard_token(&device);
    assert_eq!(
        new_with_same_id.identifier().token_id,
        old_identifier.token_id
    );
    // An owner who read the id before the bump and revokes after it must not hit the new
    // token that reuses the id.
    assert_eq!(
        device.revoke_token(old_identifier.epoch, old_identifier.token_id),
        Ok(Revocation::EpochAlreadyOver)
    );
    assert!(device
        .verify(new_with_same_id.as_bytes(), &read_request())
        .is_ok());
    // And the other way: revoking the new token leaves the old one exactly as dead as it was.
    revoke(&device, &new_with_same_id);
    assert_eq!(
        device.verify(old.as_bytes(), &read_request()),
        Err(VerifyError::WrongEpoch {
            token_epoch: Epoch(1),
            current_epoch: Epoch(2)
        })
    );
    // A token revoked in its epoch stays refused once that epoch is over.
    device.bump_epoch().unwrap();
    assert!(matches!(
        device.verify(new_with_same_id.as_bytes(), &read_request()),
        Err(VerifyError::WrongEpoch { .. })
    ));
}

#[test]
fn revoking_a_token_not_yet_minted_is_refused() {
    let device = device();
    let minted = standard_token(&device);
    let next_id = TokenId(minted.identifier().token_id.0 + 1);
    assert_eq!(
        device.revoke_token(Epoch(1), next_id),
        Err(RevokeError::NotMinted {
            epoch: Epoch(1),
            token_id: next_id
        })
    );
    assert_eq!(
        device.revoke_token(Epoch(1), TokenId(0)),
        Err(RevokeError::NotMinted {
            epoch: Epoch(1),
            token_id: TokenId(0)
        })
    );
    assert_eq!(
        device.revoke_token(Epoch(2), TokenId(1)),
        Err(RevokeError::FutureEpoch {
            requested: Epoch(2),
            current: Epoch(1)
        })
    );
    // The refused revocations left no trace: the next token, with that id, is alive.
    let next = standard_token(&device);
    assert_eq!(next.identifier().token_id, next_id);
    assert!(device.verify(next.as_bytes(), &read_request()).is_ok());
}

#[test]
fn tag_cache_does_not_outlive_revocation() {
    let device = device();
    let token = standard_token(&device);
    assert_eq!(
        device
            .verify(token.as_bytes(), &read_request())
            .unwrap()
            .macs_computed,
        0
    );
    revoke(&device, &token);
    assert_eq!(
        device.verify(token.as_bytes(), &read_request()),
        Err(VerifyError::Revoked(token.identifier().token_id))
    );
}

#[test]
fn tag_cache_does_not_outlive_expiry() {
    let device = device();
    let token = standard_token(&device);
    device.verify(token.as_bytes(), &read_request()).unwrap();
    let expired = AccessRequest {
        now: NOT_AFTER.saturating_add_millis(1),
        ..read_request()
    };
    assert!(matches!(
        device.verify(token.as_bytes(), &expired),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn cached_child_verify_costs_one_mac() {
    // The device remembers the chain of every token it mints (and verifies): the token itself
    // then costs no MAC, a child one, a token two steps past anything cached the whole chain.
    let device = device();
    let parent = standard_token(&device);
    assert_eq!(
        device
            .verify(parent.as_bytes(), &read_request())
            .unwrap()
            .macs_computed,
        0
    );
    let child = parent.attenuate(Caveat::Rights(Rights::READ)).unwrap();
    assert_eq!(
        device
            .verify(child.as_bytes(), &read_request())
            .unwrap()
            .macs_computed,
        1
    );
    assert_eq!(
        device
            .verify(child.as_bytes(), &read_request())
            .unwrap()
            .macs_computed,
        0
    );
    let grandchild_of_uncached = child
        .attenuate_all(&[Caveat::Holder(REQUESTER), Caveat::Rights(Rights::READ)])
        .unwrap();
    assert_eq!(
        device
            .verify(grandchild_of_uncached.as_bytes(), &read_request())
            .unwrap()
            .macs_computed,
        7,
        "two steps past the cache is a cold verify"
    );
}

#[test]
fn cold_verify_without_cache_runs_the_whole_chain_every_time() {
    let device = device_with_policy(cxl_lab_cap::Policy {
        tag_cache_capacity: 0,
        ..Default::default()
    });
    let token = standard_token(&device);
    for _ in 0..2 {
        assert_eq!(
            device
                .verify(token.as_bytes(), &read_request())
                .unwrap()
                .macs_computed,
            4
        );
    }
    assert_eq!(device.cached_tag_count(), 0);
}

#[test]
fn revocation_evicts_installed_grants() {
    let device = device();
    let token = standard_token(&device);
    let other = standard_token(&device);
    device
        .install_grant(token.as_bytes(), REQUESTER, NOW)
        .unwrap();
    device
        .install_grant(other.as_bytes(), REQUESTER, NOW)
        .unwrap();
    assert_eq!(
        device.check_access(&read_request()),
        Ok(token.identifier().token_id)
    );
    assert_eq!(
        revoke(&device, &token),
        Revocation::Denied { evicted_grants: 1 }
    );
    assert_eq!(
        device.check_access(&read_request()),
        Ok(other.identifier().token_id)
    );
    assert_eq!(
        revoke(&device, &other),
        Revocation::Denied { evicted_grants: 1 }
    );
    assert_eq!(
        device.check_access(&read_request()),
        Err(AccessDenied {
            requester: REQUESTER,
            address: GRANT_BASE,
            length: 64,
            access: AccessKind::Read
        })
    );
    assert!(matches!(
        device.install_grant(token.as_bytes(), REQUESTER, NOW),
        Err(cxl_lab_cap::InstallError::Verify(VerifyError::Revoked(_)))
    ));
}

#[test]
fn epoch_bump_evicts_installed_grants() {
    let device = device();
    device
        .install_grant(standard_token(&device).as_bytes(), REQUESTER, NOW)
        .unwrap();
    assert!(device.check_access(&read_request()).is_ok());
    device.bump_epoch().unwrap();
    assert_eq!(device.installed_grant_count(), 0);
    assert!(device.check_access(&read_request()).is_err());
}

#[test]
fn installed_grant_is_denied_after_expiry_and_purged() {
    let device = device();
    device
        .install_grant(standard_token(&device).as_bytes(), REQUESTER, NOW)
        .unwrap();
    let at_not_after = AccessRequest {
        now: NOT_AFTER,
        ..read_request()
    };
    assert!(device.check_access(&at_not_after).is_ok());
    let expired = AccessRequest {
        now: NOT_AFTER.saturating_add_millis(1),
        ..read_request()
    };
    assert!(device.check_access(&expired).is_err());
    assert_eq!(device.purge_expired_grants(expired.now), 1);
    assert_eq!(device.installed_grant_count(), 0);
}

#[test]
fn expired_token_cannot_be_installed() {
    let device = device();
    let token = standard_token(&device);
    let late = NOT_AFTER.saturating_add_millis(1);
    assert!(matches!(
        device.install_grant(token.as_bytes(), REQUESTER, late),
        Err(cxl_lab_cap::InstallError::Verify(
            VerifyError::Expired { .. }
        ))
    ));
}

#[test]
fn installed_grant_enforces_range_rights_and_requester() {
    let device = device();
    let read_only = standard_token(&device)
        .attenuate(Caveat::Rights(Rights::READ))
        .unwrap();
    device
        .install_grant(read_only.as_bytes(), REQUESTER, NOW)
        .unwrap();
    assert!(device.check_access(&read_request()).is_ok());
    assert!(device
        .check_access(&request_at(GRANT_BASE, 64, AccessKind::Write))
        .is_err());
    assert!(device
        .check_access(&request_at(
            GRANT_BASE + GRANT_LENGTH - 8,
            16,
            AccessKind::Read
        ))
        .is_err());
    let stranger = AccessRequest {
        requester: cxl_lab_cap::RequesterId(0x0ff),
        ..read_request()
    };
    assert!(device.check_access(&stranger).is_err());
}

#[test]
fn grant_table_limit_per_requester_is_enforced() {
    let device = device();
    for _ in 0..8 {
        device
            .install_grant(standard_token(&device).as_bytes(), REQUESTER, NOW)
            .unwrap();
    }
    assert_eq!(
        device.install_grant(standard_token(&device).as_bytes(), REQUESTER, NOW),
        Err(cxl_lab_cap::InstallError::TableFull {
            requester: REQUESTER,
            max: 8
        })
    );
}

#[test]
fn revocation_races_with_installation_never_leave_a_revoked_grant() {
    // Install and revoke the same tokens from two threads; whatever the interleaving, once
    // both are done no grant of a revoked token may remain.
    let device = Arc::new(device());
    let tokens: Vec<_> = (0..64).map(|_| standard_token(&device)).collect();
    let installer = {
        let device = Arc::clone(&device);
        let tokens = tokens.clone();
        std::thread::spawn(move || {
            for (index, token) in tokens.iter().enumerate() {
                let requester = cxl_lab_cap::RequesterId(index as u16);
                let _ = device.install_grant(token.as_bytes(), requester, NOW);
            }
        })
    };
    for token in &tokens {
        revoke(&device, token);
    }
    installer.join().unwrap();
    assert_eq!(device.installed_grant_count(), 0);
}
