//! Where each process tracer shows lives: namespaces from the kernel's
//! task record where it has them (else `/proc/PID/ns`), the cgroup v2
//! path and the container it names from `/proc/PID/cgroup`, or the
//! runtime process above it. Read for the processes a command shows, not
//! for every process on the host: the cost follows the output.
use std::{collections::HashMap, sync::Arc};

use tracer_common::NsIds;

use crate::{
    model::{
        placement::{self, Namespaces},
        Container, Finding, HostStr, Process, ProcessId,
    },
    proc,
    table::ProcessTable,
};

/// The namespaces a kernel record carries (`None` when it carries none).
pub fn from_kernel(ids: &NsIds) -> Option<Namespaces> {
    if ids.pid_ns == 0 && ids.net_ns == 0 && ids.mnt_ns == 0 {
        return None;
    }
    let mut ns = Namespaces {
        pid: ids.pid_ns,
        mnt: ids.mnt_ns,
        net: ids.net_ns,
        uts: ids.uts_ns,
        user: ids.user_ns,
        ns_pid: ids.ns_pid,
        separate: Default::default(),
    };
    ns.compare_with(host());
    Some(ns)
}

pub use crate::proc::{host_namespaces as host, read_placement as fill};

/// Container identity from the runtime above, for a process in a PID
/// namespace of its own whose cgroup named none.
pub fn fill_from_chain(p: &mut Process, table: &ProcessTable) {
    if let Some(container) = container_from_chain(p, table) {
        p.container = Some(container);
    }
}

/// The container the runtime process above `p` names, when `p` lives in a
/// PID namespace of its own and has no container yet.
fn container_from_chain(p: &Process, table: &ProcessTable) -> Option<Arc<Container>> {
    let separate = p.namespaces.as_ref().is_some_and(Namespaces::separate_pid);
    if p.container.is_some() || !separate {
        return None;
    }
    placement::container_of_chain(table.ancestors(&p.id())).map(Arc::new)
}

/// Places every process a list of findings shows (each process and its
/// ancestry), each PID read once.
pub fn annotate_findings(findings: &mut [Finding], table: &ProcessTable) {
    let mut seen: HashMap<(u32, u64), Process> = HashMap::new();
    let mut place = |p: &mut Process| {
        let key = (p.pid, p.start_ticks);
        if let Some(done) = seen.get(&key) {
            copy_placement(done, p);
            return;
        }
        if p.namespaces.is_none() {
            p.namespaces = table.by_id(&p.id()).and_then(|t| t.namespaces.clone());
        }
        fill(p);
        fill_from_chain(p, table);
        seen.insert(key, p.clone());
    };
    for f in findings.iter_mut() {
        if let Some(p) = f.process.as_mut() {
            place(p);
        }
        f.ancestry.iter_mut().for_each(&mut place);
    }
}

/// Places the live processes of a table that `which` picks
/// (`--container` filters need all of them).
pub fn fill_table(table: &mut ProcessTable, which: impl Fn(&Process) -> bool) {
    let ids: Vec<_> = table.live().filter(|p| which(p)).map(Process::id).collect();
    for id in &ids {
        table.update(id, fill);
    }
    let chained: Vec<(ProcessId, Arc<Container>)> = ids
        .iter()
        .filter_map(|id| Some((*id, container_from_chain(table.by_id(id)?, table)?)))
        .collect();
    for (id, container) in chained {
        table.update(&id, |p| p.container = Some(container));
    }
}

/// `--container` named a container no process is in: said, exit 7.
pub fn require_any(table: &ProcessTable, wanted: &str) -> Result<(), crate::error::UserError> {
    if table.live().any(|p| placement::in_container(p, wanted)) {
        Ok(())
    } else {
        Err(crate::error::UserError::NoMatch(format!(
            "--container {}: no running process is in that container or PID namespace",
            HostStr::from_text(wanted).quoted_prefix(80)
        )))
    }
}

/// Cgroup paths and containers by cgroup id, for watch: one /proc read
/// per cgroup it meets, not per event.
#[derive(Default)]
pub struct CgroupCache {
    known: HashMap<u64, CgroupFacts>,
}

/// What one cgroup's path says: the path, and the container it names.
type CgroupFacts = (Option<Arc<HostStr>>, Option<Arc<Container>>);

/// Cgroups remembered at most (a host may make and drop cgroups forever).
const CGROUPS_KEPT: usize = 4096;

impl CgroupCache {
    /// Places the table's process `id` from its exec record: the kernel's
    /// namespaces, then the cgroup path and container its cgroup id names
    /// (read from /proc the first time that id is seen), else the runtime
    /// process above it.
    pub fn place(&mut self, table: &mut ProcessTable, id: &ProcessId, ids: &NsIds) {
        let namespaces = from_kernel(ids);
        let known = if ids.cgroup_id == 0 {
            None
        } else {
            match self.known.get(&ids.cgroup_id) {
                Some(k) => Some(k.clone()),
                None => proc::read_file(&format!("/proc/{}/cgroup", id.pid))
                    .ok()
                    .map(|file| {
                        let k = (
                            placement::v2_path(&file).map(Arc::new),
                            placement::container_of_cgroup(&file).map(Arc::new),
                        );
                        if self.known.len() >= CGROUPS_KEPT {
                            self.known.clear();
                        }
                        self.known.insert(ids.cgroup_id, k.clone());
                        k
                    }),
            }
        };
        table.update(id, |p| {
            if namespaces.is_some() {
                p.namespaces = namespaces;
            }
            if let Some((cgroup, container)) = known {
                p.cgroup = cgroup;
                p.container = container;
            }
        });
        if let Some(container) = table.by_id(id).and_then(|p| container_from_chain(p, table)) {
            table.update(id, |p| p.container = Some(container));
        }
    }
}

/// Whether a process may be in a container: it lives outside some host
/// namespace, or its namespaces are not known. On the host a process's
/// cgroup names no container, and reading it for each of thousands of
/// socket holders would cost more than the listing.
pub fn maybe_contained(p: &Process) -> bool {
    p.namespaces
        .as_ref()
        .is_none_or(|ns| !ns.separate.is_empty())
}

fn copy_placement(from: &Process, to: &mut Process) {
    to.namespaces = from.namespaces.clone();
    to.cgroup = from.cgroup.clone();
    to.container = from.container.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_namespaces_and_shares_them_with_the_host_or_says_which_not() {
        let mut me = proc::read_process(std::process::id()).unwrap();
        fill(&mut me);
        let ns = me.namespaces.expect("/proc/self/ns is readable");
        assert_ne!(ns.pid, 0);
        assert_ne!(ns.ns_pid, 0);
    }
}
