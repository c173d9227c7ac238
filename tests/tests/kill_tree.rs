//! `tracer kill-tree`, for real (root): a watchdog shell loop relaunching a
//! dropped "miner" is stopped for good, its program quarantined, its
//! persistence reported; bad targets are refused; a malformed indicator
//! file is rejected with its line number.
//!
//! Run serially: `cargo test -p tracer-tests --test kill_tree -- --test-threads=1`.
//! Every spawned process is in a process group killed on drop; global files
//! (/etc/crontab, /etc/rc.local) are only ever shadowed inside a private
//! mount namespace.
use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use tracer_tests::exit::{BAD_INPUT, NO_MATCH, REFUSED};
use tracer_tests::tracer_bin;

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests signal processes and mount over /etc in a private namespace: run them as root"
    );
}

/// Runs tracer with `args`; kills it if it runs longer than `limit`.
fn run_tracer(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(tracer_bin());
    cmd.args(args).env_remove("TRACER_PERSISTENCE_ROOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_limited(cmd, limit)
}

fn run_limited(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory under /tmp (a dropper's favourite), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-kt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `sh -c 'while true; do ./miner 1000; sleep 0.2; done'` in a scratch
/// directory, where `miner` is a copy of sleep(1). The whole tree is one
/// process group, killed on drop.
struct Watchdog {
    shell: Child,
    dir: Scratch,
}

impl Watchdog {
    fn start(name: &str) -> Self {
        require_root();
        let dir = Scratch::new(name);
        fs::copy("/bin/sleep", dir.0.join("miner")).unwrap();
        fs::set_permissions(dir.0.join("miner"), fs::Permissions::from_mode(0o755)).unwrap();
        let shell = Command::new("sh")
            .args(["-c", "while true; do ./miner 1000; sleep 0.2; done"])
            .current_dir(&dir.0)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Watchdog { shell, dir }
    }

    fn miner_path(&self) -> PathBuf {
        self.dir.0.join("miner")
    }

    /// The PID of the miner the loop is running now.
    fn wait_for_miner(&self) -> u32 {
        let path = self.miner_path();
        wait_for(Duration::from_secs(5), || {
            running_with_exe(&path)
                .into_iter()
                .find(|&pid| ppid_of(pid) == Some(self.shell.id()))
        })
        .expect("the watchdog started no miner")
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.shell.id() as i32), libc::SIGKILL) };
        let _ = self.shell.wait();
    }
}

fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    Some(after_comm.split_whitespace().map(String::from).collect())
}

fn ppid_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Alive and not a zombie.
fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

