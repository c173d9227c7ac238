//! `bench connect`: alerts on connects to an indicator, from a process four
//! levels deep (latency, loss, attribution), then kill-tree on 1,000 processes.
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use super::{
    boottime_ns, event_type, hidden::Sleepers, line_reader, median, percentile, tail, verdict, Proc,
};

const CONNECTS: u32 = 10_000;
/// Gap between connects: latency is measured at a steady rate (1,000/s),
/// not as the queueing of a saturated 2-core machine.
const INTERVAL_US: u64 = 1_000;
/// Idle processes started beside the second run: no per-alert cost may
/// grow with the host.
const EXTRA_PROCS: usize = 10_000;
const MAX_MEDIAN_MS: f64 = 0.3;
/// watch from spawn to its start line, with EXTRA_PROCS processes.
const MAX_STARTUP_SECS: f64 = 0.5;
const MAX_P99_MS: f64 = 1.0;
const LEVELS: u32 = 4;
/// Children per process at each depth: 1 + 9 + 90 + 900 = 1,000 processes.
const TREE: [usize; 3] = [9, 10, 10];
const TREE_SIZE: usize = 1_000;
const MAX_KILL_SECS: f64 = 1.0;

pub fn run(tracer: &Path) -> Result<bool> {
    let dir = crate::scratch("bench/connect")?;
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for extra in [0, EXTRA_PROCS] {
        let sleepers = (extra > 0).then(|| Sleepers::start(extra)).transpose()?;
        let mut r = connects(tracer, &dir, extra)?;
        // The same wakeup without tracer, on the same host (sleepers and
        // all): what no event path can beat here.
        r.floor = wakeup_floor()?;
        if let Some(s) = sleepers {
            s.stop()?;
        }
        failures.extend(
            r.failures
                .iter()
                .map(|f| format!("{} extra processes: {f}", extra)),
        );
        rows.push((extra, r));
    }

    println!();
    println!(
        "connect-to-alert, ms ({CONNECTS} connects, one every {INTERVAL_US} us), median / p99:"
    );
    print!("{:<34}", "stage");
    for (extra, _) in &rows {
        print!(" {:>22}", format!("+{extra} processes"));
    }
    println!();
    for (i, stage) in STAGES.iter().enumerate() {
        print!("{stage:<34}");
        for (_, r) in &rows {
            let v = &r.stages[i];
            print!(
                " {:>22}",
                format!("{:.3} / {:.3}", median(v), percentile(v, 99.0))
            );
        }
        println!();
    }
    // What no event path can beat here: a process woken through a pipe at
    // the same cadence. An alert takes two such wakeups (the kernel wakes
    // watch, watch's line wakes its reader).
    print!("{:<34}", "wakeup floor");
    for (_, r) in &rows {
        let f = &r.floor;
        print!(
            " {:>22}",
            format!("{:.3} / {:.3}", median(f), percentile(f, 99.0))
        );
    }
    println!("   (one wakeup through a pipe, same cadence, no tracer: this host's floor)");
    println!(
        "{:<34} the bench's line reader (and the floor's) runs SCHED_FIFO {}, so that its own \
         wait for a CPU is not counted as tracer's",
        "",
        super::READER_FIFO_PRIORITY
    );
    for (extra, r) in &rows {
        let (med, p99) = (median(&r.latency_ms), percentile(&r.latency_ms, 99.0));
        if med >= MAX_MEDIAN_MS || p99 >= MAX_P99_MS {
            failures.push(format!(
                "{extra} extra processes: median {med:.3} ms, p99 {p99:.3} ms"
            ));
        }
    }

    // Start-up and memory as the table grows with the host.
    if let [(_, small), (_, large)] = &rows[..] {
        if let (Some(a), Some(b)) = (small.rss_kib, large.rss_kib) {
            let per_10k = (b as f64 - a as f64) / 1024.0 * 10_000.0
                / (large.processes as f64 - small.processes as f64);
            println!(
                "{:<34} {per_10k:.1} MiB per 10,000 known processes ({:.1} MiB at {}, {:.1} MiB at {})",
                "watch resident memory",
                a as f64 / 1024.0,
                small.processes,
                b as f64 / 1024.0,
                large.processes
            );
        }
        println!(
            "{:<34} {:.3} s at {} processes, {:.3} s at {}",
            "watch start-up",
            small.startup_secs,
            small.processes,
            large.startup_secs,
            large.processes
        );
        if large.startup_secs >= MAX_STARTUP_SECS {
            failures.push(format!(
                "watch start-up {:.3} s at {} processes",
                large.startup_secs, large.processes
            ));
        }
    }

    let KillTree {
        secs,
        gone_after,
        left,
    } = kill_tree(tracer, &dir)?;
    let gone = gone_after.map_or("not all gone".into(), |g| {
        format!("tree gone after {g:.3} s")
    });
    println!(
        "{:<34} {gone}; command {secs:.3} s incl. respawn watch; {left} of {TREE_SIZE} processes left",
        "kill-tree"
    );
    // The bar is on the time until nothing of the tree runs; the command
    // then goes on watching for respawns (TRACER_RESPAWN_CHECK_MS) by design.
    if gone_after.is_none_or(|g| g >= MAX_KILL_SECS) {
        failures.push(format!("kill-tree: {gone} (command {secs:.3} s)"));
    }
    if left > 0 {
        failures.push(format!("kill-tree left {left} processes"));
    }
    let race = kill_race(tracer, &dir)?;
    println!(
        "{:<34} {RACE_ROUNDS} rounds: last marked process gone after {:.3} s median, {:.3} s max; {} escaped",
        "kill race (orphans every 30 ms)",
        median(&race.gone_secs),
        race.gone_secs.iter().copied().fold(0.0, f64::max),
        race.escaped
    );
    if race.escaped > 0 {
        failures.push(format!("kill race: {} processes escaped", race.escaped));
    }
    Ok(verdict(
        "bench connect",
        &format!(
            "median < {MAX_MEDIAN_MS} ms and p99 < {MAX_P99_MS} ms with and without {EXTRA_PROCS} other processes, \
             watch start-up < {MAX_STARTUP_SECS} s with them, \
             0 lost, all attributed with a kill-tree plan, tree gone < {MAX_KILL_SECS} s, nothing left, \
             no process escapes the kill race"
        ),
        &failures,
    ))
}

