//! Lineage for kill-tree: a running watch saw the forks that /proc no
//! longer shows (grandchildren reparented to init once their parent
//! exited), saves them in its lineage file, and `kill-tree` takes the
//! whole tree down with it, leaving an unrelated sibling in the same
//! session alone. The state directory is the test's own
//! (`TRACER_STATE_DIR`), removed on drop.
use std::{fs, process::Command, time::Duration};

use serde_json::Value;
use tracer_tests::{
    member_pids, run, running_as_root, stat_field, tracer, wait_until, watch::Watch, Planted,
    Scratch,
};

/// A process that is gone or a zombie (killed, not yet reaped by us).
fn dead(pid: u32) -> bool {
    stat_field(pid, 3).is_none_or(|state| state == "Z")
}

/// PIDs of live processes running `sleep ARG`, started by this test (the
/// arguments are its own), in a session of their own.
fn sleepers(arg: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline == format!("sleep\0{arg}\0").as_bytes()
            && stat_field(pid, 6).as_deref() == Some(&pid.to_string())
        {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// `kill-tree ARGS` with the state directory `state`, to completion.
fn kill_tree(args: &[&str], state: &std::path::Path) -> (i32, String, String) {
    let r = run(
        tracer(&[&["kill-tree"], args].concat())
            .env("TRACER_STATE_DIR", state)
            .env("TRACER_RESPAWN_CHECK_MS", "300"),
        Duration::from_secs(60),
    );
    (r.code, r.stdout, r.stderr)
}

/// The plan record of a `kill-tree --json` run (its first JSON value).
fn plan_of(stdout: &str) -> Value {
    let plan: Value = serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .next()
        .expect("a plan record")
        .expect("JSON");
    tracer_tests::schema::check(&plan);
    plan
}

#[test]
fn kill_tree_with_watch_running_takes_grandchildren_reparented_to_init() {
    if !running_as_root("kill_tree_with_watch_running_takes_grandchildren_reparented_to_init") {
        return;
    }
    let scratch = Scratch::under(&std::env::temp_dir(), "tracer-lineage");
    let state = scratch.path().join("state");
    let empty = scratch.path().join("empty");
    let state_env = state.to_str().unwrap();
    let (watch, _) = Watch::start_with(
        &["--exec-only", "--no-default-iocs"],
        &[("TRACER_STATE_DIR", state_env)],
    );

    // An unrelated process in the test's own session: must survive.
    let sibling = Planted::spawn(Command::new("sleep").arg("7203"));
    // The tree, in a process group of its own: the target shell starts a
    // middle shell that puts two sleepers in the background, each in a
    // session of its own (setsid), and exits, so the kernel reparents them
    // away from the tree and nothing in /proc ties them to it (orphans
    // left in the target's group are the tree's by /proc alone).
    let target = Planted::spawn_group(Command::new("sh").args([
        "-c",
        "sh -c 'setsid sleep 7201 >/dev/null 2>&1 & setsid sleep 7202 >/dev/null 2>&1 & exit 0'; exec sleep 7200",
    ]));
    let pgid = target.pid();
    let mut grandchildren = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            grandchildren = [sleepers("7201"), sleepers("7202")].concat();
            grandchildren.len() == 2
                && grandchildren
                    .iter()
                    .all(|g| stat_field(*g, 4).as_deref() != Some(&pgid.to_string()))
        }),
        "the two grandchildren, reparented: {grandchildren:?}"
    );
    let _cleanup: Vec<Planted> = grandchildren.iter().map(|&g| Planted::adopt(g)).collect();
    assert!(
        wait_until(Duration::from_secs(5), || fs::read_to_string(format!(
            "/proc/{pgid}/comm"
        ))
        .is_ok_and(|c| c == "sleep\n")),
        "the target never exec'd sleep"
    );
    let target_s = target.pid().to_string();

    // From /proc alone the grandchildren are not in the tree: that is what
    // the lineage file is for.
    let (code, stdout, stderr) = kill_tree(&[&target_s, "--json"], &empty);
    assert_eq!(code, 0, "{stderr}");
    let plan = plan_of(&stdout);
    assert_eq!(plan["lineage"]["source"], "proc", "{plan}");
    for g in &grandchildren {
        assert!(!member_pids(&plan).contains(&(*g as u64)), "{plan}");
    }

    // watch saves them within its save interval.
    let file = state.join("lineage.json");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let saved: Value = fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let pids: Vec<u64> = saved["entries"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|e| e["process"]["pid"].as_u64())
                        .collect()
                })
                .unwrap_or_default();
            grandchildren.iter().all(|g| pids.contains(&(*g as u64)))
        }),
        "watch never saved the grandchildren's lineage in {}",
        file.display()
    );
    {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&file).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0));
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
    }

    // The human plan says where the lineage came from.
    let (code, human, stderr) = kill_tree(&[&target_s], &state);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        human.contains("Lineage: /proc and the watch lineage file"),
        "{human}"
    );

    let (code, stdout, stderr) = kill_tree(&[&target_s, "--kill", "--json"], &state);
    let plan = plan_of(&stdout);
    assert_eq!(plan["lineage"]["source"], "watch", "{plan}");
    assert!(plan["lineage"]["relinked"].as_u64().unwrap() >= 2, "{plan}");
    let members = member_pids(&plan);
    for pid in grandchildren.iter().chain([&target.pid()]) {
        assert!(members.contains(&(*pid as u64)), "{pid} not in {plan}");
    }
    assert!(!members.contains(&(sibling.pid() as u64)), "{plan}");
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for pid in grandchildren.iter().chain([&target.pid()]) {
        assert!(
            wait_until(Duration::from_secs(2), || dead(*pid)),
            "{pid} survived kill-tree"
        );
    }
    assert!(!dead(sibling.pid()), "the unrelated sibling was killed");

    // watch removes its file when it stops.
    let (code, stderr) = watch.stop_collecting();
    assert_eq!(code, 0, "{stderr}");
    assert!(!file.exists(), "watch left {}", file.display());
}

