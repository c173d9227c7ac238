//! Where each process tracer shows lives: namespaces from the kernel's
//! task record where it has them (else `/proc/PID/ns`), the cgroup v2
//! path and the container it names from `/proc/PID/cgroup`, or the
//! runtime process above it. Read for the processes a command shows, not
//! for every process on the host: the cost follows the output.
use std::{collections::HashMap, os::unix::ffi::OsStrExt as _, os::unix::fs::MetadataExt as _};
use std::{path::PathBuf, sync::Arc};

use tracer_common::NsIds;

use crate::{
    model::{
        placement::{self, CgroupFacts, Namespaces},
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
/// ancestry), each PID read once. `kernel_cgroup` gives the cgroup id the
/// kernel's task record holds for a process: a hidden process's /proc is
/// missing or covered, and its cgroup is found from that id instead.
pub fn annotate_findings(
    findings: &mut [Finding],
    table: &ProcessTable,
    kernel_cgroup: impl Fn(&ProcessId) -> Option<u64>,
) {
    let mut seen: HashMap<(u32, u64), Process> = HashMap::new();
    let mut dirs = CgroupDirs::default();
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
        if p.cgroup.is_none() && !p.kernel_thread {
            if let Some(path) = kernel_cgroup(&p.id()).and_then(|id| dirs.path_of(id)) {
                p.cgroup = Some(Arc::new(path.clone()));
                if p.container.is_none() {
                    p.container = placement::container_of_path(path).map(Arc::new);
                }
            }
        }
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
                None => proc::read_cgroup(id.pid).inspect(|k| {
                    if self.known.len() >= CGROUPS_KEPT {
                        self.known.clear();
                    }
                    self.known.insert(ids.cgroup_id, k.clone());
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

/// Cgroup v2 paths by cgroup id, from one walk of the cgroup2 hierarchy
/// on first need: a cgroup's id is its directory's inode number.
#[derive(Default)]
pub struct CgroupDirs {
    by_id: Option<HashMap<u64, HostStr>>,
}

/// Directories walked at most (a host may hold many cgroups; the walk is
/// for a few hidden processes).
const CGROUP_DIRS_MAX: usize = 100_000;

impl CgroupDirs {
    /// The path of cgroup `id` below the cgroup2 root (`/` for the root),
    /// as `/proc/PID/cgroup` writes it.
    pub fn path_of(&mut self, id: u64) -> Option<&HostStr> {
        self.by_id.get_or_insert_with(walk_cgroup2).get(&id)
    }
}

fn walk_cgroup2() -> HashMap<u64, HostStr> {
    let mut by_id = HashMap::new();
    let root = crate::mountinfo::own_mount_points_of_type("cgroup2")
        .ok()
        .and_then(|roots| roots.into_iter().next());
    let Some(root) = root else {
        return by_id;
    };
    let mut pending = vec![(PathBuf::from(root), Vec::new())];
    while let Some((dir, path)) = pending.pop() {
        // cgroupfs holds no links; a link met is not followed.
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let shown: &[u8] = if path.is_empty() { b"/" } else { &path };
        by_id.insert(meta.ino(), HostStr::from_bytes(shown));
        if by_id.len() >= CGROUP_DIRS_MAX {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let mut child = path.clone();
                child.push(b'/');
                child.extend_from_slice(entry.file_name().as_bytes());
                pending.push((entry.path(), child));
            }
        }
    }
    by_id
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

    // The kernel's cgroup id of this process (the helper's, through its
    // cgroup directory's inode) names the path /proc/self/cgroup gives.
    #[test]
    fn a_cgroup_id_names_the_path_proc_gives() {
        let file = proc::read_file("/proc/self/cgroup").unwrap();
        let Some(path) = placement::v2_path(&file) else {
            eprintln!("no cgroup v2 line; nothing to compare");
            return;
        };
        let root = crate::mountinfo::own_mount_points_of_type("cgroup2").unwrap();
        let Some(root) = root.first() else {
            eprintln!("no cgroup2 mount; nothing to compare");
            return;
        };
        let dir = format!("{root}{}", path.as_str().trim_end_matches('/'));
        let id = std::fs::metadata(dir).unwrap().ino();
        assert_eq!(CgroupDirs::default().path_of(id), Some(&path));
        assert_eq!(CgroupDirs::default().path_of(u64::MAX), None);
    }

    #[test]
    fn this_process_has_namespaces_and_shares_them_with_the_host_or_says_which_not() {
        let mut me = proc::read_process(std::process::id()).unwrap();
        fill(&mut me);
        let ns = me.namespaces.expect("/proc/self/ns is readable");
        assert_ne!(ns.pid, 0);
        assert_ne!(ns.ns_pid, 0);
    }
}