/// Rounds of the kill race.
const RACE_ROUNDS: usize = 5;

struct KillRace {
    /// Per round, from starting `kill-tree --kill` to no marked process left.
    gone_secs: Vec<f64>,
    /// Marked processes still running after a kill, over all rounds.
    escaped: usize,
}

/// Live (not zombie) processes whose argv[0] is `marker`.
fn marked(marker: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let argv0 = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).next() == Some(marker.as_bytes()));
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true);
            argv0 && !zombie
        })
        .collect()
}

/// A spawner whose children each leave an orphaned grandchild every 30 ms,
/// killed with `kill-tree --kill`, RACE_ROUNDS times.
fn kill_race(tracer: &Path, dir: &Path) -> Result<KillRace> {
    let mut race = KillRace {
        gone_secs: Vec::new(),
        escaped: 0,
    };
    for round in 0..RACE_ROUNDS {
        let marker = format!("tracer-bench-race-{}-{round}", std::process::id());
        let script = dir.join(format!("race-{round}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/bash\nwhile :; do ( exec -a {marker} sleep 600 & ); sleep 0.03; done\n"
            ),
        )?;
        // Through sh, so that the spawner's parent is not this bench, the
        // subreaper its orphans go to; the spawner leads its own session and
        // group, as a dropper's loop does.
        let group = Proc::spawn(
            "kill race",
            Command::new("sh")
                .arg("-c")
                .arg(format!("setsid bash {} & wait", script.display()))
                .process_group(0)
                .stdin(Stdio::null()),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while marked(&marker).len() < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let sh = group.pid();
        let spawner = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))?
            .split_whitespace()
            .next()
            .context("the race's spawner did not start")?
            .to_string();
        let start = Instant::now();
        let mut kill = Proc::spawn(
            "tracer kill-tree (race)",
            Command::new(tracer)
                .args(["kill-tree", &spawner, "--kill"])
                .env("TRACER_RESPAWN_CHECK_MS", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let mut gone = None;
        let pgid: i32 = spawner.parse()?;
        while start.elapsed() < Duration::from_secs(30) {
            // SAFETY: reaps the race's orphans reparented to this bench (a
            // subreaper): its process group only, never kill-tree itself.
            unsafe { while libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
            if gone.is_none() && marked(&marker).is_empty() {
                gone = Some(start.elapsed().as_secs_f64());
            }
            if kill.child.try_wait()?.is_some() && gone.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(kill);
        std::thread::sleep(Duration::from_millis(200));
        let left = marked(&marker);
        race.escaped += left.len();
        race.gone_secs.push(gone.unwrap_or(f64::INFINITY));
        for pid in left {
            // SAFETY: a process of the race this bench started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        drop(group);
        // SAFETY: as above.
        unsafe { while libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
    }
    Ok(race)
}

/// Stages of connect-to-alert, in the order of `ConnectRun::stages`.
const STAGES: [&str; 8] = [
    "ring buffer wakeup",
    "reader loop (drain, decode)",
    "table lookup and ancestry",
    "indicator match",
    "connect line out",
    "kill-tree plan",
    "alert JSON, flush, pipe, reader",
    "total",
];

struct ConnectRun {
    /// Processes on the host when watch started.
    processes: usize,
    /// From spawning watch to its start line.
    startup_secs: f64,
    /// watch's resident memory just after start.
    rss_kib: Option<u64>,
    latency_ms: Vec<f64>,
    /// Per stage (see `STAGES`), one value per alert, in ms.
    stages: Vec<Vec<f64>>,
    failures: Vec<String>,
    /// Pipe wakeups without tracer, on the same host, in ms.
    floor: Vec<f64>,
}

/// One watch, one chain of connects; prints the counts of this run.
fn connects(tracer: &Path, dir: &Path, extra: usize) -> Result<ConnectRun> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    // Accept and close; the thread ends with the process.
    std::thread::spawn(move || listener.incoming().for_each(drop));
    let ioc = dir.join("ioc.txt");
    std::fs::write(&ioc, format!("127.0.0.1:{port}\n"))?;

    let err = dir.join(format!("tracer-watch-{extra}.err"));
    let mut watch = Proc::spawn(
        "tracer watch",
        Command::new(tracer)
            .args([
                "watch",
                "--json",
                "--connect-only",
                "--timing",
                "--no-default-iocs",
                "--ioc",
            ])
            .arg(&ioc)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&err)?),
    )?;
    let lines = line_reader(watch.child.stdout.take().unwrap());
    let spawned = Instant::now();
    wait_start(&lines, &err)?;
    let startup_secs = spawned.elapsed().as_secs_f64();
    let rss_kib = super::vm_rss_kib(watch.pid());
    let processes = super::hidden::count_processes();
    println!(
        "bench connect: tracer watching, {processes} processes on the host; {LEVELS}-level chain \
         connects {CONNECTS} times to 127.0.0.1:{port}"
    );

    // The chain prints one pid per level, top first, then `done OK FAILED`.
    let mut chain = Proc::spawn(
        "connect chain",
        Command::new(crate::self_exe())
            .args([
                "__chain",
                &LEVELS.to_string(),
                &port.to_string(),
                &CONNECTS.to_string(),
                &INTERVAL_US.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )?;
    let chain_out = line_reader(chain.child.stdout.take().unwrap());
    let mut stats = Stats {
        port,
        stages: vec![Vec::new(); STAGES.len()],
        ..Stats::default()
    };
    let (mut made, mut failed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Keep draining tracer's lines while the chain runs.
        while let Ok((at, line)) = lines.try_recv() {
            stats.line(at, &line);
        }
        match chain_out.recv_timeout(Duration::from_millis(20)) {
            Ok((_, line)) => match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["done", ok, bad] => (made, failed) = (ok.parse()?, bad.parse()?),
                [pid] => stats.chain.push(pid.parse()?),
                _ => bail!("unexpected line from the chain: {line}"),
            },
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(RecvTimeoutError::Timeout) => bail!("the connect chain took over 300 s"),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = chain.wait_timeout(Duration::from_secs(10))?;
    ensure!(
        status.is_some_and(|s| s.success()) && stats.chain.len() == LEVELS as usize,
        "the connect chain failed: {status:?}"
    );
    drop(chain);

    // Wait for the alerts still in flight (5 s of silence ends it), then stop.
    loop {
        match lines.recv_timeout(Duration::from_secs(5)) {
            Ok((at, line)) => stats.line(at, &line),
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => bail!("tracer watch died: {}", tail(&err)),
        }
        if stats.alerts >= made {
            break;
        }
    }
    watch.signal(libc::SIGINT);
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    while let Ok((at, line)) =
        lines.recv_timeout(stop_deadline.saturating_duration_since(Instant::now()))
    {
        stats.line(at, &line);
    }
    let status = watch.stop(libc::SIGINT, Duration::from_secs(5))?;
    ensure!(
        status.success(),
        "tracer watch exited with {status}: {}",
        tail(&err)
    );
    drop(watch);

    let attributed = stats.attributed();
    let missing = made.saturating_sub(stats.alerts);
    println!("  {:<30} {made} ({failed} failed)", "connects made");
    println!("  {:<30} {}", "alerts received", stats.alerts);
    println!("  {:<30} {attributed}", "attributed, with kill-tree plan");
    println!("  {:<30} {missing}", "lost (connects - alerts)");
    println!(
        "  {:<30} {}",
        "lost (tracer's summary)",
        stats.lost.map_or("no summary".into(), |n| n.to_string())
    );
    println!(
        "  {:<30} {:.3} ms / {:.3} ms",
        "latency median / p99",
        median(&stats.latency_ms),
        percentile(&stats.latency_ms, 99.0)
    );
    println!(
        "  {:<30} {startup_secs:.3} s, resident {} after start",
        "watch start-up",
        rss_kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );
    let mut failures = Vec::new();
    if made != u64::from(CONNECTS) {
        failures.push(format!("only {made} of {CONNECTS} connects succeeded"));
    }
    if missing > 0 || stats.lost != Some(0) {
        failures.push(format!(
            "{missing} alerts missing, summary events_lost {:?}",
            stats.lost
        ));
    }
    if attributed != stats.alerts || stats.alerts == 0 {
        failures.push(format!(
            "{} alerts without the full chain or a kill-tree plan",
            stats.alerts - attributed
        ));
    }
    Ok(ConnectRun {
        processes,
        startup_secs,
        rss_kib,
        latency_ms: stats.latency_ms,
        stages: stats.stages,
        failures,
        floor: Vec::new(),
    })
}

fn wait_start(lines: &Receiver<(u64, String)>, err: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, line))
                if serde_json::from_str(&line).is_ok_and(|v| event_type(&v) == "start") =>
            {
                return Ok(())
            }
            Ok(_) => {}
            Err(_) => bail!("tracer watch printed no start line: {}", tail(err)),
        }
    }
}

#[derive(Default)]
struct Stats {
    port: u16,
    /// Chain pids, top first; the last one connects.
    chain: Vec<i64>,
    alerts: u64,
    /// Per alert: the connecting pid and every pid it names.
    alert_pids: Vec<(Option<i64>, Vec<i64>)>,
    latency_ms: Vec<f64>,
    /// Per stage (see `STAGES`), in ms.
    stages: Vec<Vec<f64>>,
    lost: Option<u64>,
}

impl Stats {
    fn line(&mut self, arrival_ns: u64, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        match event_type(&v) {
            "summary" => self.lost = v["events_lost"].as_u64(),
            "alert" if v["connect"]["dport"] == self.port => {
                self.alerts += 1;
                let conn = &v["connect"];
                if let Some(k) = conn["ktime_ns"].as_u64() {
                    self.latency_ms.push((arrival_ns as f64 - k as f64) / 1e6);
                    self.split(k, arrival_ns, &v["timing"]);
                }
                // An alert without its plan counts as not attributed.
                if v["kill_tree"]["pids"]
                    .as_array()
                    .is_none_or(|p| !p.iter().any(|p| p == &conn["pid"]))
                {
                    self.alert_pids.push((None, Vec::new()));
                    return;
                }
                let ancestry = conn["ancestry"].as_array();
                let mut pids: Vec<i64> = ancestry
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["pid"].as_i64())
                    .collect();
                pids.extend(conn["pid"].as_i64());
                self.alert_pids.push((conn["pid"].as_i64(), pids));
            }
            _ => {}
        }
    }

    /// Splits one alert's latency into `STAGES` from its `timing` object.
    fn split(&mut self, ktime: u64, arrival: u64, t: &Value) {
        let ns = |k: &str| t[k].as_u64().unwrap_or(0);
        let (woken, handled) = (ns("woken_ns"), ns("handled_ns"));
        if handled == 0 {
            return;
        }
        // A record queued while a drain was already running waits for that
        // drain, not for a wakeup.
        let woken = woken.max(ktime).min(handled);
        let parts = [
            woken - ktime,
            handled - woken,
            ns("ancestry_ns"),
            ns("match_ns"),
            ns("connect_out_ns"),
            ns("plan_ns"),
            arrival.saturating_sub(ns("alert_write_ns")),
            arrival.saturating_sub(ktime),
        ];
        for (stage, part) in self.stages.iter_mut().zip(parts) {
            stage.push(part as f64 / 1e6);
        }
    }

    /// Alerts from the leaf that name all four levels of the chain.
    fn attributed(&self) -> u64 {
        let full = |(pid, pids): &&(Option<i64>, Vec<i64>)| {
            self.chain.len() == LEVELS as usize
                && *pid == self.chain.last().copied()
                && self.chain.iter().all(|p| pids.contains(p))
        };
        self.alert_pids.iter().filter(full).count() as u64
    }
}

