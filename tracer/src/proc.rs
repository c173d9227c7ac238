//! Raw /proc access through direct system calls (rustix's linux_raw
//! backend), never through libc: an `/etc/ld.so.preload` library hooks libc's
//! `readdir`/`open`, and tracer must not see /proc through the thing it hunts.
use std::{io, sync::OnceLock};

use rustix::fs::{self as rfs, Mode, OFlags, CWD};

use crate::model::{
    placement::{self, Namespaces},
    HostStr, Process, ThreadName,
};

/// Reads a whole file with open/read system calls.
pub fn read_file(path: &str) -> io::Result<Vec<u8>> {
    read_file_max(path, usize::MAX).map(|(bytes, _)| bytes)
}

/// Reads a file's first `max` bytes; true when there was more.
pub fn read_file_max(path: &str, max: usize) -> io::Result<(Vec<u8>, bool)> {
    read_capped(path, max, None)
}

/// Reads `/proc/PID/stat` or `/proc/PID/cmdline`, at most `max` bytes, and
/// whether it was cut. These two fill a read to the last byte they have (a
/// stat line is one seq_file record; cmdline is copied page after page
/// until the arguments end), so a short read is the end: one read per file
/// instead of a second that returns 0, for every process of a scan.
pub fn read_proc_record(path: &str, max: usize) -> io::Result<(Vec<u8>, bool)> {
    read_capped(path, max, Some(1))
}

/// Room longer than any line of a `/proc/net` table (a `tcp6` line is 150
/// bytes, a `packet` line 80).
const TABLE_LINE_MAX: usize = 1024;

/// Reads a `/proc/net` table (`tcp`, `udp6`, `packet`...). Its seq_file
/// fills a read line by line and stops short only before a line that does
/// not fit, or at the end: a read that leaves more room than any line needs
/// is the end. The read that would return 0 is skipped, and with it a walk
/// of the whole TCP established hash (262,144 buckets on this host) that
/// `tcp_seq_start` makes again to find nothing.
pub fn read_proc_table(path: &str) -> io::Result<Vec<u8>> {
    read_capped(path, usize::MAX, Some(TABLE_LINE_MAX)).map(|(bytes, _)| bytes)
}

/// The first `max` bytes of a file and whether there was more; with
/// `end_room`, a read that leaves that much of the buffer unfilled is the
/// end.
fn read_capped(path: &str, max: usize, end_room: Option<usize>) -> io::Result<(Vec<u8>, bool)> {
    let fd = rfs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut out = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        let n = rustix::io::read(&fd, &mut buf)?;
        if out.len() + n > max {
            out.extend_from_slice(&buf[..max - out.len()]);
            return Ok((out, true));
        }
        out.extend_from_slice(&buf[..n]);
        if n == 0 || end_room.is_some_and(|room| buf.len() - n >= room) {
            return Ok((out, false));
        }
    }
}

/// Reads a symlink's target, as bytes.
pub fn read_link(path: &str) -> io::Result<HostStr> {
    let target = rfs::readlinkat(CWD, path, Vec::new())?;
    Ok(HostStr::from_bytes(target.as_bytes()))
}

/// Lists the numeric entries of a directory with `getdents64`.
pub fn list_numeric_dir(path: &str) -> io::Result<Vec<u32>> {
    Ok(numeric(&list_dir_names(path)?))
}

fn numeric(names: &[Vec<u8>]) -> Vec<u32> {
    names
        .iter()
        .filter_map(|name| std::str::from_utf8(name).ok()?.parse().ok())
        .collect()
}

/// The names in a directory, as bytes (they are the host's), without `.`
/// and `..`. A corrupt listing gives the names before the corruption; the
/// view that must report it uses [`list_pids_checked`].
pub fn list_dir_names(path: &str) -> io::Result<Vec<Vec<u8>>> {
    Ok(crate::getdents::list(path)?.names)
}

/// The PIDs (thread-group ids) /proc lists.
pub fn list_pids() -> io::Result<Vec<u32>> {
    list_numeric_dir("/proc")
}

/// The PIDs /proc lists, and what was corrupt in the listing, if anything.
pub fn list_pids_checked() -> io::Result<(Vec<u32>, Option<crate::getdents::Corruption>)> {
    let listing = crate::getdents::list("/proc")?;
    Ok((numeric(&listing.names), listing.corrupt))
}

/// The thread ids of one process.
pub fn list_threads(pid: u32) -> io::Result<Vec<u32>> {
    list_numeric_dir(&format!("/proc/{pid}/task"))
}

