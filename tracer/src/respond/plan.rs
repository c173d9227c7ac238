//! The kill-tree planner: which processes to stop so that a malicious
//! process stays stopped, computed from a process table alone.
//!
//! The set is the target, the ancestors that belong to the same malicious
//! chain (a shell loop that relaunches it, a launcher run from the same
//! dropped directory or from /tmp), and every descendant of the topmost of
//! them (with all their threads: a signal to a process reaches every
//! thread). The climb stops at the first ancestor that is not part of the
//! chain, and always at a legitimate boundary: PID 1, a service manager,
//! cron or at, the sshd listener, a container runtime, or an ancestor of
//! tracer itself.
//!
//! Refused targets (all with `UserError::Refused`, exit code 5, so a script
//! can tell "tracer would not" from "tracer failed"): a value that is not a
//! PID, a PID with no process, PID 1, kernel threads, tracer itself and its
//! ancestors.
use std::collections::{HashMap, HashSet};

use anyhow::Result;
use schemars::JsonSchema;
use serde::Serialize;

use super::{persistence::PersistenceHit, program};
use crate::{
    error::UserError,
    model::{Process, ProcessId},
    table::ProcessTable,
};

/// The plan `kill-tree` prints, and with `--kill` carries out.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct KillPlan {
    pub target: u32,
    /// Members top-down: each process comes before its descendants.
    pub members: Vec<PlanMember>,
    /// The first ancestor left alone, which the set hangs from.
    pub boundary: Option<Process>,
    /// Why the climb stopped there.
    pub boundary_reason: Option<String>,
    /// The boundary's ancestors, nearest first, up to PID 1 (for display).
    pub ancestry: Vec<Process>,
    /// Processes outside the tree that share the target's process group or
    /// session (and not the caller's): orphans reparented to init, a
    /// sibling started by the same dropper. Stopped only on request
    /// (`--relatives`); a plan is not done while one of them lives.
    pub relatives: Vec<PlanMember>,
    /// Files that would start a member again (reported, never edited).
    pub persistence: Vec<PersistenceHit>,
    /// The exact command that carries out this plan.
    pub command: String,
    /// The members' open connections and the addresses to block (filled in
    /// by `kill-tree` from the kernel socket view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<super::network::PlanNetwork>,
    /// Where the table's lineage came from: /proc alone, or with a running
    /// watch's lineage file (filled in by `kill-tree`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage: Option<crate::views::lineage::LineageSource>,
    /// For `kill-tree PATH` and `--remote`: what the selector matched (each
    /// match is a member, or refused), and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::views::selection::Selection>,
    /// With several matches in separate trees, the other trees' boundaries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_boundaries: Vec<Boundary>,
    /// When the target runs in a PID namespace of its own: that namespace,
    /// the container it is, and how to stop it as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerStop>,
}

/// The container (or bare PID namespace) a plan's target runs in.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ContainerStop {
    /// The PID namespace's inode.
    pub pid_ns: u32,
    /// Its init (PID 1 inside), by its host PID, when the table has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::model::Container>,
    /// How to stop the whole container through its runtime (tracer never
    /// runs it), or what `--kill` does to the bare namespace.
    pub stop: String,
}

/// An ancestor a tree hangs from, left alone, and why.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Boundary {
    pub process: Process,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PlanMember {
    pub process: Process,
    /// Why it is in the set, in a few words.
    pub reason: String,
    /// Thread ids at planning time, when read (see `super::attach_threads`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<u32>,
}

/// Relatives still alive after a kill (`kill-tree --kill --json`): a plan
/// is not done while one of them lives.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RelativesAlive {
    pub relatives_alive: Vec<PlanMember>,
}

/// Plans stopping `target`: the tree (see [`plan_tree`]), its relatives,
/// and the tree's orphans among them (see [`adopt_orphans`]). The
/// persistence scan, the slow part, is [`add_persistence`]: kill-tree
/// starts its fork capture in between.
pub fn plan(table: &ProcessTable, target: u32, self_pid: u32) -> Result<KillPlan> {
    let mut plan = plan_tree(table, target, self_pid)?;
    plan.relatives = relatives(table, &plan, self_pid);
    adopt_orphans(&mut plan);
    Ok(plan)
}

/// Relatives that can only be the tree's own orphans become members: in
/// the target's process group, whose leader is in the set, reparented to
/// init or to a subreaper above the tree, and started after the target. A child that double-forks leaves exactly such a grandchild, and
/// /proc keeps no other trace of where it came from (watch's lineage does,
/// and merges it in as a member before this runs). A relative whose parent
/// still lives, like a sibling the target's parent started, stays a
/// relative.
pub fn adopt_orphans(plan: &mut KillPlan) {
    let Some(target) = plan
        .members
        .iter()
        .find(|m| m.process.pid == plan.target)
        .map(|m| m.process.clone())
    else {
        return;
    };
    // An orphan goes to init or to the nearest child subreaper above its
    // dead parent: an ancestor of the tree. Not the target's own parent,
    // whose living children are the target's siblings.
    let adopters: HashSet<u32> = std::iter::once(1)
        .chain(plan.members.iter().map(|m| m.process.pid))
        .chain(plan.ancestry.iter().map(|p| p.pid))
        .filter(|&pid| pid != target.ppid && pid != target.pid)
        .collect();
    // The group's orphans are its leader's: only when the leader is in the
    // set (the target, or an ancestor it climbed to) are they the tree's.
    let leader_in_set =
        target.pgid != 0 && plan.members.iter().any(|m| m.process.pid == target.pgid);
    let (orphans, relatives): (Vec<PlanMember>, Vec<PlanMember>) =
        std::mem::take(&mut plan.relatives)
            .into_iter()
            .partition(|r| {
                let p = &r.process;
                leader_in_set
                    && adopters.contains(&p.ppid)
                    && p.pgid == target.pgid
                    && p.start_ticks >= target.start_ticks
            });
    plan.relatives = relatives;
    plan.members.extend(orphans.into_iter().map(|mut m| {
        m.reason = format!(
            "orphan of the tree: in the target's process group ({}), started after the target, reparented to {}",
            m.process.pgid,
            if m.process.ppid == 1 {
                "init".to_string()
            } else {
                format!("subreaper {}", m.process.ppid)
            }
        );
        m
    }));
}

