//! K: every IPv4, IPv6 and packet socket as the kernel has it, from the
//! socket iterators (see `tracer-ebpf/src/sockets.rs`).
//!
//! `iter/task_file` gives every socket a process holds, with the holder, in
//! one pass over every process's file table (no `/proc/PID/fd` walk).
//! `iter/tcp` and `iter/udp` then add the sockets no process holds
//! (TIME_WAIT, orphans, connections not yet accepted), per network
//! namespace: each runs in the namespace of the task that creates it, so
//! tracer creates one per namespace in use, from a thread that joins it.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    ffi::OsStr,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::PathBuf,
};

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags};
use tracer_common::SocketRecord;

use crate::{
    kernel::{
        sockets::{self, SocketIterator},
        Kernel,
    },
    model::socket::{Family, PacketBinding, Protocol, Socket, SocketOwner},
    views::net::{Scope, SocketListing, INET_PARTS},
};

/// Named network namespaces (`ip netns add`) are bind mounts here.
const NAMED_NETNS_DIR: &str = "/run/netns";

/// The kernel's sockets, and what this view could not cover.
#[derive(Debug, Default)]
pub struct KernelSockets {
    /// Every socket, with every process and descriptor that holds it.
    pub sockets: Vec<Socket>,
    /// Network namespaces whose unheld sockets were listed.
    pub namespaces: Vec<u64>,
    /// One line for each thing not covered (an iterator that did not load,
    /// a namespace that could not be entered); empty when complete.
    pub gaps: Vec<String>,
}

/// Takes the K view. Fails only when `iter/task_file` itself cannot run:
/// without it there is no kernel socket view at all.
pub fn take(kernel: &mut Kernel) -> Result<KernelSockets> {
    let unavailable = || {
        format!(
            "kernel socket view unavailable: {}",
            sockets::TASK_FILE.fallback
        )
    };
    let task_file = kernel
        .open_socket_records(&sockets::TASK_FILE, None)
        .with_context(unavailable)?;
    let mut gaps = Vec::new();
    let mut unheld = Vec::new();
    let mut namespaces = Vec::new();
    let unheld_iterators: Vec<&'static SocketIterator> = [&sockets::TCP, &sockets::UDP]
        .into_iter()
        .filter(|it| {
            let loaded = kernel.has_socket_iterator(it);
            if !loaded {
                gaps.push(format!("iter/{} not loaded: {}", it.iterator, it.fallback));
            }
            loaded
        })
        .collect();
    // tracer's own namespace (usually the only one) is walked beside the
    // file tables; the others are known only from the held sockets.
    let own: Vec<_> = unheld_iterators
        .iter()
        .map(|it| (*it, kernel.open_socket_records(it, None)))
        .collect();
    let (held, own) = std::thread::scope(|s| {
        let own = s.spawn(|| {
            own.into_iter()
                .map(|(it, pending)| (it, pending.and_then(|p| p.read())))
                .collect::<Vec<_>>()
        });
        (task_file.read(), own.join())
    });
    let held = held.with_context(unavailable)?;
    let mut own = Some(own.map_err(|_| anyhow::anyhow!("socket iterator thread panicked"))?);
    if !unheld_iterators.is_empty() {
        for ns in namespaces_in_use(&held) {
            let records = if ns.is_own() {
                own.take()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(it, recs)| (it, recs.map_err(|e| format!("{e:#}"))))
                    .collect::<Vec<_>>()
            } else {
                let fd = match ns.open() {
                    Ok(fd) => fd,
                    Err(why) => {
                        gaps.push(format!(
                            "network namespace {}: sockets no process holds not listed ({why})",
                            ns.inode
                        ));
                        continue;
                    }
                };
                unheld_iterators
                    .iter()
                    .map(|it| {
                        let recs = kernel
                            .socket_records(it, Some(fd.as_fd()))
                            .map_err(|e| format!("{e:#}"));
                        (*it, recs)
                    })
                    .collect()
            };
            for (it, recs) in records {
                match recs {
                    Ok(recs) => unheld.extend(recs),
                    Err(e) => gaps.push(format!(
                        "network namespace {}: iter/{} failed ({e}): {}",
                        ns.inode, it.iterator, it.fallback
                    )),
                }
            }
            namespaces.push(ns.inode);
        }
    }
    if held
        .iter()
        .any(|r| r.family == AF_PACKET && r.packet_known == 0)
    {
        gaps.push(
            "packet_sock is not in this kernel's BTF: packet sockets are listed without \
             their ethertype and interface"
                .into(),
        );
    }
    Ok(KernelSockets {
        sockets: merge(&held, &unheld),
        namespaces,
        gaps,
    })
}

