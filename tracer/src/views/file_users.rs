//! Who uses a file: every process that runs it, maps it or holds it open,
//! like `lsof PATH`, from the kernel's task, file and VMA tables, so that a
//! process hidden from /proc still shows.
//!
//! A file is matched by device and inode, never by name alone: the path is
//! stat'ed, and the processes whose executable (`/proc/PID/exe`) is that
//! path, or that path deleted, add the identity of the inode they run (a
//! file replaced or deleted since it started). The kernel walk also looks
//! for an unlinked file with the same last component and directory name,
//! for a deleted file that only a process hidden from /proc still runs.
//! Without the kernel (not root, or the iterators refused), the same
//! questions go to /proc, and the result says what that cannot see.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
use schemars::JsonSchema;
use serde::Serialize;
use tracer_common::{
    file_users::{FileKey, FileUserRecord, FILE_USE_EXE, FILE_USE_FD, FILE_USE_MAP},
    until_nul,
};

use crate::{kernel::Kernel, proc};

/// How a process uses the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "how")]
pub enum FileUse {
    /// Its executable.
    Runs,
    /// Mapped into its memory (a library, an injected object).
    Maps,
    /// Open as a file descriptor.
    HoldsOpen { fd: u32 },
}

impl FileUse {
    /// A few words for a plan's reason: "runs it", "holds it open as fd 3".
    pub fn describe(&self) -> String {
        match self {
            FileUse::Runs => "runs it".into(),
            FileUse::Maps => "maps it".into(),
            FileUse::HoldsOpen { fd } => format!("holds it open as fd {fd}"),
        }
    }
}

/// What the search found, and what it could not look at.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct FileUsers {
    /// The identities matched: (device as MAJOR:MINOR, inode).
    pub identities: Vec<String>,
    /// Each process and its uses of the file, by PID.
    pub users: BTreeMap<u32, Vec<FileUse>>,
    /// What the search could not cover, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
}

impl FileUsers {
    fn add(&mut self, pid: u32, how: FileUse) {
        let uses = self.users.entry(pid).or_default();
        if !uses.contains(&how) {
            uses.push(how);
            uses.sort();
        }
    }
}

/// The kernel's device number layout (`MKDEV`).
fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

fn identity_of(path: &[u8]) -> Option<FileKey> {
    let st = statx(CWD, path, AtFlags::empty(), StatxFlags::INO).ok()?;
    Some(FileKey {
        dev: kernel_dev(st.stx_dev_major, st.stx_dev_minor),
        _pad: 0,
        ino: st.stx_ino,
    })
}

fn show(key: &FileKey) -> String {
    format!("{}:{} inode {}", key.dev >> 20, key.dev & 0xf_ffff, key.ino)
}

/// The path as the processes that run it would show it: absolute, and
/// with " (deleted)" once unlinked.
struct Names {
    path: Vec<u8>,
    deleted: Vec<u8>,
    /// Last component and its directory's, for the kernel's name match.
    name: Vec<u8>,
    parent: Vec<u8>,
}

impl Names {
    fn of(path: &Path) -> Names {
        let abs: PathBuf = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let bytes = abs.as_os_str().as_bytes().to_vec();
        let mut deleted = bytes.clone();
        deleted.extend_from_slice(b" (deleted)");
        let component = |p: Option<&Path>| {
            p.and_then(Path::file_name)
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default()
        };
        Names {
            name: component(Some(&abs)),
            parent: component(abs.parent()),
            path: bytes,
            deleted,
        }
    }

    fn is(&self, shown: &[u8]) -> bool {
        shown == self.path || shown == self.deleted
    }
}

