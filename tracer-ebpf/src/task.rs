//! Reading `task_struct` fields through the BTF-resolved offsets table.
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use tracer_common::{KernelOffsets, COMM_LEN};

/// Reads a `T` at `base + offset` from kernel memory; zero on failure.
#[inline(always)]
pub unsafe fn read_at<T: Copy + Default>(base: *const u8, offset: u32) -> T {
    if base.is_null() {
        return T::default();
    }
    bpf_probe_read_kernel(base.add(offset as usize) as *const T).unwrap_or_default()
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
