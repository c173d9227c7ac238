//! `tracer hidden` and connections, for real (root, real kernel, loopback):
//! each test opens a loopback connection, plants one way of hiding it (a
//! replaced `ss` or `netstat` first in PATH, a preload library inside a
//! private mount namespace), and checks that tracer names the connection,
//! its owner and the layer that lies.
//!
//! Run serially: `cargo test -p tracer-tests --test hidden_net -- --test-threads=1`.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use tracer_tests::exit::FINDINGS;
use tracer_tests::{
    evidence,
    net::{
        connection_finding, connection_holder, is_connection_finding, net_hider,
        process_and_connection_hider, Connection, ConnectionChurn, FakeTool,
    },
    run, running_as_root, tracer, tracer_in_private_mounts, wait_until, TracerRun,
};

const LIMIT: Duration = Duration::from_secs(60);

fn connection_findings(run: &TracerRun) -> Vec<serde_json::Value> {
    run.findings()
        .into_iter()
        .filter(is_connection_finding)
        .collect()
}

/// The finding about the test's client socket, checked for what every
/// connection finding must say.
fn client_finding(result: &TracerRun, conn: &Connection, kind: &str) -> serde_json::Value {
    let found = connection_findings(result);
    let f = connection_finding(&found, conn.client_inode())
        .unwrap_or_else(|| panic!("no finding for the client socket:\n{}", result.describe()));
    assert_eq!(f["kind"], kind, "{f:#}");
    assert_eq!(f["process"]["pid"], std::process::id(), "owner: {f:#}");
    let port = conn.port();
    assert_eq!(
        f["connection"]["remote"],
        format!("127.0.0.1:{port}"),
        "{f:#}"
    );
    assert!(
        evidence(&f, "connection").is_some_and(|c| c.contains("ESTAB")),
        "{f:#}"
    );
    assert!(f["id"].as_str().is_some_and(|id| id.starts_with(kind)));
    f
}