/// The fields of `/proc/PID/stat` tracer uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The task name, as the bytes it is.
    pub comm: HostStr,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub flags: u32,
    pub num_threads: i64,
    /// Start time in clock ticks since boot.
    pub starttime: u64,
}

/// Parses `/proc/PID/stat`.
pub fn read_stat(pid: u32) -> io::Result<Stat> {
    let (bytes, _) = read_proc_record(&format!("/proc/{pid}/stat"), usize::MAX)?;
    parse_stat(&bytes)
}

/// `/proc/PID/stat` text: a PID, then a name in parentheses that may hold
/// anything (`)`, spaces and newlines included: the last `)` ends it),
/// then numbers. Parsed here, as bytes, rather than by a library: the
/// name is the attacker's, and a parser that slices around it unchecked
/// can be made to panic (the fuzz test found procfs-core's doing so).
pub fn parse_stat(bytes: &[u8]) -> io::Result<Stat> {
    let bad = || io::Error::other("malformed stat line");
    let open = bytes.iter().position(|&b| b == b'(').ok_or_else(bad)?;
    let close = bytes.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    if close < open {
        return Err(bad());
    }
    let number = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .map(str::trim)
            .map(str::to_string)
    };
    let pid = number(&bytes[..open])
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let rest =
        std::str::from_utf8(bytes.get(close + 1..).unwrap_or_default()).map_err(|_| bad())?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Field n of proc(5) is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).copied().ok_or_else(bad);
    fn parse<T: std::str::FromStr>(s: &str) -> io::Result<T> {
        s.parse()
            .map_err(|_| io::Error::other("malformed stat line"))
    }
    Ok(Stat {
        pid,
        comm: HostStr::from_bytes(&bytes[open + 1..close]),
        state: field(3)?.chars().next().ok_or_else(bad)?,
        ppid: parse(field(4)?)?,
        pgrp: parse(field(5)?)?,
        session: parse(field(6)?)?,
        flags: parse(field(9)?)?,
        num_threads: parse(field(20)?)?,
        starttime: parse(field(22)?)?,
    })
}

/// The real uid from the `Uid:` line of `/proc/PID/status`.
pub fn read_uid(pid: u32) -> io::Result<u32> {
    let bytes = read_file(&format!("/proc/{pid}/status"))?;
    parse_status_uid(&bytes).ok_or_else(|| io::Error::other("no Uid line"))
}

/// The `Uid:` line's first number.
pub fn parse_status_uid(status: &[u8]) -> Option<u32> {
    status_numbers(status, b"Uid:")?.next()?.parse().ok()
}

/// The PID a process has in its own PID namespace: the last number of the
/// `NSpid:` line.
pub fn parse_status_ns_pid(status: &[u8]) -> Option<u32> {
    status_numbers(status, b"NSpid:")?.last()?.parse().ok()
}

/// The words after `key` on its line of a status file. Read as bytes: the
/// `Name:` line holds the task name, which need not be UTF-8.
fn status_numbers<'s>(status: &'s [u8], key: &[u8]) -> Option<std::str::SplitWhitespace<'s>> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(key))?;
    Some(std::str::from_utf8(line).ok()?.split_whitespace())
}

/// Splits a NUL-separated argument area into arguments.
pub fn split_nul_args(bytes: &[u8]) -> Vec<HostStr> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|&b| b == 0).map(HostStr::from_bytes).collect()
}

/// Everything /proc says about one process, or `None` if it is gone (or
/// unreadable). Fields that a process may legitimately deny (exe of a
/// kernel thread) are left empty.
pub fn read_process(pid: u32) -> Option<Process> {
    let stat = read_stat(pid).ok()?;
    let uid = process_uid(pid)?;
    Some(process_from_stat(pid, stat, uid, None))
}

/// The status file's Uid line, else the owner of /proc/PID (the process's
/// effective uid): never a made-up uid.
fn process_uid(pid: u32) -> Option<u32> {
    read_uid(pid).ok().or_else(|| {
        rfs::stat(format!("/proc/{pid}").as_str())
            .ok()
            .map(|st| st.st_uid)
    })
}

