//! Records that cross the kernel/user boundary.
//!
//! Every type here is `#[repr(C)]`, plain old data, and has its size pinned at
//! compile time: the eBPF programs write these bytes and user space reads them
//! back, so a silent layout change would corrupt every event.
#![no_std]

pub mod file_users;
pub mod ksyms;

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of the executable path kept per exec event.
pub const PATH_LEN: usize = 256;
/// Bytes of the NUL-separated argument vector kept per exec event.
pub const ARGV_LEN: usize = 256;

/// `PF_KTHREAD` from include/linux/sched.h: a stable ABI flag, not an offset.
pub const PF_KTHREAD: u32 = 0x0020_0000;
/// `PF_EXITING`: the task has begun to exit (same header, same ABI).
pub const PF_EXITING: u32 = 0x0000_0004;

/// Discriminant at the start of every ring-buffer record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    Connect = 4,
    Rename = 5,
    /// 6 and 7 are unused (kinds were numbered on parallel branches).
    Mount = 8,
    Datagram = 9,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Fork),
            3 => Some(Self::Exit),
            4 => Some(Self::Connect),
            5 => Some(Self::Rename),
            8 => Some(Self::Mount),
            9 => Some(Self::Datagram),
            _ => None,
        }
    }
}

/// Indexes of the per-CPU loss counters (`LOST` map): one per event kind.
pub const LOST_SLOTS: u32 = 10;

/// Which program produced a connect record.
pub const HOOK_TRACEPOINT: u32 = 1;
pub const HOOK_FENTRY: u32 = 2;
pub const HOOK_KPROBE: u32 = 3;

/// Where a task lives, read from its `task_struct` by the same walk in
/// every program: its namespaces' inodes (`pid:[N]` as /proc/PID/ns shows
/// them), its PID inside its own PID namespace, and the kernfs id of its
/// cgroup v2 directory. A field is 0 when the kernel had no answer (an
/// exiting task has no nsproxy) or this kernel's BTF lacks a field on the way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsIds {
    pub pid_ns: u32,
    pub mnt_ns: u32,
    pub net_ns: u32,
    pub uts_ns: u32,
    pub user_ns: u32,
    /// The thread-group leader's PID as its own PID namespace numbers it.
    pub ns_pid: u32,
    /// `task->cgroups->dfl_cgrp->kn->id`: the inode of its cgroup v2 directory.
    pub cgroup_id: u64,
}

/// `sched_process_exec`: a task replaced its program.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub kind: u32,
    /// Thread-group id (the "PID" users see).
    pub tgid: u32,
    /// Thread id of the task that ran execve.
    pub pid: u32,
    /// Thread id before exec (differs when a non-leader thread called execve).
    pub old_pid: u32,
    /// tgid of the real parent.
    pub ppid: u32,
    pub uid: u32,
    /// `task_struct.start_boottime` of the thread-group leader, in ns.
    pub start_boottime_ns: u64,
    /// `bpf_ktime_get_boot_ns()` when the event fired.
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// Valid bytes in `filename` (without the NUL).
    pub filename_len: u32,
    /// Valid bytes in `argv` (NUL-separated arguments).
    pub argv_len: u32,
    /// Full length of the argument area; more than `argv_len` means truncated.
    pub argv_total_len: u32,
    pub _pad: u32,
    pub ns: NsIds,
    pub filename: [u8; PATH_LEN],
    pub argv: [u8; ARGV_LEN],
}

/// `sched_process_fork`: a new process (not a new thread) was created.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ForkEvent {
    pub kind: u32,
    pub parent_tgid: u32,
    pub child_tgid: u32,
    pub uid: u32,
    pub child_start_boottime_ns: u64,
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// `sched_process_exit`: the last thread of a process ended (`live_threads`
/// 0), or its leader ended while other threads run on (`live_threads` > 0:
/// ps shows the process `<defunct>` though it still runs). Where the
/// kernel's BTF lacks `signal_struct.live`, every leader's exit is sent
/// with `live_threads` 0.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExitEvent {
    pub kind: u32,
    pub tgid: u32,
    /// `start_boottime` of the thread-group leader, in ns.
    pub start_boottime_ns: u64,
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub live_threads: u32,
    pub _pad: u32,
}

