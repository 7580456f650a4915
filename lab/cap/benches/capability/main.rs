//! Benchmarks of the capability layer side by side with macaroons and biscuit, in one run
//!
//! `cargo bench -p cxl-lab-cap` measures every case with criterion and then prints one table
//! (also written to `<target>/criterion/cxl-lab-cap-table.md`). All peers carry the same
//! capability: 1 MiB at 4 GiB on device 0x42, read-write, not after a fixed time; every
//! verification checks the same 64-byte read against it.
//!
//! Before measuring anything, each peer is checked to accept that read and to refuse a write
//! outside the range, so no peer is timed on a path that skips its work.

mod biscuit_peer;
mod macaroon_v2;
mod predicates;
mod report;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;
use cxl_lab_cap::{
    AccessKind, AccessRequest, AddressRange, Caveat, Device, DeviceConfig, DeviceId, Policy,
    RequesterId, Rights, RootSecret, Timestamp, Token,
};

const DEVICE_ID: u64 = 0x42;
const CAPACITY_BYTES: u64 = 1 << 40;
const GRANT_BASE: u64 = 0x1_0000_0000;
const GRANT_LENGTH: u64 = 0x10_0000;
const NOW: Timestamp = Timestamp::from_millis(1_760_000_000_000);
const NOT_AFTER: Timestamp = Timestamp::from_millis(1_760_000_060_000);
const ROOT_KEY: &[u8; 32] = b"cxl-lab-cap benchmark root key!!";
const INSTALLED_REQUESTERS: u16 = 1250;
const GRANTS_PER_REQUESTER: u16 = 8;

fn standard_caveats() -> [Caveat; 3] {
    [
        Caveat::Range(AddressRange::new(GRANT_BASE, GRANT_LENGTH).unwrap()),
        Caveat::Rights(Rights::READ_WRITE),
        Caveat::NotAfter(NOT_AFTER),
    ]
}

fn read_request() -> AccessRequest {
    AccessRequest {
        requester: RequesterId(1),
        address: GRANT_BASE + 0x100,
        length: 64,
        access: AccessKind::Read,
        now: NOW,
    }
}

fn refused_request() -> AccessRequest {
    AccessRequest {
        address: GRANT_BASE + GRANT_LENGTH,
        access: AccessKind::Write,
        ..read_request()
    }
}

fn device(policy: Policy, mint_algorithm: cxl_lab_cap::Algorithm) -> Device {
    let mut config = DeviceConfig::new(DeviceId(DEVICE_ID), CAPACITY_BYTES);
    config.policy = policy;
    config.mint_algorithm = mint_algorithm;
    Device::new(config, RootSecret::from_bytes(*ROOT_KEY)).unwrap()
}

fn uncached_policy() -> Policy {
    Policy {
        tag_cache_capacity: 0,
        ..Policy::default()
    }
}

