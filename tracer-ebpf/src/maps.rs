//! Maps and globals shared by every program.
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tracer_common::{KernelOffsets, LOST_SLOTS};

/// Every event goes through this one ring buffer, in order.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Records the ring buffer could not take, per event kind (index = kind).
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// Structure offsets, filled in by user space from the kernel's BTF.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    ready: 0,
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_group_leader: 0,
    task_real_cred: 0,
    task_comm: 0,
    task_flags: 0,
    task_mm: 0,
    task_start_boottime: 0,
    cred_uid: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    binprm_filename: 0,
    sk_family: 0,
    sk_daddr: 0,
    sk_rcv_saddr: 0,
    sk_dport: 0,
    sk_num: 0,
    sk_v6_daddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_protocol: 0,
    task_stack: 0,
    task_nsproxy: 0,
    nsproxy_net_ns: 0,
    net_ns_inum: 0,
    ns_ready: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    nsproxy_uts_ns: 0,
    uts_ns_inum: 0,
    cred_user_ns: 0,
    user_ns_inum: 0,
    task_thread_pid: 0,
    pid_level: 0,
    pid_numbers: 0,
    upid_size: 0,
    upid_nr: 0,
    upid_ns: 0,
    pid_ns_inum: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    msghdr_name: 0,
    task_signal: 0,
    signal_live: 0,
    signal_flags: 0,
};

/// The offsets, read through a volatile load so the compiler cannot fold the
/// zero initialiser into the code before user space patches it.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Queued bytes past which a batched record wakes the reader at once.
const WAKEUP_BACKLOG: u64 = 1024 * 1024;

/// Submit flags for high-rate records (exec, fork, exit): no wakeup per
/// record; user space drains on a short timer, and is woken early only when
/// a backlog builds. Saves a context switch per event under exec storms.
#[inline(always)]
pub fn batched_submit_flags() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > WAKEUP_BACKLOG {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Counts a record that did not fit in the ring buffer.
#[inline(always)]
pub fn count_lost(kind: u32) {
    if let Some(slot) = LOST.get_ptr_mut(kind) {
        unsafe { *slot += 1 };
    }
}
