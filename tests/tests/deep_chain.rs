//! A chain of 3,000 nested processes, each running the same dropped
//! program, whose leaf connects to an indicator (root, loopback). watch's
//! alert shows the nearest ancestors and says how many more there are and
//! where the chain goes on; kill-tree's plan takes every level as a member.
use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Duration,
};

use tracer_tests::{run, running_as_root, tracer, watch::Watch, Planted, Scratch};

const DEPTH: u32 = 3000;

/// A program that starts itself DEPTH-1 times, nested, and whose leaf
/// connects to 127.0.0.1:PORT, prints its PID and sleeps.
const CHAIN_C: &str = r#"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int depth = atoi(argv[1]);
    if (depth > 1) {
        char next[16];
        snprintf(next, sizeof next, "%d", depth - 1);
        if (fork() == 0) {
            execl("/proc/self/exe", argv[0], next, argv[2], (char *)0);
            _exit(1);
        }
        for (;;) pause();
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(s, (struct sockaddr *)&a, sizeof a);
    printf("%d\n", getpid());
    fflush(stdout);
    for (;;) pause();
}
"#;

#[test]
fn a_3000_deep_chain_is_cut_honestly_in_the_alert_and_planned_whole() {
    if !running_as_root("a_3000_deep_chain_is_cut_honestly_in_the_alert_and_planned_whole") {
        return;
    }
    let scratch = Scratch::new("deep-chain");
    let source = scratch.write("chain.c", CHAIN_C, 0o644);
    let program = scratch.path().join("dhpcd");
    let cc = Command::new("gcc")
        .arg("-O2")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .status()
        .expect("run gcc (cargo xtask setup installs it)");
    assert!(cc.success(), "compiling the chain program failed");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let iocs = scratch.write("iocs.txt", &format!("127.0.0.1:{port}\n"), 0o644);
    let watch = Watch::start(&["--no-default-iocs", "--ioc", iocs.to_str().unwrap()]);

    let mut chain = Command::new(&program);
    chain
        .arg(DEPTH.to_string())
        .arg(port.to_string())
        .process_group(0)
        .stdout(Stdio::piped());
    let mut child = chain.spawn().expect("start the chain");
    let root = Planted::adopt(child.id());
    let group_guard = scopeguard(child.id());
    let mut leaf_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut leaf_line)
        .unwrap();
    let leaf: u32 = leaf_line.trim().parse().expect("the leaf's pid");

    // Thousands of exec lines (and a finding per level: a program in /tmp
    // named like dhcpcd) come first; only the alert is checked closely.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let alert = loop {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .expect("watch never showed the leaf's alert");
        let line = watch.lines.recv_timeout(left).expect("watch stopped");
        if !line.contains("\"alert\"") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "alert" && v["connect"]["pid"] == leaf {
            tracer_tests::schema::check(&v);
            break v;
        }
    };
    let connect = &alert["connect"];
    let shown = connect["ancestry"].as_array().unwrap().len();
    let cut = &connect["ancestry_cut"];
    assert_eq!(cut["shown"].as_u64(), Some(shown as u64), "{cut}");
    // Every level above the leaf, then the test's own ancestors.
    let left_out = cut["left_out"]
        .as_u64()
        .expect("the cut says how many were left out");
    assert!(
        left_out as usize + shown >= DEPTH as usize - 1,
        "{shown} shown + {left_out} left out for a chain of {DEPTH}"
    );
    let last_shown = connect["ancestry"][shown - 1]["ppid"].as_u64();
    assert_eq!(cut["continues_at"].as_u64(), last_shown, "{cut}");

    let plan = run(
        &mut tracer(&["kill-tree", &leaf.to_string(), "--json"]),
        Duration::from_secs(120),
    );
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout)
        .unwrap_or_else(|e| panic!("no plan ({e}): {}", plan.stderr));
    let members = plan["members"].as_array().unwrap();
    let of_program = members
        .iter()
        .filter(|m| m["process"]["exe"].as_str() == program.to_str())
        .count();
    assert_eq!(of_program, DEPTH as usize, "every level is a member");
    drop(group_guard);
    drop(root);
    let _ = child.wait();
}

/// Kills the chain's process group (ours) when the test ends, however.
fn scopeguard(pgid: u32) -> impl Drop {
    struct Group(i32);
    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: kill(2) of the process group this test created.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
    Group(pgid as i32)
}
