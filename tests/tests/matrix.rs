//! The kernel matrix's tests: what a user checks first on a new kernel,
//! run in every guest of `cargo xtask matrix` (Debian's 5.10, 6.1 and 6.12,
//! lockdown none, kprobes, BPF trampolines) and on the host.
//!
//! - `tracer status` names the hooks this kernel gets;
//! - `tracer watch` sees an exec, a fork, an exit and a loopback connect;
//! - `tracer net` lists a held loopback connection with its owner;
//! - `tracer hidden` finds nothing about planted processes on a clean guest;
//! - with the getdents64 hider (tests/fixtures/getdents-hider, an eBPF
//!   program that rewrites getdents64's records with bpf_probe_write_user)
//!   hiding a planted `sleep`, `hidden` names the hidden process, the
//!   program, its helper, attach point and owner; with the hider corrupting
//!   the listing, no command panics;
//! - kprobes on getdents64 (tracefs, and a BPF kprobe) are named.
//!
//! The matrix sets `TRACER_MATRIX=1`: there a test that cannot run fails.
//! Elsewhere (the host: lockdown `integrity`, no kprobes) it prints one
//! line saying why it cannot run and returns.
//!
//! The hider's object comes from `TRACER_HIDER_OBJ`, else from where
//! `cargo xtask matrix` builds it (xtask/src/fixtures.rs): the target
//! folder of this test's loader binary, `getdents-hider/bpfel-unknown-none/
//! release/getdents-hider`. The loader is `TRACER_HIDER_LOADER`, else the
//! tests crate's own `getdents_hider` binary.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    bpftrace, evidence, in_private_mounts, net::connection_holder, net::Connection, pids_of, run,
    running_as_root, tracer, wait_until, watch::Watch, Planted, TracerRun,
};

/// TCG guests run 3-5 times slower than the host.
const LIMIT: Duration = Duration::from_secs(180);

fn in_matrix() -> bool {
    std::env::var("TRACER_MATRIX").is_ok_and(|v| v == "1")
}

/// A test that cannot run on this kernel: a failure in the matrix, one
/// line and a return elsewhere.
fn cannot_run(test: &str, why: &str) {
    assert!(
        !in_matrix(),
        "{test}: cannot run in this matrix guest: {why}"
    );
    eprintln!("{test}: not run here: {why} (it runs in the kernel matrix: cargo xtask matrix)");
}

/// The matrix's guests boot with `-nic none` and may leave `lo` down:
/// bring it up there (the guest is thrown away after the run), once.
fn loopback_up() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let flags = fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(1);
        if in_matrix() && flags & 1 == 0 {
            eprintln!("matrix: lo was down in this guest, bringing it up");
            let up = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            assert!(up.is_ok_and(|s| s.success()), "ip link set lo up failed");
        }
    });
}

// ---------------------------------------------------------------- kernel

/// What this kernel offers, as tracer's hook choice depends on it.
struct KernelFacts {
    /// BPF trampoline code in kallsyms (fentry/fexit possible).
    trampolines: bool,
    /// kprobes built in.
    kprobes: bool,
    /// The active lockdown level; `none` without the LSM.
    lockdown: String,
}

fn kernel_facts() -> KernelFacts {
    let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let has = |sym: &str| {
        kallsyms
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(sym))
    };
    KernelFacts {
        trampolines: kallsyms.contains(" bpf_trampoline_"),
        kprobes: has("register_kprobe"),
        lockdown: lockdown(),
    }
}

/// `[none] integrity confidentiality` -> `none`; securityfs is mounted in
/// a private mount namespace when it is not mounted.
fn lockdown() -> String {
    let out = in_private_mounts(
        "grep -q ' /sys/kernel/security ' /proc/self/mountinfo || \
         mount -t securityfs securityfs /sys/kernel/security || true",
        Path::new("/bin/sh"),
        &[
            "-c",
            "cat /sys/kernel/security/lockdown 2>/dev/null || true",
        ],
    )
    .output()
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    out.split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| "none".into())
}

/// Syscall tracepoints and kprobes need tracefs; mounted in the private
/// namespace a command runs in when the host has not mounted it.
const TRACEFS: &str = "grep -q ' /sys/kernel/tracing ' /proc/self/mountinfo || \
                       mount -t tracefs tracefs /sys/kernel/tracing";

