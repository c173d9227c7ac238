//! The BPF inventory: every loaded program and link, straight from the
//! `bpf(2)` syscall (ids, type, name, load time, maps, helpers from the
//! translated instructions), where each attaches (link info, and
//! `BPF_TASK_FD_QUERY` on the perf-event fds processes hold), the processes
//! that hold each (from tracer's `iter/task_file` program, so an owner
//! hidden from /proc still shows), and the pins under every mounted bpffs.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use serde::Serialize;
use tracer_common::{BpfFileRecord, BPF_FILE_LINK, BPF_FILE_PERF_EVENT, BPF_FILE_PROG};

use crate::{
    kernel::{bpf_sys, events::text, Kernel},
    model::HostStr,
    views::kallsyms::Kallsyms,
};

/// A process holding a BPF object open.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct Owner {
    pub pid: u32,
    pub comm: HostStr,
    pub fd: u32,
    /// What the fd is: `prog`, `link` or `perf_event`.
    pub via: &'static str,
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct BpfProgram {
    pub id: u32,
    #[serde(rename = "type")]
    pub prog_type: &'static str,
    pub name: String,
    pub tag: String,
    /// Boot-time ns when it was loaded.
    pub loaded_at_ns: u64,
    pub uid: u32,
    pub map_ids: Vec<u32>,
    /// Helpers it calls, by kernel symbol.
    pub helpers: Vec<String>,
    /// Where it is attached: `tracepoint/sys_exit_getdents64`,
    /// `raw_tracepoint/...`, `cgroup id N`...
    pub attach: Vec<String>,
    pub link_ids: Vec<u32>,
    /// Processes holding the program, one of its links or its perf event.
    pub owners: Vec<Owner>,
    /// Whether `owners` was looked up (the BPF-file iterator ran).
    pub owners_known: bool,
    pub pins: Vec<PathBuf>,
    /// Loaded by tracer (this run or another running tracer).
    pub tracer_own: bool,
    /// In the kernel's program table but left out of the `bpf(2)` id
    /// listing (`BPF_PROG_GET_NEXT_ID`) that bpftool and tracer read: the
    /// listing is being doctored.
    pub unlisted: bool,
}

/// Everything the inventory saw, plus what it could not check.
#[derive(Default, Serialize, schemars::JsonSchema)]
pub struct BpfInventory {
    pub programs: Vec<BpfProgram>,
    /// One line per check that could not run.
    pub notes: Vec<String>,
    /// tracer's own open files with their function pointers, for the
    /// kernel-hook checks.
    #[serde(skip)]
    pub own_files: Vec<BpfFileRecord>,
}

/// tracer's own programs: the ids it loaded in this run, and the names in
/// its object (to recognise other running tracer instances).
#[derive(Clone, Debug, Default)]
pub struct OwnPrograms {
    pub ids: BTreeSet<u32>,
    pub names: Vec<String>,
}

impl OwnPrograms {
    pub fn of(kernel: &Kernel) -> OwnPrograms {
        OwnPrograms {
            ids: kernel.own_program_ids().into_iter().collect(),
            names: kernel.program_names(),
        }
    }
}

/// What a pinned path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pinned {
    Prog(u32),
    Link(u32),
    Other,
}

