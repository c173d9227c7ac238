//! `bench net`: 10,000 established loopback TCP connections (5,000 pairs)
//! held by 100 processes; `tracer net --json` against `ss -tanp`,
//! `netstat -tanp` and `lsof -i -n -P` in the same run (median of 3 each),
//! with a check that every connection a tool attributes is found by tracer
//! with the same owner; then `tracer hidden` and watch's start-up on the
//! same load, and watch's start-up without it. Last, `tracer net --json`
//! beside a bare `ss -tanp` at 0, 100, 2,000, 10,000 and 100,000
//! connection ends (median of 5 alternating runs each).
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use super::{
    boottime_ns, event_type, hidden::kill_all, line_reader, median, tail, timed, verdict, Proc,
};

const PROCS: usize = 100;
const PAIRS_PER_PROC: usize = 50;
const CONNECTIONS: usize = PROCS * PAIRS_PER_PROC * 2;
const RUNS: usize = 5;
const CAP: Duration = Duration::from_secs(120);
const MAX_HIDDEN_SECS: f64 = 1.0;
const MAX_WATCH_START_EXTRA_SECS: f64 = 0.5;
/// The load's addresses: one loopback address per holder process, so that
/// ephemeral ports are not shared with anything else on the machine.
const NET_PREFIX: &str = "127.77.";

/// (local, remote, pid): one connection end as a tool attributes it.
type Owned = BTreeSet<(String, String, u32)>;

/// Connection ends of the size table: the host's own, then loads of
/// established loopback connections (both ends held).
const SIZES: [usize; 5] = [0, 100, 2_000, 10_000, 100_000];
/// Connections one holder process keeps at the largest sizes.
const PAIRS_PER_HOLDER: usize = 500;