/// Runs `script` (sh) in /sys/kernel/tracing; its stdout, or its stderr
/// as the error.
fn tracefs_sh(script: &str) -> Result<String, String> {
    let out = in_private_mounts(
        TRACEFS,
        Path::new("/bin/sh"),
        &["-c", &format!("cd /sys/kernel/tracing && {script}")],
    )
    .output()
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn hidden() -> TracerRun {
    let r = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    assert_no_panic("hidden", &r);
    r.assert_host_scan_completed();
    r
}

fn assert_no_panic(what: &str, r: &TracerRun) {
    assert!(
        r.code != 101 && !r.stderr.contains("panicked"),
        "tracer {what} panicked:\n{}",
        r.describe()
    );
}

fn kernel_findings(r: &TracerRun) -> Vec<Value> {
    // One list since schema 2: the kernel's findings have layer `kernel`.
    let report = r.json();
    assert!(
        report["kernel"].is_object(),
        "no kernel section:\n{}",
        r.describe()
    );
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["layer"] == "kernel")
        .cloned()
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_string))
        .collect()
}

fn short(v: &[Value]) -> String {
    v.iter()
        .map(|f| format!("{} {}: {}", f["kind"], f["id"], f["summary"]))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------- status

#[test]
fn status_reports_the_hooks_this_kernel_gets() {
    if !running_as_root("matrix_status") {
        return;
    }
    let facts = kernel_facts();
    let r = run(&mut tracer(&["status", "--json"]), LIMIT);
    assert_no_panic("status", &r);
    assert_eq!(r.code, 0, "{}", r.describe());
    let status = r.json();
    let hook = |event: &str| -> String {
        status["hooks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["event"] == event)
            .and_then(|h| h["hook"].as_str())
            .unwrap_or_else(|| panic!("status lists no {event} hook:\n{}", r.describe()))
            .to_string()
    };
    let exec = hook("exec");
    assert!(
        exec == "tp_btf/sched_process_exec" || exec == "raw_tracepoint/sched_process_exec",
        "exec: {exec}"
    );
    assert_eq!(hook("fork"), "tp_btf/sched_process_fork");
    assert_eq!(hook("exit"), "tp_btf/sched_process_exit");
    // Outbound UDP: the cgroup hooks, else fentry, else kprobes; never none.
    let udp = hook("udp");
    assert!(
        ["cgroup/", "fentry/", "kprobe/"]
            .iter()
            .any(|h| udp.starts_with(h)),
        "udp hook {udp:?}:\n{}",
        r.describe()
    );
    // fentry wherever trampolines load (lockdown none); kprobe where only
    // kprobes do; the stable tracepoint otherwise (this host: lockdown
    // integrity refuses fentry, and there are no kprobes).
    let unlocked = facts.lockdown == "none";
    let expected = if facts.trampolines && unlocked {
        "fentry/tcp_connect"
    } else if facts.kprobes && unlocked {
        "kprobe/tcp_connect"
    } else {
        "raw_tracepoint/inet_sock_set_state"
    };
    let connect = hook("connect");
    assert!(
        connect.starts_with(expected),
        "connect hook {connect:?}, expected {expected} (trampolines {}, kprobes {}, lockdown {}):\n{}",
        facts.trampolines,
        facts.kprobes,
        facts.lockdown,
        r.describe()
    );
    let human = run(&mut tracer(&["status"]), LIMIT);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("hook") && l.contains("connect") && l.contains(expected)),
        "{}",
        human.describe()
    );
}

// ----------------------------------------------------------------- watch

