//! Files written on the host, with the process that wrote them: fanotify
//! `FAN_CLOSE_WRITE` events on each filesystem that holds a watched place.
//!
//! A filesystem mark (rather than a mount or inode mark) sees a write
//! through any mount of that filesystem, in any mount namespace, a file
//! bind-mounted over `/etc/ld.so.preload` in a private namespace included.
//! Each event carries an open descriptor of the file; its link under
//! `/proc/self/fd` names the file as the writer's mount namespace sees it
//! (the kernel's `d_path` walks that namespace's mounts), which is the
//! name matched against the places. When that namespace is gone before the
//! event is read, the name is relative to the file's own mount.
//!
//! A write is seen when the writer closes the file; the event's PID is the
//! process that closed it (the thread group, in tracer's PID namespace; 0
//! when it is outside it). fanotify needs CAP_SYS_ADMIN.
use crate::{kernel::HookChoice, respond::persistence::Place};
use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

/// Starts watching writes to `places`, with the hook line that says how
/// (the filesystems marked), or that they are not watched and why.
pub fn watch_places(places: &[Place]) -> (Option<FileWrites>, HookChoice) {
    // Accounts whose home is /dev (`sys`) would mark devtmpfs, where every
    // `> /dev/null` is a write: kernel file systems hold no persistence.
    let kernel_fs = |p: &Path| ["/dev", "/proc", "/sys"].iter().any(|k| p.starts_with(k));
    let paths = places.iter().map(|p| p.path.as_path()).filter(|p| !kernel_fs(p));
    match FileWrites::start(paths) {
        Ok(s) => {
            let marked: Vec<String> = s.marked.iter().map(|p| p.display().to_string()).collect();
            let unmarked = if s.unmarked.is_empty() {
                String::new()
            } else {
                format!("; not watched: {}", s.unmarked.join("; "))
            };
            let hook = HookChoice {
                event: "write",
                hook: "fanotify FAN_CLOSE_WRITE".into(),
                reason: format!(
                    "filesystem marks on {}: writes to {} persistence places (ld.so.preload, cron, systemd, shell profiles...), in any mount namespace{unmarked}",
                    marked.join(", "),
                    places.len()
                ),
            };
            (Some(s), hook)
        }
        Err(e) => (
            None,
            HookChoice {
                event: "write",
                hook: "none".into(),
                reason: format!(
                    "fanotify refused ({e}; it needs CAP_SYS_ADMIN): writes to persistence places are NOT watched"
                ),
            },
        ),
    }
}

/// One file closed after writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWrite {
    /// The process that closed it (0: not visible in tracer's PID namespace).
    pub pid: u32,
    /// The file as the writer's mount namespace names it.
    pub path: PathBuf,
}

/// The fanotify group.
pub struct FileWrites {
    fd: OwnedFd,
    /// The filesystems marked (a path on each), for the start line.
    pub marked: Vec<PathBuf>,
    /// Filesystems that could not be marked, and why.
    pub unmarked: Vec<String>,
}

