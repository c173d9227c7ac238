//! `bench sigma`: 1,000 Sigma rules in the shapes of SigmaHQ's linux rules
//! (generated here: process_creation, network_connection, file_event),
//! loaded in watch during `bench exec`'s storm, rounds interleaved with a
//! watch without them; their load time and memory; and `hidden --sigma`
//! beside 10,000 extra processes against `hidden` without rules.
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};

use super::{exec, hidden::Sleepers, median, tail, timed, verdict};

const RULES: usize = 1_000;
const MAX_CPU_RATIO: f64 = 1.25;
const MAX_HIDDEN_RATIO: f64 = 1.25;
const HIDDEN_PROCS: usize = 10_000;
const HIDDEN_RUNS: usize = 5;
const CAP: Duration = Duration::from_secs(120);

pub fn run(tracer: &Path, rounds: usize, workers: usize) -> Result<bool> {
    exec::ensure_tracefs()?;
    let dir = crate::scratch("bench/sigma")?;
    let rules = dir.join("rules");
    let _ = std::fs::remove_dir_all(&rules);
    std::fs::create_dir_all(&rules)?;
    for n in 0..RULES {
        std::fs::write(rules.join(format!("rule-{n:04}.yml")), rule(n))?;
    }
    let rules_arg = rules.to_str().context("rules path")?.to_string();
    let mut failures = Vec::new();

    // Loading alone: what `status --sigma` says, and what it costs.
    let out = dir.join("status.json");
    let t = timed(
        "tracer status --sigma",
        Command::new(tracer).args(["status", "--json", "--sigma", &rules_arg]),
        &out,
        CAP,
    )?;
    let status: serde_json::Value = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .with_context(|| {
            format!(
                "status --sigma printed no JSON: {}",
                tail(&out.with_extension("err"))
            )
        })?;
    // `status --sigma --json` prints the load summary as its record.
    let summary = &status;
    let loaded = ["process_creation", "network_connection", "file_event"]
        .iter()
        .map(|c| summary[c].as_u64().unwrap_or(0))
        .sum::<u64>();
    let skipped = summary["skipped"].as_array().map_or(0, Vec::len);
    println!(
        "bench sigma: {loaded} of {RULES} generated rules loaded ({skipped} skipped) in {} ms (status --sigma ran {:.3} s)",
        summary["load_ms"],
        t.secs
    );
    if loaded != RULES as u64 {
        failures.push(format!("{loaded} of {RULES} rules loaded"));
    }

    // The storm, with and without the rules, rounds interleaved.
    let _stats = exec::BpfStats::enable()?;
    let with_rules = vec!["--sigma".to_string(), rules_arg.clone()];
    let (mut plain, mut sigma) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (name, extra, samples) in [
            ("without", &Vec::new(), &mut plain),
            ("with", &with_rules, &mut sigma),
        ] {
            let out = dir.join(format!("watch-{name}-{round}.out"));
            let s = exec::measure_watch(tracer, &out, workers, extra)?;
            println!(
                "  round {round} watch {name:<7} rules: {:.3} s, {} captured, {:.2} ms CPU per 1,000 execs, {} findings on the storm",
                s.secs,
                s.captured,
                s.cpu_ms_per_1000(),
                s.storm_findings
            );
            samples.push(s);
        }
    }
    let cpu =
        |v: &[exec::Sample]| median(&v.iter().map(|s| s.cpu_ms_per_1000()).collect::<Vec<_>>());
    let hwm =
        |v: &[exec::Sample]| v.iter().filter_map(|s| s.hwm_kib).max().unwrap_or(0) as f64 / 1024.0;
    let (base, with) = (cpu(&plain), cpu(&sigma));
    let ratio = with / base;
    println!(
        "CPU per 1,000 execs (user+sys + in-kernel BPF, median of {rounds}): without rules {base:.2} ms, with {RULES} rules {with:.2} ms: {ratio:.2}x"
    );
    println!(
        "watch peak RSS: without rules {:.1} MiB, with them {:.1} MiB (+{:.1} MiB for the rules)",
        hwm(&plain),
        hwm(&sigma),
        hwm(&sigma) - hwm(&plain)
    );
    if ratio.is_nan() || ratio > MAX_CPU_RATIO {
        failures.push(format!("watch with the rules took {ratio:.2}x the CPU"));
    }
    let lost: u64 = sigma
        .iter()
        .map(|s| (exec::EXECS as u64).saturating_sub(s.captured))
        .sum();
    let findings: u64 = sigma.iter().map(|s| s.storm_findings).sum();
    if lost > 0 || findings > 0 {
        failures.push(format!(
            "with the rules: {lost} execs lost, {findings} findings on the storm"
        ));
    }

    // The retro-hunt beside 10,000 extra processes.
    let sleepers = Sleepers::start(HIDDEN_PROCS)?;
    let (mut without_s, mut with_s) = (Vec::new(), Vec::new());
    for i in 0..HIDDEN_RUNS {
        for (rules, times) in [(false, &mut without_s), (true, &mut with_s)] {
            let out = dir.join(format!("hidden-{rules}-{i}.json"));
            let mut cmd = Command::new(tracer);
            cmd.args(["hidden", "--json"]);
            if rules {
                cmd.args(["--sigma", &rules_arg]);
            }
            let t = timed("tracer hidden", &mut cmd, &out, CAP)?;
            let code = t.status.and_then(|s| s.code());
            ensure!(
                matches!(code, Some(0 | 1)),
                "tracer hidden failed ({:?}): {}",
                t.status,
                tail(&out.with_extension("err"))
            );
            times.push(t.secs);
        }
    }
    sleepers.stop()?;
    let (h0, h1) = (median(&without_s), median(&with_s));
    let hratio = h1 / h0;
    println!(
        "hidden at {HIDDEN_PROCS} extra processes (median of {HIDDEN_RUNS}, alternating): without rules {h0:.3} s, --sigma ({RULES} rules) {h1:.3} s: {hratio:.2}x"
    );
    if hratio.is_nan() || hratio > MAX_HIDDEN_RATIO {
        failures.push(format!("hidden --sigma took {hratio:.2}x hidden"));
    }
    Ok(verdict(
        "bench sigma",
        &format!(
            "{RULES} rules: all load; watch CPU per exec at most {MAX_CPU_RATIO}x without them, 0 lost, no finding on the storm; hidden --sigma at {HIDDEN_PROCS} at most {MAX_HIDDEN_RATIO}x hidden"
        ),
        &failures,
    ))
}