#[test]
fn watch_sees_exec_fork_exit_and_a_loopback_connect_with_its_ancestry() {
    if !running_as_root("matrix_watch") {
        return;
    }
    loopback_up();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let watch = Watch::start(&["--no-default-iocs"]);
    let me = u64::from(std::process::id());
    let marker = format!("matrix-watch-{me}");
    // sh forks and waits for /bin/echo (fork, exec, exit), then becomes
    // bash, which connects.
    let udp_port = port.wrapping_add(1).max(1024);
    let script = format!(
        "/bin/echo {marker} >/dev/null; exec bash -c 'echo x >/dev/udp/127.0.0.1/{udp_port}; exec 3<>/dev/tcp/127.0.0.1/{port}'"
    );
    let mut sh = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let sh_pid = u64::from(sh.id());
    assert!(sh.wait().unwrap().success());

    let exec = watch.wait_for("the echo exec", |v| {
        v["type"] == "exec" && v["argv"].get(1).and_then(Value::as_str) == Some(&marker)
    });
    assert_eq!(exec["filename"], "/bin/echo");
    assert_eq!(exec["ppid"].as_u64(), Some(sh_pid), "{exec:#}");
    assert_eq!(pids_of(&exec["ancestry"])[..2], [sh_pid, me], "{exec:#}");
    // The kernel's own record of where it lives (offsets from this
    // kernel's BTF): the host's namespaces, its PID the same there.
    let ns = &exec["namespaces"];
    assert!(ns["pid"].as_u64().is_some_and(|n| n > 0), "{exec:#}");
    assert!(ns["mnt"].as_u64().is_some_and(|n| n > 0), "{exec:#}");
    assert_eq!(ns["ns_pid"], exec["pid"], "{exec:#}");
    assert!(ns.get("separate").is_none(), "on the host: {exec:#}");

    // bash's /dev/udp connects a UDP socket and writes to it.
    let udp = watch.wait_for("the loopback UDP datagram", |v| {
        v["type"] == "connect"
            && v["protocol"] == "udp"
            && v["dport"].as_u64() == Some(u64::from(udp_port))
    });
    assert_eq!(udp["udp_call"], "connect", "{udp:#}");
    assert_eq!(udp["pid"].as_u64(), Some(sh_pid), "{udp:#}");

    let connect = watch.wait_for("the loopback connect", |v| {
        v["type"] == "connect" && v["dport"].as_u64() == Some(u64::from(port))
    });
    assert_eq!(connect["daddr"], "127.0.0.1");
    assert_eq!(connect["pid"].as_u64(), Some(sh_pid), "bash is sh exec'd");
    let chain = pids_of(&connect["ancestry"]);
    assert_eq!(chain.first(), Some(&me), "{connect:#}");
    assert_eq!(chain.last(), Some(&1), "{connect:#}");

    let (status, summary) = watch.stop();
    assert!(status.success(), "watch exits 0 on SIGINT: {status}");
    for kind in ["exec", "fork", "exit", "connect"] {
        assert!(
            summary["seen"][kind].as_u64().is_some_and(|n| n > 0),
            "no {kind} event counted: {summary:#}"
        );
    }
    assert_eq!(summary["events_lost"].as_u64(), Some(0), "{summary:#}");
    drop(listener);
}

// ------------------------------------------------------------------- net

#[test]
fn net_lists_a_held_loopback_connection_with_its_owner() {
    if !running_as_root("matrix_net") {
        return;
    }
    loopback_up();
    let conn = Connection::open();
    let port = conn.port();
    let holder = connection_holder(port);
    let r = run(&mut tracer(&["net", "--json", "--no-default-iocs"]), LIMIT);
    assert_no_panic("net", &r);
    assert_eq!(r.code, 0, "{}", r.describe());
    let report = r.json();
    let remote = format!("127.0.0.1:{port}");
    let conns = report["connections"].as_array().unwrap();
    let held_by = |pid: u32| {
        conns.iter().find(|c| {
            c["protocol"] == "tcp"
                && c["remote"] == remote.as_str()
                && c["owners"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o["pid"] == pid))
        })
    };
    let mine = held_by(std::process::id()).unwrap_or_else(|| {
        panic!(
            "this test's connection to {remote} not listed:\n{}",
            r.describe()
        )
    });
    assert_eq!(mine["state"], "ESTAB", "{mine:#}");
    let planted = held_by(holder.pid()).unwrap_or_else(|| {
        panic!(
            "the planted holder {}'s connection to {remote} not listed:\n{}",
            holder.pid(),
            r.describe()
        )
    });
    let owner = planted["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["pid"] == holder.pid())
        .unwrap();
    assert_eq!(owner["fd"], 3, "{owner:#}");
    assert_eq!(
        pids_of(&owner["ancestry"]).first(),
        Some(&u64::from(std::process::id())),
        "{owner:#}"
    );
}

