//! Response: plan and carry out stopping a process tree.
//!
//! - [`plan`]: which processes to stop, why, and where it stops climbing
//!   (pure over a process table);
//! - [`persistence`]: what would start them again (reported, never edited);
//! - [`signal`]: pidfd signalling with identity checks;
//! - [`quarantine`]: copies of the programs, taken before the kill;
//! - [`respawn`]: the check that nothing came back;
//! - [`network`]: the set's open connections and the addresses to block.
//!
//! [`execute`] runs a plan: hold every member by pidfd, stop them all
//! (SIGSTOP, so none can relaunch another), take in children forked since
//! planning, quarantine, then kill (SIGKILL) and wait for them to exit.
pub mod network;
pub mod persistence;
pub mod plan;
pub mod program;
pub mod quarantine;
pub mod respawn;
pub mod signal;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use rustix::process::Signal;
use schemars::JsonSchema;
use serde::Serialize;

pub use persistence::PersistenceHit;
pub use plan::{parse_target, plan, plan_selected, plan_tree, KillPlan, PlanMember};

use crate::{
    kernel::capture::{Capture, Mode as CaptureMode},
    model::ProcessId,
    safe_fs::SafeDir,
    users::Users,
};

/// How long `execute` waits for killed processes to be gone.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Rounds of looking for children forked between planning and SIGSTOP.
const JOIN_ROUNDS: usize = 3;

/// Fills each member's thread ids from /proc/PID/task.
pub fn attach_threads(plan: &mut KillPlan) {
    for m in &mut plan.members {
        m.threads = crate::proc::list_threads(m.process.pid).unwrap_or_default();
        m.threads.sort_unstable();
    }
}

/// What carrying out a plan did.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Execution {
    /// Children forked by members after the plan was made, stopped and
    /// killed with them (announced before they were signalled).
    pub joined: Vec<PlanMember>,
    /// Members not signalled, with why (exited already, PID reused).
    pub not_signalled: Vec<(u32, String)>,
    /// Members the kernel refused to signal, with its error.
    pub refused: Vec<(u32, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantine: Vec<quarantine::QuarantineOutcome>,
    /// PIDs killed and seen to exit.
    pub killed: Vec<u32>,
    /// PIDs still alive after the kill and the wait.
    pub survivors: Vec<u32>,
    /// From the first pidfd to the last exit, in milliseconds.
    pub kill_ms: f64,
    /// The part of `kill_ms` spent copying programs to quarantine.
    pub quarantine_ms: f64,
    /// How forks during the kill were caught: the kernel's fork capture
    /// and its set, or why it could not run (then only /proc was watched).
    pub fork_capture: String,
    /// Boot-time clock ticks when the kill started (for the respawn check).
    #[serde(skip)]
    pub started_ticks: u64,
}

/// Carries out `plan`. `announce` is called for each late child before it
/// is signalled, so that nothing is signalled that was not first printed.
pub fn execute(
    plan: &KillPlan,
    quarantine_dir: Option<Result<&SafeDir, &str>>,
    users: &Users,
    mut capture: Result<&mut Capture, &str>,
    announce: &mut dyn FnMut(&PlanMember),
) -> Result<Execution> {
    // A quarantine that cannot be written fails here, before anything is
    // stopped: never leave a tree frozen half-way.
    // Any member's next system call stops it from here (a fork capture
    // that only recorded while the plan was made).
    if let Ok(c) = capture.as_deref_mut() {
        if let Err(e) = c.set_mode(CaptureMode::Stop) {
            eprintln!("tracer: fork capture: cannot switch to stop: {e:#}");
        }
    }
    let mut ex = Execution {
        started_ticks: crate::model::boottime_ns_to_ticks(crate::proc::boottime_ns()),
        ..Default::default()
    };
    let started = Instant::now();
    let mut held = Vec::new();
    hold_and_stop(plan.members.iter().map(|m| &m.process), &mut held, &mut ex);

    // The plan is a snapshot: a member may have forked since. Its children
    // are part of the tree by construction; take them in, stopped.
    // Children forked meanwhile: the kernel's capture set has every one
    // (however it was reparented); /proc's children files the ones still
    // under their parent. Each round holds and stops what it finds.
    for _ in 0..JOIN_ROUNDS {
        let mut late = captured_not_held(capture.as_deref().ok(), &held);
        let seen: HashSet<ProcessId> = late.iter().map(|m| m.process.id()).collect();
        late.extend(
            late_children(&held)
                .into_iter()
                .filter(|m| !seen.contains(&m.process.id())),
        );
        if late.is_empty() {
            break;
        }
        for m in &late {
            announce(m);
        }
        hold_and_stop(late.iter().map(|m| &m.process), &mut held, &mut ex);
        ex.joined.extend(late);
    }

    let copying = Instant::now();
    let programs: Vec<_> = held.iter().map(|h| &h.process).collect();
    match quarantine_dir {
        Some(Ok(dir)) => ex.quarantine = quarantine::quarantine(dir, &programs, users),
        // The directory was refused: the kill goes on, and each program
        // says why it was not copied.
        Some(Err(why)) => ex.quarantine = quarantine::refused(&programs, why),
        None => {}
    }
    ex.quarantine_ms = copying.elapsed().as_secs_f64() * 1e3;

    // From here a member that makes any system call dies in it.
    if let Ok(c) = capture.as_deref_mut() {
        if let Err(e) = c.set_mode(CaptureMode::Kill) {
            ex.refused
                .push((0, format!("fork capture: cannot switch to kill: {e:#}")));
        }
    }
    for (pid, e) in signal::signal_all(&held, Signal::KILL) {
        ex.refused.push((pid, format!("SIGKILL: {e}")));
    }
    // A member born while the others were being killed (its parent was
    // stopped in a fork): killed too, after it was announced.
    let stragglers = captured_not_held(capture.as_deref().ok(), &held);
    if !stragglers.is_empty() {
        let before = held.len();
        for m in &stragglers {
            announce(m);
        }
        hold_and_stop(stragglers.iter().map(|m| &m.process), &mut held, &mut ex);
        for (pid, e) in signal::signal_all(&held[before..], Signal::KILL) {
            ex.refused.push((pid, format!("SIGKILL: {e}")));
        }
        ex.joined.extend(stragglers);
    }
    ex.fork_capture = match &capture {
        Ok(c) => {
            let n = c.members().map(|m| m.len()).unwrap_or(0);
            let full = if Capture::is_full(n) {
                "; the set is FULL: forks beyond it were not caught"
            } else {
                ""
            };
            format!("in the kernel: every fork of a member joined the set ({n} in it){full}")
        }
        Err(why) => format!("not available ({why}): only /proc's children were followed"),
    };
    ex.survivors = signal::wait_exited(&held, EXIT_WAIT);
    let survivors: HashSet<u32> = ex.survivors.iter().copied().collect();
    ex.killed = held
        .iter()
        .map(|h| h.process.pid)
        .filter(|pid| !survivors.contains(pid))
        .collect();
    ex.kill_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(ex)
}