impl AsRawFd for FileWrites {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl FileWrites {
    /// Marks the filesystem of each path (of its nearest existing
    /// ancestor: a place not created yet is still covered), once per
    /// filesystem. Fails when fanotify is refused or nothing could be marked.
    pub fn start<'a>(paths: impl IntoIterator<Item = &'a Path>) -> io::Result<Self> {
        // SAFETY: plain system call; the descriptor is owned below.
        let raw = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_CLOEXEC
                    | libc::FAN_NONBLOCK
                    | libc::FAN_UNLIMITED_QUEUE,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC | libc::O_NOATIME) as u32,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut group = FileWrites {
            fd,
            marked: Vec::new(),
            unmarked: Vec::new(),
        };
        let mut devices = HashSet::new();
        for path in paths {
            let Some((existing, dev)) = nearest_existing(path) else {
                continue;
            };
            if !devices.insert(dev) {
                continue;
            }
            match group.mark_filesystem(&existing) {
                Ok(()) => group.marked.push(existing),
                Err(e) => group.unmarked.push(format!("{}: {e}", existing.display())),
            }
        }
        if group.marked.is_empty() {
            return Err(io::Error::other(format!(
                "no filesystem could be marked ({})",
                group.unmarked.join("; ")
            )));
        }
        Ok(group)
    }

    fn mark_filesystem(&self, path: &Path) -> io::Result<()> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: `c` is a valid C string for the duration of the call.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_CLOSE_WRITE,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Every event queued now (never blocks), and how many times the
    /// kernel said its queue overflowed. `own_pid`'s writes are left out.
    pub fn read(&self, own_pid: u32) -> io::Result<(Vec<FileWrite>, u64)> {
        let mut writes = Vec::new();
        let mut overflows = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reads into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            for event in parse_events(&buf[..n as usize]) {
                // Own the descriptor first, so it is closed whatever follows.
                // SAFETY: the kernel opened it for us with this event.
                let file = (event.fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(event.fd) });
                if event.mask & libc::FAN_Q_OVERFLOW != 0 {
                    overflows += 1;
                    continue;
                }
                let (Some(file), Ok(pid)) = (file, u32::try_from(event.pid)) else {
                    continue;
                };
                if pid == own_pid {
                    continue;
                }
                let link = format!("/proc/self/fd/{}", file.as_raw_fd());
                if let Ok(target) = rustix::fs::readlink(link.as_str(), Vec::new()) {
                    writes.push(FileWrite {
                        pid,
                        path: PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes())),
                    });
                }
            }
        }
        Ok((writes, overflows))
    }
}

/// The nearest ancestor of `path` that exists, and its device.
fn nearest_existing(path: &Path) -> Option<(PathBuf, u64)> {
    path.ancestors().find_map(|p| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (p.to_path_buf(), m.dev()))
    })
}

/// The fields of one `fanotify_event_metadata` tracer uses.
#[derive(Debug, PartialEq, Eq)]
struct RawEvent {
    mask: u64,
    fd: i32,
    pid: i32,
}

/// Splits a read of the fanotify descriptor into events; a record of
/// another metadata version, or cut short, ends the parse.
fn parse_events(mut buf: &[u8]) -> Vec<RawEvent> {
    const HEADER: usize = 24; // event_len, vers, reserved, metadata_len, mask, fd, pid
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        let event_len = u32_at(0) as usize;
        let version = buf[4];
        if version != libc::FANOTIFY_METADATA_VERSION || event_len < HEADER || event_len > buf.len()
        {
            break;
        }
        out.push(RawEvent {
            mask: u64::from_ne_bytes(buf[8..16].try_into().unwrap()),
            fd: u32_at(16) as i32,
            pid: u32_at(20) as i32,
        });
        buf = &buf[event_len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&24u32.to_ne_bytes());
        r.push(libc::FANOTIFY_METADATA_VERSION);
        r.push(0);
        r.extend_from_slice(&24u16.to_ne_bytes());
        r.extend_from_slice(&mask.to_ne_bytes());
        r.extend_from_slice(&fd.to_ne_bytes());
        r.extend_from_slice(&pid.to_ne_bytes());
        r
    }

    #[test]
    fn events_are_split_by_their_length_and_a_cut_record_ends_the_parse() {
        let mut buf = record(libc::FAN_CLOSE_WRITE, 7, 4100);
        buf.extend(record(libc::FAN_Q_OVERFLOW, -1, 0));
        buf.extend(&record(libc::FAN_CLOSE_WRITE, 8, 4101)[..10]);
        assert_eq!(
            parse_events(&buf),
            vec![
                RawEvent {
                    mask: libc::FAN_CLOSE_WRITE,
                    fd: 7,
                    pid: 4100
                },
                RawEvent {
                    mask: libc::FAN_Q_OVERFLOW,
                    fd: -1,
                    pid: 0
                },
            ]
        );
        let mut other_version = record(libc::FAN_CLOSE_WRITE, 7, 1);
        other_version[4] = 99;
        assert!(parse_events(&other_version).is_empty());
    }

    #[test]
    fn a_place_not_created_yet_marks_its_nearest_existing_ancestor() {
        let dir = std::env::temp_dir();
        let (found, _) = nearest_existing(&dir.join("no/such/place")).unwrap();
        assert_eq!(found, dir);
    }
}
