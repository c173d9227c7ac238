//! `bench ioc`: 1,000,000 indicators (IPv4 and IPv6 addresses, CIDRs,
//! domains) against 1,000 of the same mix, in the same run: load time,
//! resident memory, and the cost of matching one connect.
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

use super::verdict;

const LARGE: u32 = 1_000_000;
const MEDIUM: u32 = 100_000;
const SMALL: u32 = 1_000;
const MAX_LOAD_MS: f64 = 1_000.0;
const MAX_RESIDENT_MIB: f64 = 200.0;
/// Longest median match of one connect with the large set.
const MAX_MATCH_NS: f64 = 1_000.0;
/// With ten times the indicators, a match may cost at most this much more:
/// a scan would cost 10x; an index pays only for the caches it outgrows
/// (the hash probe column shows the same effect on a plain hash set).
const MAX_GROWTH: f64 = 5.0;

pub fn run(tracer: &Path) -> Result<bool> {
    let dir = crate::scratch("bench/ioc")?;
    let mut rows = Vec::new();
    for count in [SMALL, MEDIUM, LARGE] {
        let file = dir.join(format!("iocs-{count}.txt"));
        write_feed(&file, count)?;
        let out = Command::new(tracer)
            .arg("__ioc-bench")
            .arg(&file)
            .output()
            .context("running tracer __ioc-bench")?;
        ensure!(
            out.status.success(),
            "tracer __ioc-bench {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let report: Value = serde_json::from_slice(&out.stdout)?;
        rows.push((count, report));
    }
    println!("bench ioc: a feed of IPv4/IPv6 addresses (some with ports), CIDRs and domains");
    println!(
        "{:>10} {:>9} {:>13} {:>9} {:>15} {:>15} {:>14}",
        "indicators",
        "load ms",
        "resident MiB",
        "peak MiB",
        "match ns (p99)",
        "hash probe ns",
        "match/probe"
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let probes = |v: &Value| f(v, "match_ns_median") / f(v, "probe_ns_median");
    for (_, r) in &rows {
        println!(
            "{:>10} {:>9.1} {:>13.1} {:>9.1} {:>15} {:>15.0} {:>14.2}",
            f(r, "indicators"),
            f(r, "load_ms"),
            (f(r, "rss_after_kib") - f(r, "rss_before_kib")) / 1024.0,
            f(r, "hwm_kib") / 1024.0,
            format!(
                "{:.0} ({:.0})",
                f(r, "match_ns_median"),
                f(r, "match_ns_p99")
            ),
            f(r, "probe_ns_median"),
            probes(r),
        );
    }
    let large = &rows[rows.len() - 1].1;
    let mut failures = Vec::new();
    if f(large, "indicators") != f64::from(LARGE) {
        failures.push(format!("loaded {} indicators", f(large, "indicators")));
    }
    if f(large, "load_ms").is_nan() || f(large, "load_ms") >= MAX_LOAD_MS {
        failures.push(format!("load took {:.1} ms", f(large, "load_ms")));
    }
    let peak_mib = f(large, "hwm_kib") / 1024.0;
    if peak_mib.is_nan() || peak_mib >= MAX_RESIDENT_MIB {
        failures.push(format!("peak resident {peak_mib:.1} MiB"));
    }
    let cost = |v: &Value| f(v, "match_ns_median");
    let growth = cost(large) / cost(&rows[rows.len() - 2].1);
    println!(
        "match cost, {LARGE} / {MEDIUM} indicators: {growth:.2}x (a scan: 10x); \
         {LARGE} / {SMALL}: {:.2}x",
        cost(large) / cost(&rows[0].1)
    );
    if cost(large).is_nan() || cost(large) >= MAX_MATCH_NS {
        failures.push(format!("a match takes {:.0} ns", cost(large)));
    }
    if growth.is_nan() || growth >= MAX_GROWTH {
        failures.push(format!(
            "match cost grew {growth:.2}x for 10x the indicators"
        ));
    }
    Ok(verdict(
        "bench ioc",
        &format!(
            "{LARGE} indicators load < {MAX_LOAD_MS} ms, peak resident < {MAX_RESIDENT_MIB} MiB; \
             match < {MAX_MATCH_NS} ns and < {MAX_GROWTH}x that of {MEDIUM} indicators"
        ),
        &failures,
    ))
}

/// Writes `count` indicators: 30% IPv4 addresses, 15% IPv6 addresses
/// (a fifth of each with a port), 20% IPv4 and 10% IPv6 CIDRs, 25% domains
/// (never resolved by the bench), with comments and blank lines between.
fn write_feed(path: &Path, count: u32) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "# bench feed: {count} indicators")?;
    let mut seed: u64 = u64::from(count);
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 16) as u32
    };
    for n in 0..count {
        let r = next();
        let port = 1024 + r % 60_000;
        let v4 = std::net::Ipv4Addr::from(next());
        let v6 = std::net::Ipv6Addr::from(
            (u128::from(0x2001_0db8u32) << 96) | (u128::from(next()) << 64) | u128::from(next()),
        );
        match n % 20 {
            0..=5 if n % 5 == 0 => writeln!(out, "{v4}:{port}")?,
            0..=5 => writeln!(out, "{v4}")?,
            6..=8 if n % 5 == 0 => writeln!(out, "[{v6}]:{port}")?,
            6..=8 => writeln!(out, "{v6}")?,
            9..=12 => {
                let len = 16 + r % 15;
                let net = u32::from(v4) & (u32::MAX << (32 - len));
                writeln!(out, "{}/{len}", std::net::Ipv4Addr::from(net))?
            }
            13 | 14 => {
                let len = 32 + r % 33;
                let net = u128::from(v6) & (u128::MAX << (128 - len));
                writeln!(out, "{}/{len}", std::net::Ipv6Addr::from(net))?
            }
            15 => writeln!(out, "n{n}-{r:x}.pool.example:{port}  # with a port")?,
            _ => writeln!(out, "n{n}-{r:x}.pool.example")?,
        }
        if n % 1000 == 999 {
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}
