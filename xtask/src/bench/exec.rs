//! `bench exec`: the cost of watching an exec storm, for tracer and peers.
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use super::{event_type, median, tail, verdict, vm_hwm_kib, Proc, STOPPING};

pub const EXECS: usize = 20_000;
const MAX_RSS_MIB: f64 = 50.0;
/// Largest CPU tracer watch may spend during the storm, as a share of the
/// storm's own CPU, percent.
const MAX_OVERHEAD_PCT: f64 = 5.0;
const BPFTRACE: &str =
    r#"tracepoint:sched:sched_process_exec { printf("%d %s\n", pid, str(args->filename)); }"#;

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Baseline,
    Tracer,
    Forkstat,
    Bpftrace,
    /// An earlier tracer build (`--before`): the baseline of a change.
    Before,
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
            Config::Before => "before",
        }
    }
}

#[derive(Default)]
pub struct Sample {
    pub secs: f64,
    /// The storm's own CPU seconds (see `storm`).
    pub storm_cpu_secs: f64,
    pub captured: u64,
    /// Loss the tool itself reported (tracer's summary).
    pub tool_lost: Option<u64>,
    /// tracer's findings about the storm's /bin/true (the rules run on
    /// every exec; the storm is benign, so any is a false positive).
    pub storm_findings: u64,
    pub hwm_kib: Option<u64>,
    /// The tool's user + system CPU seconds during the storm.
    pub cpu_secs: f64,
    /// Run time of the tool's BPF programs during the storm (ns), and runs.
    pub bpf_ns: Option<u64>,
    pub bpf_runs: u64,
}

impl Sample {
    /// The tool's CPU per 1,000 execs: user + system and in-kernel BPF, ms.
    pub fn cpu_ms_per_1000(&self) -> f64 {
        (self.cpu_secs * 1e3 + self.bpf_ns.unwrap_or(0) as f64 / 1e6) * 1000.0 / EXECS as f64
    }
}

/// One storm under `tracer watch --json --no-default-iocs EXTRA...`.
pub fn measure_watch(
    tracer: &Path,
    out: &Path,
    workers: usize,
    extra: &[String],
) -> Result<Sample> {
    measure(Config::Tracer, tracer, out, workers, extra)
}

