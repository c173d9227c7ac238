//! `iter/task_file`: the BPF programs, links and perf events every process
//! holds, found from the kernel's task and file tables rather than
//! /proc/PID/fd, so an owner hidden from /proc still shows. For tracer's own
//! process it also reads the function pointers behind its open files (the
//! `iterate_shared` of /proc, the seq_file `show` of /proc/net/tcp) so user
//! space can check them against kernel text.
use aya_ebpf::helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_seq_write};
use tracer_common::{
    BpfFileOffsets, BpfFileRecord, BPF_FILE_LINK, BPF_FILE_OWN, BPF_FILE_PERF_EVENT, BPF_FILE_PROG,
    COMM_LEN,
};

use crate::{
    iter::{seq_of, IterMeta, IterTaskFileCtx},
    maps, task,
};

/// Offsets for this iterator, filled in by user space from BTF.
#[unsafe(no_mangle)]
static BPF_FILE_OFFSETS: BpfFileOffsets = BpfFileOffsets {
    ready: 0,
    own_tgid: 0,
    file_dentry: 0,
    dentry_name: 0,
    file_private_data: 0,
    file_f_op: 0,
    fops_iterate_shared: 0,
    seq_file_op: 0,
    seq_ops_show: 0,
    prog_aux: 0,
    prog_aux_id: 0,
    link_id: 0,
    perf_event_prog: 0,
    _pad: 0,
};

/// The anonymous-inode name of a file: `bpf-prog`, `bpf-link`, `[perf_event]`.
#[inline(always)]
fn kind_of(name: &[u8; 16]) -> u32 {
    let word = u64::from_ne_bytes([
        name[0], name[1], name[2], name[3], name[4], name[5], name[6], name[7],
    ]);
    if word == u64::from_ne_bytes(*b"bpf-prog") && name[8] == 0 {
        BPF_FILE_PROG
    } else if word == u64::from_ne_bytes(*b"bpf-link") && name[8] == 0 {
        BPF_FILE_LINK
    } else if word == u64::from_ne_bytes(*b"[perf_ev")
        && name[8] == b'e'
        && name[9] == b'n'
        && name[10] == b't'
        && name[11] == b']'
        && name[12] == 0
    {
        BPF_FILE_PERF_EVENT
    } else {
        0
    }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub extern "C" fn bpf_files_iter(ctx: *const IterTaskFileCtx) -> i32 {
    unsafe {
        // Read each context field once: the verifier forgets a null check
        // made on an earlier load of the same field.
        let seq = seq_of((*ctx).meta);
        let task = core::ptr::read_volatile(&(*ctx).task);
        let file = core::ptr::read_volatile(&(*ctx).file);
        let fd = core::ptr::read_volatile(&(*ctx).fd);
        if task.is_null() || file.is_null() {
            return 0;
        }
        let off: BpfFileOffsets = core::ptr::read_volatile(&BPF_FILE_OFFSETS);
        let toff = maps::offsets();
        let tgid = task::tgid(&toff, task);
        let mut name = [0u8; 16];
        let dentry = task::read_ptr(file, off.file_dentry);
        let name_ptr = task::read_ptr(dentry, off.dentry_name);
        if !name_ptr.is_null() {
            let _ = bpf_probe_read_kernel_str_bytes(name_ptr, &mut name);
        }
        let kind = kind_of(&name);
        let private = task::read_ptr(file, off.file_private_data);
        let mut rec = BpfFileRecord {
            tgid,
            fd,
            kind,
            obj_id: 0,
            comm: [0; COMM_LEN],
            f_op: 0,
            iterate_shared: 0,
            seq_show: 0,
        };
        if kind != 0 {
            rec.obj_id = match kind {
                BPF_FILE_PROG => {
                    task::read_at::<u32>(task::read_ptr(private, off.prog_aux), off.prog_aux_id)
                }
                BPF_FILE_LINK => task::read_at::<u32>(private, off.link_id),
                _ => {
                    let prog = task::read_ptr(private, off.perf_event_prog);
                    task::read_at::<u32>(task::read_ptr(prog, off.prog_aux), off.prog_aux_id)
                }
            };
            task::comm(&toff, task, &mut rec.comm);
            bpf_seq_write(
                seq,
                &rec as *const BpfFileRecord as *const _,
                core::mem::size_of::<BpfFileRecord>() as u32,
            );
        }
        if off.own_tgid != 0 && tgid == off.own_tgid {
            let f_op = task::read_ptr(file, off.file_f_op);
            rec.kind = BPF_FILE_OWN;
            rec.obj_id = 0;
            rec.f_op = f_op as u64;
            rec.iterate_shared = task::read_at::<u64>(f_op, off.fops_iterate_shared);
            let seq_ops = task::read_ptr(private, off.seq_file_op);
            rec.seq_show = task::read_at::<u64>(seq_ops, off.seq_ops_show);
            task::comm(&toff, task, &mut rec.comm);
            bpf_seq_write(
                seq,
                &rec as *const BpfFileRecord as *const _,
                core::mem::size_of::<BpfFileRecord>() as u32,
            );
        }
    }
    0
}

/// `struct bpf_iter__bpf_prog`.
#[repr(C)]
pub struct IterBpfProgCtx {
    meta: *const IterMeta,
    prog: *const u8,
}

/// `iter/bpf_prog`: the id of every program the kernel has, from its own
/// program table rather than the `bpf(2)` id listing that a rootkit can
/// doctor, so user space can diff the two.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_prog")]
pub extern "C" fn bpf_progs_iter(ctx: *const IterBpfProgCtx) -> i32 {
    unsafe {
        let seq = seq_of((*ctx).meta);
        let prog = core::ptr::read_volatile(&(*ctx).prog);
        if prog.is_null() {
            return 0;
        }
        let off: BpfFileOffsets = core::ptr::read_volatile(&BPF_FILE_OFFSETS);
        let id: u32 = task::read_at(task::read_ptr(prog, off.prog_aux), off.prog_aux_id);
        bpf_seq_write(seq, &id as *const u32 as *const _, 4);
    }
    0
}
