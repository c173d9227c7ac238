//! `iter/task`: every task the kernel has, written to the iterator's
//! seq_file as fixed `TaskRecord`s. This view does not pass through /proc,
//! so a process hidden from /proc still shows here.
use aya_ebpf::helpers::generated::bpf_seq_write;
use tracer_common::TaskRecord;

use crate::{maps, task};

/// `struct bpf_iter_meta`: only the seq_file pointer is used.
#[repr(C)]
pub struct IterMeta {
    pub seq: *mut aya_ebpf::bindings::seq_file,
    session_id: u64,
    /// How many objects this iteration visited before this one.
    pub seq_num: u64,
}

/// The iteration's seq_file. Each check of a load through `meta` costs the
/// verifier a search of the kernel's whole BTF (for a
/// `bpf_iter_meta__safe_trusted` type that does not exist), once for every
/// path that reaches the load: read it first thing, before any branch, and
/// the search is made once a program.
#[inline(always)]
pub unsafe fn seq_of(meta: *const IterMeta) -> *mut aya_ebpf::bindings::seq_file {
    core::ptr::read_volatile(core::ptr::addr_of!((*meta).seq))
}

/// `struct bpf_iter__task`.
#[repr(C)]
pub struct IterTaskCtx {
    pub meta: *const IterMeta,
    pub task: *const u8,
}

/// `struct bpf_iter__task_file`.
#[repr(C)]
pub struct IterTaskFileCtx {
    pub meta: *const IterMeta,
    pub task: *const u8,
    pub fd: u32,
    pub file: *const u8,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn task_iter(ctx: *const IterTaskCtx) -> i32 {
    unsafe {
        let ctx = &*ctx;
        let seq = seq_of(ctx.meta);
        let task = ctx.task;
        // The final call of an iteration has no task.
        if task.is_null() {
            return 0;
        }
        let off = maps::offsets();
        let mut rec = TaskRecord {
            tgid: task::tgid(&off, task),
            pid: task::pid(&off, task),
            ppid: task::parent_tgid(&off, task),
            uid: task::uid(&off, task),
            flags: task::read_at(task, off.task_flags),
            has_mm: (task::read_at::<u64>(task, off.task_mm) != 0) as u32,
            start_boottime_ns: task::leader_start_boottime(&off, task),
            comm: [0; 16],
            ns: task::ns_ids(&off, task),
        };
        task::comm(&off, task, &mut rec.comm);
        bpf_seq_write(
            seq,
            &rec as *const TaskRecord as *const _,
            core::mem::size_of::<TaskRecord>() as u32,
        );
    }
    0
}