/// The connection holders helper (`__holders`), once its connections are up.
fn start_holders(procs: usize, pairs: usize) -> Result<Proc> {
    let mut holders = Proc::spawn(
        "connection holders",
        Command::new(crate::self_exe())
            .args(["__holders", &procs.to_string(), &pairs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )?;
    let mut ready = String::new();
    BufReader::new(holders.child.stdout.take().unwrap()).read_line(&mut ready)?;
    ensure!(
        ready.trim() == "ready",
        "could not open {} connections: {}",
        procs * pairs * 2,
        ready.trim()
    );
    Ok(holders)
}

/// Closes the helper's stdin: it kills and reaps its children.
fn stop_holders(mut holders: Proc) -> Result<()> {
    drop(holders.child.stdin.take());
    if holders.wait_timeout(Duration::from_secs(60))?.is_none() {
        println!("  holders helper did not finish: killing its group");
    }
    Ok(())
}

/// `tracer net --json` beside a bare `ss -tanp` at each of `SIZES`,
/// alternating, median of `RUNS` each: (connection ends, tracer s, ss s).
fn size_rows(tracer: &Path, dir: &Path) -> Result<Vec<(usize, f64, f64)>> {
    let mut rows = Vec::new();
    for size in SIZES {
        let pairs = size / 2;
        let procs = pairs.div_ceil(PAIRS_PER_HOLDER);
        let holders = (procs > 0)
            .then(|| start_holders(procs, pairs / procs))
            .transpose()?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 1..=RUNS {
            for (name, cmd, times) in [
                (
                    "tracer net",
                    Command::new(tracer).args(["net", "--json", "--no-default-iocs"]),
                    &mut ours,
                ),
                ("ss -tanp", Command::new("ss").arg("-tanp"), &mut theirs),
            ] {
                let out = dir.join(format!("size-{size}-{round}.out"));
                let t = timed(name, cmd, &out, CAP)?;
                ensure!(
                    t.status.is_some_and(|s| s.success()),
                    "{name} failed at {size} connection ends: {}",
                    tail(&out.with_extension("err"))
                );
                times.push(t.secs);
            }
        }
        if let Some(h) = holders {
            stop_holders(h)?;
        }
        println!(
            "  {size:>7} connection ends: tracer net {} s, ss -tanp {} s (medians of {RUNS}, alternating)",
            fmt(median(&ours)),
            fmt(median(&theirs))
        );
        rows.push((size, median(&ours), median(&theirs)));
    }
    Ok(rows)
}

pub fn run(tracer: &Path) -> Result<bool> {
    let dir = crate::scratch("bench/net")?;
    let holders = start_holders(PROCS, PAIRS_PER_PROC)?;
    println!(
        "bench net: {CONNECTIONS} established loopback TCP connections ({} pairs) held by {PROCS} processes",
        CONNECTIONS / 2
    );

    let tools: [(&str, &str, &[&str], Parser); 4] = [
        (
            "tracer net",
            tracer.to_str().unwrap(),
            &["net", "--json", "--no-default-iocs"],
            tracer_owned,
        ),
        ("ss -tanp", "ss", &["-tanp"], ss_owned),
        ("netstat -tanp", "netstat", &["-tanp"], netstat_owned),
        ("lsof -i -n -P", "lsof", &["-i", "-n", "-P"], lsof_owned),
    ];
    // Rounds, each tool once per round: load that comes and goes on the
    // machine falls on every tool alike.
    let mut runs: Vec<(Vec<f64>, Vec<f64>, usize, Owned)> =
        tools.iter().map(|_| Default::default()).collect();
    for round in 1..=RUNS {
        for ((name, program, args, parse), run) in tools.iter().zip(&mut runs) {
            let out = dir.join(format!("{}-{round}.out", name.split(' ').next().unwrap()));
            let t = timed(name, Command::new(program).args(*args), &out, CAP)?;
            ensure!(
                t.status.is_some_and(|s| s.success()),
                "{name} failed ({:?}): {}",
                t.status,
                tail(&out.with_extension("err"))
            );
            run.0.push(t.secs);
            run.1.push(t.cpu_secs);
            let text = std::fs::read_to_string(&out).or_else(|_| {
                std::fs::read(&out).map(|b| String::from_utf8_lossy(&b).into_owned())
            })?;
            (run.2, run.3) = parse(&text).with_context(|| format!("reading {}", out.display()))?;
        }
    }
    let mut results = Vec::new();
    for ((name, ..), (secs, cpu, listed, owned)) in tools.iter().zip(runs) {
        println!(
            "  {name}: {} s, {} s CPU (medians of {RUNS}), {listed} TCP connections with an owner",
            fmt(median(&secs)),
            fmt(median(&cpu))
        );
        results.push((*name, median(&secs), median(&cpu), listed, owned));
    }

    let hidden = median_of("tracer hidden", RUNS, |i| {
        let out = dir.join(format!("hidden-{i}.out"));
        let t = timed(
            "tracer hidden",
            Command::new(tracer).arg("hidden"),
            &out,
            CAP,
        )?;
        ensure!(
            matches!(t.status.and_then(|s| s.code()), Some(0 | 1)),
            "tracer hidden failed: {}",
            tail(&out.with_extension("err"))
        );
        Ok(t.secs)
    })?;
    println!("  tracer hidden: {} s (median of {RUNS})", fmt(hidden));
    let watch_loaded = median_of("watch start", RUNS, |_| watch_start(tracer, &dir))?;
    println!(
        "  watch start-up with the connections: {} s",
        fmt(watch_loaded)
    );

    stop_holders(holders)?;
    let watch_idle = median_of("watch start", RUNS, |_| watch_start(tracer, &dir))?;
    println!("  watch start-up without them: {} s", fmt(watch_idle));
    // Last, smallest first: the largest load (100,000 connections) comes
    // after the checks above.
    println!("bench net: tracer net beside a bare ss -tanp at {SIZES:?} connection ends");
    let sizes = size_rows(tracer, &dir)?;

    let mut failures = Vec::new();
    println!();
    println!(
        "{:<16} {:>12} {:>12} {:>10}",
        "connection ends", "tracer net s", "ss -tanp s", "tracer/ss"
    );
    for &(size, ours, theirs) in &sizes {
        println!(
            "{size:<16} {:>12} {:>12} {:>10.2}",
            fmt(ours),
            fmt(theirs),
            ours / theirs
        );
        if ours >= theirs {
            failures.push(format!(
                "at {size} connection ends tracer net took {} s, ss -tanp {} s",
                fmt(ours),
                fmt(theirs)
            ));
        }
    }
    println!();
    println!(
        "{:<16} {:>9} {:>9} {:>8} {:>13} {:>20}",
        "tool", "seconds", "CPU s", "owned", "tracer/tool", "missed by tracer"
    );
    let (_, tracer_secs, _, _, tracer_set) = &results[0];
    for (name, secs, cpu, listed, owned) in &results {
        let ours: Owned = owned.iter().filter(|c| is_load(c)).cloned().collect();
        let missed = ours.difference(tracer_set).count();
        let ratio = if *name == "tracer net" {
            "-".to_string()
        } else {
            format!("{:.3}", tracer_secs / secs)
        };
        println!(
            "{name:<16} {:>9} {:>9} {listed:>8} {ratio:>13} {missed:>20}",
            fmt(*secs),
            fmt(*cpu)
        );
        if missed > 0 {
            failures.push(format!(
                "{missed} of {name}'s owned connections not found by tracer"
            ));
        }
        if *name != "tracer net" && secs <= tracer_secs {
            failures.push(format!("{name} was as fast as tracer net"));
        }
    }
    let ours = tracer_set.iter().filter(|c| is_load(c)).count();
    if ours < CONNECTIONS {
        failures.push(format!(
            "tracer net attributed {ours} of the {CONNECTIONS} load connections"
        ));
    }
    println!("{:<16} {:>9}", "tracer hidden", fmt(hidden));
    println!(
        "watch start-up   {:>9} with, {} without: +{} s",
        fmt(watch_loaded),
        fmt(watch_idle),
        fmt(watch_loaded - watch_idle)
    );
    if hidden >= MAX_HIDDEN_SECS {
        failures.push(format!("tracer hidden took {} s", fmt(hidden)));
    }
    if watch_loaded - watch_idle >= MAX_WATCH_START_EXTRA_SECS {
        failures.push(format!(
            "watch start-up grew by {} s",
            fmt(watch_loaded - watch_idle)
        ));
    }
    Ok(verdict(
        "bench net",
        &format!(
            "tracer net faster than ss -tanp at every size, every owned connection of every tool found by tracer, tracer net faster than ss, netstat and lsof, \
             tracer hidden < {MAX_HIDDEN_SECS} s, watch start-up + < {MAX_WATCH_START_EXTRA_SECS} s at {CONNECTIONS} connections"
        ),
        &failures,
    ))
}

/// An established end of one of the load's connections (the client end
/// has 127.0.0.1 as its source: the kernel picks lo's primary address).
/// Listeners are left out: each tool writes the wildcard peer differently.
fn is_load((local, remote, _): &(String, String, u32)) -> bool {
    let wildcard = remote == "*" || remote.ends_with(":*") || remote.ends_with(":0");
    (local.starts_with(NET_PREFIX) || remote.starts_with(NET_PREFIX)) && !wildcard
}

fn fmt(secs: f64) -> String {
    format!("{secs:.3}")
}

fn median_of(what: &str, runs: usize, mut f: impl FnMut(usize) -> Result<f64>) -> Result<f64> {
    let secs = (1..=runs)
        .map(&mut f)
        .collect::<Result<Vec<f64>>>()
        .with_context(|| what.to_string())?;
    Ok(median(&secs))
}

/// Seconds from starting `tracer watch` to its start record.
fn watch_start(tracer: &Path, dir: &Path) -> Result<f64> {
    let err = dir.join("watch.err");
    let started = boottime_ns();
    let mut watch = Proc::spawn(
        "tracer watch",
        Command::new(tracer)
            .args(["watch", "--json", "--no-default-iocs", "--connect-only"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&err)?),
    )?;
    let lines = line_reader(watch.child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let at = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((at, line))
                if serde_json::from_str(&line).is_ok_and(|v| event_type(&v) == "start") =>
            {
                break at
            }
            Ok(_) => {}
            Err(_) => bail!("tracer watch printed no start line: {}", tail(&err)),
        }
    };
    watch.stop(libc::SIGINT, Duration::from_secs(10))?;
    Ok((at - started) as f64 / 1e9)
}

/// Parses a tool's output: (TCP connections listed with an owner, the
/// connection ends it attributes).
type Parser = fn(&str) -> Result<(usize, Owned)>;

fn tracer_owned(text: &str) -> Result<(usize, Owned)> {
    let v: Value = serde_json::from_str(text)?;
    let mut owned = Owned::new();
    let mut listed = 0;
    for c in v["connections"].as_array().context("no connections")? {
        if c["protocol"] != "tcp" || c["owners"].as_array().is_none_or(|o| o.is_empty()) {
            continue;
        }
        listed += 1;
        for o in c["owners"].as_array().unwrap() {
            owned.insert((
                c["local"].as_str().unwrap_or("").to_string(),
                c["remote"].as_str().unwrap_or("").to_string(),
                o["pid"].as_u64().unwrap_or(0) as u32,
            ));
        }
    }
    Ok((listed, owned))
}

/// `ESTAB 0 0 127.77.0.1:4000 127.77.0.1:5000 users:(("x",pid=12,fd=3),...)`
fn ss_owned(text: &str) -> Result<(usize, Owned)> {
    let mut owned = Owned::new();
    let mut listed = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(users) = line.find("users:((") else {
            continue;
        };
        listed += 1;
        for part in line[users..].split("pid=").skip(1) {
            let pid: u32 = part.split(',').next().unwrap_or("").parse()?;
            owned.insert((f[3].to_string(), f[4].to_string(), pid));
        }
    }
    Ok((listed, owned))
}