impl KernelSockets {
    /// As a listing to diff against: TCP and UDP of every namespace whose
    /// unheld sockets were listed, and packet sockets (always held by a
    /// file) of every namespace. Raw-protocol sockets are not compared:
    /// the kernel's include ping sockets, which `/proc/net/raw` leaves out.
    pub fn into_listing(self) -> SocketListing {
        let inet = self.namespaces.iter().flat_map(|&netns| {
            INET_PARTS.iter().map(move |&(protocol, family)| Scope {
                netns,
                protocol,
                family,
            })
        });
        let packet_namespaces: BTreeSet<u64> = self.sockets.iter().map(|s| s.netns).collect();
        let packet = packet_namespaces
            .into_iter()
            .chain(self.namespaces.iter().copied())
            .map(|netns| Scope {
                netns,
                protocol: Protocol::Packet,
                family: Family::Packet,
            });
        let mut listing = SocketListing::from_parts(inet.chain(packet), self.sockets);
        listing.gaps = self.gaps;
        listing
    }
}

const AF_PACKET: u16 = 17;
const SOCK_STREAM: u16 = 1;
const SOCK_DGRAM: u16 = 2;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const IPPROTO_UDPLITE: u16 = 136;
const IPPROTO_MPTCP: u16 = 262;

/// Groups the held records by socket (one socket may be held by several
/// processes and descriptors), then adds the iterator records of sockets
/// no process holds. Sorted by namespace, protocol, family and addresses.
pub fn merge(held: &[SocketRecord], unheld: &[SocketRecord]) -> Vec<Socket> {
    let mut by_inode: HashMap<(u64, u64), Socket> = HashMap::new();
    for r in held {
        let Some(mut s) = decode(r) else { continue };
        let owner = SocketOwner {
            pid: r.tgid,
            fd: r.fd,
        };
        by_inode
            .entry((s.netns, s.inode))
            .or_insert_with(|| {
                s.owners.clear();
                s
            })
            .owners
            .push(owner);
    }
    let held_keys: HashSet<(u64, u64)> = by_inode.keys().copied().collect();
    let mut out: Vec<Socket> = by_inode.into_values().collect();
    for s in &mut out {
        s.owners.sort();
        s.owners.dedup();
    }
    let mut seen_unheld = BTreeSet::new();
    for r in unheld {
        // Most are the held sockets again: skip those before decoding.
        if r.inode != 0 && held_keys.contains(&(u64::from(r.netns), r.inode)) {
            continue;
        }
        let Some(s) = decode(r) else { continue };
        if !seen_unheld.insert(s.key()) {
            continue;
        }
        out.push(s);
    }
    out.sort_unstable_by_key(|s| (s.netns, s.protocol, s.family, s.local, s.remote, s.inode));
    out
}

/// One record as a socket (owners from `iter/task_file` records).
pub fn decode(r: &SocketRecord) -> Option<Socket> {
    let family = Family::from_af(r.family)?;
    let protocol = match (family, r.sock_type, r.protocol) {
        (Family::Packet, _, _) => Protocol::Packet,
        (_, SOCK_STREAM, IPPROTO_TCP | IPPROTO_MPTCP) => Protocol::Tcp,
        (_, SOCK_DGRAM, IPPROTO_UDP | IPPROTO_UDPLITE) => Protocol::Udp,
        // SOCK_RAW, ping (ICMP datagram) sockets and anything else on an IP
        // family: listed, as `ss -w` lists raw sockets.
        _ => Protocol::Raw,
    };
    let (local, remote) = match family {
        Family::Ipv4 => {
            let v4 = |a: &[u8; 16], port| {
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                    port,
                ))
            };
            (Some(v4(&r.laddr, r.lport)), Some(v4(&r.raddr, r.rport)))
        }
        Family::Ipv6 => {
            let v6 = |a: &[u8; 16], port| {
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(*a), port, 0, 0))
            };
            (Some(v6(&r.laddr, r.lport)), Some(v6(&r.raddr, r.rport)))
        }
        Family::Packet => (None, None),
    };
    Some(Socket {
        netns: r.netns as u64,
        family,
        protocol,
        state: r.state as u8,
        inode: r.inode,
        local,
        remote,
        uid: r.uid,
        packet: (family == Family::Packet && r.packet_known != 0).then_some(PacketBinding {
            ethertype: r.packet_proto,
            ifindex: r.packet_ifindex,
        }),
        owners: if r.tgid != 0 {
            vec![SocketOwner {
                pid: r.tgid,
                fd: r.fd,
            }]
        } else {
            Vec::new()
        },
    })
}