/// Pins each process by pidfd (identity checked) and stops it at once, top
/// down, so a watchdog is frozen before its child can be relaunched.
fn hold_and_stop<'a>(
    processes: impl Iterator<Item = &'a crate::model::Process>,
    held: &mut Vec<signal::Held>,
    ex: &mut Execution,
) {
    for p in processes {
        match signal::hold(p) {
            Ok(h) => {
                if let Err(e) = h.signal(Signal::STOP) {
                    ex.refused.push((p.pid, format!("SIGSTOP: {e}")));
                }
                held.push(h);
            }
            Err(why) => ex.not_signalled.push((p.pid, why.to_string())),
        }
    }
}

/// Members the kernel's fork capture added that are not held yet, checked
/// against what /proc says of the same PID now (same start time).
fn captured_not_held(capture: Option<&Capture>, held: &[signal::Held]) -> Vec<PlanMember> {
    let Some(capture) = capture else {
        return Vec::new();
    };
    let held_pids: HashSet<u32> = held.iter().map(|h| h.process.pid).collect();
    let mut out = Vec::new();
    for (tgid, start_ns) in capture.members().unwrap_or_default() {
        // 0: a member put in from the plan; held, or not signalled with why.
        if start_ns == 0 || held_pids.contains(&tgid) {
            continue;
        }
        let Some(p) = crate::proc::read_process(tgid) else {
            continue; // gone already
        };
        if p.start_ticks != crate::model::boottime_ns_to_ticks(start_ns) {
            continue; // the PID was reused: not ours
        }
        out.push(PlanMember {
            reason: format!(
                "forked by a member during the kill (caught in the kernel), child of {}",
                p.ppid
            ),
            process: p,
            threads: Vec::new(),
        });
    }
    out
}

/// Live descendants of held processes that are not held yet.
fn late_children(held: &[signal::Held]) -> Vec<PlanMember> {
    let children = Children::snapshot();
    let held_ids: HashSet<ProcessId> = held.iter().map(|h| h.process.id()).collect();
    let mut seen = held_ids.clone();
    let mut stack: Vec<u32> = held.iter().map(|h| h.process.pid).collect();
    let mut late = Vec::new();
    while let Some(parent) = stack.pop() {
        for pid in children.of(parent) {
            let Some(child) = crate::proc::read_process(pid) else {
                continue;
            };
            if child.ppid == parent && seen.insert(child.id()) {
                late.push(PlanMember {
                    reason: format!("forked by {parent} after planning"),
                    process: child,
                    threads: Vec::new(),
                });
                stack.push(pid);
            }
        }
    }
    late
}

/// Where children are read from: /proc/PID/task/TID/children costs one
/// read per member; without CONFIG_PROC_CHILDREN, one scan of every
/// process's parent.
enum Children {
    Files,
    ByParent(HashMap<u32, Vec<u32>>),
}

impl Children {
    fn snapshot() -> Self {
        if Path::new("/proc/thread-self/children").exists() {
            return Children::Files;
        }
        let mut by_parent: HashMap<u32, Vec<u32>> = HashMap::new();
        for pid in crate::proc::list_pids().unwrap_or_default() {
            if let Ok(stat) = crate::proc::read_stat(pid) {
                by_parent
                    .entry(stat.ppid.max(0) as u32)
                    .or_default()
                    .push(pid);
            }
        }
        Children::ByParent(by_parent)
    }

    /// The children of every thread of `pid`.
    fn of(&self, pid: u32) -> Vec<u32> {
        match self {
            Children::ByParent(map) => map.get(&pid).cloned().unwrap_or_default(),
            Children::Files => crate::proc::list_threads(pid)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|tid| {
                    crate::proc::read_file(&format!("/proc/{pid}/task/{tid}/children")).ok()
                })
                .flat_map(|bytes| {
                    String::from_utf8_lossy(&bytes)
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
                .collect(),
        }
    }
}
