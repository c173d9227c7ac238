//! The process table: the one owner of process state.
//!
//! Seeded from the kernel's task list and /proc, kept current by fork, exec
//! and exit events. Parents are linked by identity (pid + start time), not by
//! pid, so a recycled PID never grafts a stranger into an ancestry; and
//! exited processes stay while anything that descends from them lives, so a
//! chain such as cron -> sh -> watchdog -> miner survives the watchdog's
//! parent dying.
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::model::{HostStr, Process, ProcessId};

/// How long an exited process with no living descendants is kept (ns).
const EXITED_RETENTION_NS: u64 = 120 * 1_000_000_000;
/// Hard cap on exited entries kept, whatever their descendants.
const EXITED_CAP: usize = 65_536;
/// Longest ancestry shown in events and findings (guards against a cycle
/// from bad data too); the rest is counted in an [`AncestryCut`].
pub const MAX_DEPTH: usize = 64;

/// An ancestry cut at [`MAX_DEPTH`]: shown in human output as
/// `... N more`, in JSON as this object next to the `ancestry` it cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct AncestryCut {
    /// Ancestors shown (the nearest ones).
    pub shown: usize,
    /// Ancestors left out beyond them.
    pub left_out: usize,
    /// The PID where the chain continues: the first ancestor left out.
    pub continues_at: u32,
}

#[derive(Clone, Debug)]
struct Entry {
    process: Process,
    parent: Option<ProcessId>,
}

#[derive(Default)]
pub struct ProcessTable {
    entries: HashMap<ProcessId, Entry>,
    /// The live process currently holding each PID.
    live: HashMap<u32, ProcessId>,
    /// Exited processes in the order they exited, for pruning.
    exited: VecDeque<(u64, ProcessId)>,
    /// (parent, child) for every entry with a parent in the table, kept as
    /// entries come and go, so a walk down a tree costs the size of that
    /// tree, never a pass over the whole host.
    links: BTreeSet<(ProcessId, ProcessId)>,
    /// Processes seeded without their exe and command line, to be read
    /// from /proc when an event first shows them.
    details_pending: HashSet<ProcessId>,
}

/// The lowest and highest identities, bounds for a range over `links`.
const ID_MIN: ProcessId = ProcessId {
    pid: 0,
    start_ticks: 0,
};
const ID_MAX: ProcessId = ProcessId {
    pid: u32::MAX,
    start_ticks: u64::MAX,
};

