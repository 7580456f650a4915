//! The standard three-caveat capability as a biscuit-auth token
//!
//! Biscuit is measured in its most favourable shape: all three checks in the authority block,
//! so there is one Ed25519 signature to verify rather than one per attenuation block. A
//! verification is what a device would do on a cold token: deserialize and check the signature,
//! load the request as facts, run the checks and the allow policy.

use biscuit_auth::macros::{authorizer, biscuit};
use biscuit_auth::{Biscuit, KeyPair, PublicKey};
use cxl_lab_cap::{AccessKind, AccessRequest};

pub struct BiscuitPeer {
    root: KeyPair,
    pub token_bytes: Vec<u8>,
}

impl BiscuitPeer {
    pub fn mint(device_id: u64, token_id: u64, base: u64, length: u64, not_after_ms: u64) -> Self {
        let root = KeyPair::new();
        let (device_id, token_id) = (device_id as i64, token_id as i64);
        let (base, end, not_after) = (base as i64, (base + length) as i64, not_after_ms as i64);
        let token = biscuit!(
            r#"
            device({device_id});
            token_id({token_id});
            check if address($a), length($l), $a >= {base}, $a + $l <= {end};
            check if operation($op), ["read", "write"].contains($op);
            check if time($t), $t <= {not_after};
            "#
        )
        .build(&root)
        .expect("build biscuit");
        let token_bytes = token.to_vec().expect("serialize biscuit");
        BiscuitPeer { root, token_bytes }
    }

    pub fn public_key(&self) -> PublicKey {
        self.root.public()
    }

    /// Full cold verification of one request.
    pub fn verify(&self, public_key: &PublicKey, request: &AccessRequest) -> bool {
        let Ok(token) = Biscuit::from(&self.token_bytes, *public_key) else {
            return false;
        };
        let (address, length) = (request.address as i64, request.length as i64);
        let operation = match request.access {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
        };
        let now = request.now.as_millis() as i64;
        let authorizer = authorizer!(
            r#"
            address({address});
            length({length});
            operation({operation});
            time({now});
            allow if device($d);
            "#
        );
        match authorizer.build(&token) {
            Ok(mut authorizer) => authorizer.authorize().is_ok(),
            Err(_) => false,
        }
    }
}
