//! `tracer hidden`'s kernel section, for real (root, real kernel): BPF
//! programs the test loads with bpftrace are reported with their attach
//! point, owner and helpers, and go when the test stops them; a program
//! pinned in a bpffs the test mounts (in a private mount namespace) and held
//! by no process is reported with its pin; tracer's own programs never are.
//!
//! Other engineers' tracers and the machine's own agent may hold BPF
//! programs at the same time: every assertion is about what this test
//! planted, or about programs tracer itself loaded.
use std::{fs, process::Command, time::Duration};

use serde_json::Value;
use tracer_tests::{
    bpftrace, evidence, run, running_as_root, tracer, tracer_in_private_mounts, Planted, Scratch,
    TracerRun,
};

const LIMIT: Duration = Duration::from_secs(60);

fn kernel_findings(run: &TracerRun) -> Vec<Value> {
    // One list since schema 2: the kernel's findings have layer `kernel`.
    let report = run.json();
    assert!(
        report["kernel"].is_object(),
        "no kernel section:\n{}",
        run.describe()
    );
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["layer"] == "kernel")
        .cloned()
        .collect()
}

/// The kernel finding about BPF program `id`, if any.
fn program_finding(run: &TracerRun, id: u32) -> Option<Value> {
    let prefix = format!("id {id} ");
    kernel_findings(run)
        .into_iter()
        .find(|f| evidence(f, "program").is_some_and(|p| p.starts_with(&prefix)))
}

fn hidden() -> TracerRun {
    let r = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    r.assert_host_scan_completed();
    r
}

#[test]
fn tracers_own_programs_are_recognised_and_kernel_checks_report_nothing_here() {
    if !running_as_root("kernel_clean") {
        return;
    }
    let r = hidden();
    let kernel = &r.json()["kernel"];
    let programs = kernel["bpf"]["programs"].as_array().unwrap();
    let own: Vec<&Value> = programs
        .iter()
        .filter(|p| p["tracer_own"] == true)
        .collect();
    assert!(
        own.iter().any(|p| p["name"] == "bpf_files_iter"),
        "this run's own iterators are listed as tracer's: {kernel:#}"
    );
    for f in kernel_findings(&r) {
        let owners = evidence(&f, "owners").unwrap_or_default();
        assert!(
            !owners.contains("(tracer)"),
            "a tracer-held program was flagged: {f:#}"
        );
    }
    // Function pointers behind /proc and /proc/net are read and are the
    // kernel's own, on this host and in the matrix's guests.
    let pointers = kernel["pointers"].as_array().unwrap();
    assert!(
        pointers.iter().any(|p| p["expected"] == "tcp4_seq_show"),
        "{kernel:#}"
    );
    for p in pointers {
        assert_eq!(p["verdict"], "expected", "{p:#}");
    }
    let notes: Vec<&str> = kernel["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // The syscall dispatch this kernel has is checked and found clean.
    let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    for symbol in ["x64_sys_call", "sys_call_table"] {
        if kallsyms.lines().any(|l| l.ends_with(&format!(" {symbol}"))) {
            assert!(
                notes
                    .iter()
                    .any(|n| n.starts_with(symbol) && n.contains("checked, 0 patched")),
                "{symbol}: {notes:?}"
            );
        }
    }
    if std::path::Path::new("/proc/modules").exists() {
        assert!(
            !notes.iter().any(|n| n.starts_with("no kernel modules")),
            "{notes:?}"
        );
    } else {
        assert!(
            notes.iter().any(|n| n.starts_with("no kernel modules")),
            "{notes:?}"
        );
    }
    assert!(kernel["hidden_modules"].as_array().unwrap().is_empty());
}

#[test]
fn getdents64_program_is_reported_with_attach_point_and_owner() {
    if !running_as_root("kernel_getdents64") {
        return;
    }
    // Counts the test's own getdents64 calls: harmless.
    let me = std::process::id();
    let (bt, id) = bpftrace(&format!(
        "tracepoint:syscalls:sys_exit_getdents64 /pid == {me}/ {{ @n = count(); }}"
    ));
    let r = hidden();
    let f = program_finding(&r, id)
        .unwrap_or_else(|| panic!("no finding for program {id}:\n{}", r.describe()));
    assert_eq!(f["layer"], "kernel");
    assert_eq!(f["kind"], "bpf-sensitive-hook");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["process"]["pid"], bt.pid());
    assert_eq!(
        evidence(&f, "attach"),
        Some("tracepoint/sys_exit_getdents64"),
        "{f:#}"
    );
    assert!(evidence(&f, "owners")
        .unwrap()
        .contains(&format!("pid {} (bpftrace)", bt.pid())));
}

