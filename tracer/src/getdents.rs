//! Directory listings through the `getdents64` system call, made without
//! libc (a `/etc/ld.so.preload` library can hook `readdir` and even
//! `syscall`) and parsed as hostile bytes: an eBPF program with
//! `bpf_probe_write_user` or a rootkit's hook can rewrite the records the
//! kernel hands back, and no record length, name or count it writes may
//! make tracer panic, loop, or read past the buffer. A listing that breaks
//! the record format is kept up to the break and the break is reported:
//! it is evidence that something rewrites this system call's results.
use std::{
    ffi::OsStr,
    fmt, io,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use rustix::fs::{self as rfs, Mode, OFlags};

/// Bytes asked of the kernel per call.
const CHUNK: usize = 32 * 1024;
/// A listing that has not ended after this many bytes is reported as
/// endless: a hook that never returns 0 would otherwise keep us here.
const MAX_LISTING_BYTES: usize = 256 * 1024 * 1024;
/// `d_ino` (8), `d_off` (8), `d_reclen` (2), `d_type` (1).
const HEADER: usize = 19;

/// What was wrong with a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Byte offset of the bad record in the listing.
    pub offset: usize,
    pub what: CorruptionKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptionKind {
    /// A record's length is shorter than a record can be, or runs past the
    /// bytes the call returned.
    RecordLength { reclen: u16, left: usize },
    /// A record's name has no terminating NUL inside the record.
    UnterminatedName { reclen: u16 },
    /// The kernel said it returned more bytes than were asked for.
    Overlong { returned: usize, asked: usize },
    /// The listing never ended.
    Endless { bytes: usize },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match &self.what {
            CorruptionKind::RecordLength { reclen, left } => write!(
                f,
                "record at byte {at} claims d_reclen {reclen} with {left} bytes left \
                 (a record is at least {} bytes and must fit)",
                HEADER + 1
            ),
            CorruptionKind::UnterminatedName { reclen } => write!(
                f,
                "record at byte {at} (d_reclen {reclen}) has a name with no NUL inside it"
            ),
            CorruptionKind::Overlong { returned, asked } => write!(
                f,
                "getdents64 returned {returned} bytes for a {asked}-byte buffer"
            ),
            CorruptionKind::Endless { bytes } => {
                write!(f, "the listing had not ended after {bytes} bytes")
            }
        }
    }
}

/// A directory's names (bytes, without `.` and `..`), and the corruption
/// that ended the listing early, if any.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub names: Vec<Vec<u8>>,
    pub corrupt: Option<Corruption>,
}

