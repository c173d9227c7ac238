//! The file-user iterators (`file_users_exe`, `file_users_fd`,
//! `file_users_map`): their offsets from BTF, the query, and the records.
use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap};
use tracer_common::file_users::{
    FileKey, FileQuery, FileUserOffsets, FileUserRecord, FILE_NAME_LEN,
};

use super::{offsets::KernelBtf, Kernel};

/// (program, iterator target). The VMA walk needs Linux 5.12.
pub const EXE: (&str, &str) = ("file_users_exe", "task");
pub const FD: (&str, &str) = ("file_users_fd", "task_file");
pub const MAP: (&str, &str) = ("file_users_map", "task_vma");

/// Most identities one query looks for (the map's size).
pub const MAX_TARGETS: usize = 64;

/// Which of the iterators loaded, and why not.
#[derive(Clone, Debug)]
pub struct Availability {
    /// Why the exe and fd walks are not available, if they are not.
    pub files: Option<String>,
    /// Why the mapping walk is not available, if it is not.
    pub maps: Option<String>,
}

impl Availability {
    pub fn not_loaded() -> Availability {
        let why = Some("not loaded by this command".to_string());
        Availability {
            files: why.clone(),
            maps: why,
        }
    }
}

impl Kernel {
    /// What `--file` searches with on this kernel (for `tracer status`).
    pub fn file_user_choice(&self) -> super::HookChoice {
        let a = &self.file_users;
        let (hook, reason) = match (&a.files, &a.maps) {
            (Some(why), _) => (
                "/proc".to_string(),
                format!("file-user iterators unavailable: {why}"),
            ),
            (None, None) => (
                "iter/task + iter/task_file + iter/task_vma".to_string(),
                "executables, open files and mappings from the kernel's tables".to_string(),
            ),
            (None, Some(why)) => (
                "iter/task + iter/task_file; /proc/PID/maps".to_string(),
                format!("mappings from /proc: {why}"),
            ),
        };
        super::HookChoice {
            event: "file-users",
            hook,
            reason,
        }
    }
}

/// Offsets for the file-user iterators, from the running kernel's BTF.
pub fn resolve(btf: &KernelBtf) -> Result<FileUserOffsets> {
    let f = |s, m| btf.field_offset(s, m);
    Ok(FileUserOffsets {
        ready: 1,
        file_inode: f("file", "f_inode")?,
        file_dentry: f("file", "f_path")? + f("path", "dentry")?,
        inode_ino: f("inode", "i_ino")?,
        inode_sb: f("inode", "i_sb")?,
        inode_nlink: f("inode", "i_nlink")?,
        sb_dev: f("super_block", "s_dev")?,
        dentry_name: f("dentry", "d_name")? + f("qstr", "name")?,
        dentry_parent: f("dentry", "d_parent")?,
        mm_exe_file: f("mm_struct", "exe_file")?,
        vma_file: f("vm_area_struct", "vm_file")?,
        _pad: 0,
    })
}

/// What one walk found.
pub struct Found {
    pub records: Vec<FileUserRecord>,
    /// Why mappings were not walked, when they were not.
    pub maps_unavailable: Option<String>,
}

impl Kernel {
    /// Every task that runs, holds open or maps a file with one of
    /// `targets`' identities, or an unlinked file named `deleted_name`.
    pub fn file_users(
        &mut self,
        targets: &[FileKey],
        deleted_name: Option<&[u8]>,
    ) -> Result<Found> {
        if let Some(why) = &self.file_users.files {
            anyhow::bail!("the file-user iterators did not load: {why}");
        }
        {
            let mut map: BpfHashMap<_, FileKey, u32> = BpfHashMap::try_from(
                self.ebpf
                    .map_mut("FILE_TARGETS")
                    .context("FILE_TARGETS map missing")?,
            )?;
            let old: Vec<FileKey> = map.keys().filter_map(Result::ok).collect();
            for key in old {
                let _ = map.remove(&key);
            }
            for key in targets.iter().take(MAX_TARGETS) {
                map.insert(key, 1, 0).context("FILE_TARGETS")?;
            }
        }
        let mut query = FileQuery::default();
        if let Some(name) = deleted_name.filter(|n| !n.is_empty() && n.len() < FILE_NAME_LEN) {
            query.name_len = name.len() as u32;
            query.name[..name.len()].copy_from_slice(name);
        }
        let mut map: Array<_, FileQuery> = Array::try_from(
            self.ebpf
                .map_mut("FILE_QUERY")
                .context("FILE_QUERY map missing")?,
        )?;
        map.set(0, query, 0).context("FILE_QUERY")?;
        let mut bytes = self.run_iterator(EXE.0)?;
        bytes.extend(self.run_iterator(FD.0)?);
        let maps_unavailable = self.file_users.maps.clone();
        if maps_unavailable.is_none() {
            bytes.extend(self.run_iterator(MAP.0)?);
        }
        Ok(Found {
            records: decode(&bytes),
            maps_unavailable,
        })
    }
}

/// The iterator's output as records; a trailing partial record is dropped.
pub fn decode(bytes: &[u8]) -> Vec<FileUserRecord> {
    super::events::read_records(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_resolve_from_running_kernel() {
        let Ok(btf) = super::super::offsets::load_vmlinux_btf() else {
            eprintln!("no BTF on this kernel; skipping");
            return;
        };
        let off = resolve(&btf).expect("every field resolves");
        assert_ne!(off.inode_ino, off.inode_sb);
        assert!(off.vma_file > 0 && off.mm_exe_file > 0);
    }

    #[test]
    fn decode_keeps_whole_records_only() {
        let size = std::mem::size_of::<FileUserRecord>();
        let mut bytes = vec![0u8; size * 2 + 3];
        bytes[0] = 9;
        let recs = decode(&bytes);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].tgid, 9);
    }
}