/// Helper process: one level of the chain; the last level connects.
pub fn chain(levels: u32, port: u16, count: u32, interval_us: u64) -> Result<u8> {
    println!("{}", std::process::id());
    if levels > 1 {
        let status = Command::new(crate::self_exe())
            .args([
                "__chain",
                &(levels - 1).to_string(),
                &port.to_string(),
                &count.to_string(),
                &interval_us.to_string(),
            ])
            .status()?;
        return Ok(crate::exit_code(status));
    }
    let (mut ok, mut failed) = (0, 0);
    let start = Instant::now();
    for i in 0..count {
        // Paced against the start, so a slow connect does not slow the rate.
        let due = start + Duration::from_micros(interval_us * u64::from(i));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    println!("done {ok} {failed}");
    Ok(0)
}

/// Starts the tree, runs `tracer kill-tree ROOT --kill`, and times it.
fn kill_tree(tracer: &Path, dir: &Path) -> Result<KillTree> {
    super::hidden::make_room(TREE_SIZE)?;
    let mut root = Proc::spawn(
        "process tree",
        Command::new(crate::self_exe())
            .arg("__tree")
            .args(TREE.map(|n| n.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )?;
    let out = line_reader(root.child.stdout.take().unwrap());
    let mut pids = Vec::with_capacity(TREE_SIZE);
    while pids.len() < TREE_SIZE {
        let (_, line) = out
            .recv_timeout(Duration::from_secs(30))
            .context("the process tree did not start")?;
        pids.push(line.trim().parse::<libc::pid_t>()?);
    }
    // Until kill-tree exits, note when the tree's group is empty, reaping its
    // members as they die (we are their subreaper).
    let pgid = root.pid();
    let out_file = dir.join("kill-tree.out");
    let start = Instant::now();
    let mut kill = Proc::spawn(
        "tracer kill-tree",
        Command::new(tracer)
            .args(["kill-tree", &pgid.to_string(), "--kill"])
            .stdin(Stdio::null())
            .stdout(File::create(&out_file)?)
            .stderr(File::create(out_file.with_extension("err"))?),
    )?;
    let (mut status, mut gone_after) = (None, None);
    while status.is_none() && start.elapsed() < Duration::from_secs(30) {
        // SAFETY: waitpid/kill on the tree's own process group.
        unsafe {
            while libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            if gone_after.is_none() && libc::kill(-pgid, 0) != 0 {
                gone_after = Some(start.elapsed().as_secs_f64());
            }
        }
        status = kill.child.try_wait()?;
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    drop(kill);
    if status.is_none_or(|s| !s.success()) {
        println!(
            "  tracer kill-tree: {status:?}: {}",
            tail(&out_file.with_extension("err"))
        );
    }
    // Killed processes are zombies until reaped: by us, their subreaper.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = pids.clone();
    loop {
        let _ = root.child.try_wait();
        // SAFETY: waitpid/kill on pids of the tree, reaped only by us.
        left.retain(|&p| unsafe {
            libc::waitpid(p, std::ptr::null_mut(), libc::WNOHANG) != p && libc::kill(p, 0) == 0
        });
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = left.len();
    for &p in &left {
        // SAFETY: as above; the rest goes with the group when `root` drops.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    drop(root);
    for &p in &left {
        unsafe { libc::waitpid(p, std::ptr::null_mut(), 0) };
    }
    Ok(KillTree {
        secs,
        gone_after,
        left: n,
    })
}

struct KillTree {
    /// Until `tracer kill-tree` exited.
    secs: f64,
    /// Until no process of the tree was left.
    gone_after: Option<f64>,
    left: usize,
}

/// Helper process: grows a tree with `fanouts[d]` children per process at
/// depth d; every process prints its pid, then sleeps.
pub fn tree(fanouts: &[usize]) -> Result<u8> {
    grow(fanouts)
}

fn grow(fanouts: &[usize]) -> ! {
    if let Some((&n, rest)) = fanouts.split_first() {
        for _ in 0..n {
            // SAFETY: single-threaded; the child carries on growing its subtree.
            if unsafe { libc::fork() } == 0 {
                grow(rest);
            }
        }
    }
    let line = format!("{}\n", std::process::id());
    // SAFETY: one write(2) under PIPE_BUF: atomic, nothing buffered to duplicate.
    unsafe {
        libc::write(1, line.as_ptr().cast(), line.len());
        loop {
            libc::pause();
        }
    }
}

/// Latencies (ms) of [`CONNECTS`] pipe wakeups of a helper process, one
/// every [`INTERVAL_US`].
fn wakeup_floor() -> Result<Vec<f64>> {
    use std::io::{BufRead, Write};
    let mut child = Command::new(crate::self_exe())
        .arg("__wakeups")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the wakeup helper")?;
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..CONNECTS {
        writeln!(stdin, "{}", boottime_ns())?;
        std::thread::sleep(Duration::from_micros(INTERVAL_US));
    }
    drop(stdin);
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let latencies = out
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|ns| ns / 1e6)
        .collect();
    child.wait()?;
    Ok(latencies)
}

/// The `__wakeups` helper: one line out per stamp in, written at the end.
pub fn wakeups() -> Result<u8> {
    use std::io::{BufRead, Write};
    super::reader_priority();
    let mut delays = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let arrived = boottime_ns();
        if let Ok(sent) = line?.trim().parse::<u64>() {
            delays.push(arrived.saturating_sub(sent));
        }
    }
    let mut out = std::io::stdout().lock();
    for d in delays {
        writeln!(out, "{d}")?;
    }
    Ok(0)
}
