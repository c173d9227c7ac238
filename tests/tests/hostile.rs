//! Hostile input (issue 8): what the attacker controls — names, arguments,
//! paths, bytes that are not UTF-8, thread names, sessions — must never
//! fool, hide from or mislead the responder. Each test plants one such
//! process, checks what a responder would check, and removes it.
//!
//! Run as root: `cargo xtask test -- hostile`.
use std::{
    ffi::OsStr,
    io::Read,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::exit::{BAD_INPUT, FINDINGS, INCOMPLETE, NO_MATCH, REFUSED};
use tracer_tests::{run, running_as_root, tracer, wait_until, Planted, Scratch};

const LIMIT: Duration = Duration::from_secs(60);

/// `tracer watch`, its stdout as raw byte lines (a terminal gets bytes: a
/// raw ESC must be visible to the test as one).
struct HumanWatch {
    child: Child,
    lines: mpsc::Receiver<Vec<u8>>,
}

impl HumanWatch {
    fn start(args: &[&str]) -> HumanWatch {
        let mut child = tracer_tests::watch::spawn_watch(args);
        let mut stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=at).collect();
                    if tx.send(line[..line.len() - 1].to_vec()).is_err() {
                        return;
                    }
                }
            }
        });
        let watch = HumanWatch { child, lines };
        watch.until(
            |l| {
                after_stamp(l).starts_with(b"tracer: watching")
                    || l.starts_with(br#"{"type":"start""#)
            },
            "the start line",
        );
        watch
    }

    /// Lines up to and including the first that satisfies `pred`.
    fn until(&self, pred: impl Fn(&[u8]) -> bool, what: &str) -> Vec<Vec<u8>> {
        self.until_within(pred, what, Duration::from_secs(20))
    }

    fn until_within(
        &self,
        pred: impl Fn(&[u8]) -> bool,
        what: &str,
        limit: Duration,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let done = pred(&line);
            seen.push(line);
            if done {
                return seen;
            }
        }
        let tail = seen.len().saturating_sub(20);
        panic!(
            "watch never showed {what}; it printed {} lines, ending:\n{}",
            seen.len(),
            seen[tail..]
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

impl Drop for HumanWatch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of our own unreaped child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A human watch line without its leading timestamp (`2026-...Z `); other
/// lines (chains, hooks, JSON) as they are.
fn after_stamp(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b' ') {
        Some(at) if line[0].is_ascii_digit() && line[..at].ends_with(b"Z") => &line[at + 1..],
        _ => line,
    }
}

