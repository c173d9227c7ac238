//! Fixtures shared by tracer's integration tests: build and run the tracer
//! binary, and plant conditions that clean themselves up on drop, whatever
//! happens to the test (processes are killed, files and directories
//! removed; mounts only ever live in private mount namespaces, which vanish
//! with their last process).
pub mod hidden;
pub mod net;
pub mod schema;
pub mod watch;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    sync::Once,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Where cargo puts build output.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// tracer's documented exit codes (README, "Exit codes").
pub mod exit {
    pub const CLEAN: i32 = 0;
    pub const FINDINGS: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const REFUSED: i32 = 5;
    pub const INCOMPLETE: i32 = 6;
    pub const NO_MATCH: i32 = 7;
}

/// cargo with the environment of a plain command line: the test harness
/// adds LD_LIBRARY_PATH and CARGO_* variables that would make cargo rebuild
/// the eBPF programs (and everything else) from scratch.
pub fn plain_cargo() -> Command {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.env_remove("LD_LIBRARY_PATH");
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_") {
            cargo.env_remove(key);
        }
    }
    cargo
}

/// The tracer binary, built once per test run (debug profile); or
/// `TRACER_BIN` when set, without running cargo (`cargo xtask matrix` sets
/// it in its QEMU guests, which have no cargo to run).
pub fn tracer_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TRACER_BIN") {
        return PathBuf::from(bin);
    }
    static BUILD: Once = Once::new();
    let root = workspace_root();
    BUILD.call_once(|| {
        let status = plain_cargo()
            .args(["build", "-p", "tracer"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building tracer failed");
    });
    target_dir().join("debug/tracer")
}

/// Whether the tests run as root; prints why a test is skipped when not.
pub fn running_as_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!(
            "{test}: skipped, needs root (it plants processes and mounts in a private namespace)"
        );
    }
    root
}

