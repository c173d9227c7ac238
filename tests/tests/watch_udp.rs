//! `tracer watch` and outbound UDP: a connected socket, `sendto` and
//! `sendmsg` to an address, IPv4 and IPv6, each alerting with its chain
//! when the destination is an indicator; a beacon every 200 ms is one
//! alert and a count; a name from the client's own /etc/hosts (in a
//! private mount namespace) matches a domain indicator. Loopback only:
//! nothing listens, the datagrams are refused and the beacons go on.
use std::process::Command;

use serde_json::Value;
use tracer_tests::{pids_of, running_as_root, watch::Watch, Planted, Scratch};

const BEACON: &str = env!("CARGO_BIN_EXE_udp_beacon");

fn watch_with(iocs: &std::path::Path) -> Watch {
    let (watch, start) = Watch::start_with(
        &[
            "--no-default-iocs",
            "--ioc",
            iocs.to_str().unwrap(),
            // No exec or connect lines: only alerts, findings, summary.
            "--comm",
            "no-such-comm-x",
        ],
        &[],
    );
    let hook = tracer_tests::watch::hook_of(&start, "udp");
    assert!(
        !hook.is_empty() && hook != "none",
        "no UDP hook on this kernel: {start}"
    );
    watch
}

fn beacon(mode: &str, host: &str, port: u16, count: u32, interval_ms: u32) -> Planted {
    Planted::spawn(Command::new(BEACON).args([
        mode,
        host,
        &port.to_string(),
        &count.to_string(),
        &interval_ms.to_string(),
    ]))
}

fn is_alert_of(v: &Value, pid: u32) -> bool {
    v["type"] == "alert" && v["connect"]["pid"].as_u64() == Some(u64::from(pid))
}

#[test]
fn udp_connects_and_sends_to_indicators_alert_with_their_chains() {
    if !running_as_root("udp_connects_and_sends_to_indicators_alert_with_their_chains") {
        return;
    }
    let dir = Scratch::new("udp-iocs");
    let iocs = dir.write(
        "iocs.txt",
        "127.0.0.1:5901\n127.0.0.1:5902\n[::1]:5903\n[::1]:5904\n127.0.0.1:5905\n[::1]:5906\n",
        0o644,
    );
    let watch = watch_with(&iocs);
    for (mode, host, port, daddr) in [
        ("connect", "127.0.0.1", 5901, "127.0.0.1"),
        ("sendto", "127.0.0.1", 5902, "127.0.0.1"),
        ("sendmsg", "::1", 5903, "::1"),
        ("connect", "::1", 5904, "::1"),
        ("sendmsg", "127.0.0.1", 5905, "127.0.0.1"),
        ("sendto", "::1", 5906, "::1"),
    ] {
        let b = beacon(mode, host, port, 1, 0);
        let alert = watch.wait_for(
            &format!("the alert of a UDP {mode} to {host}:{port}"),
            |v| is_alert_of(v, b.pid()),
        );
        let c = &alert["connect"];
        assert_eq!(c["protocol"], "udp", "{alert}");
        let call = if mode == "connect" { "connect" } else { "send" };
        assert_eq!(c["udp_call"], call, "{alert}");
        assert_eq!(c["daddr"], daddr, "{alert}");
        assert_eq!(c["dport"].as_u64(), Some(u64::from(port)), "{alert}");
        assert_eq!(
            pids_of(&c["ancestry"]).first(),
            Some(&u64::from(std::process::id())),
            "the beacon's parent is this test: {alert}"
        );
        assert!(
            alert["kill_tree"]["pids"]
                .as_array()
                .is_some_and(|p| p.contains(&b.pid().into())),
            "{alert}"
        );
    }
}

