//! `tracer watch` against the real kernel: exec and connect events with
//! their ancestry, clean detach, and the not-root error.
use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    pids_of, tracer_bin, wait_until,
    watch::{wait_for, Watch, LINE_WAIT},
    Planted, Scratch,
};

#[test]
fn exec_shows_exact_argv_pid_and_parent() {
    let watch = Watch::start(&["--exec-only"]);
    let marker = format!("tracer-exec-{}", std::process::id());
    let mut child = Command::new("/bin/echo")
        .args([marker.as_str(), "a", "b c"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child_pid = child.id() as u64;
    child.wait().unwrap();

    let ev = wait_for(&watch, "the echo exec", |v| {
        v["type"] == "exec" && v["argv"].get(1).and_then(Value::as_str) == Some(&marker)
    });
    assert_eq!(
        ev["argv"],
        serde_json::json!(["/bin/echo", marker, "a", "b c"])
    );
    assert_eq!(ev["filename"], "/bin/echo");
    assert_eq!(ev["pid"].as_u64(), Some(child_pid));
    assert_eq!(ev["ppid"].as_u64(), Some(std::process::id() as u64));
    assert_eq!(ev["uid"].as_u64(), Some(0));
    let chain = pids_of(&ev["ancestry"]);
    assert_eq!(chain.first(), Some(&(std::process::id() as u64)));
    assert_eq!(chain.last(), Some(&1), "ancestry reaches PID 1: {chain:?}");
}

#[test]
fn connect_is_attributed_through_a_parent_that_already_exited() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let watch = Watch::start(&["--connect-only"]);

    // The outer shell starts a background shell and exits at once; the
    // background one connects half a second later, orphaned.
    let script =
        format!("sh -c 'sleep 0.5; exec bash -c \"exec 3<>/dev/tcp/127.0.0.1/{port}\"' & exit 0");
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success());

    let ev = wait_for(&watch, "the loopback connect", |v| {
        v["type"] == "connect" && v["dport"].as_u64() == Some(port as u64)
    });
    assert_eq!(ev["daddr"], "127.0.0.1");
    assert_eq!(ev["saddr"], "127.0.0.1");
    assert_eq!(ev["family"], "ipv4");
    assert_eq!(ev["comm"], "bash");
    let ancestry = ev["ancestry"].as_array().unwrap();
    let me = std::process::id() as u64;
    // bash (the connector) < sh -c '...' (exited) < this test process < ... < 1
    let outer = &ancestry[0];
    assert_eq!(
        outer["comm"], "sh",
        "nearest ancestor is the outer shell: {ancestry:?}"
    );
    assert_eq!(
        outer["exited"], true,
        "the outer shell exited before the connect"
    );
    assert_eq!(outer["ppid"].as_u64(), Some(me));
    assert_eq!(ancestry[1]["pid"].as_u64(), Some(me));
    assert_eq!(ancestry.last().unwrap()["pid"].as_u64(), Some(1));
}

#[test]
fn ipv6_connect_reports_v6_addresses() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let watch = Watch::start(&["--connect-only"]);
    let status = Command::new("bash")
        .args(["-c", &format!("exec 3<>/dev/tcp/::1/{port}")])
        .status()
        .unwrap();
    assert!(status.success());
    let ev = wait_for(&watch, "the ::1 connect", |v| {
        v["type"] == "connect" && v["dport"].as_u64() == Some(port as u64)
    });
    assert_eq!(
        (ev["family"].as_str(), ev["daddr"].as_str()),
        (Some("ipv6"), Some("::1"))
    );
}

/// IDs of the BPF programs `pid` holds (program and link descriptors name
/// them in /proc/PID/fdinfo): other tracers may run on the host at the
/// same time.
fn programs_held_by(pid: u32) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether a program with this ID is still loaded.
fn program_loaded(id: u64) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn stopping_watch_detaches_everything_and_reports_losses() {
    let watch = Watch::start(&[]);
    let held = programs_held_by(watch.child.id());
    assert!(
        held.len() >= 3,
        "while watching, the programs are loaded: {held:?}"
    );
    // At least one event to count.
    let mut t = Command::new("true").spawn().unwrap();
    let pid = t.id();
    t.wait().unwrap();
    wait_for(&watch, "the exec of true", |v| {
        v["type"] == "exec" && v["pid"].as_u64() == Some(pid as u64)
    });
    let (status, summary) = watch.stop();
    assert!(status.success(), "watch exits 0 on SIGINT");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["events_lost"].as_u64(), Some(0));
    assert!(summary["events_seen"].as_u64().unwrap() > 0);
    assert_programs_unloaded(&held);
}

/// The kernel frees a program after its last reference closes, through RCU,
/// so give it a moment before calling a program left behind.
fn assert_programs_unloaded(held: &[u64]) {
    let gone = wait_until(Duration::from_secs(3), || {
        !held.iter().any(|&id| program_loaded(id))
    });
    let left: Vec<&u64> = held.iter().filter(|&&id| program_loaded(id)).collect();
    assert!(gone, "programs still loaded after exit: {left:?}");
}

