//! K: every process the kernel has, from the eBPF task iterator. The
//! iterator reports threads too; they are grouped under their thread group,
//! because /proc lists thread groups and a thread is not a process.
use std::collections::{BTreeMap, HashSet};

use tracer_common::{TaskRecord, PF_KTHREAD};

use crate::{
    kernel::{events::text, Kernel},
    model::{boottime_ns_to_ticks, HostStr, Process, ThreadName},
    table::ProcessTable,
};

/// One thread group as the kernel sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProcess {
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: HostStr,
    /// Start time in /proc's clock ticks.
    pub start_ticks: u64,
    pub kernel_thread: bool,
    /// Some thread of the group still has an address space. A user process
    /// with none is exiting (or a zombie).
    pub has_mm: bool,
    pub threads: u32,
    /// Threads named differently from the leader.
    pub thread_names: Vec<ThreadName>,
    /// The network namespace's inode (the leader's; a thread's when the
    /// leader has none, having exited).
    pub netns: Option<u64>,
    /// Where the leader lives (a live thread's record when the leader has
    /// exited and has no namespaces left).
    pub ns: tracer_common::NsIds,
}

impl KernelProcess {
    /// A user process that is exiting or already a zombie.
    pub fn is_exiting(&self) -> bool {
        !self.kernel_thread && !self.has_mm
    }

    /// What the kernel alone says about the process (no exe, no arguments).
    pub fn to_process(&self) -> Process {
        let mut cut = Vec::new();
        Process {
            pid: self.tgid,
            ppid: self.ppid,
            uid: self.uid,
            comm: self.comm.clone(),
            start_ticks: self.start_ticks,
            kernel_thread: self.kernel_thread,
            threads: crate::proc::cap_threads(self.thread_names.clone(), &mut cut),
            namespaces: crate::views::placement::from_kernel(&self.ns),
            cut,
            ..Default::default()
        }
    }
}

/// The kernel view, or why it was not taken.
pub enum KernelView {
    Used(BTreeMap<u32, KernelProcess>),
    Skipped(String),
}

impl KernelView {
    /// Runs the task iterator and checks that its PIDs are the ones this
    /// /proc shows (they are not when tracer runs in a nested PID or time
    /// namespace, where a diff would flag everything).
    pub fn take(kernel: &mut Kernel) -> KernelView {
        match list(kernel) {
            Ok(processes) => match same_numbering(&processes) {
                Ok(()) => KernelView::Used(processes),
                Err(why) => KernelView::Skipped(why),
            },
            Err(why) => KernelView::Skipped(why),
        }
    }

    pub fn processes(&self) -> Option<&BTreeMap<u32, KernelProcess>> {
        match self {
            KernelView::Used(p) => Some(p),
            KernelView::Skipped(_) => None,
        }
    }

    /// Why the view was skipped, if it was.
    pub fn skipped(&self) -> Option<&str> {
        match self {
            KernelView::Used(_) => None,
            KernelView::Skipped(why) => Some(why),
        }
    }
}

/// The table from the kernel's task list, with /proc's exe and command
/// line only for `wanted` and their ancestors (a host may run tens of
/// thousands of processes; a listing needs only the ones it shows).
pub fn process_table_for(kernel: &mut Kernel, wanted: &HashSet<u32>) -> ProcessTable {
    let mut table = ProcessTable::new();
    table.seed(running_processes_for(kernel, wanted));
    table
}

/// Like [`process_table_for`], the other processes' exe and command line
/// left for the table to read on first use
/// ([`ProcessTable::read_pending_details`]): watch starts in the time of
/// one kernel walk however many processes run.
pub fn process_table_deferred(kernel: &mut Kernel, wanted: &HashSet<u32>) -> ProcessTable {
    let mut table = ProcessTable::new();
    table.seed_deferred(running_processes_for(kernel, wanted));
    table
}

/// Every process from the kernel's task list; `wanted` and their
/// ancestors enriched with /proc's view of each (exe, command line) where
/// /proc agrees on its identity. Processes /proc shows but the iterator
/// does not (the iterator walks only tracer's own PID namespace) are added
/// from /proc.
fn running_processes_for(kernel: &mut Kernel, wanted: &HashSet<u32>) -> Vec<Process> {
    let tasks = kernel.tasks().unwrap_or_default();
    let grouped = group_by_tgid(&tasks);
    let mut enrich = HashSet::new();
    for &pid in wanted {
        let mut cur = Some(pid);
        while let Some(p) = cur.filter(|p| *p != 0 && enrich.insert(*p)) {
            cur = grouped.get(&p).map(|k| k.ppid);
        }
    }
    let mut processes: Vec<Process> = grouped
        .values()
        .map(|k| {
            if enrich.contains(&k.tgid) {
                with_proc_details(k)
            } else {
                k.to_process()
            }
        })
        .collect();
    let known: HashSet<u32> = processes.iter().map(|p| p.pid).collect();
    let pids = crate::proc::list_pids().unwrap_or_default();
    processes.extend(
        pids.into_iter()
            .filter(|pid| !known.contains(pid))
            .filter_map(crate::proc::read_process),
    );
    processes
}

