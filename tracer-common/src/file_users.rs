//! Records of the file-user iterators: which processes run, map or hold
//! open a given file, found from the kernel's task, file and VMA tables.

/// Bytes kept of a file's last path component and its directory's.
pub const FILE_NAME_LEN: usize = 32;

/// The process's executable (`mm->exe_file`).
pub const FILE_USE_EXE: u32 = 1;
/// An open file descriptor.
pub const FILE_USE_FD: u32 = 2;
/// A file-backed memory mapping (a library, an injected object).
pub const FILE_USE_MAP: u32 = 3;

/// A file's identity as the kernel keeps it: the super block's device
/// (`MKDEV` layout: major << 20 | minor) and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// What the iterators look for beside the identities in `FILE_TARGETS`:
/// an unlinked file (no links left) whose last component is `name`, for a
/// file deleted before tracer could stat it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileQuery {
    /// Bytes of `name` in use; 0 turns the name match off.
    pub name_len: u32,
    pub _pad: u32,
    pub name: [u8; FILE_NAME_LEN],
}

impl Default for FileQuery {
    fn default() -> Self {
        FileQuery {
            name_len: 0,
            _pad: 0,
            name: [0; FILE_NAME_LEN],
        }
    }
}

/// Structure offsets for the file-user iterators, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct FileUserOffsets {
    pub ready: u32,
    pub file_inode: u32,
    pub file_dentry: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub inode_nlink: u32,
    pub sb_dev: u32,
    pub dentry_name: u32,
    pub dentry_parent: u32,
    pub mm_exe_file: u32,
    pub vma_file: u32,
    pub _pad: u32,
}

/// One use of a matching file by one task.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileUserRecord {
    pub tgid: u32,
    pub pid: u32,
    /// `FILE_USE_*`.
    pub kind: u32,
    /// The descriptor, for `FILE_USE_FD`.
    pub fd: u32,
    pub dev: u32,
    /// Links left (0: deleted).
    pub nlink: u32,
    pub ino: u64,
    pub name: [u8; FILE_NAME_LEN],
    pub parent: [u8; FILE_NAME_LEN],
}

const _: () = {
    assert!(core::mem::size_of::<FileKey>() == 16);
    assert!(core::mem::size_of::<FileQuery>() == 8 + FILE_NAME_LEN);
    assert!(core::mem::size_of::<FileUserOffsets>() == 12 * 4);
    assert!(core::mem::size_of::<FileUserRecord>() == 32 + 2 * FILE_NAME_LEN);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, valid for any
    // bit pattern.
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::FileQuery {}
    unsafe impl aya::Pod for super::FileUserOffsets {}
}
