//! Raw /proc access through direct system calls (rustix's linux_raw
//! backend), never through libc: an `/etc/ld.so.preload` library hooks libc's
//! `readdir`/`open`, and tracer must not see /proc through the thing it hunts.
use std::io;

use procfs_core::{process::Stat, FromRead};
use rustix::fs::{self as rfs, Mode, OFlags, CWD};

use crate::model::Process;

/// Reads a whole file with open/read system calls.
pub fn read_file(path: &str) -> io::Result<Vec<u8>> {
    let fd = rfs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut out = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        let n = rustix::io::read(&fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads a symlink's target.
pub fn read_link(path: &str) -> io::Result<String> {
    let target = rfs::readlinkat(CWD, path, Vec::new())?;
    Ok(target.to_string_lossy().into_owned())
}

/// Lists the numeric entries of a directory with `getdents64`.
pub fn list_numeric_dir(path: &str) -> io::Result<Vec<u32>> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for entry in rfs::Dir::new(fd)? {
        let entry = entry?;
        if let Some(n) = std::str::from_utf8(entry.file_name().to_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    Ok(out)
}

/// The names in a directory, as bytes (they are the host's), without `.`
/// and `..`.
pub fn list_dir_names(path: &str) -> io::Result<Vec<Vec<u8>>> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for entry in rfs::Dir::new(fd)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            out.push(name);
        }
    }
    Ok(out)
}

/// The PIDs (thread-group ids) /proc lists.
pub fn list_pids() -> io::Result<Vec<u32>> {
    list_numeric_dir("/proc")
}

/// The thread ids of one process.
pub fn list_threads(pid: u32) -> io::Result<Vec<u32>> {
    list_numeric_dir(&format!("/proc/{pid}/task"))
}

/// Parses `/proc/PID/stat`.
pub fn read_stat(pid: u32) -> io::Result<Stat> {
    let bytes = read_file(&format!("/proc/{pid}/stat"))?;
    Stat::from_read(&bytes[..]).map_err(|e| io::Error::other(e.to_string()))
}

/// The real uid from the `Uid:` line of `/proc/PID/status`.
pub fn read_uid(pid: u32) -> io::Result<u32> {
    let bytes = read_file(&format!("/proc/{pid}/status"))?;
    parse_status_uid(&bytes).ok_or_else(|| io::Error::other("no Uid line"))
}

fn parse_status_uid(status: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Splits a NUL-separated argument area into arguments.
pub fn split_nul_args(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Everything /proc says about one process, or `None` if it is gone (or
/// unreadable). Fields that a process may legitimately deny (exe of a
/// kernel thread) are left empty.
pub fn read_process(pid: u32) -> Option<Process> {
    let stat = read_stat(pid).ok()?;
    Some(process_from_stat(
        pid,
        stat,
        read_uid(pid).unwrap_or(u32::MAX),
    ))
}

/// A process record from its already-read stat and uid, with its command
/// line and executable read now.
pub fn process_from_stat(pid: u32, stat: Stat, uid: u32) -> Process {
    Process {
        pid,
        ppid: stat.ppid.max(0) as u32,
        uid,
        exe: read_exe(pid),
        cmdline: read_cmdline(pid),
        start_ticks: stat.starttime,
        kernel_thread: stat.flags & tracer_common::PF_KTHREAD != 0,
        comm: stat.comm,
        exited_at_ns: None,
    }
}

/// `/proc/PID/cmdline` as arguments; empty when unreadable (kernel threads,
/// zombies).
pub fn read_cmdline(pid: u32) -> Vec<String> {
    read_file(&format!("/proc/{pid}/cmdline"))
        .map(|b| split_nul_args(&b))
        .unwrap_or_default()
}

/// The target of `/proc/PID/exe`, if readable.
pub fn read_exe(pid: u32) -> Option<String> {
    read_link(&format!("/proc/{pid}/exe")).ok()
}

/// Reads `/proc/PID/stat` start time only: the cheap re-check of identity.
pub fn start_ticks(pid: u32) -> Option<u64> {
    read_stat(pid).ok().map(|s| s.starttime)
}

/// The kernel's clock ticks since boot (CLOCK_BOOTTIME), for comparing with
/// start times.
pub fn boottime_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_split_on_nul_and_drop_the_trailing_one() {
        assert_eq!(
            split_nul_args(b"sh\0-c\0echo hi\0"),
            ["sh", "-c", "echo hi"]
        );
        assert!(split_nul_args(b"").is_empty());
        assert_eq!(split_nul_args(b"a\0\0b\0"), ["a", "", "b"]);
    }

    #[test]
    fn status_uid_is_the_real_uid() {
        let status = b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_uid(status), Some(1000));
        assert_eq!(parse_status_uid(b"Name:\tx\n"), None);
    }

    #[test]
    fn own_process_reads_back_through_raw_syscalls() {
        let me = std::process::id();
        assert!(list_pids().unwrap().contains(&me));
        let p = read_process(me).expect("own /proc entry");
        assert_eq!(p.pid, me);
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert!(p.exe.is_some());
        assert_eq!(start_ticks(me), Some(p.start_ticks));
    }
}
