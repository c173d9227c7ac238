//! A miner in a container (root): a payload run from /tmp in its own PID,
//! mount, network and UTS namespaces (`unshare --pid --fork --mount-proc
//! --net --uts`), its init a shell loop, all in a cgroup named like a
//! Docker container's (made by the test under the cgroup v2 root and
//! removed after). hidden, net and watch name the namespaces and the
//! container; kill-tree plans the payload and the namespace's init, says
//! how to stop the container, and after `--kill` nothing of it runs.
//!
//! Run serially: `cargo test -p tracer-tests --test containers -- --test-threads=1`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    exit::{FINDINGS, NO_MATCH},
    member_pids, run, running_as_root, stat_field, tracer, tracer_in_private_mounts, wait_until,
    watch::Watch,
    Planted, Scratch,
};

const LIMIT: Duration = Duration::from_secs(90);

/// The cgroup v2 root in this mount namespace.
fn cgroup2_root() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            (fields.get(dash + 1) == Some(&"cgroup2")).then(|| PathBuf::from(fields[4]))
        })
        .expect("a cgroup v2 mount")
}

/// A planted "container": its cgroup, the shell that made it (`unshare`
/// runs in the cgroup too) and the payload's path.
struct Container {
    id: String,
    cgroup: PathBuf,
    payload: PathBuf,
    _launcher: Planted,
    _dir: Scratch,
}

impl Container {
    fn start(name: &str) -> Container {
        let dir = Scratch::under(Path::new("/tmp"), name);
        let payload = dir.copy_in(env!("CARGO_BIN_EXE_udp_beacon"), "kdevtmpfsi");
        // 64 hex digits, unique to this run.
        let id: String = format!("{:016x}", std::process::id() as u64 * 0x9e37_79b9)
            .repeat(4)
            .chars()
            .take(64)
            .collect();
        let cgroup = cgroup2_root().join(format!("docker-{id}.scope"));
        fs::create_dir(&cgroup).expect("make the test's cgroup");
        // Inside: loopback up, then a loop that relaunches the payload,
        // which holds a connected UDP socket and sleeps.
        let inner = format!(
            "ip link set lo up; while true; do {} connect 127.0.0.1 5931 1 0; sleep 1; done",
            payload.display()
        );
        let outer = format!(
            "echo $$ > {}/cgroup.procs && exec unshare --pid --fork --mount-proc --net --uts sh -c '{inner}'",
            cgroup.display()
        );
        let launcher = Planted::spawn_group(Command::new("sh").args(["-c", &outer]));
        let c = Container {
            id,
            cgroup,
            payload,
            _launcher: launcher,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_secs(10), || c.payload_pid().is_some()),
            "the payload never started"
        );
        c
    }

    fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Every process in the container's cgroup.
    fn pids(&self) -> Vec<u32> {
        fs::read_to_string(self.cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    fn payload_pid(&self) -> Option<u32> {
        self.pids()
            .into_iter()
            .find(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == self.payload))
    }

    /// The namespace's init: the shell that `unshare --fork` started.
    fn init_pid(&self) -> u32 {
        let payload = self.payload_pid().unwrap();
        stat_field(payload, 4).unwrap().parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Only what this test put in its own cgroup is killed.
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) of a process in the test's own cgroup.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_dir(&self.cgroup);
    }
}

