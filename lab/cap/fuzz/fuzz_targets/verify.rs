//! Fuzz target: the verifier on genuine tokens, their attenuations and adversarial edits
//!
//! Each input describes a scenario: caveats the device mints, caveats a holder appends, one
//! adversarial edit of the bytes, and a request. Invariants:
//! - the child never admits a request its parent refuses (attenuation never widens);
//! - a genuine token is admitted exactly when every caveat allows the request (an oracle
//!   written here independently of the library's own fold);
//! - any flipped byte, truncation or extension is refused;
//! - bytes an adversary chains onto the tag verify only if they decode as a known caveat,
//!   i.e. only a legitimate attenuation ever verifies;
//! - nothing panics, and repeated verification (served by the tag cache) gives the same answer.

#![no_main]

use arbitrary::Arbitrary;
use cxl_lab_cap::{
    AccessKind, AccessRequest, AddressRange, Caveat, Device, DeviceConfig, DeviceId, Policy,
    RequesterId, Rights, RootSecret, Timestamp, Token, TAG_LEN,
};
use libfuzzer_sys::fuzz_target;

const CAPACITY_BYTES: u64 = 1 << 40;

#[derive(Arbitrary, Debug)]
enum FuzzCaveat {
    Range { base: u64, length: u64 },
    Rights(u8),
    NotAfter(u16),
    Holder(u8),
    DelegationLimit(u8),
}

