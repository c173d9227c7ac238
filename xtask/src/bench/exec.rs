//! `bench exec`: the cost of watching an exec storm, for tracer and peers.
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use super::{event_type, median, tail, verdict, vm_hwm_kib, Proc, STOPPING};

const EXECS: usize = 20_000;
const MAX_OVERHEAD_PCT: f64 = 5.0;
const MAX_RSS_MIB: f64 = 50.0;
const BPFTRACE: &str =
    r#"tracepoint:sched:sched_process_exec { printf("%d %s\n", pid, str(args->filename)); }"#;

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Baseline,
    Tracer,
    Forkstat,
    Bpftrace,
}
const CONFIGS: [Config; 4] = [
    Config::Baseline,
    Config::Tracer,
    Config::Forkstat,
    Config::Bpftrace,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Tracer => "tracer",
            Config::Forkstat => "forkstat",
            Config::Bpftrace => "bpftrace",
        }
    }
}

#[derive(Default)]
struct Sample {
    secs: f64,
    captured: u64,
    /// Loss the tool itself reported (tracer's summary).
    tool_lost: Option<u64>,
    hwm_kib: Option<u64>,
}

pub fn run(tracer: &Path, rounds: usize, workers: usize) -> Result<bool> {
    ensure_tracefs()?;
    let dir = crate::scratch("bench/exec")?;
    println!("bench exec: {EXECS} fork+exec of /bin/true by {workers} workers; {rounds} interleaved rounds");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1: f64 = load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if load1 > 0.5 {
        println!(
            "bench exec: warning: load average {load1} before starting: timings will be noisy"
        );
    }
    let mut samples: Vec<Vec<Sample>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, &config) in CONFIGS.iter().enumerate() {
            let out = dir.join(format!("{}-{round}.out", config.name()));
            let s = measure(config, tracer, &out, workers)?;
            let captured = if config == Config::Baseline {
                String::new()
            } else {
                format!(", {} captured", s.captured)
            };
            println!(
                "  round {round} {:<9} {:7.3} s{captured}",
                config.name(),
                s.secs
            );
            samples[i].push(s);
        }
    }

    let secs = |i: usize| median(&samples[i].iter().map(|s| s.secs).collect::<Vec<_>>());
    let base = secs(0);
    let overhead = |i: usize| (secs(i) / base - 1.0) * 100.0;
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>6} {:>10} {:>9}",
        "config", "median s", "overhead", "expected", "captured", "lost", "tool lost", "peak RSS"
    );
    println!("{:<10} {base:>9.3} {:>9}", "baseline", "-");
    let mut failures = Vec::new();
    for (i, &config) in CONFIGS.iter().enumerate().skip(1) {
        let s = &samples[i];
        // Worst round for losses and memory.
        let captured = s.iter().map(|s| s.captured).min().unwrap_or(0);
        let lost = (EXECS as u64).saturating_sub(captured);
        let tool_lost = s.iter().filter_map(|s| s.tool_lost).max();
        let hwm = s
            .iter()
            .filter_map(|s| s.hwm_kib)
            .max()
            .map(|k| k as f64 / 1024.0);
        println!(
            "{:<10} {:>9.3} {:>+8.1}% {:>9} {:>9} {:>6} {:>10} {:>9}",
            config.name(),
            secs(i),
            overhead(i),
            EXECS,
            captured,
            lost,
            tool_lost.map_or("-".into(), |n| n.to_string()),
            hwm.map_or("-".into(), |m| format!("{m:.1} MiB")),
        );
        if config == Config::Tracer {
            if overhead(i) > MAX_OVERHEAD_PCT {
                failures.push(format!(
                    "tracer overhead {:.1}% > {MAX_OVERHEAD_PCT}%",
                    overhead(i)
                ));
            }
            if lost > 0 || tool_lost != Some(0) {
                failures.push(format!(
                    "tracer lost {lost} events (its summary: {tool_lost:?})"
                ));
            }
            match hwm {
                Some(m) if m < MAX_RSS_MIB => {}
                Some(m) => {
                    failures.push(format!("tracer peak RSS {m:.1} MiB >= {MAX_RSS_MIB} MiB"))
                }
                None => failures.push("tracer peak RSS unknown".into()),
            }
        }
    }
    for (i, &config) in CONFIGS.iter().enumerate().skip(2) {
        if overhead(1) >= overhead(i) {
            failures.push(format!("tracer overhead not below {}'s", config.name()));
        }
    }
    println!("(forkstat names processes from /proc, often too late: its exec lines showing true, <unknown> or the spawner count as captured)");
    Ok(verdict(
        "bench exec",
        &format!("overhead <= {MAX_OVERHEAD_PCT}% and below every peer, 0 lost, peak RSS < {MAX_RSS_MIB} MiB"),
        &failures,
    ))
}

