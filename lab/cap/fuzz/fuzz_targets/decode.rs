//! Fuzz target: the decoder and the verifier on raw bytes
//!
//! Invariants: nothing panics; whatever decodes is canonical (re-encoding the decoded parts
//! gives back the input byte for byte); the verifier agrees with the decoder on what is
//! malformed; and raw bytes never verify, since they were not built from the device key.

#![no_main]

use cxl_lab_cap::{
    AccessKind, AccessRequest, Device, DeviceConfig, DeviceId, Policy, RequesterId, RootSecret,
    Timestamp, Token, VerifyError,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Token::decode(data);
    if let Ok(token) = &decoded {
        assert_eq!(
            token.reencode_from_parts(),
            data,
            "decoder accepted a non-canonical encoding"
        );
    }

    let mut config = DeviceConfig::new(DeviceId(0x42), 1 << 40);
    config.policy = Policy {
        required_caveats: vec![],
        ..Policy::default()
    };
    let device = Device::new(config, RootSecret::from_bytes([0x42; 32])).unwrap();
    let request = AccessRequest {
        requester: RequesterId(1),
        address: 0,
        length: 8,
        access: AccessKind::Read,
        now: Timestamp::from_millis(0),
    };
    match device.verify(data, &request) {
        Ok(verified) => panic!("raw fuzz bytes verified: {verified:?}"),
        Err(VerifyError::Decode(decode_error)) => {
            assert_eq!(
                decoded.err(),
                Some(decode_error),
                "decoder and verifier disagree"
            )
        }
        Err(_) => {}
    }
});
