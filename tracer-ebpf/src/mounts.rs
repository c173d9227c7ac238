//! Mounts as they are made: `mount(2)` and `move_mount(2)` (which
//! `open_tree`/`fsmount` mounts go through), with the caller's arguments
//! (target path, source, type) and mount namespace.
//!
//! Preferred: `tp_btf/cap_capable`. Both calls start by asking for
//! CAP_SYS_ADMIN (`may_mount`); when that check passes in a task whose
//! current system call is one of them, its arguments are read from the
//! task's saved registers and the record is sent. The call's own result is
//! not seen, but no other system call pays anything. Fallback: the
//! `syscalls` tracepoints (entry keeps the arguments per thread, exit sends
//! them once the call returned 0), which put every system call of the host
//! on the kernel's slower traced path.
//!
//! Where each argument sits (tracepoint records, `pt_regs`) and the path to
//! the mount namespace come from user space (`MOUNT_FIELD_OFFSETS`), read
//! from the tracepoints' `format` files and from BTF.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
        bpf_probe_read_user_str_bytes, generated::bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    EventKind, MountEvent, MOUNT_FIELDS, MOUNT_FIELD_FROM_PATH, MOUNT_FIELD_FSTYPE,
    MOUNT_FIELD_MNT_NS_INUM, MOUNT_FIELD_NR_MOUNT, MOUNT_FIELD_NR_MOVE_MOUNT,
    MOUNT_FIELD_NSPROXY_MNT_NS, MOUNT_FIELD_READY, MOUNT_FIELD_REGS_ARG1, MOUNT_FIELD_REGS_ARG2,
    MOUNT_FIELD_REGS_ARG3, MOUNT_FIELD_REGS_ARG4, MOUNT_FIELD_REGS_NR, MOUNT_FIELD_RET,
    MOUNT_FIELD_SOURCE, MOUNT_FIELD_TARGET, MOUNT_FIELD_TASK_NSPROXY, MOUNT_FIELD_TO_DFD,
    MOUNT_FIELD_TO_PATH, MOUNT_HOOK_CAPABLE, MOUNT_HOOK_SYSCALL, MOUNT_SYSCALL_MOUNT,
    MOUNT_SYSCALL_MOVE_MOUNT,
};

use crate::{maps, task};

/// Argument positions and structure offsets, filled in by user space.
#[map]
static MOUNT_FIELD_OFFSETS: Array<u32> = Array::with_max_entries(MOUNT_FIELDS, 0);

/// Mount calls entered and not yet returned, by thread id (fallback).
#[map]
static PENDING_MOUNTS: LruHashMap<u32, MountEvent> = LruHashMap::with_max_entries(1024, 0);

/// Where a record is built (too large for the stack).
#[map]
static MOUNT_SCRATCH: PerCpuArray<MountEvent> = PerCpuArray::with_max_entries(1, 0);

const AT_FDCWD: i32 = -100;
const CAP_SYS_ADMIN: i32 = 21;

#[inline(always)]
fn field(index: u32) -> usize {
    MOUNT_FIELD_OFFSETS.get(index).copied().unwrap_or(0) as usize
}

/// The call's arguments as the record needs them: target, source, type
/// (user pointers) and the target's directory descriptor.
struct Args {
    target: u64,
    source: u64,
    fstype: u64,
    target_dfd: i32,
}

#[btf_tracepoint(function = "cap_capable")]
pub fn mount_capable(ctx: BtfTracePointContext) -> i32 {
    unsafe { on_capable(&ctx) }
}