#[test]
fn sigterm_also_detaches_cleanly() {
    let watch = Watch::start(&[]);
    let held = programs_held_by(watch.child.id());
    assert!(!held.is_empty(), "while watching, the programs are loaded");
    let (status, summary) = watch.stop_with(libc::SIGTERM);
    assert!(status.success());
    assert_eq!(summary["type"], "summary");
    assert_programs_unloaded(&held);
}

#[test]
fn not_root_gets_one_line_and_exit_code_3() {
    let out = tracer_tests::as_nobody(Command::new(tracer_bin()).arg("watch"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("sudo tracer watch"), "{err}");
}

#[test]
fn unknown_flag_prints_usage() {
    let out = Command::new(tracer_bin())
        .args(["watch", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // One line: what was wrong and where to look, not clap's usage block.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("'--no-such-flag'") && stderr.contains("tracer --help"),
        "{stderr}"
    );
}

#[test]
fn human_output_names_the_hooks_and_the_chain() {
    let watch = Watch::spawn(&["--exec-only"]);
    let first = watch.next_line("the start line");
    // Every human line starts with its time (RFC 3339 UTC).
    let (stamp, rest) = first.split_once(' ').unwrap();
    assert!(
        stamp.ends_with('Z') && rest.starts_with("tracer: watching"),
        "{first}"
    );
    let hooks: Vec<String> = (0..4).map(|_| watch.next_line("a hook line")).collect();
    assert!(hooks.iter().any(
        |h| h.contains("connect") && h.contains("inet_sock_set_state")
            || h.contains("fentry/tcp_connect")
    ));
    let marker = format!("tracer-human-{}", std::process::id());
    Command::new("/bin/echo")
        .arg(&marker)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let exec_line = loop {
        let line = watch.next_line("the echo exec line");
        if line.contains(&marker) {
            break line;
        }
    };
    assert!(
        exec_line.split_once(' ').unwrap().1.starts_with("EXEC"),
        "{exec_line}"
    );
    let chain = watch.next_line("the chain line");
    assert!(
        chain.contains(&format!("({})", std::process::id())),
        "{chain}"
    );
    assert!(watch.interrupt().success());
}

#[test]
fn pool_connect_from_a_watchdog_loop_raises_an_alert_with_chain_and_plan() {
    // Bound so that the miner's connect succeeds (the kernel completes the
    // handshake from the backlog; nothing needs to accept it).
    let _pool = TcpListener::bind("127.0.0.2:3333").expect("fake pool on 127.0.0.2:3333");
    let dir = Scratch::under(&std::env::temp_dir(), "tracer-alert");
    let ioc = dir.write("pool.txt", "# fake pool\n127.0.0.2:3333\n", 0o644);
    // The "miner": connects to the pool, then lingers like a miner would.
    let miner = dir.write(
        "miner",
        "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.2/3333\nsleep 30\n",
        0o755,
    );

    let watch = Watch::start(&["--connect-only", "--ioc", ioc.to_str().unwrap()]);
    let loop_script = format!("while true; do {}; sleep 0.2; done", miner.display());
    // Killed with its whole process group when the test ends, pass or fail.
    let watchdog = Planted::spawn_group(Command::new("sh").args(["-c", &loop_script]));
    let watchdog_pid = u64::from(watchdog.pid());

    let alert = wait_for(&watch, "the pool alert", |v| v["type"] == "alert");

    assert_eq!(alert["indicator"], "127.0.0.2:3333");
    // An address match (not a bare port), from a program in /tmp: serious.
    assert!(
        ["high", "critical"].contains(&alert["severity"].as_str().unwrap()),
        "{alert}"
    );
    assert!(
        alert["indicator_source"]
            .as_str()
            .unwrap()
            .contains("pool.txt:2"),
        "{alert}"
    );
    let connect = &alert["connect"];
    assert_eq!(
        (connect["daddr"].as_str(), connect["dport"].as_u64()),
        (Some("127.0.0.2"), Some(3333))
    );
    let chain = pids_of(&connect["ancestry"]);
    assert_eq!(
        chain.first(),
        Some(&watchdog_pid),
        "the loop is the parent: {chain:?}"
    );
    assert_eq!(chain.get(1), Some(&(std::process::id() as u64)));
    assert_eq!(chain.last(), Some(&1), "full chain to PID 1: {chain:?}");
    for ancestor in connect["ancestry"].as_array().unwrap() {
        for field in ["user", "comm", "cmdline", "start_ticks"] {
            assert!(!ancestor[field].is_null(), "{field} missing in {ancestor}");
        }
    }
    // The proposed plan stops the miner and the loop that relaunches it.
    let plan = &alert["kill_tree"];
    let pids: Vec<u64> = plan["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(pids.contains(&connect["pid"].as_u64().unwrap()), "{plan}");
    assert!(pids.contains(&watchdog_pid), "{plan}");
    assert!(!pids.contains(&(std::process::id() as u64)), "{plan}");
    assert!(plan["command"].as_str().unwrap().contains("kill-tree"));
}

#[test]
fn connection_open_before_start_alerts_at_once_and_net_shows_the_same_owner_and_chain() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = Scratch::under(&std::env::temp_dir(), "tracer-open-conn");
    let ioc = dir.write("pool.txt", &format!("127.0.0.1:{port}\n"), 0o644);
    // sh (the launcher, kept alive) < bash, which connects and keeps the
    // connection open; its sleep does not inherit it.
    let script = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 60 3>&-'; true");
    let launcher = Planted::spawn_group(Command::new("sh").args(["-c", &script]));
    listener.set_nonblocking(true).unwrap();
    let mut accepted = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            accepted = listener.accept().ok();
            accepted.is_some()
        }),
        "the planted connection never arrived"
    );
    let holder: u64 =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", launcher.pid()))
            .unwrap()
            .split_whitespace()
            .next()
            .expect("the launcher's bash")
            .parse()
            .unwrap();

    let watch = Watch::spawn(&[
        "--json",
        "--no-default-iocs",
        "--ioc",
        ioc.to_str().unwrap(),
    ]);
    let start = wait_for(&watch, "the start line", |v| v["type"] == "start");
    assert!(start["connections"].as_u64().unwrap() >= 2, "{start}");
    // Nothing connects after start: this alert can only come from the
    // start-up snapshot.
    let alert = wait_for(&watch, "the alert for the open connection", |v| {
        v["type"] == "alert"
    });
    assert_eq!(alert["indicator"], format!("127.0.0.1:{port}"));
    let connect = &alert["connect"];
    assert_eq!(connect["established_before_start"], true, "{alert}");
    assert_eq!(connect["pid"].as_u64(), Some(holder), "{alert}");
    assert_eq!(connect["comm"], "bash");
    assert_eq!(connect["dport"].as_u64(), Some(port as u64));
    let chain = pids_of(&connect["ancestry"]);
    assert_eq!(chain.first(), Some(&u64::from(launcher.pid())), "{chain:?}");
    assert_eq!(chain.get(1), Some(&(std::process::id() as u64)));
    assert_eq!(chain.last(), Some(&1), "full chain to PID 1: {chain:?}");
    let plan_pids = alert["kill_tree"]["pids"].as_array().unwrap();
    assert!(
        plan_pids.iter().any(|p| p.as_u64() == Some(holder)),
        "{alert}"
    );
    drop(watch);

    // `tracer net` lists the same connection, first (it matches), with the
    // same owner and chain.
    let out = tracer_tests::run(
        Command::new(tracer_bin()).args([
            "net",
            "--json",
            "--no-default-iocs",
            "--ioc",
            ioc.to_str().unwrap(),
        ]),
        LINE_WAIT,
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    let report = out.json();
    let first = &report["connections"][0];
    assert_eq!(first["remote"], format!("127.0.0.1:{port}"), "{report:#}");
    assert_eq!(first["indicator"]["indicator"], format!("127.0.0.1:{port}"));
    let owner = &first["owners"][0];
    assert_eq!(owner["pid"].as_u64(), Some(holder));
    assert_eq!(owner["fd"].as_u64(), Some(3));
    assert_eq!(pids_of(&owner["ancestry"]), chain);
}