/// Classic tracepoints (bpftrace) need tracefs, not mounted on a fresh machine.
fn ensure_tracefs() -> Result<()> {
    if !Path::new("/sys/kernel/tracing/events").is_dir() {
        crate::run(Command::new("mount").args([
            "-t",
            "tracefs",
            "tracefs",
            "/sys/kernel/tracing",
        ]))?;
        println!("bench exec: mounted tracefs on /sys/kernel/tracing");
    }
    Ok(())
}

fn measure(config: Config, tracer: &Path, out: &Path, workers: usize) -> Result<Sample> {
    let mut cmd = match config {
        Config::Baseline => {
            return Ok(Sample {
                secs: storm(workers)?,
                ..Sample::default()
            })
        }
        Config::Tracer => Command::new(tracer),
        Config::Forkstat => Command::new("forkstat"),
        Config::Bpftrace => Command::new("bpftrace"),
    };
    match config {
        Config::Tracer => cmd.args(["watch", "--json"]),
        Config::Forkstat => cmd.args(["-e", "exec"]),
        _ => cmd.args(["-e", BPFTRACE]),
    };
    let err = out.with_extension("err");
    cmd.stdin(Stdio::null())
        .stdout(File::create(out)?)
        .stderr(File::create(&err)?);
    let mut tool = Proc::spawn(config.name(), &mut cmd)?;
    wait_ready(config, &mut tool, out, &err)?;
    let secs = storm(workers)?;
    let hwm_kib = vm_hwm_kib(tool.pid());
    let status = tool.stop(libc::SIGINT, Duration::from_secs(60))?;
    ensure!(
        config != Config::Tracer || status.success(),
        "tracer watch exited with {status}: {}",
        tail(&err)
    );
    let text = String::from_utf8_lossy(&std::fs::read(out)?).into_owned();
    let (captured, tool_lost) = count(config, &text);
    Ok(Sample {
        secs,
        captured,
        tool_lost,
        hwm_kib,
    })
}

fn wait_ready(config: Config, tool: &mut Proc, out: &Path, err: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = tool.child.try_wait()? {
            bail!(
                "{} exited before it was ready ({status}): {}",
                config.name(),
                tail(err)
            );
        }
        let text = String::from_utf8_lossy(&std::fs::read(out)?).into_owned();
        let ready = match config {
            Config::Tracer => text
                .lines()
                .any(|l| serde_json::from_str(l).is_ok_and(|v| event_type(&v) == "start")),
            Config::Bpftrace => text.contains("Attaching"),
            _ => true,
        };
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} not ready after 60 s: {}", config.name(), tail(err));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // bpftrace prints before attaching and forkstat says nothing: let every
    // tool settle the same second.
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

/// Storm events captured in a tool's output, and the loss it reported.
fn count(config: Config, text: &str) -> (u64, Option<u64>) {
    let mut captured = 0;
    let mut lost = None;
    for line in text.lines() {
        match config {
            Config::Tracer => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                match event_type(&v) {
                    "exec" if v["filename"] == "/bin/true" => captured += 1,
                    "summary" => lost = v["events_lost"].as_u64(),
                    _ => {}
                }
            }
            Config::Bpftrace => captured += u64::from(line.ends_with(" /bin/true")),
            Config::Forkstat => {
                let mut fields = line.split_whitespace();
                if fields.nth(1) == Some("exec") {
                    let info = fields.skip(1).collect::<Vec<_>>().join(" ");
                    captured += u64::from(
                        ["/bin/true", "true", "<unknown>"].contains(&info.as_str())
                            || info.contains("xtask"),
                    );
                }
            }
            Config::Baseline => {}
        }
    }
    (captured, lost)
}

/// The exec storm: EXECS fork+exec of /bin/true, each waited, shared by `workers` threads.
fn storm(workers: usize) -> Result<f64> {
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || -> Result<()> {
                    for _ in 0..(EXECS + w) / workers {
                        ensure!(!STOPPING.load(Ordering::Relaxed), "interrupted");
                        let status = Command::new("/bin/true").status()?;
                        ensure!(status.success(), "/bin/true failed: {status}");
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|w| w.join().expect("storm worker panicked"))
    })?;
    Ok(start.elapsed().as_secs_f64())
}