#[inline(always)]
unsafe fn on_capable(ctx: &BtfTracePointContext) -> i32 {
    // (cred, target_ns, capable_ns, cap, ret)
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    if cap != CAP_SYS_ADMIN || ret != 0 || field(MOUNT_FIELD_READY) == 0 {
        return 0;
    }
    let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
    let nr = task::read_at::<u64>(regs, field(MOUNT_FIELD_REGS_NR) as u32);
    let reg = |index: u32| task::read_at::<u64>(regs, field(index) as u32);
    let (syscall, args) = if nr == field(MOUNT_FIELD_NR_MOUNT) as u64 {
        // mount(source, target, type, flags, data)
        let args = Args {
            source: reg(MOUNT_FIELD_REGS_ARG1),
            target: reg(MOUNT_FIELD_REGS_ARG2),
            fstype: reg(MOUNT_FIELD_REGS_ARG3),
            target_dfd: AT_FDCWD,
        };
        (MOUNT_SYSCALL_MOUNT, args)
    } else if nr == field(MOUNT_FIELD_NR_MOVE_MOUNT) as u64 {
        // move_mount(from_dfd, from_path, to_dfd, to_path, flags)
        let args = Args {
            source: reg(MOUNT_FIELD_REGS_ARG2),
            target: reg(MOUNT_FIELD_REGS_ARG4),
            fstype: 0,
            target_dfd: reg(MOUNT_FIELD_REGS_ARG3) as i32,
        };
        (MOUNT_SYSCALL_MOVE_MOUNT, args)
    } else {
        return 0;
    };
    let Some(ev) = fill(syscall, &args, MOUNT_HOOK_CAPABLE) else {
        return 0;
    };
    if maps::EVENTS.output::<MountEvent>(&*ev, 0).is_err() {
        maps::count_lost(EventKind::Mount as u32);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mount")]
pub fn mount_enter(ctx: TracePointContext) -> i32 {
    unsafe { on_enter(&ctx, MOUNT_SYSCALL_MOUNT) }
}

#[tracepoint(category = "syscalls", name = "sys_enter_move_mount")]
pub fn move_mount_enter(ctx: TracePointContext) -> i32 {
    unsafe { on_enter(&ctx, MOUNT_SYSCALL_MOVE_MOUNT) }
}

/// Attached to both `sys_exit_mount` and `sys_exit_move_mount`.
#[tracepoint(category = "syscalls", name = "sys_exit_mount")]
pub fn mount_exit(ctx: TracePointContext) -> i32 {
    unsafe { on_exit(&ctx) }
}

#[inline(always)]
unsafe fn on_enter(ctx: &TracePointContext, syscall: u32) -> i32 {
    if field(MOUNT_FIELD_READY) == 0 {
        return 0;
    }
    let arg = |index: u32| ctx.read_at::<u64>(field(index)).unwrap_or(0);
    let args = if syscall == MOUNT_SYSCALL_MOUNT {
        Args {
            target: arg(MOUNT_FIELD_TARGET),
            source: arg(MOUNT_FIELD_SOURCE),
            fstype: arg(MOUNT_FIELD_FSTYPE),
            target_dfd: AT_FDCWD,
        }
    } else {
        Args {
            target: arg(MOUNT_FIELD_TO_PATH),
            source: arg(MOUNT_FIELD_FROM_PATH),
            fstype: 0,
            target_dfd: arg(MOUNT_FIELD_TO_DFD) as i32,
        }
    };
    if let Some(ev) = fill(syscall, &args, MOUNT_HOOK_SYSCALL) {
        let _ = PENDING_MOUNTS.insert((*ev).pid, &*ev, 0);
    }
    0
}

#[inline(always)]
unsafe fn on_exit(ctx: &TracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(ev) = PENDING_MOUNTS.get_ptr(tid) else {
        return 0;
    };
    let ret = ctx.read_at::<i64>(field(MOUNT_FIELD_RET)).unwrap_or(-1);
    if ret == 0 && maps::EVENTS.output::<MountEvent>(&*ev, 0).is_err() {
        maps::count_lost(EventKind::Mount as u32);
    }
    let _ = PENDING_MOUNTS.remove(tid);
    0
}

/// The record for the current task, built in the per-CPU scratch slot.
#[inline(always)]
unsafe fn fill(syscall: u32, args: &Args, hook: u32) -> Option<*mut MountEvent> {
    let off = maps::offsets();
    let ptr = MOUNT_SCRATCH.get_ptr_mut(0)?;
    let ev = &mut *ptr;
    let pid_tgid = bpf_get_current_pid_tgid();
    let current = bpf_get_current_task() as *const u8;
    ev.kind = EventKind::Mount as u32;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.pid = pid_tgid as u32;
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev.ktime_ns = bpf_ktime_get_boot_ns();
    ev.start_boottime_ns = task::leader_start_boottime(&off, current);
    let nsproxy = task::read_ptr(current, field(MOUNT_FIELD_TASK_NSPROXY) as u32);
    let mnt_ns = task::read_ptr(nsproxy, field(MOUNT_FIELD_NSPROXY_MNT_NS) as u32);
    ev.mnt_ns = task::read_at::<u32>(mnt_ns, field(MOUNT_FIELD_MNT_NS_INUM) as u32);
    ev.syscall = syscall;
    ev.hook = hook;
    ev._pad = 0;
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    ev.target_dfd = args.target_dfd;
    ev.target_len = read_str(args.target as *const u8, &mut ev.target);
    ev.source_len = read_str(args.source as *const u8, &mut ev.source);
    ev.fstype_len = read_str(args.fstype as *const u8, &mut ev.fstype);
    Some(ptr)
}

#[inline(always)]
unsafe fn read_str(src: *const u8, dest: &mut [u8]) -> u32 {
    if src.is_null() {
        return 0;
    }
    match bpf_probe_read_user_str_bytes(src, dest) {
        Ok(s) => s.len() as u32,
        Err(_) => 0,
    }
}