impl FuzzCaveat {
    fn to_caveat(&self) -> Option<Caveat> {
        Some(match *self {
            // Keep most ranges on the device so that requests can land inside them.
            FuzzCaveat::Range { base, length } => Caveat::Range(
                AddressRange::new(
                    base % (CAPACITY_BYTES + 4096),
                    length % (CAPACITY_BYTES / 2),
                )
                .ok()?,
            ),
            FuzzCaveat::Rights(bits) => Caveat::Rights(Rights::from_bits(bits & 0b11).ok()?),
            FuzzCaveat::NotAfter(offset) => {
                Caveat::NotAfter(Timestamp::from_millis(u64::from(offset)))
            }
            FuzzCaveat::Holder(requester) => Caveat::Holder(RequesterId(u16::from(requester % 4))),
            FuzzCaveat::DelegationLimit(limit) => Caveat::DelegationLimit(limit % 8),
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Edit {
    None,
    FlipByte { position: u16, mask: u8 },
    Truncate { length: u16 },
    Extend { extra: Vec<u8> },
    ChainRawCaveat { raw_caveat: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Scenario {
    minted: Vec<FuzzCaveat>,
    appended: Vec<FuzzCaveat>,
    edit: Edit,
    address_from_caveat: u8,
    address_offset: i32,
    length: u16,
    is_write: bool,
    requester: u8,
    now: u16,
    skew_allowance_ms: u8,
}

fn caveats_allow(caveats: &[Caveat], request: &AccessRequest, skew_allowance_ms: u64) -> bool {
    let request_end = match request.address.checked_add(request.length) {
        Some(end) if request.length > 0 && end <= CAPACITY_BYTES => end,
        _ => return false,
    };
    caveats
        .iter()
        .enumerate()
        .all(|(index, caveat)| match caveat {
            Caveat::Range(range) => {
                range.end() <= CAPACITY_BYTES
                    && range.base() <= request.address
                    && request_end <= range.end()
            }
            Caveat::Rights(rights) => rights.allows(request.access),
            Caveat::NotAfter(not_after) => {
                request.now.as_millis() <= not_after.as_millis() + skew_allowance_ms
            }
            Caveat::Holder(holder) => *holder == request.requester,
            Caveat::DelegationLimit(limit) => caveats.len() - index - 1 <= usize::from(*limit),
        })
}

fn append_raw_caveat(token: &Token, raw_caveat: &[u8]) -> Vec<u8> {
    let bytes = token.as_bytes();
    let mut identifier = Vec::new();
    token.identifier().encode(&mut identifier);
    let tag: [u8; TAG_LEN] = bytes[bytes.len() - TAG_LEN..].try_into().unwrap();
    let mut chained = bytes[..bytes.len() - TAG_LEN].to_vec();
    chained[identifier.len()] = chained[identifier.len()].wrapping_add(1);
    chained.extend_from_slice(raw_caveat);
    chained.extend_from_slice(blake3::keyed_hash(&tag, raw_caveat).as_bytes());
    chained
}

fuzz_target!(|scenario: Scenario| {
    let skew_allowance_ms = u64::from(scenario.skew_allowance_ms);
    let mut config = DeviceConfig::new(DeviceId(0x42), CAPACITY_BYTES);
    config.policy = Policy {
        required_caveats: vec![],
        clock_skew_allowance_ms: skew_allowance_ms,
        ..Policy::default()
    };
    let device = Device::new(config, RootSecret::from_bytes([0x42; 32])).unwrap();

    let minted: Vec<Caveat> = scenario
        .minted
        .iter()
        .filter_map(FuzzCaveat::to_caveat)
        .collect();
    let Ok(parent) = device.mint(&minted) else {
        return;
    };
    let mut child = parent.clone();
    for caveat in scenario.appended.iter().filter_map(FuzzCaveat::to_caveat) {
        match child.attenuate(caveat) {
            Ok(next) => child = next,
            Err(_) => break,
        }
    }

    let ranges: Vec<AddressRange> = child
        .caveats()
        .iter()
        .filter_map(|caveat| {
            if let Caveat::Range(range) = caveat {
                Some(*range)
            } else {
                None
            }
        })
        .collect();
    let anchor = if ranges.is_empty() {
        0
    } else {
        ranges[usize::from(scenario.address_from_caveat) % ranges.len()].base()
    };
    let request = AccessRequest {
        requester: RequesterId(u16::from(scenario.requester % 4)),
        address: anchor.wrapping_add_signed(i64::from(scenario.address_offset)),
        length: u64::from(scenario.length),
        access: if scenario.is_write {
            AccessKind::Write
        } else {
            AccessKind::Read
        },
        now: Timestamp::from_millis(u64::from(scenario.now)),
    };

    let parent_outcome = device.verify(parent.as_bytes(), &request);
    let child_outcome = device.verify(child.as_bytes(), &request);
    assert_eq!(
        parent_outcome.is_ok(),
        caveats_allow(parent.caveats(), &request, skew_allowance_ms),
        "{parent_outcome:?}"
    );
    assert_eq!(
        child_outcome.is_ok(),
        caveats_allow(child.caveats(), &request, skew_allowance_ms),
        "{child_outcome:?}"
    );
    assert!(
        !child_outcome.is_ok() || parent_outcome.is_ok(),
        "child admits what its parent refuses"
    );
    // The second verification is served by the tag cache: same answer, fewer MACs.
    let without_mac_count = |outcome: Result<cxl_lab_cap::Verified, cxl_lab_cap::VerifyError>| {
        outcome.map(|verified| (verified.token_id, verified.authority))
    };
    assert_eq!(
        without_mac_count(device.verify(child.as_bytes(), &request)),
        without_mac_count(child_outcome),
        "cached verification differs"
    );

    let genuine = child.as_bytes();
    let edited = match &scenario.edit {
        Edit::None => return,
        Edit::FlipByte { position, mask } => {
            if *mask == 0 {
                return;
            }
            let mut flipped = genuine.to_vec();
            flipped[usize::from(*position) % genuine.len()] ^= mask;
            flipped
        }
        Edit::Truncate { length } => genuine[..usize::from(*length) % genuine.len()].to_vec(),
        Edit::Extend { extra } => {
            if extra.is_empty() {
                return;
            }
            [genuine, extra.as_slice()].concat()
        }
        Edit::ChainRawCaveat { raw_caveat } => {
            let chained = append_raw_caveat(&child, raw_caveat);
            if let Ok(verified) = device.verify(&chained, &request) {
                let decoded = Token::decode(&chained).expect("verified bytes decode");
                let last = decoded.caveats().last().expect("one caveat was chained");
                let mut last_bytes = Vec::new();
                last.encode(&mut last_bytes);
                assert_eq!(
                    &last_bytes, raw_caveat,
                    "verified a chain whose last caveat is not what was chained"
                );
                assert!(
                    caveats_allow(decoded.caveats(), &request, skew_allowance_ms),
                    "{verified:?}"
                );
            }
            return;
        }
    };
    let edited_outcome = device.verify(&edited, &request);
    assert!(
        edited_outcome.is_err(),
        "edited token verified: {edited_outcome:?}"
    );
});