/// `tcp 0 0 127.77.0.1:4000 127.77.0.1:5000 ESTABLISHED 12/x`
fn netstat_owned(text: &str) -> Result<(usize, Owned)> {
    let mut owned = Owned::new();
    let mut listed = 0;
    for line in text.lines().filter(|l| l.starts_with("tcp")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = f
            .get(6)
            .and_then(|p| p.split('/').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        listed += 1;
        owned.insert((f[3].to_string(), f[4].to_string(), pid));
    }
    Ok((listed, owned))
}

/// `x 12 root 3u IPv4 555 0t0 TCP 127.77.0.1:4000->127.77.0.1:5000 (ESTABLISHED)`
fn lsof_owned(text: &str) -> Result<(usize, Owned)> {
    let mut owned = Owned::new();
    let mut listed = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(node) = f.iter().position(|x| *x == "TCP") else {
            continue;
        };
        let (Some(name), Ok(pid)) = (f.get(node + 1), f[1].parse::<u32>()) else {
            continue;
        };
        listed += 1;
        let (local, remote) = name.split_once("->").unwrap_or((name, "*"));
        owned.insert((local.to_string(), remote.to_string(), pid));
    }
    Ok((listed, owned))
}

/// Helper process: `procs` children, each with a listener on its own
/// loopback address and `pairs` connections to it, both ends held; prints
/// `ready`, and when stdin closes (the bench is done, or died) kills and
/// reaps them.
pub fn holders(procs: usize, pairs: usize) -> Result<u8> {
    raise_nofile(pairs as u64 * 2 + 64)?;
    let mut pids = Vec::with_capacity(procs);
    for i in 0..procs {
        let mut pipe = [0; 2];
        // SAFETY: valid array for pipe(2); we are single-threaded, and the
        // child only opens sockets and pauses.
        ensure!(unsafe { libc::pipe(pipe.as_mut_ptr()) } == 0, "pipe failed");
        match unsafe { libc::fork() } {
            -1 => {
                kill_all(&pids);
                bail!("fork failed after {i} processes");
            }
            0 => unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::close(pipe[0]);
                let held = hold(i, pairs);
                let ok: &[u8] = if held.is_ok() { b"1" } else { b"0" };
                libc::write(pipe[1], ok.as_ptr().cast(), 1);
                libc::close(pipe[1]);
                libc::close(0);
                libc::close(1);
                loop {
                    libc::pause();
                }
            },
            pid => {
                pids.push(pid);
                let mut ok = [0u8; 1];
                // SAFETY: our pipe ends.
                let n = unsafe {
                    libc::close(pipe[1]);
                    let n = libc::read(pipe[0], ok.as_mut_ptr().cast(), 1);
                    libc::close(pipe[0]);
                    n
                };
                if n != 1 || ok[0] != b'1' {
                    kill_all(&pids);
                    println!("holder {i} could not open its connections");
                    return Ok(1);
                }
            }
        }
    }
    println!("ready");
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    kill_all(&pids);
    Ok(0)
}