/// Makes `cmd` run as `nobody` (uid and gid 65534, no supplementary
/// groups; the change of uid drops every capability), for the tests of
/// what tracer does without root.
pub fn as_nobody(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setgroups/setgid/setuid between fork and exec, nothing else.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory removed (with its contents) on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh directory under target/tmp, readable by every user (some
    /// tests run programs from it as `nobody`).
    pub fn new(name: &str) -> Scratch {
        Scratch::under(&target_dir().join("tmp/tracer-tests"), name)
    }

    /// A fresh directory under `base`.
    pub fn under(base: &Path, name: &str) -> Scratch {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch directory");
        set_mode(&path, 0o755);
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, contents).expect("write scratch file");
        set_mode(&p, mode);
        p
    }

    /// A FIFO named `name` in here: a planted shell blocks reading it until
    /// the test writes a line.
    pub fn fifo(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        let made = Command::new("mkfifo").arg(&p).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", p.display());
        p
    }

    /// Copies a file in, keeping it executable.
    pub fn copy_in(&self, from: &str, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::copy(from, &p).expect("copy into scratch directory");
        set_mode(&p, 0o755);
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A process planted by a test, killed (SIGKILL) and reaped on drop.
pub struct Planted {
    pid: u32,
    child: Option<Child>,
    /// It leads its own process group, killed whole on drop.
    group: bool,
}

impl Planted {
    /// Starts `command` with no stdin/stdout and waits until it has exec'd
    /// (its /proc entry no longer shows the test binary).
    pub fn spawn(command: &mut Command) -> Planted {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start planted process");
        let planted = Planted {
            pid: child.id(),
            child: Some(child),
            group: false,
        };
        let me = fs::read_link("/proc/self/exe").ok();
        let pid = planted.pid;
        assert!(
            wait_until(Duration::from_secs(5), || fs::read_link(format!(
                "/proc/{pid}/exe"
            ))
            .ok()
                != me),
            "planted process {pid} never ran its program"
        );
        planted
    }

    /// Like `spawn`, in a process group of its own that is killed whole on
    /// drop: for shell loops that keep starting children.
    pub fn spawn_group(command: &mut Command) -> Planted {
        use std::os::unix::process::CommandExt;
        let mut planted = Planted::spawn(command.process_group(0));
        planted.group = true;
        planted
    }

    /// Takes charge of a process that is not our child (double-forked).
    pub fn adopt(pid: u32) -> Planted {
        Planted {
            pid,
            child: None,
            group: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        if self.group {
            // SAFETY: kill(2) of the process group this test created.
            unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        }
        match self.child.as_mut() {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {
                // SAFETY: plain kill(2) of the process we planted.
                unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// One field of `/proc/PID/stat` after the command name (3 = state, 4 =
/// ppid, 22 = start time).
pub fn stat_field(pid: u32, field: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(field - 3).map(str::to_string)
}

/// What one `tracer` run printed and returned.
pub struct TracerRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TracerRun {
    /// The JSON report (the run must have used --json), checked against
    /// its schema.
    pub fn json(&self) -> Value {
        let report = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "tracer printed no JSON ({e}):\n{}\nstderr: {}",
                self.stdout, self.stderr
            )
        });
        schema::check(&report);
        report
    }

    /// Every finding of a --json run.
    pub fn findings(&self) -> Vec<Value> {
        self.json()["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The findings about one PID.
    pub fn findings_for(&self, pid: u32) -> Vec<Value> {
        self.findings()
            .into_iter()
            .filter(|f| f["process"]["pid"].as_u64() == Some(pid as u64))
            .collect()
    }

    /// The finding of `kind` about `pid`; panics with the whole report when
    /// there is none.
    pub fn finding(&self, kind: &str, pid: u32) -> Value {
        self.findings_for(pid)
            .into_iter()
            .find(|f| f["kind"] == kind)
            .unwrap_or_else(|| {
                panic!(
                    "no {kind} finding for pid {pid}; tracer said:\n{}",
                    self.describe()
                )
            })
    }

    /// Checks the exit code of a whole-host `hidden --json` scan: clean,
    /// findings, or incomplete (6) only because of processes this test did
    /// not start (a sandbox's init that even root may not inspect, say).
    /// Panics with the report otherwise.
    pub fn assert_host_scan_completed(&self) {
        use exit::INCOMPLETE;
        let unchecked_ours: Vec<u64> = match self.code {
            0 | 1 => Vec::new(),
            INCOMPLETE => self.json()["unchecked"]["pids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .filter(|&pid| descends_from_this_test(pid as u32))
                .collect(),
            _ => panic!("unexpected exit code:\n{}", self.describe()),
        };
        assert!(
            unchecked_ours.is_empty(),
            "processes this test started were left unchecked {unchecked_ours:?}:\n{}",
            self.describe()
        );
    }

    /// Everything the run printed, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "exit {}\n{}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `pid` is this test process or runs below it, by the parent links of
/// /proc/PID/stat.
pub fn descends_from_this_test(pid: u32) -> bool {
    let me = std::process::id();
    let mut pid = pid;
    for _ in 0..64 {
        if pid == me {
            return true;
        }
        match stat_field(pid, 4).and_then(|p| p.parse().ok()) {
            Some(parent) if parent != 0 && parent != pid => pid = parent,
            _ => return false,
        }
    }
    false
}

/// The PIDs of a kill-tree plan's members, top-down.
pub fn member_pids(plan: &Value) -> Vec<u64> {
    plan["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["process"]["pid"].as_u64())
        .collect()
}

/// The PIDs of an `ancestry` array, nearest parent first: an array of
/// processes, or of PIDs (`tracer net` names parents by PID).
pub fn pids_of(ancestry: &Value) -> Vec<u64> {
    ancestry
        .as_array()
        .expect("an ancestry array")
        .iter()
        .map(|a| a.as_u64().or(a["pid"].as_u64()).expect("a pid"))
        .collect()
}

/// A finding's evidence value for `label`, if any.
pub fn evidence<'a>(finding: &'a Value, label: &str) -> Option<&'a str> {
    finding["evidence"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == label)
        .and_then(|pair| pair[1].as_str())
}

/// Runs `command` (tracer, directly or through a wrapper) to completion,
/// killing it after `limit`.
pub fn run(command: &mut Command, limit: Duration) -> TracerRun {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tracer");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for tracer"),
        Err(_) => {
            // SAFETY: kill(2) of the child we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("tracer ran longer than {limit:?}");
        }
    };
    TracerRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tracer ARGS...`.
pub fn tracer(args: &[&str]) -> Command {
    let mut c = Command::new(tracer_bin());
    c.args(args);
    c
}

/// Runs `setup` (shell) and then `tracer ARGS...` inside a new private mount
/// namespace: mounts made there never reach the host and disappear when the
/// namespace's last process exits.
pub fn tracer_in_private_mounts(setup: &str, args: &[&str]) -> Command {
    in_private_mounts(setup, &tracer_bin(), args)
}

/// Runs `setup` (shell) and then `program ARGS...` inside a new private
/// mount namespace.
pub fn in_private_mounts(setup: &str, program: &Path, args: &[&str]) -> Command {
    let mut script = format!("set -e\n{setup}\nexec \"$0\"");
    for i in 1..=args.len() {
        script.push_str(&format!(" \"${i}\""));
    }
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(program)
        .args(args);
    c
}

/// Syscall tracepoints need tracefs; mount it in the private namespace
/// bpftrace runs in when the host has not mounted it.
pub const TRACEFS_SETUP: &str =
    "grep -q ' /sys/kernel/tracing ' /proc/self/mountinfo || mount -t tracefs tracefs /sys/kernel/tracing";

/// bpftrace running `script` (with `--unsafe`), and the id of the program
/// it attached, as `bpftool perf` sees it (bpftrace's own feature probes
/// open and close other programs and perf events first). Under TCG in the
/// kernel matrix bpftrace takes tens of seconds to start.
pub fn bpftrace(script: &str) -> (Planted, u32) {
    let bin = Path::new("/usr/bin/bpftrace");
    assert!(bin.exists(), "bpftrace missing: run `cargo xtask setup`");
    let planted = Planted::spawn(&mut in_private_mounts(
        TRACEFS_SETUP,
        bin,
        &["--unsafe", "-e", script],
    ));
    let pid = planted.pid();
    let limit = if std::env::var_os("TRACER_MATRIX").is_some() {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(30)
    };
    let mut id = None;
    assert!(
        wait_until(limit, || {
            id = attached_program(pid);
            id.is_some()
        }),
        "bpftrace {pid} never attached its probe"
    );
    (planted, id.unwrap())
}

/// The program `pid` has attached through a perf event, per `bpftool perf`.
pub fn attached_program(pid: u32) -> Option<u32> {
    let out = Command::new("bpftool")
        .args(["perf", "show", "--json"])
        .output()
        .ok()?;
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    list.as_array()?
        .iter()
        .find(|a| a["pid"] == pid)
        .and_then(|a| a["prog_id"].as_u64())
        .map(|id| id as u32)
}