// ---------------------------------------------------------------- hidden

#[test]
fn hidden_finds_nothing_about_planted_processes_on_a_clean_guest() {
    if !running_as_root("matrix_clean") {
        return;
    }
    loopback_up();
    let sleeper = Planted::spawn(Command::new("sleep").arg("600"));
    let conn = Connection::open();
    let holder = connection_holder(conn.port());
    let r = hidden();
    let ours: Vec<Value> = r
        .findings()
        .into_iter()
        .filter(|f| {
            [sleeper.pid(), holder.pid()]
                .iter()
                .any(|&p| f["process"]["pid"].as_u64() == Some(u64::from(p)))
        })
        .collect();
    assert!(
        ours.is_empty(),
        "findings about planted processes:\n{}",
        short(&ours)
    );
    let kernel: Vec<Value> = r
        .findings()
        .into_iter()
        .filter(|f| f["layer"] == "kernel")
        .chain(kernel_findings(&r))
        .collect();
    if in_matrix() {
        assert!(
            kernel.is_empty(),
            "kernel-layer findings on a clean guest:\n{}",
            short(&kernel)
        );
        assert_eq!(r.code, 0, "a clean guest: {}", r.describe());
    } else if !kernel.is_empty() {
        eprintln!(
            "matrix_clean: not asserted here (a shared host): {} kernel-layer findings",
            kernel.len()
        );
    }
}

// ----------------------------------------------------------- the hider

/// The running loader, holding the hider's programs; killed and reaped on
/// drop (the programs go with it).
struct Hider {
    child: Child,
}

impl Hider {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Hider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hider_object() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_HIDER_OBJ") {
        return PathBuf::from(p);
    }
    // <target>/debug/getdents_hider -> <target>/getdents-hider/...
    let loader = Path::new(env!("CARGO_BIN_EXE_getdents_hider"));
    loader
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target"))
        .join("getdents-hider/bpfel-unknown-none/release/getdents-hider")
}

fn hider_loader() -> PathBuf {
    std::env::var_os("TRACER_HIDER_LOADER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_getdents_hider")))
}

/// Starts the hider on `pid` in `mode` and waits until it is attached;
/// `None` (after saying why, or failing in the matrix) when it cannot run.
fn start_hider(test: &str, pid: u32, mode: &str) -> Option<Hider> {
    let object = hider_object();
    if !object.is_file() {
        cannot_run(
            test,
            &format!(
                "no getdents64 hider object at {} (`cargo xtask matrix` builds it; or set TRACER_HIDER_OBJ)",
                object.display()
            ),
        );
        return None;
    }
    let mut child = Command::new(hider_loader())
        .arg(&object)
        .arg(pid.to_string())
        .arg(mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the getdents64 hider's loader");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut hider = Hider { child };
    // The verifier walks the record loop once per record: slow under TCG.
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(line) if line == "attached" => Some(hider),
        Ok(line) => panic!("the hider's loader printed {line:?}"),
        Err(_) => {
            let status = hider.child.try_wait().ok().flatten();
            let mut err = String::new();
            if let Some(mut e) = hider.child.stderr.take() {
                if status.is_some() {
                    let _ = e.read_to_string(&mut err);
                }
            }
            let why = match status {
                Some(s) => format!("the hider's loader failed ({s}): {}", err.trim()),
                None => "the hider's loader never attached (2 minutes)".into(),
            };
            cannot_run(test, &why);
            None
        }
    }
}

/// Whether `pid` is in this process's own (libc) listing of /proc.
fn listed_in_proc(pid: u32) -> bool {
    let name = pid.to_string();
    fs::read_dir("/proc")
        .map(|d| d.flatten().any(|e| e.file_name().to_str() == Some(&name)))
        .unwrap_or(false)
}

/// The kernel finding about the hider's exit program, held by `owner`.
fn hider_program_finding(r: &TracerRun, owner: u32) -> Option<Value> {
    kernel_findings(r).into_iter().find(|f| {
        evidence(f, "program").is_some_and(|p| p.contains("\"getdents_exit\""))
            && evidence(f, "owners").is_some_and(|o| o.contains(&format!("pid {owner} ")))
    })
}

