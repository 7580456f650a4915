//! `cargo bench -p cxl-lab-model`: decode translations per second on the shipped interleaved
//! profiles, and `check` per second on each shipped scenario's trace for every protection
//! mechanism (capabilities through `lab/cap`'s installed-grant table). Figures go to
//! `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use cxl_lab_model::decode::Region;
use cxl_lab_model::parse_profile;
use cxl_lab_model::scenario::eval::{accesses, apply_policy_steps, mechanisms};
use cxl_lab_model::scenario::parse_scenario;

const PROFILES: [(&str, &str); 2] =
    [("interleave", include_str!("../../../profiles/interleave.yaml")), ("switch", include_str!("../../../profiles/switch.yaml"))];

const SCENARIOS: [(&str, &str); 4] = [
    ("accelerators", include_str!("../../../scenarios/accelerators.yaml")),
    ("pairwise", include_str!("../../../scenarios/pairwise.yaml")),
    ("revocation", include_str!("../../../scenarios/revocation.yaml")),
    ("tenants", include_str!("../../../scenarios/tenants.yaml")),
];

/// HPAs spread over the region, one per granule of a 1 MiB stride.
const ADDRESSES: u64 = 1024;

fn bench_decode(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("decode");
    group.throughput(Throughput::Elements(ADDRESSES));
    for (name, source) in PROFILES {
        let topology = parse_profile(name, source, name).expect("a shipped profile");
        let region = Region::over_window(&topology.hosts[0], 0, 0).expect("a region over the window");
        let stride = region.size / ADDRESSES;
        let hpas: Vec<u64> = (0..ADDRESSES).map(|index| region.base + index * stride + index % region.granularity).collect();
        group.bench_function(BenchmarkId::new("hpa-to-path", name), |bencher| {
            bencher.iter(|| hpas.iter().map(|hpa| region.decode(black_box(*hpa)).expect("inside").dpa).sum::<u64>())
        });
        group.bench_function(BenchmarkId::new("hpa-to-device", name), |bencher| {
            bencher.iter(|| hpas.iter().map(|hpa| region.locate(black_box(*hpa)).expect("inside").1).sum::<u64>())
        });
        let targets: Vec<(String, u64)> = hpas.iter().map(|hpa| region.decode(*hpa).map(|decoded| (decoded.device, decoded.dpa)).expect("inside")).collect();
        group.bench_function(BenchmarkId::new("dpa-to-hpa", name), |bencher| {
            bencher.iter(|| targets.iter().map(|(device, dpa)| region.encode(black_box(device), *dpa).expect("a member")).sum::<u64>())
        });
    }
    group.finish();
}

fn bench_checks(criterion: &mut Criterion) {
    for (name, source) in SCENARIOS {
        let scenario = parse_scenario(name, source, name).expect("a shipped scenario");
        let trace = accesses(&scenario);
        let mut group = criterion.benchmark_group(format!("check/{name}"));
        group.throughput(Throughput::Elements(trace.len() as u64));
        for mut mechanism in mechanisms(&scenario) {
            apply_policy_steps(&scenario, mechanism.as_mut());
            group.bench_function(mechanism.name(), |bencher| {
                bencher.iter(|| {
                    trace.iter().filter(|access| mechanism.check(access.requester, black_box(access.address), access.length, access.access).allowed()).count()
                })
            });
        }
        group.finish();
    }
}

fn config() -> Criterion {
    // The machine is shared with builds: short, steady measurements.
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = bench_decode, bench_checks }
criterion_main!(benches);