/// What `chrt -p` says of one thread's policy and priority.
fn policy_of(tid: u32) -> String {
    let out = Command::new("chrt")
        .args(["-p", &tid.to_string()])
        .output()
        .expect("run chrt");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_event_reader_runs_real_time_at_the_lowest_priority() {
    let (watch, start) = Watch::start_with(&["--no-default-iocs"], &[]);
    assert!(
        start["scheduling"]
            .as_str()
            .is_some_and(|s| s.starts_with("SCHED_FIFO 1")),
        "{start}"
    );
    // What `chrt -p` shows a responder; children start at normal priority.
    let reader = policy_of(watch.child.id());
    assert!(
        reader.contains("SCHED_FIFO|SCHED_RESET_ON_FORK") && reader.contains("priority: 1"),
        "{reader}"
    );
    watch.stop();
}

#[test]
fn without_cap_sys_nice_the_start_record_says_the_reader_runs_at_normal_priority() {
    // capsh drops the capability from the bounding set and execs tracer;
    // its rlimits allow neither nice -10 nor real time.
    let script = format!(
        "exec {} watch --json --no-default-iocs",
        tracer_bin().display()
    );
    let watch =
        Watch::run(Command::new("capsh").args(["--drop=cap_sys_nice", "--", "-c", &script]));
    let start = wait_for(&watch, "the start record", |v| v["type"] == "start");
    let said = start["scheduling"].as_str().unwrap_or_default();
    assert!(
        said.starts_with("normal priority") && said.contains("refused"),
        "{start}"
    );
    watch.stop();
}