fn target_directory() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp` for bench targets.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory")
        .to_path_buf()
}

fn bench_cold_verify(criterion: &mut Criterion, sizes: &mut report::TokenSizes) {
    let mut group = criterion.benchmark_group("cold_verify");
    let (read, refused) = (read_request(), refused_request());

    for (label, algorithm) in [
        ("cxl_lab_cap_blake3", cxl_lab_cap::Algorithm::KeyedBlake3),
        (
            "cxl_lab_cap_hmac_sha256",
            cxl_lab_cap::Algorithm::HmacSha256,
        ),
    ] {
        let device = device(uncached_policy(), algorithm);
        let token = device.mint(&standard_caveats()).unwrap();
        assert!(device.verify(token.as_bytes(), &read).is_ok());
        assert!(device.verify(token.as_bytes(), &refused).is_err());
        sizes.record(label, token.as_bytes().len());
        group.bench_function(label, |bencher| {
            bencher.iter(|| device.verify(black_box(token.as_bytes()), black_box(&read)))
        });
    }

    // With the cache on but cold: 4096 distinct tokens in rotation through a 256-entry cache,
    // so every verification misses, runs the chain and pays for the insertion.
    let cached_device = device(
        Policy {
            tag_cache_capacity: 256,
            ..Policy::default()
        },
        cxl_lab_cap::Algorithm::KeyedBlake3,
    );
    let rotating_tokens: Vec<Token> = (0..4096)
        .map(|_| cached_device.mint(&standard_caveats()).unwrap())
        .collect();
    group.bench_function("cxl_lab_cap_blake3_cache_miss", |bencher| {
        let mut next = 0usize;
        bencher.iter(|| {
            next = (next + 1) & 4095;
            let verified = cached_device.verify(
                black_box(rotating_tokens[next].as_bytes()),
                black_box(&read),
            );
            debug_assert_eq!(verified.map(|verified| verified.macs_computed), Ok(4));
            verified
        })
    });

    let derived_key = macaroon_v2::derive_key(ROOT_KEY);
    // The macaroon identifier carries the same fields, in the same encoding, as ours.
    let mut identifier = Vec::new();
    rotating_tokens[0].identifier().encode(&mut identifier);
    let predicate_texts =
        predicates::standard_predicates(GRANT_BASE, GRANT_LENGTH, NOT_AFTER.as_millis());
    let predicate_refs: Vec<&str> = predicate_texts.iter().map(String::as_str).collect();
    let macaroon_bytes = macaroon_v2::mint(&derived_key, &identifier, &predicate_refs);
    let baseline_check = |request: &AccessRequest| {
        macaroon_v2::verify(&derived_key, &macaroon_bytes, |predicate| {
            predicates::predicate_holds(predicate, request)
        })
    };
    assert!(baseline_check(&read) && !baseline_check(&refused));
    sizes.record("macaroon_v2_baseline", macaroon_bytes.len());
    group.bench_function("macaroon_v2_baseline", |bencher| {
        bencher.iter(|| {
            macaroon_v2::verify(&derived_key, black_box(&macaroon_bytes), |predicate| {
                predicates::predicate_holds(predicate, black_box(&read))
            })
        })
    });

    let biscuit = biscuit_peer::BiscuitPeer::mint(
        DEVICE_ID,
        1,
        GRANT_BASE,
        GRANT_LENGTH,
        NOT_AFTER.as_millis(),
    );
    let public_key = biscuit.public_key();
    assert!(biscuit.verify(&public_key, &read) && !biscuit.verify(&public_key, &refused));
    sizes.record("biscuit", biscuit.token_bytes.len());
    group.bench_function("biscuit", |bencher| {
        bencher.iter(|| biscuit.verify(black_box(&public_key), black_box(&read)))
    });
    group.finish();
}

fn bench_cached_verify(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("cached_verify");
    let read = read_request();
    let device = device(Policy::default(), cxl_lab_cap::Algorithm::KeyedBlake3);
    let parent = device.mint(&standard_caveats()).unwrap();
    // Minted tokens are cached at mint time, so even the first verification costs no MAC.
    assert_eq!(
        device
            .verify(parent.as_bytes(), &read)
            .unwrap()
            .macs_computed,
        0
    );

    group.bench_function("same_token", |bencher| {
        bencher.iter(|| device.verify(black_box(parent.as_bytes()), black_box(&read)))
    });

    // Each iteration verifies a child never seen before; children are made outside the timed
    // part, in batches. Every verification must cost exactly one MAC, which is checked. The
    // children differ in a not-after later than the parent's: distinct, and narrowing nothing.
    let mut child_serial = 0u64;
    group.bench_function("child_of_verified_token", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut measured = Duration::ZERO;
            let mut remaining = iterations;
            while remaining > 0 {
                let batch_len = remaining.min(1024);
                let children: Vec<Token> = (0..batch_len)
                    .map(|_| {
                        child_serial += 1;
                        let distinct_not_after = NOT_AFTER.saturating_add_millis(child_serial);
                        parent
                            .attenuate(Caveat::NotAfter(distinct_not_after))
                            .unwrap()
                    })
                    .collect();
                let mut macs_computed = 0u64;
                let start = Instant::now();
                for child in &children {
                    let verified = device.verify(black_box(child.as_bytes()), black_box(&read));
                    macs_computed += u64::from(verified.unwrap().macs_computed);
                }
                measured += start.elapsed();
                assert_eq!(
                    macs_computed, batch_len,
                    "every cached child verification costs one MAC"
                );
                remaining -= batch_len;
            }
            measured
        })
    });

    // Verify time must not tell whether a token's chain input is cached to someone who cannot
    // have made the token (docs/capability-format.md, "Timing"): two forgeries, one whose chain
    // input is the cached parent's and one whose input the cache has never seen (minted by a
    // twin device with the same secret, so the device would accept its genuine tag; it is
    // never verified here, so it never enters the cache).
    let twin = crate::device(Policy::default(), cxl_lab_cap::Algorithm::KeyedBlake3);
    let [range, rights, _] = standard_caveats();
    let unseen = twin
        .mint(&[
            range,
            rights,
            Caveat::NotAfter(NOT_AFTER.saturating_add_millis(1)),
        ])
        .unwrap();
    for (label, genuine) in [
        ("forged_tag_cached_input", &parent),
        ("forged_tag_uncached_input", &unseen),
    ] {
        let mut forged = genuine.as_bytes().to_vec();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(
            device.verify(&forged, &read),
            Err(cxl_lab_cap::VerifyError::BadTag)
        );
        group.bench_function(label, |bencher| {
            bencher.iter(|| device.verify(black_box(&forged), black_box(&read)))
        });
    }

    let caveat_bytes = {
        let mut encoded = Vec::new();
        standard_caveats()[0].encode(&mut encoded);
        encoded
    };
    group.bench_function("one_keyed_blake3_mac", |bencher| {
        bencher.iter(|| blake3::keyed_hash(black_box(ROOT_KEY), black_box(&caveat_bytes)))
    });
    group.bench_function("one_hmac_sha256_mac", |bencher| {
        use hmac::Mac;
        bencher.iter(|| {
            let mut mac =
                <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(black_box(ROOT_KEY)).unwrap();
            mac.update(black_box(&caveat_bytes));
            mac.finalize().into_bytes()
        })
    });
    group.finish();
}

fn bench_access_check(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("access_check");
    let device = device(Policy::default(), cxl_lab_cap::Algorithm::KeyedBlake3);
    let slot_length = 0x10000u64;
    let mut hits = Vec::new();
    for requester in 0..INSTALLED_REQUESTERS {
        for slot in 0..GRANTS_PER_REQUESTER {
            let base = (u64::from(requester) * u64::from(GRANTS_PER_REQUESTER) + u64::from(slot))
                * slot_length;
            let token = device
                .mint(&[
                    Caveat::Range(AddressRange::new(base, slot_length).unwrap()),
                    Caveat::Rights(Rights::READ_WRITE),
                    Caveat::NotAfter(NOT_AFTER),
                ])
                .unwrap();
            device
                .install_grant(token.as_bytes(), RequesterId(requester), NOW)
                .unwrap();
            hits.push(AccessRequest {
                requester: RequesterId(requester),
                address: base + 0x40,
                length: 64,
                access: AccessKind::Write,
                now: NOW,
            });
        }
    }
    assert_eq!(device.installed_grant_count(), 10_000);
    // A fixed pseudo-random order over all 10,000 grants, so the table is not one hot line.
    let order: Vec<usize> = (0..4096)
        .map(|index| (index * 7919 + 13) % hits.len())
        .collect();
    for request in &hits {
        assert!(device.check_access(request).is_ok());
    }
    // A miss: the same requester at an address another requester's grant covers, so the
    // check scans all 8 grants of the requester and finds none.
    let other_requester_offset =
        usize::from(GRANTS_PER_REQUESTER) * usize::from(INSTALLED_REQUESTERS / 2);
    let misses: Vec<AccessRequest> = order
        .iter()
        .map(|&index| AccessRequest {
            address: hits[(index + other_requester_offset) % hits.len()].address,
            ..hits[index]
        })
        .collect();
    for request in &misses {
        assert!(device.check_access(request).is_err());
    }

    group.bench_function("installed_10000_hit", |bencher| {
        let mut next = 0usize;
        bencher.iter(|| {
            next = (next + 1) & 4095;
            device.check_access(black_box(&hits[order[next]]))
        })
    });
    group.bench_function("installed_10000_miss", |bencher| {
        let mut next = 0usize;
        bencher.iter(|| {
            next = (next + 1) & 4095;
            device.check_access(black_box(&misses[next]))
        })
    });
    group.finish();
}

fn bench_token_operations(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("token_operations");
    let device = device(Policy::default(), cxl_lab_cap::Algorithm::KeyedBlake3);
    let caveats = standard_caveats();
    group.bench_function("mint_3_caveats", |bencher| {
        bencher.iter(|| device.mint(black_box(&caveats)))
    });
    let token = device.mint(&caveats).unwrap();
    let narrower = Caveat::Rights(Rights::READ);
    group.bench_function("attenuate_1_caveat", |bencher| {
        bencher.iter(|| black_box(&token).attenuate(black_box(narrower)))
    });
    // Token equality must not tell how much of a guessed tag was right: a guess wrong in the
    // tag's first byte and one wrong only in its last must take the same time.
    let tag_start = token.as_bytes().len() - cxl_lab_cap::TAG_LEN;
    for (label, wrong_byte) in [
        ("equality_tag_first_byte_wrong", tag_start),
        ("equality_tag_last_byte_wrong", token.as_bytes().len() - 1),
    ] {
        let mut guess_bytes = token.as_bytes().to_vec();
        guess_bytes[wrong_byte] ^= 1;
        let guess = Token::decode(&guess_bytes).unwrap();
        assert_ne!(token, guess);
        group.bench_function(label, |bencher| {
            bencher.iter(|| black_box(&token) == black_box(&guess))
        });
    }
    group.finish();
}

fn main() {
    let run_started = std::time::SystemTime::now();
    let output_directory = target_directory().join("criterion");
    // `output_directory` pins where criterion writes its estimates, so the table below reads
    // exactly this run's numbers.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .output_directory(&output_directory)
        .configure_from_args();
    let mut sizes = report::TokenSizes::default();
    bench_cold_verify(&mut criterion, &mut sizes);
    bench_cached_verify(&mut criterion);
    bench_access_check(&mut criterion);
    bench_token_operations(&mut criterion);
    criterion.final_summary();
    report::print_and_save(&output_directory, run_started, &sizes);
}
