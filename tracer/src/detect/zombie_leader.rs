//! A process whose main thread has exited while its other threads run on.
//! `ps` shows it `<defunct>` and `/proc/PID/exe` and `cmdline` are empty,
//! so every tool that reads the leader sees a harmless zombie; a miner
//! does it on purpose (`pthread_exit` in `main`) and keeps mining in its
//! worker threads. The state itself is the finding; its threads give the
//! program and command line (`proc::leader_exited`).
use crate::{
    detect::hidden::ev,
    model::{Finding, Process, Severity},
    proc,
    table::ProcessTable,
    views::Snapshot,
};

pub const KIND: &str = "zombie-leader";

/// Every process of the snapshot whose leader has exited while threads run.
pub fn detect(snap: &Snapshot, table: &ProcessTable) -> Vec<Finding> {
    snap.probes
        .values()
        .filter(|probe| !snap.own_pids.contains(&probe.pid))
        .filter_map(|probe| probe.genuine_process())
        .filter(|p| p.leader_exited && !p.kernel_thread)
        .filter_map(|p| {
            // Confirmed on a fresh read: the whole process may just be ending.
            let stat = proc::read_stat(p.pid).ok()?;
            let live = proc::live_thread(p.pid).is_some();
            (stat.starttime == p.start_ticks && proc::leader_exited(&stat) && live)
                .then(|| finding(p, table, stat.num_threads.saturating_sub(1)))
        })
        .collect()
}

/// The finding for `p`, whose leader exited leaving `live` threads.
pub fn finding(p: &Process, table: &ProcessTable, live: i64) -> Finding {
    let exe = p
        .exe
        .as_ref()
        .map_or("?".into(), |e| e.as_str().to_string());
    let location = crate::respond::program::dropped_location(p);
    let mut evidence = vec![
        ev(
            "state",
            "main thread exited (ps: <defunct>), other threads running",
        ),
        ev("live threads", live.to_string()),
        ev("exe (from a live thread)", exe.clone()),
        ev("cmdline (from a live thread)", p.cmdline_string().as_str()),
    ];
    if !p.threads.is_empty() {
        evidence.push(ev("thread names", crate::views::host::thread_list(p)));
    }
    if let Some(where_) = &location {
        evidence.push(ev("location", where_.clone()));
    }
    let severity = if location.is_some() {
        Severity::High
    } else {
        Severity::Medium
    };
    Finding {
        id: Finding::process_finding_id(KIND, p),
        kind: KIND.into(),
        severity,
        layer: "process-state".into(),
        summary: format!(
            "PID {}'s main thread has exited but {live} threads still run {exe}: ps shows a zombie, the threads keep working",
            p.pid
        ),
        ancestry: table.ancestry(&p.id()).into_iter().cloned().collect(),
        process: Some(p.clone()),
        evidence,
        next_step: format!(
            "Look at its threads (`ls /proc/{pid}/task`, `cat /proc/{pid}/task/*/comm`) and what they run \
             (`ls -l /proc/{pid}/task/*/exe`), then stop it with `tracer kill-tree {pid}`: a zombie's \
             threads die with the process.",
            pid = p.pid
        ),
        connection: None,
        related: Vec::new(),
        sigma: None,
    }
}
