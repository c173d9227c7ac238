//! `iter/task`, `iter/task_file` and `iter/task_vma`: the tasks that run,
//! hold open or map one file, matched by device and inode (or, for a file
//! already deleted, by its name), straight from the kernel's task, file and
//! VMA tables so that a process hidden from /proc still shows. Only
//! matches are written: a walk of a large host costs a few comparisons per
//! file.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_seq_write},
    macros::map,
    maps::{Array, HashMap},
};
use tracer_common::file_users::{
    FileKey, FileQuery, FileUserOffsets, FileUserRecord, FILE_NAME_LEN, FILE_USE_EXE, FILE_USE_FD,
    FILE_USE_MAP,
};

use crate::{
    iter::{seq_of, IterMeta, IterTaskCtx, IterTaskFileCtx},
    maps, task,
};

/// Offsets for these iterators, filled in by user space from BTF.
#[unsafe(no_mangle)]
static FILE_USER_OFFSETS: FileUserOffsets = FileUserOffsets {
    ready: 0,
    file_inode: 0,
    file_dentry: 0,
    inode_ino: 0,
    inode_sb: 0,
    inode_nlink: 0,
    sb_dev: 0,
    dentry_name: 0,
    dentry_parent: 0,
    mm_exe_file: 0,
    vma_file: 0,
    _pad: 0,
};

/// The identities looked for (value unused).
#[map]
static FILE_TARGETS: HashMap<FileKey, u32> = HashMap::with_max_entries(64, 0);

/// The deleted file's name looked for, if any.
#[map]
static FILE_QUERY: Array<FileQuery> = Array::with_max_entries(1, 0);

/// `struct bpf_iter__task_vma`.
#[repr(C)]
pub struct TaskVmaCtx {
    meta: *const IterMeta,
    task: *const u8,
    vma: *const u8,
}

#[inline(always)]
fn offsets() -> FileUserOffsets {
    // A volatile load, so the zero initialiser is not folded into the code.
    unsafe { core::ptr::read_volatile(&FILE_USER_OFFSETS) }
}

/// Whether the NUL-terminated `name` is the query's name.
#[inline(always)]
fn is_query_name(name: &[u8; FILE_NAME_LEN], query: &FileQuery) -> bool {
    let len = query.name_len as usize;
    if len == 0 || len >= FILE_NAME_LEN || name[len] != 0 {
        return false;
    }
    let mut i = 0;
    while i < FILE_NAME_LEN {
        if i < len && name[i] != query.name[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Writes a record when `file` is one of the targets, or an unlinked file
/// with the query's name.
#[inline(always)]
unsafe fn check(
    seq: *mut aya_ebpf::bindings::seq_file,
    task: *const u8,
    file: *const u8,
    kind: u32,
    fd: u32,
) {
    if file.is_null() {
        return;
    }
    let off = offsets();
    if off.ready == 0 {
        return;
    }
    let inode = task::read_ptr(file, off.file_inode);
    let sb = task::read_ptr(inode, off.inode_sb);
    let key = FileKey {
        dev: task::read_at::<u32>(sb, off.sb_dev),
        _pad: 0,
        ino: task::read_at::<u64>(inode, off.inode_ino),
    };
    let nlink = task::read_at::<u32>(inode, off.inode_nlink);
    let targeted = FILE_TARGETS.get(&key).is_some();
    let query = match FILE_QUERY.get(0) {
        Some(q) => *q,
        None => return,
    };
    if !targeted && (nlink != 0 || query.name_len == 0) {
        return;
    }
    let mut rec = FileUserRecord {
        tgid: 0,
        pid: 0,
        kind,
        fd,
        dev: key.dev,
        nlink,
        ino: key.ino,
        name: [0; FILE_NAME_LEN],
        parent: [0; FILE_NAME_LEN],
    };
    let dentry = task::read_ptr(file, off.file_dentry);
    let name = task::read_ptr(dentry, off.dentry_name);
    if !name.is_null() {
        let _ = bpf_probe_read_kernel_str_bytes(name, &mut rec.name);
    }
    if !targeted && !is_query_name(&rec.name, &query) {
        return;
    }
    let parent = task::read_ptr(task::read_ptr(dentry, off.dentry_parent), off.dentry_name);
    if !parent.is_null() {
        let _ = bpf_probe_read_kernel_str_bytes(parent, &mut rec.parent);
    }
    let toff = maps::offsets();
    rec.tgid = task::tgid(&toff, task);
    rec.pid = task::pid(&toff, task);
    bpf_seq_write(
        seq,
        &rec as *const FileUserRecord as *const _,
        core::mem::size_of::<FileUserRecord>() as u32,
    );
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn file_users_exe(ctx: *const IterTaskCtx) -> i32 {
    unsafe {
        let seq = seq_of((*ctx).meta);
        let task = core::ptr::read_volatile(&(*ctx).task);
        if task.is_null() {
            return 0;
        }
        let toff = maps::offsets();
        // Every thread is looked at: a zombie leader has no mm, its live
        // threads still run the file.
        let mm = task::read_ptr(task, toff.task_mm);
        let exe = task::read_ptr(mm, offsets().mm_exe_file);
        check(seq, task, exe, FILE_USE_EXE, 0);
    }
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub extern "C" fn file_users_fd(ctx: *const IterTaskFileCtx) -> i32 {
    unsafe {
        // Each context field read once: the verifier forgets a null check
        // made on an earlier load of the same field.
        let seq = seq_of((*ctx).meta);
        let task = core::ptr::read_volatile(&(*ctx).task);
        let file = core::ptr::read_volatile(&(*ctx).file);
        let fd = core::ptr::read_volatile(&(*ctx).fd);
        if task.is_null() || file.is_null() {
            return 0;
        }
        check(seq, task, file, FILE_USE_FD, fd);
    }
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_vma")]
pub extern "C" fn file_users_map(ctx: *const TaskVmaCtx) -> i32 {
    unsafe {
        let seq = seq_of((*ctx).meta);
        let task = core::ptr::read_volatile(&(*ctx).task);
        let vma = core::ptr::read_volatile(&(*ctx).vma);
        if task.is_null() || vma.is_null() {
            return 0;
        }
        let file = task::read_ptr(vma, offsets().vma_file);
        check(seq, task, file, FILE_USE_MAP, 0);
    }
    0
}