#[test]
fn a_replaced_ss_that_drops_a_connection_is_the_liar() {
    if !running_as_root("fake_ss") {
        return;
    }
    let conn = Connection::open();
    let fake = FakeTool::hiding_port("ss", conn.port());
    let result = run(
        tracer(&["hidden", "--json"]).env("PATH", fake.path_var()),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = client_finding(&result, &conn, "connection-hidden-from-ss");
    assert_eq!(f["layer"], "ss");
    let program = fake.program.display().to_string();
    assert_eq!(evidence(&f, "ss program"), Some(program.as_str()));
    assert!(evidence(&f, "file")
        .is_some_and(|v| v.contains("sha256") && v.contains("not from any package")));
    assert!(evidence(&f, "file type").is_some_and(|v| v.contains("script")));
    assert_eq!(evidence(&f, "/usr/bin/ss"), Some("lists it"), "{f:#}");
    if Command::new("dpkg").arg("--version").output().is_ok() {
        assert!(evidence(&f, "dpkg --verify iproute2").is_some(), "{f:#}");
    }
    assert!(f["next_step"].as_str().unwrap().contains(&program));
    // The listener and the accepted side are hidden too, each reported once.
    let found = connection_findings(&result);
    for inode in [
        tracer_tests::net::socket_inode(&conn.listener),
        tracer_tests::net::socket_inode(&conn.server),
    ] {
        let f = connection_finding(&found, inode).expect("listener and server side");
        assert_eq!(f["kind"], "connection-hidden-from-ss");
    }
    assert_eq!(
        found.len(),
        3,
        "only the planted connection: {}",
        result.describe()
    );
}

#[test]
fn a_replaced_netstat_that_drops_a_connection_is_the_liar() {
    if !running_as_root("fake_netstat") {
        return;
    }
    let conn = Connection::open();
    let fake = FakeTool::hiding_port("netstat", conn.port());
    let result = run(
        tracer(&["hidden", "--json"]).env("PATH", fake.path_var()),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = client_finding(&result, &conn, "connection-hidden-from-netstat");
    assert_eq!(f["layer"], "netstat");
    let program = fake.program.display().to_string();
    assert_eq!(evidence(&f, "netstat program"), Some(program.as_str()));
    assert_eq!(evidence(&f, "/usr/bin/netstat"), Some("lists it"), "{f:#}");
    if Command::new("dpkg").arg("--version").output().is_ok() {
        assert!(evidence(&f, "dpkg --verify net-tools").is_some(), "{f:#}");
    }
    // The human report shows the connection views and the finding.
    let human = run(tracer(&["hidden"]).env("PATH", fake.path_var()), LIMIT);
    assert!(
        human.stdout.contains("connection-hidden-from-netstat")
            && human
                .stdout
                .lines()
                .any(|l| l.starts_with("connection views: K=")
                    && l.contains("P=")
                    && l.contains("S2=")),
        "{}",
        human.describe()
    );
}

#[test]
fn a_preload_library_that_filters_proc_net_tcp_is_blamed_on_libc() {
    if !running_as_root("net_preload_hider") {
        return;
    }
    let conn = Connection::open();
    let hider = net_hider(conn.port());
    let setup = hider.activate_script();

    // The plant works: inside the namespace, netstat misses the connection.
    let port = conn.port();
    let netstat = run(
        &mut tracer_in_private_mounts(&format!("{setup}\nnetstat -tan >&2"), &["--version"]),
        LIMIT,
    );
    assert!(
        !netstat.stderr.contains(&format!(":{port} ")),
        "the hider did not hide port {port} from netstat:\n{}",
        netstat.stderr
    );

    let result = run(
        &mut tracer_in_private_mounts(&setup, &["hidden", "--json"]),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let f = client_finding(&result, &conn, "connection-hidden-from-libc");
    assert_eq!(f["layer"], "libc");
    let library = hider.library.display().to_string();
    assert_eq!(evidence(&f, "/etc/ld.so.preload"), Some(library.as_str()));
    assert!(
        evidence(&f, &format!("library {library}")).is_some_and(|v| v.contains("sha256")),
        "the library's hash is shown: {f:#}"
    );
    // netstat reads /proc/net through libc: a consequence, not a liar.
    assert!(
        evidence(&f, "also missing from").is_some_and(|v| v.contains("netstat")),
        "{f:#}"
    );
    assert!(
        connection_findings(&result)
            .iter()
            .all(|f| f["kind"] == "connection-hidden-from-libc"),
        "{}",
        result.describe()
    );
}

#[test]
fn a_hidden_process_and_its_hidden_connection_point_at_each_other() {
    if !running_as_root("hidden_process_and_connection") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = connection_holder(port);
    let (_server, _) = listener.accept().unwrap();
    let pid = holder.pid();
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_link(format!("/proc/{pid}/fd/3"))
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:["))
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.ends_with("sleep"))
        }),
        "the holder never held its connection"
    );
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
    let inode: u64 = link.to_string_lossy()[8..]
        .trim_end_matches(']')
        .parse()
        .unwrap();
    let hider = process_and_connection_hider(pid, port);
    let result = run(
        &mut tracer_in_private_mounts(&hider.activate_script(), &["hidden", "--json"]),
        LIMIT,
    );
    assert_eq!(result.code, FINDINGS, "{}", result.describe());
    let process = result.finding("hidden-from-libc", pid);
    let found = connection_findings(&result);
    let connection = connection_finding(&found, inode)
        .unwrap_or_else(|| panic!("no finding for the held socket:\n{}", result.describe()));
    assert_eq!(connection["kind"], "connection-hidden-from-libc");
    assert_eq!(connection["process"]["pid"], pid, "{connection:#}");
    assert_eq!(connection["process"]["comm"], "sleep");
    assert_eq!(
        evidence(&connection, "held by"),
        Some(format!("pid {pid} fd 3").as_str())
    );
    assert_eq!(connection["related"], serde_json::json!([process["id"]]));
    assert_eq!(process["related"], serde_json::json!([connection["id"]]));
}

#[test]
fn a_clean_run_gives_no_connection_finding() {
    if !running_as_root("clean_connections") {
        return;
    }
    let conn = Connection::open();
    let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
    let report = result.json();
    // F is diffed only with the kernel's socket owners.
    for view in ["P", "N", "L", "S"] {
        assert!(
            report["connection_views"][view]["count"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "connection view {view}: {}",
            result.describe()
        );
    }
    let found = connection_findings(&result);
    assert!(
        found.is_empty(),
        "connection findings on a clean machine (the test's client is inode {}):\n{}",
        conn.client_inode(),
        result.describe()
    );
}

#[test]
fn hundreds_of_connections_a_second_raise_no_connection_finding() {
    if !running_as_root("connection_churn") {
        return;
    }
    const RATE: u64 = 200;
    const DURATION: Duration = Duration::from_secs(10);
    tracer_tests::tracer_bin();
    let churn = ConnectionChurn::start(RATE);
    let began = Instant::now();
    let mut scans = 0;
    let mut false_positives = Vec::new();
    // At least DURATION and at least three scans, however slow a busy
    // machine makes each one.
    while began.elapsed() < DURATION || scans < 3 {
        let result = run(&mut tracer(&["hidden", "--json"]), LIMIT);
        result.assert_host_scan_completed();
        scans += 1;
        false_positives.extend(connection_findings(&result));
    }
    let (made, rate) = churn.stop();
    eprintln!(
        "{made} connections in {:?} ({rate:.0}/s), {scans} scans",
        began.elapsed()
    );
    assert!(
        rate >= 150.0,
        "the churn reached only {rate:.0} connections/s"
    );
    assert!(
        false_positives.is_empty(),
        "false positives under connection churn:\n{}",
        serde_json::to_string_pretty(&false_positives).unwrap()
    );
}
