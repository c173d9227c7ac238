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
    _pad: 0,
};

/// The offsets, read through a volatile load so the compiler cannot fold the
/// zero initialiser into the code before user space patches it.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Counts a record that did not fit in the ring buffer.
#[inline(always)]
pub fn count_lost(kind: u32) {
    if let Some(slot) = LOST.get_ptr_mut(kind) {
        unsafe { *slot += 1 };
    }
}
