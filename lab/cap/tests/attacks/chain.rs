//! Attacks on the MAC chain: forged tags, stripped, reordered, truncated and spliced caveats,
//! suite downgrades, tokens of other devices and secrets, and unknown caveat types

use cxl_lab_cap::{
    AccessKind, Algorithm, Caveat, DecodeError, Device, DeviceConfig, DeviceId, Policy,
    RequesterId, Rights, RootSecret, Token, VerifyError,
};

use crate::fixtures::*;

#[test]
fn genuine_standard_token_verifies_as_the_positive_control() {
    let device = device();
    let token = standard_token(&device);
    let verified = device
        .verify(token.as_bytes(), &read_request())
        .expect("genuine token");
    assert_eq!(verified.token_id, token.identifier().token_id);
    assert!(
        token.as_bytes().len() <= 64,
        "token is {} bytes",
        token.as_bytes().len()
    );
}

#[test]
fn forged_tag_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    let mut forged = token.as_bytes().to_vec();
    let tag_start = forged.len() - TAG_LEN;
    forged[tag_start..].copy_from_slice(&[0x11; TAG_LEN]);
    assert_eq!(
        device.verify(&forged, &read_request()),
        Err(VerifyError::BadTag)
    );
    // A single flipped bit in the last tag byte is just as dead.
    let mut one_bit_off = token.as_bytes().to_vec();
    *one_bit_off.last_mut().unwrap() ^= 1;
    assert_eq!(
        device.verify(&one_bit_off, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn forged_token_minted_with_another_secret_is_rejected() {
    let device = device();
    let impostor = Device::new(
        DeviceConfig::new(DEVICE_ID, CAPACITY_BYTES),
        RootSecret::from_bytes([0xee; TAG_LEN]),
    )
    .unwrap();
    let forged = standard_token(&impostor);
    assert_eq!(
        device.verify(forged.as_bytes(), &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn stripped_last_caveat_is_rejected() {
    let device = device();
    let narrowed = standard_token(&device)
        .attenuate(Caveat::Rights(Rights::READ))
        .unwrap();
    let caveats = caveat_slices(&narrowed);
    let stripped = assemble(
        &identifier_bytes(&narrowed),
        &caveats[..caveats.len() - 1],
        &tag_of(narrowed.as_bytes()),
    );
    let write = request_at(GRANT_BASE, 64, AccessKind::Write);
    assert_eq!(device.verify(&stripped, &write), Err(VerifyError::BadTag));
}

#[test]
fn stripped_middle_caveat_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    let mut caveats = caveat_slices(&token);
    caveats.remove(1);
    let stripped = assemble(
        &identifier_bytes(&token),
        &caveats,
        &tag_of(token.as_bytes()),
    );
    assert_eq!(
        device.verify(&stripped, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn stripped_all_caveats_is_rejected() {
    let device = device_with_policy(Policy {
        required_caveats: vec![],
        ..Policy::default()
    });
    let token = standard_token(&device);
    let stripped = assemble(&identifier_bytes(&token), &[], &tag_of(token.as_bytes()));
    assert_eq!(
        device.verify(&stripped, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn reordered_caveats_are_rejected() {
    let device = device();
    let token = standard_token(&device);
    let mut caveats = caveat_slices(&token);
    caveats.swap(0, 2);
    let reordered = assemble(
        &identifier_bytes(&token),
        &caveats,
        &tag_of(token.as_bytes()),
    );
    assert_eq!(
        device.verify(&reordered, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn truncated_token_is_rejected_at_every_length() {
    let device = device();
    let token = standard_token(&device);
    let bytes = token.as_bytes();
    for truncated_length in 0..bytes.len() {
        let outcome = device.verify(&bytes[..truncated_length], &read_request());
        assert!(
            matches!(
                outcome,
                Err(VerifyError::Decode(DecodeError::UnexpectedEnd { .. }))
            ),
            "truncated to {truncated_length} bytes: {outcome:?}"
        );
    }
}

#[test]
fn truncated_caveat_chain_with_recount_is_rejected() {
    // Dropping the last caveat *and* fixing the count still leaves the child's tag, which is
    // not the parent's.
    let device = device();
    let token = standard_token(&device);
    let caveats = caveat_slices(&token);
    let truncated = assemble(
        &identifier_bytes(&token),
        &caveats[..2],
        &tag_of(token.as_bytes()),
    );
    assert_eq!(
        device.verify(&truncated, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn spliced_caveat_from_another_token_is_rejected() {
    let device = device();
    let victim = standard_token(&device);
    // The adversary holds a wide token of its own and wants the victim's identity with its own
    // caveats, or its own chain with one of the victim's caveats.
    let own = device
        .mint(&[Caveat::Range(range(0, CAPACITY_BYTES))])
        .unwrap();
    let own_identifier_with_victim_chain = assemble(
        &identifier_bytes(&own),
        &caveat_slices(&victim),
        &tag_of(victim.as_bytes()),
    );
    assert_eq!(
        device.verify(&own_identifier_with_victim_chain, &read_request()),
        Err(VerifyError::BadTag)
    );
    let mut spliced_caveats = caveat_slices(&own);
    spliced_caveats.push(caveat_slices(&victim)[1].clone());
    let own_chain_with_victim_caveat = assemble(
        &identifier_bytes(&own),
        &spliced_caveats,
        &tag_of(victim.as_bytes()),
    );
    assert_eq!(
        device.verify(&own_chain_with_victim_caveat, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn caveat_count_tampering_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    let count_offset = caveat_count_offset(&token);
    let mut fewer = token.as_bytes().to_vec();
    fewer[count_offset] -= 1;
    assert!(matches!(
        device.verify(&fewer, &read_request()),
        Err(VerifyError::Decode(DecodeError::TrailingBytes { .. }))
    ));
    let mut more = token.as_bytes().to_vec();
    more[count_offset] += 1;
    assert!(matches!(
        device.verify(&more, &read_request()),
        Err(VerifyError::Decode(_))
    ));
}

#[test]
fn algorithm_downgrade_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    assert_eq!(token.identifier().algorithm, Algorithm::KeyedBlake3);
    let mut relabelled = token.as_bytes().to_vec();
    relabelled[1] = Algorithm::HmacSha256.byte();
    assert_eq!(
        device.verify(&relabelled, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn version_downgrade_is_rejected() {
    let device = device();
    let mut relabelled = standard_token(&device).as_bytes().to_vec();
    relabelled[0] = 0;
    assert_eq!(
        device.verify(&relabelled, &read_request()),
        Err(VerifyError::Decode(DecodeError::UnsupportedVersion(0)))
    );
}

#[test]
fn algorithm_not_accepted_by_policy_is_rejected() {
    let hmac_minting_device = {
        let mut config = DeviceConfig::new(DEVICE_ID, CAPACITY_BYTES);
        config.mint_algorithm = Algorithm::HmacSha256;
        Device::new(config, secret()).unwrap()
    };
    let hmac_token = standard_token(&hmac_minting_device);
    let blake3_only = device_with_policy(Policy {
        accepted_algorithms: vec![Algorithm::KeyedBlake3],
        ..Policy::default()
    });
    assert_eq!(
        blake3_only.verify(hmac_token.as_bytes(), &read_request()),
        Err(VerifyError::AlgorithmNotAccepted(Algorithm::HmacSha256))
    );
}

#[test]
fn hmac_sha256_suite_mints_attenuates_and_rejects_forgeries() {
    let mut config = DeviceConfig::new(DEVICE_ID, CAPACITY_BYTES);
    config.mint_algorithm = Algorithm::HmacSha256;
    let device = Device::new(config, secret()).unwrap();
    let token = standard_token(&device)
        .attenuate(Caveat::Rights(Rights::READ))
        .unwrap();
    assert!(device.verify(token.as_bytes(), &read_request()).is_ok());
    let write = request_at(GRANT_BASE, 64, AccessKind::Write);
    assert_eq!(
        device.verify(token.as_bytes(), &write),
        Err(VerifyError::RightsNotGranted(AccessKind::Write))
    );
    let mut forged = token.as_bytes().to_vec();
    *forged.last_mut().unwrap() ^= 0x80;
    assert_eq!(
        device.verify(&forged, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn token_for_another_device_is_rejected() {
    let device = device();
    let other_device =
        Device::new(DeviceConfig::new(DeviceId(0x43), CAPACITY_BYTES), secret()).unwrap();
    let foreign = standard_token(&other_device);
    assert_eq!(
        device.verify(foreign.as_bytes(), &read_request()),
        Err(VerifyError::WrongDevice {
            expected: DEVICE_ID,
            found: DeviceId(0x43)
        })
    );
}

#[test]
fn device_id_relabelled_to_this_device_is_rejected() {
    // Same secret provisioned on two devices by mistake: the device id is part of the key
    // derivation and of the MACed identifier, so relabelling still fails.
    let device = device();
    let other_device =
        Device::new(DeviceConfig::new(DeviceId(0x43), CAPACITY_BYTES), secret()).unwrap();
    let mut relabelled = standard_token(&other_device).as_bytes().to_vec();
    assert_eq!(relabelled[2], 0x43);
    relabelled[2] = DEVICE_ID.0 as u8;
    assert_eq!(
        device.verify(&relabelled, &read_request()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn unknown_caveat_type_with_valid_chain_fails_closed() {
    let device = device();
    let token = standard_token(&device);
    // A holder can chain any bytes it likes; a caveat type the device does not know must be
    // refused, not skipped, even though the tag is right.
    let future_caveat = [0x06, 0x01];
    let extended = append_raw_caveat(&token, &future_caveat);
    let count_offset = caveat_count_offset(&token);
    let unknown_offset = token.as_bytes().len() - TAG_LEN;
    assert_eq!(extended[count_offset], 4);
    assert_eq!(
        device.verify(&extended, &read_request()),
        Err(VerifyError::Decode(DecodeError::UnknownCaveatType {
            offset: unknown_offset,
            type_byte: 0x06
        }))
    );
    assert!(matches!(
        Token::decode(&extended),
        Err(DecodeError::UnknownCaveatType { .. })
    ));
}

#[test]
fn adversary_appended_known_caveat_verifies_as_a_narrowing() {
    // The counterpart of the test above: the same raw chaining with a known caveat is a
    // legitimate attenuation, which shows the raw helper builds valid chains.
    let device = device();
    let token = standard_token(&device);
    let extended = append_raw_caveat(&token, &caveat_bytes(Caveat::Holder(RequesterId(9))));
    assert_eq!(
        device.verify(&extended, &read_request()),
        Err(VerifyError::WrongHolder(REQUESTER))
    );
    let as_holder = cxl_lab_cap::AccessRequest {
        requester: RequesterId(9),
        ..read_request()
    };
    assert!(device.verify(&extended, &as_holder).is_ok());
}

#[test]
fn forged_child_of_cached_token_is_rejected_and_not_cached() {
    let device = device();
    let parent = standard_token(&device);
    device.verify(parent.as_bytes(), &read_request()).unwrap();
    let child = parent.attenuate(Caveat::Rights(Rights::READ)).unwrap();
    let mut forged_child = child.as_bytes().to_vec();
    *forged_child.last_mut().unwrap() ^= 1;
    let cached_before = device.cached_tag_count();
    assert_eq!(
        device.verify(&forged_child, &read_request()),
        Err(VerifyError::BadTag)
    );
    assert_eq!(device.cached_tag_count(), cached_before);
    assert_eq!(
        device.verify(&forged_child, &read_request()),
        Err(VerifyError::BadTag)
    );
    assert_eq!(
        device
            .verify(child.as_bytes(), &read_request())
            .unwrap()
            .macs_computed,
        1
    );
}