/// A listener on 127.77.X.Y and `pairs` connections to it, both ends.
fn hold(i: usize, pairs: usize) -> std::io::Result<(TcpListener, Vec<TcpStream>)> {
    let addr = Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8);
    let listener = TcpListener::bind((addr, 0))?;
    let mut held = Vec::with_capacity(pairs * 2);
    for _ in 0..pairs {
        held.push(TcpStream::connect(listener.local_addr()?)?);
        held.push(listener.accept()?.0);
    }
    // Closed with a reset when the holder dies, not left in TIME_WAIT for
    // a minute, where every tool would list them in the benches after.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for stream in &held {
        // SAFETY: setsockopt on a socket we own, with a valid linger.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    Ok((listener, held))
}

fn raise_nofile(need: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < need {
            ensure!(
                lim.rlim_max >= need,
                "RLIMIT_NOFILE hard limit {} < {need}",
                lim.rlim_max
            );
            lim.rlim_cur = need;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tool_output_gives_its_owned_connections() {
        let ss = "State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n\
                  ESTAB 0 0 127.77.0.1:4000 127.77.0.1:5000 users:((\"a b\",pid=12,fd=3),(\"c\",pid=13,fd=4))\n\
                  TIME-WAIT 0 0 127.0.0.1:1 127.0.0.1:2\n";
        let (n, o) = ss_owned(ss).unwrap();
        assert_eq!(n, 1);
        assert!(o.contains(&("127.77.0.1:4000".into(), "127.77.0.1:5000".into(), 13)));
        let netstat = "Active Internet connections (servers and established)\n\
                       Proto Recv-Q Send-Q Local Address Foreign Address State PID/Program name\n\
                       tcp 0 0 127.77.0.1:4000 127.77.0.1:5000 ESTABLISHED 12/a b\n\
                       tcp 0 0 127.0.0.1:1 127.0.0.1:2 TIME_WAIT -\n";
        let (n, o) = netstat_owned(netstat).unwrap();
        assert_eq!((n, o.len()), (1, 1));
        let lsof = "COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME\n\
                    a 12 root 3u IPv4 555 0t0 TCP 127.77.0.1:4000->127.77.0.1:5000 (ESTABLISHED)\n\
                    a 12 root 4u IPv4 556 0t0 TCP 127.77.0.1:5000 (LISTEN)\n\
                    a 12 root 5u IPv4 557 0t0 UDP *:53\n";
        let (n, o) = lsof_owned(lsof).unwrap();
        assert_eq!(n, 2);
        assert!(o.contains(&("127.77.0.1:4000".into(), "127.77.0.1:5000".into(), 12)));
        let tracer = r#"{"connections":[{"protocol":"tcp","local":"127.77.0.1:4000","remote":"127.77.0.1:5000","owners":[{"pid":12}]},
                        {"protocol":"tcp","local":"127.0.0.1:1","remote":"127.0.0.1:2","owners":[]}]}"#;
        let (n, o) = tracer_owned(tracer).unwrap();
        assert_eq!((n, o.len()), (1, 1));
    }
}