#[test]
fn watch_shows_escape_sequences_and_newlines_escaped_never_raw_or_as_forged_lines() {
    if !running_as_root("terminal_injection") {
        return;
    }
    let watch = HumanWatch::start(&["--exec-only", "--no-default-iocs"]);
    let marker = format!("tracer-inject-{}", std::process::id());
    let forged = "x\nEXEC    pid=1 ppid=0 user=root /bin/forged [forged]";
    Command::new("/bin/echo")
        .arg(&marker)
        .arg("\x1b[2J\x1b[31mred")
        .arg(forged)
        .arg(OsStr::from_bytes(b"\xff\xfe"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let lines = watch.until(
        |l| after_stamp(l).starts_with(b"EXEC") && contains(l, marker.as_bytes()),
        "the planted exec",
    );
    // And the chain line that belongs to it.
    let more = watch.until(|l| l.starts_with(b"        chain:"), "its chain line");
    let exec = lines.last().unwrap();
    let text = String::from_utf8(exec.clone()).expect("escaped output is UTF-8");
    assert!(text.contains(r"\x1b[2J\x1b[31mred"), "{text}");
    assert!(
        text.contains(r"x\nEXEC    pid=1 ppid=0 user=root /bin/forged"),
        "{text}"
    );
    assert!(text.contains(r"\xff\xfe"), "{text}");
    for line in lines.iter().chain(&more) {
        assert!(
            !line.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f),
            "a raw control byte reached the terminal: {line:?}"
        );
        // after_stamp leaves a line without a stamp whole.
        assert!(
            !after_stamp(line).starts_with(b"EXEC    pid=1 ppid=0"),
            "a forged line"
        );
    }
}

/// `/usr/bin/sleep` copied under /tmp by this name (bytes).
fn planted_copy(dir: &Scratch, name: &[u8]) -> Planted {
    let path = dir.path().join(OsStr::from_bytes(name));
    std::fs::copy("/usr/bin/sleep", &path).unwrap();
    tracer_tests::set_mode(&path, 0o755);
    Planted::spawn(Command::new(&path).arg("600"))
}

fn kinds(findings: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn a_process_whose_name_is_not_utf8_gets_exactly_the_findings_of_its_ascii_twin() {
    if !running_as_root("non_utf8_twin") {
        return;
    }
    let dir = Scratch::under(Path::new("/tmp"), "hostile-twin");
    let ascii = planted_copy(&dir, b"tw_in");
    let odd = planted_copy(&dir, b"tw\xffin");
    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let ascii_kinds = kinds(&result.findings_for(ascii.pid()));
    assert!(
        ascii_kinds.contains(&"exe-in-temp".to_string()),
        "{}",
        result.describe()
    );
    assert_eq!(
        kinds(&result.findings_for(odd.pid())),
        ascii_kinds,
        "{}",
        result.describe()
    );
    let f = result.finding("exe-in-temp", odd.pid());
    assert_eq!(f["process"]["uid"], 0, "the kernel gave a uid: {f:#}");
    // JSON keeps the bytes: escaped text plus hex.
    assert_eq!(f["process"]["comm"]["hex"], "7477ff696e", "{f:#}");
    assert_eq!(f["process"]["comm"]["text"], r"tw\xffin");
    assert!(f["process"]["exe"]["hex"]
        .as_str()
        .unwrap()
        .ends_with("7477ff696e"));

    // Human output shows the byte escaped, never raw.
    let human = run(&mut tracer(&["hidden"]), LIMIT);
    assert!(human.stdout.contains(r"tw\xffin"), "{}", human.describe());
    assert!(!human.stdout.contains('\u{fffd}'), "a raw byte was printed");

    // kill-tree reads the same process and its uid.
    let plan = run(
        &mut tracer(&["kill-tree", &odd.pid().to_string(), "--json"]),
        LIMIT,
    );
    assert_eq!(plan.code, 0, "{}", plan.describe());
    let plan = plan.json();
    let member = plan["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["process"]["pid"] == odd.pid())
        .expect("the target is a member");
    assert_eq!(member["process"]["uid"], 0);
    assert_eq!(member["process"]["comm"]["hex"], "7477ff696e");
}

/// `tracer ARGS` as nobody.
fn as_nobody(args: &[&str]) -> tracer_tests::TracerRun {
    run(tracer_tests::as_nobody(&mut tracer(args)), LIMIT)
}

#[test]
fn hidden_without_root_names_the_processes_it_could_not_check_and_never_says_clean() {
    if !running_as_root("non_root_hidden") {
        return;
    }
    let dir = Scratch::under(Path::new("/tmp"), "hostile-deleted");
    let dropped = planted_copy(&dir, b"dropped");
    std::fs::remove_file(dir.path().join("dropped")).unwrap();

    let root = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    root.finding("exe-deleted", dropped.pid());

    let json = as_nobody(&["hidden", "--json"]);
    assert_ne!(json.code, 0, "{}", json.describe());
    let report = json.json();
    if report["findings"].as_array().unwrap().is_empty() {
        assert_eq!(json.code, INCOMPLETE, "{}", json.describe());
    }
    let unchecked = &report["unchecked"];
    assert!(unchecked["count"].as_u64().unwrap() >= 1, "{report:#}");
    assert!(
        unchecked["pids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == dropped.pid()),
        "{report:#}"
    );
    assert!(unchecked["why"].as_str().unwrap().contains("root"));

    let human = as_nobody(&["hidden"]);
    let last = human.stdout.lines().last().unwrap_or_default();
    assert!(last.contains("not fully checked"), "{last}");
}

#[test]
fn every_bad_value_gets_one_line_and_its_exit_code() {
    if !running_as_root("bad_values") {
        return;
    }
    let dir = Scratch::new("hostile-iocs");
    let long = dir.write("long.txt", &format!("{}\n", "a".repeat(10 << 20)), 0o644);
    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, b"127.0.0.1\n\x7fELF\x02\x01\x00\x00").unwrap();
    let (long, binary) = (long.display().to_string(), binary.display().to_string());
    let folder = dir.path().display().to_string();
    let cases: &[(&[&str], i32)] = &[
        (&["watch", "--pid", "0", "--no-default-iocs"], BAD_INPUT),
        (&["watch", "--pid", "-5", "--no-default-iocs"], BAD_INPUT),
        (&["watch", "--pid", "x", "--no-default-iocs"], BAD_INPUT),
        (&["kill-tree", "-5"], REFUSED),
        (&["kill-tree", "0"], REFUSED),
        (&["kill-tree", "abc"], NO_MATCH),
        (&["watch", "--no-default-iocs", "--ioc", &long], BAD_INPUT),
        (&["watch", "--no-default-iocs", "--ioc", &binary], BAD_INPUT),
        (&["watch", "--no-default-iocs", "--ioc", &folder], BAD_INPUT),
        (
            &["watch", "--no-default-iocs", "--ioc", "/nonexistent/iocs"],
            BAD_INPUT,
        ),
    ];
    for (args, code) in cases {
        let r = run(&mut tracer(args), LIMIT);
        assert_eq!(r.code, *code, "{args:?}: {}", r.describe());
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.describe());
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", r.describe());
        assert!(lines[0].starts_with("tracer: "), "{args:?}: {}", lines[0]);
        assert!(lines[0].len() < 600, "{args:?}: {} bytes", lines[0].len());
    }
}

/// A benign-looking program (python3 sleeping) whose worker thread names
/// itself `xmrig` and which runs `/bin/echo MARKER` once `trigger` exists.
const THREADED_PY: &str = r#"
import os, sys, threading, time
def worker():
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
        f.write("xmrig")
    time.sleep(600)
threading.Thread(target=worker, daemon=True).start()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
os.system("/bin/echo " + sys.argv[2])
time.sleep(600)
"#;

#[test]
fn a_thread_named_xmrig_is_named_in_hidden_kill_tree_and_watch() {
    if !running_as_root("xmrig_thread") {
        return;
    }
    let dir = Scratch::new("hostile-thread");
    let script = dir.write("worker.py", THREADED_PY, 0o644);
    let trigger = dir.path().join("go");
    let marker = format!("tracer-thread-{}", std::process::id());
    let host = Planted::spawn(
        Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&trigger)
            .arg(&marker),
    );
    let pid = host.pid();
    let thread_named = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "xmrig")
            })
            .map(|t| t.file_name().to_string_lossy().into_owned())
    };
    assert!(wait_until(Duration::from_secs(10), || thread_named().is_some()));
    let tid = thread_named().unwrap();

    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    let f = result.finding("miner-name", pid);
    assert_eq!(
        tracer_tests::evidence(&f, "thread"),
        Some(format!("xmrig({tid})").as_str()),
        "{f:#}"
    );
    assert_eq!(
        tracer_tests::evidence(&f, "threads"),
        Some(format!("xmrig({tid})").as_str())
    );

    let plan = run(&mut tracer(&["kill-tree", &pid.to_string()]), LIMIT);
    assert!(
        plan.stdout.contains(&format!("threads named xmrig({tid})")),
        "{}",
        plan.describe()
    );

    let watch = HumanWatch::start(&["--exec-only", "--no-default-iocs"]);
    std::fs::write(&trigger, b"").unwrap();
    watch.until(
        |l| after_stamp(l).starts_with(b"EXEC") && contains(l, marker.as_bytes()),
        "the exec of the threaded process's child",
    );
    let chain = watch.until(|l| l.starts_with(b"        chain:"), "its chain");
    let chain = String::from_utf8_lossy(chain.last().unwrap()).into_owned();
    assert!(
        chain.contains(&format!("({pid}){{xmrig:{tid}}}")),
        "the ancestry names the thread: {chain}"
    );
}

