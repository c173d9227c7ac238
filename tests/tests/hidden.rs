//! `tracer hidden`, for real (root, real kernel, real /proc, real ps): each
//! test plants one way of hiding or disguising a process, checks that tracer
//! names the process, the layer that lies and what to look at next, and
//! removes what it planted.
//!
//! Run serially: `cargo test -p tracer-tests --test hidden -- --test-threads=1`.
//! Mounts and /etc/ld.so.preload are only ever changed inside a private
//! mount namespace (`unshare -m --propagation private`) that tracer runs in.
use std::{
    fs,
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use tracer_tests::exit::{CLEAN, FINDINGS, INCOMPLETE};
use tracer_tests::{
    evidence,
    hidden::{is_environment_finding, Churn, FakePs, Hider},
    in_private_mounts, run, running_as_root, stat_field, tracer, tracer_in_private_mounts,
    wait_until, Planted, Scratch, TracerRun,
};

const LIMIT: Duration = Duration::from_secs(60);

fn sleeper() -> Planted {
    Planted::spawn(Command::new("sleep").arg("600"))
}

/// The findings that are not about the machine's own oddities (printed).
fn test_findings(run: &TracerRun) -> Vec<serde_json::Value> {
    let (env, own): (Vec<_>, Vec<_>) = run.findings().into_iter().partition(is_environment_finding);
    for f in &env {
        eprintln!(
            "note: this machine itself has an odd process, reported as {} for pid {}: {}",
            f["kind"], f["process"]["pid"], f["summary"]
        );
    }
    own
}

#[test]
fn preload_hider_is_blamed_on_libc_and_named_with_its_library() {
    if !running_as_root("preload_hider") {
        return;
    }
    let victim = sleeper();
    let hider = Hider::build(victim.pid());
    let setup = hider.activate_script();

    // The plant works: inside the namespace, ordinary tools miss the victim.
    let ls = run(
        &mut tracer_in_private_mounts(&format!("{setup}\nls /proc >&2"), &["--version"]),
        LIMIT,
    );
    assert!(
        !ls.stderr.lines().any(|l| l == victim.pid().to_string()),
        "the hider did not hide {} from ls",
        victim.pid()
    );

    let result = run(
        &mut tracer_in_private_mounts(&setup, &["hidden", "--json"]),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = result.finding("hidden-from-libc", victim.pid());
    assert_eq!(f["layer"], "libc");
    assert_eq!(f["process"]["comm"], "sleep");
    let library = hider.library.display().to_string();
    assert_eq!(evidence(&f, "/etc/ld.so.preload"), Some(library.as_str()));
    assert!(
        evidence(&f, &format!("library {library}")).is_some_and(|v| v.contains("sha256")),
        "the library's hash is shown: {f:#}"
    );
    assert!(f["next_step"]
        .as_str()
        .unwrap()
        .contains("/etc/ld.so.preload"));
    // ps, which reads /proc through libc too, is a consequence, not a liar.
    assert!(evidence(&f, "also missing from").is_some_and(|v| v.contains("ps")));
    assert!(
        result
            .findings_for(victim.pid())
            .iter()
            .all(|f| f["kind"] != "hidden-from-ps"),
        "{}",
        result.describe()
    );
}

#[test]
fn tracer_under_an_active_hider_still_sees_the_process_without_the_kernel() {
    if !running_as_root("tracer_not_fooled") {
        return;
    }
    let victim = sleeper();
    let hider = Hider::build(victim.pid());
    // tracer is dynamically linked, so the hider is loaded into tracer too;
    // its own /proc reads use raw system calls and must still see the victim.
    let result = run(
        &mut tracer_in_private_mounts(
            &hider.activate_script(),
            &["hidden", "--json", "--no-kernel"],
        ),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let report = result.json();
    assert!(report["kernel_view"]
        .as_str()
        .unwrap()
        .starts_with("skipped"));
    let f = result.finding("hidden-from-libc", victim.pid());
    assert_eq!(
        f["process"]["exe"], "/usr/bin/sleep",
        "read through raw /proc: {f:#}"
    );
    assert_eq!(f["process"]["cmdline"][1], "600");
}

#[test]
fn empty_mount_over_proc_pid_is_bind_mount_hiding() {
    if !running_as_root("mount_over_proc_pid") {
        return;
    }
    let victim = sleeper();
    let pid = victim.pid();
    let result = run(
        &mut tracer_in_private_mounts(
            &format!("mount -t tmpfs none /proc/{pid}"),
            &["hidden", "--json"],
        ),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = result.finding("proc-pid-mounted", pid);
    assert_eq!(f["layer"], "proc-mount");
    assert!(evidence(&f, "mount")
        .is_some_and(|m| m.contains(&format!("/proc/{pid} ")) && m.contains("tmpfs")));
    assert!(f["next_step"]
        .as_str()
        .unwrap()
        .contains(&format!("umount /proc/{pid}")));
    // The kernel still tells who it is.
    assert_eq!(f["process"]["comm"], "sleep");
}

#[test]
fn another_process_mounted_over_proc_pid_is_bind_mount_hiding() {
    if !running_as_root("bind_over_proc_pid") {
        return;
    }
    let (victim, decoy) = (sleeper(), sleeper());
    let (pid, other) = (victim.pid(), decoy.pid());
    let result = run(
        &mut tracer_in_private_mounts(
            &format!("mount --bind /proc/{other} /proc/{pid}"),
            &["hidden", "--json"],
        ),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = result.finding("proc-pid-mounted", pid);
    let shows = format!("/proc/{pid} shows");
    assert_eq!(
        evidence(&f, &shows),
        Some(format!("process {other}'s entry").as_str()),
        "{f:#}"
    );
    assert!(
        result.findings_for(other).is_empty(),
        "the decoy is not hidden: {}",
        result.describe()
    );
}

#[test]
fn ps_first_in_path_that_filters_a_pid_is_the_liar() {
    if !running_as_root("fake_ps") {
        return;
    }
    let victim = sleeper();
    let fake = FakePs::hiding(victim.pid());
    let result = run(
        tracer(&["hidden", "--json"]).env("PATH", fake.path_var()),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = result.finding("hidden-from-ps", victim.pid());
    assert_eq!(f["layer"], "ps");
    let program = fake.program.display().to_string();
    assert_eq!(evidence(&f, "ps program"), Some(program.as_str()));
    assert!(evidence(&f, "file")
        .is_some_and(|v| v.contains("sha256") && v.contains("not from any package")));
    assert!(evidence(&f, "file type").is_some_and(|v| v.contains("script")));
    assert_eq!(
        evidence(&f, "/bin/ps"),
        Some("lists it"),
        "the packaged ps disagrees: {f:#}"
    );
    if Command::new("dpkg").arg("--version").output().is_ok() {
        assert!(evidence(&f, "dpkg --verify procps").is_some(), "{f:#}");
    }
    assert!(f["next_step"].as_str().unwrap().contains(&program));
}

#[test]
fn without_root_the_kernel_view_is_skipped_in_one_line_and_the_rest_still_works() {
    if !running_as_root("without_root") {
        return;
    }
    let victim = sleeper();
    let fake = FakePs::hiding(victim.pid());
    let as_nobody = |args: &[&str]| {
        let mut c = tracer(args);
        c.env("PATH", fake.path_var());
        run(tracer_tests::as_nobody(&mut c), LIMIT)
    };
    let human = as_nobody(&["hidden"]);
    let skipped: Vec<&str> = human
        .stdout
        .lines()
        .filter(|l| l.contains("kernel view skipped"))
        .collect();
    assert_eq!(skipped.len(), 1, "{}", human.describe());
    assert!(skipped[0].contains("not root"), "{}", skipped[0]);
    let summary = human.stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains("K=skipped") && summary.contains("P=") && summary.contains("S="),
        "{summary}"
    );

    let json = as_nobody(&["hidden", "--json"]);
    assert_eq!(json.code, FINDINGS, "{}", json.describe());
    json.finding("hidden-from-ps", victim.pid());
}

#[test]
fn kernel_thread_names_on_user_processes_are_masquerade() {
    if !running_as_root("kernel_thread_masquerade") {
        return;
    }
    let scratch = Scratch::new("kthread");
    // argv[0] looks like a kernel thread, as `exec -a '[kworker/0:2]' sleep` does.
    let by_argv = Planted::spawn(Command::new("sleep").arg0("[kworker/0:2]").arg("600"));
    // comm renamed through /proc/self/comm (prctl PR_SET_NAME); the shell
    // then blocks opening a FIFO nobody writes to.
    let fifo = scratch.fifo("fifo");
    let by_comm = Planted::spawn(Command::new("bash").args([
        "-c",
        &format!(
            "printf kworker/1:1 > /proc/$$/comm; read -r _ < '{}'",
            fifo.display()
        ),
    ]));
    let renamed = by_comm.pid();
    assert!(wait_until(Duration::from_secs(5), || {
        fs::read_to_string(format!("/proc/{renamed}/comm")).is_ok_and(|c| c.trim() == "kworker/1:1")
    }));

    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    for pid in [by_argv.pid(), renamed] {
        let f = result.finding("kernel-thread-name", pid);
        assert_eq!(f["layer"], "masquerade");
        assert_eq!(f["severity"], "high");
        assert!(f["summary"].as_str().unwrap().contains("kernel thread"));
        assert!(
            evidence(&f, "exe").is_some_and(|e| e.starts_with('/')),
            "{f:#}"
        );
        assert!(evidence(&f, "parents").is_some(), "{f:#}");
        assert!(evidence(&f, "started").is_some(), "{f:#}");
    }
    // Real kernel threads are never flagged.
    assert!(
        result
            .findings()
            .iter()
            .all(|f| f["process"]["ppid"] != 2 && f["process"]["pid"] != 2),
        "{}",
        result.describe()
    );
}

#[test]
fn a_deleted_executable_is_flagged() {
    if !running_as_root("deleted_exe") {
        return;
    }
    let scratch = Scratch::new("deleted");
    let program = scratch.copy_in("/bin/sleep", "dropper");
    let planted = Planted::spawn(Command::new(&program).arg("600"));
    fs::remove_file(&program).unwrap();
    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = result.finding("exe-deleted", planted.pid());
    assert_eq!(f["severity"], "high");
    assert!(
        evidence(&f, "exe").is_some_and(|e| e.ends_with("/dropper (deleted)")),
        "{f:#}"
    );
    assert!(f["next_step"]
        .as_str()
        .unwrap()
        .contains(&format!("/proc/{}/exe", planted.pid())));
}

#[test]
fn a_system_looking_name_in_dev_shm_is_flagged_twice() {
    if !running_as_root("dev_shm_near_miss") {
        return;
    }
    let shm = Scratch::under(std::path::Path::new("/dev/shm"), "tracer-test");
    let program = shm.copy_in("/bin/sleep", "dhpcd");
    let planted = Planted::spawn(Command::new(&program).arg("600"));
    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let place = result.finding("exe-in-temp", planted.pid());
    assert_eq!(place["severity"], "high");
    assert!(place["summary"].as_str().unwrap().contains("/dev/shm/"));
    let name = result.finding("near-miss-name", planted.pid());
    assert!(
        name["summary"].as_str().unwrap().contains("dhcpcd"),
        "{name:#}"
    );
    assert_eq!(evidence(&name, "looks like"), Some("dhcpcd"));
}

#[test]
fn a_non_root_sshd_from_a_working_directory_is_flagged() {
    if !running_as_root("non_root_sshd") {
        return;
    }
    let scratch = Scratch::new("sshd");
    scratch.copy_in("/bin/sleep", "sshd");
    let pid_file = scratch.path().join("pid");
    // Double fork: the shell exits at once, so sshd is re-parented to init.
    let status = Command::new("setsid")
        .args([
            "sh",
            "-c",
            &format!(
                "cd '{}' && setpriv --reuid=nobody --regid=nogroup --clear-groups ./sshd 600 & echo $! > '{}'",
                scratch.path().display(),
                pid_file.display()
            ),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let pid: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let planted = Planted::adopt(pid);
    assert!(wait_until(Duration::from_secs(5), || {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd")
            && stat_field(pid, 4).is_some_and(|ppid| ppid != std::process::id().to_string())
    }));
    let ppid = stat_field(pid, 4).unwrap();
    eprintln!("sshd {pid} runs under parent {ppid}");

    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let user = result.finding("daemon-user", planted.pid());
    assert!(user["summary"].as_str().unwrap().contains("not root"));
    assert_eq!(evidence(&user, "user"), Some("nobody (65534)"));
    assert!(evidence(&user, "parents").is_some_and(|p| p.contains(&format!("({ppid})"))));
    let path = result.finding("daemon-path", planted.pid());
    assert!(path["summary"]
        .as_str()
        .unwrap()
        .contains(&scratch.path().display().to_string()));
    if ppid == "1" {
        assert!(
            result
                .findings_for(pid)
                .iter()
                .all(|f| f["kind"] != "daemon-parent"),
            "init is the expected parent: {}",
            result.describe()
        );
    }
}

#[test]
fn every_view_answers_and_nothing_this_test_runs_is_flagged() {
    if !running_as_root("clean_machine") {
        return;
    }
    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    result.assert_host_scan_completed();
    let report = result.json();
    assert_eq!(report["kernel_view"], "used", "{}", result.describe());
    for view in ["K", "P", "L", "S", "D"] {
        assert!(
            report["views"][view]["count"].as_u64().unwrap_or(0) > 0,
            "view {view}: {}",
            result.describe()
        );
    }
    let own = test_findings(&result);
    assert!(
        own.is_empty(),
        "findings on a clean machine:\n{}",
        result.describe()
    );
    // Kernel findings (BPF programs other tests load) count toward exit 1 too.
    let kernel_findings = report["findings"]
        .as_array()
        .map_or(0, |f| f.iter().filter(|f| f["layer"] == "kernel").count());
    // Nothing found: clean only when everything was checked, never passed
    // off as clean when something was not.
    let unchecked = report["unchecked"]["count"].as_u64().unwrap_or(0);
    if result.findings().is_empty() && kernel_findings == 0 {
        let expected = if unchecked == 0 { CLEAN } else { INCOMPLETE };
        assert_eq!(result.code, expected, "{}", result.describe());
    }

    // The human report ends with one summary line naming every view.
    let human = run(&mut tracer(&["hidden"]), LIMIT);
    let last = human.stdout.lines().last().unwrap_or_default();
    for view in ["K=", "P=", "L=", "S=", "D="] {
        assert!(last.contains(view), "summary line {last:?}");
    }
    assert!(last.contains("finding"), "summary line {last:?}");
}

#[test]
fn hundreds_of_short_lived_processes_a_second_raise_no_false_positive() {
    if !running_as_root("churn") {
        return;
    }
    const RATE: u64 = 400;
    const DURATION: Duration = Duration::from_secs(10);
    tracer_tests::tracer_bin();
    let churn = Churn::start(RATE);
    let began = Instant::now();
    let mut scans = 0;
    let mut false_positives = Vec::new();
    while began.elapsed() < DURATION {
        let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
        result.assert_host_scan_completed();
        scans += 1;
        false_positives.extend(test_findings(&result));
    }
    let (started, rate) = churn.stop();
    eprintln!(
        "{started} processes in {:?} ({rate:.0}/s), {scans} scans",
        began.elapsed()
    );
    assert!(
        rate >= 300.0,
        "the churn reached only {rate:.0} processes/s"
    );
    assert!(scans >= 2, "only {scans} scans in {DURATION:?}");
    assert!(
        false_positives.is_empty(),
        "false positives under churn:\n{}",
        serde_json::to_string_pretty(&false_positives).unwrap()
    );
}

#[test]
fn a_static_tracer_lists_through_ls_and_still_names_the_hider() {
    if !running_as_root("static_tracer") {
        return;
    }
    // Opt-in: a static (musl) build takes minutes; `cargo xtask build-static`
    // makes one, and this test runs when TRACER_STATIC_BIN points at it.
    let Some(static_bin) = std::env::var_os("TRACER_STATIC_BIN") else {
        eprintln!("static_tracer: skipped, set TRACER_STATIC_BIN to a static tracer build");
        return;
    };
    let victim = sleeper();
    let hider = Hider::build(victim.pid());
    let result = run(
        &mut in_private_mounts(
            &hider.activate_script(),
            static_bin.as_ref(),
            &["hidden", "--json"],
        ),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = result.finding("hidden-from-libc", victim.pid());
    assert!(
        evidence(&f, "libc view")
            .is_some_and(|v| v.contains("ls -1 -f /proc") && v.contains("statically linked")),
        "{f:#}"
    );
}
