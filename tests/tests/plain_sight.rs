//! Processes that hide from nothing but exploit what a tool does not
//! model (root): a miner whose main thread exited while its `xmrig` thread
//! runs on (ps: `<defunct>`), and a process with 3,000 threads of random
//! names and a 1.5 MB command line, which must leave every human line
//! readable and every JSON record complete.
//!
//! Run serially: `cargo test -p tracer-tests --test plain_sight -- --test-threads=1`.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{evidence, run, running_as_root, tracer, watch::Watch, Planted, Scratch};

const LIMIT: Duration = Duration::from_secs(90);
/// The bound on a human line (tracer's `output::bounded::LINE_MAX`).
const LINE_MAX: usize = 512;

/// Starts `program ARGS` and returns once it printed `ready`.
fn start_ready(program: &Path, args: &[String]) -> Planted {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fixture");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let planted = Planted::adopt(child.id());
    // Reaped by the test process at exit; killed by `planted` on drop.
    std::mem::forget(child);
    planted
}

fn finding_of(report: &Value, kind: &str, pid: u32) -> Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["process"]["pid"].as_u64() == Some(pid.into()))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} finding about {pid}: {report:#}"))
}

#[test]
fn a_zombie_leader_with_a_live_miner_thread_is_a_finding() {
    if !running_as_root("a_zombie_leader_with_a_live_miner_thread_is_a_finding") {
        return;
    }
    let dir = Scratch::under(Path::new("/dev/shm"), "zombie-leader");
    let exe = dir.copy_in(env!("CARGO_BIN_EXE_zombie_leader"), "kthreadd-helper");
    let watch = Watch::start(&["--no-default-iocs", "--comm", "no-such-comm-x"]);
    let miner = start_ready(&exe, &[]);
    let pid = miner.pid();
    assert!(
        tracer_tests::wait_until(Duration::from_secs(5), || {
            tracer_tests::stat_field(pid, 3).as_deref() == Some("Z")
        }),
        "the leader never became a zombie"
    );

    let out = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    let report = out.json();
    let f = finding_of(&report, "zombie-leader", pid);
    assert_eq!(f["severity"], "high", "{f}");
    assert_eq!(f["process"]["exe"], exe.to_str().unwrap(), "{f}");
    assert!(
        evidence(&f, "thread names").is_some_and(|t| t.contains("xmrig")),
        "{f}"
    );
    assert!(
        evidence(&f, "location").is_some_and(|l| l.contains("/dev/shm")),
        "{f}"
    );
    // The masquerade rules judge it by its live thread too.
    finding_of(&report, "miner-name", pid);

    // watch saw the leader exit and raised the same finding.
    let live = watch.wait_for("watch's zombie-leader finding", |v| {
        v["type"] == "finding"
            && v["kind"] == "zombie-leader"
            && v["process"]["pid"].as_u64() == Some(pid.into())
    });
    assert_eq!(live["event"], "exit", "{live}");
}

#[test]
fn thousands_of_threads_and_a_huge_command_line_keep_lines_short_and_json_whole() {
    if !running_as_root(
        "thousands_of_threads_and_a_huge_command_line_keep_lines_short_and_json_whole",
    ) {
        return;
    }
    let dir = Scratch::new("endless");
    let exe = dir.copy_in(env!("CARGO_BIN_EXE_many_threads"), "kworker");
    let chunk = "A".repeat(100_000);
    let mut args = vec!["3000".to_string()];
    args.extend(std::iter::repeat_n(chunk, 15));
    args.extend(["-o".into(), "stratum+tcp://pool.evil.test:3333".into()]);
    let cmdline_len: usize =
        exe.to_str().unwrap().len() + args.iter().map(String::len).sum::<usize>();
    let p = start_ready(&exe, &args);
    let pid = p.pid().to_string();

    for argv in [
        vec!["hidden"],
        vec!["kill-tree", pid.as_str()],
        vec!["net", "--pid", pid.as_str()],
    ] {
        let out = run(&mut tracer(&argv), LIMIT);
        let longest = out.stdout.lines().map(str::len).max().unwrap_or(0);
        assert!(
            longest <= LINE_MAX,
            "{argv:?}: a {longest}-byte line:\n{}",
            out.stdout
                .lines()
                .find(|l| l.len() > LINE_MAX)
                .unwrap_or_default()
        );
        if argv[0] != "net" {
            assert!(out.stdout.contains(&pid), "{argv:?}: {}", out.describe());
        }
    }
    let human = run(&mut tracer(&["hidden"]), LIMIT);
    assert!(human.stdout.contains("+2,992 more"), "{}", human.describe());
    assert!(
        human.stdout.contains("stratum+tcp://pool.evil.test:3333"),
        "the part around the sign is shown: {}",
        human.describe()
    );

    let report = run(&mut tracer(&["hidden", "--json"]), LIMIT).json();
    let f = finding_of(&report, "miner-arguments", p.pid());
    let process = &f["process"];
    let argv_len: usize = process["cmdline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().len())
        .sum();
    assert_eq!(
        argv_len, cmdline_len,
        "the JSON keeps the whole command line"
    );
    assert_eq!(process["threads"].as_array().unwrap().len(), 3000);
    assert!(
        process.get("cut").is_none(),
        "nothing was cut: {}",
        process["cut"]
    );
}
