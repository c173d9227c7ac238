//! Sigma rules the tests write, run by watch on real execs and connects,
//! by hidden on running processes, and checked by `status --sigma`.
use std::{net::TcpListener, os::unix::ffi::OsStrExt, process::Command, time::Duration};

use tracer_tests::{run, tracer, watch::Watch, Planted, Scratch};

const LIMIT: Duration = Duration::from_secs(120);

fn rule(id: &str, category: &str, detection: &str) -> String {
    format!(
        "title: test rule {id}\nid: {id}\nstatus: test\nauthor: tracer tests\nlevel: high\ntags:\n  - attack.execution\n  - attack.t1059.004\nfalsepositives:\n  - none\nlogsource:\n  product: linux\n  category: {category}\ndetection:\n{detection}\n"
    )
}

/// A shell copied in as `name`: run as `NAME -c 'sleep 1000; :' ARGS...`
/// it waits with ARGS in its command line and `Image` its own path. Spawn
/// it in a group of its own, so its `sleep` goes with it.
fn sleeper(dir: &Scratch, name: &str) -> std::path::PathBuf {
    dir.copy_in("/bin/sh", name)
}

fn waiting(exe: &std::path::Path) -> Command {
    let mut c = Command::new(exe);
    c.args(["-c", "sleep 1000; :"]);
    c
}

fn sigma_findings(found: &[serde_json::Value], rule: &str) -> Vec<u64> {
    found
        .iter()
        .filter(|f| f["kind"] == "sigma" && f["sigma"]["rule_id"] == rule)
        .filter_map(|f| f["process"]["pid"].as_u64())
        .collect()
}

#[test]
fn process_rule_with_filter_matches_in_hidden_and_watch_but_not_the_twin() {
    if !tracer_tests::running_as_root("sigma process rule") {
        return;
    }
    let rules = Scratch::new("sigma-rules");
    rules.write(
        "proc.yml",
        &rule(
            "t-proc-1",
            "process_creation",
            "  selection:\n    Image|endswith: /sigmaplant\n    CommandLine|contains|all:\n      - '1000'\n      - '#mark'\n  filter:\n    CommandLine|contains: '#twin'\n  condition: selection and not filter",
        ),
        0o644,
    );
    let bin = Scratch::new("sigma-bin");
    let exe = sleeper(&bin, "sigmaplant");
    let planted = Planted::spawn_group(waiting(&exe).args(["1000", "#mark"]));
    let twin = Planted::spawn_group(waiting(&exe).args(["1000", "#mark", "#twin"]));
    let r = run(
        tracer(&["hidden", "--json", "--no-kernel-checks", "--sigma"]).arg(rules.path()),
        LIMIT,
    );
    let found = r.findings();
    let pids = sigma_findings(&found, "t-proc-1");
    assert!(pids.contains(&u64::from(planted.pid())), "{}", r.describe());
    assert!(!pids.contains(&u64::from(twin.pid())), "{}", r.describe());
    let f = found
        .iter()
        .find(|f| f["sigma"]["rule_id"] == "t-proc-1")
        .unwrap();
    assert_eq!(f["severity"], "high");
    assert_eq!(f["sigma"]["attack"][0], "T1059.004");
    assert!(f["sigma"]["matched"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["field"] == "Image"));
    assert_eq!(r.json()["sigma"]["process_creation"], 1);

    let watch = Watch::start(&[
        "--exec-only",
        "--no-default-iocs",
        "--sigma",
        rules.path().to_str().unwrap(),
    ]);
    let live = Planted::spawn_group(waiting(&exe).args(["1000", "#mark"]));
    let live_twin = Planted::spawn_group(waiting(&exe).args(["1000", "#mark", "#twin"]));
    let f = watch.wait_for("the sigma finding", |v| {
        v["type"] == "finding" && v["kind"] == "sigma" && v["process"]["pid"] == live.pid()
    });
    assert_eq!(f["event"], "exec");
    assert!(f["kill_tree"]["pids"].as_array().is_some(), "{f}");
    let (_, out) = watch.stop_collecting();
    assert!(
        !out.lines().any(|l| l.contains("\"kind\":\"sigma\"")
            && l.contains(&format!("\"pid\":{},", live_twin.pid()))
            && l.contains("\"type\":\"finding\"")),
        "the twin matched: {out}"
    );
}

