//! `task_rename`: a task takes a new name after exec.
//!
//! The tracepoint fires for exec's own rename too (to the program's file
//! name), once per exec: those are left out here, so an exec storm costs
//! no extra records. exec passes the name from the kernel's heap (the
//! filename it copied in); `prctl(PR_SET_NAME)` and writes to
//! `/proc/PID/comm` pass a buffer on the calling task's kernel stack. A
//! name that does not sit on the current stack is exec's.
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tracer_common::{EventKind, RenameEvent, PF_KTHREAD};

use crate::{maps, task};

/// Largest kernel stack (THREAD_SIZE is 16 KiB on x86-64, 32 KiB with
/// KASAN); the window only has to hold the current stack, since exec's
/// names never lie in the stack area.
const STACK_WINDOW: u64 = 64 * 1024;

#[btf_tracepoint(function = "task_rename")]
pub fn rename_tp_btf(ctx: BtfTracePointContext) -> i32 {
    unsafe { on_rename(ctx.arg(0), ctx.arg(1)) }
}

#[raw_tracepoint(tracepoint = "task_rename")]
pub fn rename_raw_tp(ctx: RawTracePointContext) -> i32 {
    unsafe { on_rename(ctx.arg(0), ctx.arg(1)) }
}

#[inline(always)]
unsafe fn on_rename(task: *const u8, comm: *const u8) -> i32 {
    let off = maps::offsets();
    if off.ready == 0 || task.is_null() || comm.is_null() {
        return 0;
    }
    if task::read_at::<u32>(task, off.task_flags) & PF_KTHREAD != 0 {
        return 0;
    }
    if off.task_stack != 0 {
        let current = bpf_get_current_task() as *const u8;
        let stack = task::read_at::<u64>(current, off.task_stack);
        let at = comm as u64;
        if stack != 0 && !(at >= stack && at < stack + STACK_WINDOW) {
            return 0; // exec's own rename
        }
    }
    let Some(mut entry) = maps::EVENTS.reserve::<RenameEvent>(0) else {
        maps::count_lost(EventKind::Rename as u32);
        return 0;
    };
    let ev = &mut *entry.as_mut_ptr();
    ev.kind = EventKind::Rename as u32;
    ev.tgid = task::tgid(&off, task);
    ev.pid = task::pid(&off, task);
    ev._pad = 0;
    ev.start_boottime_ns = task::leader_start_boottime(&off, task);
    ev.ktime_ns = bpf_ktime_get_boot_ns();
    ev.old_comm = [0; 16];
    task::comm(&off, task, &mut ev.old_comm);
    ev.new_comm = [0; 16];
    let _ = bpf_probe_read_kernel_str_bytes(comm, &mut ev.new_comm);
    // Renames are rare and may be an attacker's: wake the reader at once.
    entry.submit(0);
    0
}
