//! Resolves the structure offsets the kernel programs need from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`), so no offset is compiled in.
use std::collections::HashMap;

use anyhow::{anyhow, bail, ensure, Context, Result};
use tracer_common::{KernelOffsets, SocketOffsets};

use super::{
    attach_btf::{AttachTarget, TargetKind},
    btf_index::{BtfBytes, BtfIndex, Wanted, KIND_FUNC, KIND_STRUCT, KIND_TYPEDEF},
};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The directory of the kernel's BTF files.
pub const BTF_DIR: &str = "/sys/kernel/btf";

/// Every struct the programs read a field of, found together in the one
/// pass over the types; a name missing here still resolves, by a walk of
/// every type (~1 ms).
const STRUCTS: &[&str] = &[
    "task_struct",
    "cred",
    "mm_struct",
    "linux_binprm",
    "sock",
    "sock_common",
    "packet_sock",
    "socket",
    "file",
    "inode",
    "net",
    "ns_common",
    "path",
    "dentry",
    "qstr",
    "file_operations",
    "seq_file",
    "seq_operations",
    "bpf_prog",
    "bpf_prog_aux",
    "bpf_link",
    "perf_event",
    "nsproxy",
    "mnt_namespace",
    "pt_regs",
    "module",
    "module_kobject",
    "kallsym_iter",
    "uts_namespace",
    "pid_namespace",
    "user_namespace",
    "pid",
    "upid",
    "css_set",
    "cgroup",
    "kernfs_node",
    "msghdr",
    "signal_struct",
    "super_block",
    "vm_area_struct",
    "module_memory",
    "module_layout",
];

/// Kernel functions fentry programs attach to (see `attach_watch`); a
/// new one must be added here to be found.
const FENTRY_FUNCTIONS: &[&str] = &[
    "tcp_connect",
    "udp_sendmsg",
    "udpv6_sendmsg",
    "__ip4_datagram_connect",
    "__ip6_datagram_connect",
];

/// The running kernel's BTF, with the structs tracer reads indexed by name,
/// and every attach target (iterators, BTF tracepoints, fentry functions).
pub struct KernelBtf {
    btf: BtfIndex,
    structs: HashMap<String, u32>,
    attach_targets: Vec<AttachTarget>,
}

/// The families of attach targets: iterators and BTF tracepoints.
const TARGET_PREFIXES: &[&str] = &["bpf_iter_", "btf_trace_"];

impl KernelBtf {
    /// Indexes BTF `bytes`, finding the wanted names in the same pass and
    /// giving `on_target` each attach target as the pass reaches it.
    fn new(bytes: BtfBytes, mut on_target: impl FnMut(&AttachTarget)) -> Result<Self> {
        let mut attach_targets = Vec::new();
        let (btf, ids) = BtfIndex::new(bytes, &Self::wanted(), |id, kind, name| {
            let kind = match kind {
                KIND_FUNC => TargetKind::Func,
                KIND_TYPEDEF => TargetKind::Typedef,
                _ => return,
            };
            let target = AttachTarget {
                name: String::from_utf8_lossy(name).into_owned(),
                id,
                kind,
            };
            on_target(&target);
            attach_targets.push(target);
        })?;
        let mut structs = HashMap::new();
        for id in ids {
            if btf.kind(id)? != KIND_STRUCT {
                continue;
            }
            let name = String::from_utf8_lossy(btf.name(id)?).into_owned();
            // A declaration-only duplicate has no members: keep the full one.
            if !btf.members(id)?.is_empty() || !structs.contains_key(&name) {
                structs.insert(name, id);
            }
        }
        Ok(KernelBtf {
            btf,
            structs,
            attach_targets,
        })
    }