/// Kills a whole process group (a session this test made) on drop.
struct SessionGuard(u32);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this test created.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
    }
}

/// A new session: a shell that double-forks an orphan (`sleep 601`,
/// reparented away from the shell) and runs the target (`sleep 600`).
/// Returns the guard, the target's PID and the orphan's PID.
fn session_with_orphan(dir: &Scratch) -> (SessionGuard, u32, u32) {
    let pids = dir.path().join(format!("pids-{}", rand_suffix()));
    let script = format!(
        "(sleep 601 & echo $! > '{0}.orphan') ; sleep 600 & echo $! > '{0}.target'; wait",
        pids.display()
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]).stdin(Stdio::null());
    // SAFETY: setsid between fork and exec, nothing else.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let guard = SessionGuard(child.id());
    std::mem::forget(child); // reaped by init once the group is killed
    let read = |suffix: &str| {
        let path = format!("{}.{suffix}", pids.display());
        let mut pid = None;
        wait_until(Duration::from_secs(10), || {
            pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            pid.is_some()
        });
        pid.expect("the session's processes started")
    };
    let (orphan, target) = (read("orphan"), read("target"));
    (guard, target, orphan)
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn alive(pid: u32) -> bool {
    tracer_tests::stat_field(pid, 3).is_some_and(|s| s != "Z")
}