/// CLOCK_BOOTTIME now, in ns.
fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn a_forged_lineage_link_to_an_older_process_is_refused_and_said() {
    use std::os::unix::fs::PermissionsExt;
    if !running_as_root("a_forged_lineage_link_to_an_older_process_is_refused_and_said") {
        return;
    }
    let innocent = Planted::spawn(Command::new("sleep").arg("611"));
    std::thread::sleep(Duration::from_millis(1500));
    let target = Planted::spawn_group(Command::new("sleep").arg("612"));
    let start = |pid: u32| -> u64 { stat_field(pid, 22).unwrap().parse().unwrap() };
    let me = std::process::id();
    let state = Scratch::new("forged-lineage");
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    // The innocent process, forged as the target's child.
    let forged = serde_json::json!({
        "format": 1,
        "writer": {"pid": me, "start_ticks": start(me)},
        "boot_id": boot_id.trim(),
        "written_boottime_ns": boottime_ns(),
        "truncated": false,
        "entries": [{
            "process": {
                "pid": innocent.pid(), "ppid": target.pid(), "uid": 0, "comm": "sleep",
                "exe": "/usr/bin/sleep", "cmdline": ["sleep", "611"],
                "start_ticks": start(innocent.pid()), "kernel_thread": false
            },
            "parent": {"pid": target.pid(), "start_ticks": start(target.pid())}
        }]
    });
    let file = state.path().join("lineage.json");
    fs::write(&file, serde_json::to_vec(&forged).unwrap()).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();

    let (code, stdout, stderr) = kill_tree(&[&target.pid().to_string(), "--json"], state.path());
    assert_eq!(code, 0, "{stderr}");
    let plan = plan_of(&stdout);
    let members = member_pids(&plan);
    assert!(
        !members.contains(&(innocent.pid() as u64)),
        "the forged child is planned: {members:?}"
    );
    let refused = plan["lineage"]["refused"].to_string();
    assert!(
        refused.contains(&format!(
            "pid {} as a child of pid {}",
            innocent.pid(),
            target.pid()
        )),
        "the refusal is not said: {}",
        plan["lineage"]
    );
    let (_, human, _) = kill_tree(&[&target.pid().to_string()], state.path());
    assert!(human.contains("refused a lineage link"), "{human}");
}