impl BpfInventory {
    /// Takes the inventory. `files` is the BPF-file iterator's output (or
    /// why it is missing: then owners are unknown, said in `notes`);
    /// `own` the ids and names of tracer's programs; `ksyms` names helpers.
    pub fn take(
        files: Result<Vec<BpfFileRecord>, String>,
        kernel_ids: Result<Vec<u32>, String>,
        own: &OwnPrograms,
        ksyms: Option<&Kallsyms>,
    ) -> BpfInventory {
        let mut inv = BpfInventory::default();
        let owners_known = files.is_ok();
        let files = files.unwrap_or_else(|why| {
            inv.notes.push(format!("BPF owners not checked: {why}"));
            Vec::new()
        });
        let kernel_ids = kernel_ids.unwrap_or_else(|why| {
            inv.notes.push(format!(
                "BPF programs hidden from the bpf(2) listing not checked: {why}"
            ));
            Vec::new()
        });
        let ids = match bpf_sys::program_ids() {
            Ok(ids) => ids,
            Err(e) => {
                inv.notes.push(format!(
                    "BPF programs not listed: bpf(BPF_PROG_GET_NEXT_ID): {e}"
                ));
                return inv;
            }
        };
        let listed: BTreeSet<u32> = ids.iter().copied().collect();
        // Programs the kernel's own tables show (iter/bpf_prog, and the fds
        // processes hold) that the id listing left out.
        let unlisted: BTreeSet<u32> = kernel_ids
            .iter()
            .copied()
            .chain(
                files
                    .iter()
                    .filter(|r| matches!(r.kind, BPF_FILE_PROG | BPF_FILE_PERF_EVENT))
                    .map(|r| r.obj_id),
            )
            .filter(|id| *id != 0 && !listed.contains(id))
            .collect();
        let mut programs: BTreeMap<u32, BpfProgram> = BTreeMap::new();
        let mut helpers_withheld = false;
        for id in ids.into_iter().chain(unlisted.iter().copied()) {
            // A program can go between listing and opening: skip it. One
            // the listing missed and that cannot be opened is taken as gone
            // (a hider that also blocks opening by id is not caught here).
            let Ok(fd) = bpf_sys::program_fd(id) else {
                continue;
            };
            let Ok(info) = bpf_sys::prog_info(&fd) else {
                continue;
            };
            helpers_withheld |= info.xlated.is_empty();
            programs.insert(
                id,
                BpfProgram {
                    id,
                    prog_type: bpf_sys::prog_type_name(info.prog_type),
                    name: String::from_utf8_lossy(&info.name).into_owned(),
                    tag: info.tag.iter().map(|b| format!("{b:02x}")).collect(),
                    loaded_at_ns: info.load_time_ns,
                    uid: info.uid,
                    map_ids: info.map_ids,
                    helpers: ksyms
                        .map(|k| helper_names(&info.xlated, k))
                        .unwrap_or_default(),
                    unlisted: unlisted.contains(&id),
                    owners_known,
                    ..Default::default()
                },
            );
        }
        if helpers_withheld {
            inv.notes.push(
                "helper calls not checked for some programs: the kernel withheld their instructions"
                    .into(),
            );
        }
        if ksyms.is_none() {
            inv.notes
                .push("helper calls not named: no kernel symbol addresses".into());
        }
        let mut link_to_prog = BTreeMap::new();
        match bpf_sys::link_ids() {
            Ok(ids) => {
                for id in ids {
                    let Some(link) = bpf_sys::link_fd(id)
                        .ok()
                        .and_then(|fd| bpf_sys::link_info(&fd).ok())
                    else {
                        continue;
                    };
                    link_to_prog.insert(link.id, link.prog_id);
                    if let Some(p) = programs.get_mut(&link.prog_id) {
                        p.link_ids.push(link.id);
                        p.attach.push(link.target);
                    }
                }
            }
            Err(e) => inv.notes.push(format!(
                "BPF links not listed: bpf(BPF_LINK_GET_NEXT_ID): {e}"
            )),
        }
        for rec in &files {
            let owner = |via| Owner {
                pid: rec.tgid,
                comm: text(&rec.comm),
                fd: rec.fd,
                via,
            };
            let (prog_id, owner) = match rec.kind {
                BPF_FILE_PROG => (rec.obj_id, owner("prog")),
                BPF_FILE_LINK => match link_to_prog.get(&rec.obj_id) {
                    Some(&p) => (p, owner("link")),
                    None => continue,
                },
                BPF_FILE_PERF_EVENT if rec.obj_id != 0 => {
                    if let Some(p) = programs.get_mut(&rec.obj_id) {
                        if let Ok(q) = bpf_sys::task_fd_query(rec.tgid, rec.fd) {
                            p.attach.push(q.target);
                        }
                    }
                    (rec.obj_id, owner("perf_event"))
                }
                _ => continue,
            };
            if let Some(p) = programs.get_mut(&prog_id) {
                p.owners.push(owner);
            }
        }
        inv.own_files = files
            .into_iter()
            .filter(|r| r.kind == tracer_common::BPF_FILE_OWN)
            .collect();
        inv.pins(&mut programs, &link_to_prog);
        let me = std::process::id();
        for p in programs.values_mut() {
            p.attach.sort();
            p.attach.dedup();
            p.owners.sort();
            p.owners.dedup();
            p.tracer_own = own.ids.contains(&p.id)
                || is_other_tracer(p, &own.names)
                || (!p.owners.is_empty() && p.owners.iter().all(|o| o.pid == me));
        }
        inv.programs = programs.into_values().collect();
        inv
    }

