//! kill-tree's in-kernel fork capture, loaded only by `kill-tree --kill`:
//! a set of thread-group ids (the tree being killed) that grows by every
//! fork one of its members makes, in the kernel, so no child is born
//! outside it however fast the tree forks or however its children are
//! reparented; and, once user space asks, every member that enters a
//! system call (a fork, an exec, a write...) is stopped or killed on the
//! spot by a signal to itself.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tracer_common::{CAPTURE_KILL, CAPTURE_MAX, CAPTURE_STOP};

use crate::task;

/// Member tgid -> its start time (CLOCK_BOOTTIME ns; 0 for the members
/// user space put in), so user space can tell a member from a recycled PID.
#[map]
static CAPTURE_SET: HashMap<u32, u64> = HashMap::with_max_entries(CAPTURE_MAX, 0);

/// What a member's next system call gets: `CAPTURE_STOP`, `CAPTURE_KILL`,
/// or nothing (0: members are only recorded).
#[map]
static CAPTURE_MODE: Array<u32> = Array::with_max_entries(1, 0);

/// How far up from a forking task the hook looks for a member.
const ANCESTORS: usize = 8;

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;

#[btf_tracepoint(function = "sched_process_fork")]
pub fn capture_fork(ctx: BtfTracePointContext) -> i32 {
    unsafe {
        let Some((parent, child, off)) = crate::lifecycle::fork_tasks(&ctx) else {
            return 0;
        };
        let parent_tgid = task::tgid(&off, parent);
        // The parent, or an ancestor: a member's child that user space had
        // not put in the set yet forks too, and its child is the tree's.
        let mut member = false;
        let mut cur = parent;
        for _ in 0..ANCESTORS {
            if cur.is_null() {
                break;
            }
            let tgid = task::tgid(&off, cur);
            if tgid <= 1 {
                break;
            }
            if CAPTURE_SET.get(&tgid).is_some() {
                member = true;
                break;
            }
            cur = task::read_ptr(cur, off.task_real_parent);
        }
        if !member {
            return 0;
        }
        if CAPTURE_SET.get(&parent_tgid).is_none() {
            let parent_start: u64 = task::leader_start_boottime(&off, parent);
            let _ = CAPTURE_SET.insert(&parent_tgid, &parent_start, 0);
        }
        let child_tgid = task::tgid(&off, child);
        if child_tgid == parent_tgid {
            return 0; // a new thread of a member: already covered
        }
        let start: u64 = task::read_at(child, off.task_start_boottime);
        // A full set is noticed by user space (it compares counts).
        let _ = CAPTURE_SET.insert(&child_tgid, &start, 0);
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn capture_syscall(_ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    unsafe {
        if CAPTURE_SET.get(&tgid).is_none() {
            return 0;
        }
    }
    let signal = match CAPTURE_MODE.get(0) {
        Some(&CAPTURE_STOP) => SIGSTOP,
        Some(&CAPTURE_KILL) => SIGKILL,
        _ => return 0,
    };
    unsafe {
        bpf_send_signal(signal);
    }
    0
}