/// What `/proc/PID/stat` and `status` say of one process (parents, group,
/// session, start, uid), its executable and command line left for later
/// ([`read_details`]), or `None` if it is gone: two files a process, for
/// a table of the whole host.
pub fn read_process_brief(pid: u32) -> Option<Process> {
    let stat = read_stat(pid).ok()?;
    let uid = process_uid(pid)?;
    Some(Process {
        pid,
        ppid: stat.ppid.max(0) as u32,
        pgid: stat.pgrp.max(0) as u32,
        sid: stat.session.max(0) as u32,
        uid,
        exe: None,
        cmdline: Vec::new(),
        start_ticks: stat.starttime,
        kernel_thread: stat.flags & tracer_common::PF_KTHREAD != 0,
        comm: stat.comm,
        threads: Vec::new(),
        exited_at_ns: None,
        namespaces: None,
        cgroup: None,
        container: None,
        leader_exited: false,
        cut: Vec::new(),
    })
}

/// A process record from its already-read stat and uid, with its command
/// line, executable and thread names read now.
/// `threads`: the distinct thread names when already known (from the
/// kernel); else they are read from /proc/PID/task.
pub fn process_from_stat(
    pid: u32,
    stat: Stat,
    uid: u32,
    threads: Option<Vec<ThreadName>>,
) -> Process {
    let comm = stat.comm.clone();
    let threads = match threads {
        Some(known) => known,
        None if stat.num_threads > 1 => thread_names(pid, &comm),
        None => Vec::new(),
    };
    let leader_exited = leader_exited(&stat);
    let speaker = if leader_exited {
        live_thread(pid).unwrap_or(pid)
    } else {
        pid
    };
    let (cmdline, cmdline_cut) = read_cmdline_of(pid, speaker);
    let mut cut: Vec<String> = cmdline_cut.into_iter().collect();
    let threads = cap_threads(threads, &mut cut);
    Process {
        pid,
        ppid: stat.ppid.max(0) as u32,
        pgid: stat.pgrp.max(0) as u32,
        sid: stat.session.max(0) as u32,
        uid,
        exe: read_exe_of(pid, speaker),
        cmdline,
        start_ticks: stat.starttime,
        kernel_thread: stat.flags & tracer_common::PF_KTHREAD != 0,
        comm,
        threads,
        exited_at_ns: None,
        namespaces: None,
        cgroup: None,
        container: None,
        leader_exited,
        cut,
    }
}

