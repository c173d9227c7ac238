//! The README's incident walk-through, run for real (root): a dropped
//! "miner" relaunched by a shell loop, started at boot by a cron entry (in
//! a fake root), connected to its "pool" on loopback port 3333. Every
//! command between the README's `<!-- walkthrough -->` markers is run, and
//! every output line the README shows must appear, in order, in what the
//! command prints now (PIDs and other numbers compared as numbers, runs of
//! spaces as one; `…` marks a cut). The test fails when the output drifts
//! from the page.
//!
//! Run serially: `cargo test -p tracer-tests --test readme -- --test-threads=1`.
use std::{fs, io::Read, net::TcpListener, path::Path, process::Command, time::Duration};

use tracer_tests::{run, running_as_root, tracer_bin, wait_until, workspace_root, Scratch};

/// The directory the README drops the miner in.
const README_DIR: &str = "/var/tmp/.x";

/// (command, output lines) of each `$ ` line in the walk-through block.
fn walkthrough() -> Vec<(String, Vec<String>)> {
    let readme = fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("walkthrough end marker");
    let block = &readme[start..end];
    let body = block
        .split_once("```console\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(body, _)| body)
        .expect("a console block in the walk-through");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in body.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
            None => steps
                .last_mut()
                .expect("output before the first command")
                .1
                .push(line.to_string()),
        }
    }
    steps
}

/// Numbers as `#`, runs of blanks as one space, no leading or trailing
/// blanks: PIDs, ports and timings differ between runs, words must not.
fn normalize(line: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in line.trim().chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
            continue;
        }
        in_number = false;
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The README's lines (cuts left out) that are not found, in order, in
/// `actual`.
fn drifted(expected: &[String], actual: &str) -> Vec<String> {
    let actual: Vec<String> = actual.lines().map(normalize).collect();
    let mut at = 0;
    let mut missing = Vec::new();
    for want in expected.iter().filter(|l| l.trim() != "…") {
        let want_n = normalize(want);
        match actual[at..].iter().position(|l| *l == want_n) {
            Some(i) => at += i + 1,
            None => missing.push(want.clone()),
        }
    }
    missing
}

/// Kills the planted process group on drop, whatever the test did.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this test planted.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

fn find_watchdog(dir: &Path) -> Option<i32> {
    let marker = format!("while true; do {}/dhpcd", dir.display());
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (text.starts_with("sh -c ") && text.contains(&marker)).then_some(pid)
    })
}

#[test]
fn the_readme_walkthrough_prints_what_the_readme_shows() {
    if !running_as_root("the_readme_walkthrough_prints_what_the_readme_shows") {
        return;
    }
    let steps = walkthrough();
    assert!(
        steps.len() >= 3,
        "the walk-through has its commands: {steps:?}"
    );
    // The pool: port 3333 (a miner port the built-in indicators name).
    let pool = TcpListener::bind("127.0.0.1:3333")
        .expect("127.0.0.1:3333 must be free for the walk-through's pool");
    let accepted = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in pool.incoming().flatten() {
            held.push(conn);
            if held.len() > 50 {
                break;
            }
        }
        // Keep them open until the test process ends.
        std::thread::sleep(Duration::from_secs(600));
        let _ = held[0].read(&mut [0; 1]);
    });
    drop(accepted);

    let dir = Scratch::under(Path::new("/var/tmp"), ".x");
    fs::copy(env!("CARGO_BIN_EXE_fake_miner"), dir.path().join("dhpcd")).unwrap();
    let root = Scratch::new("readme-root");
    fs::create_dir_all(root.path().join("etc/cron.d")).unwrap();
    let loop_cmd = format!(
        "while true; do {}/dhpcd -o 127.0.0.1:3333; sleep 1; done",
        dir.path().display()
    );
    fs::write(
        root.path().join("etc/cron.d/dhpcd"),
        format!("@reboot root sh -c '{loop_cmd}'\n"),
    )
    .unwrap();
    // Started the way a dropper does: detached, reparented to init.
    let started = Command::new("sh")
        .args([
            "-c",
            &format!("setsid sh -c '{loop_cmd}' >/dev/null 2>&1 &"),
        ])
        .status()
        .unwrap();
    assert!(started.success());
    let mut watchdog = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            watchdog = find_watchdog(dir.path());
            watchdog.is_some()
        }),
        "the watchdog loop did not start"
    );
    let _group = Group(watchdog.unwrap());
    let dhpcd = dir.path().join("dhpcd");
    assert!(
        wait_until(Duration::from_secs(5), || {
            fs::read_dir("/proc").unwrap().flatten().any(|e| {
                fs::read_link(e.path().join("exe")).is_ok_and(|x| x == dhpcd)
                    && fs::read_dir(e.path().join("fd"))
                        .map(|fds| {
                            fds.flatten().any(|fd| {
                                fs::read_link(fd.path())
                                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                            })
                        })
                        .unwrap_or(false)
            })
        }),
        "the miner never connected to its pool"
    );

    let real_dir = dir.path().to_str().unwrap().to_string();
    let fake_root = root.path().to_str().unwrap().to_string();
    for (command, expected) in &steps {
        let words: Vec<String> = command
            .split_whitespace()
            .map(|w| w.replace(README_DIR, &real_dir))
            .collect();
        assert_eq!(
            (words[0].as_str(), words[1].as_str()),
            ("sudo", "tracer"),
            "README commands run tracer as root: {command}"
        );
        let out = run(
            Command::new(tracer_bin())
                .args(&words[2..])
                .env("TRACER_PERSISTENCE_ROOT", &fake_root)
                .env_remove("TRACER_RESPAWN_CHECK_MS"),
            Duration::from_secs(60),
        );
        assert_eq!(out.code, 0, "{command}: {}", out.describe());
        // Back to the README's paths: the scratch directory, and the fake
        // root's prefix on persistence files.
        let shown = out
            .stdout
            .replace(&real_dir, README_DIR)
            .replace(&format!("{fake_root}/"), "/");
        let missing = drifted(expected, &shown);
        assert!(
            missing.is_empty(),
            "`{command}` no longer prints these README lines:\n{}\n\nit printed:\n{shown}",
            missing.join("\n")
        );
    }
}

#[test]
fn drift_is_caught_line_by_line() {
    let expected = vec![
        "kill-tree plan for PID 12: 2 processes".to_string(),
        "…".to_string(),
        "  stopped 2 processes".to_string(),
    ];
    assert!(drifted(
        &expected,
        "kill-tree plan for PID 99:  2 processes\nx\n stopped 3 processes\n"
    )
    .is_empty());
    // Words changed, or the order: caught.
    assert_eq!(
        drifted(
            &expected,
            "kill-tree plan for PID 9: 2 procs\n stopped 2 processes\n"
        ),
        ["kill-tree plan for PID 12: 2 processes"]
    );
    assert_eq!(
        drifted(
            &expected,
            " stopped 2 processes\nkill-tree plan for PID 9: 2 processes\n"
        ),
        ["  stopped 2 processes"]
    );
}