#[test]
fn a_beacon_every_200ms_is_one_alert_and_a_count() {
    if !running_as_root("a_beacon_every_200ms_is_one_alert_and_a_count") {
        return;
    }
    let dir = Scratch::new("udp-beacon-iocs");
    let iocs = dir.write("iocs.txt", "127.0.0.1:5911\n", 0o644);
    let watch = watch_with(&iocs);
    let b = beacon("sendto", "127.0.0.1", 5911, 15, 200);
    let mut alerts = 0;
    watch.wait_for("the beacon's alert", |v| {
        alerts += is_alert_of(v, b.pid()) as u32;
        alerts > 0
    });
    // The 15 datagrams take 2.8 s; then the summary.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // SAFETY: kill(2) of the watch this test started.
    unsafe { libc::kill(watch.child.id() as i32, libc::SIGINT) };
    let summary = watch.wait_for("the summary", |v| {
        alerts += is_alert_of(v, b.pid()) as u32;
        v["type"] == "summary"
    });
    assert_eq!(alerts, 1, "one alert for the whole beacon");
    let beacons = summary["beacons"].as_array().cloned().unwrap_or_default();
    let mine = beacons
        .iter()
        .find(|x| x["pid"].as_u64() == Some(u64::from(b.pid())))
        .unwrap_or_else(|| panic!("the beacon is not in the summary: {summary}"));
    assert_eq!(mine["datagrams"].as_u64(), Some(15), "{summary}");
    assert_eq!(mine["alerts"].as_u64(), Some(1), "{summary}");
    assert_eq!(mine["daddr"], "127.0.0.1");
}

#[test]
fn a_name_from_the_clients_own_hosts_file_matches_a_domain_indicator() {
    if !running_as_root("a_name_from_the_clients_own_hosts_file_matches_a_domain_indicator") {
        return;
    }
    let dir = Scratch::new("udp-hosts");
    let iocs = dir.write("iocs.txt", "pool.evil-mine.test\n", 0o644);
    let hosts = dir.write(
        "hosts",
        "127.0.0.1 localhost\n127.0.0.1 pool.evil-mine.test\n",
        0o644,
    );
    let watch = watch_with(&iocs);
    // The client resolves the name through /etc/hosts, bound over the
    // real one in a private mount namespace: no DNS query leaves.
    let script = format!(
        "mount --bind {} /etc/hosts && exec {BEACON} sendto pool.evil-mine.test 5921 1 0",
        hosts.display()
    );
    let client = Planted::spawn(Command::new("unshare").args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    let alert = watch.wait_for("the alert naming the hosts entry", |v| {
        is_alert_of(v, client.pid())
    });
    let c = &alert["connect"];
    assert_eq!(c["domain"], "pool.evil-mine.test", "{alert}");
    assert_eq!(c["domain_source"], "hosts", "{alert}");
    assert_eq!(alert["indicator"], "pool.evil-mine.test", "{alert}");
    assert_eq!(c["daddr"], "127.0.0.1", "{alert}");
}

#[test]
fn net_shows_an_unconnected_sockets_recent_destinations_while_watch_runs() {
    if !running_as_root("net_shows_an_unconnected_sockets_recent_destinations_while_watch_runs") {
        return;
    }
    let dir = Scratch::new("udp-net-iocs");
    let iocs = dir.write("iocs.txt", "127.0.0.1:5951\n", 0o644);
    let watch = watch_with(&iocs);
    let b = beacon("sendto", "127.0.0.1", 5951, 1, 0);
    watch.wait_for("the beacon's alert", |v| is_alert_of(v, b.pid()));
    let pid = b.pid().to_string();
    // watch saves its lineage (with its recent destinations) every few
    // seconds; net reads the file.
    let mut last = Value::Null;
    let found = tracer_tests::wait_until(std::time::Duration::from_secs(15), || {
        let out = tracer_tests::run(
            &mut tracer_tests::tracer(&["net", "--json", "--pid", &pid]),
            std::time::Duration::from_secs(60),
        );
        last = out.json();
        last["connections"].as_array().is_some_and(|c| {
            c.iter().any(|s| {
                s["state"] == "UNCONN"
                    && s["recent_destinations"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d["remote"] == "127.0.0.1:5951"))
            })
        })
    });
    assert!(found, "net never showed the destination: {last:#}");
}