#[test]
fn orphans_in_the_targets_session_are_listed_and_a_kill_is_not_clean_while_they_live() {
    if !running_as_root("orphans") {
        return;
    }
    let dir = Scratch::new("hostile-orphans");
    let (_session, target, orphan) = session_with_orphan(&dir);

    let plan = run(
        &mut tracer(&["kill-tree", &target.to_string(), "--json"]),
        LIMIT,
    );
    assert_eq!(plan.code, 0, "{}", plan.describe());
    let plan = plan.json();
    let related = plan["relatives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["process"]["pid"] == orphan)
        .unwrap_or_else(|| panic!("the orphan is not listed: {plan:#}"));
    let reason = related["reason"].as_str().unwrap();
    assert!(
        reason.contains("same process group") || reason.contains("same session"),
        "{reason}"
    );

    // Without --relatives the orphan is left, and the kill is not clean.
    let kill = run(
        tracer(&["kill-tree", &target.to_string(), "--kill"]).env("TRACER_RESPAWN_CHECK_MS", "300"),
        LIMIT,
    );
    assert_eq!(kill.code, FINDINGS, "{}", kill.describe());
    assert!(
        kill.stdout.contains(&format!(
            "RELATED process still running: {orphan} sleep 601"
        )),
        "{}",
        kill.describe()
    );
    assert!(!alive(target) && alive(orphan));

    // With --relatives it goes too.
    let (_session2, target2, orphan2) = session_with_orphan(&dir);
    let kill = run(
        tracer(&["kill-tree", &target2.to_string(), "--kill", "--relatives"])
            .env("TRACER_RESPAWN_CHECK_MS", "300"),
        LIMIT,
    );
    assert!(
        wait_until(Duration::from_secs(5), || !alive(orphan2)),
        "{}",
        kill.describe()
    );
    assert!(!alive(target2));
    assert!(
        !kill.stdout.contains("RELATED process still running"),
        "{}",
        kill.describe()
    );
}

/// `n` fork+execs of /bin/true in each of two shells, waited for.
fn exec_storm(n: u32) {
    let script = format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    let workers: Vec<Child> = (0..2)
        .map(|_| Command::new("sh").args(["-c", &script]).spawn().unwrap())
        .collect();
    for mut w in workers {
        w.wait().unwrap();
    }
}

#[test]
fn losses_are_reported_in_the_stream_and_ancestry_is_right_again_afterwards() {
    if !running_as_root("losses") {
        return;
    }
    let watch = HumanWatch::start(&["--json", "--exec-only", "--no-default-iocs"]);
    let watch_pid = watch.child.id() as i32;
    // Watch stops reading for a moment; the kernel's ring buffer fills.
    // SAFETY: kill(2) of our own unreaped child.
    unsafe { libc::kill(watch_pid, libc::SIGSTOP) };
    exec_storm(10_000);
    // Started while the buffer is full: its fork and exec are lost.
    let marker = format!("tracer-after-loss-{}", std::process::id());
    let parent = Planted::spawn(
        // It runs its marker every second: one run may itself be lost
        // while other tests and benchmarks load the machine.
        Command::new("sh").args([
            "-c",
            &format!("sleep 4; while :; do /bin/echo {marker}; sleep 1; done"),
        ]),
    );
    // SAFETY: as above.
    unsafe { libc::kill(watch_pid, libc::SIGCONT) };

    // Other tests' and benchmarks' processes share the stream: allow time.
    let lines = watch.until_within(
        |l| l.starts_with(br#"{"type":"loss""#),
        "a loss record",
        Duration::from_secs(90),
    );
    let loss: Value = serde_json::from_slice(lines.last().unwrap()).unwrap();
    tracer_tests::schema::check(&loss);
    assert!(loss["lost"]["exec"].as_u64().unwrap() > 0, "{loss}");
    assert!(loss["total_lost"].as_u64().unwrap() >= loss["lost"]["exec"].as_u64().unwrap());
    // Every exec before it was one the kernel did queue: the loss record
    // arrives in the stream, not only in the final summary.
    assert!(!lines.iter().any(|l| l.starts_with(br#"{"type":"summary""#)));

    // The table was re-read: the parent the kernel's events never showed
    // is in the ancestry of its child's exec.
    let lines = watch.until_within(
        |l| l.starts_with(br#"{"type":"exec""#) && contains(l, marker.as_bytes()),
        "the exec after the loss",
        Duration::from_secs(90),
    );
    let exec: Value = serde_json::from_slice(lines.last().unwrap()).unwrap();
    tracer_tests::schema::check(&exec);
    let first = &exec["ancestry"][0];
    assert_eq!(first["pid"], parent.pid(), "{exec:#}");
    assert_eq!(first["comm"], "sh", "{exec:#}");
}