#[test]
fn parent_rule_matches_a_miner_started_by_a_shell_loop_in_tmp() {
    if !tracer_tests::running_as_root("sigma parent rule") {
        return;
    }
    let rules = Scratch::new("sigma-rules");
    rules.write(
        "parent.yml",
        &rule(
            "t-parent-1",
            "process_creation",
            "  sel:\n    ParentImage|endswith: sh\n    ParentCommandLine|contains: 'while true'\n    Image|startswith: /tmp/\n  condition: sel",
        ),
        0o644,
    );
    let tmp = Scratch::under(std::path::Path::new("/tmp"), "sigma-miner");
    let miner = tmp.copy_in("/bin/sleep", "minerd");
    let script = format!("while true; do {} 1000; done", miner.display());
    let shell = Planted::spawn_group(Command::new("/bin/sh").args(["-c", &script]));
    let _ = shell.pid();
    assert!(tracer_tests::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            shell.pid(),
            shell.pid()
        ))
        .is_ok_and(|c| !c.trim().is_empty())
    }));
    let r = run(
        tracer(&["hidden", "--json", "--no-kernel-checks", "--sigma"]).arg(rules.path()),
        LIMIT,
    );
    let found = r.findings();
    let f = found
        .iter()
        .find(|f| f["sigma"]["rule_id"] == "t-parent-1")
        .unwrap_or_else(|| panic!("no parent-rule finding: {}", r.describe()));
    assert_eq!(f["ancestry"][0]["pid"], shell.pid(), "{f}");
    drop(tmp);
}

#[test]
fn network_rule_on_a_loopback_connect() {
    if !tracer_tests::running_as_root("sigma network rule") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rules = Scratch::new("sigma-rules");
    rules.write(
        "net.yml",
        &rule(
            "t-net-1",
            "network_connection",
            &format!("  sel:\n    DestinationPort: {port}\n    DestinationIp|cidr: 127.0.0.0/8\n  condition: sel"),
        ),
        0o644,
    );
    let watch = Watch::start(&[
        "--no-default-iocs",
        "--sigma",
        rules.path().to_str().unwrap(),
    ]);
    let client = Planted::spawn(Command::new("/bin/bash").args([
        "-c",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 30"),
    ]));
    let f = watch.wait_for("the network sigma finding", |v| {
        v["type"] == "finding" && v["sigma"]["rule_id"] == "t-net-1"
    });
    assert_eq!(f["event"], "connect");
    assert!(f["sigma"]["matched"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["field"] == "DestinationPort"));
    drop(client);
    let _ = watch.stop_collecting();
}

#[test]
fn file_rule_on_a_cron_write() {
    if !tracer_tests::running_as_root("sigma file rule") {
        return;
    }
    let rules = Scratch::new("sigma-rules");
    rules.write(
        "file.yml",
        &rule(
            "t-file-1",
            "file_event",
            "  sel:\n    TargetFilename|startswith: /etc/cron.d/\n  condition: sel",
        ),
        0o644,
    );
    let watch = Watch::start(&[
        "--exec-only",
        "--no-default-iocs",
        "--sigma",
        rules.path().to_str().unwrap(),
    ]);
    let name = format!("/etc/cron.d/tracer-sigma-test-{}", std::process::id());
    let writer = Command::new("/bin/sh")
        .args(["-c", &format!("echo '# test' > {name}")])
        .status()
        .unwrap();
    assert!(writer.success());
    let f = watch.wait_for("the file sigma finding", |v| {
        v["type"] == "finding" && v["sigma"]["rule_id"] == "t-file-1"
    });
    let _ = std::fs::remove_file(&name);
    assert_eq!(f["event"], "write");
    let _ = watch.stop_collecting();
}