/// `task_rename`: a task changed its name after exec (`prctl(PR_SET_NAME)`,
/// a write to `/proc/PID/comm`, `pthread_setname_np`). Renames done by
/// exec itself and those of kernel threads are left out in the kernel.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RenameEvent {
    pub kind: u32,
    pub tgid: u32,
    /// The renamed task (a thread when it differs from `tgid`).
    pub pid: u32,
    pub _pad: u32,
    /// `start_boottime` of the thread-group leader, in ns.
    pub start_boottime_ns: u64,
    pub ktime_ns: u64,
    pub old_comm: [u8; COMM_LEN],
    pub new_comm: [u8; COMM_LEN],
}

/// An outbound TCP connect, seen in the connecting task's context.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    pub kind: u32,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Host byte order; 0 when the kernel had not chosen it yet.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    pub _pad: u16,
    /// IPv4 addresses use the first 4 bytes, network order.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// `HOOK_TRACEPOINT`, `HOOK_FENTRY` or `HOOK_KPROBE`.
    pub hook: u32,
    pub _pad2: u32,
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// Which program produced a datagram record: the cgroup socket-address
/// hooks (`cgroup/connect4`, `connect6`, `sendmsg4`, `sendmsg6` on the
/// cgroup v2 root), or fentry / kprobes on the kernel's UDP functions.
pub const DGRAM_HOOK_CGROUP: u32 = 1;
pub const DGRAM_HOOK_FENTRY: u32 = 2;
pub const DGRAM_HOOK_KPROBE: u32 = 3;

/// What the process did: `connect()` a UDP socket, or send to an address
/// (`sendto`, `sendmsg`, `sendmmsg`) without connecting.
pub const DGRAM_CONNECT: u16 = 1;
pub const DGRAM_SEND: u16 = 2;

/// The kernel sends at most one record per process and destination per
/// this many ns; the datagrams in between are counted into the next.
pub const DGRAM_THROTTLE_NS: u64 = 1_000_000_000;

/// Outbound UDP to an address, IPv4 or IPv6, seen in the sending task's
/// context: the first datagram to a destination, then at most one record
/// a second per process and destination, with the count since the last.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DatagramEvent {
    pub kind: u32,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Host byte order.
    pub dport: u16,
    /// `DGRAM_CONNECT` or `DGRAM_SEND`.
    pub call: u16,
    pub _pad: u16,
    /// IPv4 addresses use the first 4 bytes, network order.
    pub daddr: [u8; 16],
    /// Datagrams (or connects) to this destination since the last record,
    /// this one included.
    pub count: u32,
    /// `DGRAM_HOOK_*`.
    pub hook: u32,
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// The throttle's key: one process and one destination.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct DatagramKey {
    pub tgid: u32,
    pub family: u16,
    pub dport: u16,
    pub daddr: [u8; 16],
}

/// The throttle's value: when the last record went out, and how many
/// datagrams were counted since.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct DatagramSeen {
    pub last_ns: u64,
    pub pending: u32,
    pub _pad: u32,
}

/// One task as the kernel's task iterator sees it (threads included).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskRecord {
    pub tgid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// `task_struct.flags` (`PF_KTHREAD` marks kernel threads).
    pub flags: u32,
    /// 1 when the task has an address space (`mm != NULL`).
    pub has_mm: u32,
    pub start_boottime_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub ns: NsIds,
}