    /// The names the index holds: the structs read, the fentry functions,
    /// and the attach target families.
    fn wanted() -> Wanted<'static> {
        Wanted::new(
            STRUCTS.iter().chain(FENTRY_FUNCTIONS).copied(),
            TARGET_PREFIXES,
        )
    }

    /// Every function and typedef a program may attach to, with its id.
    pub fn attach_targets(&self) -> &[AttachTarget] {
        &self.attach_targets
    }

    /// The size of struct `name` in bytes.
    pub(crate) fn struct_size(&self, name: &str) -> Result<u32> {
        self.btf.size(self.find_struct(name)?)
    }

    fn find_struct(&self, name: &str) -> Result<u32> {
        if let Some(&id) = self.structs.get(name) {
            return Ok(id);
        }
        let found = self.btf.structs_named(name);
        // The full definition over a declaration, as above.
        found
            .iter()
            .find(|&&id| self.btf.members(id).is_ok_and(|m| !m.is_empty()))
            .or(found.first())
            .copied()
            .ok_or_else(|| anyhow!("struct {name} not in BTF"))
    }

    /// Finds `field` in struct `name`, looking through anonymous nested
    /// structs and unions (mm_struct keeps `arg_start` in one), and returns
    /// its byte offset. A bitfield is an error.
    pub(crate) fn field_offset(&self, name: &str, field: &str) -> Result<u32> {
        let st = self.find_struct(name)?;
        find_in(&self.btf, st, field, 0)?
            .ok_or_else(|| anyhow!("field {name}.{field} not in this kernel's BTF"))
    }
}

fn find_in(btf: &BtfIndex, st: u32, field: &str, depth: u32) -> Result<Option<u32>> {
    // Anonymous members nest a few levels deep; more is broken BTF.
    ensure!(depth < 16, "anonymous members nest too deep");
    for m in btf.members(st)? {
        if m.name == field.as_bytes() {
            if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
                bail!("field {field} is a bitfield in this kernel");
            }
            return Ok(Some(m.bit_offset / 8));
        }
        if m.name.is_empty() {
            // Skip typedef/const/volatile wrappers around the anonymous type.
            let inner = btf.unwrapped(m.type_id)?;
            if btf.is_struct_or_union(inner)? {
                if let Some(off) = find_in(btf, inner, field, depth + 1)? {
                    return Ok(Some(m.bit_offset / 8 + off));
                }
            }
        }
    }
    Ok(None)
}

/// Every offset the programs read, from the given BTF.
pub fn resolve(btf: &KernelBtf) -> Result<KernelOffsets> {
    let field_offset = |s, f| btf.field_offset(s, f);
    let task = |f| field_offset("task_struct", f);
    let sk = |f| -> Result<u32> {
        // sock_common sits at the start of struct sock as `__sk_common`.
        Ok(field_offset("sock", "__sk_common")? + field_offset("sock_common", f)?)
    };
    let live = live_threads_offsets(btf);
    Ok(KernelOffsets {
        ready: 1,
        task_pid: task("pid")?,
        task_tgid: task("tgid")?,
        task_real_parent: task("real_parent")?,
        task_group_leader: task("group_leader")?,
        task_real_cred: task("real_cred")?,
        task_comm: task("comm")?,
        task_flags: task("flags")?,
        task_mm: task("mm")?,
        task_start_boottime: task("start_boottime")?,
        cred_uid: field_offset("cred", "uid")?,
        mm_arg_start: field_offset("mm_struct", "arg_start")?,
        mm_arg_end: field_offset("mm_struct", "arg_end")?,
        binprm_filename: field_offset("linux_binprm", "filename")?,
        sk_family: sk("skc_family")?,
        sk_daddr: sk("skc_daddr")?,
        sk_rcv_saddr: sk("skc_rcv_saddr")?,
        sk_dport: sk("skc_dport")?,
        sk_num: sk("skc_num")?,
        sk_v6_daddr: sk("skc_v6_daddr")?,
        sk_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        sk_protocol: field_offset("sock", "sk_protocol")?,
        task_stack: task("stack").unwrap_or(0),
        msghdr_name: field_offset("msghdr", "msg_name").unwrap_or(0),
        task_signal: live.map_or(0, |l| l.0),
        signal_live: live.map_or(0, |l| l.1),
        signal_flags: live.map_or(0, |l| l.2),
        ..namespace_offsets(btf)
    })
}

/// `task->signal`, `signal_struct.live` and `.flags`, all or none.
fn live_threads_offsets(btf: &KernelBtf) -> Option<(u32, u32, u32)> {
    Some((
        btf.field_offset("task_struct", "signal").ok()?,
        btf.field_offset("signal_struct", "live").ok()?,
        btf.field_offset("signal_struct", "flags").ok()?,
    ))
}