/// What every record of a process in the container must say.
fn assert_in_container(p: &Value, c: &Container, ns_pid: Option<u64>) {
    assert_eq!(p["container"]["runtime"], "docker", "{p}");
    assert_eq!(p["container"]["id"], c.id.as_str(), "{p}");
    let separate: Vec<&str> = p["namespaces"]["separate"]
        .as_array()
        .unwrap_or_else(|| panic!("no namespaces: {p}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for ns in ["pid", "mnt", "net", "uts"] {
        assert!(separate.contains(&ns), "{ns} not separate: {p}");
    }
    if let Some(n) = ns_pid {
        assert_eq!(p["namespaces"]["ns_pid"].as_u64(), Some(n), "{p}");
    }
}

#[test]
fn hidden_and_net_name_the_container_and_filter_by_it() {
    if !running_as_root("hidden_and_net_name_the_container_and_filter_by_it") {
        return;
    }
    let c = Container::start("ct-views");
    let payload = c.payload_pid().unwrap();

    let out = run(
        &mut tracer(&["hidden", "--json", "--container", c.short_id()]),
        LIMIT,
    );
    let findings = out.findings();
    assert!(!findings.is_empty(), "{}", out.describe());
    for f in &findings {
        let p = &f["process"];
        assert_eq!(
            p["container"]["id"],
            c.id.as_str(),
            "a finding from elsewhere: {f}"
        );
    }
    let mine = findings
        .iter()
        .find(|f| f["process"]["pid"].as_u64() == Some(payload.into()))
        .unwrap_or_else(|| panic!("no finding about the payload: {}", out.describe()));
    // Its PID inside: the loop's shell is 1; `ip` was 2; the payload after.
    assert_in_container(&mine["process"], &c, None);
    assert!(mine["process"]["namespaces"]["ns_pid"].as_u64().unwrap() > 1);

    let human = run(&mut tracer(&["hidden", "--container", c.short_id()]), LIMIT);
    assert!(
        human
            .stdout
            .contains(&format!("in: docker:{}", c.short_id())),
        "{}",
        human.describe()
    );

    let out = run(
        &mut tracer(&["net", "--json", "--container", c.short_id()]),
        LIMIT,
    );
    let report = out.json();
    let conns = report["connections"].as_array().unwrap();
    let held = conns
        .iter()
        .flat_map(|s| s["owners"].as_array().unwrap())
        .find(|o| o["pid"].as_u64() == Some(payload.into()))
        .unwrap_or_else(|| panic!("the payload's socket is not listed: {report}"));
    assert_in_container(&held["process"], &c, None);
    assert!(conns.iter().all(|s| s["owners"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["process"]["container"]["id"] == c.id.as_str())));

    let none = run(
        &mut tracer(&["hidden", "--container", "0123456789ab"]),
        LIMIT,
    );
    assert_eq!(none.code, NO_MATCH, "{}", none.describe());
    assert!(none.stderr.contains("--container"), "{}", none.describe());
}

// The container's init hidden from /proc by an empty mount over its
// /proc/PID: /proc says nothing of it, but the kernel's task record holds
// its namespaces and its cgroup id, and that id names the container's
// cgroup directory.
#[test]
fn a_hidden_process_in_a_container_is_still_named_by_its_cgroup() {
    if !running_as_root("a_hidden_process_in_a_container_is_still_named_by_its_cgroup") {
        return;
    }
    let c = Container::start("hidden-in-container");
    let init = c.init_pid();
    let result = run(
        &mut tracer_in_private_mounts(
            &format!("mount -t tmpfs none /proc/{init}"),
            &["hidden", "--json"],
        ),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = result.finding("proc-pid-mounted", init);
    let p = &f["process"];
    assert_eq!(p["cgroup"], format!("/docker-{}.scope", c.id), "{f:#}");
    assert_in_container(p, &c, Some(1));
}

#[test]
fn watch_names_the_container_of_an_exec() {
    if !running_as_root("watch_names_the_container_of_an_exec") {
        return;
    }
    let watch = Watch::start(&["--no-default-iocs", "--comm", "kdevtmpfsi"]);
    let c = Container::start("ct-watch");
    let payload = c.payload.to_str().unwrap().to_string();
    let exec = watch.wait_for("the payload's exec", |v| {
        v["type"] == "exec" && v["filename"] == payload.as_str()
    });
    assert_in_container(&exec, &c, None);
    // The loop's shell, the namespace's init, is its parent: PID 1 inside.
    let parent = &exec["ancestry"][0];
    assert_eq!(parent["namespaces"]["ns_pid"].as_u64(), Some(1), "{exec}");
}

#[test]
fn kill_tree_plans_the_payload_and_its_init_and_says_how_to_stop_the_container() {
    if !running_as_root(
        "kill_tree_plans_the_payload_and_its_init_and_says_how_to_stop_the_container",
    ) {
        return;
    }
    let c = Container::start("ct-kill");
    let payload = c.payload_pid().unwrap();
    let init = c.init_pid();

    let out = run(
        &mut tracer(&["kill-tree", &payload.to_string(), "--json"]),
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    let members = member_pids(&plan);
    assert!(members.contains(&payload.into()), "{plan:#}");
    assert!(
        members.contains(&init.into()),
        "the namespace's init: {plan:#}"
    );
    // The runtime that made it (unshare) is the boundary, never a member.
    assert_eq!(plan["boundary"]["comm"], "unshare", "{plan:#}");
    let stop = format!("docker stop {}", c.short_id());
    assert_eq!(plan["container"]["stop"], stop.as_str(), "{plan:#}");
    assert_eq!(
        plan["container"]["init"].as_u64(),
        Some(init.into()),
        "{plan:#}"
    );

    let human = run(&mut tracer(&["kill-tree", &payload.to_string()]), LIMIT);
    assert!(human.stdout.contains(&stop), "{}", human.describe());

    let killed = run(
        &mut tracer(&["kill-tree", &payload.to_string(), "--kill"]),
        LIMIT,
    );
    assert_eq!(killed.code, 0, "{}", killed.describe());
    assert!(
        wait_until(Duration::from_secs(5), || c.payload_pid().is_none()
            && fs::metadata(format!("/proc/{init}")).is_err()),
        "something of the container still runs: {:?}",
        c.pids()
    );
    // Nothing came back (the loop was its init, and died with it).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.payload_pid(), None, "the payload came back");
}