/// The threads of `pid` whose name differs from the process's `comm`,
/// one per name (the lowest thread id): a pool of 64 workers is one entry.
pub fn thread_names(pid: u32, comm: &HostStr) -> Vec<ThreadName> {
    let mut tids = list_threads(pid).unwrap_or_default();
    tids.sort_unstable();
    let named = tids
        .into_iter()
        .filter(|&tid| tid != pid)
        .filter_map(|tid| {
            let name = read_file(&format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            Some((
                tid,
                HostStr::from_bytes(name.strip_suffix(b"\n").unwrap_or(&name)),
            ))
        });
    distinct_thread_names(named, comm)
}

/// At most [`THREAD_NAMES_MAX`](crate::model::THREAD_NAMES_MAX) thread
/// names, noting in `cut` how many more there were.
pub fn cap_threads(mut threads: Vec<ThreadName>, cut: &mut Vec<String>) -> Vec<ThreadName> {
    let max = crate::model::THREAD_NAMES_MAX;
    if threads.len() > max {
        cut.push(format!("threads: {max} of {} names kept", threads.len()));
        threads.truncate(max);
    }
    threads
}

/// Threads named unlike `comm`, one per name, in thread-id order.
pub fn distinct_thread_names(
    threads: impl IntoIterator<Item = (u32, HostStr)>,
    comm: &HostStr,
) -> Vec<ThreadName> {
    let mut out: Vec<ThreadName> = Vec::new();
    for (tid, name) in threads {
        if name != *comm && !out.iter().any(|t| t.comm == name) {
            out.push(ThreadName { tid, comm: name });
        }
    }
    out
}

/// `/proc/PID/cmdline` as arguments; empty when unreadable (kernel threads,
/// zombies). At most [`CMDLINE_MAX_BYTES`](crate::model::CMDLINE_MAX_BYTES).
pub fn read_cmdline(pid: u32) -> Vec<HostStr> {
    read_cmdline_path(&format!("/proc/{pid}/cmdline")).0
}

/// A cmdline file's arguments, and whether it was cut.
fn read_cmdline_path(path: &str) -> (Vec<HostStr>, bool) {
    read_proc_record(path, crate::model::CMDLINE_MAX_BYTES)
        .map(|(b, cut)| (split_nul_args(&b), cut))
        .unwrap_or_default()
}

/// The note a record carries when its command line was cut.
fn cmdline_cut_note() -> String {
    format!(
        "cmdline: first {} bytes kept",
        crate::model::CMDLINE_MAX_BYTES
    )
}

/// The target of `/proc/PID/exe`, if readable.
pub fn read_exe(pid: u32) -> Option<HostStr> {
    read_link(&format!("/proc/{pid}/exe")).ok()
}

/// A process whose main thread has exited (zombie, or on its way out)
/// while other threads run on: ps shows it `<defunct>`, and its own exe
/// and cmdline are empty. Its live threads speak for it.
pub fn leader_exited(stat: &Stat) -> bool {
    (matches!(stat.state, 'Z' | 'X') || stat.flags & tracer_common::PF_EXITING != 0)
        && stat.num_threads > 1
}

/// A thread of `pid` other than its leader that is neither gone nor on
/// its way out (a process tearing down all its threads has none).
pub fn live_thread(pid: u32) -> Option<u32> {
    let mut tids = list_threads(pid).ok()?;
    tids.sort_unstable();
    tids.into_iter().filter(|&t| t != pid).find(|&tid| {
        read_file(&format!("/proc/{pid}/task/{tid}/stat"))
            .ok()
            .and_then(|b| parse_stat(&b).ok())
            .is_some_and(|s| {
                !matches!(s.state, 'Z' | 'X') && s.flags & tracer_common::PF_EXITING == 0
            })
    })
}

/// `exe` of the process, through thread `tid` (the leader's own when
/// `tid == pid`).
fn read_exe_of(pid: u32, tid: u32) -> Option<HostStr> {
    if tid == pid {
        return read_exe(pid);
    }
    read_link(&format!("/proc/{pid}/task/{tid}/exe")).ok()
}

/// `cmdline` of the process through thread `tid`, with the note to keep
/// when it was cut.
fn read_cmdline_of(pid: u32, tid: u32) -> (Vec<HostStr>, Option<String>) {
    let path = if tid == pid {
        format!("/proc/{pid}/cmdline")
    } else {
        format!("/proc/{pid}/task/{tid}/cmdline")
    };
    let (args, cut) = read_cmdline_path(&path);
    (args, cut.then(cmdline_cut_note))
}

/// Fills in exe and command line from /proc, when /proc still shows the
/// same process (its start time matches). Kernel threads have neither.
pub fn read_details(p: &mut Process) {
    if p.kernel_thread {
        return;
    }
    let Ok(stat) = read_stat(p.pid) else { return };
    if stat.starttime == p.start_ticks {
        p.leader_exited = leader_exited(&stat);
        let speaker = if p.leader_exited {
            live_thread(p.pid).unwrap_or(p.pid)
        } else {
            p.pid
        };
        p.exe = read_exe_of(p.pid, speaker);
        let (cmdline, cut) = read_cmdline_of(p.pid, speaker);
        p.cmdline = cmdline;
        p.cut.retain(|c| !c.starts_with("cmdline"));
        p.cut.extend(cut);
        if p.threads.is_empty() && stat.num_threads > 1 {
            p.threads = thread_names(p.pid, &p.comm);
        }
        read_placement(p);
    }
}

/// The host's namespaces, read once: kthreadd's (PID 2, a kernel thread,
/// lives in the initial namespaces of every kind), else PID 1's (some
/// hosts refuse /proc/1/ns even to root), else tracer's own.
pub fn host_namespaces() -> &'static Namespaces {
    static HOST: OnceLock<Namespaces> = OnceLock::new();
    HOST.get_or_init(|| {
        let kthreadd = read_stat(2).is_ok_and(|s| s.flags & tracer_common::PF_KTHREAD != 0);
        kthreadd
            .then(|| read_namespaces(2))
            .flatten()
            .filter(|ns| ns.pid != 0)
            .or_else(|| read_namespaces(1).filter(|ns| ns.pid != 0))
            .or_else(|| read_namespaces(std::process::id()))
            .unwrap_or_default()
    })
}

/// `/proc/PID/ns/*` and the `NSpid` line of its status.
pub fn read_namespaces(pid: u32) -> Option<Namespaces> {
    let link = |name: &str| {
        read_link(&format!("/proc/{pid}/ns/{name}"))
            .ok()
            .and_then(|l| placement::ns_inode(l.as_str()))
            .unwrap_or(0)
    };
    let ns = Namespaces {
        pid: link("pid"),
        mnt: link("mnt"),
        net: link("net"),
        uts: link("uts"),
        user: link("user"),
        ns_pid: read_file(&format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| parse_status_ns_pid(&s))
            .unwrap_or(0),
        separate: Default::default(),
    };
    (ns.pid != 0 || ns.mnt != 0 || ns.net != 0).then_some(ns)
}

