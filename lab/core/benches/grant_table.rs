//! `cargo bench -p cxl-lab-core --bench grant_table`: the capability-checked device's check, one
//! lookup in the grant table, with 10, 1,000 and 10,000 grants installed. `table::lookup` is the
//! search the QEMU patch does when the segment of its last access misses (a binary search over
//! disjoint segments, then the next ones while an access runs on), pinned to it by the table's
//! tests; the accesses here stride across all the grants, so every one searches. The grants are laid out
//! as `bench capability` installs them (side by side, read-only and read-write in turn, so none
//! merge). Also the service's side: cutting that many grants into segments, done on every
//! present and revocation. Figures go to `docs/BENCHMARKS.md`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use cxl_lab_cap::{AddressRange, InstalledGrant, RequesterId, Rights, TokenId};
use cxl_lab_core::capability::table::{encode, lookup, segments};

const GRANT_COUNTS: [usize; 3] = [10, 1_000, 10_000];
/// The bytes the grants cover, as in `bench capability` (16 MiB).
const COVERED: u64 = 16 << 20;
/// Accesses per iteration, spread over the covered bytes.
const ACCESSES: u64 = 1024;

fn grants(count: usize) -> Vec<(RequesterId, InstalledGrant)> {
    let length = (COVERED / count as u64) & !7;
    (0..count)
        .map(|index| {
            let rights = if index % 2 == 0 { Rights::READ } else { Rights::READ_WRITE };
            let range = AddressRange::new(index as u64 * length, length).expect("a valid range");
            (RequesterId(1), InstalledGrant { token_id: TokenId(index as u64 + 1), range, rights, expires_after: None })
        })
        .collect()
}

fn bench_check(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("device_check");
    group.throughput(Throughput::Elements(ACCESSES));
    for count in GRANT_COUNTS {
        let table = encode(&segments(&grants(count)));
        let stride = (COVERED / ACCESSES) & !7;
        group.bench_with_input(BenchmarkId::new("read_8_bytes", count), &table, |bencher, table| {
            bencher.iter(|| (0..ACCESSES).filter(|index| lookup(black_box(table), 1, index * stride, 8, false, 1)).count())
        });
    }
    group.finish();
}

fn bench_publish(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("service_segments");
    for count in GRANT_COUNTS {
        let installed = grants(count);
        group.bench_with_input(BenchmarkId::new("cut_and_encode", count), &installed, |bencher, installed| bencher.iter(|| encode(&segments(black_box(installed))).len()));
    }
    group.finish();
}

criterion_group!(benches, bench_check, bench_publish);
criterion_main!(benches);