/// The network namespace path, then the rest of a task's namespaces, PID
/// and cgroup (see `KernelOffsets::ns_ready`): each group all or nothing.
fn namespace_offsets(btf: &KernelBtf) -> KernelOffsets {
    let Ok(net) = netns_offsets(btf) else {
        return KernelOffsets::default();
    };
    match identity_offsets(btf, &net) {
        Ok(all) => all,
        Err(_) => net,
    }
}

fn identity_offsets(btf: &KernelBtf, net: &KernelOffsets) -> Result<KernelOffsets> {
    let f = |s, f| btf.field_offset(s, f);
    let inum = |s| -> Result<u32> { Ok(f(s, "ns")? + f("ns_common", "inum")?) };
    Ok(KernelOffsets {
        ns_ready: 1,
        nsproxy_mnt_ns: f("nsproxy", "mnt_ns")?,
        mnt_ns_inum: inum("mnt_namespace")?,
        nsproxy_uts_ns: f("nsproxy", "uts_ns")?,
        uts_ns_inum: inum("uts_namespace")?,
        cred_user_ns: f("cred", "user_ns")?,
        user_ns_inum: inum("user_namespace")?,
        task_thread_pid: f("task_struct", "thread_pid")?,
        pid_level: f("pid", "level")?,
        pid_numbers: f("pid", "numbers")?,
        upid_size: btf.struct_size("upid")?,
        upid_nr: f("upid", "nr")?,
        upid_ns: f("upid", "ns")?,
        pid_ns_inum: inum("pid_namespace")?,
        task_cgroups: f("task_struct", "cgroups")?,
        css_set_dfl_cgrp: f("css_set", "dfl_cgrp")?,
        cgroup_kn: f("cgroup", "kn")?,
        kernfs_node_id: f("kernfs_node", "id")?,
        ..*net
    })
}

/// The path from a task to its network namespace's inode, all or nothing.
fn netns_offsets(btf: &KernelBtf) -> Result<KernelOffsets> {
    Ok(KernelOffsets {
        task_nsproxy: btf.field_offset("task_struct", "nsproxy")?,
        nsproxy_net_ns: btf.field_offset("nsproxy", "net_ns")?,
        net_ns_inum: net_ns_inum(btf)?,
        ..KernelOffsets::default()
    })
}

/// `net.ns.inum`: a network namespace's inode.
fn net_ns_inum(btf: &KernelBtf) -> Result<u32> {
    Ok(btf.field_offset("net", "ns")? + btf.field_offset("ns_common", "inum")?)
}

/// Offsets for the socket iterators. Resolved apart from [`resolve`], so
/// that a kernel missing one of these fields loses the socket view (and
/// says so) rather than every program. `packet_sock` is optional: without
/// it packet sockets are listed without their ethertype and interface.
pub fn resolve_sockets(btf: &KernelBtf) -> Result<SocketOffsets> {
    let field_offset = |s, f| btf.field_offset(s, f);
    let sock_common = field_offset("sock", "__sk_common")?;
    let packet = field_offset("packet_sock", "ifindex")
        .and_then(|ifindex| Ok((ifindex, field_offset("packet_sock", "num")?)));
    let (packet_ready, packet_ifindex, packet_num) = match packet {
        Ok((ifindex, num)) => (1, ifindex, num),
        Err(_) => (0, 0, 0),
    };
    Ok(SocketOffsets {
        ready: 1,
        packet_ready,
        file_inode: field_offset("file", "f_inode")?,
        file_private_data: field_offset("file", "private_data")?,
        inode_mode: field_offset("inode", "i_mode")?,
        inode_ino: field_offset("inode", "i_ino")?,
        socket_type: field_offset("socket", "type")?,
        socket_sk: field_offset("socket", "sk")?,
        socket_file: field_offset("socket", "file")?,
        sk_state: sock_common + field_offset("sock_common", "skc_state")?,
        sk_net: sock_common + field_offset("sock_common", "skc_net")?,
        net_ns_inum: net_ns_inum(btf)?,
        sk_uid: field_offset("sock", "sk_uid")?,
        sk_socket: field_offset("sock", "sk_socket")?,
        packet_ifindex,
        packet_num,
    })
}

/// Where a `struct module` keeps what identifies it, so that a module gone
/// from every list can still be recognised in kernel memory: its name,
/// its state, and `mkobj.mod`, which points back at the struct itself.
#[derive(Clone, Copy, Debug)]
pub struct ModuleLayout {
    pub name: u32,
    pub state: u32,
    pub kobj_mod: u32,
    /// Where the module's code starts (a pointer) and how long it is (a
    /// u32): `mem[MOD_TEXT]` since Linux 6.4, `core_layout` before.
    pub text_base: u32,
    pub text_size: u32,
}