#[test]
fn hider_in_hide_mode_is_named_with_its_helper_attach_point_and_owner() {
    const TEST: &str = "matrix_hider_hide";
    if !running_as_root(TEST) {
        return;
    }
    let sleeper = Planted::spawn(Command::new("sleep").arg("600"));
    let pid = sleeper.pid();
    let Some(hider) = start_hider(TEST, pid, "hide") else {
        return;
    };
    assert!(
        wait_until(Duration::from_secs(5), || !listed_in_proc(pid)),
        "the hider is attached but /proc still lists {pid}"
    );
    assert!(
        Path::new(&format!("/proc/{pid}/status")).exists(),
        "only the listing hides it"
    );

    let r = hidden();
    assert_eq!(r.code, 1, "{}", r.describe());
    let hidden_f = r.finding("hidden-from-proc", pid);
    assert_eq!(hidden_f["layer"], "kernel", "{hidden_f:#}");
    assert_eq!(hidden_f["severity"], "critical", "{hidden_f:#}");

    let prog = hider_program_finding(&r, hider.pid()).unwrap_or_else(|| {
        panic!(
            "no kernel finding for the hider's getdents_exit program held by {}:\n{}",
            hider.pid(),
            short(&kernel_findings(&r))
        )
    });
    assert_eq!(prog["layer"], "kernel");
    assert!(
        ["bpf-dangerous-helper", "bpf-sensitive-hook"].contains(&prog["kind"].as_str().unwrap()),
        "{prog:#}"
    );
    assert_eq!(prog["severity"], "high", "{prog:#}");
    assert!(
        evidence(&prog, "helpers").is_some_and(|h| h.contains("bpf_probe_write_user")),
        "helpers: {prog:#}"
    );
    assert_eq!(prog["process"]["pid"], hider.pid(), "owner: {prog:#}");
    let hider_pid = hider.pid();
    drop(hider);
    assert!(
        wait_until(Duration::from_secs(5), || listed_in_proc(pid)),
        "{pid} back in /proc once the hider is gone"
    );

    // Where it is attached, and what it likely hides.
    // Before Linux 6.6 a perf-event link does not say which tracepoint it
    // is on (aya attaches through one and closes the event's fd): tracer
    // must say so, and still link the writer of user memory to the hiding.
    let attach = evidence(&prog, "attach").unwrap_or_default().to_string();
    let unknown = attach.contains("does not say which event");
    assert!(
        attach.contains("sys_exit_getdents64") || unknown,
        "the attach point of the hider {hider_pid}'s program is neither named nor said unknown: {prog:#}"
    );
    let reasons: Vec<&str> = prog["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[0] == "reason")
        .filter_map(|e| e[1].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("bpf_probe_write_user"))
            && (unknown || reasons.iter().any(|r| r.contains("getdents64"))),
        "both reasons: {reasons:?}"
    );
    // Each names the other.
    let (hid, pid_id) = (
        hidden_f["id"].as_str().unwrap().to_string(),
        prog["id"].as_str().unwrap().to_string(),
    );
    assert!(ids(&prog["related"]).contains(&hid), "{prog:#}");
    assert!(ids(&hidden_f["related"]).contains(&pid_id), "{hidden_f:#}");
    assert!(
        prog["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e[0] == "likely hides"
                && e[1]
                    .as_str()
                    .is_some_and(|h| h.starts_with(&format!("pid {pid}:")))),
        "{prog:#}"
    );
}

