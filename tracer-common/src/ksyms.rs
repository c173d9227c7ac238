//! Records of the kallsyms iterator (`iter/ksym`, Linux 6.0+): the kernel's
//! symbol table copied as bytes, without the `%px %c %s [%s]` formatting
//! `/proc/kallsyms` spends half its time on.

/// Most bytes of a symbol name copied (the kernel's `KSYM_NAME_LEN` is 512
/// since 6.1, 128 before); a power of two, to bound copies for the verifier.
pub const KSYM_NAME_MAX: usize = 512;
/// Most bytes of a module name copied (`MODULE_NAME_LEN` is 56 on 64-bit).
pub const KSYM_MODULE_MAX: usize = 64;

/// Where `struct kallsym_iter`'s fields lie, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KsymOffsets {
    pub value: u32,
    pub name: u32,
    pub module_name: u32,
}

/// One symbol: this header, then `name_len` bytes of its name and
/// `module_len` bytes of its owner's name (none for the core kernel).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KsymHeader {
    pub value: u64,
    pub name_len: u16,
    pub module_len: u8,
    pub _pad: [u8; 5],
}

pub const KSYM_HEADER_LEN: usize = core::mem::size_of::<KsymHeader>();

/// The kernel program's scratch record: a header and room for both names.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KsymScratch {
    pub header: KsymHeader,
    pub bytes: [u8; KSYM_NAME_MAX + KSYM_MODULE_MAX],
}

const _: () = {
    assert!(KSYM_HEADER_LEN == 16);
    assert!(core::mem::size_of::<KsymOffsets>() == 12);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers, valid for any bit pattern.
    unsafe impl aya::Pod for super::KsymOffsets {}
}
