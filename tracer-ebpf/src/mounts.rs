//! Mounts as they are made: `mount(2)` and `move_mount(2)` (which
//! `open_tree`/`fsmount` mounts go through), from the syscall tracepoints.
//!
//! Entry copies the caller's arguments (target path, source, type) and its
//! mount namespace into a pending record per thread; exit sends it when the
//! call returned 0, so only mounts that happened are reported. Where each
//! argument sits in the tracepoint record comes from its tracefs `format`
//! file, and the path to the mount namespace from BTF (`MOUNT_FIELDS`).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_user_str_bytes,
    },
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use tracer_common::{
    EventKind, MountEvent, MOUNT_FIELDS, MOUNT_FIELD_FROM_PATH, MOUNT_FIELD_FSTYPE,
    MOUNT_FIELD_MNT_NS_INUM, MOUNT_FIELD_NSPROXY_MNT_NS, MOUNT_FIELD_READY, MOUNT_FIELD_RET,
    MOUNT_FIELD_SOURCE, MOUNT_FIELD_TARGET, MOUNT_FIELD_TASK_NSPROXY, MOUNT_FIELD_TO_DFD,
    MOUNT_FIELD_TO_PATH, MOUNT_SYSCALL_MOUNT, MOUNT_SYSCALL_MOVE_MOUNT,
};

use crate::{maps, task};

/// Argument positions and structure offsets, filled in by user space.
#[map]
static MOUNT_FIELD_OFFSETS: Array<u32> = Array::with_max_entries(MOUNT_FIELDS, 0);

/// Mount calls entered and not yet returned, by thread id.
#[map]
static PENDING_MOUNTS: LruHashMap<u32, MountEvent> = LruHashMap::with_max_entries(1024, 0);

/// Where a record is built (too large for the stack).
#[map]
static MOUNT_SCRATCH: PerCpuArray<MountEvent> = PerCpuArray::with_max_entries(1, 0);

const AT_FDCWD: i32 = -100;

#[inline(always)]
fn field(index: u32) -> usize {
    MOUNT_FIELD_OFFSETS.get(index).copied().unwrap_or(0) as usize
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
    let off = maps::offsets();
    let Some(ev) = MOUNT_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let ev = &mut *ev;
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
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    let arg = |index: u32| ctx.read_at::<u64>(field(index)).unwrap_or(0) as *const u8;
    let (target, source, fstype) = if syscall == MOUNT_SYSCALL_MOUNT {
        ev.target_dfd = AT_FDCWD;
        (
            arg(MOUNT_FIELD_TARGET),
            arg(MOUNT_FIELD_SOURCE),
            arg(MOUNT_FIELD_FSTYPE),
        )
    } else {
        ev.target_dfd = ctx.read_at::<u64>(field(MOUNT_FIELD_TO_DFD)).unwrap_or(0) as i32;
        (
            arg(MOUNT_FIELD_TO_PATH),
            arg(MOUNT_FIELD_FROM_PATH),
            core::ptr::null(),
        )
    };
    ev.target_len = read_str(target, &mut ev.target);
    ev.source_len = read_str(source, &mut ev.source);
    ev.fstype_len = read_str(fstype, &mut ev.fstype);
    let _ = PENDING_MOUNTS.insert(ev.pid, &*ev, 0);
    0
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