impl ProcessTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live processes.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The live process holding `pid`.
    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.live.get(&pid).and_then(|id| self.by_id(id))
    }

    /// The process holding `pid` now, or else the last one that held it
    /// and exited (still kept): the writer of a file that exits before its
    /// write is read.
    pub fn latest(&self, pid: u32) -> Option<&Process> {
        self.get(pid).or_else(|| {
            self.exited
                .iter()
                .filter(|(_, id)| id.pid == pid)
                .filter_map(|(_, id)| self.by_id(id))
                .max_by_key(|p| p.start_ticks)
        })
    }

    /// A process, live or exited, by identity.
    pub fn by_id(&self, id: &ProcessId) -> Option<&Process> {
        self.entries.get(id).map(|e| &e.process)
    }

    /// Every live process.
    pub fn live(&self) -> impl Iterator<Item = &Process> {
        self.live.values().filter_map(|id| self.by_id(id))
    }

    /// The parent's identity as recorded when the process was created.
    pub fn parent_of(&self, id: &ProcessId) -> Option<ProcessId> {
        self.entries.get(id).and_then(|e| e.parent)
    }

    /// Inserts or replaces a live process. Its parent is the live holder of
    /// `ppid`, unless `parent` names one explicitly.
    pub fn upsert(&mut self, process: Process, parent: Option<ProcessId>) {
        let id = process.id();
        if process.exe.is_some() || !process.cmdline.is_empty() {
            self.details_pending.remove(&id);
        }
        let parent = parent.or_else(|| self.live.get(&process.ppid).copied().filter(|p| *p != id));
        if let Some(old) = self.live.insert(process.pid, id) {
            if old != id {
                // The PID was recycled and we missed the exit: retire the old one.
                self.mark_exited(old, 0);
            }
        }
        match self.entries.get_mut(&id) {
            Some(entry) => {
                let keep_parent = entry.parent.or(parent);
                entry.process = process;
                let old_parent = std::mem::replace(&mut entry.parent, keep_parent);
                if old_parent.is_none() {
                    self.link_child(keep_parent, id);
                }
            }
            None => {
                self.entries.insert(id, Entry { process, parent });
                self.link_child(parent, id);
            }
        }
    }

    fn link_child(&mut self, parent: Option<ProcessId>, child: ProcessId) {
        if let Some(parent) = parent.filter(|p| *p != child) {
            self.links.insert((parent, child));
        }
    }

    fn has_children(&self, id: ProcessId) -> bool {
        self.links
            .range((id, ID_MIN)..=(id, ID_MAX))
            .next()
            .is_some()
    }

    /// A new process forked from `parent_pid`: it starts as a copy of its
    /// parent (same program, same arguments) until it execs.
    pub fn on_fork(&mut self, parent_pid: u32, child_pid: u32, start_ticks: u64, uid: u32) {
        let parent = self.live.get(&parent_pid).copied();
        let mut child = parent
            .and_then(|p| self.by_id(&p).cloned())
            .unwrap_or_default();
        child.pid = child_pid;
        child.ppid = parent_pid;
        child.uid = uid;
        child.start_ticks = start_ticks;
        child.exited_at_ns = None;
        child.kernel_thread = false;
        if parent.is_some_and(|p| self.details_pending.contains(&p)) {
            // Its copy of the parent has nothing to copy yet.
            self.details_pending.insert(child.id());
        }
        self.upsert(child, parent);
    }

    /// The process holding `pid` ran a new program. Returns the updated entry.
    #[allow(clippy::too_many_arguments)]
    pub fn on_exec(
        &mut self,
        pid: u32,
        ppid: u32,
        uid: u32,
        start_ticks: u64,
        comm: HostStr,
        exe: HostStr,
        argv: Vec<HostStr>,
    ) -> ProcessId {
        let id = ProcessId { pid, start_ticks };
        self.details_pending.remove(&id);
        // exec keeps the process group and session of the process.
        let (pgid, sid) = self.by_id(&id).map_or((0, 0), |p| (p.pgid, p.sid));
        let process = Process {
            pid,
            ppid,
            pgid,
            sid,
            uid,
            comm,
            exe: Some(exe),
            cmdline: argv,
            start_ticks,
            kernel_thread: false,
            threads: Vec::new(),
            exited_at_ns: None,
            namespaces: None,
            cgroup: None,
            container: None,
            leader_exited: false,
            cut: Vec::new(),
        };
        self.upsert(process, None);
        id
    }

    /// Changes a known process in place (a rename); its identity and
    /// parent stay.
    pub fn update(&mut self, id: &ProcessId, change: impl FnOnce(&mut Process)) {
        if let Some(e) = self.entries.get_mut(id) {
            change(&mut e.process);
        }
    }

    /// The process holding `pid` exited at `now_ns` (boot-time ns).
    pub fn on_exit(&mut self, pid: u32, start_ticks: u64, now_ns: u64) {
        let id = ProcessId { pid, start_ticks };
        if self.live.get(&pid) == Some(&id) {
            self.live.remove(&pid);
        }
        self.mark_exited(id, now_ns);
        self.prune(now_ns);
    }

    fn mark_exited(&mut self, id: ProcessId, now_ns: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.process.exited_at_ns.is_none() {
                e.process.exited_at_ns = Some(now_ns);
                self.exited.push_back((now_ns, id));
            }
        }
    }

    /// Forgets exited processes that nothing living descends from, once they
    /// are older than the retention, or when too many are kept.
    pub fn prune(&mut self, now_ns: u64) {
        let mut budget = self.exited.len();
        while budget > 0 {
            budget -= 1;
            let Some(&(when, id)) = self.exited.front() else {
                break;
            };
            let over_cap = self.exited.len() > EXITED_CAP;
            if !over_cap && now_ns.saturating_sub(when) < EXITED_RETENTION_NS {
                break;
            }
            self.exited.pop_front();
            if self.has_children(id) && !over_cap {
                // Still an ancestor of something we keep: look again later.
                self.exited.push_back((now_ns, id));
                continue;
            }
            self.remove(id);
        }
    }

    fn remove(&mut self, id: ProcessId) {
        self.details_pending.remove(&id);
        if let Some(e) = self.entries.remove(&id) {
            if let Some(parent) = e.parent {
                self.links.remove(&(parent, id));
            }
            // Children of a removed entry keep their parent's identity (it
            // still names them in ancestry output) but are no longer linked.
            let orphans: Vec<_> = self
                .links
                .range((id, ID_MIN)..=(id, ID_MAX))
                .copied()
                .collect();
            for link in orphans {
                self.links.remove(&link);
            }
        }
    }

    /// The chain of ancestors of `id`, nearest parent first, up to PID 1 or
    /// as far as the table knows.
    /// Every ancestor of `id`, nearest first, however deep the chain: for
    /// kill-tree, which must follow a chain to its end. Bounded by the
    /// table's size, so a corrupt loop of parent links cannot trap it.
    pub fn ancestors<'t>(&'t self, id: &ProcessId) -> impl Iterator<Item = &'t Process> + 't {
        let mut cur = self.parent_of(id);
        let mut steps = self.entries.len();
        std::iter::from_fn(move || {
            let p = cur?;
            if steps == 0 {
                return None;
            }
            steps -= 1;
            let e = self.entries.get(&p)?;
            cur = if e.process.pid <= 1 { None } else { e.parent };
            Some(&e.process)
        })
    }

    /// Where [`ancestry`](Self::ancestry) cut the chain of `id`, if it did:
    /// how many ancestors it left out (counted up to the table's size) and
    /// the first of them.
    pub fn ancestry_cut(&self, id: &ProcessId) -> Option<AncestryCut> {
        let mut rest = self.ancestors(id).skip(MAX_DEPTH);
        let first = rest.next()?;
        Some(AncestryCut {
            left_out: 1 + rest.count(),
            continues_at: first.pid,
            shown: MAX_DEPTH,
        })
    }

    /// The cut of an ancestry already taken: counted only when it is full,
    /// so events whose chains are short pay nothing.
    pub fn ancestry_cut_of(&self, id: &ProcessId, ancestry: &[&Process]) -> Option<AncestryCut> {
        (ancestry.len() >= MAX_DEPTH)
            .then(|| self.ancestry_cut(id))
            .flatten()
    }

    pub fn ancestry(&self, id: &ProcessId) -> Vec<&Process> {
        let mut out = Vec::new();
        let mut cur = self.parent_of(id);
        while let Some(p) = cur {
            let Some(e) = self.entries.get(&p) else { break };
            out.push(&e.process);
            if out.len() >= MAX_DEPTH || e.process.pid <= 1 {
                break;
            }
            cur = e.parent;
        }
        out
    }

    /// The children of `id`, live and exited, in PID order, from the
    /// maintained index (cost: the number of children, not the table's
    /// size). Exited entries are included so that a walk down a tree passes
    /// through a parent that already died.
    pub fn children_of(&self, id: &ProcessId) -> impl Iterator<Item = &Process> {
        self.links
            .range((*id, ID_MIN)..=(*id, ID_MAX))
            .filter_map(|(_, child)| self.by_id(child))
    }

    /// Number of entries, live and exited.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seeds the table from a list of processes (kernel tasks, /proc).
    /// Parents are linked after all are inserted, so order does not matter.
    pub fn seed(&mut self, processes: impl IntoIterator<Item = Process>) {
        let processes: Vec<Process> = processes.into_iter().collect();
        for p in &processes {
            self.live.insert(p.pid, p.id());
            self.entries.entry(p.id()).or_insert(Entry {
                process: p.clone(),
                parent: None,
            });
        }
        for p in processes {
            let parent = self.live.get(&p.ppid).copied().filter(|pp| *pp != p.id());
            self.upsert(p, parent);
        }
    }

    /// Seeds like [`Self::seed`]; the processes without exe and command
    /// line (a kernel-only view) get them from /proc on first use.
    pub fn seed_deferred(&mut self, processes: Vec<Process>) {
        self.details_pending.extend(
            processes
                .iter()
                .filter(|p| !p.kernel_thread && p.exe.is_none() && p.cmdline.is_empty())
                .map(Process::id),
        );
        self.seed(processes);
    }

    /// Reads from /proc the exe and command line still pending for `id` and
    /// its ancestors: what an event about `id` shows. Each process is read
    /// once; the cost is the length of the chain, never the host's size.
    pub fn read_pending_details(&mut self, id: &ProcessId) {
        if self.details_pending.is_empty() {
            return;
        }
        let mut chain: Vec<ProcessId> = vec![*id];
        chain.extend(self.ancestry(id).iter().map(|p| p.id()));
        self.read_details_of(chain);
    }

    /// Like [`Self::read_pending_details`] for the descendants of `id`:
    /// what a kill-tree plan about `id` shows, so only alerts and findings
    /// pay for the walk down.
    pub fn read_pending_details_below(&mut self, id: &ProcessId) {
        if self.details_pending.is_empty() {
            return;
        }
        let mut tree = Vec::new();
        let mut below = vec![*id];
        while let Some(cur) = below.pop() {
            let children: Vec<ProcessId> = self.children_of(&cur).map(Process::id).collect();
            tree.extend(&children);
            below.extend(children);
        }
        self.read_details_of(tree);
    }

    fn read_details_of(&mut self, ids: Vec<ProcessId>) {
        for id in ids {
            if self.details_pending.remove(&id) {
                if let Some(e) = self.entries.get_mut(&id) {
                    crate::proc::read_details(&mut e.process);
                }
            }
        }
    }

    /// Brings the table back in line with the system after events were
    /// lost: `processes` is what runs now. Live entries not in it exited
    /// unseen (kept, marked exited, for ancestry); new ones are added and
    /// changed ones (an exec we missed) replaced.
    pub fn resync(&mut self, processes: Vec<Process>, now_ns: u64) {
        let present: std::collections::HashSet<ProcessId> =
            processes.iter().map(Process::id).collect();
        let gone: Vec<ProcessId> = self
            .live
            .values()
            .copied()
            .filter(|id| !present.contains(id))
            .collect();
        for id in gone {
            self.live.remove(&id.pid);
            self.mark_exited(id, now_ns);
        }
        self.seed(processes);
        self.prune(now_ns);
    }

    /// What /proc can no longer tell, for watch's lineage file: every
    /// exited entry that still has children in the table (with its
    /// parent), and every live entry whose parent exited (the kernel has
    /// reparented it to init or a subreaper). Exited leaves are left out:
    /// they link nothing. Live processes first, then exited ones, most
    /// recently exited first.
    pub fn lineage_entries(&self) -> Vec<(&Process, Option<ProcessId>)> {
        let parent_exited = |e: &Entry| {
            e.parent
                .and_then(|p| self.entries.get(&p))
                .is_some_and(|p| p.process.exited_at_ns.is_some())
        };
        let mut live: Vec<&Entry> = self
            .live
            .values()
            .filter_map(|id| self.entries.get(id))
            .filter(|e| parent_exited(e))
            .collect();
        live.sort_by_key(|e| e.process.id());
        let exited = self
            .exited
            .iter()
            .rev()
            .filter(|(_, id)| self.has_children(*id))
            .filter_map(|(_, id)| self.entries.get(id))
            .filter(|e| e.process.exited_at_ns.is_some());
        live.into_iter()
            .chain(exited)
            .map(|e| (&e.process, e.parent))
            .collect()
    }

    /// Takes in lineage saved by watch (see [`Self::lineage_entries`]):
    /// exited processes the table lacks join it as exited, and a process
    /// the table holds under the same identity takes back the parent it was
    /// forked from when that parent is known, so a child reparented to init
    /// hangs under its real tree again. Returns how many links changed.
    pub fn merge_lineage(&mut self, saved: Vec<(Process, Option<ProcessId>)>) -> usize {
        self.merge_lineage_checked(saved).0
    }

    /// [`merge_lineage`](Self::merge_lineage), also returning the parent
    /// links refused, one sentence each: a child never starts before its
    /// parent, so such a link is corrupt (or forged) and would put an
    /// innocent process in a kill set.
    pub fn merge_lineage_checked(
        &mut self,
        saved: Vec<(Process, Option<ProcessId>)>,
    ) -> (usize, Vec<String>) {
        let mut refused = Vec::new();
        for (p, _) in &saved {
            let id = p.id();
            if self.entries.contains_key(&id) || self.live.get(&p.pid) == Some(&id) {
                continue;
            }
            let mut p = p.clone();
            // Saved alive but not running now: it exited since.
            let when = p.exited_at_ns.unwrap_or(0);
            p.exited_at_ns = Some(when);
            self.entries.insert(
                id,
                Entry {
                    process: p,
                    parent: None,
                },
            );
            self.exited.push_back((when, id));
        }
        let mut relinked = 0;
        for (p, parent) in saved {
            let (id, Some(parent)) = (p.id(), parent) else {
                continue;
            };
            if parent == id || !self.entries.contains_key(&parent) {
                continue;
            }
            if id.start_ticks < parent.start_ticks {
                refused.push(format!(
                    "pid {} as a child of pid {}: it started {:.2} s before that parent",
                    id.pid,
                    parent.pid,
                    (parent.start_ticks - id.start_ticks) as f64 / crate::model::USER_HZ as f64
                ));
                continue;
            }
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            if e.parent == Some(parent) {
                continue;
            }
            if let Some(old) = e.parent.replace(parent) {
                self.links.remove(&(old, id));
            }
            self.links.insert((parent, id));
            relinked += 1;
        }
        (relinked, refused)
    }

    /// Builds a table from /proc (read through raw system calls).
    pub fn from_proc() -> Self {
        let mut t = Self::new();
        let pids = crate::proc::list_pids().unwrap_or_default();
        t.seed(pids.into_iter().filter_map(crate::proc::read_process));
        t
    }

    /// Like [`Self::from_proc`], each process's exe and command line left
    /// for [`Self::read_details_for`] (or the ancestry readers): a kill-tree
    /// plan needs them for its chain only, not for the whole host.
    pub fn from_proc_deferred() -> Self {
        let mut t = Self::new();
        let pids = crate::proc::list_pids().unwrap_or_default();
        t.seed_deferred(
            pids.into_iter()
                .filter_map(crate::proc::read_process_brief)
                .collect(),
        );
        t
    }

    /// Reads the pending exe and command line of these processes.
    pub fn read_details_for(&mut self, ids: impl IntoIterator<Item = ProcessId>) {
        self.read_details_of(ids.into_iter().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_child_older_than_its_parent_is_refused() {
        let mut t = ProcessTable::new();
        let parent = proc(10, 1, "sh", 500);
        let innocent = proc(11, 1, "cron", 350);
        t.seed([parent.clone(), innocent.clone()]);
        let (relinked, refused) =
            t.merge_lineage_checked(vec![(innocent.clone(), Some(parent.id()))]);
        assert_eq!(relinked, 0);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("1.50 s before"), "{}", refused[0]);
        assert_eq!(t.children_of(&parent.id()).count(), 0);
    }

    fn proc(pid: u32, ppid: u32, comm: &str, start: u64) -> Process {
        Process {
            pid,
            ppid,
            comm: comm.into(),
            start_ticks: start,
            ..Default::default()
        }
    }

    fn chain(t: &ProcessTable, pid: u32) -> Vec<String> {
        let id = t.get(pid).unwrap().id();
        t.ancestry(&id).iter().map(|p| p.comm.to_string()).collect()
    }

    // Against the real /proc: this test process, seeded as the kernel view
    // has it (no exe, no command line), gets both on first use, once, and
    // a forked child of a pending process is pending too.
    #[test]
    fn deferred_details_are_read_from_proc_on_first_use() {
        let me = std::process::id();
        let start = crate::proc::start_ticks(me).unwrap();
        let mut t = ProcessTable::new();
        t.seed_deferred(vec![proc(1, 0, "init", 1), proc(me, 1, "test", start)]);
        let id = t.get(me).unwrap().id();
        assert!(t.get(me).unwrap().exe.is_none());
        t.on_fork(me, 4_000_000, 7, 0);
        let child = t.get(4_000_000).unwrap().id();
        t.read_pending_details(&id);
        // The chain only: the child waits for a plan that needs it.
        assert!(t.details_pending.contains(&child));
        t.read_pending_details_below(&id);
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(
            t.get(me)
                .unwrap()
                .exe
                .as_ref()
                .map(|e| e.as_str().to_string()),
            Some(exe.to_string_lossy().into_owned())
        );
        assert!(!t.get(me).unwrap().cmdline.is_empty());
        // The child (no such process in /proc) was tried and is done with.
        assert!(!t.details_pending.contains(&child));
        assert!(!t.details_pending.contains(&id));
        // init is an ancestor: tried too (its start time does not match).
        assert!(t.details_pending.is_empty());
    }

    #[test]
    fn ancestry_survives_a_dead_parent() {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, "init", 1), proc(100, 1, "cron", 10)]);
        t.on_fork(100, 200, 20, 0);
        t.on_exec(
            200,
            100,
            0,
            20,
            "sh".into(),
            "/bin/sh".into(),
            vec!["sh".into()],
        );
        t.on_fork(200, 300, 30, 0);
        t.on_exec(300, 200, 0, 30, "watchdog".into(), "/tmp/w".into(), vec![]);
        t.on_fork(300, 400, 40, 0);
        t.on_exec(400, 300, 0, 40, "miner".into(), "/tmp/m".into(), vec![]);
        t.on_exit(300, 30, 1_000);
        t.on_exit(200, 20, 2_000);
        assert_eq!(chain(&t, 400), ["watchdog", "sh", "cron", "init"]);
        // Long after, the chain is still kept: the miner lives.
        t.prune(1_000 * EXITED_RETENTION_NS);
        assert_eq!(chain(&t, 400), ["watchdog", "sh", "cron", "init"]);
        assert!(t
            .by_id(&ProcessId {
                pid: 300,
                start_ticks: 30
            })
            .unwrap()
            .exited_at_ns
            .is_some());
    }

    #[test]
    fn latest_finds_a_process_that_already_exited_by_its_pid() {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, "init", 1)]);
        t.on_fork(1, 80, 8, 0);
        t.on_exec(80, 1, 0, 8, "old".into(), "/o".into(), vec![]);
        t.on_exit(80, 8, 10);
        t.on_fork(1, 80, 9, 0);
        t.on_exec(80, 1, 0, 9, "writer".into(), "/w".into(), vec![]);
        t.on_exit(80, 9, 20);
        let p = t.latest(80).unwrap();
        assert_eq!((p.comm.as_str(), p.start_ticks), ("writer", 9));
        assert!(p.exited_at_ns.is_some());
        assert!(t.latest(81).is_none());
    }

    #[test]
    fn recycled_pid_does_not_join_an_old_chain() {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, "init", 1)]);
        t.on_fork(1, 50, 5, 0);
        t.on_exec(50, 1, 0, 5, "parent".into(), "/p".into(), vec![]);
        t.on_fork(50, 60, 6, 0);
        t.on_exit(50, 5, 10);
        // PID 50 comes back as an unrelated process.
        t.on_fork(1, 50, 99, 0);
        t.on_exec(50, 1, 0, 99, "stranger".into(), "/s".into(), vec![]);
        assert_eq!(chain(&t, 60), ["parent", "init"]);
        assert_eq!(chain(&t, 50), ["init"]);
    }

    #[test]
    fn exited_leaves_are_pruned_after_retention() {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, "init", 1)]);
        t.on_fork(1, 70, 7, 0);
        t.on_exit(70, 7, 5);
        assert!(t
            .by_id(&ProcessId {
                pid: 70,
                start_ticks: 7
            })
            .is_some());
        t.prune(5 + EXITED_RETENTION_NS + 1);
        assert!(t
            .by_id(&ProcessId {
                pid: 70,
                start_ticks: 7
            })
            .is_none());
        assert!(t.get(70).is_none());
    }

    #[test]
    fn resync_after_losses_marks_the_unseen_exits_and_adds_the_unseen_starts() {
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "init", 1),
            proc(10, 1, "sh", 10),
            proc(20, 10, "old", 20),
        ]);
        // While events were lost: 20 exited, 30 started under 10, 10 exec'd.
        let mut sh = proc(10, 1, "bash", 10);
        sh.exe = Some("/bin/bash".into());
        t.resync(vec![proc(1, 0, "init", 1), sh, proc(30, 10, "new", 30)], 5);
        assert!(t.get(20).is_none());
        assert_eq!(t.get(10).unwrap().comm, "bash");
        assert_eq!(chain(&t, 30), ["bash", "init"]);
        assert_eq!(t.live_count(), 3);
    }

    #[test]
    fn saved_lineage_puts_reparented_grandchildren_back_under_their_tree() {
        // What watch saw: sh(10) forked a middle shell (20) that forked two
        // sleepers (30, 31) and exited.
        let mut w = ProcessTable::new();
        w.seed([proc(1, 0, "init", 1), proc(10, 1, "sh", 10)]);
        w.on_fork(10, 20, 20, 0);
        w.on_fork(20, 30, 30, 0);
        w.on_fork(20, 31, 31, 0);
        w.on_fork(10, 40, 40, 0); // a live child of a live parent: not saved
        w.on_exit(20, 20, 5);
        let saved: Vec<(Process, Option<ProcessId>)> = w
            .lineage_entries()
            .into_iter()
            .map(|(p, parent)| (p.clone(), parent))
            .collect();
        let pids: Vec<u32> = saved.iter().map(|(p, _)| p.pid).collect();
        assert_eq!(pids, [30, 31, 20]);
        // What /proc shows later: the sleepers under init.
        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, "init", 1),
            proc(10, 1, "sh", 10),
            proc(30, 1, "sh", 30),
            proc(31, 1, "sh", 31),
            proc(40, 10, "sh", 40),
        ]);
        assert_eq!(chain(&t, 30), ["init"]);
        assert_eq!(t.merge_lineage(saved.clone()), 3);
        assert_eq!(chain(&t, 30), ["sh", "sh", "init"]);
        let sh = t.get(10).unwrap().id();
        let middle = ProcessId {
            pid: 20,
            start_ticks: 20,
        };
        assert_eq!(
            t.children_of(&sh).map(|p| p.pid).collect::<Vec<_>>(),
            [20, 40]
        );
        assert_eq!(
            t.children_of(&middle).map(|p| p.pid).collect::<Vec<_>>(),
            [30, 31]
        );
        assert!(t.by_id(&middle).unwrap().exited_at_ns.is_some());
        assert!(t.get(20).is_none());
        // Twice changes nothing; a saved identity /proc no longer has (PID
        // recycled) is only an exited entry, never a live one.
        assert_eq!(t.merge_lineage(saved), 0);
        let mut stale = proc(10, 1, "old", 3);
        stale.exited_at_ns = None;
        t.merge_lineage(vec![(stale, None)]);
        assert_eq!(t.get(10).unwrap().comm, "sh");
    }

    #[test]
    fn fork_copies_the_parent_program_until_exec() {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, "init", 1)]);
        t.on_exec(
            1,
            0,
            0,
            1,
            "bash".into(),
            "/bin/bash".into(),
            vec!["bash".into()],
        );
        t.on_fork(1, 80, 8, 1000);
        let c = t.get(80).unwrap();
        assert_eq!((c.comm.as_str(), c.uid, c.ppid), ("bash", 1000, 1));
        assert_eq!(t.children_of(&t.get(1).unwrap().id()).count(), 1);
    }

    #[test]
    fn children_index_follows_forks_exits_and_pruning() {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, "init", 1), proc(10, 1, "sh", 2)]);
        let sh = t.get(10).unwrap().id();
        for pid in [30, 20, 40] {
            t.on_fork(10, pid, pid as u64, 0);
        }
        let kids = |t: &ProcessTable| t.children_of(&sh).map(|p| p.pid).collect::<Vec<_>>();
        assert_eq!(kids(&t), [20, 30, 40]);
        // An exited child stays listed until pruned, then is gone from the index.
        t.on_exit(30, 30, 5);
        assert_eq!(kids(&t), [20, 30, 40]);
        t.prune(5 + EXITED_RETENTION_NS + 1);
        assert_eq!(kids(&t), [20, 40]);
        // A recycled PID under another parent is not sh's child.
        t.on_fork(1, 30, 99, 0);
        assert_eq!(kids(&t), [20, 40]);
        assert_eq!(t.len(), 5);
    }
}
