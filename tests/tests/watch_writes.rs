//! `tracer watch` reporting hiding and persistence as they happen: a
//! write to a cron file in a fake root, a write to /etc/ld.so.preload made
//! in a private mount namespace, and a bind mount over /proc/PID made in
//! one, each a finding naming the process that did it and its chain.
use std::process::{Command, Stdio};

use serde_json::Value;
use tracer_tests::{evidence, pids_of, running_as_root, watch::Watch, Planted, Scratch};

/// `tracer watch --json` printing no exec or connect lines (a comm no
/// process has), so what it prints is start, findings and summary.
struct Findings {
    watch: Watch,
    start: Value,
}

impl Findings {
    fn watch(env: &[(&str, &str)]) -> Findings {
        let (watch, start) =
            Watch::start_with(&["--no-default-iocs", "--comm", "no-such-comm-x"], env);
        Findings { watch, start }
    }

    /// The hook the start record names for `event`.
    fn hook(&self, event: &str) -> String {
        let hooks = self.start["hooks"].as_array().unwrap();
        let hook = hooks.iter().find(|h| h["event"] == event);
        let hook = hook.unwrap_or_else(|| panic!("no {event} hook in {}", self.start));
        hook["hook"].as_str().unwrap().to_string()
    }

    /// The first finding watch raised about a process of this test.
    fn first_finding(&self, what: &str) -> Value {
        let me = std::process::id() as u64;
        self.watch.wait_for(what, |v| {
            v["type"] == "finding"
                && (v["process"]["pid"].as_u64() == Some(me)
                    || pids_of(&v["ancestry"]).contains(&me))
        })
    }

    /// The first finding about a process of this test, checked to be
    /// about `file`.
    fn finding_about(&self, file: &str) -> Value {
        let f = self.first_finding(&format!("a finding about {file}"));
        assert_eq!(evidence(&f, "file"), Some(file), "first finding: {f}");
        f
    }
}

/// Runs `script` under sh and returns its PID once it is done; sh itself
/// writes (a redirected builtin, or a program it `exec`s), so the writer is
/// that PID and its parent is this test.
fn sh_writes(script: &str) -> u32 {
    let mut child = Command::new("sh").args(["-c", script]).spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success(), "{script} failed");
    pid
}

#[test]
fn cron_file_written_in_a_fake_root_names_the_writer_and_its_chain() {
    if !running_as_root("cron_file_written_in_a_fake_root_names_the_writer_and_its_chain") {
        return;
    }
    let root = Scratch::new("live-cron");
    std::fs::create_dir_all(root.path().join("etc/cron.d")).unwrap();
    let root_path = root.path().to_str().unwrap();
    let watch = Findings::watch(&[("TRACER_PERSISTENCE_ROOT", root_path)]);
    let hook = watch.hook("write");
    assert_eq!(hook, "fanotify FAN_CLOSE_WRITE");

    // Not a persistence place: no finding; then the cron file.
    let other = root.path().join("etc/hostname");
    sh_writes(&format!("echo host > {}", other.display()));
    let job = root.path().join("etc/cron.d/job");
    let writer = sh_writes(&format!(
        "echo '* * * * * root /dev/shm/.x/run' > {}",
        job.display()
    ));

    let f = watch.finding_about(job.to_str().unwrap());
    assert_eq!(f["kind"], "persistence-written");
    assert_eq!(f["layer"], "crontab");
    assert_eq!(f["process"]["pid"].as_u64(), Some(writer as u64));
    assert_eq!(f["process"]["comm"], "sh");
    assert_eq!(
        pids_of(&f["ancestry"]).first(),
        Some(&(std::process::id() as u64)),
        "the writer's parent is this test: {f}"
    );
    assert_eq!(evidence(&f, "place"), Some("crontab (T1053.003)"));
    // Medium, or high when the machine's own agent (run from a memfd) is
    // in the chain: never low.
    assert!(f["severity"] == "medium" || f["severity"] == "high", "{f}");

    // A file moved in (a rename writes nothing at the place) is seen too.
    let staged = root.write("staged-job", "* * * * * root /dev/shm/.x/run\n", 0o644);
    let moved = root.path().join("etc/cron.d/moved-job");
    let mover = sh_writes(&format!("exec mv {} {}", staged.display(), moved.display()));
    let f = watch.finding_about(moved.to_str().unwrap());
    assert_eq!(f["kind"], "persistence-written");
    assert_eq!(f["process"]["pid"].as_u64(), Some(mover as u64));
    assert_eq!(f["process"]["comm"], "mv");
    assert!(
        f["summary"].as_str().unwrap().contains("moved a file to"),
        "{f}"
    );
}

