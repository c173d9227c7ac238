//! A kernel-memory reader for the kernel checks: the syscall table and the
//! code of the syscall dispatcher, read with `bpf_probe_read_kernel`, which
//! lockdown `integrity` still allows (unlike `/proc/kcore` under
//! `confidentiality`, or `/dev/mem`). It runs as an `iter/task` program
//! because task iterators exist on every kernel tracer supports (5.8+):
//! the first task's call copies the region user space put in
//! `KMEM_REQUEST`; the other tasks are skipped.
use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_seq_write},
    macros::map,
    maps::{Array, PerCpuArray},
};
use tracer_common::{KmemChunk, KmemRequest, KMEM_CHUNK, KMEM_MAX_CHUNKS};

use crate::iter::{seq_of, IterTaskCtx};

#[map]
static KMEM_REQUEST: Array<KmemRequest> = Array::with_max_entries(1, 0);

/// Scratch space for one chunk: too large for the BPF stack.
#[map]
static KMEM_SCRATCH: PerCpuArray<KmemChunk> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn kmem_iter(ctx: *const IterTaskCtx) -> i32 {
    unsafe {
        let meta = (*ctx).meta;
        let seq = seq_of(meta);
        let seq_num = core::ptr::read_volatile(core::ptr::addr_of!((*meta).seq_num));
        if (*ctx).task.is_null() || seq_num != 0 {
            return 0;
        }
        let Some(req) = KMEM_REQUEST.get(0) else {
            return 0;
        };
        let addr = req.addr;
        let chunks = req.chunks;
        for i in 0..KMEM_MAX_CHUNKS {
            if i >= chunks {
                break;
            }
            let Some(chunk) = KMEM_SCRATCH.get_ptr_mut(0) else {
                return 0;
            };
            let src = addr.wrapping_add(i * KMEM_CHUNK as u64);
            let status = bpf_probe_read_kernel(
                (*chunk).data.as_mut_ptr() as *mut _,
                KMEM_CHUNK as u32,
                src as *const _,
            );
            (*chunk).status = status;
            bpf_seq_write(
                seq,
                chunk as *const KmemChunk as *const _,
                core::mem::size_of::<KmemChunk>() as u32,
            );
        }
    }
    0
}
