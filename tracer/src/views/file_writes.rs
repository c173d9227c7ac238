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
//! when it is outside it). A file moved into a place (`mv` within one
//! file system writes nothing there) or a symbolic link created in it
//! (`systemctl enable`) comes from a second group that reports directory
//! entries (`FAN_MOVED_TO`, `FAN_CREATE` with `FAN_REPORT_DFID_NAME`) on
//! the places' directories themselves (inode marks, so any mount of them).
//! Both groups sit behind one epoll descriptor. fanotify needs
//! CAP_SYS_ADMIN.
use crate::{kernel::HookChoice, respond::persistence::Place};
use std::{
    collections::{HashMap, HashSet},
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
    let paths = places
        .iter()
        .map(|p| p.path.as_path())
        .filter(|p| !kernel_fs(p));
    let mut dirs: Vec<&Path> = places.iter().map(|p| p.directory()).collect();
    dirs.sort();
    dirs.dedup();
    match FileWrites::start(paths, dirs.into_iter().filter(|d| !kernel_fs(d))) {
        Ok(s) => {
            let marked: Vec<String> = s.marked.iter().map(|p| p.display().to_string()).collect();
            let unmarked = if s.unmarked.is_empty() {
                String::new()
            } else {
                format!("; not watched: {}", s.unmarked.join("; "))
            };
            let entries = match &s.entries {
                Ok(n) => format!("; files moved or linked into them: FAN_MOVED_TO, FAN_CREATE on {n} directories"),
                Err(e) => format!("; files moved into them NOT seen (directory-entry events refused: {e})"),
            };
            let hook = HookChoice {
                event: "write",
                hook: "fanotify FAN_CLOSE_WRITE".into(),
                reason: format!(
                    "filesystem marks on {}: writes to {} persistence places (ld.so.preload, cron, systemd, shell profiles...), in any mount namespace{entries}{unmarked}",
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

/// How a file came to be at its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Closed after writing.
    Written,
    /// Moved (renamed) into its directory.
    MovedIn,
    /// Created there as a symbolic link.
    Linked,
}

/// One file written, moved in or linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWrite {
    /// The process that did it (0: not visible in tracer's PID namespace).
    pub pid: u32,
    /// The file: as the writer's mount namespace names it (`Written`), or
    /// under the watched directory (`MovedIn`, `Linked`).
    pub path: PathBuf,
    pub kind: WriteKind,
}

/// The fanotify groups, behind one epoll descriptor.
pub struct FileWrites {
    epoll: OwnedFd,
    fd: OwnedFd,
    /// The directory-entry group and the directories it watches, by their
    /// file handle (`handle_type` then `f_handle`).
    entries_fd: Option<OwnedFd>,
    dirs: HashMap<Vec<u8>, PathBuf>,
    /// The filesystems marked (a path on each), for the start line.
    pub marked: Vec<PathBuf>,
    /// Filesystems that could not be marked, and why.
    pub unmarked: Vec<String>,
    /// Directories watched for entries moved or linked in, or why none.
    pub entries: Result<usize, String>,
}

impl AsRawFd for FileWrites {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

fn fanotify_init(flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the descriptor is owned below.
    let raw = unsafe {
        libc::fanotify_init(
            flags | libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
            (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC | libc::O_NOATIME) as u32,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn fanotify_mark(fd: &OwnedFd, flags: u32, mask: u64, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid C string for the duration of the call.
    let r = unsafe {
        libc::fanotify_mark(
            fd.as_raw_fd(),
            libc::FAN_MARK_ADD | flags,
            mask,
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

/// `handle_type` then `f_handle` of a directory, as fanotify reports it.
fn handle_key(path: &Path) -> io::Result<Vec<u8>> {
    const MAX_HANDLE: usize = 128;
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        f_handle: [u8; MAX_HANDLE],
    }
    let mut h = Handle {
        bytes: MAX_HANDLE as u32,
        kind: 0,
        f_handle: [0; MAX_HANDLE],
    };
    let mut mount_id: libc::c_int = 0;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: the handle buffer is as large as `bytes` says; all pointers
    // live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            &mut h as *mut Handle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut key = h.kind.to_ne_bytes().to_vec();
    key.extend_from_slice(&h.f_handle[..(h.bytes as usize).min(MAX_HANDLE)]);
    Ok(key)
}

impl FileWrites {
    /// Marks the filesystem of each path (of its nearest existing
    /// ancestor: a place not created yet is still covered), once per
    /// filesystem. Fails when fanotify is refused or nothing could be marked.
    /// Directories among `dirs` that exist are watched for entries moved
    /// or linked in (without them, writes are still seen).
    pub fn start<'a>(
        paths: impl IntoIterator<Item = &'a Path>,
        dirs: impl IntoIterator<Item = &'a Path>,
    ) -> io::Result<Self> {
        use rustix::event::epoll;
        let fd = fanotify_init(libc::FAN_UNLIMITED_QUEUE)?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            &fd,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN,
        )?;
        let mut group = FileWrites {
            epoll,
            fd,
            entries_fd: None,
            dirs: HashMap::new(),
            marked: Vec::new(),
            unmarked: Vec::new(),
            entries: Err("not started".into()),
        };
        let mut devices = HashSet::new();
        for path in paths {
            let Some((existing, dev)) = nearest_existing(path) else {
                continue;
            };
            if !devices.insert(dev) {
                continue;
            }
            match fanotify_mark(
                &group.fd,
                libc::FAN_MARK_FILESYSTEM,
                libc::FAN_CLOSE_WRITE,
                &existing,
            ) {
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
        group.entries = group.watch_entries(dirs).map_err(|e| e.to_string());
        Ok(group)
    }

    /// The directory-entry group, on each directory that exists.
    fn watch_entries<'a>(&mut self, dirs: impl IntoIterator<Item = &'a Path>) -> io::Result<usize> {
        use rustix::event::epoll;
        let fd = fanotify_init(libc::FAN_UNLIMITED_QUEUE | libc::FAN_REPORT_DFID_NAME)?;
        for dir in dirs {
            if !dir.is_dir() {
                continue;
            }
            let marked = fanotify_mark(&fd, 0, libc::FAN_MOVED_TO | libc::FAN_CREATE, dir)
                .and_then(|_| handle_key(dir));
            if let Ok(key) = marked {
                self.dirs.insert(key, dir.to_path_buf());
            }
        }
        epoll::add(
            &self.epoll,
            &fd,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN,
        )?;
        self.entries_fd = Some(fd);
        Ok(self.dirs.len())
    }

    /// Events queued now, a bounded batch (never blocks): the writes, how
    /// many times the kernel said its queue overflowed, and whether both
    /// queues were emptied. `own_pid`'s writes are left out.
    pub fn read(&self, own_pid: u32) -> io::Result<(Vec<FileWrite>, u64, bool)> {
        const READS_PER_BATCH: usize = 8;
        let mut writes = Vec::new();
        let mut overflows = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut reads = 0;
        while reads < READS_PER_BATCH {
            let Some(n) = read_some(&self.fd, &mut buf)? else {
                break;
            };
            reads += 1;
            for event in parse_events(&buf[..n]) {
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
                        kind: WriteKind::Written,
                    });
                }
            }
        }
        let mut emptied = reads < READS_PER_BATCH;
        if let Some(fd) = &self.entries_fd {
            let mut entry_reads = 0;
            while entry_reads < READS_PER_BATCH {
                let Some(n) = read_some(fd, &mut buf)? else {
                    break;
                };
                entry_reads += 1;
                for event in parse_events(&buf[..n]) {
                    if event.mask & libc::FAN_Q_OVERFLOW != 0 {
                        overflows += 1;
                        continue;
                    }
                    let Ok(pid) = u32::try_from(event.pid) else {
                        continue;
                    };
                    let Some((key, name)) = event.dir_entry.as_ref() else {
                        continue;
                    };
                    let Some(dir) = self.dirs.get(key) else {
                        continue;
                    };
                    if pid == own_pid {
                        continue;
                    }
                    let path = dir.join(std::ffi::OsStr::from_bytes(name));
                    let kind = if event.mask & libc::FAN_MOVED_TO != 0 {
                        WriteKind::MovedIn
                    } else if path.is_symlink() {
                        WriteKind::Linked
                    } else {
                        continue; // a new regular file: its close after writing is reported
                    };
                    writes.push(FileWrite { pid, path, kind });
                }
            }
            emptied &= entry_reads < READS_PER_BATCH;
        }
        Ok((writes, overflows, emptied))
    }
}

/// One non-blocking read of a fanotify descriptor: `None` once it is empty.
fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: reads into a buffer we own, of the length given.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return Ok(Some(n as usize));
        }
        if n == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
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
    /// With `FAN_REPORT_DFID_NAME`: the directory's handle key and the
    /// entry's name.
    dir_entry: Option<(Vec<u8>, Vec<u8>)>,
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
        let metadata_len = u16::from_ne_bytes([buf[6], buf[7]]) as usize;
        if version != libc::FANOTIFY_METADATA_VERSION
            || event_len < HEADER
            || event_len > buf.len()
            || metadata_len < HEADER
            || metadata_len > event_len
        {
            break;
        }
        out.push(RawEvent {
            mask: u64::from_ne_bytes(buf[8..16].try_into().unwrap()),
            fd: u32_at(16) as i32,
            pid: u32_at(20) as i32,
            dir_entry: dir_entry(&buf[metadata_len..event_len]),
        });
        buf = &buf[event_len..];
    }
    out
}

/// The first `FAN_EVENT_INFO_TYPE_DFID_NAME` record among an event's info
/// records: header (type, pad, length), fsid (8 bytes), `file_handle`
/// (`handle_bytes`, `handle_type`, `f_handle`), then the name up to NUL.
fn dir_entry(mut info: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    while info.len() >= 4 {
        let len = u16::from_ne_bytes([info[2], info[3]]) as usize;
        if len < 4 || len > info.len() {
            return None;
        }
        let record = &info[..len];
        if record[0] == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
            let handle = record.get(12..)?;
            let bytes = u32::from_ne_bytes(handle.get(..4)?.try_into().ok()?) as usize;
            let key_end = 8usize.checked_add(bytes)?;
            let mut key = handle.get(4..8)?.to_vec();
            key.extend_from_slice(handle.get(8..key_end)?);
            let name = handle.get(key_end..)?;
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            return Some((key, name.to_vec()));
        }
        info = &info[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        record_with(mask, fd, pid, &[])
    }

    fn record_with(mask: u64, fd: i32, pid: i32, info: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&(24 + info.len() as u32).to_ne_bytes());
        r.push(libc::FANOTIFY_METADATA_VERSION);
        r.push(0);
        r.extend_from_slice(&24u16.to_ne_bytes());
        r.extend_from_slice(&mask.to_ne_bytes());
        r.extend_from_slice(&fd.to_ne_bytes());
        r.extend_from_slice(&pid.to_ne_bytes());
        r.extend_from_slice(info);
        r
    }

    /// A DFID_NAME info record: handle type 1, handle bytes `h`, `name`.
    fn dfid_name(h: &[u8], name: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; 8]; // fsid
        body.extend_from_slice(&(h.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(h);
        body.extend_from_slice(name);
        body.push(0);
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let mut r = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0];
        r.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        r.extend(body);
        r
    }

    #[test]
    fn directory_entry_events_carry_the_directory_handle_and_the_name() {
        let info = dfid_name(&[9, 8, 7, 6, 5, 4, 3, 2], b"job");
        let buf = record_with(libc::FAN_MOVED_TO, -1, 4100, &info);
        let events = parse_events(&buf);
        let (key, name) = events[0].dir_entry.clone().unwrap();
        assert_eq!(key, [1, 0, 0, 0, 9, 8, 7, 6, 5, 4, 3, 2]);
        assert_eq!(name, b"job");
        // A record claiming more handle bytes than it has is no entry.
        let mut cut = dfid_name(&[1, 2], b"x");
        cut[12] = 200;
        assert!(dir_entry(&cut).is_none());
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
                    pid: 4100,
                    dir_entry: None,
                },
                RawEvent {
                    mask: libc::FAN_Q_OVERFLOW,
                    fd: -1,
                    pid: 0,
                    dir_entry: None,
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
