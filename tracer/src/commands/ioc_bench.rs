//! `tracer __ioc-bench FILE...`: what `cargo xtask bench ioc` measures of
//! indicators at threat-intel scale: load time, resident memory, and the
//! cost of matching one connect. Domains are not resolved (benchmarks send
//! no DNS queries); everything else is what watch does at start.
use std::{hint::black_box, net::IpAddr, path::PathBuf, time::Instant};

use anyhow::Result;
use serde::Serialize;

use crate::{detect::indicators::Indicators, error::exit};

/// Lookups timed together (one clock read per batch, not per lookup).
const BATCH: u32 = 1_000;

#[derive(Serialize)]
struct Report {
    indicators: usize,
    load_ms: f64,
    /// Resident memory before loading, after, and at peak (KiB).
    rss_before_kib: u64,
    rss_after_kib: u64,
    hwm_kib: u64,
    lookups: u32,
    matched: u32,
    /// Mean cost of one match, per batch of lookups: median and p99 (ns).
    match_ns_median: f64,
    match_ns_p99: f64,
    /// The baseline: one lookup in a hash set of as many random keys as
    /// there are indicators (one memory access at this size), median (ns).
    probe_ns_median: f64,
}

pub fn run(files: &[PathBuf], lookups: u32) -> Result<i32> {
    let rss_before_kib = status_kib("VmRSS:");
    let started = Instant::now();
    let indicators = Indicators::parse(files, false)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_after_kib = status_kib("VmRSS:");

    // Addresses spread over the whole space (a fixed LCG), a quarter IPv6,
    // with ports from the usual pool range.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed
    };
    let mut batches = Vec::new();
    let mut matched = 0;
    for _ in 0..lookups.div_ceil(BATCH) {
        let addrs: Vec<(IpAddr, u16)> = (0..BATCH)
            .map(|_| {
                let r = next();
                let addr = if r % 4 == 0 {
                    IpAddr::V6(((u128::from(r) << 64) | u128::from(next())).into())
                } else {
                    IpAddr::V4(((r >> 32) as u32).into())
                };
                (addr, 3000 + (r % 2000) as u16)
            })
            .collect();
        let t = Instant::now();
        for &(a, p) in &addrs {
            if black_box(indicators.match_connect(black_box(a), p)).is_some() {
                matched += 1;
            }
        }
        batches.push(t.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    let probe_ns_median = probe_baseline(indicators.len(), lookups, &mut next);
    batches.sort_by(f64::total_cmp);
    let at = |q: f64| batches[((batches.len() - 1) as f64 * q) as usize];
    let report = Report {
        indicators: indicators.len(),
        load_ms,
        rss_before_kib,
        rss_after_kib,
        hwm_kib: status_kib("VmHWM:"),
        lookups: batches.len() as u32 * BATCH,
        matched,
        match_ns_median: at(0.5),
        match_ns_p99: at(0.99),
        probe_ns_median,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(exit::OK)
}

/// Median ns of one lookup of a random key in a hash set of `size` random
/// keys, timed in batches like the matches.
fn probe_baseline(size: usize, lookups: u32, next: &mut impl FnMut() -> u64) -> f64 {
    let set: std::collections::HashSet<u64> = (0..size).map(|_| next()).collect();
    let mut batches = Vec::new();
    let mut hits = 0u32;
    for _ in 0..lookups.div_ceil(BATCH) {
        let keys: Vec<u64> = (0..BATCH).map(|_| next()).collect();
        let t = Instant::now();
        for k in &keys {
            hits += u32::from(set.contains(black_box(k)));
        }
        batches.push(t.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    black_box(hits);
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

/// A `kB` field of /proc/self/status.
fn status_kib(field: &str) -> u64 {
    let status = crate::proc::read_file("/proc/self/status").unwrap_or_default();
    String::from_utf8_lossy(&status)
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
