//! The side-by-side table: criterion's median estimates of this run, token sizes and goals
//!
//! Criterion stores each estimate in `<output>/<group>/<bench>/new/estimates.json`; the table
//! reads those files back, so it shows exactly what criterion measured and printed above it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

/// Encoded token length of each peer, in bytes.
#[derive(Default)]
pub struct TokenSizes(BTreeMap<&'static str, usize>);

impl TokenSizes {
    pub fn record(&mut self, peer: &'static str, length: usize) {
        self.0.insert(peer, length);
    }

    fn get(&self, peer: &str) -> Option<usize> {
        self.0.get(peer).copied()
    }
}

/// Median time in nanoseconds of one benchmark of this run, if it ran. Estimates written before
/// `run_started` are left out: they belong to an earlier run (or a bench filtered out now).
fn median_ns(
    output_directory: &Path,
    run_started: SystemTime,
    group: &str,
    bench: &str,
) -> Option<f64> {
    let path = output_directory
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let written = std::fs::metadata(&path)
        .and_then(|metadata| metadata.modified())
        .ok()?;
    if written < run_started {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn format_time(nanoseconds: Option<f64>) -> String {
    match nanoseconds {
        Some(ns) if ns >= 1_000_000.0 => format!("{:.2} ms", ns / 1_000_000.0),
        Some(ns) if ns >= 1_000.0 => format!("{:.2} µs", ns / 1_000.0),
        Some(ns) => format!("{ns:.1} ns"),
        None => "not run".to_string(),
    }
}

fn format_ratio(numerator: Option<f64>, denominator: Option<f64>) -> String {
    match (numerator, denominator) {
        (Some(numerator), Some(denominator)) if denominator > 0.0 => {
            format!("{:.1}×", numerator / denominator)
        }
        _ => "n/a".to_string(),
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not run",
    }
}

fn machine_description() -> String {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|cpuinfo| {
            cpuinfo
                .lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    format!(
        "{cpu_model}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Builds the markdown table, prints it, and saves it next to criterion's output.
pub fn print_and_save(output_directory: &Path, run_started: SystemTime, sizes: &TokenSizes) {
    let cold = |bench: &str| median_ns(output_directory, run_started, "cold_verify", bench);
    let ours = cold("cxl_lab_cap_blake3");
    let mut table = String::new();
    let _ = writeln!(table, "Machine: {}\n", machine_description());
    let _ = writeln!(
        table,
        "Same capability for every peer: range 1 MiB, rights rw, not-after; one 64-byte read.\n"
    );
    let _ = writeln!(
        table,
        "| peer | token bytes | cold verify (median) | time relative to cxl-lab-cap BLAKE3 |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|");
    let peers = [
        (
            "cxl_lab_cap_blake3",
            "cxl-lab-cap, keyed BLAKE3 (tag cache off)",
        ),
        (
            "cxl_lab_cap_blake3_cache_miss",
            "cxl-lab-cap, keyed BLAKE3 (tag cache on, miss)",
        ),
        (
            "cxl_lab_cap_hmac_sha256",
            "cxl-lab-cap, HMAC-SHA256 suite (tag cache off)",
        ),
        (
            "macaroon_v2_baseline",
            "macaroon V2 baseline, HMAC-SHA256 (RustCrypto)",
        ),
        ("biscuit", "biscuit-auth 6 (Ed25519 + Datalog, 1 block)"),
    ];
    for (bench, label) in peers {
        let size_key = if bench == "cxl_lab_cap_blake3_cache_miss" {
            "cxl_lab_cap_blake3"
        } else {
            bench
        };
        let size = sizes
            .get(size_key)
            .map_or("n/a".to_string(), |bytes| bytes.to_string());
        let _ = writeln!(
            table,
            "| {label} | {size} | {} | {} |",
            format_time(cold(bench)),
            format_ratio(cold(bench), ours)
        );
    }

    let cached = |bench: &str| median_ns(output_directory, run_started, "cached_verify", bench);
    let access = |bench: &str| median_ns(output_directory, run_started, "access_check", bench);
    let operations =
        |bench: &str| median_ns(output_directory, run_started, "token_operations", bench);
    let _ = writeln!(table, "\n| cxl-lab-cap fast path | median |");
    let _ = writeln!(table, "|---|---:|");
    for (label, value) in [
        ("re-verify a cached token (0 MACs)", cached("same_token")),
        (
            "verify a new child of a verified token (1 MAC, counted)",
            cached("child_of_verified_token"),
        ),
        (
            "forged tag, chain input cached (timing check)",
            cached("forged_tag_cached_input"),
        ),
        (
            "forged tag, chain input not cached (timing check)",
            cached("forged_tag_uncached_input"),
        ),
        (
            "one keyed-BLAKE3 MAC over a caveat (yardstick)",
            cached("one_keyed_blake3_mac"),
        ),
        (
            "one HMAC-SHA256 MAC over a caveat (yardstick)",
            cached("one_hmac_sha256_mac"),
        ),
        (
            "access check, 10,000 grants installed, hit",
            access("installed_10000_hit"),
        ),
        (
            "access check, 10,000 grants installed, miss",
            access("installed_10000_miss"),
        ),
        ("mint, 3 caveats", operations("mint_3_caveats")),
        ("attenuate, 1 caveat", operations("attenuate_1_caveat")),
        (
            "token equality, guess wrong in the tag's first byte (timing check)",
            operations("equality_tag_first_byte_wrong"),
        ),
        (
            "token equality, guess wrong in the tag's last byte (timing check)",
            operations("equality_tag_last_byte_wrong"),
        ),
    ] {
        let _ = writeln!(table, "| {label} | {} |", format_time(value));
    }

    let token_bytes = sizes.get("cxl_lab_cap_blake3");
    let macaroon_speedup = cold("macaroon_v2_baseline")
        .zip(ours)
        .map(|(baseline, ours)| baseline / ours);
    let biscuit_speedup = cold("biscuit")
        .zip(ours)
        .map(|(biscuit, ours)| biscuit / ours);
    let child = cached("child_of_verified_token");
    let access_hit = access("installed_10000_hit");
    let _ = writeln!(table, "\n| goal | target | measured | verdict |");
    let _ = writeln!(table, "|---|---|---|---|");
    let _ = writeln!(
        table,
        "| token size | ≤ 64 B | {} B | {} |",
        token_bytes.map_or("n/a".to_string(), |bytes| bytes.to_string()),
        verdict(token_bytes.map(|bytes| bytes <= 64))
    );
    let _ = writeln!(
        table,
        "| cold verify vs the macaroon V2 baseline | ≥ 3× faster | {} | {} |",
        macaroon_speedup.map_or("n/a".to_string(), |ratio| format!("{ratio:.1}×")),
        verdict(macaroon_speedup.map(|ratio| ratio >= 3.0))
    );
    let _ = writeln!(
        table,
        "| cold verify vs biscuit | ≥ 100× faster | {} | {} |",
        biscuit_speedup.map_or("n/a".to_string(), |ratio| format!("{ratio:.0}×")),
        verdict(biscuit_speedup.map(|ratio| ratio >= 100.0))
    );
    let _ = writeln!(
        table,
        "| cached child verify | ≤ 1 MAC | 1 MAC per verify (asserted), {} | {} |",
        format_time(child),
        verdict(child.map(|_| true))
    );
    let _ = writeln!(
        table,
        "| access check, 10,000 grants | < 50 ns | {} | {} |",
        format_time(access_hit),
        verdict(access_hit.map(|ns| ns < 50.0))
    );

    println!("\n{table}");
    let table_path = output_directory.join("cxl-lab-cap-table.md");
    match std::fs::write(&table_path, &table) {
        Ok(()) => println!("table saved to {}", table_path.display()),
        Err(error) => eprintln!(
            "could not save the table to {}: {error}",
            table_path.display()
        ),
    }
}