#[test]
fn regex_base64offset_and_one_of_rules_and_non_utf8_bytes() {
    if !tracer_tests::running_as_root("sigma modifiers") {
        return;
    }
    let rules = Scratch::new("sigma-rules");
    rules.write(
        "re.yml",
        &rule(
            "t-re-1",
            "process_creation",
            "  sel:\n    CommandLine|re: 'sigmare [0-9]{4}'\n  condition: sel",
        ),
        0o644,
    );
    rules.write(
        "b64.yml",
        &rule(
            "t-b64-1",
            "process_creation",
            "  sel:\n    CommandLine|base64offset|contains: 'sigma-b64-payload'\n  condition: sel",
        ),
        0o644,
    );
    rules.write(
        "oneof.yml",
        &rule("t-oneof-1", "process_creation", "  selection_a:\n    CommandLine|contains: 'nosuchthing-a'\n  selection_b:\n    Image|endswith: /sigmaoneof\n  condition: 1 of selection_*"),
        0o644,
    );
    rules.write(
        "bytes.yml",
        &rule(
            "t-bytes-1",
            "process_creation",
            "  sel:\n    CommandLine|re: '\\xff\\xfesigmabytes'\n  condition: sel",
        ),
        0o644,
    );
    let bin = Scratch::new("sigma-bin");
    let exe = sleeper(&bin, "sigmaoneof");
    let a = Planted::spawn_group(waiting(&exe).args(["1000", "sigmare", "1234"]));
    let encoded = "eHNpZ21hLWI2NC1wYXlsb2Fk"; // base64 of "xsigma-b64-payload"
    let b = Planted::spawn_group(waiting(&exe).args(["1000", encoded]));
    let bytes_arg = std::ffi::OsStr::from_bytes(b"\xff\xfesigmabytes");
    let c = Planted::spawn_group(waiting(&exe).arg("1000").arg(bytes_arg));
    let r = run(
        tracer(&["hidden", "--json", "--no-kernel-checks", "--sigma"]).arg(rules.path()),
        LIMIT,
    );
    let found = r.findings();
    assert!(
        sigma_findings(&found, "t-re-1").contains(&u64::from(a.pid())),
        "{}",
        r.describe()
    );
    assert!(
        sigma_findings(&found, "t-b64-1").contains(&u64::from(b.pid())),
        "{}",
        r.describe()
    );
    assert!(!sigma_findings(&found, "t-b64-1").contains(&u64::from(a.pid())));
    assert!(sigma_findings(&found, "t-oneof-1").contains(&u64::from(c.pid())));
    assert!(
        sigma_findings(&found, "t-bytes-1").contains(&u64::from(c.pid())),
        "{}",
        r.describe()
    );
    assert!(!sigma_findings(&found, "t-bytes-1").contains(&u64::from(a.pid())));
}

#[test]
fn bad_rules_are_named_one_line_each_and_the_good_ones_load() {
    let rules = Scratch::new("sigma-bad");
    rules.write(
        "good.yml",
        &rule(
            "t-good-1",
            "process_creation",
            "  sel:\n    Image|endswith: /x\n  condition: sel",
        ),
        0o644,
    );
    rules.write("broken.yml", "title: [unclosed\n  detection: {\n", 0o644);
    rules.write(
        "windows.yml",
        "title: w\nid: t-win-1\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  sel:\n    Image|endswith: '\\cmd.exe'\n  condition: sel\n",
        0o644,
    );
    rules.write(
        "modifier.yml",
        &rule(
            "t-mod-1",
            "process_creation",
            "  sel:\n    Image|sometimes: /x\n  condition: sel",
        ),
        0o644,
    );
    let r = run(tracer(&["status", "--sigma"]).arg(rules.path()), LIMIT);
    assert_eq!(r.code, 8, "{}", r.describe());
    let lines: Vec<&str> = r.stdout.lines().collect();
    let named = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(named("broken.yml"), 1, "{}", r.stdout);
    assert_eq!(named("t-win-1"), 1, "{}", r.stdout);
    assert_eq!(named("unknown modifier `sometimes`"), 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("1 rules loaded") && r.stdout.contains("3 skipped"),
        "{}",
        r.stdout
    );
    let r = run(
        &mut tracer(&["status", "--sigma", "/nonexistent/sigma"]),
        LIMIT,
    );
    assert_eq!(r.code, 2, "{}", r.describe());
}