/// Scans for the persistence that would start the plan's members again
/// (the slow part of planning: kill-tree starts its fork capture first).
pub fn add_persistence(plan: &mut KillPlan) {
    let members: Vec<&Process> = plan.members.iter().map(|m| &m.process).collect();
    plan.persistence = super::persistence::scan(&super::persistence::Roots::from_env(), &members);
}

/// Live processes outside the plan that share the target's process group
/// or session, unless tracer itself is in that group or session (the
/// responder's own shell is not the attacker's). A scan of the table: run
/// by `kill-tree`, not per alert.
pub fn relatives(table: &ProcessTable, plan: &KillPlan, self_pid: u32) -> Vec<PlanMember> {
    let Some(target) = plan.members.iter().find(|m| m.process.pid == plan.target) else {
        return Vec::new();
    };
    let target = &target.process;
    let me = table.get(self_pid);
    let (own_pgid, own_sid) = me.map_or((0, 0), |m| (m.pgid, m.sid));
    let self_chain = own_lineage(table, self_pid);
    let in_plan: HashSet<ProcessId> = plan
        .members
        .iter()
        .map(|m| m.process.id())
        .chain(plan.ancestry.iter().map(Process::id))
        .chain(table.ancestry(&target.id()).into_iter().map(Process::id))
        .collect();
    let mut out: Vec<PlanMember> = table
        .live()
        .filter(|p| !in_plan.contains(&p.id()) && !self_chain.contains(&p.id()))
        .filter(|p| p.pid > 1 && !is_kernel_thread(p))
        .filter_map(|p| {
            let reason = if target.pgid != 0 && p.pgid == target.pgid && p.pgid != own_pgid {
                format!("same process group ({}) as the target", p.pgid)
            } else if target.sid != 0 && p.sid == target.sid && p.sid != own_sid {
                format!("same session ({}) as the target", p.sid)
            } else {
                return None;
            };
            let orphan = if p.ppid == 1 {
                ", reparented to init"
            } else {
                ""
            };
            Some(PlanMember {
                process: p.clone(),
                reason: format!("related: {reason}{orphan}"),
                threads: Vec::new(),
            })
        })
        .collect();
    out.sort_by_key(|m| m.process.pid);
    out
}

/// The set to stop and why, from the table alone (no I/O).
pub fn plan_tree(table: &ProcessTable, target: u32, self_pid: u32) -> Result<KillPlan> {
    plan_tree_within(table, target, self_pid, usize::MAX)
}