    /// Walks every bpffs mounted in tracer's mount namespace and records
    /// each pinned program or link against its program.
    fn pins(&mut self, programs: &mut BTreeMap<u32, BpfProgram>, links: &BTreeMap<u32, u32>) {
        let roots = match crate::mountinfo::own_mount_points_of_type("bpf") {
            Ok(r) => r,
            Err(e) => {
                self.notes
                    .push(format!("BPF pins not checked: /proc/self/mountinfo: {e}"));
                return;
            }
        };
        for root in roots {
            let mut stack = vec![PathBuf::from(root)];
            let mut seen = 0usize;
            while let Some(dir) = stack.pop() {
                for path in crate::getdents::child_paths(&dir) {
                    seen += 1;
                    if seen > MAX_PINS_PER_FS {
                        self.notes.push(format!(
                            "BPF pins: stopped after {MAX_PINS_PER_FS} entries under {}",
                            dir.display()
                        ));
                        break;
                    }
                    match std::fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => stack.push(path),
                        Ok(_) => {
                            let prog = match pinned(&path) {
                                Pinned::Prog(id) => Some(id),
                                Pinned::Link(id) => links.get(&id).copied(),
                                Pinned::Other => None,
                            };
                            if let Some(p) = prog.and_then(|id| programs.get_mut(&id)) {
                                p.pins.push(path);
                            }
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}

const MAX_PINS_PER_FS: usize = 10_000;

/// Opens a pin and asks what it is (`prog_id:` or `link_id:` in the fd's
/// fdinfo; tracer's own fd).
fn pinned(path: &Path) -> Pinned {
    let Ok(fd) = bpf_sys::obj_get(path) else {
        return Pinned::Other;
    };
    let Ok(info) = crate::proc::read_file(&format!("/proc/self/fdinfo/{}", fd.as_raw_fd())) else {
        return Pinned::Other;
    };
    parse_fdinfo(&String::from_utf8_lossy(&info))
}

/// A link's fdinfo names its program too, so the link id decides first.
fn parse_fdinfo(text: &str) -> Pinned {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    if let Some(id) = field("link_id:") {
        Pinned::Link(id)
    } else if let Some(id) = field("prog_id:") {
        Pinned::Prog(id)
    } else {
        Pinned::Other
    }
}

/// Another running tracer's program: a name from tracer's object, held only
/// by processes called tracer.
fn is_other_tracer(p: &BpfProgram, own_names: &[String]) -> bool {
    !p.owners.is_empty()
        && own_names.contains(&p.name)
        && p.owners.iter().all(|o| o.comm.starts_with("tracer"))
}

/// Helper names by id (`enum bpf_func_id`).
const HELPER_NAMES: &str = include_str!("bpf_helper_names.txt");

fn helper_by_id(id: usize) -> Option<&'static str> {
    HELPER_NAMES
        .lines()
        .filter(|l| !l.starts_with('#'))
        .nth(id)
        .filter(|_| id != 0)
}

/// The helpers called in translated instructions, by kernel symbol.
fn helper_names(xlated: &[u8], ksyms: &Kallsyms) -> Vec<String> {
    let Some(base) = ksyms.addr_of("__bpf_call_base") else {
        return Vec::new();
    };
    let mut names: Vec<String> = bpf_sys::helper_call_offsets(xlated)
        .into_iter()
        .map(|off| {
            // Where the kernel left the helper's id rather than its
            // address (it does for some helpers), name it by id.
            if let Some(name) = usize::try_from(off).ok().and_then(helper_by_id) {
                return format!("bpf_{name}");
            }
            let addr = base.wrapping_add_signed(off as i64);
            ksyms
                .describe(addr)
                .unwrap_or_else(|| format!("unknown function at {addr:#x}"))
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_a_link_names_the_link() {
        let link = "pos:\t0\nflags:\t02000000\nlink_type:\tperf\nlink_id:\t12\nprog_tag:\tab\nprog_id:\t40\n";
        assert_eq!(parse_fdinfo(link), Pinned::Link(12));
        let prog =
            "pos:\t0\nprog_type:\t1\nprog_jited:\t1\nprog_tag:\tab\nmemlock:\t4096\nprog_id:\t41\n";
        assert_eq!(parse_fdinfo(prog), Pinned::Prog(41));
        assert_eq!(parse_fdinfo("map_type:\t2\nmap_id:\t5\n"), Pinned::Other);
    }

    #[test]
    fn helpers_resolve_through_the_call_base() {
        let ksyms = Kallsyms::parse(
            b"ffffffff814bcf50 T bpf_send_signal\nffffffff814cc810 T __bpf_call_base\n".to_vec(),
        );
        let off = (0xffffffff814bcf50u64 as i64 - 0xffffffff814cc810u64 as i64) as i32;
        let mut insn = vec![0x85, 0, 0, 0];
        insn.extend_from_slice(&off.to_ne_bytes());
        insn.extend_from_slice(&[0x85, 0, 0, 0, 1, 0, 0, 0]);
        // A call into the middle of a function is named with its offset.
        insn.extend_from_slice(&[0x85, 0, 0, 0]);
        insn.extend_from_slice(&(off + 0x10).to_ne_bytes());
        assert_eq!(helper_names(&insn, &ksyms)[2], "bpf_send_signal+0x10");
        assert_eq!(
            helper_names(&insn, &ksyms),
            [
                "bpf_map_lookup_elem",
                "bpf_send_signal",
                "bpf_send_signal+0x10"
            ]
        );
    }

    #[test]
    fn another_tracer_is_recognised_by_name_and_owner() {
        let names = vec!["task_iter".to_string()];
        let owner = |comm: &str| Owner {
            pid: 9,
            comm: comm.into(),
            fd: 3,
            via: "prog",
        };
        let mut p = BpfProgram {
            name: "task_iter".into(),
            owners: vec![owner("tracer")],
            ..Default::default()
        };
        assert!(is_other_tracer(&p, &names));
        p.owners.push(owner("bpftrace"));
        assert!(
            !is_other_tracer(&p, &names),
            "a tracer name held by another tool"
        );
        p.owners.clear();
        assert!(!is_other_tracer(&p, &names), "nobody holds it");
    }
}