/// Rule `n`, in one of the shapes SigmaHQ's linux rules take, naming
/// programs, addresses and paths that no process of the bench has (a
/// match on the storm's /bin/true would be a false positive).
fn rule(n: usize) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "title: Generated bench rule {n}");
    let _ = writeln!(r, "id: 00000000-0000-4000-8000-{n:012}");
    let _ = writeln!(r, "status: experimental");
    let _ = writeln!(r, "description: bench sigma, shape {}", n % 10);
    let _ = writeln!(r, "author: tracer bench");
    let _ = writeln!(r, "tags:\n  - attack.execution\n  - attack.t1059.004");
    let category = match n % 10 {
        0..=5 => "process_creation",
        6 | 7 => "network_connection",
        _ => "file_event",
    };
    let _ = writeln!(r, "logsource:\n  product: linux\n  category: {category}");
    let detection = match n % 10 {
        0 => format!(
            "  selection:\n    Image|endswith:\n      - '/gen{n}d'\n      - '/gen{n}x'\n    CommandLine|contains|all:\n      - ' -o '\n      - 'pool{n}.'\n  filter:\n    ParentImage|startswith: '/usr/lib/gen{n}/'\n  condition: selection and not filter"
        ),
        1 => format!(
            "  selection_img:\n    Image|endswith: '/kswap{n}'\n  selection_cli:\n    CommandLine|contains:\n      - '--donate-level{n}'\n      - 'stratum{n}+tcp'\n  condition: 1 of selection_*"
        ),
        2 => format!(
            "  selection:\n    ParentImage|endswith:\n      - '/gen{n}sh'\n    ParentCommandLine|contains: 'while true; do ./gen{n}'\n  condition: selection"
        ),
        3 => format!(
            "  selection:\n    CommandLine|re: 'gen{n}[0-9]{{4}}-x'\n    Image|startswith: '/tmp/'\n  condition: selection"
        ),
        4 => format!(
            "  selection:\n    CommandLine|base64offset|contains: 'gen{n}payload'\n  condition: selection"
        ),
        5 => format!(
            "  selection:\n    Image|endswith: '/gen{n}'\n    User: 'gen{n}'\n  condition: selection"
        ),
        6 => format!(
            "  selection:\n    DestinationPort:\n      - {}\n      - {}\n    Initiated: 'true'\n  condition: selection",
            20_000 + n,
            40_000 + n
        ),
        7 => format!(
            "  selection:\n    DestinationIp|cidr: '10.{}.{}.0/24'\n  filter:\n    Image|endswith: '/gen{n}ok'\n  condition: selection and not filter",
            n / 250,
            n % 250
        ),
        8 => format!(
            "  selection:\n    TargetFilename|startswith: '/etc/gen{n}/'\n  condition: selection"
        ),
        _ => format!(
            "  selection:\n    TargetFilename|endswith:\n      - '/gen{n}.service'\n      - '/gen{n}.timer'\n  condition: selection"
        ),
    };
    let _ = writeln!(r, "detection:\n{detection}");
    let _ = writeln!(r, "falsepositives:\n  - none known");
    let _ = writeln!(r, "level: high");
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_rules_are_distinct_yaml_documents() {
        let a = super::rule(0);
        let b = super::rule(1);
        assert_ne!(a, b);
        assert!(a.contains("category: process_creation") && a.contains("level: high"));
        assert!(super::rule(6).contains("network_connection"));
        assert!(super::rule(9).contains("file_event"));
    }
}