/// [`plan_tree`], climbing at most `climb` ancestors: what watch proposes
/// with each alert, so an alert's cost does not grow with the depth of a
/// chain (its `kill-tree` command follows the chain to its end).
pub fn plan_tree_within(
    table: &ProcessTable,
    target: u32,
    self_pid: u32,
    climb: usize,
) -> Result<KillPlan> {
    let self_chain = own_lineage(table, self_pid);
    let target_proc = check_target(table, target, self_pid, &self_chain)?;

    // Climb while ancestors belong to the chain.
    let mut clues = ChainClues::default();
    clues.add(target_proc);
    let mut reasons: HashMap<ProcessId, String> = HashMap::new();
    reasons.insert(target_proc.id(), "the target".to_string());
    let mut top = target_proc;
    let mut boundary = None;
    let own_pid_ns = target_proc
        .namespaces
        .as_ref()
        .filter(|ns| ns.separate_pid() && ns.pid != 0)
        .map(|ns| ns.pid);
    // However deep: a chain of one dropped program is followed to its end.
    for ancestor in table.ancestors(&target_proc.id()).take(climb) {
        if ancestor.exited_at_ns.is_some() {
            continue; // gone already: nothing to stop, look further up
        }
        if let Some(pid_ns) = own_pid_ns {
            match container_step(ancestor, pid_ns, &self_chain, target_proc) {
                ContainerStep::Member(why) => {
                    reasons.insert(ancestor.id(), why);
                    clues.add(ancestor);
                    top = ancestor;
                    continue;
                }
                ContainerStep::Boundary(why) => {
                    boundary = Some((ancestor, why));
                    break;
                }
            }
        }
        if let Some(why) = legitimate_boundary(ancestor, &self_chain) {
            boundary = Some((ancestor, why));
            break;
        }
        match chain_reason(ancestor, &clues) {
            Some(why) => {
                reasons.insert(ancestor.id(), why);
                clues.add(ancestor);
                top = ancestor;
            }
            None => {
                boundary = Some((
                    ancestor,
                    "not part of the chain: no loop, launcher or dropped file".to_string(),
                ));
                break;
            }
        }
    }

    let members = subtree_top_down(table, top, &self_chain)
        .into_iter()
        .map(|p| {
            let reason = reasons.get(&p.id()).cloned().unwrap_or_else(|| {
                // The parent it was forked from (watch's lineage may know
                // it though the kernel has reparented the process).
                match table.parent_of(&p.id()).and_then(|id| table.by_id(&id)) {
                    Some(pp) => format!("descendant of {} ({})", pp.pid, pp.comm.as_str()),
                    None => {
                        let parent = table.get(p.ppid).map(|pp| pp.comm.as_str()).unwrap_or("?");
                        format!("descendant of {} ({parent})", p.ppid)
                    }
                }
            });
            PlanMember {
                process: p.clone(),
                reason,
                threads: Vec::new(),
            }
        })
        .collect();

    let ancestry = boundary
        .as_ref()
        .map(|(b, _)| {
            std::iter::once(*b)
                .chain(table.ancestry(&b.id()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok(KillPlan {
        target,
        members,
        boundary: boundary.as_ref().map(|(b, _)| (*b).clone()),
        boundary_reason: boundary.map(|(_, why)| why),
        ancestry,
        relatives: Vec::new(),
        persistence: Vec::new(),
        command: format!("sudo tracer kill-tree {target} --kill"),
        network: None,
        lineage: None,
        selection: None,
        other_boundaries: Vec::new(),
        container: own_pid_ns.map(|pid_ns| container_stop(table, target_proc, pid_ns)),
    })
}

enum ContainerStep {
    Member(String),
    Boundary(String),
}

/// The climb from a target in a PID namespace of its own: every ancestor
/// inside that namespace is the container's payload, its init too
/// (killing the init ends every process of the namespace), unless the
/// init is a service manager (a system container: stop it through its
/// runtime); the first ancestor outside is the runtime that made it,
/// never killed.
fn container_step(
    ancestor: &Process,
    pid_ns: u32,
    self_chain: &HashSet<ProcessId>,
    target: &Process,
) -> ContainerStep {
    let inside = ancestor
        .namespaces
        .as_ref()
        .is_some_and(|ns| ns.pid == pid_ns);
    let how = target
        .container
        .as_ref()
        .map_or("stop the namespace's init".to_string(), |c| {
            format!("stop the container: {}", c.stop_command())
        });
    if !inside || self_chain.contains(&ancestor.id()) {
        return ContainerStep::Boundary(format!(
            "outside the target's PID namespace (its runtime or creator, left running; {how})"
        ));
    }
    if let Some(why) = legitimate_boundary(ancestor, self_chain) {
        return ContainerStep::Boundary(format!("{why} inside the container; {how}"));
    }
    let ns_pid = ancestor.namespaces.as_ref().map_or(0, |ns| ns.ns_pid);
    ContainerStep::Member(if ns_pid == 1 {
        "init of the target's PID namespace (PID 1 inside): the container's payload".into()
    } else {
        format!("in the target's PID namespace (PID {ns_pid} inside), above it")
    })
}

fn container_stop(table: &ProcessTable, target: &Process, pid_ns: u32) -> ContainerStop {
    let in_ns = |p: &&Process| p.namespaces.as_ref().is_some_and(|ns| ns.pid == pid_ns);
    let init = std::iter::once(target)
        .chain(table.ancestors(&target.id()))
        .filter(in_ns)
        .find(|p| p.namespaces.as_ref().is_some_and(|ns| ns.ns_pid == 1))
        .map(|p| p.pid);
    let stop = match (&target.container, init) {
        (Some(c), _) => c.stop_command(),
        (None, Some(init)) => format!(
            "kill its init, PID {init} on the host (`--kill` does): every process of the namespace ends with it"
        ),
        (None, None) => "its init is not in the table: stop every process of the namespace".into(),
    };
    ContainerStop {
        pid_ns,
        init,
        container: target.container.as_deref().cloned(),
        stop,
    }
}

/// One plan for every process a selector matched: each match planned as
/// [`plan`] does, the sets merged (each process once, every match's reason
/// first in its member's). Matches that cannot be targets (PID 1, kernel
/// threads, tracer's own chain, gone) go to `selection.refused`; when
/// every match is refused the plan is refused too.
pub fn plan_selected(
    table: &ProcessTable,
    mut selection: crate::views::selection::Selection,
    self_pid: u32,
) -> Result<KillPlan> {
    // Oldest first: an ancestor's tree takes in a descendant that matched
    // too, and members stay top-down.
    let mut order: Vec<u32> = selection.pids();
    order.sort_by_key(|pid| table.get(*pid).map_or(u64::MAX, |p| p.start_ticks));
    let mut merged: Option<KillPlan> = None;
    for pid in order {
        if let Some(m) = &merged {
            if m.members.iter().any(|m| m.process.pid == pid) {
                continue;
            }
        }
        let one = match plan(table, pid, self_pid) {
            Ok(one) => one,
            Err(e) => {
                let why = match e.downcast_ref::<UserError>() {
                    Some(UserError::Refused(why)) => why.clone(),
                    _ => format!("{e:#}"),
                };
                selection.refused.insert(pid, why);
                continue;
            }
        };
        match &mut merged {
            None => merged = Some(one),
            Some(m) => merge_plan(m, one),
        }
    }
    let Some(mut plan) = merged else {
        let refused: Vec<String> = selection
            .refused
            .iter()
            .map(|(pid, why)| format!("{pid}: {why}"))
            .collect();
        return Err(UserError::Refused(format!(
            "every process {} matched was refused ({})",
            selection.selector,
            refused.join("; ")
        ))
        .into());
    };
    for m in &mut plan.members {
        if let Some(why) = selection.matched.get(&m.process.pid) {
            let why = why.join(", ");
            m.reason = match m.reason.as_str() {
                "the target" => why,
                other => format!("{why}; {other}"),
            };
        }
    }
    plan.selection = Some(selection);
    Ok(plan)
}

/// The live process that launched `exited` (a process gone since it did
/// something, such as connect), when it belongs to the same chain (a loop,
/// a launcher, the same dropped directory: as [`plan_tree`] climbs), with
/// why; otherwise why not. Exited ancestors in between are passed over.
pub fn launcher_of(
    table: &ProcessTable,
    exited: &ProcessId,
    self_pid: u32,
) -> std::result::Result<(u32, String), String> {
    let Some(process) = table.by_id(exited) else {
        return Err("not in the table".into());
    };
    let self_chain = own_lineage(table, self_pid);
    let mut clues = ChainClues::default();
    clues.add(process);
    for ancestor in table.ancestors(exited) {
        if ancestor.exited_at_ns.is_some()
            || table.get(ancestor.pid).map(Process::id) != Some(ancestor.id())
        {
            clues.add(ancestor);
            continue;
        }
        if let Some(why) = legitimate_boundary(ancestor, &self_chain) {
            return Err(format!(
                "its nearest living ancestor {} ({}) is left alone: {why}",
                ancestor.pid,
                ancestor.comm.as_str()
            ));
        }
        return match chain_reason(ancestor, &clues) {
            Some(why) => Ok((ancestor.pid, why)),
            None => Err(format!(
                "its nearest living ancestor {} ({}) is not part of the chain",
                ancestor.pid,
                ancestor.comm.as_str()
            )),
        };
    }
    Err("no living ancestor known".into())
}

/// Adds `other`'s processes to `plan` (each once).
fn merge_plan(plan: &mut KillPlan, other: KillPlan) {
    let known: HashSet<ProcessId> = plan.members.iter().map(|m| m.process.id()).collect();
    plan.members.extend(
        other
            .members
            .into_iter()
            .filter(|m| !known.contains(&m.process.id())),
    );
    let members: HashSet<ProcessId> = plan.members.iter().map(|m| m.process.id()).collect();
    plan.relatives
        .retain(|r| !members.contains(&r.process.id()));
    let related: HashSet<ProcessId> = plan.relatives.iter().map(|m| m.process.id()).collect();
    plan.relatives.extend(
        other
            .relatives
            .into_iter()
            .filter(|r| !members.contains(&r.process.id()) && !related.contains(&r.process.id())),
    );
    if let Some(b) = other.boundary {
        let seen = plan.boundary.as_ref().is_some_and(|p| p.id() == b.id())
            || plan
                .other_boundaries
                .iter()
                .any(|o| o.process.id() == b.id());
        if !seen {
            plan.other_boundaries.push(Boundary {
                process: b,
                reason: other.boundary_reason.unwrap_or_default(),
            });
        }
    }
}

/// Parses the PID argument; anything else is refused, like a bad target.
pub fn parse_target(arg: &str) -> Result<u32> {
    crate::model::parse_pid(arg).map_err(|why| UserError::Refused(why).into())
}

/// tracer itself and its ancestors: never stopped, never a target.
fn own_lineage(table: &ProcessTable, self_pid: u32) -> HashSet<ProcessId> {
    let Some(me) = table.get(self_pid) else {
        return HashSet::new();
    };
    std::iter::once(me.id())
        .chain(table.ancestry(&me.id()).into_iter().map(Process::id))
        .collect()
}

fn check_target<'t>(
    table: &'t ProcessTable,
    target: u32,
    self_pid: u32,
    self_chain: &HashSet<ProcessId>,
) -> Result<&'t Process> {
    let refuse = |why: String| Err(UserError::Refused(why).into());
    if target == 1 {
        return refuse("PID 1 is init; stopping it brings the system down".into());
    }
    let Some(p) = table.get(target) else {
        return refuse(format!("no process with PID {target}"));
    };
    if is_kernel_thread(p) {
        return refuse(format!(
            "PID {target} ({}) is a kernel thread; it has no program to stop",
            p.comm.as_str()
        ));
    }
    if target == self_pid {
        return refuse(format!("PID {target} is tracer itself"));
    }
    if self_chain.contains(&p.id()) {
        return refuse(format!(
            "PID {target} ({}) is an ancestor of tracer itself; stopping it would stop tracer",
            p.comm.as_str()
        ));
    }
    Ok(p)
}

/// Kernel threads: flagged by the kernel, or children of kthreadd (PID 2).
fn is_kernel_thread(p: &Process) -> bool {
    p.kernel_thread || p.pid == 2 || p.ppid == 2
}

/// Program names that mark a legitimate boundary, with what they are.
const BOUNDARY_PROGRAMS: &[(&str, &str)] = &[
    ("systemd", "the service manager"),
    ("init", "the service manager"),
    ("upstart", "the service manager"),
    ("runit", "the service manager"),
    ("s6-svscan", "the service manager"),
    ("cron", "the cron daemon"),
    ("crond", "the cron daemon"),
    ("anacron", "the cron daemon"),
    ("atd", "the at daemon"),
    ("runc", "a container runtime"),
    ("crun", "a container runtime"),
    ("dockerd", "a container runtime"),
    ("containerd", "a container runtime"),
    ("conmon", "a container runtime"),
];

/// Why an ancestor is a place the climb must stop, whatever it runs.
fn legitimate_boundary(p: &Process, self_chain: &HashSet<ProcessId>) -> Option<String> {
    if p.pid <= 1 {
        return Some("PID 1 (init)".into());
    }
    if is_kernel_thread(p) {
        return Some("a kernel thread".into());
    }
    if self_chain.contains(&p.id()) {
        return Some("an ancestor of tracer itself".into());
    }
    // A name alone is cheap to fake: a "cron" running from /tmp is no boundary.
    if program::dropped_location(p).is_some() {
        return None;
    }
    let names = [program::program_name(p), p.comm.as_str()];
    if let Some((_, what)) = BOUNDARY_PROGRAMS.iter().find(|(n, _)| names.contains(n)) {
        return Some(format!("{what} (legitimate boundary)"));
    }
    if names.iter().any(|n| n.starts_with("containerd-shim")) {
        return Some("a container runtime (legitimate boundary)".into());
    }
    let is_sshd = names.contains(&"sshd");
    if is_sshd && (p.ppid == 1 || p.cmdline_string().contains("[listener]")) {
        return Some("the sshd listener (legitimate boundary)".into());
    }
    None
}

/// What the chain found so far runs: program paths, names and directories,
/// of members whose program is not a system binary.
#[derive(Default)]
pub(crate) struct ChainClues {
    pub paths: Vec<String>,
    pub names: Vec<String>,
    /// Directories holding dropped programs (system directories excluded).
    pub dirs: Vec<String>,
}

impl ChainClues {
    /// Notes what `p` runs: its executable, and the files in /tmp-like
    /// directories that its arguments name (a shell's script, a loop's payload).
    pub fn add(&mut self, p: &Process) {
        if let Some(exe) = program::exe_path(p).filter(|_| !program::runs_system_binary(p)) {
            self.add_file(exe);
        }
        let tokens = p
            .cmdline
            .iter()
            .skip(1)
            .flat_map(|a| a.split(|c: char| c.is_whitespace() || ";&|()<>'\"`=".contains(c)));
        for token in tokens {
            if program::in_drop_dir(token) {
                self.add_file(token);
            }
        }
    }

    fn add_file(&mut self, path: &str) {
        push_new(&mut self.paths, path);
        let name = program::file_name(path);
        // Very short names ("a", "x") would match everything.
        if name.len() >= 3 {
            push_new(&mut self.names, name);
        }
        let dir = program::parent_dir(path);
        // /tmp itself is shared by everything; only its subdirectories say "dropped here".
        if !dir.is_empty()
            && dir != "/"
            && !program::DROP_DIRS.contains(&dir)
            && !program::is_system_path(&format!("{dir}/"))
        {
            push_new(&mut self.dirs, dir);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

fn push_new(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|i| i == item) {
        list.push(item.to_string());
    }
}

/// Why an ancestor belongs to the chain above what `clues` describes.
fn chain_reason(p: &Process, clues: &ChainClues) -> Option<String> {
    let cmdline = p.cmdline_string();
    if program::is_shell(p) {
        if let Some(name) = clues
            .names
            .iter()
            .chain(&clues.paths)
            .find(|n| program::mentions(&cmdline, n))
        {
            return Some(format!(
                "shell that launches {name} (its command line names it)"
            ));
        }
        let words: Vec<&str> = cmdline
            .split(|c: char| {
                c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '\'' | '"')
            })
            .collect();
        if words.iter().any(|w| matches!(*w, "while" | "until")) {
            return Some("shell loop (while/until) that relaunches its children".into());
        }
        if words.contains(&"nohup") {
            return Some("shell that detaches its children with nohup".into());
        }
    }
    if let Some(exe) = program::exe_path(p) {
        let dir = program::parent_dir(exe);
        if clues.dirs.iter().any(|d| d == dir) {
            return Some(format!("runs from the same dropped directory {dir}"));
        }
    }
    if let Some(where_) = program::dropped_location(p) {
        return Some(format!("launcher whose {where_}"));
    }
    if let Some(path) = p.cmdline.iter().find(|a| {
        clues.paths.iter().any(|c| c == a.as_str())
            || clues.dirs.iter().any(|d| a.starts_with(&format!("{d}/")))
    }) {
        return Some(format!(
            "launcher whose command line names {}",
            path.as_str()
        ));
    }
    None
}

/// `top` and all its live descendants, each before its own children
/// (children in PID order), leaving out tracer's own lineage.
fn subtree_top_down<'t>(
    table: &'t ProcessTable,
    top: &'t Process,
    self_chain: &HashSet<ProcessId>,
) -> Vec<&'t Process> {
    let mut out = Vec::new();
    let mut stack = vec![top];
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        if !seen.insert(p.id()) || self_chain.contains(&p.id()) || is_kernel_thread(p) {
            continue;
        }
        // An exited process has nothing to stop, but its children still
        // belong to the tree (watch's table keeps such parents).
        if p.exited_at_ns.is_none() {
            out.push(p);
        }
        let kids: Vec<&Process> = table.children_of(&p.id()).collect();
        stack.extend(kids.into_iter().rev());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{error::exit, model::HostStr};

    pub(crate) fn proc(pid: u32, ppid: u32, exe: &str, cmdline: &str) -> Process {
        Process {
            pid,
            ppid,
            uid: 0,
            comm: program::file_name(program::strip_deleted(exe))
                .chars()
                .take(15)
                .collect::<String>()
                .into(),
            exe: Some(exe.into()),
            cmdline: cmdline
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(HostStr::from)
                .collect(),
            start_ticks: pid as u64 * 10,
            kernel_thread: false,
            threads: Vec::new(),
            exited_at_ns: None,
            namespaces: None,
            cgroup: None,
            container: None,
            leader_exited: false,
            cut: Vec::new(),
            ..Default::default()
        }
    }

    #[test]
    fn a_chain_of_one_dropped_program_is_followed_to_its_end() {
        const DEPTH: u32 = 3000;
        let mut t = ProcessTable::new();
        let mut procs = vec![
            proc(1, 0, "/usr/lib/systemd/systemd", "/sbin/init"),
            proc(50, 1, "/usr/sbin/sshd", "sshd: root@pts/0"),
        ];
        for level in 0..DEPTH {
            let pid = 1000 + level;
            let ppid = if level == 0 { 50 } else { pid - 1 };
            procs.push(proc(pid, ppid, "/tmp/.x/dhpcd", "/tmp/.x/dhpcd -o pool"));
        }
        t.seed(procs);
        let leaf = 1000 + DEPTH - 1;
        let plan = plan_tree(&t, leaf, 99_999).unwrap();
        assert_eq!(
            plan.members.len(),
            DEPTH as usize,
            "every level is a member"
        );
        assert!(plan.members.iter().all(|m| m.process.pid >= 1000));
        assert_eq!(plan.boundary.as_ref().map(|b| b.pid), Some(50));
        // Events show 64 of them and say how many more there are.
        let id = t.get(leaf).unwrap().id();
        let shown = t.ancestry(&id);
        let cut = t.ancestry_cut_of(&id, &shown).unwrap();
        assert_eq!(shown.len(), crate::table::MAX_DEPTH);
        assert_eq!(
            cut.left_out,
            DEPTH as usize - 1 - crate::table::MAX_DEPTH + 2
        );
        assert_eq!(cut.continues_at, shown.last().unwrap().ppid);
    }

    /// init -> cron -> cron (job) -> sh -c run.sh -> sh watchdog loop -> miner (+ a thread-rich sibling)
    /// and, elsewhere, sshd -> bash -> tracer.
    pub(crate) fn cron_chain() -> ProcessTable {
        let mut kthreadd = proc(2, 0, "", "");
        kthreadd.comm = "kthreadd".into();
        kthreadd.exe = None;
        kthreadd.kernel_thread = true;
        let mut kworker = proc(3, 2, "", "");
        kworker.comm = "kworker/0:0".into();
        kworker.exe = None;
        kworker.kernel_thread = true;
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "/usr/lib/systemd/systemd", "/sbin/init"),
            kthreadd,
            kworker,
            proc(100, 1, "/usr/sbin/cron", "/usr/sbin/cron -f"),
            proc(200, 100, "/usr/sbin/cron", "/usr/sbin/CRON -f"),
            proc(300, 200, "/usr/bin/dash", "/bin/sh -c /var/tmp/.x/run.sh"),
            proc(
                400,
                300,
                "/usr/bin/dash",
                "sh -c while true; do /var/tmp/.x/kswapd0 -o pool:3333; sleep 1; done",
            ),
            proc(
                500,
                400,
                "/var/tmp/.x/kswapd0 (deleted)",
                "/var/tmp/.x/kswapd0 -o pool:3333",
            ),
            proc(
                510,
                500,
                "/var/tmp/.x/kswapd0 (deleted)",
                "/var/tmp/.x/kswapd0 --worker",
            ),
            proc(
                600,
                1,
                "/usr/sbin/sshd",
                "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
            ),
            proc(610, 600, "/usr/sbin/sshd", "sshd: root@pts/0"),
            proc(620, 610, "/usr/bin/bash", "-bash"),
            proc(630, 620, "/usr/local/bin/tracer", "tracer kill-tree 500"),
        ]);
        t
    }

    fn pids(plan: &KillPlan) -> Vec<u32> {
        plan.members.iter().map(|m| m.process.pid).collect()
    }

    /// A member's reason; panics when `pid` is not a member.
    fn reason_of(plan: &KillPlan, pid: u32) -> String {
        let member = plan.members.iter().find(|m| m.process.pid == pid);
        member.expect("a member").reason.clone()
    }

    fn refusal(t: &ProcessTable, target: u32) -> String {
        let e = plan_tree(t, target, 630).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), exit::REFUSED, "{e}");
        e.to_string()
    }

    #[test]
    fn orphans_sharing_the_targets_session_or_group_are_listed_as_relatives() {
        let mut t = cron_chain();
        let with_ids = |mut p: Process, pgid, sid| {
            p.pgid = pgid;
            p.sid = sid;
            p
        };
        let get = |t: &ProcessTable, pid| t.get(pid).unwrap().clone();
        for (pid, pgid, sid) in [
            (300, 300, 300),
            (400, 300, 300),
            (500, 300, 300),
            (510, 300, 300),
        ] {
            let p = with_ids(get(&t, pid), pgid, sid);
            t.upsert(p, None);
        }
        // A grandchild double-forked to init (same group), one that made a
        // group of its own (same session), an unrelated daemon, and tracer
        // (630) in a session of its own.
        let orphan = with_ids(proc(700, 1, "/var/tmp/.x/kswapd0", "kswapd0 -d"), 300, 300);
        let own_group = with_ids(proc(710, 1, "/usr/bin/sleep", "sleep 99"), 710, 300);
        let unrelated = with_ids(proc(720, 1, "/usr/sbin/rsyslogd", "rsyslogd"), 720, 720);
        t.upsert(orphan, None);
        t.upsert(own_group, None);
        t.upsert(unrelated, None);
        let tracer = with_ids(get(&t, 630), 630, 630);
        t.upsert(tracer, None);
        let plan = plan_tree(&t, 500, 630).unwrap();
        let rel = relatives(&t, &plan, 630);
        let listed: Vec<(u32, &str)> = rel
            .iter()
            .map(|r| (r.process.pid, r.reason.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    700,
                    "related: same process group (300) as the target, reparented to init"
                ),
                (
                    710,
                    "related: same session (300) as the target, reparented to init"
                ),
            ]
        );
        // The caller's own session is never the attacker's.
        let mut t2 = t;
        let tracer = with_ids(get(&t2, 630), 999, 300);
        t2.upsert(tracer, None);
        let rel = relatives(&t2, &plan, 630);
        assert_eq!(rel.iter().map(|r| r.process.pid).collect::<Vec<_>>(), [700]);
    }

    fn selection(matched: &[(u32, &str)]) -> crate::views::selection::Selection {
        crate::views::selection::Selection {
            selector: "file /var/tmp/.x/kswapd0".into(),
            matched: matched
                .iter()
                .map(|(pid, why)| (*pid, vec![why.to_string()]))
                .collect(),
            refused: Default::default(),
            identities: vec![],
            gaps: vec![],
        }
    }

    #[test]
    fn a_selection_is_one_plan_with_each_match_saying_why() {
        let t = cron_chain();
        // The worker and the miner both run the file; kthreadd and tracer's
        // shell were matched too (an fd, say) and are refused.
        let sel = selection(&[
            (510, "runs it"),
            (500, "runs it"),
            (2, "holds it open as fd 3"),
            (620, "holds it open as fd 9"),
        ]);
        let plan = plan_selected(&t, sel, 630).unwrap();
        assert_eq!(
            pids(&plan),
            [300, 400, 500, 510],
            "each process once, top-down"
        );
        assert_eq!(reason_of(&plan, 500), "runs it");
        assert_eq!(
            reason_of(&plan, 510),
            "runs it; descendant of 500 (kswapd0)"
        );
        let sel = plan.selection.as_ref().unwrap();
        assert!(
            sel.refused[&2].contains("kernel thread"),
            "{:?}",
            sel.refused
        );
        assert!(
            sel.refused[&620].contains("ancestor of tracer"),
            "{:?}",
            sel.refused
        );
        assert_eq!(plan.boundary.as_ref().unwrap().pid, 200);
        assert!(plan.other_boundaries.is_empty());
    }

    #[test]
    fn matches_in_separate_trees_keep_each_boundary() {
        let t = cron_chain();
        // The sshd session's bash (not tracer's chain here: tracer is 999).
        let sel = selection(&[(500, "runs it"), (620, "maps it")]);
        let plan = plan_selected(&t, sel, 999).unwrap();
        assert!(pids(&plan).contains(&500) && pids(&plan).contains(&620));
        assert_eq!(plan.boundary.as_ref().unwrap().pid, 200);
        let others: Vec<u32> = plan
            .other_boundaries
            .iter()
            .map(|b| b.process.pid)
            .collect();
        assert_eq!(others, [610]);
    }

    #[test]
    fn a_selection_of_only_refused_processes_is_refused() {
        let t = cron_chain();
        let e = plan_selected(&t, selection(&[(1, "runs it"), (2, "maps it")]), 630).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), exit::REFUSED, "{e}");
        assert!(e.to_string().contains("1: PID 1 is init"), "{e}");
    }

    #[test]
    fn cron_chain_stops_at_cron_and_takes_the_loop() {
        let t = cron_chain();
        let plan = plan_tree(&t, 500, 630).unwrap();
        assert_eq!(pids(&plan), [300, 400, 500, 510]);
        assert_eq!(plan.boundary.as_ref().unwrap().pid, 200);
        assert!(plan
            .boundary_reason
            .as_ref()
            .unwrap()
            .contains("cron daemon"));
        assert_eq!(
            plan.ancestry.iter().map(|p| p.pid).collect::<Vec<_>>(),
            [200, 100, 1]
        );
        let reason = |pid| reason_of(&plan, pid);
        assert_eq!(reason(500), "the target");
        assert!(reason(400).contains("launches kswapd0"), "{}", reason(400));
        assert!(reason(300).contains("run.sh"), "{}", reason(300));
        assert_eq!(reason(510), "descendant of 500 (kswapd0)");
        assert_eq!(plan.command, "sudo tracer kill-tree 500 --kill");
    }

    #[test]
    fn a_child_target_takes_its_parent_chain_too() {
        // Targeting the worker child still climbs to the loop.
        let plan = plan_tree(&cron_chain(), 510, 630).unwrap();
        assert_eq!(pids(&plan), [300, 400, 500, 510]);
    }

    #[test]
    fn loops_are_recognised_without_naming_the_target() {
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "/usr/lib/systemd/systemd", "/sbin/init"),
            proc(40, 1, "/usr/bin/bash", "bash"),
            proc(50, 40, "/usr/bin/bash", "bash -c until false; do ./m; done"),
            proc(60, 50, "/opt/app/m", "./m"),
        ]);
        let plan = plan_tree(&t, 60, 999).unwrap();
        assert_eq!(pids(&plan), [50, 60]);
        assert!(
            plan.members[0].reason.contains("launches m")
                || plan.members[0].reason.contains("loop")
        );
        // The interactive bash above is not part of the chain.
        assert_eq!(plan.boundary.as_ref().unwrap().pid, 40);
        assert!(plan
            .boundary_reason
            .as_ref()
            .unwrap()
            .starts_with("not part of the chain"));
    }

    #[test]
    fn same_directory_and_dropped_launchers_join() {
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "/usr/lib/systemd/systemd", "/sbin/init"),
            proc(
                10,
                1,
                "/usr/bin/containerd-shim-runc-v2",
                "containerd-shim-runc-v2 -id x",
            ),
            proc(20, 10, "/opt/.cache/helper", "/opt/.cache/helper"),
            proc(30, 20, "/dev/shm/launch", "/dev/shm/launch"),
            proc(40, 30, "/opt/.cache/payload", "/opt/.cache/payload"),
        ]);
        let plan = plan_tree(&t, 40, 999).unwrap();
        assert_eq!(pids(&plan), [20, 30, 40]);
        assert!(
            plan.members[1].reason.contains("/dev/shm"),
            "{}",
            plan.members[1].reason
        );
        assert!(plan.members[0]
            .reason
            .contains("same dropped directory /opt/.cache"));
        assert!(plan.boundary_reason.unwrap().contains("container runtime"));
    }

    #[test]
    fn a_dead_middle_parent_does_not_cut_the_target_out_of_the_set() {
        // As in watch's table: the shell between the loop and the miner has
        // exited but is kept, so the miner's ancestry stays whole.
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "/usr/lib/systemd/systemd", "/sbin/init"),
            proc(100, 1, "/usr/sbin/cron", "/usr/sbin/cron -f"),
            proc(
                400,
                100,
                "/usr/bin/dash",
                "sh -c while true; do sh -c /var/tmp/.x/miner; done",
            ),
        ]);
        t.on_fork(400, 450, 45, 0);
        t.on_exec(
            450,
            400,
            0,
            45,
            "sh".into(),
            "/usr/bin/dash".into(),
            vec!["sh".into(), "-c".into(), "/var/tmp/.x/miner".into()],
        );
        t.on_fork(450, 500, 50, 0);
        t.on_exec(
            500,
            450,
            0,
            50,
            "miner".into(),
            "/var/tmp/.x/miner".into(),
            vec!["/var/tmp/.x/miner".into()],
        );
        t.on_exit(450, 45, 1_000);
        let plan = plan_tree(&t, 500, 999).unwrap();
        assert_eq!(pids(&plan), [400, 500]);
    }

    #[test]
    fn sshd_listener_is_a_boundary_and_a_fake_cron_is_not() {
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "/usr/lib/systemd/systemd", "/sbin/init"),
            proc(600, 1, "/usr/sbin/sshd", "/usr/sbin/sshd -D"),
            proc(700, 600, "/tmp/cron", "cron"),
            proc(800, 700, "/tmp/miner", "/tmp/miner"),
        ]);
        let plan = plan_tree(&t, 800, 999).unwrap();
        assert_eq!(pids(&plan), [700, 800]);
        assert!(plan.boundary_reason.unwrap().contains("sshd listener"));
    }

    #[test]
    fn tracer_lineage_is_never_in_the_set() {
        // tracer started from inside the malicious tree: its ancestors stop the climb.
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "/usr/lib/systemd/systemd", "/sbin/init"),
            proc(10, 1, "/usr/bin/bash", "bash -c while :; do /tmp/m; done"),
            proc(20, 10, "/tmp/m", "/tmp/m"),
            proc(30, 10, "/usr/local/bin/tracer", "tracer kill-tree 20"),
        ]);
        let plan = plan_tree(&t, 20, 30).unwrap();
        assert_eq!(pids(&plan), [20]);
        assert_eq!(
            plan.boundary_reason.unwrap(),
            "an ancestor of tracer itself"
        );
    }

    #[test]
    fn refuses_init_kernel_threads_tracer_and_its_ancestors() {
        let t = cron_chain();
        assert!(refusal(&t, 1).contains("PID 1"));
        assert!(refusal(&t, 2).contains("kernel thread"));
        assert!(refusal(&t, 3).contains("kernel thread"));
        assert!(refusal(&t, 630).contains("tracer itself"));
        assert!(refusal(&t, 620).contains("ancestor of tracer"));
        assert!(refusal(&t, 610).contains("ancestor of tracer"));
        assert!(refusal(&t, 4242).contains("no process with PID 4242"));
        for bad in ["abc", "-5", "0", "", "12x"] {
            let e = parse_target(bad).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&e), exit::REFUSED);
        }
        assert_eq!(parse_target(" 42 ").unwrap(), 42);
    }

    #[test]
    fn clues_skip_system_programs_and_shared_dirs() {
        let mut c = ChainClues::default();
        c.add(&proc(1, 0, "/usr/bin/dash", "sh -c /tmp/x.sh"));
        c.add(&proc(2, 0, "/tmp/ab", "/tmp/ab"));
        assert_eq!(c.paths, ["/tmp/x.sh", "/tmp/ab"]);
        assert_eq!(c.names, ["x.sh"]); // "ab" is too short to search for
        assert!(c.dirs.is_empty()); // /tmp itself says nothing
    }
}
