//! After the kill: did anything of the set survive, or come back?
//!
//! For a short while tracer polls /proc for members still alive (same PID
//! and start time) and for new processes, started since the kill, that run
//! a member's program or command line: a relaunch by something outside the
//! set (a persistence entry firing, a watchdog tracer did not see). Nothing
//! found here is signalled: it was not in the printed set.
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use schemars::JsonSchema;
use serde::Serialize;

use super::{program, KillPlan, PlanMember};
use crate::model::{Process, ProcessId};

/// Environment variable: how long to watch for a respawn, in milliseconds.
pub const CHECK_ENV: &str = "TRACER_RESPAWN_CHECK_MS";
/// Default watch, when the variable is unset or not a number.
pub const DEFAULT_CHECK: Duration = Duration::from_millis(2000);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// The watch length from `TRACER_RESPAWN_CHECK_MS`.
pub fn check_duration() -> Duration {
    std::env::var(CHECK_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_CHECK)
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct RespawnReport {
    pub watched_ms: u64,
    /// Members still running (same identity).
    pub survivors: Vec<Process>,
    /// New processes running a member's program or command line, with
    /// which member they resemble.
    pub respawned: Vec<(Process, String)>,
}

impl RespawnReport {
    pub fn clean(&self) -> bool {
        self.survivors.is_empty() && self.respawned.is_empty()
    }
}

/// Watches /proc for `duration` after a kill that began at `since_ticks`.
pub fn watch(
    plan: &KillPlan,
    joined: &[PlanMember],
    since_ticks: u64,
    duration: Duration,
) -> RespawnReport {
    let members: Vec<&Process> = plan
        .members
        .iter()
        .chain(joined)
        .map(|m| &m.process)
        .collect();
    let member_ids: HashSet<ProcessId> = members.iter().map(|p| p.id()).collect();
    let mut report = RespawnReport {
        watched_ms: duration.as_millis() as u64,
        ..Default::default()
    };
    // PIDs already running before the kill are read once; new ones on every
    // poll, since a fork only shows what it runs once it has exec'd.
    let mut old_pids: HashSet<u32> = HashSet::new();
    let mut reported: HashSet<ProcessId> = HashSet::new();
    let deadline = Instant::now() + duration;
    loop {
        let pids = crate::proc::list_pids().unwrap_or_default();
        for &pid in &pids {
            if old_pids.contains(&pid) {
                continue;
            }
            let Ok(stat) = crate::proc::read_stat(pid) else {
                continue;
            };
            let id = ProcessId {
                pid,
                start_ticks: stat.starttime,
            };
            if stat.starttime < since_ticks {
                old_pids.insert(pid);
                continue;
            }
            if member_ids.contains(&id) || is_dead(stat.state) || reported.contains(&id) {
                continue;
            }
            let Some(p) = crate::proc::read_process(pid) else {
                continue;
            };
            if let Some(like) = members.iter().find_map(|m| resembles(&p, m)) {
                reported.insert(id);
                report.respawned.push((p, like));
            }
        }
        // A PID that went away may come back as a new process.
        let current: HashSet<u32> = pids.into_iter().collect();
        old_pids.retain(|p| current.contains(p));
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())));
    }
    report.survivors = members
        .iter()
        .filter(|m| still_running(m))
        .map(|m| (*m).clone())
        .collect();
    report
}

/// The process still holds its PID and has not exited: a zombie waiting
/// for its parent to reap it is dead.
pub fn still_running(p: &Process) -> bool {
    crate::proc::read_stat(p.pid).is_ok_and(|s| s.starttime == p.start_ticks && !is_dead(s.state))
}

/// Zombie or dead state letters of /proc/PID/stat.
fn is_dead(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// How a new process resembles a member: same dropped program, or the
/// same command line (a watchdog shell runs a system binary).
fn resembles(new: &Process, member: &Process) -> Option<String> {
    let same_program = !program::runs_system_binary(member)
        && program::exe_path(member).is_some()
        && program::exe_path(new) == program::exe_path(member);
    if same_program {
        return Some(format!(
            "runs {} like {}",
            program::exe_path(new)?,
            member.pid
        ));
    }
    (!member.cmdline.is_empty() && new.cmdline == member.cmdline)
        .then(|| format!("same command line as {}", member.pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::plan::tests::proc;

    #[test]
    fn resemblance_is_by_dropped_program_or_command_line() {
        let miner = proc(10, 1, "/tmp/x/m (deleted)", "/tmp/x/m -o p:1");
        let again = proc(20, 1, "/tmp/x/m", "m");
        assert!(resembles(&again, &miner)
            .unwrap()
            .starts_with("runs /tmp/x/m"));
        let loop_ = proc(11, 1, "/usr/bin/dash", "sh -c while :; do /tmp/x/m; done");
        let other_sh = proc(21, 1, "/usr/bin/dash", "sh -c ls");
        assert!(resembles(&other_sh, &loop_).is_none());
        let same_loop = proc(22, 1, "/usr/bin/dash", "sh -c while :; do /tmp/x/m; done");
        assert_eq!(
            resembles(&same_loop, &loop_).unwrap(),
            "same command line as 11"
        );
    }

    #[test]
    fn a_relaunched_program_is_reported_and_a_dead_member_is_not_a_survivor() {
        let dir = std::env::temp_dir().join(format!("tracer-respawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("m");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let exe_s = exe.to_str().unwrap();
        // The killed member: gone (no such PID), same program.
        let mut member = proc(i32::MAX as u32, 1, exe_s, &format!("{exe_s} 30"));
        member.start_ticks = 1;
        let plan = KillPlan {
            target: member.pid,
            members: vec![PlanMember {
                process: member,
                reason: "the target".into(),
                threads: vec![],
            }],
            boundary: None,
            boundary_reason: None,
            ancestry: vec![],
            relatives: vec![],
            persistence: vec![],
            command: String::new(),
            network: None,
            lineage: None,
            selection: None,
            other_boundaries: vec![],
            container: None,
        };
        let since = crate::model::boottime_ns_to_ticks(crate::proc::boottime_ns());
        let mut again = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        // Watch only once the child runs the program (exec can lag on a
        // loaded machine); at most 5 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while crate::proc::read_exe(again.id()).is_none_or(|e| e.as_str() != exe_s)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = watch(&plan, &[], since, Duration::from_millis(300));
        let _ = again.kill();
        let _ = again.wait();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(report.survivors.is_empty());
        assert_eq!(report.respawned.len(), 1, "{report:?}");
        assert_eq!(report.respawned[0].0.pid, again.id());
        assert!(!report.clean());
    }

    #[test]
    fn duration_defaults_without_the_variable() {
        if std::env::var_os(CHECK_ENV).is_none() {
            assert_eq!(check_duration(), DEFAULT_CHECK);
        }
    }
}