/// Lists a directory. An I/O error (the directory cannot be opened or
/// read) is an error; a malformed listing is a [`Listing`] whose `corrupt`
/// says where the records stopped making sense.
pub fn list(path: impl AsRef<Path>) -> io::Result<Listing> {
    let fd = rfs::open(
        path.as_ref(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut listing = Listing::default();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0usize;
    loop {
        let n = getdents64(fd.as_raw_fd(), &mut buf)?;
        if n == 0 {
            return Ok(listing);
        }
        if n > buf.len() {
            listing.corrupt = Some(Corruption {
                offset: total,
                what: CorruptionKind::Overlong {
                    returned: n,
                    asked: buf.len(),
                },
            });
            return Ok(listing);
        }
        if let Err(mut bad) = parse(&buf[..n], &mut listing.names) {
            bad.offset += total;
            listing.corrupt = Some(bad);
            return Ok(listing);
        }
        total += n;
        if total >= MAX_LISTING_BYTES {
            listing.corrupt = Some(Corruption {
                offset: total,
                what: CorruptionKind::Endless { bytes: total },
            });
            return Ok(listing);
        }
    }
}

/// The paths of a directory's entries (empty when it cannot be read; a
/// corrupt listing gives the entries before the corruption).
pub fn child_paths(dir: &Path) -> Vec<PathBuf> {
    list(dir)
        .map(|l| {
            l.names
                .iter()
                .map(|n| dir.join(OsStr::from_bytes(n)))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses the records of one `getdents64` result into `names`; stops at
/// the first record that breaks the format (the names before it are kept).
pub fn parse(buf: &[u8], names: &mut Vec<Vec<u8>>) -> Result<(), Corruption> {
    let mut at = 0;
    while at < buf.len() {
        let left = buf.len() - at;
        let reclen = match buf.get(at + 16..at + 18) {
            Some(b) => u16::from_ne_bytes([b[0], b[1]]),
            None => 0,
        };
        let len = usize::from(reclen);
        if len <= HEADER || len > left {
            return Err(Corruption {
                offset: at,
                what: CorruptionKind::RecordLength { reclen, left },
            });
        }
        let name_field = &buf[at + HEADER..at + len];
        let Some(end) = name_field.iter().position(|&b| b == 0) else {
            return Err(Corruption {
                offset: at,
                what: CorruptionKind::UnterminatedName { reclen },
            });
        };
        let name = &name_field[..end];
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
        at += len;
    }
    Ok(())
}

/// The raw system call: no libc wrapper a preloaded library could replace.
fn getdents64(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    let ret: isize;
    // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`, which
    // we own mutably for the call; it touches no other memory of ours.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        const SYS_GETDENTS64: isize = 217;
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_GETDENTS64 => ret,
            in("rdi") fd as isize,
            in("rsi") buf.as_mut_ptr(),
            in("rdx") buf.len(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    unsafe {
        const SYS_GETDENTS64: isize = 61;
        std::arch::asm!(
            "svc 0",
            in("x8") SYS_GETDENTS64,
            inlateout("x0") fd as isize => ret,
            in("x1") buf.as_mut_ptr(),
            in("x2") buf.len(),
            options(nostack),
        );
    }
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &[u8], reclen: Option<u16>) -> Vec<u8> {
        let natural = (HEADER + name.len() + 1).div_ceil(8) * 8;
        let mut r = vec![0u8; natural];
        r[0..8].copy_from_slice(&7u64.to_ne_bytes());
        let len = reclen.unwrap_or(natural as u16);
        r[16..18].copy_from_slice(&len.to_ne_bytes());
        r[18] = 4;
        r[HEADER..HEADER + name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn well_formed_records_are_listed_without_dot_entries() {
        let mut buf = record(b".", None);
        buf.extend(record(b"..", None));
        buf.extend(record(b"1234", None));
        buf.extend(record(b"\xff\x1b[2J", None));
        let mut names = Vec::new();
        parse(&buf, &mut names).unwrap();
        assert_eq!(names, vec![b"1234".to_vec(), b"\xff\x1b[2J".to_vec()]);
    }

    #[test]
    fn a_record_longer_than_what_is_left_stops_the_listing_there() {
        let mut buf = record(b"1", None);
        let second = buf.len();
        buf.extend(record(b"2", Some(4000)));
        buf.extend(record(b"3", None));
        let mut names = Vec::new();
        let bad = parse(&buf, &mut names).unwrap_err();
        assert_eq!(names, vec![b"1".to_vec()]);
        assert_eq!(bad.offset, second);
        assert!(matches!(
            bad.what,
            CorruptionKind::RecordLength { reclen: 4000, .. }
        ));
        assert!(bad.to_string().contains("d_reclen 4000"), "{bad}");
    }

    #[test]
    fn zero_and_tiny_record_lengths_do_not_loop() {
        for reclen in [0u16, 1, 18, 19] {
            let buf = record(b"77", Some(reclen));
            let mut names = Vec::new();
            assert!(parse(&buf, &mut names).is_err(), "reclen {reclen}");
            assert!(names.is_empty());
        }
    }

    #[test]
    fn a_name_without_nul_is_corrupt_not_read_past() {
        let mut buf = record(b"abcd", None);
        let len = buf.len();
        for b in &mut buf[HEADER..len] {
            *b = b'x';
        }
        let mut names = Vec::new();
        let bad = parse(&buf, &mut names).unwrap_err();
        assert!(matches!(bad.what, CorruptionKind::UnterminatedName { .. }));
    }

    #[test]
    fn a_truncated_header_is_corrupt() {
        let buf = record(b"5", None);
        let mut names = Vec::new();
        assert!(parse(&buf[..10], &mut names).is_err());
    }

    #[test]
    fn proc_lists_this_process() {
        let listing = list("/proc").unwrap();
        assert!(listing.corrupt.is_none());
        let me = std::process::id().to_string().into_bytes();
        assert!(listing.names.contains(&me));
    }
}