/// A network namespace and the ways into it.
struct Namespace {
    inode: u64,
    /// Files that may name it (`/run/netns/NAME`, `/proc/PID/ns/net` of a
    /// process holding one of its sockets; that process may have moved
    /// since). Empty: tracer's own.
    paths: Vec<PathBuf>,
}

/// Processes tried per namespace before giving up on it.
const PATHS_PER_NAMESPACE: usize = 8;

impl Namespace {
    /// tracer's own namespace (no path needed to enter it).
    fn is_own(&self) -> bool {
        self.paths.is_empty()
    }

    /// A descriptor of the namespace (not tracer's own: that one has no
    /// path), from the first path that still names it (checked by inode: a
    /// PID may have been reused).
    fn open(&self) -> Result<OwnedFd, String> {
        let mut tried = Vec::new();
        for path in &self.paths {
            let shown = path.display();
            let fd = match rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) => {
                    tried.push(format!("{shown}: {e}"));
                    continue;
                }
            };
            match rustix::fs::fstat(&fd) {
                Ok(st) if st.st_ino == self.inode => return Ok(fd),
                Ok(_) => tried.push(format!("{shown} is another namespace now")),
                Err(e) => tried.push(format!("{shown}: {e}")),
            }
        }
        Err(tried.join("; "))
    }
}