/// Byte offsets of the kernel structure fields the programs read, resolved
/// in user space from the running kernel's BTF and set as a read-only global
/// before load. `ready` is 0 until user space filled it in.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct KernelOffsets {
    pub ready: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_real_cred: u32,
    pub task_comm: u32,
    pub task_flags: u32,
    pub task_mm: u32,
    pub task_start_boottime: u32,
    pub cred_uid: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub binprm_filename: u32,
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_protocol: u32,
    /// `task_struct.stack` (0 when this kernel's BTF lacks it: renames are
    /// then not told apart from exec's own in the kernel).
    pub task_stack: u32,
    /// `task_struct.nsproxy`, `nsproxy.net_ns` and `net.ns.inum` (all 0
    /// when one is missing: tasks are then listed without their network
    /// namespace, which is read from /proc instead).
    pub task_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    pub net_ns_inum: u32,
    /// The rest of a task's namespaces, its PID inside its own PID
    /// namespace and its cgroup: `ns_ready` is 0 when one is missing (then
    /// only the network namespace is read, and /proc gives the rest).
    pub ns_ready: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    pub nsproxy_uts_ns: u32,
    pub uts_ns_inum: u32,
    pub cred_user_ns: u32,
    pub user_ns_inum: u32,
    /// `task->thread_pid`, then `pid.level`, `pid.numbers`, the size of a
    /// `struct upid`, `upid.nr`, `upid.ns` and `pid_namespace.ns.inum`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    pub pid_ns_inum: u32,
    /// `task->cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `msghdr.msg_name`, for the UDP send hooks on kernel functions (0
    /// when missing: they are then not used).
    pub msghdr_name: u32,
    /// `task_struct.signal` and `signal_struct.live` (0 when missing: exits
    /// are then told by the leader's alone).
    pub task_signal: u32,
    pub signal_live: u32,
    /// `signal_struct.flags`, to tell a group exit (`exit_group`, a fatal
    /// signal: `SIGNAL_GROUP_EXIT`) from a leader leaving alone.
    pub signal_flags: u32,
}

/// `SIGNAL_GROUP_EXIT` from include/linux/sched/signal.h: a flag value, not
/// an offset.
pub const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;

/// Which kernel iterator produced a `SocketRecord`.
pub const SOCK_FROM_TASK_FILE: u16 = 1;
pub const SOCK_FROM_TCP: u16 = 2;
pub const SOCK_FROM_UDP: u16 = 3;