/// Finds every process using `path`: through `kernel` when it is loaded
/// with the file-user iterators, else through /proc (and says so).
pub fn find(kernel: Result<&mut Kernel, String>, path: &Path) -> FileUsers {
    let names = Names::of(path);
    let mut found = FileUsers::default();
    let mut keys: BTreeSet<FileKey> = identity_of(&names.path).into_iter().collect();
    // Processes running the path (or its deleted self) give the identity
    // of the inode they run: /proc/PID/exe opens it even when unlinked.
    let mut pids: BTreeSet<u32> = proc::list_pids().unwrap_or_default().into_iter().collect();
    let kernel = kernel.and_then(|k| {
        let tasks = crate::views::kernel::list(k)?;
        pids.extend(tasks.keys());
        Ok(k)
    });
    let exe_span = crate::timings::span("file users: /proc/PID/exe of every process");
    for &pid in &pids {
        let link = format!("/proc/{pid}/exe");
        let Ok(shown) = proc::read_link(&link) else {
            continue;
        };
        if names.is(&shown.to_bytes()) {
            keys.extend(identity_of(link.as_bytes()));
        }
    }
    drop(exe_span);
    let keys: Vec<FileKey> = keys.into_iter().collect();
    found.identities = keys.iter().map(show).collect();
    let from_kernel = kernel.and_then(|k| {
        let deleted_name = Some(names.name.as_slice());
        k.file_users(&keys, deleted_name)
            .map_err(|e| format!("{e:#}"))
    });
    match from_kernel {
        Ok(walk) => {
            for rec in &walk.records {
                if let Some(how) = kernel_use(rec, &keys, &names) {
                    found.add(rec.tgid, how);
                }
            }
            if let Some(why) = walk.maps_unavailable {
                found.gaps.push(format!(
                    "mappings read from /proc/PID/maps ({why}): a process hidden from /proc is not checked for them"
                ));
                for &pid in &pids {
                    proc_maps(pid, &keys, &names, &mut found);
                }
            }
        }
        Err(why) => {
            found.gaps.push(format!(
                "kernel view unavailable ({why}): searched /proc only, so a process hidden from /proc is not found"
            ));
            for &pid in &pids {
                proc_exe(pid, &keys, &names, &mut found);
                proc_maps(pid, &keys, &names, &mut found);
                proc_fds(pid, &keys, &names, &mut found);
            }
        }
    }
    if keys.is_empty() && found.users.is_empty() {
        found.gaps.push(format!(
            "{}: no such file, and no process runs it deleted",
            crate::model::HostStr::from_bytes(&names.path).escaped()
        ));
    }
    found
}

/// A kernel record's use, when it is the file: by identity, or an unlinked
/// file with the path's name in a directory of the path's directory name.
fn kernel_use(rec: &FileUserRecord, keys: &[FileKey], names: &Names) -> Option<FileUse> {
    let key = FileKey {
        dev: rec.dev,
        _pad: 0,
        ino: rec.ino,
    };
    let by_name = rec.nlink == 0
        && until_nul(&rec.name) == names.name.as_slice()
        && until_nul(&rec.parent) == names.parent.as_slice();
    if !keys.contains(&key) && !by_name {
        return None;
    }
    match rec.kind {
        FILE_USE_EXE => Some(FileUse::Runs),
        FILE_USE_FD => Some(FileUse::HoldsOpen { fd: rec.fd }),
        FILE_USE_MAP => Some(FileUse::Maps),
        _ => None,
    }
}

fn proc_exe(pid: u32, keys: &[FileKey], names: &Names, found: &mut FileUsers) {
    let link = format!("/proc/{pid}/exe");
    let shown = proc::read_link(&link).map(|s| s.to_bytes().into_owned());
    if shown.is_ok_and(|s| names.is(&s))
        || identity_of(link.as_bytes()).is_some_and(|k| keys.contains(&k))
    {
        found.add(pid, FileUse::Runs);
    }
}

fn proc_fds(pid: u32, keys: &[FileKey], names: &Names, found: &mut FileUsers) {
    let Ok(fds) = proc::list_numeric_dir(&format!("/proc/{pid}/fd")) else {
        return;
    };
    for fd in fds {
        let link = format!("/proc/{pid}/fd/{fd}");
        let shown = proc::read_link(&link).map(|s| s.to_bytes().into_owned());
        if shown.is_ok_and(|s| names.is(&s))
            || identity_of(link.as_bytes()).is_some_and(|k| keys.contains(&k))
        {
            found.add(pid, FileUse::HoldsOpen { fd });
        }
    }
}

fn proc_maps(pid: u32, keys: &[FileKey], names: &Names, found: &mut FileUsers) {
    let Ok(maps) = proc::read_file(&format!("/proc/{pid}/maps")) else {
        return;
    };
    if maps_use_file(&maps, keys, names) {
        found.add(pid, FileUse::Maps);
    }
}

