//! `tracer watch` as a live detector: the masquerade rules of `hidden` on
//! each exec and rename, as `finding` records with the right PID, chain and
//! proposed kill tree; and a busy, benign host that raises nothing above
//! `low`.
use std::{
    ffi::CString, os::unix::process::CommandExt, path::Path, process::Command, time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    evidence,
    hidden::{started_by_this_test, Churn},
    pids_of,
    watch::{wait_for, Watch},
    Planted, Scratch,
};

/// watch with only exec events printed, and no built-in domains looked up.
fn watch() -> Watch {
    Watch::start(&["--exec-only", "--no-default-iocs"])
}

/// The finding of `kind` about `pid`, with the fields every finding has.
fn finding(watch: &Watch, kind: &str, pid: u32) -> Value {
    let f = wait_for(watch, &format!("a {kind} finding for {pid}"), |v| {
        v["type"] == "finding" && v["kind"] == kind && v["process"]["pid"] == pid
    });
    assert_eq!(f["layer"], "masquerade", "{f}");
    assert!(f["summary"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    assert!(
        f["next_step"].as_str().is_some_and(|s| !s.is_empty()),
        "{f}"
    );
    // The chain starts at the process that started it: this test.
    let chain = pids_of(&f["ancestry"]);
    assert_eq!(chain.first(), Some(&u64::from(std::process::id())), "{f}");
    assert_eq!(chain.last(), Some(&1), "the chain reaches PID 1: {f}");
    let members = f["kill_tree"]["pids"].as_array().expect("a kill tree");
    assert!(members.contains(&pid.into()), "kill tree: {f}");
    f
}

#[test]
fn a_program_run_from_dev_shm_is_a_finding() {
    let watch = watch();
    let dir = Scratch::under(Path::new("/dev/shm"), "tracer-rules");
    let program = dir.copy_in("/bin/sleep", "dropped");
    let planted = Planted::spawn(Command::new(&program).arg("60"));
    let f = finding(&watch, "exe-in-temp", planted.pid());
    assert_eq!(f["event"], "exec");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["process"]["exe"], program.to_str().unwrap());
}

#[test]
fn a_program_run_from_a_deleted_file_is_a_finding() {
    let watch = watch();
    let dir = Scratch::new("tracer-rules-deleted");
    let program = dir.copy_in("/bin/sleep", "gone");
    // Opened, unlinked, then run through its descriptor: the file exists
    // nowhere when the program starts.
    let script = format!(
        "exec 3<'{0}' && rm '{0}' && exec /proc/self/fd/3 60",
        program.display()
    );
    let planted = Planted::spawn(Command::new("/bin/bash").args(["-c", &script]));
    let f = finding(&watch, "exe-deleted", planted.pid());
    assert_eq!(f["severity"], "high");
    let exe = f["process"]["exe"].as_str().unwrap();
    assert!(exe.ends_with("/gone (deleted)"), "{f}");
}

#[test]
fn a_memfd_run_is_a_finding() {
    let watch = watch();
    let image = std::fs::read("/bin/sleep").unwrap();
    let name = CString::new("tracer-rules").unwrap();
    let argv = [CString::new("sleep").unwrap(), CString::new("60").unwrap()];
    let mut command = Command::new("/bin/true");
    // SAFETY: between fork and exec only system calls run (memfd_create,
    // write, fexecve); everything they need was allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::memfd_create(name.as_ptr(), 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut at = 0;
            while at < image.len() {
                let n = libc::write(fd, image[at..].as_ptr().cast(), image.len() - at);
                if n <= 0 {
                    return Err(std::io::Error::last_os_error());
                }
                at += n as usize;
            }
            let argv_ptrs = [argv[0].as_ptr(), argv[1].as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            libc::fexecve(fd, argv_ptrs.as_ptr(), envp.as_ptr());
            Err(std::io::Error::last_os_error())
        });
    }
    let planted = Planted::spawn(&mut command);
    let f = finding(&watch, "exe-memfd", planted.pid());
    assert_eq!(f["severity"], "high");
    let exe = f["process"]["exe"].as_str().unwrap();
    assert!(exe.starts_with("/memfd:tracer-rules"), "{f}");
}

#[test]
fn a_process_renaming_itself_to_a_kernel_thread_is_a_finding() {
    let watch = watch();
    // bash names itself kworker/0:2, then waits on a child.
    let planted = Planted::spawn(
        Command::new("/bin/bash")
            .args(["-c", "printf kworker/0:2 > /proc/$$/comm; sleep 60; exit 0"]),
    );
    let f = finding(&watch, "kernel-thread-name", planted.pid());
    assert_eq!(f["event"], "rename", "{f}");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["process"]["comm"], "kworker/0:2");
    assert_eq!(evidence(&f, "old name"), Some("bash"), "{f}");
    assert_eq!(evidence(&f, "new name"), Some("kworker/0:2"), "{f}");
}

#[test]
fn a_process_started_before_watch_renaming_itself_is_a_finding() {
    // Running before watch, so watch knows it from the kernel's task list
    // only, without exe or command line until it reads them: bash waits on
    // a FIFO, then names itself kworker/0:3.
    let dir = Scratch::new("tracer-rules-before");
    let fifo = dir.fifo("go");
    let script = format!(
        "read -r _ < '{}'; printf kworker/0:3 > /proc/$$/comm; sleep 60; exit 0",
        fifo.display()
    );
    let planted = Planted::spawn(Command::new("/bin/bash").args(["-c", &script]));
    let watch = watch();
    std::fs::write(&fifo, "go\n").unwrap();
    let f = finding(&watch, "kernel-thread-name", planted.pid());
    assert_eq!(f["event"], "rename", "{f}");
    assert_eq!(evidence(&f, "new name"), Some("kworker/0:3"), "{f}");
    assert_eq!(f["process"]["exe"], "/usr/bin/bash", "{f}");
}

