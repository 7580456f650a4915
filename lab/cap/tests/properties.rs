//! Property tests: attenuation never widens what the device accepts, any change to any byte of
//! a genuine token makes it fail, and every input the decoder accepts is canonical

use cxl_lab_cap::{
    AccessKind, AccessRequest, AddressRange, Caveat, Device, DeviceConfig, DeviceId, Policy,
    RequesterId, Rights, RootSecret, Timestamp, Token, MAX_CAVEATS,
};
use proptest::prelude::*;

const CAPACITY_BYTES: u64 = 1 << 20;
const BASE_TIME_MS: u64 = 1_760_000_000_000;

fn device() -> Device {
    let mut config = DeviceConfig::new(DeviceId(9), CAPACITY_BYTES);
    // No required caveats and no cache: every token shape is allowed and every verification
    // runs the whole chain, so the properties speak about the MAC and the caveats alone.
    config.policy = Policy {
        required_caveats: vec![],
        tag_cache_capacity: 0,
        ..Policy::default()
    };
    Device::new(config, RootSecret::from_bytes([3; 32])).unwrap()
}

fn address_range() -> impl Strategy<Value = AddressRange> {
    (0..CAPACITY_BYTES).prop_flat_map(|base| {
        (Just(base), 1..=(CAPACITY_BYTES - base))
            .prop_map(|(base, length)| AddressRange::new(base, length).unwrap())
    })
}

fn caveat() -> impl Strategy<Value = Caveat> {
    prop_oneof![
        address_range().prop_map(Caveat::Range),
        (0u8..4).prop_map(|bits| Caveat::Rights(Rights::from_bits(bits).unwrap())),
        (0u64..10_000)
            .prop_map(|offset| Caveat::NotAfter(Timestamp::from_millis(BASE_TIME_MS + offset))),
        (0u16..4).prop_map(|requester| Caveat::Holder(RequesterId(requester))),
        (0u8..6).prop_map(Caveat::DelegationLimit),
    ]
}

fn request() -> impl Strategy<Value = AccessRequest> {
    (
        0..CAPACITY_BYTES,
        1u64..4096,
        any::<bool>(),
        0u16..4,
        0u64..12_000,
    )
        .prop_map(
            |(address, length, is_write, requester, time_offset)| AccessRequest {
                requester: RequesterId(requester),
                address,
                length,
                access: if is_write {
                    AccessKind::Write
                } else {
                    AccessKind::Read
                },
                now: Timestamp::from_millis(BASE_TIME_MS + time_offset),
            },
        )
}

/// A genuine token: minted bare, then attenuated with `minted` and `appended` as far as the
/// delegation limits allow (minting with caveats runs the same chain as this).
fn genuine_token(device: &Device, minted: &[Caveat], appended: &[Caveat]) -> Token {
    let mut token = device.mint(&[]).unwrap();
    for caveat in minted.iter().chain(appended) {
        match token.attenuate(*caveat) {
            Ok(next) => token = next,
            Err(_) => break,
        }
    }
    token
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn attenuation_never_widens(
        minted in prop::collection::vec(caveat(), 0..4),
        appended in prop::collection::vec(caveat(), 1..4),
        requests in prop::collection::vec(request(), 16),
    ) {
        let device = device();
        let parent = genuine_token(&device, &minted, &[]);
        let child = genuine_token(&device, &minted, &appended);
        // Same token id is not needed: each mint gets a new id, which is irrelevant to what
        // the caveats grant.
        for request in &requests {
            if device.verify(child.as_bytes(), request).is_ok() {
                prop_assert!(
                    device.verify(parent.as_bytes(), request).is_ok(),
                    "child admits {request:?} but parent does not"
                );
            }
        }
        let parent_authority = cxl_lab_cap::Authority::from_caveats(parent.caveats().iter().copied());
        let child_authority = cxl_lab_cap::Authority::from_caveats(child.caveats().iter().copied());
        if let (Ok(parent_authority), Ok(child_authority)) = (parent_authority, child_authority) {
            prop_assert!(child_authority.is_within(&parent_authority, CAPACITY_BYTES));
        }
    }

    #[test]
    fn any_change_to_any_byte_fails(
        minted in prop::collection::vec(caveat(), 0..5),
        byte_choice in any::<prop::sample::Index>(),
        flip_mask in 1u8..=255,
    ) {
        let device = device();
        let token = genuine_token(&device, &minted, &[]);
        let index = byte_choice.index(token.as_bytes().len());
        let mut altered = token.as_bytes().to_vec();
        altered[index] ^= flip_mask;
        for requester in 0..4 {
            let request = AccessRequest {
                requester: RequesterId(requester),
                address: 0,
                length: 1,
                access: AccessKind::Read,
                now: Timestamp::from_millis(BASE_TIME_MS),
            };
            let outcome = device.verify(&altered, &request);
            prop_assert!(outcome.is_err(), "byte {index} ^ {flip_mask:#04x} verified: {outcome:?}");
        }
    }

    #[test]
    fn truncation_and_extension_fail(
        minted in prop::collection::vec(caveat(), 0..5),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..40),
    ) {
        let device = device();
        let token = genuine_token(&device, &minted, &[]);
        let bytes = token.as_bytes();
        prop_assert!(Token::decode(&bytes[..cut.index(bytes.len())]).is_err());
        let mut extended = bytes.to_vec();
        extended.extend_from_slice(&extra);
        prop_assert!(Token::decode(&extended).is_err());
    }

    #[test]
    fn decoder_accepts_only_canonical_encodings(
        minted in prop::collection::vec(caveat(), 0..MAX_CAVEATS),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let device = device();
        let mut bytes = genuine_token(&device, &minted, &[]).as_bytes().to_vec();
        for (position, value) in edits {
            let index = position.index(bytes.len());
            bytes[index] = value;
        }
        if let Ok(decoded) = Token::decode(&bytes) {
            // Re-encode from the decoded parts alone: it must give back the very same bytes.
            let reencoded = decoded.reencode_from_parts();
            prop_assert_eq!(reencoded, bytes);
        }
    }

    #[test]
    fn genuine_tokens_admit_exactly_what_their_caveats_allow(
        minted in prop::collection::vec(caveat(), 0..4),
        appended in prop::collection::vec(caveat(), 0..4),
        request in request(),
    ) {
        let device = device();
        let token = genuine_token(&device, &minted, &appended);
        let outcome = device.verify(token.as_bytes(), &request);
        let caveats = token.caveats();
        let every_caveat_allows = caveats.iter().all(|caveat| match caveat {
            Caveat::Range(range) => range.contains_span(request.address, request.length),
            Caveat::Rights(rights) => rights.allows(request.access),
            Caveat::NotAfter(not_after) => request.now <= *not_after,
            Caveat::Holder(holder) => *holder == request.requester,
            Caveat::DelegationLimit(_) => true,
        }) && request.address + request.length <= CAPACITY_BYTES;
        prop_assert_eq!(outcome.is_ok(), every_caveat_allows, "{:?} with {:?}: {:?}", caveats, request, outcome);
    }
}
