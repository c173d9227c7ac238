//! Reading `task_struct` fields through the BTF-resolved offsets table.
use aya_ebpf::helpers::bpf_probe_read_kernel_buf;
use tracer_common::{KernelOffsets, NsIds, COMM_LEN};

/// Reads a `T` at `base + offset` from kernel memory; zero on failure.
///
/// The null check makes a pointer the verifier holds as "maybe null" (a
/// context field) usable; the read's own result is not branched on (the
/// helper zeroes its destination when the read faults): a branch per read
/// doubles the paths the verifier walks, and twenty chained reads (a
/// task's namespaces) outgrew Linux 5.10's one-million-instruction budget.
#[inline(always)]
pub unsafe fn read_at<T: Copy + Default>(base: *const u8, offset: u32) -> T {
    if base.is_null() {
        return T::default();
    }
    read_raw(base, offset)
}

/// [`read_at`] without the null check, for an address read from kernel
/// memory (a plain number to the verifier): a null one faults, and the
/// helper returns zero.
#[inline(always)]
pub unsafe fn read_raw<T: Copy + Default>(base: *const u8, offset: u32) -> T {
    let mut value = T::default();
    aya_ebpf::helpers::generated::bpf_probe_read_kernel(
        &mut value as *mut T as *mut core::ffi::c_void,
        core::mem::size_of::<T>() as u32,
        base.wrapping_add(offset as usize) as *const core::ffi::c_void,
    );
    value
}

/// A pointer read with [`read_raw`].
#[inline(always)]
unsafe fn raw_ptr(base: *const u8, offset: u32) -> *const u8 {
    read_raw::<u64>(base, offset) as *const u8
}

#[inline(always)]
pub unsafe fn read_ptr(base: *const u8, offset: u32) -> *const u8 {
    read_at::<u64>(base, offset) as *const u8
}

#[inline(always)]
pub unsafe fn tgid(off: &KernelOffsets, task: *const u8) -> u32 {
    read_at::<u32>(task, off.task_tgid)
}

#[inline(always)]
pub unsafe fn pid(off: &KernelOffsets, task: *const u8) -> u32 {
    read_at::<u32>(task, off.task_pid)
}

/// tgid of `real_parent`: the process that `getppid()` reports.
#[inline(always)]
pub unsafe fn parent_tgid(off: &KernelOffsets, task: *const u8) -> u32 {
    tgid(off, read_ptr(task, off.task_real_parent))
}

/// `real_cred->uid`.
#[inline(always)]
pub unsafe fn uid(off: &KernelOffsets, task: *const u8) -> u32 {
    read_at::<u32>(read_ptr(task, off.task_real_cred), off.cred_uid)
}

/// `start_boottime` of the thread-group leader, which is what
/// `/proc/PID/stat` reports as the process start time.
#[inline(always)]
pub unsafe fn leader_start_boottime(off: &KernelOffsets, task: *const u8) -> u64 {
    let leader = read_ptr(task, off.task_group_leader);
    let leader = if leader.is_null() { task } else { leader };
    read_at::<u64>(leader, off.task_start_boottime)
}

/// `nsproxy->net_ns->ns.inum`; 0 when unknown (an exiting task has no
/// nsproxy).
#[inline(always)]
pub unsafe fn netns(off: &KernelOffsets, task: *const u8) -> u32 {
    if off.task_nsproxy == 0 {
        return 0;
    }
    let nsproxy = read_ptr(task, off.task_nsproxy);
    read_at::<u32>(read_ptr(nsproxy, off.nsproxy_net_ns), off.net_ns_inum)
}

#[inline(always)]
pub unsafe fn comm(off: &KernelOffsets, task: *const u8, out: &mut [u8; COMM_LEN]) {
    let _ = bpf_probe_read_kernel_buf(task.add(off.task_comm as usize), out);
}

/// Deepest PID namespace nesting the kernel allows (`MAX_PID_NS_LEVEL`).
const MAX_PID_NS_LEVEL: u32 = 32;

/// Where the task lives: its namespaces, its PID in its own PID namespace
/// and its cgroup v2 directory (see `NsIds`). Only the network namespace
/// when this kernel's BTF lacked a field of the rest.
#[inline(always)]
pub unsafe fn ns_ids(off: &KernelOffsets, task: *const u8) -> NsIds {
    let leader = read_ptr(task, off.task_group_leader);
    let leader = if leader.is_null() { task } else { leader };
    let cred = read_ptr(task, off.task_real_cred);
    let mut ids = ns_ids_but_cgroup(off, task, leader, cred);
    if off.ns_ready != 0 {
        let cgroup = raw_ptr(read_ptr(task, off.task_cgroups), off.css_set_dfl_cgrp);
        ids.cgroup_id = read_raw(raw_ptr(cgroup, off.cgroup_kn), off.kernfs_node_id);
    }
    ids
}

/// What exec reports of the task calling it: its uid, its start time and
/// [`ns_ids`]. At `sched_process_exec` the task is its process's leader
/// (a thread that execs takes the leader's place, start time included),
/// so no leader is looked up; the credentials are read once for the uid
/// and the user namespace, and the cgroup id comes from the helper (one
/// call instead of four reads).
#[inline(always)]
pub unsafe fn exec_identity(off: &KernelOffsets, task: *const u8) -> (u32, u64, NsIds) {
    let cred = read_ptr(task, off.task_real_cred);
    let uid = read_raw::<u32>(cred, off.cred_uid);
    let start = read_at::<u64>(task, off.task_start_boottime);
    let mut ids = ns_ids_but_cgroup(off, task, task, cred);
    ids.cgroup_id = aya_ebpf::helpers::generated::bpf_get_current_cgroup_id();
    (uid, start, ids)
}

#[inline(always)]
unsafe fn ns_ids_but_cgroup(
    off: &KernelOffsets,
    task: *const u8,
    leader: *const u8,
    cred: *const u8,
) -> NsIds {
    if off.ns_ready == 0 {
        return NsIds {
            net_ns: netns(off, task),
            ..NsIds::default()
        };
    }
    let mut ids = NsIds::default();
    let nsproxy = read_ptr(task, off.task_nsproxy);
    ids.net_ns = read_raw(raw_ptr(nsproxy, off.nsproxy_net_ns), off.net_ns_inum);
    ids.mnt_ns = read_raw(raw_ptr(nsproxy, off.nsproxy_mnt_ns), off.mnt_ns_inum);
    ids.uts_ns = read_raw(raw_ptr(nsproxy, off.nsproxy_uts_ns), off.uts_ns_inum);
    ids.user_ns = read_raw(raw_ptr(cred, off.cred_user_ns), off.user_ns_inum);
    // The leader's `struct pid`: its last `numbers[level]` is the PID in
    // the namespace the process itself sees (task_active_pid_ns).
    let pid = raw_ptr(leader, off.task_thread_pid);
    if !pid.is_null() {
        let level: u32 = read_raw(pid, off.pid_level);
        if level < MAX_PID_NS_LEVEL {
            let upid = pid.add((off.pid_numbers + level * off.upid_size) as usize);
            ids.ns_pid = read_raw(upid, off.upid_nr);
            ids.pid_ns = read_raw(raw_ptr(upid, off.upid_ns), off.pid_ns_inum);
        }
    }
    ids
}