/// The storm under each tool, rounds interleaved; with `before`, an
/// earlier tracer build too, last in every round, so a change is judged
/// against its baseline in the same minutes.
pub fn run(tracer: &Path, before: Option<&Path>, rounds: usize, workers: usize) -> Result<bool> {
    ensure_tracefs()?;
    let dir = crate::scratch("bench/exec")?;
    let _stats = BpfStats::enable()?;
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
    let mut configs = CONFIGS.to_vec();
    if before.is_some() {
        configs.push(Config::Before);
    }
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, &config) in configs.iter().enumerate() {
            let out = dir.join(format!("{}-{round}.out", config.name()));
            // An earlier build is measured exactly as this one.
            let (measured, binary) = match config {
                Config::Before => (Config::Tracer, before.unwrap_or(tracer)),
                c => (c, tracer),
            };
            let s = measure(measured, binary, &out, workers, &[])?;
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
    for (i, &config) in configs.iter().enumerate().skip(1) {
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
        if config == Config::Tracer || config == Config::Before {
            if lost > 0 || tool_lost != Some(0) {
                failures.push(format!(
                    "tracer lost {lost} events (its summary: {tool_lost:?})"
                ));
            }
            let storm_findings: u64 = s.iter().map(|s| s.storm_findings).sum();
            if storm_findings > 0 {
                failures.push(format!(
                    "tracer raised {storm_findings} findings on the storm's /bin/true"
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

    // CPU per 1,000 events: the tool's own user + system time, and the run
    // time of its BPF programs in the kernel, medians over the rounds.
    let per_k = 1000.0 / EXECS as f64;
    let cpu_ms = |i: usize| {
        median(
            &samples[i]
                .iter()
                .map(|s| s.cpu_secs * 1e3)
                .collect::<Vec<_>>(),
        ) * per_k
    };
    let bpf_ms = |i: usize| {
        let v: Vec<f64> = samples[i]
            .iter()
            .filter_map(|s| s.bpf_ns)
            .map(|ns| ns as f64 / 1e6)
            .collect();
        (!v.is_empty()).then(|| median(&v) * per_k)
    };
    println!();
    println!(
        "CPU per 1,000 execs (medians of {rounds} rounds; tools also see the host's other events):"
    );
    println!(
        "{:<10} {:>14} {:>16} {:>14} {:>12}",
        "tool", "user+sys ms", "in-kernel BPF ms", "BPF ns/exec", "total ms"
    );
    let total = |i: usize| cpu_ms(i) + bpf_ms(i).unwrap_or(0.0);
    for (i, &config) in configs.iter().enumerate().skip(1) {
        let runs = samples[i].iter().map(|s| s.bpf_runs).max().unwrap_or(0);
        let (bpf, per_exec) = match bpf_ms(i) {
            Some(ms) => (format!("{ms:.3} ({runs} runs)"), format!("{:.0}", ms * 1e3)),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<10} {:>14.3} {:>16} {:>14} {:>12.3}",
            config.name(),
            cpu_ms(i),
            bpf,
            per_exec,
            total(i)
        );
    }
    println!("(forkstat reads the proc connector: its kernel side is not a BPF program and is not counted)");
    if let Some(b) = configs.iter().position(|&c| c == Config::Before) {
        println!(
            "this build against the one before (--before), same rounds: {:.3} ms vs {:.3} ms per 1,000 execs = {:.2} x (user+sys {:.3} vs {:.3}, BPF {} vs {} ns/exec)",
            total(1),
            total(b),
            total(1) / total(b),
            cpu_ms(1),
            cpu_ms(b),
            bpf_ms(1).map_or("-".into(), |ms| format!("{:.0}", ms * 1e3)),
            bpf_ms(b).map_or("-".into(), |ms| format!("{:.0}", ms * 1e3)),
        );
    }
    for (i, &config) in CONFIGS.iter().enumerate().skip(2) {
        if total(1) >= total(i) {
            failures.push(format!(
                "tracer CPU per event ({:.3} ms/1000) not below {}'s ({:.3})",
                total(1),
                config.name(),
                total(i)
            ));
        }
    }
    if bpf_ms(1).is_none() {
        failures.push("tracer's BPF programs were not found by bpftool".into());
    }
    println!(
        "CPU seconds per 1,000 events (user+sys + in-kernel BPF): watch {:.4} s (every exec through the masquerade rules), forkstat {:.4} s, bpftrace {:.4} s",
        total(1) / 1e3,
        total(2) / 1e3,
        total(3) / 1e3
    );
    // Overhead as CPU: what the tool spent during a storm over what the
    // storm itself spent, per round (the same minutes), median. Other
    // builds on the 2 shared cores swing the storm's wall time by tens of
    // percent between rounds; its CPU barely moves.
    let cpu_overhead = |i: usize| {
        let ratios: Vec<f64> = samples[i]
            .iter()
            .map(|s| {
                let tool = s.cpu_secs + s.bpf_ns.unwrap_or(0) as f64 / 1e9;
                tool / s.storm_cpu_secs.max(1e-9) * 100.0
            })
            .collect();
        median(&ratios)
    };
    // Wall clock, each round against the baseline of the same round.
    let paired_wall = |i: usize| {
        let ratios: Vec<f64> = samples[i]
            .iter()
            .zip(&samples[0])
            .map(|(s, b)| (s.secs / b.secs - 1.0) * 100.0)
            .collect();
        median(&ratios)
    };
    println!(
        "CPU overhead (tool CPU during the storm / the storm's own CPU, median of rounds): tracer {:.1}%, forkstat {:.1}%, bpftrace {:.1}%",
        cpu_overhead(1),
        cpu_overhead(2),
        cpu_overhead(3)
    );
    if cpu_overhead(1) > MAX_OVERHEAD_PCT {
        failures.push(format!(
            "tracer's CPU overhead {:.1}% is above {MAX_OVERHEAD_PCT}%",
            cpu_overhead(1)
        ));
    }
    println!(
        "wall-clock overhead (information; 2 shared cores hide several percent): medians tracer {:+.1}%, forkstat {:+.1}%, bpftrace {:+.1}%; paired with each round's baseline tracer {:+.1}%, forkstat {:+.1}%, bpftrace {:+.1}%",
        overhead(1),
        overhead(2),
        overhead(3),
        paired_wall(1),
        paired_wall(2),
        paired_wall(3)
    );
    println!("(forkstat names processes from /proc, often too late: its exec lines showing true, <unknown> or the spawner count as captured)");
    Ok(verdict(
        "bench exec",
        &format!("CPU per event (user+sys + in-kernel BPF) below every peer's, CPU overhead at most {MAX_OVERHEAD_PCT}%, 0 lost, no finding on the storm, peak RSS < {MAX_RSS_MIB} MiB"),
        &failures,
    ))
}

/// Classic tracepoints (bpftrace) need tracefs, not mounted on a fresh machine.
pub fn ensure_tracefs() -> Result<()> {
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

fn measure(
    config: Config,
    tracer: &Path,
    out: &Path,
    workers: usize,
    extra: &[String],
) -> Result<Sample> {
    let mut cmd = match config {
        Config::Baseline => {
            let (secs, storm_cpu_secs) = storm(workers)?;
            return Ok(Sample {
                secs,
                storm_cpu_secs,
                ..Sample::default()
            });
        }
        Config::Tracer | Config::Before => Command::new(tracer),
        Config::Forkstat => Command::new("forkstat"),
        Config::Bpftrace => Command::new("bpftrace"),
    };
    match config {
        // Every exec goes through the live rules; no built-in domain is looked up.
        Config::Tracer => cmd
            .args(["watch", "--json", "--no-default-iocs"])
            .args(extra),
        Config::Forkstat => cmd.args(["-e", "exec"]),
        _ => cmd.args(["-e", BPFTRACE]),
    };
    let err = out.with_extension("err");
    cmd.stdin(Stdio::null())
        .stdout(File::create(out)?)
        .stderr(File::create(&err)?);
    let before_tool = bpf_progs()?;
    let mut tool = Proc::spawn(config.name(), &mut cmd)?;
    wait_ready(config, &mut tool, out, &err)?;
    // The tool's programs: loaded since it started (and held by it, when
    // bpftool can tell).
    let ready = bpf_progs()?;
    let mine: Vec<u32> = ready
        .iter()
        .filter(|(id, p)| {
            !before_tool.contains_key(id) && (p.pids.is_empty() || p.pids.contains(&tool.pid()))
        })
        .map(|(id, _)| *id)
        .collect();
    let cpu_before = cpu_ticks(tool.pid())?;
    let (secs, storm_cpu_secs) = storm(workers)?;
    // Let the tool catch up with the storm before its CPU is read.
    std::thread::sleep(Duration::from_millis(300));
    let cpu_secs = (cpu_ticks(tool.pid())? - cpu_before) as f64 / TICKS_PER_SEC;
    let after = bpf_progs()?;
    let (mut bpf_ns, mut bpf_runs) = (0, 0);
    for id in &mine {
        if let (Some(a), Some(b)) = (ready.get(id), after.get(id)) {
            bpf_ns += b.run_time_ns.saturating_sub(a.run_time_ns);
            bpf_runs += b.run_cnt.saturating_sub(a.run_cnt);
        }
    }
    let hwm_kib = vm_hwm_kib(tool.pid());
    let status = tool.stop(libc::SIGINT, Duration::from_secs(60))?;
    ensure!(
        config != Config::Tracer || status.success(),
        "tracer watch exited with {status}: {}",
        tail(&err)
    );
    let text = String::from_utf8_lossy(&std::fs::read(out)?).into_owned();
    let (captured, tool_lost, storm_findings) = count(config, &text);
    Ok(Sample {
        secs,
        storm_cpu_secs,
        captured,
        tool_lost,
        storm_findings,
        hwm_kib,
        cpu_secs,
        bpf_ns: (!mine.is_empty()).then_some(bpf_ns),
        bpf_runs,
    })
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU of a live process, all threads (the counters its
/// rusage reports), in clock ticks.
fn cpu_ticks(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => bail!("cannot read the CPU time of {pid}"),
    }
}

/// A loaded BPF program's run-time counters (with BPF stats enabled).
struct BpfProg {
    run_time_ns: u64,
    run_cnt: u64,
    /// Processes holding it, when bpftool can tell.
    pids: Vec<i32>,
}

/// Every loaded BPF program, by id, from `bpftool prog show -j`.
fn bpf_progs() -> Result<std::collections::HashMap<u32, BpfProg>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .stderr(Stdio::null())
        .output()?;
    ensure!(out.status.success(), "bpftool prog show failed");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let pids = p["pids"].as_array().into_iter().flatten();
            let prog = BpfProg {
                run_time_ns: num(p, "run_time_ns"),
                run_cnt: num(p, "run_cnt"),
                pids: pids
                    .filter_map(|x| x["pid"].as_i64())
                    .map(|x| x as i32)
                    .collect(),
            };
            Some((u32::try_from(p["id"].as_u64()?).ok()?, prog))
        })
        .collect())
}

/// BPF run-time statistics, on while this lives: through BPF_ENABLE_STATS,
/// whose file descriptor turns them off again when closed (even if the
/// bench dies), so `kernel.bpf_stats_enabled` is left as it was.
pub struct BpfStats {
    _fd: std::os::fd::OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        // union bpf_attr: enable_stats { __u32 type; }, padded.
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
        // SAFETY: bpf(2) with a zeroed attr of the size we pass.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_mut_ptr(),
                attr.len() as u32,
            )
        };
        ensure!(
            fd >= 0,
            "BPF_ENABLE_STATS failed: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor that only we own.
        Ok(BpfStats {
            _fd: unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
            },
        })
    }
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

/// Storm events captured in a tool's output, the loss it reported, and
/// tracer's findings about the storm's processes.
fn count(config: Config, text: &str) -> (u64, Option<u64>, u64) {
    let mut captured = 0;
    let mut lost = None;
    let mut findings = 0;
    for line in text.lines() {
        match config {
            Config::Tracer | Config::Before => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                match event_type(&v) {
                    "exec" if v["filename"] == "/bin/true" => captured += 1,
                    "finding" if v["process"]["exe"] == "/bin/true" => findings += 1,
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
    (captured, lost, findings)
}

/// The exec storm: EXECS fork+exec of /bin/true, each waited, shared by `workers` threads.
/// Returns its wall time and its own CPU (the workers' user+sys, forks
/// included, and that of every /bin/true they waited for), in seconds.
fn storm(workers: usize) -> Result<(f64, f64)> {
    let cpu_before = storm_cpu();
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
    Ok((start.elapsed().as_secs_f64(), storm_cpu() - cpu_before))
}

/// User + system CPU seconds of this process and its waited-for children.
fn storm_cpu() -> f64 {
    super::rusage_secs(libc::RUSAGE_SELF) + super::rusage_secs(libc::RUSAGE_CHILDREN)
}