/// Running processes whose executable is `path` (deleted or not).
fn running_with_exe(path: &Path) -> Vec<u32> {
    let want = path.to_string_lossy().into_owned();
    let deleted = format!("{want} (deleted)");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|l| l.to_string_lossy() == want || l.to_string_lossy() == deleted)
        })
        .filter(|&pid| is_running(pid))
        .collect()
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Kills the watchdog's miner with --kill --quarantine and checks that the
/// tree is gone for good and the copy is faithful.
fn kill_and_check(w: &mut Watchdog, miner: u32, original_sha: &str) {
    let shell = w.shell.id();
    let quarantine = w.dir.0.join("q");
    let out = run_tracer(
        &[
            "kill-tree",
            &miner.to_string(),
            "--kill",
            "--quarantine",
            quarantine.to_str().unwrap(),
        ],
        &[("TRACER_RESPAWN_CHECK_MS", "1000")],
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("kill time: "), "{stdout}");
    assert!(stdout.contains("nothing came back"), "{stdout}");
    // The plan named both, with reasons, before acting.
    assert!(stdout.contains(&format!("{shell}  sh ")), "{stdout}");
    assert!(
        stdout.contains(&format!("{miner}  miner  the target")),
        "{stdout}"
    );

    // The watchdog shell (our child) is dead, and so is the miner.
    let reaped = wait_for(Duration::from_secs(2), || w.shell.try_wait().unwrap());
    assert!(reaped.is_some(), "the watchdog shell survived");
    assert!(wait_for(Duration::from_secs(2), || (!is_running(miner))
        .then_some(()))
    .is_some());
    // Nothing relaunches within 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let back = running_with_exe(&w.miner_path());
        assert!(back.is_empty(), "the miner came back: {back:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // One read-only copy named by its SHA-256, with its record.
    let copy = quarantine.join(original_sha);
    let meta = fs::metadata(&copy)
        .unwrap_or_else(|e| panic!("no quarantined copy {}: {e}\n{stdout}", copy.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o400);
    assert_eq!(sha256_of(&copy), original_sha);
    assert_eq!(
        fs::metadata(&quarantine).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(quarantine.join(format!("{original_sha}.json"))).unwrap())
            .unwrap();
    assert_eq!(record["pid"], miner);
    assert_eq!(record["sha256"], original_sha);
    assert_eq!(record["original_path"], w.miner_path().to_str().unwrap());
    assert_eq!(record["cmdline"][0], "./miner");
    assert_eq!(record["user"], "root");
    // The shell is a system binary: not copied.
    let copies = fs::read_dir(&quarantine).unwrap().count();
    assert_eq!(copies, 2, "expected one copy and one record");
}

#[test]
fn watchdog_loop_and_miner_are_killed_and_quarantined() {
    let mut w = Watchdog::start("loop");
    let miner = w.wait_for_miner();
    let sha = sha256_of(&w.miner_path());

    // The dry run signals nothing and names the command to run.
    let dry = run_tracer(
        &["kill-tree", &miner.to_string(), "--json"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    tracer_tests::schema::check(&plan);
    let members: Vec<u64> = plan["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["process"]["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(members, [w.shell.id() as u64, miner as u64]);
    assert_eq!(
        plan["command"],
        format!("sudo tracer kill-tree {miner} --kill")
    );
    assert!(is_running(miner) && is_running(w.shell.id()));

    kill_and_check(&mut w, miner, &sha);
}

#[test]
fn a_deleted_miner_is_still_killed_and_quarantined() {
    let mut w = Watchdog::start("deleted");
    let miner = w.wait_for_miner();
    let sha = sha256_of(&w.miner_path());
    fs::remove_file(w.miner_path()).unwrap();
    let exe = fs::read_link(format!("/proc/{miner}/exe")).unwrap();
    assert!(exe.to_string_lossy().ends_with(" (deleted)"));

    let dry = run_tracer(
        &["kill-tree", &miner.to_string()],
        &[],
        Duration::from_secs(10),
    );
    assert!(
        text(&dry.stdout).contains("miner  the target"),
        "{}",
        text(&dry.stdout)
    );

    kill_and_check(&mut w, miner, &sha);
}

#[test]
fn crontab_and_rc_local_lines_are_reported_inside_a_private_namespace() {
    let w = Watchdog::start("persist");
    let miner = w.wait_for_miner();
    let dir = w.dir.0.display().to_string();
    let shadow = Scratch::new("etc");
    fs::write(
        shadow.0.join("crontab"),
        format!(
            "# m h dom mon dow user command\nSHELL=/bin/sh\n*/5 * * * * root {dir}/miner 1000\n"
        ),
    )
    .unwrap();
    fs::write(
        shadow.0.join("rc.local"),
        format!("#!/bin/sh -e\ncd {dir} && ./miner 1000 &\nexit 0\n"),
    )
    .unwrap();
    fs::create_dir_all(shadow.0.join("upper")).unwrap();
    fs::create_dir_all(shadow.0.join("work")).unwrap();
    let before = [
        real_file_state("/etc/crontab"),
        real_file_state("/etc/rc.local"),
    ];

    // Inside the namespace only: when a file is missing on this host, an
    // overlay (its writes land in the scratch directory) gives the bind
    // mount something to cover.
    let s = shadow.0.display();
    let script = format!(
        "set -e
         if [ ! -e /etc/crontab ] || [ ! -e /etc/rc.local ]; then
           mount -t overlay overlay -o lowerdir=/etc,upperdir={s}/upper,workdir={s}/work /etc
           touch /etc/crontab /etc/rc.local
         fi
         mount --bind {s}/crontab /etc/crontab
         mount --bind {s}/rc.local /etc/rc.local
         exec {tracer} kill-tree {miner}",
        tracer = tracer_bin().display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env_remove("TRACER_PERSISTENCE_ROOT");
    let out = run_limited(cmd, Duration::from_secs(20));
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "/etc/crontab:3  [crontab, T1053.003] */5 * * * * root {dir}/miner 1000"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "/etc/rc.local:2  [rc.local, T1037.004] cd {dir} && ./miner 1000 &"
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains("/etc/crontab:1") && !stdout.contains("/etc/rc.local:3"),
        "{stdout}"
    );

    // The real files were never touched, and the miner still runs (dry run).
    assert_eq!(
        before,
        [
            real_file_state("/etc/crontab"),
            real_file_state("/etc/rc.local")
        ]
    );
    assert!(is_running(miner));
}

/// Whether a file exists, and its content.
fn real_file_state(path: &str) -> Option<Vec<u8>> {
    fs::read(path).ok()
}

#[test]
fn persistence_root_can_point_at_a_scratch_tree() {
    let w = Watchdog::start("root");
    let miner = w.wait_for_miner();
    let dir = w.dir.0.display().to_string();
    let root = Scratch::new("root-tree");
    let write = |rel: &str, body: String| {
        let p = root.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    };
    write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n".into());
    write(
        "var/spool/cron/crontabs/root",
        format!("@reboot {dir}/miner 1000\n"),
    );
    write(
        "etc/systemd/system/kworker.service",
        format!("[Unit]\nDescription=x\n[Service]\nExecStart={dir}/miner\n"),
    );
    write(
        "root/.bashrc",
        "alias ll='ls -l'\n(pgrep -x miner || ./miner 1000 &)\n".into(),
    );

    let out = run_tracer(
        &["kill-tree", &miner.to_string(), "--json"],
        &[("TRACER_PERSISTENCE_ROOT", root.0.to_str().unwrap())],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    tracer_tests::schema::check(&plan);
    let hits: Vec<(String, u64)> = plan["persistence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let file = h["file"].as_str().unwrap();
            (
                file.strip_prefix(root.0.to_str().unwrap())
                    .unwrap()
                    .to_string(),
                h["line_no"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hits,
        [
            ("/var/spool/cron/crontabs/root".to_string(), 1),
            ("/etc/systemd/system/kworker.service".to_string(), 4),
            ("/root/.bashrc".to_string(), 2),
        ]
    );
}

#[test]
fn an_unwritable_quarantine_fails_before_anything_is_stopped() {
    let w = Watchdog::start("noquarantine");
    let miner = w.wait_for_miner();
    let out = run_tracer(
        &[
            "kill-tree",
            &miner.to_string(),
            "--kill",
            "--quarantine",
            "/proc/no-such-dir",
        ],
        &[("TRACER_RESPAWN_CHECK_MS", "0")],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(BAD_INPUT), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("quarantine"),
        "{}",
        text(&out.stderr)
    );
    // Neither killed nor left frozen.
    for pid in [w.shell.id(), miner] {
        let state = stat_fields(pid).map(|f| f[0].clone());
        assert_eq!(state.as_deref(), Some("S"), "pid {pid}");
    }
}

/// Asserts a refusal: exit code 5, one line on stderr, nothing on stdout.
fn assert_refused(args: &[&str], why: &str) {
    let out = run_tracer(args, &[], Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(REFUSED),
        "{args:?}: {stderr}{}",
        text(&out.stdout)
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains(why),
        "{args:?}: expected {why:?} in {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
}

#[test]
fn bad_targets_are_refused_with_one_line() {
    require_root();
    assert_refused(&["kill-tree", "1"], "PID 1");
    assert_refused(&["kill-tree", "1", "--kill"], "PID 1");
    let kthreadd = fs::read_to_string("/proc/2/comm").unwrap();
    assert_eq!(kthreadd.trim(), "kthreadd");
    assert_refused(&["kill-tree", "2", "--kill"], "kernel thread");
    // This test process is tracer's parent.
    assert_refused(
        &["kill-tree", &std::process::id().to_string(), "--kill"],
        "ancestor of tracer",
    );
    // The shell's PID is tracer's own once the shell execs it.
    let mut own = Command::new("sh");
    own.args([
        "-c",
        &format!("exec {} kill-tree $$ --kill", tracer_bin().display()),
    ]);
    let out = run_limited(own, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(REFUSED), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("tracer itself"),
        "{}",
        text(&out.stderr)
    );
    // A PID nobody holds: one that just exited and was reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    assert_refused(
        &["kill-tree", &gone_pid.to_string(), "--kill"],
        &format!("no process with PID {gone_pid}"),
    );
    assert_refused(&["kill-tree", "0"], "is not a PID");
    // Not a number: a file, which nothing runs (exit 7, one line).
    let out = run_tracer(&["kill-tree", "not-a-pid"], &[], Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(NO_MATCH), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no such file"), "{stderr}");
}

#[test]
fn a_malformed_indicator_file_names_its_line() {
    require_root();
    let dir = Scratch::new("ioc");
    let bad = dir.0.join("bad.txt");
    fs::write(&bad, "# pools\n127.0.0.2:3333\n127.0.0.300\nlocalhost\n").unwrap();
    let out = run_tracer(
        &["watch", "--ioc", bad.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(BAD_INPUT), "{stderr}");
    assert!(stderr.contains("bad.txt:3"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// What a file looks like from outside: content hash, mode and mtime.
fn fingerprint(path: &Path) -> (String, u32, i64) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).unwrap();
    (
        sha256_of(path),
        meta.mode(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    )
}

#[test]
fn an_unsafe_quarantine_directory_is_refused_and_the_kill_goes_on() {
    use std::os::unix::fs::{chown, lchown, symlink};
    require_root();
    let base = Scratch::new("unsafeq");
    let victim = base.0.join("shadow");
    fs::write(&victim, "root:*:19000:0:99999:7:::\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fingerprint(&victim);
    // The miner is a copy of sleep: its quarantine name is sleep's hash.
    let sha = sha256_of(Path::new("/bin/sleep"));
    // Every name tracer could write, planted by an unprivileged user as a
    // link to the victim.
    let plant = |dir: &Path, miner: u32| {
        for name in [
            format!(".partial-{miner}"),
            sha.clone(),
            format!("{sha}.json"),
        ] {
            let _ = fs::remove_file(dir.join(&name));
            symlink(&victim, dir.join(&name)).unwrap();
            lchown(dir.join(&name), Some(65534), Some(65534)).unwrap();
        }
    };
    let owned_by_nobody = base.0.join("q-nobody");
    fs::create_dir(&owned_by_nobody).unwrap();
    chown(&owned_by_nobody, Some(65534), Some(65534)).unwrap();
    let open_to_all = base.0.join("q-open");
    fs::create_dir(&open_to_all).unwrap();
    fs::set_permissions(&open_to_all, fs::Permissions::from_mode(0o1777)).unwrap();
    let behind_link = base.0.join("etc-like");
    fs::create_dir(&behind_link).unwrap();
    let link_to_dir = base.0.join("q-link");
    symlink(&behind_link, &link_to_dir).unwrap();

    for (dir, planted_in, why) in [
        (&owned_by_nobody, &owned_by_nobody, "owned by uid 65534"),
        (&open_to_all, &open_to_all, "writable by other users"),
        (&link_to_dir, &behind_link, "symbolic link"),
    ] {
        let w = Watchdog::start("unsafeq-tree");
        let miner = w.wait_for_miner();
        plant(planted_in, miner);
        let out = run_tracer(
            &[
                "kill-tree",
                &miner.to_string(),
                "--kill",
                "--quarantine",
                dir.to_str().unwrap(),
            ],
            &[("TRACER_RESPAWN_CHECK_MS", "200")],
            Duration::from_secs(60),
        );
        let stderr = text(&out.stderr);
        let refusals: Vec<&str> = stderr.lines().filter(|l| l.contains(why)).collect();
        assert_eq!(refusals.len(), 1, "{why}: one line expected:\n{stderr}");
        assert!(
            refusals[0].contains("killing without quarantine"),
            "{}",
            refusals[0]
        );
        assert!(
            !is_running(miner),
            "{why}: the miner was not killed:\n{}",
            text(&out.stdout)
        );
        assert!(
            !is_running(w.shell.id()),
            "{why}: the watchdog was not killed"
        );
        assert_eq!(
            fingerprint(&victim),
            before,
            "{why}: the link's target changed"
        );
        let names: Vec<String> = fs::read_dir(planted_in)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            3,
            "{why}: tracer wrote into {}: {names:?}",
            planted_in.display()
        );
    }
}