/// Whether a /proc/PID/maps text maps the file: by its device and inode
/// fields, or by the path it shows.
fn maps_use_file(maps: &[u8], keys: &[FileKey], names: &Names) -> bool {
    maps.split(|&b| b == b'\n').any(|line| {
        // start-end perms offset MAJOR:MINOR inode   path
        let mut fields = line.splitn(6, |&b| b == b' ');
        let (Some(_), Some(_), Some(_), Some(dev), Some(ino)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return false;
        };
        let path = fields.next().map(|p| p.trim_ascii_start()).unwrap_or(b"");
        if !path.is_empty() && names.is(path) {
            return true;
        }
        let parse = |b: &[u8], radix| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| u64::from_str_radix(s, radix).ok())
        };
        let mut dev = dev.splitn(2, |&b| b == b':');
        let (Some(major), Some(minor), Some(ino)) = (
            dev.next().and_then(|m| parse(m, 16)),
            dev.next().and_then(|m| parse(m, 16)),
            parse(ino, 10),
        ) else {
            return false;
        };
        ino != 0
            && keys.contains(&FileKey {
                dev: kernel_dev(major as u32, minor as u32),
                _pad: 0,
                ino,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &str) -> Names {
        Names::of(Path::new(path))
    }

    #[test]
    fn names_are_absolute_with_their_deleted_form() {
        let n = names("/tmp/x/dhpcd");
        assert!(n.is(b"/tmp/x/dhpcd"));
        assert!(n.is(b"/tmp/x/dhpcd (deleted)"));
        assert!(!n.is(b"/tmp/x/dhpcd2"));
        assert_eq!(n.name, b"dhpcd");
        assert_eq!(n.parent, b"x");
    }

    #[test]
    fn maps_match_by_device_and_inode_or_by_path() {
        let key = FileKey {
            dev: kernel_dev(0xfd, 1),
            _pad: 0,
            ino: 1234,
        };
        let n = names("/tmp/lib.so");
        let other = b"7f00-7f01 r-xp 00000000 fd:01 99 /usr/lib/libc.so.6\n";
        assert!(!maps_use_file(other, &[key], &n));
        let by_inode = b"7f00-7f01 r-xp 00000000 fd:01 1234 /somewhere/else.so\n";
        assert!(maps_use_file(by_inode, &[key], &n));
        let by_path = b"7f00-7f01 r-xp 00000000 00:00 0   /tmp/lib.so (deleted)\n";
        assert!(maps_use_file(by_path, &[], &n));
        // An anonymous mapping has inode 0 and never matches by identity.
        let anon = b"7f00-7f01 rw-p 00000000 00:00 0 \n";
        let zero = FileKey {
            dev: 0,
            _pad: 0,
            ino: 0,
        };
        assert!(!maps_use_file(anon, &[zero], &n));
        assert!(!maps_use_file(b"garbage\n\xff\xfe", &[key], &n));
    }

    #[test]
    fn kernel_records_match_by_identity_or_deleted_name() {
        let n = names("/tmp/x/dhpcd");
        let key = FileKey {
            dev: 5,
            _pad: 0,
            ino: 7,
        };
        let mut rec = FileUserRecord {
            tgid: 10,
            pid: 10,
            kind: FILE_USE_FD,
            fd: 4,
            dev: 5,
            nlink: 1,
            ino: 7,
            name: [0; 32],
            parent: [0; 32],
        };
        assert_eq!(
            kernel_use(&rec, &[key], &n),
            Some(FileUse::HoldsOpen { fd: 4 })
        );
        assert_eq!(kernel_use(&rec, &[], &n), None);
        rec.nlink = 0;
        rec.name[..5].copy_from_slice(b"dhpcd");
        rec.parent[..1].copy_from_slice(b"y");
        assert_eq!(kernel_use(&rec, &[], &n), None, "another directory");
        rec.parent[..1].copy_from_slice(b"x");
        rec.kind = FILE_USE_EXE;
        assert_eq!(kernel_use(&rec, &[], &n), Some(FileUse::Runs));
    }

    #[test]
    fn this_process_runs_its_own_executable() {
        let exe = std::env::current_exe().unwrap();
        let found = find(Err("not loaded in unit tests".into()), &exe);
        let me = std::process::id();
        assert!(
            found
                .users
                .get(&me)
                .is_some_and(|u| u.contains(&FileUse::Runs)),
            "{found:?}"
        );
        assert!(found
            .gaps
            .iter()
            .any(|g| g.contains("kernel view unavailable")));
    }
}