#[test]
fn findings_below_min_severity_and_repeats_are_counted_not_printed() {
    let watch = Watch::start(&["--exec-only", "--no-default-iocs", "--min-severity", "high"]);
    // exe-in-temp in /var/tmp is medium: left out.
    let dir = Scratch::under(Path::new("/var/tmp"), "tracer-rules-min");
    let medium = Planted::spawn(Command::new(dir.copy_in("/bin/sleep", "dropped")).arg("60"));
    // Two renames to kernel-thread names: one finding.
    let renamed = Planted::spawn(Command::new("/bin/bash").args([
        "-c",
        "printf kworker/0:2 > /proc/$$/comm; printf kworker/1:1 > /proc/$$/comm; sleep 60; exit 0",
    ]));
    let first = finding(&watch, "kernel-thread-name", renamed.pid());
    assert_eq!(first["event"], "rename");
    let (records, summary) = stop_and_collect(watch);
    let about = |pid: u32| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["type"] == "finding" && r["process"]["pid"] == pid)
            .collect()
    };
    assert!(about(medium.pid()).is_empty(), "{:?}", about(medium.pid()));
    assert!(
        about(renamed.pid()).is_empty(),
        "a repeat: {:?}",
        about(renamed.pid())
    );
    assert!(summary["findings"].as_u64().unwrap() >= 1, "{summary}");
    assert!(
        summary["findings_suppressed"].as_u64().unwrap() >= 2,
        "{summary}"
    );
}

/// Stops watch (SIGINT) and returns every record after the ones already
/// read, and its summary.
fn stop_and_collect(watch: Watch) -> (Vec<Value>, Value) {
    unsafe { libc::kill(watch.child.id() as i32, libc::SIGINT) };
    let mut records = Vec::new();
    let summary = watch.wait_for("watch's summary", |v| {
        let done = v["type"] == "summary";
        if !done {
            records.push(v.clone());
        }
        done
    });
    (records, summary)
}

/// A package manager's way of working, over and over: query the package
/// database, unpack into a staging directory, edit and hash files, run a
/// maintainer-script-like shell.
const PACKAGE_WORK: &str = r#"
end=$(( $(date +%s) + SECONDS_TO_RUN ))
while [ "$(date +%s)" -lt "$end" ]; do
    stage=$(mktemp -d)
    dpkg-query -W -f='${Package} ${Version}\n' > "$stage/list" 2>/dev/null || true
    dpkg -L coreutils > "$stage/files" 2>/dev/null || true
    apt-cache policy bash > /dev/null 2>&1 || true
    cp /etc/hostname /etc/os-release "$stage/"
    tar -C "$stage" -cf "$stage/pkg.tar" hostname os-release
    mkdir "$stage/root" && tar -C "$stage/root" -xf "$stage/pkg.tar"
    sed -i 's/^/# /' "$stage/root/hostname"
    find "$stage/root" -type f -print0 | xargs -0 sha256sum > "$stage/sums"
    install -m 0644 "$stage/root/os-release" "$stage/installed"
    sh -c 'set -e; grep -c . "$1" >/dev/null; awk "END{print NR}" "$1" >/dev/null' postinst "$stage/list"
    rm -rf "$stage"
done
"#;

#[test]
fn a_busy_benign_host_raises_nothing_above_low() {
    const SECONDS: u64 = 6;
    let watch = watch();
    let churn = Churn::start(500);
    let work = PACKAGE_WORK.replace("SECONDS_TO_RUN", &SECONDS.to_string());
    let mut packages = Command::new("/bin/sh").args(["-c", &work]).spawn().unwrap();
    // One planted dropper in the storm: the rules were on all along.
    let dir = Scratch::under(Path::new("/dev/shm"), "tracer-rules-busy");
    let dropped = dir.copy_in("/bin/sleep", "dropped");
    std::thread::sleep(Duration::from_secs(SECONDS / 2));
    let planted = Planted::spawn(Command::new(&dropped).arg("60"));
    assert!(packages.wait().unwrap().success());
    let (started, rate) = churn.stop();

    let (records, summary) = stop_and_collect(watch);
    assert!(
        rate > 300.0,
        "the storm ran at {rate:.0} processes/s ({started})"
    );
    // Every exec was checked, or counted lost (other tests share the
    // machine's storm; losses are the loss tests' business).
    let execs =
        summary["seen"]["exec"].as_u64().unwrap() + summary["lost"]["exec"].as_u64().unwrap();
    assert!(execs >= started, "{started} started: {summary}");
    let ours: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "finding" && started_by_this_test(r))
        .collect();
    assert!(
        ours.iter()
            .any(|f| f["process"]["pid"] == planted.pid() && f["kind"] == "exe-in-temp"),
        "the planted dropper was not found: {ours:?}"
    );
    let noisy: Vec<&&Value> = ours
        .iter()
        .filter(|f| f["process"]["pid"] != planted.pid() && f["severity"] != "low")
        .collect();
    assert!(
        noisy.is_empty(),
        "{} findings above low on benign work: {noisy:#?}",
        noisy.len()
    );
}
