//! Names from `/etc/hosts`, as the connecting process sees it: the hosts
//! file of its own mount namespace (a container's, or one the attacker
//! wrote to point a pool's name at a proxy), read through its root
//! (`/proc/PID/root`, symlinks resolved inside that root), beside the DNS
//! answers watch sees. One read per mount namespace, re-checked at most
//! once a second.
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::model::HostStr;

/// Bytes of a hosts file read at most (the file is the attacker's).
const MAX_BYTES: usize = 1 << 20;
/// Names kept per address, and addresses per file.
const NAMES_PER_ADDR: usize = 16;
const ADDRS_PER_FILE: usize = 65_536;
/// How long a read hosts file is trusted before its size and time are checked.
const RECHECK: Duration = Duration::from_secs(1);
/// Mount namespaces remembered at most.
const NAMESPACES_KEPT: usize = 1024;

/// Addresses to names, in file order.
pub type HostsNames = HashMap<IpAddr, Vec<HostStr>>;

struct Entry {
    names: HostsNames,
    /// (size, mtime s, mtime ns) when read; `None` when there was no file.
    stamp: Option<(u64, i64, i64)>,
    checked: Instant,
}

/// Hosts files by mount namespace.
#[derive(Default)]
pub struct HostsFiles {
    by_namespace: HashMap<u64, Entry>,
}

impl HostsFiles {
    /// The names `/etc/hosts` gives `addr` in the mount namespace `mnt_ns`
    /// that process `pid` lives in (`pid` is how its root is reached).
    pub fn names(&mut self, mnt_ns: u64, pid: u32, addr: IpAddr) -> &[HostStr] {
        let fresh = self
            .by_namespace
            .get(&mnt_ns)
            .is_some_and(|e| e.checked.elapsed() < RECHECK);
        if !fresh {
            let stamp = stamp_of(pid);
            let unchanged = self
                .by_namespace
                .get(&mnt_ns)
                .is_some_and(|e| e.stamp == stamp);
            if unchanged {
                if let Some(e) = self.by_namespace.get_mut(&mnt_ns) {
                    e.checked = Instant::now();
                }
            } else {
                if self.by_namespace.len() >= NAMESPACES_KEPT {
                    self.by_namespace.clear();
                }
                let names = stamp.map_or_else(HostsNames::new, |_| read(pid));
                self.by_namespace.insert(
                    mnt_ns,
                    Entry {
                        names,
                        stamp,
                        checked: Instant::now(),
                    },
                );
            }
        }
        self.by_namespace
            .get(&mnt_ns)
            .and_then(|e| e.names.get(&addr))
            .map_or(&[], Vec::as_slice)
    }
}

/// The process's `/etc/hosts`, opened beneath its root: `..` and
/// symlinks cannot leave it.
fn open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        format!("/proc/{pid}/root").as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    openat2(
        &root,
        "etc/hosts",
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()
}

fn stamp_of(pid: u32) -> Option<(u64, i64, i64)> {
    let fd = open(pid)?;
    let st = rustix::fs::fstat(&fd).ok()?;
    Some((st.st_size as u64, st.st_mtime, st.st_mtime_nsec as i64))
}

fn read(pid: u32) -> HostsNames {
    let Some(fd) = open(pid) else {
        return HostsNames::new();
    };
    // A FIFO or device would block or never end: regular files only.
    if rustix::fs::fstat(&fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
    }) {
        return HostsNames::new();
    }
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    while bytes.len() < MAX_BYTES {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    bytes.truncate(MAX_BYTES);
    parse(&bytes)
}

/// `ADDRESS NAME [ALIAS...]` lines, `#` comments; anything else is
/// skipped. Names are lowercased (DNS names are case-blind).
pub fn parse(bytes: &[u8]) -> HostsNames {
    let mut out = HostsNames::new();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let Some(addr) = words
            .next()
            .and_then(|w| std::str::from_utf8(w).ok())
            .and_then(|w| w.split('%').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if out.len() >= ADDRS_PER_FILE && !out.contains_key(&addr) {
            continue;
        }
        let names = out.entry(addr).or_default();
        for w in words {
            let name = HostStr::from_bytes(&w.to_ascii_lowercase());
            if names.len() < NAMES_PER_ADDR && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    out.retain(|_, names| !names.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_map_addresses_to_names_and_aliases() {
        let text = b"127.0.0.1 localhost\n# 10.0.0.9 commented.test\n\
            10.1.2.3\tPool.Evil-Mine.test  alias.test # trailing\n\
            fe80::1%eth0 link.test\n::1 ip6-localhost\nnot-an-address foo\n10.9.9.9\n\xff\xfe x\n";
        let m = parse(text);
        let names = |a: &str| {
            m.get(&a.parse::<IpAddr>().unwrap())
                .map(|v| v.iter().map(|n| n.as_str().to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            names("10.1.2.3").unwrap(),
            ["pool.evil-mine.test", "alias.test"]
        );
        assert_eq!(names("fe80::1").unwrap(), ["link.test"]);
        assert_eq!(names("10.0.0.9"), None, "comments are not entries");
        assert_eq!(names("10.9.9.9"), None, "an address without names");
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn a_hostile_file_stays_bounded() {
        let mut text = Vec::new();
        text.extend_from_slice(b"10.0.0.1");
        for i in 0..100 {
            text.extend_from_slice(format!(" n{i}.test").as_bytes());
        }
        assert_eq!(
            parse(&text)[&"10.0.0.1".parse::<IpAddr>().unwrap()].len(),
            NAMES_PER_ADDR
        );
    }

    #[test]
    fn this_process_reads_its_own_hosts_file() {
        let mut files = HostsFiles::default();
        let me = std::process::id();
        // Whatever /etc/hosts holds, asking twice is answered the same.
        let first = files.names(1, me, "127.0.0.1".parse().unwrap()).to_vec();
        assert_eq!(files.names(1, me, "127.0.0.1".parse().unwrap()), first);
    }
}