#[test]
fn signal_program_is_high_severity_and_goes_when_stopped() {
    if !running_as_root("kernel_signal") {
        return;
    }
    // signal() only ever fires for a sleeper this test owns, and sleep
    // never calls getpid: the program is armed but never signals.
    let target = Planted::spawn(Command::new("sleep").arg("600"));
    let (bt, id) = bpftrace(&format!(
        "tracepoint:syscalls:sys_enter_getpid /pid == {}/ {{ signal(\"SIGSTOP\"); }}",
        target.pid()
    ));
    let r = hidden();
    assert_eq!(r.code, 1, "{}", r.describe());
    let f = program_finding(&r, id)
        .unwrap_or_else(|| panic!("no finding for program {id}:\n{}", r.describe()));
    assert_eq!(f["kind"], "bpf-dangerous-helper");
    assert_eq!(f["severity"], "high");
    assert!(
        evidence(&f, "helpers").is_some_and(|h| h.contains("bpf_send_signal")),
        "{f:#}"
    );
    assert_eq!(f["process"]["pid"], bt.pid());

    drop(bt);
    let after = hidden();
    assert!(
        program_finding(&after, id).is_none(),
        "program {id} still reported after bpftrace stopped:\n{}",
        after.describe()
    );
}

#[test]
fn pinned_program_held_by_no_process_is_reported_with_its_pin() {
    if !running_as_root("kernel_pin") {
        return;
    }
    let scratch = Scratch::new("kernel-pin");
    let bpffs = scratch.path().join("bpffs");
    fs::create_dir_all(&bpffs).unwrap();
    let pin = bpffs.join("kl_pinned");
    let (bt, id) = bpftrace("tracepoint:syscalls:sys_enter_getppid { @n = count(); }");
    // In tracer's private namespace: mount a bpffs, pin bpftrace's
    // program there, stop bpftrace and wait until its fds are closed, so
    // only the pin keeps the program. The bpffs (and so the program) goes
    // when the namespace does.
    let setup = format!(
        "mount -t bpf bpf {dir}\n\
         bpftool prog pin id {id} {pin}\n\
         kill -KILL {bt}\n\
         while ls /proc/{bt}/fd 2>/dev/null | grep -q .; do sleep 0.05; done",
        dir = bpffs.display(),
        pin = pin.display(),
        bt = bt.pid()
    );
    let r = run(
        &mut tracer_in_private_mounts(&setup, &["hidden", "--json"]),
        LIMIT,
    );
    drop(bt);
    assert_eq!(r.code, 1, "{}", r.describe());
    let f = program_finding(&r, id)
        .unwrap_or_else(|| panic!("no finding for pinned program {id}:\n{}", r.describe()));
    assert_eq!(f["kind"], "bpf-unusual-pin");
    assert_eq!(evidence(&f, "owners"), Some("none"));
    assert_eq!(
        evidence(&f, "pins"),
        Some(pin.to_string_lossy().as_ref()),
        "{f:#}"
    );
    assert!(f["next_step"]
        .as_str()
        .unwrap()
        .contains(&pin.display().to_string()));
}

#[test]
fn status_lists_bpf_programs_that_are_not_tracers() {
    if !running_as_root("kernel_status") {
        return;
    }
    let (bt, id) = bpftrace("tracepoint:syscalls:sys_enter_getpgid { @n = count(); }");
    let r = run(&mut tracer(&["status", "--json"]), LIMIT);
    let status = r.json();
    let programs = status["bpf_programs"].as_array().unwrap();
    let mine = programs
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("program {id} not listed:\n{}", r.describe()));
    assert_eq!(mine["attach"][0], "tracepoint/sys_enter_getpgid");
    assert_eq!(mine["owners"][0]["pid"], bt.pid());
    assert!(
        programs.iter().all(|p| p["tracer_own"] == false),
        "status lists only programs that are not tracer's"
    );
    let human = run(&mut tracer(&["status"]), LIMIT);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.contains(&format!("prog {id} "))
                && l.contains(&format!("{}(bpftrace)", bt.pid()))),
        "{}",
        human.describe()
    );
}
