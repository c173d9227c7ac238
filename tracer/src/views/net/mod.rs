//! Views of the host's sockets, each from a different layer, to be diffed
//! like the process views (see `crate::detect::hidden_net`), and to
//! attribute every connection to the process that holds it.
//!
//! | view | source                                                        | module    |
//! |------|---------------------------------------------------------------|-----------|
//! | K    | the kernel: eBPF `iter/task_file` (sockets with their owners), `iter/tcp`, `iter/udp` | `kernel`  |
//! | P    | `/proc/net/{tcp,tcp6,udp,udp6,raw,raw6,packet}` per network namespace, raw system calls | `procnet` |
//! | N    | sock_diag over netlink, as `ss` asks                          | `diag`    |
//! | F    | `/proc/PID/fd` socket links, as `ss -p`, `netstat -p`, `lsof` attribute | `fds`     |
//! | L    | `/proc/net/*` read through libc, as `netstat` reads it         | `libc`    |
//! | S    | the `ss` and `netstat` programs                               | `tools`   |
//!
//! A [`NetSnapshot`] takes them in the order the detector needs: the
//! reference views (K, then P) first, the views that may lie after them, so
//! a socket in a reference view and missing from a later one either closed
//! in between or is hidden, which the detector settles by asking again.
pub mod diag;
pub mod fds;
pub mod kernel;
pub mod libc;
pub mod procnet;
pub mod tools;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::Duration,
};

use super::KernelProcess;
use crate::model::socket::{Family, Protocol, Socket};

pub use fds::FdView;
pub use procnet::Namespaces;
pub use tools::ToolListing;

/// A part of the socket space one view can speak for: one protocol of one
/// family in one network namespace. A view is only diffed where it has
/// read the whole part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub netns: u64,
    pub protocol: Protocol,
    pub family: Family,
}

impl Scope {
    pub fn of(s: &Socket) -> Scope {
        Scope {
            netns: s.netns,
            protocol: s.protocol,
            family: s.family,
        }
    }
}

/// TCP and UDP over IPv4 and IPv6: what `ss -tu`, `netstat -tu`, sock_diag
/// and the libc readers of `/proc/net/{tcp,udp}{,6}` all cover.
pub const INET_PARTS: [(Protocol, Family); 4] = [
    (Protocol::Tcp, Family::Ipv4),
    (Protocol::Tcp, Family::Ipv6),
    (Protocol::Udp, Family::Ipv4),
    (Protocol::Udp, Family::Ipv6),
];

/// The sockets one view shows, and what it could read.
#[derive(Clone, Debug, Default)]
pub struct SocketListing {
    pub sockets: Vec<Socket>,
    /// The parts read completely; a socket outside them is not this view's
    /// to show.
    pub covers: BTreeSet<Scope>,
    /// Parts that could not be read, and why.
    pub gaps: Vec<String>,
    /// Inodes of `sockets` (0 left out), for lookups.
    inodes: HashSet<u64>,
}

impl SocketListing {
    /// Adds the sockets of one completely read part.
    pub fn add(&mut self, scope: Scope, sockets: impl IntoIterator<Item = Socket>) {
        self.covers.insert(scope);
        self.add_sockets(sockets);
    }

    /// A listing that covers `scopes`, from sockets already collected.
    pub fn from_parts(
        scopes: impl IntoIterator<Item = Scope>,
        sockets: impl IntoIterator<Item = Socket>,
    ) -> SocketListing {
        let mut l = SocketListing::default();
        l.covers.extend(scopes);
        l.add_sockets(sockets);
        l
    }

    fn add_sockets(&mut self, sockets: impl IntoIterator<Item = Socket>) {
        for s in sockets {
            if s.inode != 0 {
                self.inodes.insert(s.inode);
            }
            self.sockets.push(s);
        }
    }

    /// Whether this view shows the socket: `None` when the socket is
    /// outside what it read, so its silence says nothing.
    pub fn shows(&self, s: &Socket) -> Option<bool> {
        self.covers
            .contains(&Scope::of(s))
            .then(|| self.inodes.contains(&s.inode))
    }

    /// Whether a socket with this inode is listed (any scope).
    pub fn has_inode(&self, inode: u64) -> bool {
        self.inodes.contains(&inode)
    }

    /// The listed socket with this inode, if any.
    pub fn by_inode(&self, inode: u64) -> Option<&Socket> {
        self.sockets.iter().find(|s| s.inode == inode)
    }
}

