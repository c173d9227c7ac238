//! `iter/ksym` (Linux 6.0+): the kernel's symbol table as the kallsyms
//! walk yields it, each symbol copied as bytes. The same walk as
//! `/proc/kallsyms` (core kernel, modules, ftrace, BPF, kprobes), without
//! its formatting, and without passing through the proc file's read, which
//! a rootkit can filter.
use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel_str, bpf_seq_write},
    macros::map,
    maps::PerCpuArray,
};
use tracer_common::ksyms::{
    KsymOffsets, KsymScratch, KSYM_HEADER_LEN, KSYM_MODULE_MAX, KSYM_NAME_MAX,
};

use crate::{
    iter::{seq_of, IterMeta},
    task,
};

/// Offsets in `struct kallsym_iter`, filled in by user space from BTF.
#[unsafe(no_mangle)]
static KSYM_OFFSETS: KsymOffsets = KsymOffsets {
    value: 0,
    name: 0,
    module_name: 0,
};

/// One record being built: too large for the BPF stack.
#[map]
static KSYM_SCRATCH: PerCpuArray<KsymScratch> = PerCpuArray::with_max_entries(1, 0);

/// `struct bpf_iter__ksym`.
#[repr(C)]
pub struct IterKsymCtx {
    meta: *const IterMeta,
    ksym: *const u8,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/ksym")]
pub extern "C" fn ksym_iter(ctx: *const IterKsymCtx) -> i32 {
    unsafe {
        let seq = seq_of((*ctx).meta);
        let ksym = (*ctx).ksym;
        // The final call of an iteration has no symbol.
        if ksym.is_null() {
            return 0;
        }
        // A volatile load, so the zero initialiser is not folded in.
        let off = core::ptr::read_volatile(&KSYM_OFFSETS);
        let value = task::read_raw::<u64>(ksym, off.value);
        if value == 0 {
            return 0;
        }
        let Some(rec) = KSYM_SCRATCH.get_ptr_mut(0) else {
            return 0;
        };
        let bytes = (*rec).bytes.as_mut_ptr();
        let n = bpf_probe_read_kernel_str(
            bytes as *mut _,
            KSYM_NAME_MAX as u32,
            ksym.wrapping_add(off.name as usize) as *const _,
        );
        // The length counts the NUL; an empty name is no symbol.
        if n <= 1 {
            return 0;
        }
        let name_len = (n as usize - 1) & (KSYM_NAME_MAX - 1);
        let m = bpf_probe_read_kernel_str(
            bytes.wrapping_add(name_len) as *mut _,
            KSYM_MODULE_MAX as u32,
            ksym.wrapping_add(off.module_name as usize) as *const _,
        );
        let module_len = if m > 1 {
            (m as usize - 1) & (KSYM_MODULE_MAX - 1)
        } else {
            0
        };
        (*rec).header.value = value;
        (*rec).header.name_len = name_len as u16;
        (*rec).header.module_len = module_len as u8;
        bpf_seq_write(
            seq,
            rec as *const _,
            (KSYM_HEADER_LEN + name_len + module_len) as u32,
        );
    }
    0
}