#[test]
fn hider_in_corrupt_mode_crashes_no_command() {
    const TEST: &str = "matrix_hider_corrupt";
    if !running_as_root(TEST) {
        return;
    }
    let sleeper = Planted::spawn(Command::new("sleep").arg("600"));
    let pid = sleeper.pid();
    let Some(hider) = start_hider(TEST, pid, "corrupt") else {
        return;
    };

    let r = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    assert_no_panic("hidden", &r);
    assert!(
        [1, 6].contains(&r.code),
        "findings (or incomplete): {}",
        r.describe()
    );
    let report = r.json();
    let corrupt = r
        .findings()
        .into_iter()
        .find(|f| f["kind"] == "corrupt-directory-listing")
        .unwrap_or_else(|| panic!("no corrupt-directory-listing finding:\n{}", r.describe()));
    assert_eq!(corrupt["layer"], "kernel", "{corrupt:#}");
    // The other views still ran to their end.
    for view in ["K", "P", "L", "S"] {
        assert!(
            report["views"][view]["count"].is_u64(),
            "view {view} missing: {:#}",
            report["views"]
        );
    }
    assert!(report["connection_views"]["P"].is_object(), "{report:#}");
    let prog = hider_program_finding(&r, hider.pid())
        .unwrap_or_else(|| panic!("no finding for the hider:\n{}", short(&kernel_findings(&r))));

    let watch = Watch::start(&["--no-default-iocs"]);
    for _ in 0..5 {
        let _ = Command::new("ls")
            .arg("/proc")
            .stdout(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(600));
    }
    let (code, stderr) = watch.stop_collecting();
    assert!(
        code == 0 && !stderr.contains("panicked"),
        "watch exited {code}: {stderr}"
    );

    let net = run(&mut tracer(&["net", "--json", "--no-default-iocs"]), LIMIT);
    assert_no_panic("net", &net);
    assert_eq!(net.code, 0, "{}", net.describe());
    let plan = run(&mut tracer(&["kill-tree", &pid.to_string()]), LIMIT);
    assert_no_panic("kill-tree", &plan);
    assert!(sleeper_alive(pid), "kill-tree without --kill kills nothing");

    // The process views are what read the rewritten listing; the kernel
    // checks (already run above) would make 50 runs take a quarter of an
    // hour in a TCG guest.
    let started = std::time::Instant::now();
    for n in 0..50 {
        let r = run(
            &mut tracer(&["hidden", "--json", "--no-kernel-checks"]),
            LIMIT,
        );
        assert!(
            r.code != 101 && !r.stderr.contains("panicked"),
            "run {n} of hidden panicked:\n{}",
            r.describe()
        );
        assert!([0, 1, 6].contains(&r.code), "run {n}: {}", r.describe());
    }
    eprintln!(
        "{TEST}: 50 runs of hidden in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(hider);
    // Last, so that a missing link does not hide a crash above.
    assert!(
        ids(&prog["related"]).contains(&corrupt["id"].as_str().unwrap().to_string()),
        "the hider is not linked to the corrupt listing: {prog:#}"
    );
}

fn sleeper_alive(pid: u32) -> bool {
    tracer_tests::stat_field(pid, 3).is_some_and(|s| s != "Z")
}

// ------------------------------------------------- kprobes and ftrace

/// A kprobe defined and enabled through tracefs's kprobe_events, removed
/// on drop.
struct TracefsKprobe {
    event: String,
}

impl TracefsKprobe {
    fn add(function: &str) -> Result<TracefsKprobe, String> {
        let event = format!("tracer_matrix/getdents_{}", std::process::id());
        tracefs_sh(&format!(
            "echo 'p:{event} {function}' >> kprobe_events && echo 1 > events/{event}/enable"
        ))?;
        Ok(TracefsKprobe { event })
    }
}

impl Drop for TracefsKprobe {
    fn drop(&mut self) {
        let e = &self.event;
        let _ = tracefs_sh(&format!(
            "echo 0 > events/{e}/enable; echo '-:{e}' >> kprobe_events"
        ));
    }
}

const GETDENTS: &str = "__x64_sys_getdents64";

/// The kprobes on getdents64 (tracefs, bpftrace) and the run that saw
/// them; `None` when this kernel has no kprobes.
struct Hooked {
    kprobe: TracefsKprobe,
    bpftrace: Planted,
    prog_id: u32,
    /// enabled_functions lists getdents64 (kprobes through ftrace).
    via_ftrace: bool,
    run: TracerRun,
}

fn hook_getdents64(test: &str) -> Option<Hooked> {
    let facts = kernel_facts();
    if !facts.kprobes {
        cannot_run(test, "this kernel has no kprobes (CONFIG_KPROBES off)");
        return None;
    }
    let kprobe = match TracefsKprobe::add(GETDENTS) {
        Ok(k) => k,
        Err(e) => {
            cannot_run(
                test,
                &format!("kprobe_events refused a kprobe on {GETDENTS}: {e}"),
            );
            return None;
        }
    };
    let (bpftrace, prog_id) = bpftrace(&format!("kprobe:{GETDENTS} {{ @n = count(); }}"));
    let via_ftrace = tracefs_sh("cat enabled_functions").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().next() == Some(GETDENTS))
    });
    let run = hidden();
    Some(Hooked {
        kprobe,
        bpftrace,
        prog_id,
        via_ftrace,
        run,
    })
}