/// A kernel task group as a process, with /proc's exe and command line
/// when /proc agrees on its identity.
pub fn with_proc_details(k: &KernelProcess) -> Process {
    let mut p = k.to_process();
    crate::proc::read_details(&mut p);
    p
}

/// Every thread group the kernel has right now.
pub fn list(kernel: &mut Kernel) -> Result<BTreeMap<u32, KernelProcess>, String> {
    let tasks = kernel
        .tasks()
        .map_err(|e| format!("the kernel task iterator failed: {e:#}"))?;
    Ok(group_by_tgid(&tasks))
}

/// Groups task records into processes, described by their leader.
pub fn group_by_tgid(tasks: &[TaskRecord]) -> BTreeMap<u32, KernelProcess> {
    let mut out: BTreeMap<u32, KernelProcess> = BTreeMap::new();
    let mut names: BTreeMap<u32, Vec<(u32, HostStr)>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.tgid != 0) {
        if t.pid != t.tgid {
            names
                .entry(t.tgid)
                .or_default()
                .push((t.pid, text(&t.comm)));
        }
        let is_leader = t.pid == t.tgid;
        let entry = out.entry(t.tgid).or_insert_with(|| describe(t));
        entry.threads += 1;
        entry.has_mm |= t.has_mm != 0;
        if is_leader {
            let (threads, has_mm, netns, ns) = (entry.threads, entry.has_mm, entry.netns, entry.ns);
            *entry = describe(t);
            entry.threads = threads;
            entry.has_mm = has_mm;
            entry.netns = entry.netns.or(netns);
            if entry.ns.pid_ns == 0 {
                entry.ns = ns;
            }
        } else {
            if entry.netns.is_none() {
                entry.netns = netns(t);
            }
            if entry.ns.pid_ns == 0 {
                entry.ns = t.ns;
            }
        }
    }
    for (tgid, mut threads) in names {
        let Some(p) = out.get_mut(&tgid) else {
            continue;
        };
        threads.sort_by_key(|(tid, _)| *tid);
        p.thread_names = crate::proc::distinct_thread_names(threads, &p.comm);
    }
    out
}

fn describe(t: &TaskRecord) -> KernelProcess {
    KernelProcess {
        tgid: t.tgid,
        ppid: t.ppid,
        uid: t.uid,
        comm: text(&t.comm),
        start_ticks: boottime_ns_to_ticks(t.start_boottime_ns),
        kernel_thread: t.flags & PF_KTHREAD != 0,
        has_mm: t.has_mm != 0,
        threads: 0,
        thread_names: Vec::new(),
        netns: netns(t),
        ns: t.ns,
    }
}

fn netns(t: &TaskRecord) -> Option<u64> {
    (t.ns.net_ns != 0).then_some(u64::from(t.ns.net_ns))
}

/// tracer's own PID and start time must read the same in both views.
fn same_numbering(processes: &BTreeMap<u32, KernelProcess>) -> Result<(), String> {
    let me = std::process::id();
    let in_proc = crate::proc::start_ticks(me);
    match processes.get(&me) {
        Some(k) if Some(k.start_ticks) == in_proc => Ok(()),
        _ => Err("the kernel's PIDs or start times do not match this /proc \
                  (tracer runs in a nested PID or time namespace): run it on the host"
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(tgid: u32, pid: u32, comm: &str, flags: u32) -> TaskRecord {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        TaskRecord {
            tgid,
            pid,
            ppid: 1,
            uid: 0,
            flags,
            has_mm: (flags & PF_KTHREAD == 0) as u32,
            start_boottime_ns: 5_000_000_000,
            comm: c,
            ns: tracer_common::NsIds {
                net_ns: 4026531840,
                ..Default::default()
            },
        }
    }

    #[test]
    fn threads_group_under_their_leader() {
        let tasks = [
            task(10, 11, "worker", 0),
            task(10, 10, "server", 0),
            task(10, 12, "worker", 0),
            task(2, 2, "kthreadd", PF_KTHREAD),
            task(0, 0, "swapper/0", PF_KTHREAD),
        ];
        let procs = group_by_tgid(&tasks);
        assert_eq!(procs.keys().copied().collect::<Vec<_>>(), [2, 10]);
        let server = &procs[&10];
        assert_eq!((server.comm.as_str(), server.threads), ("server", 3));
        assert_eq!(server.start_ticks, 500);
        let names: Vec<(u32, &str)> = server
            .thread_names
            .iter()
            .map(|t| (t.tid, t.comm.as_str()))
            .collect();
        assert_eq!(names, [(11, "worker")], "one entry per name");
        assert!(procs[&2].kernel_thread && !procs[&2].is_exiting());
        assert_eq!(server.netns, Some(4026531840));
    }
}