pub fn resolve_module_layout(btf: &KernelBtf) -> Result<ModuleLayout> {
    let (text_base, text_size) = match btf.field_offset("module", "mem") {
        // mem[0] is MOD_TEXT.
        Ok(mem) => (
            mem + btf.field_offset("module_memory", "base")?,
            mem + btf.field_offset("module_memory", "size")?,
        ),
        Err(_) => {
            let core = btf.field_offset("module", "core_layout")?;
            (
                core + btf.field_offset("module_layout", "base")?,
                core + btf.field_offset("module_layout", "size")?,
            )
        }
    };
    Ok(ModuleLayout {
        name: btf.field_offset("module", "name")?,
        state: btf.field_offset("module", "state")?,
        kobj_mod: btf.field_offset("module", "mkobj")?
            + btf.field_offset("module_kobject", "mod")?,
        text_base,
        text_size,
    })
}

/// Where the kallsyms iterator reads `struct kallsym_iter`.
pub fn resolve_ksyms(btf: &KernelBtf) -> Result<tracer_common::ksyms::KsymOffsets> {
    let field = |name| btf.field_offset("kallsym_iter", name);
    Ok(tracer_common::ksyms::KsymOffsets {
        value: field("value")?,
        name: field("name")?,
        module_name: field("module_name")?,
    })
}

/// Loads the running kernel's BTF.
pub fn load_vmlinux_btf() -> Result<KernelBtf> {
    load_vmlinux_btf_with(|_| {})
}

/// Loads the running kernel's BTF, giving `on_target` each attach target
/// (in id order) while the rest is still being read.
pub fn load_vmlinux_btf_with(on_target: impl FnMut(&AttachTarget)) -> Result<KernelBtf> {
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        bail!(crate::error::UserError::NoBtf(VMLINUX_BTF));
    }
    // Mapped where sysfs allows it (Linux 6.16 on): the kernel's own pages,
    // no copy. Before, sysfs refuses mmap of the file (ENODEV) and it is read.
    let open_span = crate::timings::span("kernel: BTF index: open");
    let bytes = match map(VMLINUX_BTF) {
        Some(mapped) => BtfBytes::Mapped(mapped),
        None => BtfBytes::Read(
            crate::proc::read_file(VMLINUX_BTF)
                .with_context(|| format!("cannot read {VMLINUX_BTF}"))?,
        ),
    };
    drop(open_span);
    let _t = crate::timings::span("kernel: BTF index: one pass");
    KernelBtf::new(bytes, on_target).with_context(|| format!("cannot index {VMLINUX_BTF}"))
}

