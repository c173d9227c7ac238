//! Starting from what the alert names, a file or an address (root):
//! `kill-tree PATH`, `kill-tree --remote ADDR`, and the same selectors in
//! `hidden` and `net`, against real processes, a real bind mount over
//! /proc/PID (in a private mount namespace) and real loopback sockets.
//!
//! Run serially: `cargo test -p tracer-tests --test selectors -- --test-threads=1`.
use std::{
    collections::BTreeSet, fs, net::TcpListener, path::Path, process::Command, time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    exit::{NO_MATCH, REFUSED},
    run, running_as_root, stat_field, tracer, tracer_in_private_mounts, wait_until, Planted,
    Scratch,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The PIDs a plan's selector matched, and each one's reasons.
fn matched(plan: &Value) -> Vec<(u32, String)> {
    let map = plan["selection"]["matched"]
        .as_object()
        .unwrap_or_else(|| panic!("no selection in the plan: {plan:#}"));
    map.iter()
        .map(|(pid, why)| {
            let why: Vec<&str> = why
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            (pid.parse().unwrap(), why.join(", "))
        })
        .collect()
}

fn member_pids(plan: &Value) -> BTreeSet<u32> {
    plan["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["process"]["pid"].as_u64().unwrap() as u32)
        .collect()
}

fn reason_of(plan: &Value, pid: u32) -> String {
    plan["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["process"]["pid"].as_u64() == Some(pid as u64))
        .map(|m| m["reason"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{pid} is not a member: {plan:#}"))
}

fn gone(pid: u32) -> bool {
    // Our own children stay as zombies until reaped: dead all the same.
    stat_field(pid, 3).is_none_or(|state| state == "Z")
}

/// The PID of the only child of `parent`.
fn only_child(parent: u32) -> u32 {
    let mut child = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            child = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
            child.is_some()
        }),
        "{parent} started no child"
    );
    child.unwrap()
}

/// A shell copied to /tmp under a miner's name, run three times (one of
/// them by another copy), and held open by a fourth process that does not
/// run it; then deleted. `kill-tree PATH` (the path as it was) plans all
/// four, each with why, and `--kill` leaves none running.
#[test]
fn kill_tree_path_finds_every_user_of_a_deleted_program() {
    if !running_as_root("kill_tree_path_finds_every_user_of_a_deleted_program") {
        return;
    }
    let dir = Scratch::under(Path::new("/tmp"), "tracer-sel");
    let miner = dir.copy_in("/bin/dash", "dhpcd");
    let loop_script = "while :; do sleep 1; done";
    let alone = Planted::spawn_group(Command::new(&miner).args(["-c", loop_script]));
    let launcher = Planted::spawn_group(
        Command::new(&miner)
            .current_dir(dir.path())
            .args(["-c", &format!("./dhpcd -c '{loop_script}'; :")]),
    );
    let child = only_child(launcher.pid());
    assert!(wait_until(Duration::from_secs(5), || {
        fs::read_link(format!("/proc/{child}/exe")).is_ok_and(|e| e == miner)
    }));
    let holder = Planted::spawn_group(Command::new("sh").args([
        "-c",
        &format!("exec 7<'{}'; exec sleep 300", miner.display()),
    ]));
    assert!(wait_until(Duration::from_secs(5), || {
        fs::read_link(format!("/proc/{}/fd/7", holder.pid())).is_ok()
    }));
    fs::remove_file(&miner).unwrap();
    let path = miner.to_str().unwrap();
    let fake_root = Scratch::new("sel-root");
    let root_env = (
        "TRACER_PERSISTENCE_ROOT",
        fake_root.path().to_str().unwrap(),
    );

    let out = run(
        tracer(&["kill-tree", path, "--json"]).env(root_env.0, root_env.1),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    let plan = out.json();
    let found: Vec<u32> = matched(&plan).iter().map(|(p, _)| *p).collect();
    for pid in [alone.pid(), launcher.pid(), child, holder.pid()] {
        assert!(found.contains(&pid), "{pid} not matched: {plan:#}");
        assert!(
            member_pids(&plan).contains(&pid),
            "{pid} not a member: {plan:#}"
        );
    }
    for pid in [alone.pid(), launcher.pid(), child] {
        assert!(reason_of(&plan, pid).starts_with("runs it"), "{plan:#}");
    }
    assert!(
        reason_of(&plan, holder.pid()).starts_with("holds it open as fd 7"),
        "{plan:#}"
    );
    assert!(
        plan["command"].as_str().unwrap().contains(path),
        "the plan's command names the file: {plan:#}"
    );

    let human = run(
        tracer(&["kill-tree", path]).env(root_env.0, root_env.1),
        LIMIT,
    );
    let text = human.stdout.clone();
    assert!(
        text.contains(&format!(
            "kill-tree plan for file {path}: 4 matching processes"
        )),
        "{text}"
    );

    let killed = run(
        tracer(&["kill-tree", path, "--kill"])
            .env(root_env.0, root_env.1)
            .env("TRACER_RESPAWN_CHECK_MS", "500"),
        LIMIT,
    );
    assert_eq!(killed.code, 0, "{}", killed.describe());
    for pid in [alone.pid(), launcher.pid(), child, holder.pid()] {
        assert!(
            wait_until(Duration::from_secs(5), || gone(pid)),
            "{pid} still runs after --kill"
        );
    }
}

/// A process that runs the file but is hidden from /proc by a bind mount
/// (made in a private mount namespace, where tracer runs) is still found,
/// by `kill-tree PATH` and by `hidden --file`.
#[test]
fn a_user_hidden_from_proc_is_still_found() {
    if !running_as_root("a_user_hidden_from_proc_is_still_found") {
        return;
    }
    let dir = Scratch::under(Path::new("/tmp"), "tracer-sel-hide");
    let miner = dir.copy_in("/bin/sleep", "kdevtmpfsi");
    let hidden = Planted::spawn(Command::new(&miner).arg("300"));
    let empty = Scratch::new("sel-empty");
    let setup = format!(
        "mount --bind '{}' /proc/{}",
        empty.path().display(),
        hidden.pid()
    );
    let path = miner.to_str().unwrap();
    let out = run(
        &mut tracer_in_private_mounts(&setup, &["kill-tree", path, "--json"]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    let plan = out.json();
    let why = matched(&plan)
        .into_iter()
        .find(|(p, _)| *p == hidden.pid())
        .unwrap_or_else(|| panic!("hidden {} not found: {plan:#}", hidden.pid()));
    assert!(why.1.contains("runs it"), "{plan:#}");

    let out = run(
        &mut tracer_in_private_mounts(
            &setup,
            &["hidden", "--file", path, "--json", "--no-kernel-checks"],
        ),
        LIMIT,
    );
    let report = out.json();
    assert!(
        report["selection"]["matched"]
            .get(hidden.pid().to_string())
            .is_some(),
        "{}",
        out.describe()
    );
    // Every finding is about the selected process, and the bind mount is
    // among them.
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "{}", out.describe());
    for f in findings {
        assert_eq!(
            f["process"]["pid"].as_u64(),
            Some(hidden.pid() as u64),
            "a finding about another process: {f:#}"
        );
    }
}

/// `--remote` with two processes connected to a loopback listener and one
/// that is not: the two, in kill-tree, net and hidden.
#[test]
fn remote_selects_the_processes_connected_there() {
    if !running_as_root("remote_selects_the_processes_connected_there") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec sleep 300");
    let a = Planted::spawn(Command::new("bash").args(["-c", &connect]));
    let b = Planted::spawn(Command::new("bash").args(["-c", &connect]));
    let idle = Planted::spawn(Command::new("sleep").arg("300"));
    for p in [&a, &b] {
        let pid = p.pid();
        assert!(wait_until(Duration::from_secs(5), || {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("sleep"))
                && fs::read_link(format!("/proc/{pid}/fd/3")).is_ok()
        }));
    }
    let remote = format!("127.0.0.1:{port}");
    let out = run(
        tracer(&["kill-tree", "--remote", &remote, "--json"])
            .env("TRACER_PERSISTENCE_ROOT", Scratch::new("sel-r").path()),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    let plan = out.json();
    let found: BTreeSet<u32> = matched(&plan).iter().map(|(p, _)| *p).collect();
    assert_eq!(found, BTreeSet::from([a.pid(), b.pid()]), "{plan:#}");
    assert!(!member_pids(&plan).contains(&idle.pid()));
    assert!(
        reason_of(&plan, a.pid()).starts_with(&format!("connected to {remote} (tcp ESTAB, fd 3)")),
        "{plan:#}"
    );

    let net = run(
        &mut tracer(&["net", "--remote", &remote, "--json", "--no-default-iocs"]),
        LIMIT,
    );
    let holders: BTreeSet<u64> = net.json()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["owners"].as_array().cloned().unwrap_or_default())
        .filter_map(|o| o["pid"].as_u64())
        .collect();
    assert_eq!(
        holders,
        BTreeSet::from([a.pid() as u64, b.pid() as u64]),
        "{}",
        net.describe()
    );
    drop(listener);
}

/// An `LD_PRELOAD` library is found in the one process that maps it.
#[test]
fn kill_tree_finds_a_preloaded_library() {
    if !running_as_root("kill_tree_finds_a_preloaded_library") {
        return;
    }
    let dir = Scratch::under(Path::new("/tmp"), "tracer-sel-lib");
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libm.so.6");
    let lib = dir.copy_in(libm, "libsystemd-helper.so");
    let injected = Planted::spawn(Command::new("sleep").arg("300").env("LD_PRELOAD", &lib));
    let clean = Planted::spawn(Command::new("sleep").arg("300"));
    let pid = injected.pid();
    assert!(wait_until(Duration::from_secs(5), || {
        fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|m| m.contains("libsystemd-helper.so"))
    }));
    let out = run(
        tracer(&["kill-tree", lib.to_str().unwrap(), "--json"])
            .env("TRACER_PERSISTENCE_ROOT", Scratch::new("sel-l").path()),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    let plan = out.json();
    assert_eq!(matched(&plan), [(pid, "maps it".to_string())], "{plan:#}");
    assert!(!member_pids(&plan).contains(&clean.pid()));
}

/// A selector that matches nothing says so in one line, exit 7; one that
/// matches only tracer's own chain is refused, exit 5.
#[test]
fn selectors_that_match_nothing_or_only_tracers_chain() {
    if !running_as_root("selectors_that_match_nothing_or_only_tracers_chain") {
        return;
    }
    let nothing = "/tmp/tracer-no-such-file-anywhere";
    for args in [
        vec!["kill-tree", nothing],
        vec!["hidden", "--file", nothing, "--no-kernel-checks"],
        vec!["net", "--file", nothing, "--no-default-iocs"],
        vec!["kill-tree", "--remote", "127.0.0.9:9"],
        vec!["net", "--remote", "127.0.0.9:9", "--no-default-iocs"],
    ] {
        let out = run(&mut tracer(&args), LIMIT);
        assert_eq!(out.code, NO_MATCH, "{args:?}: {}", out.describe());
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.contains("note:"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {}", out.describe());
        assert!(
            lines[0].contains("no process matches") || lines[0].contains("no connection matches")
        );
    }
    // The test binary runs this test, an ancestor of the tracer it starts:
    // refused, like `kill-tree PID` of an ancestor.
    let me = std::env::current_exe().unwrap();
    let out = run(&mut tracer(&["kill-tree", me.to_str().unwrap()]), LIMIT);
    assert_eq!(out.code, REFUSED, "{}", out.describe());
    assert!(
        out.stderr.contains(&format!(
            "{}: PID {} (",
            std::process::id(),
            std::process::id()
        )) && out.stderr.contains("is an ancestor of tracer itself"),
        "{}",
        out.describe()
    );
}

/// A beacon that connects and exits at once, relaunched by a shell loop:
/// with watch running, `kill-tree --remote` finds the loop through the
/// connects watch saw, though no process holds a connection there.
#[test]
fn remote_finds_the_launcher_of_an_exited_beacon_through_watch() {
    if !running_as_root("remote_finds_the_launcher_of_an_exited_beacon_through_watch") {
        return;
    }
    let scratch = Scratch::under(Path::new("/tmp"), "tracer-sel-beacon");
    let state = scratch.path().join("state");
    let state_env = state.to_str().unwrap();
    let (watch, _) = tracer_tests::watch::Watch::start_with(
        &["--connect-only", "--no-default-iocs"],
        &[("TRACER_STATE_DIR", state_env)],
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    scratch.copy_in("/bin/bash", "beacon");
    let script =
        format!("while true; do ./beacon -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'; sleep 0.5; done");
    let looper = Planted::spawn_group(
        Command::new("sh")
            .current_dir(scratch.path())
            .args(["-c", &script]),
    );
    let remote = format!("127.0.0.1:{port}");
    // The first connect reached watch's stream (so its table has it).
    tracer_tests::watch::wait_for(&watch, "the beacon's connect", |v| {
        v["type"] == "connect" && v["dport"].as_u64() == Some(port as u64)
    });
    let out = run(
        tracer(&["kill-tree", "--remote", &remote, "--json"])
            .env("TRACER_STATE_DIR", state_env)
            .env("TRACER_PERSISTENCE_ROOT", scratch.path()),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    let plan = out.json();
    let why = matched(&plan)
        .into_iter()
        .find(|(p, _)| *p == looper.pid())
        .unwrap_or_else(|| panic!("the loop {} is not matched: {plan:#}", looper.pid()))
        .1;
    assert!(
        why.contains("launched") && why.contains(&format!("connected to {remote}")),
        "{why}"
    );
    assert!(why.contains("seen by watch"), "{why}");
    assert!(member_pids(&plan).contains(&looper.pid()));
    drop(looper);
    drop(watch);
}
