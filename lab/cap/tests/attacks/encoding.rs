//! Attacks on the encoding: non-canonical forms (non-minimal varints, trailing bytes, lengths
//! past the end, undefined bits) and the limits on caveat count and token size

use cxl_lab_cap::{
    AttenuateError, Caveat, CaveatError, DecodeError, MintError, Policy, Rights, Token,
    VerifyError, MAX_CAVEATS,
};

use crate::fixtures::*;

fn decode_error(device: &cxl_lab_cap::Device, bytes: &[u8]) -> DecodeError {
    match device.verify(bytes, &read_request()) {
        Err(VerifyError::Decode(decode_error)) => {
            assert_eq!(
                Token::decode(bytes).err(),
                Some(decode_error),
                "decoder and verifier agree"
            );
            decode_error
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn non_minimal_varint_in_identifier_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    // Device id 0x42 written as two bytes, `c2 00`: same value, second encoding.
    let bytes = token.as_bytes();
    assert_eq!(bytes[2], 0x42);
    let mut padded = bytes[..2].to_vec();
    padded.extend_from_slice(&[0xc2, 0x00]);
    padded.extend_from_slice(&bytes[3..]);
    assert_eq!(
        decode_error(&device, &padded),
        DecodeError::NonMinimalVarint { offset: 2 }
    );
}

#[test]
fn non_minimal_varint_in_caveat_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    // A not-after of 5 written as `85 80 00`, chained correctly by its holder.
    let padded_caveat = [0x03, 0x85, 0x80, 0x00];
    let forged = append_raw_caveat(&token, &padded_caveat);
    let caveat_offset = token.as_bytes().len() - TAG_LEN;
    assert_eq!(
        decode_error(&device, &forged),
        DecodeError::NonMinimalVarint {
            offset: caveat_offset + 1
        }
    );
}

#[test]
fn overflowing_varint_is_rejected() {
    let device = device();
    let token = standard_token(&device);
    let mut overflowing = vec![0x03];
    overflowing.extend_from_slice(&[0xff; 9]);
    overflowing.push(0x7f);
    let forged = append_raw_caveat(&token, &overflowing);
    assert!(matches!(
        decode_error(&device, &forged),
        DecodeError::VarintOverflow { .. }
    ));
}

#[test]
fn trailing_bytes_are_rejected() {
    let device = device();
    let mut extended = standard_token(&device).as_bytes().to_vec();
    extended.push(0);
    assert_eq!(
        decode_error(&device, &extended),
        DecodeError::TrailingBytes { count: 1 }
    );
    extended.extend_from_slice(&[0xaa; 40]);
    assert_eq!(
        decode_error(&device, &extended),
        DecodeError::TrailingBytes { count: 41 }
    );
}

#[test]
fn lengths_past_the_end_are_rejected() {
    let device = device();
    let token = standard_token(&device);
    let count_offset = caveat_count_offset(&token);
    // A count that promises more caveats than the bytes hold: the tag gets read as caveats
    // and the input runs out.
    let mut overcounted = token.as_bytes().to_vec();
    overcounted[count_offset] = MAX_CAVEATS as u8;
    assert!(matches!(
        decode_error(&device, &overcounted),
        DecodeError::UnexpectedEnd { .. }
            | DecodeError::UnknownCaveatType { .. }
            | DecodeError::InvalidCaveat { .. }
    ));
    // A varint whose continuation bit points past the end.
    let mut dangling = identifier_bytes(&token);
    dangling.extend_from_slice(&[1, 0x03, 0x80]);
    assert!(matches!(
        decode_error(&device, &dangling),
        DecodeError::UnexpectedEnd {
            field: "not-after",
            ..
        }
    ));
    // A tag shorter than 32 bytes.
    let mut short_tag = identifier_bytes(&token);
    short_tag.push(0);
    short_tag.extend_from_slice(&[0; TAG_LEN - 1]);
    assert!(matches!(
        decode_error(&device, &short_tag),
        DecodeError::UnexpectedEnd { field: "tag", .. }
    ));
}

#[test]
fn undefined_rights_bits_are_rejected() {
    assert_eq!(
        Rights::from_bits(0x04),
        Err(CaveatError::UndefinedRightsBits(0x04))
    );
    let device = device();
    let token = standard_token(&device);
    let forged = append_raw_caveat(&token, &[0x02, 0x83]);
    assert!(matches!(
        decode_error(&device, &forged),
        DecodeError::InvalidCaveat {
            reason: CaveatError::UndefinedRightsBits(0x83),
            ..
        }
    ));
}

#[test]
fn holder_id_beyond_sixteen_bits_is_rejected() {
    let device = device();
    let mut wide_holder = vec![0x04];
    cxl_lab_cap::wire::encode_varint(0x1_0001, &mut wide_holder);
    let forged = append_raw_caveat(&standard_token(&device), &wide_holder);
    assert!(matches!(
        decode_error(&device, &forged),
        DecodeError::InvalidCaveat {
            reason: CaveatError::RequesterIdTooLarge(0x1_0001),
            ..
        }
    ));
}

#[test]
fn unknown_algorithm_byte_is_rejected() {
    let device = device();
    let mut relabelled = standard_token(&device).as_bytes().to_vec();
    relabelled[1] = 0x7f;
    assert_eq!(
        decode_error(&device, &relabelled),
        DecodeError::UnknownAlgorithm(0x7f)
    );
}

#[test]
fn empty_input_is_rejected() {
    let device = device();
    assert_eq!(
        decode_error(&device, &[]),
        DecodeError::UnexpectedEnd {
            offset: 0,
            field: "version"
        }
    );
}

#[test]
fn decode_then_encode_is_the_identity_for_genuine_tokens() {
    let device = device();
    let token = standard_token(&device)
        .attenuate(Caveat::Holder(REQUESTER))
        .unwrap();
    let decoded = Token::decode(token.as_bytes()).unwrap();
    assert_eq!(decoded, token);
    assert_eq!(decoded.as_bytes(), token.as_bytes());
}

#[test]
fn caveat_count_above_format_limit_is_rejected() {
    let device = device();
    let mut token = standard_token(&device);
    while token.caveats().len() < MAX_CAVEATS {
        token = token.attenuate(Caveat::Rights(Rights::READ_WRITE)).unwrap();
    }
    assert!(device.verify(token.as_bytes(), &read_request()).is_ok());
    assert_eq!(
        token.attenuate(Caveat::Rights(Rights::READ)),
        Err(AttenuateError::TooManyCaveats { max: MAX_CAVEATS })
    );
    let over_limit = append_raw_caveat(&token, &caveat_bytes(Caveat::Rights(Rights::READ)));
    assert_eq!(
        decode_error(&device, &over_limit),
        DecodeError::TooManyCaveats {
            count: MAX_CAVEATS + 1,
            max: MAX_CAVEATS
        }
    );
}

#[test]
fn caveat_count_above_policy_limit_is_rejected() {
    let device = device_with_policy(Policy {
        max_caveats: 4,
        ..Policy::default()
    });
    let four = standard_token(&device)
        .attenuate(Caveat::Rights(Rights::READ))
        .unwrap();
    assert!(device.verify(four.as_bytes(), &read_request()).is_ok());
    let five = four.attenuate(Caveat::Rights(Rights::READ)).unwrap();
    assert_eq!(
        device.verify(five.as_bytes(), &read_request()),
        Err(VerifyError::TooManyCaveats { count: 5, max: 4 })
    );
    let too_many_to_mint = [Caveat::Rights(Rights::READ); 5];
    assert_eq!(
        device.mint(&too_many_to_mint).unwrap_err(),
        MintError::TooManyCaveats { count: 5, max: 4 }
    );
}

#[test]
fn token_larger_than_policy_limit_is_rejected() {
    let device = device_with_policy(Policy {
        max_token_bytes: 64,
        ..Policy::default()
    });
    let token = standard_token(&device);
    assert!(token.as_bytes().len() <= 64);
    assert!(device.verify(token.as_bytes(), &read_request()).is_ok());
    let mut grown = token;
    while grown.as_bytes().len() <= 64 {
        grown = grown
            .attenuate(Caveat::Range(range(GRANT_BASE, GRANT_LENGTH)))
            .unwrap();
    }
    assert_eq!(
        device.verify(grown.as_bytes(), &read_request()),
        Err(VerifyError::TokenTooLarge {
            length: grown.as_bytes().len(),
            max: 64
        })
    );
    // The size check comes before decoding, so a huge junk input costs nothing.
    let junk = vec![0xff; 1 << 20];
    assert_eq!(
        device.verify(&junk, &read_request()),
        Err(VerifyError::TokenTooLarge {
            length: 1 << 20,
            max: 64
        })
    );
}