/// tracer's own namespace, the named ones in /run/netns, and every other
/// namespace a held socket lives in (entered through a holder).
fn namespaces_in_use(held: &[SocketRecord]) -> Vec<Namespace> {
    let own = rustix::fs::stat("/proc/thread-self/ns/net")
        .map(|s| s.st_ino)
        .unwrap_or(0);
    let mut by_inode: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    by_inode.insert(own, Vec::new());
    for name in crate::proc::list_dir_names(NAMED_NETNS_DIR).unwrap_or_default() {
        let path = PathBuf::from(NAMED_NETNS_DIR).join(OsStr::from_bytes(&name));
        if let Ok(st) = rustix::fs::stat(&path) {
            if st.st_ino != own {
                by_inode.entry(st.st_ino).or_default().push(path);
            }
        }
    }
    for r in held {
        let ns = r.netns as u64;
        if ns == own {
            continue;
        }
        let paths = by_inode.entry(ns).or_default();
        let path = PathBuf::from(format!("/proc/{}/ns/net", r.tgid));
        if paths.len() < PATHS_PER_NAMESPACE && !paths.contains(&path) {
            paths.push(path);
        }
    }
    by_inode
        .into_iter()
        .map(|(inode, paths)| Namespace { inode, paths })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(tgid: u32, fd: u32, inode: u64, lport: u16, rport: u16, state: u16) -> SocketRecord {
        SocketRecord {
            tgid,
            fd,
            inode,
            netns: 4026531840,
            family: 2,
            sock_type: SOCK_STREAM,
            protocol: IPPROTO_TCP,
            state,
            lport,
            rport,
            laddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            raddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            source: if tgid == 0 { 2 } else { 1 },
            ..Default::default()
        }
    }

    #[test]
    fn ipv4_tcp_record_decodes_with_owner() {
        let s = decode(&tcp4(42, 7, 900, 40000, 3333, 1)).unwrap();
        assert_eq!(
            (s.family, s.protocol, s.state),
            (Family::Ipv4, Protocol::Tcp, 1)
        );
        assert_eq!(s.local, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(s.peer(), Some("127.0.0.1:3333".parse().unwrap()));
        assert_eq!(s.owners, [SocketOwner { pid: 42, fd: 7 }]);
        assert_eq!(s.netns, 4026531840);
    }

    #[test]
    fn v4_mapped_ipv6_stays_ipv6() {
        let mut r = tcp4(42, 3, 901, 5000, 6000, 1);
        r.family = 10;
        r.raddr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
        r.laddr = Ipv6Addr::LOCALHOST.octets();
        let s = decode(&r).unwrap();
        assert_eq!(s.family, Family::Ipv6);
        assert_eq!(s.peer(), Some("[::ffff:127.0.0.1]:6000".parse().unwrap()));
        assert_eq!(s.local, Some("[::1]:5000".parse().unwrap()));
    }

    #[test]
    fn packet_raw_and_udp_are_told_apart() {
        let mut p = tcp4(9, 4, 902, 0, 0, 7);
        p.family = AF_PACKET;
        p.sock_type = 3;
        p.packet_known = 1;
        p.packet_proto = 0x0003;
        let s = decode(&p).unwrap();
        assert_eq!((s.protocol, s.local), (Protocol::Packet, None));
        assert_eq!(s.packet.unwrap().ethertype, 3);
        p.packet_known = 0;
        assert!(decode(&p).unwrap().packet.is_none());

        let mut raw = tcp4(9, 5, 903, 1, 0, 7);
        raw.sock_type = 3;
        raw.protocol = 1;
        assert_eq!(decode(&raw).unwrap().protocol, Protocol::Raw);

        let mut udp = tcp4(9, 6, 904, 53, 0, 7);
        udp.sock_type = SOCK_DGRAM;
        udp.protocol = IPPROTO_UDP;
        let u = decode(&udp).unwrap();
        assert_eq!((u.protocol, u.state_name()), (Protocol::Udp, "UNCONN"));

        let mut unix = tcp4(9, 7, 905, 0, 0, 1);
        unix.family = 1;
        assert!(decode(&unix).is_none());
    }

    #[test]
    fn shared_sockets_list_every_holder_once() {
        // A listener inherited across fork: two processes, one socket.
        let held = [
            tcp4(10, 3, 500, 8080, 0, 10),
            tcp4(11, 3, 500, 8080, 0, 10),
            tcp4(10, 3, 500, 8080, 0, 10),
            tcp4(10, 4, 501, 8080, 40000, 1),
        ];
        let out = merge(&held, &[]);
        assert_eq!(out.len(), 2);
        let listener = out.iter().find(|s| s.inode == 500).unwrap();
        assert_eq!(
            listener.owners,
            [
                SocketOwner { pid: 10, fd: 3 },
                SocketOwner { pid: 11, fd: 3 }
            ]
        );
    }

    #[test]
    fn unheld_sockets_are_added_once_and_held_ones_not_twice() {
        let held = [tcp4(10, 3, 500, 8080, 0, 10)];
        let unheld = [
            // The same listener seen by iter/tcp: already listed.
            tcp4(0, 0, 500, 8080, 0, 10),
            // TIME_WAIT: no inode, listed without owner, once.
            tcp4(0, 0, 0, 8080, 41000, 6),
            tcp4(0, 0, 0, 8080, 41000, 6),
            // An orphan still in FIN-WAIT-1.
            tcp4(0, 0, 0, 8080, 41001, 4),
        ];
        let out = merge(&held, &unheld);
        assert_eq!(out.len(), 3, "{out:#?}");
        let tw: Vec<_> = out.iter().filter(|s| s.owners.is_empty()).collect();
        assert_eq!(tw.len(), 2);
        assert!(tw.iter().any(|s| s.state_name() == "TIME-WAIT"));
        assert!(tw.iter().any(|s| s.state_name() == "FIN-WAIT-1"));
    }

    #[test]
    fn namespaces_are_keyed_apart() {
        let a = tcp4(10, 3, 500, 80, 0, 10);
        let mut b = tcp4(20, 3, 500, 80, 0, 10);
        b.netns = 4026532999;
        let out = merge(&[a, b], &[]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|s| s.owners.len() == 1));
    }

    // Against the running kernel (root): this test's own loopback
    // connection is listed with this process and the descriptor as owner,
    // and the accepted end too.
    #[test]
    fn own_loopback_connection_is_listed_with_its_owner() {
        use std::os::fd::AsRawFd;
        let Ok(mut kernel) = Kernel::load("test") else {
            eprintln!("cannot load eBPF programs here (not root?); skipping");
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let view = take(&mut kernel).unwrap();
        let me = std::process::id();
        let find = |local: SocketAddr, fd: i32| {
            view.sockets.iter().find(|s| {
                s.local == Some(local)
                    && s.owners.contains(&SocketOwner {
                        pid: me,
                        fd: fd as u32,
                    })
            })
        };
        let c = find(client.local_addr().unwrap(), client.as_raw_fd()).expect("client end listed");
        assert_eq!(c.remote, Some(listener.local_addr().unwrap()));
        assert_eq!((c.protocol, c.state_name()), (Protocol::Tcp, "ESTAB"));
        let s = find(server.local_addr().unwrap(), server.as_raw_fd()).expect("server end listed");
        assert_eq!(s.remote, Some(client.local_addr().unwrap()));
        let l = find(listener.local_addr().unwrap(), listener.as_raw_fd()).expect("listener");
        assert!(l.is_listening());
        assert!(view.gaps.is_empty(), "{:?}", view.gaps);
    }
}
