//! `sched_process_exec`: one record per successful execve.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user_buf,
    },
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tracer_common::{EventKind, ExecEvent, ARGV_LEN};

use crate::{maps, task};

// tp_btf is preferred; the raw tracepoint carries the same arguments
// (task, old_pid, bprm) for kernels that refuse tp_btf.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_tp_btf(ctx: BtfTracePointContext) -> i32 {
    unsafe { on_exec(ctx.arg(0), ctx.arg(1), ctx.arg(2)) }
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn exec_raw_tp(ctx: RawTracePointContext) -> i32 {
    unsafe { on_exec(ctx.arg(0), ctx.arg(1), ctx.arg(2)) }
}

#[inline(always)]
unsafe fn on_exec(task: *const u8, old_pid: u32, bprm: *const u8) -> i32 {
    let off = maps::offsets();
    if off.ready == 0 {
        return 0;
    }
    let Some(mut entry) = maps::EVENTS.reserve::<ExecEvent>(0) else {
        maps::count_lost(EventKind::Exec as u32);
        return 0;
    };
    let ev = &mut *entry.as_mut_ptr();
    ev.kind = EventKind::Exec as u32;
    ev.tgid = task::tgid(&off, task);
    ev.pid = task::pid(&off, task);
    ev.old_pid = old_pid;
    ev.ppid = task::parent_tgid(&off, task);
    // exec runs in the task's own context: it is the current task.
    (ev.uid, ev.start_boottime_ns, ev.ns) = task::exec_identity(&off, task);
    ev.ktime_ns = bpf_ktime_get_boot_ns();
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    ev._pad = 0;

    let filename = task::read_ptr(bprm, off.binprm_filename);
    ev.filename_len = match bpf_probe_read_kernel_str_bytes(filename, &mut ev.filename) {
        Ok(s) => s.len() as u32,
        Err(_) => 0,
    };

    // The arguments sit in the new program's stack, between arg_start and
    // arg_end of its mm; exec runs in that task's context, so they are readable.
    let mm = task::read_ptr(task, off.task_mm);
    let arg_start: u64 = task::read_at(mm, off.mm_arg_start);
    let arg_end: u64 = task::read_at(mm, off.mm_arg_end);
    let total = arg_end.saturating_sub(arg_start);
    ev.argv_total_len = total as u32;
    let mut len = total as usize;
    if len > ARGV_LEN {
        len = ARGV_LEN;
    }
    ev.argv_len = 0;
    if len > 0 && bpf_probe_read_user_buf(arg_start as *const u8, &mut ev.argv[..len]).is_ok() {
        ev.argv_len = len as u32;
    }
    entry.submit(maps::batched_submit_flags());
    0
}