#[test]
fn ld_so_preload_written_in_a_private_mount_namespace_is_high() {
    if !running_as_root("ld_so_preload_written_in_a_private_mount_namespace_is_high") {
        return;
    }
    // The host has no /etc/ld.so.preload to bind a file over, and the
    // real one is never touched: a scratch /etc is bound over /etc in a
    // private mount namespace, where the write lands in the scratch file.
    let etc = Scratch::new("live-preload-etc");
    let watch = Findings::watch(&[]);
    let script = format!(
        "mount --bind {} /etc && echo /nonexistent/hook.so > /etc/ld.so.preload && sleep 3",
        etc.path().display()
    );
    let writer = Planted::spawn_group(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stderr(Stdio::null()),
    );

    let f = watch.finding_about("/etc/ld.so.preload");
    assert_eq!(f["kind"], "ld-so-preload-written");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["process"]["pid"].as_u64(), Some(writer.pid() as u64));
    assert_eq!(
        pids_of(&f["ancestry"]).first(),
        Some(&(std::process::id() as u64)),
        "{f}"
    );
    assert!(
        evidence(&f, "mount namespace").is_some_and(|ns| ns.starts_with("mnt:[")),
        "the writer's namespace is named: {f}"
    );
    assert_eq!(
        std::fs::read_to_string(etc.path().join("ld.so.preload")).unwrap(),
        "/nonexistent/hook.so\n",
        "the write landed in the scratch file"
    );
}

#[test]
fn bind_mount_over_proc_pid_in_a_private_namespace_names_the_mounter_and_its_chain() {
    if !running_as_root(
        "bind_mount_over_proc_pid_in_a_private_namespace_names_the_mounter_and_its_chain",
    ) {
        return;
    }
    let hidden = Planted::spawn(Command::new("sleep").arg("60"));
    let empty = Scratch::new("live-mount-empty");
    let watch = Findings::watch(&[]);
    let hook = watch.hook("mount");
    assert!(
        hook.starts_with("tp_btf/cap_capable") || hook.starts_with("tracepoint/syscalls/"),
        "{hook}"
    );
    let script = format!(
        "mount --bind {} /proc/{} && sleep 3",
        empty.path().display(),
        hidden.pid()
    );
    let shell = Planted::spawn_group(Command::new("unshare").args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));

    let f = watch.first_finding("the mount over /proc/PID");
    assert_eq!(f["kind"], "proc-pid-mount", "{f}");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["process"]["comm"], "mount");
    let hides = format!("/proc/{}", hidden.pid());
    assert_eq!(evidence(&f, "hides"), Some(hides.as_str()));
    assert_eq!(evidence(&f, "mount point"), Some(hides.as_str()));
    assert!(evidence(&f, "result").is_some(), "{f}");
    assert_eq!(
        pids_of(&f["ancestry"])[..2],
        [shell.pid() as u64, std::process::id() as u64],
        "mount < sh (the unshare'd shell) < this test: {f}"
    );
    assert!(
        evidence(&f, "mount namespace").is_some_and(|ns| ns.starts_with("mnt:[")),
        "the mounter's namespace is named: {f}"
    );
}

/// The capabilities the shipped unit grants (`CapabilityBoundingSet=`),
/// as setpriv names them (`+bpf,+perfmon,...`).
fn unit_capabilities() -> String {
    let unit =
        std::fs::read_to_string(tracer_tests::workspace_root().join("packaging/tracer.service"))
            .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn under_the_units_capabilities_watch_still_sees_writes_and_datagrams() {
    if !running_as_root("under_the_units_capabilities_watch_still_sees_writes_and_datagrams") {
        return;
    }
    let caps = unit_capabilities();
    let root = Scratch::new("unit-caps-cron");
    std::fs::create_dir_all(root.path().join("etc/cron.d")).unwrap();
    // Root under setpriv keeps only the unit's set: at exec its permitted
    // and effective sets become the bounding set.
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--bounding-set=-all,{caps}"))
        .args(["--inh-caps=-all", "--"])
        .arg(tracer_tests::tracer_bin())
        .args([
            "watch",
            "--json",
            "--no-default-iocs",
            "--comm",
            "no-such-comm-x",
        ])
        .env("TRACER_PERSISTENCE_ROOT", root.path());
    let watch = tracer_tests::watch::Watch::run(&mut command);
    let start = watch.wait_for("the start record", |v| v["type"] == "start");
    let hook = |event: &str| tracer_tests::watch::hook_of(&start, event);
    assert_eq!(hook("write"), "fanotify FAN_CLOSE_WRITE", "{start}");
    assert_ne!(hook("udp"), "none", "{start}");
    let effective = std::fs::read_to_string(format!("/proc/{}/status", watch.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        .unwrap();
    let effective = u64::from_str_radix(&effective, 16).unwrap();
    assert_eq!(
        effective.count_ones() as usize,
        caps.split(',').count(),
        "watch ran with exactly the unit's {caps}"
    );

    let job = root.path().join("etc/cron.d/job");
    let writer = sh_writes(&format!(
        "echo '@reboot root /dev/shm/.x/run' > {}",
        job.display()
    ));
    let me = std::process::id() as u64;
    let f = watch.wait_for("the cron write's finding", |v| {
        v["type"] == "finding" && pids_of(&v["ancestry"]).contains(&me)
    });
    assert_eq!(f["kind"], "persistence-written", "{f}");
    assert_eq!(f["process"]["pid"].as_u64(), Some(writer as u64), "{f}");
    watch.interrupt();
}