fn hook_finding(findings: &[Value], kind: &str) -> Option<Value> {
    findings
        .iter()
        .find(|f| f["kind"] == kind && evidence(f, "function") == Some(GETDENTS))
        .cloned()
}

fn bpf_program_finding(findings: &[Value], id: u32) -> Option<Value> {
    let prefix = format!("id {id} ");
    findings
        .iter()
        .find(|f| evidence(f, "program").is_some_and(|p| p.starts_with(&prefix)))
        .cloned()
}

#[test]
fn kprobes_on_getdents64_are_named() {
    const TEST: &str = "matrix_kprobes";
    if !running_as_root(TEST) {
        return;
    }
    let Some(h) = hook_getdents64(TEST) else {
        return;
    };
    let findings = kernel_findings(&h.run);
    let all = short(&findings);

    let kp = hook_finding(&findings, "kprobe-hook")
        .unwrap_or_else(|| panic!("no kprobe-hook on {GETDENTS}:\n{all}"));
    assert_eq!(kp["severity"], "high", "{kp:#}");
    assert_eq!(kp["layer"], "kernel");
    assert!(
        evidence(&kp, "hook").is_some_and(|d| d.contains(&h.kprobe.event)),
        "the kprobe's definition names it: {kp:#}"
    );

    let prog = bpf_program_finding(&findings, h.prog_id)
        .unwrap_or_else(|| panic!("no finding for bpftrace's program {}:\n{all}", h.prog_id));
    assert_eq!(prog["kind"], "bpf-sensitive-hook", "{prog:#}");
    assert!(
        evidence(&prog, "attach").is_some_and(|a| a.contains(&format!("kprobe/{GETDENTS}"))),
        "{prog:#}"
    );
    assert_eq!(prog["process"]["pid"], h.bpftrace.pid(), "{prog:#}");

    if h.via_ftrace {
        let ft = hook_finding(&findings, "ftrace-hook").unwrap_or_else(|| {
            panic!("enabled_functions lists {GETDENTS}, tracer does not:\n{all}")
        });
        assert_eq!(ft["severity"], "high", "{ft:#}");
    }

    drop(h);
    let after = kernel_findings(&hidden());
    assert!(
        hook_finding(&after, "kprobe-hook").is_none(),
        "the kprobe is gone once removed:\n{}",
        short(&after)
    );
}

#[test]
fn ftrace_hook_on_getdents64_names_the_kprobes_behind_it() {
    const TEST: &str = "matrix_ftrace_owner";
    if !running_as_root(TEST) {
        return;
    }
    let Some(h) = hook_getdents64(TEST) else {
        return;
    };
    if !h.via_ftrace {
        cannot_run(TEST, &format!("enabled_functions does not list {GETDENTS}"));
        return;
    }
    let findings = kernel_findings(&h.run);
    let all = short(&findings);
    let ft = hook_finding(&findings, "ftrace-hook")
        .unwrap_or_else(|| panic!("no ftrace-hook on {GETDENTS}:\n{all}"));
    let kp = hook_finding(&findings, "kprobe-hook")
        .unwrap_or_else(|| panic!("no kprobe-hook on {GETDENTS}:\n{all}"));
    let prog = bpf_program_finding(&findings, h.prog_id)
        .unwrap_or_else(|| panic!("no finding for bpftrace's program {}:\n{all}", h.prog_id));
    // The ftrace hook is the kprobes' mechanism: it should say whose.
    let related = ids(&ft["related"]);
    assert!(
        related.contains(&kp["id"].as_str().unwrap().to_string())
            && related.contains(&prog["id"].as_str().unwrap().to_string()),
        "the ftrace hook on {GETDENTS} names neither the kprobe nor bpftrace (pid {}) behind it:\n{ft:#}",
        h.bpftrace.pid()
    );
}
