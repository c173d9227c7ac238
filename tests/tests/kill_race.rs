//! The kill race, for real (root): a spawner whose children each leave an
//! orphaned grandchild behind every 30 ms, killed with `kill-tree --kill`
//! twenty times in a row. After each kill no process of the spawner's
//! (they carry a marker in their argv[0]) may still run, and an innocent
//! process in the same process group, whose parent is alive, must.
//!
//! Without a running watch, the grandchildren orphaned before kill-tree
//! started are recognised as the tree's orphans (same process group,
//! started after the target, reparented to init), and everything forked
//! once kill-tree runs is caught in the kernel by its fork capture.
//!
//! Run serially (`--test-threads=1`, as `cargo xtask test` does): the two
//! tests' spawners run the same program, and each kill-tree's respawn check
//! would rightly see the other's as its tree coming back.
use std::{
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Duration,
};

use tracer_tests::{run, running_as_root, tracer, Planted, Scratch};

const ROUNDS: usize = 20;

/// PIDs whose argv[0] is `marker`.
fn marked(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).next() == Some(marker.as_bytes()))
        })
        .collect()
}

#[test]
fn nothing_forked_by_the_tree_outlives_the_kill_and_the_sibling_lives() {
    if !running_as_root("nothing_forked_by_the_tree_outlives_the_kill_and_the_sibling_lives") {
        return;
    }
    let scratch = Scratch::new("kill-race");
    races(&scratch, None);
}

#[test]
fn with_watch_running_nothing_outlives_the_kill_either() {
    if !running_as_root("with_watch_running_nothing_outlives_the_kill_either") {
        return;
    }
    let scratch = Scratch::new("kill-race-watch");
    let state = scratch.path().join("state");
    let state = state.to_str().unwrap();
    let (watch, _) = tracer_tests::watch::Watch::start_with(
        &["--exec-only", "--no-default-iocs"],
        &[("TRACER_STATE_DIR", state)],
    );
    races(&scratch, Some(state));
    let (code, stderr) = watch.stop_collecting();
    assert_eq!(code, 0, "{stderr}");
}

/// ROUNDS kills of a fresh spawner each; with `state`, kill-tree asks the
/// watch that saves its lineage there.
fn races(scratch: &Scratch, state: Option<&str>) {
    for round in 0..ROUNDS {
        let kind = if state.is_some() { "watch" } else { "proc" };
        let marker = format!("tracer-race-{}-{kind}-{round}", std::process::id());
        let spawner = scratch.write(
            &format!("spawner-{round}.sh"),
            &format!(
                "#!/bin/bash\nwhile :; do ( exec -a {marker} sleep 600 & ); sleep 0.03; done\n"
            ),
            0o755,
        );
        // Its own process group, so the orphans share it.
        let tree = Planted::spawn_group(Command::new(&spawner).stdin(Stdio::null()));
        let target = tree.pid();
        let mut sibling_cmd = Command::new("sleep");
        sibling_cmd.arg("600").process_group(target as i32);
        let sibling = Planted::spawn(&mut sibling_cmd);
        // Let it leave a few orphans behind first.
        assert!(
            tracer_tests::wait_until(Duration::from_secs(10), || marked(&marker).len() >= 5),
            "round {round}: the spawner left no orphans"
        );
        let mut kill = tracer(&["kill-tree", &target.to_string(), "--kill"]);
        kill.env("TRACER_RESPAWN_CHECK_MS", "300");
        if let Some(state) = state {
            kill.env("TRACER_STATE_DIR", state);
        }
        let out = run(&mut kill, Duration::from_secs(120));
        if state.is_some() {
            assert!(
                out.stdout.contains("saved by watch on request"),
                "round {round}: kill-tree did not get watch's lineage:\n{}",
                out.stdout
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        let escaped = marked(&marker);
        assert!(
            escaped.is_empty(),
            "round {round}: {} marked processes still run after the kill ({escaped:?}); tracer said:\n{}\n{}",
            escaped.len(),
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains("fork capture: in the kernel"),
            "round {round}: the fork capture did not run:\n{}",
            out.stdout
        );
        assert!(
            std::path::Path::new(&format!("/proc/{}", sibling.pid())).exists(),
            "round {round}: the sibling in the same process group was killed:\n{}",
            out.stdout
        );
        // 1: the sibling, a living relative, is reported as such.
        assert!(
            out.code == 0 || out.code == 1,
            "round {round}: exit {}:\n{}\n{}",
            out.code,
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains("nothing from the set is running"),
            "round {round}:\n{}",
            out.stdout
        );
        drop(sibling);
        drop(tree);
    }
}