/// Fills in what is missing of `p`'s placement from /proc, when /proc
/// still shows the same process: its namespaces, cgroup and the container
/// the cgroup names. Kernel threads live on the host.
pub fn read_placement(p: &mut Process) {
    if p.kernel_thread || p.exited_at_ns.is_some() {
        return;
    }
    if start_ticks(p.pid) != Some(p.start_ticks) {
        return;
    }
    if p.namespaces.is_none() {
        p.namespaces = read_namespaces(p.pid);
    }
    if let Some(ns) = p.namespaces.as_mut() {
        ns.compare_with(host_namespaces());
    }
    if p.cgroup.is_none() {
        if let Some((cgroup, container)) = read_cgroup(p.pid) {
            p.cgroup = cgroup;
            p.container = p.container.take().or(container);
        }
    }
}

/// What `/proc/PID/cgroup` says: the cgroup v2 path and the container its
/// naming gives; `None` when the file cannot be read.
pub fn read_cgroup(pid: u32) -> Option<placement::CgroupFacts> {
    let file = read_file(&format!("/proc/{pid}/cgroup")).ok()?;
    Some((
        placement::v2_path(&file).map(std::sync::Arc::new),
        placement::container_of_cgroup(&file).map(std::sync::Arc::new),
    ))
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

    // A table of several pages, read with the short-read end: every line
    // whole, and every socket this test holds in it.
    #[test]
    fn a_proc_net_table_of_several_pages_is_read_to_its_end() {
        let listeners: Vec<std::net::TcpListener> = (0..80)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let text = read_proc_table("/proc/self/net/tcp").unwrap();
        assert!(text.len() > 3 * 4096, "{} bytes", text.len());
        assert!(text.ends_with(b"\n"));
        let text = String::from_utf8(text).unwrap();
        let local_ports: std::collections::HashSet<u16> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1)?.split_once(':'))
            .filter_map(|(_, port)| u16::from_str_radix(port, 16).ok())
            .collect();
        for l in &listeners {
            let port = l.local_addr().unwrap().port();
            assert!(local_ports.contains(&port), "port {port} missing");
        }
    }

    #[test]
    fn a_command_line_of_many_pages_is_read_whole() {
        // Lengths around the 4096-byte read: one byte short, exact, one
        // over, and several pages.
        for len in [4095 - 21, 4096 - 21, 4097 - 21, 3 * 4096 + 100] {
            let pad = "x".repeat(len);
            let mut child = std::process::Command::new("sh")
                .args(["-c", "sleep 30; :", "sh"])
                .arg(&pad)
                .spawn()
                .expect("sh runs");
            // Until the fork has run exec.
            let mut args = Vec::new();
            for _ in 0..200 {
                args = read_cmdline(child.id());
                if args.len() == 5 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(args.len(), 5, "{len}");
            assert_eq!(args.last().map(|a| a.len()), Some(len), "{len}");
        }
    }

    #[test]
    fn args_split_on_nul_and_drop_the_trailing_one() {
        assert_eq!(
            split_nul_args(b"sh\0-c\0echo hi\0"),
            [HostStr::from("sh"), "-c".into(), "echo hi".into()]
        );
        assert!(split_nul_args(b"").is_empty());
        assert_eq!(split_nul_args(b"a\0\0b\0").len(), 3);
        assert_eq!(&*split_nul_args(b"\xff\0")[0].to_bytes(), b"\xff");
    }

    #[test]
    fn status_uid_is_the_real_uid() {
        let status = b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_uid(status), Some(1000));
        assert_eq!(parse_status_uid(b"Name:\tx\n"), None);
        // A task name that is not UTF-8 does not hide the uid.
        let status = b"Name:\tm\xff\x1b\nUid:\t1000\t0\t0\t0\n";
        assert_eq!(parse_status_uid(status), Some(1000));
    }

    #[test]
    fn stat_names_are_bytes_and_may_hold_parentheses() {
        let stat = b"42 (a) b\xff\n) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(&*parsed.comm.to_bytes(), b"a) b\xff\n");
        assert_eq!((parsed.pid, parsed.state, parsed.num_threads), (42, 'S', 1));
        assert!(parse_stat(b"1 (x)").is_err() && parse_stat(b"1 )x( S").is_err());
        assert_eq!((parsed.ppid, parsed.starttime), (1, 777));
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