/// One IPv4, IPv6 or packet socket, as the socket iterators see it: from
/// `iter/task_file` with the process and descriptor that hold it, or from
/// `iter/tcp` / `iter/udp` (`tgid` 0) for every socket of one network
/// namespace, held or not (TIME_WAIT and orphans have `inode` 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketRecord {
    /// Owning process (0 from `iter/tcp` and `iter/udp`).
    pub tgid: u32,
    pub fd: u32,
    /// Socket inode (`socket:[N]`); 0 when no file holds it.
    pub inode: u64,
    /// `sk_net->ns.inum`: the network namespace's inode.
    pub netns: u32,
    /// `sk_uid` (from the iterator's context for `iter/tcp`, `iter/udp`).
    pub uid: u32,
    /// `AF_INET`, `AF_INET6` or `AF_PACKET`.
    pub family: u16,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`...; 0 when unknown.
    pub sock_type: u16,
    /// `sk_protocol` (`IPPROTO_*`; the ethertype, network order, for packet).
    pub protocol: u16,
    /// `skc_state` (TCP state numbers).
    pub state: u16,
    /// Host byte order (`skc_num`).
    pub lport: u16,
    /// Host byte order.
    pub rport: u16,
    /// Packet sockets: the bound ethertype, host byte order.
    pub packet_proto: u16,
    /// `SOCK_FROM_*`.
    pub source: u16,
    /// Packet sockets: the bound interface index (0: every interface).
    pub packet_ifindex: u32,
    /// 1 when `packet_proto` and `packet_ifindex` were read (the kernel's
    /// BTF has `packet_sock`).
    pub packet_known: u32,
    /// IPv4 addresses use the first 4 bytes, network order.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

/// Offsets the socket iterators need beyond `KernelOffsets`, resolved from
/// BTF separately: a kernel that lacks one of them loses the socket view
/// only, not every program. `ready` is 0 until user space filled them in;
/// `packet_ready` is 0 when the BTF has no `packet_sock`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SocketOffsets {
    pub ready: u32,
    pub packet_ready: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub socket_file: u32,
    pub sk_state: u32,
    pub sk_net: u32,
    pub net_ns_inum: u32,
    pub sk_uid: u32,
    pub sk_socket: u32,
    pub packet_ifindex: u32,
    pub packet_num: u32,
}

/// What a `BpfFileRecord` describes.
pub const BPF_FILE_PROG: u32 = 1;
pub const BPF_FILE_LINK: u32 = 2;
/// A perf event (tracepoint, kprobe, uprobe); `obj_id` is the attached program.
pub const BPF_FILE_PERF_EVENT: u32 = 3;
/// One of tracer's own open files, with the function pointers behind it.
pub const BPF_FILE_OWN: u32 = 4;

/// One open file of one process, from tracer's `iter/task_file` program:
/// a BPF program, link or perf event it holds, or (for tracer's own
/// process only) the function pointers behind one of its files.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BpfFileRecord {
    pub tgid: u32,
    pub fd: u32,
    /// `BPF_FILE_*`.
    pub kind: u32,
    /// Program id (prog, perf event) or link id; 0 when none.
    pub obj_id: u32,
    pub comm: [u8; COMM_LEN],
    /// For `BPF_FILE_OWN`: `file->f_op`, `f_op->iterate_shared`, and
    /// `((struct seq_file *)file->private_data)->op->show`.
    pub f_op: u64,
    pub iterate_shared: u64,
    pub seq_show: u64,
}

/// Structure offsets for the BPF-file iterator, from BTF, plus the tgid
/// whose files get their function pointers read.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BpfFileOffsets {
    pub ready: u32,
    pub own_tgid: u32,
    pub file_dentry: u32,
    pub dentry_name: u32,
    pub file_private_data: u32,
    pub file_f_op: u32,
    pub fops_iterate_shared: u32,
    pub seq_file_op: u32,
    pub seq_ops_show: u32,
    pub prog_aux: u32,
    pub prog_aux_id: u32,
    pub link_id: u32,
    pub perf_event_prog: u32,
    pub _pad: u32,
}

/// Bytes kept of a mount's target path, source and file system type.
pub const MOUNT_SOURCE_LEN: usize = 64;
pub const MOUNT_FSTYPE_LEN: usize = 32;

/// Which program produced a mount record: the capability check that
/// allows the call (`tp_btf/cap_capable`, the call's result unseen), or
/// the syscall tracepoints (sent once the call returned 0).
pub const MOUNT_HOOK_CAPABLE: u32 = 1;
pub const MOUNT_HOOK_SYSCALL: u32 = 2;

/// Which system call attached a mount.
pub const MOUNT_SYSCALL_MOUNT: u32 = 1;
pub const MOUNT_SYSCALL_MOVE_MOUNT: u32 = 2;

/// A `mount(2)` or `move_mount(2)` that succeeded: read at syscall entry
/// (the caller's arguments), sent at exit once the return value is 0.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MountEvent {
    pub kind: u32,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub ktime_ns: u64,
    /// `task_struct.start_boottime` of the thread-group leader, in ns.
    pub start_boottime_ns: u64,
    /// Inode number of the caller's mount namespace (`mnt:[N]`).
    pub mnt_ns: u32,
    /// `MOUNT_SYSCALL_*`.
    pub syscall: u32,
    /// The directory file descriptor the target is relative to
    /// (`move_mount`'s `to_dfd`; `AT_FDCWD` for `mount`).
    pub target_dfd: i32,
    /// Valid bytes in `target`, `source`, `fstype` (without the NUL).
    pub target_len: u32,
    pub source_len: u32,
    pub fstype_len: u32,
    /// `MOUNT_HOOK_*`: which program saw it.
    pub hook: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
    pub target: [u8; PATH_LEN],
    /// `mount`'s source, or `move_mount`'s `from_pathname`.
    pub source: [u8; MOUNT_SOURCE_LEN],
    /// `mount`'s file system type.
    pub fstype: [u8; MOUNT_FSTYPE_LEN],
}

/// Indexes in the `MOUNT_FIELDS` map: where the syscall tracepoints keep
/// each argument (from their tracefs `format` files) and the kernel
/// structure offsets to the caller's mount namespace (from BTF). Index
/// `MOUNT_FIELD_READY` is 1 once user space filled them in.
pub const MOUNT_FIELD_READY: u32 = 0;
pub const MOUNT_FIELD_SOURCE: u32 = 1;
pub const MOUNT_FIELD_TARGET: u32 = 2;
pub const MOUNT_FIELD_FSTYPE: u32 = 3;
pub const MOUNT_FIELD_FROM_PATH: u32 = 4;
pub const MOUNT_FIELD_TO_DFD: u32 = 5;
pub const MOUNT_FIELD_TO_PATH: u32 = 6;
pub const MOUNT_FIELD_RET: u32 = 7;
pub const MOUNT_FIELD_TASK_NSPROXY: u32 = 8;
pub const MOUNT_FIELD_NSPROXY_MNT_NS: u32 = 9;
pub const MOUNT_FIELD_MNT_NS_INUM: u32 = 10;
/// `pt_regs` fields (x86-64: the syscall number, then arguments 1 to 4)
/// and the numbers of `mount` and `move_mount` on this architecture.
pub const MOUNT_FIELD_REGS_NR: u32 = 11;
pub const MOUNT_FIELD_REGS_ARG1: u32 = 12;
pub const MOUNT_FIELD_REGS_ARG2: u32 = 13;
pub const MOUNT_FIELD_REGS_ARG3: u32 = 14;
pub const MOUNT_FIELD_REGS_ARG4: u32 = 15;
pub const MOUNT_FIELD_NR_MOUNT: u32 = 16;
pub const MOUNT_FIELD_NR_MOVE_MOUNT: u32 = 17;
pub const MOUNT_FIELDS: u32 = 18;

/// kill-tree's fork capture: most members its set holds.
pub const CAPTURE_MAX: u32 = 65536;
/// `CAPTURE_MODE` values: what a member's next system call gets.
pub const CAPTURE_STOP: u32 = 1;
pub const CAPTURE_KILL: u32 = 2;

/// Bytes of kernel memory per [`KmemChunk`].
pub const KMEM_CHUNK: usize = 256;
/// Chunks one run of the kernel-memory iterator reads at most: its records
/// must fit the iterator's seq_file buffer (8 pages) in one call.
pub const KMEM_MAX_CHUNKS: u64 = 64;

/// What user space asks the kernel-memory iterator to read: `chunks`
/// chunks of [`KMEM_CHUNK`] bytes from `addr`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct KmemRequest {
    pub addr: u64,
    pub chunks: u64,
}

/// One chunk of kernel memory as `bpf_probe_read_kernel` returned it:
/// `status` is its return value (0, or a negative errno and zeroed data).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KmemChunk {
    pub status: i64,
    pub data: [u8; KMEM_CHUNK],
}

const _: () = {
    assert!(core::mem::size_of::<KmemChunk>() == 8 + KMEM_CHUNK);
    assert!(core::mem::size_of::<KmemRequest>() == 16);
    assert!(
        core::mem::size_of::<MountEvent>()
            == 64 + COMM_LEN + PATH_LEN + MOUNT_SOURCE_LEN + MOUNT_FSTYPE_LEN
    );
    assert!(core::mem::size_of::<NsIds>() == 32);
    assert!(core::mem::size_of::<ExecEvent>() == 40 + COMM_LEN + 16 + 32 + PATH_LEN + ARGV_LEN);
    assert!(core::mem::size_of::<ForkEvent>() == 32 + COMM_LEN);
    assert!(core::mem::size_of::<ExitEvent>() == 32 + COMM_LEN);
    assert!(core::mem::size_of::<RenameEvent>() == 32 + 2 * COMM_LEN);
    assert!(core::mem::size_of::<ConnectEvent>() == 72 + COMM_LEN);
    assert!(core::mem::size_of::<TaskRecord>() == 32 + COMM_LEN + 32);
    assert!(core::mem::size_of::<DatagramEvent>() == 24 + 16 + 16 + COMM_LEN);
    assert!(core::mem::size_of::<DatagramKey>() == 24);
    assert!(core::mem::size_of::<DatagramSeen>() == 16);
    assert!(core::mem::size_of::<KernelOffsets>() == 48 * 4);
    assert!(core::mem::size_of::<SocketRecord>() == 48 + 32);
    assert!(core::mem::size_of::<SocketOffsets>() == 16 * 4);
    assert!(core::mem::size_of::<BpfFileRecord>() == 16 + COMM_LEN + 24);
    assert!(core::mem::size_of::<BpfFileOffsets>() == 14 * 4);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding holes
    // that carry meaning, valid for any bit pattern.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::SocketOffsets {}
    unsafe impl aya::Pod for super::BpfFileOffsets {}
    unsafe impl aya::Pod for super::KmemRequest {}
    unsafe impl aya::Pod for super::DatagramKey {}
    unsafe impl aya::Pod for super::DatagramSeen {}
}

/// The bytes of a fixed-size, NUL-padded kernel string up to the first NUL.
pub fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}