/// Every view of the host's sockets, taken once.
pub struct NetSnapshot {
    /// The network namespaces in use and a process in each.
    pub namespaces: Namespaces,
    /// K: the kernel's sockets with their owners, or why they are missing;
    /// `None` where tracer has no kernel socket view yet.
    pub kernel: Option<Result<SocketListing, String>>,
    /// P: `/proc/net/*` of every namespace, through raw system calls.
    pub procnet: SocketListing,
    /// N: sock_diag, or why it could not be asked at all.
    pub diag: Result<SocketListing, String>,
    /// F: socket links under `/proc/PID/fd` of the processes the kernel
    /// says hold sockets, or why it was not taken (without the kernel view
    /// nothing names the owners to check, and walking every process's fds
    /// costs more than all other views together on a busy host).
    pub fds: Result<FdView, String>,
    /// L: `/proc/net/*` through libc, in a helper process.
    pub libc: Result<SocketListing, String>,
    /// S: one listing per distinct `ss` or `netstat` program.
    pub tools: Vec<ToolListing>,
    /// PIDs of the helpers run for this snapshot.
    pub helper_pids: BTreeSet<u32>,
    /// How long each view took, by letter (N, F, L and S run side by side).
    pub took: BTreeMap<&'static str, Duration>,
}

impl NetSnapshot {
    /// Takes every view. `kernel` is the kernel's socket listing when the
    /// kernel side provides one (it becomes the reference layer), with the
    /// time it took. `every_pid`: the PIDs /proc or the kernel lists,
    /// ascending; `tasks`, the kernel's processes, which name their network
    /// namespaces.
    pub fn take(
        kernel: Option<(Result<SocketListing, String>, Duration)>,
        proc_pids: &BTreeSet<u32>,
        every_pid: &[u32],
        tasks: Option<&BTreeMap<u32, KernelProcess>>,
    ) -> NetSnapshot {
        let mut took = BTreeMap::new();
        let kernel = kernel.map(|(k, t)| {
            took.insert("K", t);
            k
        });
        let ((namespaces, procnet), p_time) = super::timed("net view P: /proc/net", || {
            let ns = Namespaces::discover(every_pid.iter().copied(), |pid| tasks?.get(&pid)?.netns);
            let listing = procnet::take(&ns);
            (ns, listing)
        });
        took.insert("P", p_time);
        let ((diag, n_time), (fds, f_time), (libc, l_time), (tools, s_time)) =
            std::thread::scope(|s| {
                let diag =
                    s.spawn(|| super::timed("net view N: sock_diag", || diag::take(&namespaces)));
                let libc = s.spawn(|| {
                    super::timed("net view L: libc (a helper)", || libc::take(&namespaces))
                });
                let tools = s.spawn(|| {
                    super::timed("net view S: ss, netstat (helpers)", || {
                        tools::take(namespaces.own)
                    })
                });
                let fds = super::timed("net view F: socket fds", || match &kernel {
                    Some(Ok(k)) => {
                        let owners: BTreeSet<u32> = k
                            .sockets
                            .iter()
                            .flat_map(|s| s.owners.iter().map(|o| o.pid))
                            .filter(|p| proc_pids.contains(p))
                            .collect();
                        Ok(FdView::take(&owners, proc_pids))
                    }
                    _ => Err("needs the kernel view, which names each socket's owners; \
                              the owners of findings are read from /proc/PID/fd"
                        .to_string()),
                });
                (
                    diag.join().unwrap_or_else(|_| {
                        (Err("the sock_diag thread panicked".into()), Duration::ZERO)
                    }),
                    fds,
                    libc.join().unwrap_or_else(|_| {
                        (
                            Err("the libc reader thread panicked".into()),
                            Duration::ZERO,
                        )
                    }),
                    tools.join().unwrap_or_default(),
                )
            });
        took.extend([("N", n_time), ("F", f_time), ("L", l_time), ("S", s_time)]);
        let mut helper_pids: BTreeSet<u32> = tools.iter().filter_map(|t| t.helper_pid).collect();
        if let Ok(l) = &libc {
            helper_pids.insert(l.1);
        }
        NetSnapshot {
            namespaces,
            kernel,
            procnet,
            diag,
            fds,
            libc: libc.map(|l| l.0),
            tools,
            helper_pids,
            took,
        }
    }

    /// The reference listing: the kernel's when there is one, else P.
    pub fn reference(&self) -> &SocketListing {
        match &self.kernel {
            Some(Ok(k)) => k,
            _ => &self.procnet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(inode: u64, protocol: Protocol) -> Socket {
        Socket {
            netns: 1,
            family: Family::Ipv4,
            protocol,
            state: 1,
            inode,
            local: Some("127.0.0.1:5000".parse().unwrap()),
            remote: Some("127.0.0.1:6000".parse().unwrap()),
            uid: 0,
            packet: None,
            owners: vec![],
        }
    }

    #[test]
    fn a_view_speaks_only_for_the_parts_it_read() {
        let tcp4 = Scope {
            netns: 1,
            protocol: Protocol::Tcp,
            family: Family::Ipv4,
        };
        let listing = SocketListing::from_parts([tcp4], [sock(7, Protocol::Tcp)]);
        assert_eq!(listing.shows(&sock(7, Protocol::Tcp)), Some(true));
        assert_eq!(listing.shows(&sock(8, Protocol::Tcp)), Some(false));
        assert_eq!(listing.shows(&sock(9, Protocol::Udp)), None);
        let mut other_ns = sock(7, Protocol::Tcp);
        other_ns.netns = 2;
        assert_eq!(listing.shows(&other_ns), None);
    }
}
