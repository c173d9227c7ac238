//! Fork and exit, so user space keeps its process table current without
//! rescanning /proc.
use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use tracer_common::{EventKind, ExitEvent, ForkEvent, SIGNAL_GROUP_EXIT};

use crate::{maps, task};

/// `sched_process_fork`'s parent and child tasks, and the offsets to read
/// them with; `None` until user space has filled the offsets in.
#[inline(always)]
pub unsafe fn fork_tasks(
    ctx: &BtfTracePointContext,
) -> Option<(*const u8, *const u8, tracer_common::KernelOffsets)> {
    let off = maps::offsets();
    if off.ready == 0 {
        return None;
    }
    Some((ctx.arg(0), ctx.arg(1), off))
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn fork_tp_btf(ctx: BtfTracePointContext) -> i32 {
    unsafe {
        let Some((parent, child, off)) = fork_tasks(&ctx) else {
            return 0;
        };
        let child_tgid = task::tgid(&off, child);
        // New threads share the parent's tgid: they are not new processes.
        if child_tgid != task::pid(&off, child) {
            return 0;
        }
        let Some(mut entry) = maps::EVENTS.reserve::<ForkEvent>(0) else {
            maps::count_lost(EventKind::Fork as u32);
            return 0;
        };
        let ev = &mut *entry.as_mut_ptr();
        ev.kind = EventKind::Fork as u32;
        ev.parent_tgid = task::tgid(&off, parent);
        ev.child_tgid = child_tgid;
        ev.uid = task::uid(&off, child);
        ev.child_start_boottime_ns = task::read_at(child, off.task_start_boottime);
        ev.ktime_ns = bpf_ktime_get_boot_ns();
        task::comm(&off, child, &mut ev.comm);
        entry.submit(maps::batched_submit_flags());
    }
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_tp_btf(ctx: BtfTracePointContext) -> i32 {
    unsafe {
        let task: *const u8 = ctx.arg(0);
        let off = maps::offsets();
        if off.ready == 0 {
            return 0;
        }
        let tgid = task::tgid(&off, task);
        let is_leader = tgid == task::pid(&off, task);
        // `signal->live` counts the group's threads not yet in do_exit;
        // this thread took itself off before the tracepoint.
        let live_threads = if off.task_signal != 0 {
            let signal = task::read_ptr(task, off.task_signal);
            let live: i32 = task::read_at(signal, off.signal_live);
            // The whole group is going (exit_group, a fatal signal): only
            // its last thread ends it, whichever that is. (The flags are
            // read only while threads remain: most exits are the last.)
            if live > 0 && task::read_at::<u32>(signal, off.signal_flags) & SIGNAL_GROUP_EXIT != 0 {
                return 0;
            }
            live.max(0) as u32
        } else if is_leader {
            0
        } else {
            return 0;
        };
        // The process ends with its last thread; a leader that ends first
        // leaves it running (a zombie leader), which is told too.
        if live_threads > 0 && !is_leader {
            return 0;
        }
        let Some(mut entry) = maps::EVENTS.reserve::<ExitEvent>(0) else {
            maps::count_lost(EventKind::Exit as u32);
            return 0;
        };
        let ev = &mut *entry.as_mut_ptr();
        ev.kind = EventKind::Exit as u32;
        ev.tgid = tgid;
        ev.start_boottime_ns = task::leader_start_boottime(&off, task);
        ev.ktime_ns = bpf_ktime_get_boot_ns();
        task::comm(&off, task, &mut ev.comm);
        ev.live_threads = live_threads;
        ev._pad = 0;
        entry.submit(maps::batched_submit_flags());
    }
    0
}