/// A read-only mapping of the file at `path`; `None` where it cannot be
/// mapped.
fn map(path: &str) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    // A private mapping: sysfs refuses a shared one (EACCES).
    // SAFETY: the kernel's BTF file does not change while mapped.
    unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The path kernels before 6.16 take (sysfs refuses mmap there): the
    // bytes read must index and resolve like the mapped file.
    #[test]
    fn btf_read_into_memory_resolves_the_same_offsets_as_mapped() {
        let Ok(mapped) = load_vmlinux_btf() else {
            eprintln!("no BTF on this kernel; skipping");
            return;
        };
        let read =
            KernelBtf::new(BtfBytes::Read(std::fs::read(VMLINUX_BTF).unwrap()), |_| {}).unwrap();
        let (a, b) = (resolve(&read).unwrap(), resolve(&mapped).unwrap());
        assert_eq!(
            (a.task_tgid, a.mm_arg_start, a.sk_v6_daddr, a.pid_numbers),
            (b.task_tgid, b.mm_arg_start, b.sk_v6_daddr, b.pid_numbers)
        );
        assert_eq!(read.attach_targets(), mapped.attach_targets());
    }

    // The attach BTF of net and hidden is built from what the pass streams:
    // every target, in rising id order, as the finished index lists them.
    #[test]
    fn the_pass_streams_every_attach_target_in_id_order() {
        let mut streamed = Vec::new();
        let Ok(btf) = load_vmlinux_btf_with(|t| streamed.push(t.clone())) else {
            eprintln!("no BTF on this kernel; skipping");
            return;
        };
        assert_eq!(streamed, btf.attach_targets());
        assert!(streamed.windows(2).all(|w| w[0].id < w[1].id));
        assert!(streamed.iter().any(|t| t.name == "bpf_iter_tcp"));
    }

    // The index against btf-rs, an independent reader, on the running
    // kernel: the same ids for the wanted names, and the same offset and
    // size for every named member of every struct tracer reads.
    #[test]
    fn the_index_agrees_with_btf_rs_on_the_running_kernel() {
        use btf_rs::{Btf, Type};
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("no BTF on this kernel; nothing to compare");
            return;
        }
        let raw = std::fs::read(VMLINUX_BTF).unwrap();
        let reference = Btf::from_bytes(&raw).unwrap();
        let names = STRUCTS
            .iter()
            .chain(FENTRY_FUNCTIONS)
            .map(|n| regex::escape(n))
            .chain(TARGET_PREFIXES.iter().map(|p| format!("{p}\\w+")))
            .collect::<Vec<_>>();
        let pattern = regex::Regex::new(&format!("^(?:{})$", names.join("|"))).unwrap();
        // The regex also takes other kinds of the same names (forward
        // declarations, unions), which the index leaves out anyway.
        let mut by_regex: Vec<u32> = reference
            .resolve_ids_by_regex(&pattern)
            .unwrap()
            .into_iter()
            .filter(|&id| {
                matches!(
                    reference.resolve_type_by_id(id),
                    Ok(Type::Struct(_) | Type::Func(_) | Type::Typedef(_))
                )
            })
            .collect();
        by_regex.sort_unstable();
        let (_, scanned) = BtfIndex::new(
            BtfBytes::Read(raw.clone()),
            &KernelBtf::wanted(),
            |_, _, _| {},
        )
        .unwrap();
        assert!(scanned.len() > STRUCTS.len(), "{} ids", scanned.len());
        assert_eq!(scanned, by_regex);

        let ours = KernelBtf::new(BtfBytes::Read(raw), |_| {}).unwrap();
        let mut compared = 0;
        for name in STRUCTS {
            let Some(st) = reference
                .resolve_types_by_name(name)
                .unwrap_or_default()
                .into_iter()
                .find_map(|t| match t {
                    Type::Struct(s) if !s.members.is_empty() => Some(s),
                    _ => None,
                })
            else {
                // module_layout is gone since Linux 6.4.
                assert!(ours.find_struct(name).is_err(), "{name} only in ours");
                continue;
            };
            assert_eq!(
                ours.struct_size(name).unwrap() as usize,
                st.size(),
                "{name}"
            );
            for m in &st.members {
                let member = reference.resolve_name(m).unwrap_or_default();
                if member.is_empty() || m.bitfield_size().is_some_and(|b| b != 0) {
                    continue;
                }
                assert_eq!(
                    ours.field_offset(name, &member).unwrap(),
                    m.bit_offset() / 8,
                    "{name}.{member}"
                );
                compared += 1;
            }
        }
        assert!(compared > 500, "only {compared} members compared");
    }

    // Reads the real kernel's BTF: these offsets must come out non-zero and
    // distinct where the kernel's layout makes them so.
    #[test]
    fn offsets_resolve_from_running_kernel() {
        let Ok(btf) = load_vmlinux_btf() else {
            eprintln!("no BTF on this kernel; skipping");
            return;
        };
        let off = resolve(&btf).expect("all fields resolve");
        assert_eq!(off.ready, 1);
        assert_ne!(off.task_pid, off.task_tgid);
        assert_eq!(
            off.task_tgid,
            off.task_pid + 4,
            "tgid follows pid in task_struct"
        );
        assert!(off.mm_arg_end > off.mm_arg_start);
        assert!(off.sk_v6_daddr > off.sk_daddr);
        assert_eq!(off.ns_ready, 1, "every namespace field resolves here");
        assert_eq!(off.upid_size, 16, "struct upid is an int and a pointer");
        let so = resolve_sockets(&btf).expect("socket fields resolve");
        assert_eq!(so.ready, 1);
        assert_ne!(so.file_inode, so.file_private_data);
        assert!(so.sk_uid > so.sk_net, "sk_uid lies past sock_common");
    }
}
