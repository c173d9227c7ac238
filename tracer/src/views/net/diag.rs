//! N: the sockets sock_diag reports over `NETLINK_SOCK_DIAG`, the interface
//! `ss` asks: inet_diag for TCP and UDP over IPv4 and IPv6 in every state,
//! and packet_diag for `AF_PACKET`, once per network namespace (a thread
//! enters the namespace to open the netlink socket, which stays bound to
//! it). The socket I/O goes through rustix's raw system calls: a preload
//! library that hooks libc's `recvmsg` never sees tracer's reads.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use rustix::{
    fs::{Mode, OFlags},
    net::{netlink, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType},
    thread::LinkNameSpaceType,
};

use super::{Namespaces, Scope, SocketListing};
use crate::model::socket::{Family, PacketBinding, Protocol, Socket};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_msg`.
const INET_DIAG_MSG_LEN: usize = 72;
/// `struct packet_diag_msg`.
const PACKET_DIAG_MSG_LEN: usize = 16;
/// `PACKET_SHOW_INFO`: ask for `PACKET_DIAG_INFO` (the interface).
const PACKET_SHOW_INFO: u32 = 0x1;
const PACKET_DIAG_INFO: u16 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_PACKET: u8 = 17;
/// A dump that stops answering is abandoned (as a gap, never as "empty").
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// One dump request: which sockets, and how to read the answers.
#[derive(Clone, Copy, Debug)]
struct Dump {
    protocol: Protocol,
    family: Family,
}

const DUMPS: [Dump; 5] = [
    Dump {
        protocol: Protocol::Tcp,
        family: Family::Ipv4,
    },
    Dump {
        protocol: Protocol::Tcp,
        family: Family::Ipv6,
    },
    Dump {
        protocol: Protocol::Udp,
        family: Family::Ipv4,
    },
    Dump {
        protocol: Protocol::Udp,
        family: Family::Ipv6,
    },
    Dump {
        protocol: Protocol::Packet,
        family: Family::Packet,
    },
];

/// Dumps every namespace. Fails only when sock_diag cannot be asked at
/// all; a namespace or family that cannot be read is a gap.
pub fn take(ns: &Namespaces) -> Result<SocketListing, String> {
    let mut listing = SocketListing::default();
    for &netns in ns.members.keys() {
        match open_in(ns, netns) {
            Ok(fd) => dump_namespace(&fd, netns, &mut listing),
            Err(e) if netns == ns.own => {
                return Err(format!("cannot open a NETLINK_SOCK_DIAG socket: {e}"))
            }
            Err(e) => listing.gaps.push(format!("network namespace {netns}: {e}")),
        }
    }
    Ok(listing)
}

/// Dumps one namespace's sockets into `listing`.
pub fn dump_namespace(fd: &OwnedFd, netns: u64, listing: &mut SocketListing) {
    for dump in DUMPS {
        let scope = Scope {
            netns,
            protocol: dump.protocol,
            family: dump.family,
        };
        match run_dump(fd, dump, netns) {
            Ok(sockets) => listing.add(scope, sockets),
            Err(e) => listing.gaps.push(format!(
                "sock_diag {:?}/{:?} in network namespace {netns}: {e}",
                dump.family, dump.protocol
            )),
        }
    }
}

/// A sock_diag socket in namespace `netns`: opened here for tracer's own,
/// else by a thread that first enters the namespace through a member's
/// `/proc/PID/ns/net`.
pub fn open_in(ns: &Namespaces, netns: u64) -> Result<OwnedFd, String> {
    if netns == ns.own {
        return open_socket().map_err(|e| e.to_string());
    }
    let pids = ns.members.get(&netns).cloned().unwrap_or_default();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut last = "no process in it".to_string();
            for pid in pids {
                let path = format!("/proc/{pid}/ns/net");
                let entered =
                    rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                        .and_then(|f| {
                            rustix::thread::move_into_link_name_space(
                                f.as_fd(),
                                Some(LinkNameSpaceType::Network),
                            )
                        });
                match entered {
                    // The socket belongs to the namespace it was made in;
                    // this thread ends, and its namespace change with it.
                    Ok(()) => return open_socket().map_err(|e| e.to_string()),
                    Err(e) => last = format!("entering it through {path}: {e}"),
                }
            }
            Err(last)
        })
        .join()
        .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
    })
}

fn open_socket() -> rustix::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(RECV_TIMEOUT),
    )?;
    Ok(fd)
}

/// Sends one dump request and reads answers until `NLMSG_DONE`.
fn run_dump(fd: &OwnedFd, dump: Dump, netns: u64) -> Result<Vec<Socket>, String> {
    static SEQ: AtomicU32 = AtomicU32::new(1);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let request = request(dump, seq);
    rustix::net::sendto(
        fd,
        &request,
        SendFlags::empty(),
        &netlink::SocketAddrNetlink::new(0, 0),
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, _) = rustix::net::recv(fd, &mut buf[..], RecvFlags::empty())
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Err("the kernel closed the dump".into());
        }
        if parse_messages(&buf[..n], seq, dump, netns, &mut sockets)? {
            return Ok(sockets);
        }
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` (all states) or `packet_diag_req`.
fn request(dump: Dump, seq: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(56);
    match dump.protocol {
        Protocol::Packet => {
            body.extend_from_slice(&[AF_PACKET, 0, 0, 0]);
            body.extend_from_slice(&0u32.to_ne_bytes()); // pdiag_ino: all
            body.extend_from_slice(&PACKET_SHOW_INFO.to_ne_bytes());
            body.extend_from_slice(&[0xff; 8]); // cookie: none
        }
        _ => {
            let family = if dump.family == Family::Ipv4 {
                AF_INET
            } else {
                AF_INET6
            };
            let protocol = if dump.protocol == Protocol::Tcp {
                IPPROTO_TCP
            } else {
                IPPROTO_UDP
            };
            body.extend_from_slice(&[family, protocol, 0, 0]);
            body.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
            body.extend_from_slice(&[0; 40]); // inet_diag_sockid: ports, addresses, if
            body.extend_from_slice(&[0xff; 8]); // cookie: none
        }
    }
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one datagram of netlink messages into `out`. Returns whether the
/// dump is complete; an error message from the kernel, or a message too
/// short for its kind, is an error (never a silently shorter list).
fn parse_messages(
    mut buf: &[u8],
    seq: u32,
    dump: Dump,
    netns: u64,
    out: &mut Vec<Socket>,
) -> Result<bool, String> {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0).unwrap_or(0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(format!("malformed netlink message (length {len})"));
        }
        let kind = u16_at(buf, 4).unwrap_or(0);
        let msg_seq = u32_at(buf, 8).unwrap_or(0);
        let payload = &buf[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = u32_at(payload, 0).map_or(0, |e| -(e as i32));
                    return Err(format!(
                        "the kernel refused the dump: {}",
                        std::io::Error::from_raw_os_error(errno)
                    ));
                }
                SOCK_DIAG_BY_FAMILY => {
                    let socket = match dump.protocol {
                        Protocol::Packet => parse_packet_msg(payload, netns),
                        _ => parse_inet_msg(payload, netns, dump.protocol),
                    };
                    out.push(socket.ok_or("a sock_diag answer too short for its kind")?);
                }
                _ => {}
            }
        }
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or_default();
    }
    Ok(false)
}

/// `struct inet_diag_msg`: family, state, timer, retrans, then the socket
/// id (ports big-endian, addresses in network order), expires, queues,
/// uid and inode.
fn parse_inet_msg(p: &[u8], netns: u64, protocol: Protocol) -> Option<Socket> {
    if p.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = Family::from_af(p[0] as u16)?;
    let addr = |at: usize| -> Option<IpAddr> {
        Some(match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&p[at..at + 4]).ok()?)),
            _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[at..at + 16]).ok()?)),
        })
    };
    let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    Some(Socket {
        netns,
        family,
        protocol,
        state: p[1],
        local: Some(SocketAddr::new(addr(8)?, port(4))),
        remote: Some(SocketAddr::new(addr(24)?, port(6))),
        uid: u32_at(p, 64)?,
        inode: u32_at(p, 68)? as u64,
        packet: None,
        owners: Vec::new(),
    })
}

/// `struct packet_diag_msg` (family, type, protocol number, inode, cookie)
/// and its `PACKET_DIAG_INFO` attribute, which names the interface.
fn parse_packet_msg(p: &[u8], netns: u64) -> Option<Socket> {
    if p.len() < PACKET_DIAG_MSG_LEN {
        return None;
    }
    let mut ifindex = 0;
    let mut attrs = &p[PACKET_DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16_at(attrs, 0)? as usize;
        if len < 4 || len > attrs.len() {
            break;
        }
        if u16_at(attrs, 2)? == PACKET_DIAG_INFO {
            ifindex = u32_at(attrs, 4)?;
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
    }
    Some(Socket {
        netns,
        family: Family::Packet,
        protocol: Protocol::Packet,
        state: 7,
        inode: u32_at(p, 4)? as u64,
        local: None,
        remote: None,
        uid: 0,
        packet: Some(PacketBinding {
            ethertype: u16_at(p, 2)?,
            ifindex,
        }),
        owners: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP4: Dump = Dump {
        protocol: Protocol::Tcp,
        family: Family::Ipv4,
    };

    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn inet_msg() -> Vec<u8> {
        let mut p = vec![0u8; INET_DIAG_MSG_LEN];
        p[0] = AF_INET;
        p[1] = 1; // ESTABLISHED
        p[4..6].copy_from_slice(&40000u16.to_be_bytes());
        p[6..8].copy_from_slice(&3333u16.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[24..28].copy_from_slice(&[127, 0, 0, 2]);
        p[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        p[68..72].copy_from_slice(&424242u32.to_ne_bytes());
        p
    }

    #[test]
    fn inet_answers_parse_until_done() {
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, 9, &inet_msg());
        // Another request's answer in the same datagram is ignored.
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 8, &inet_msg()));
        let mut out = Vec::new();
        assert_eq!(parse_messages(&buf, 9, TCP4, 5, &mut out), Ok(false));
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert_eq!(s.local, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(s.remote, Some("127.0.0.2:3333".parse().unwrap()));
        assert_eq!((s.state, s.uid, s.inode, s.netns), (1, 1000, 424242, 5));
        assert_eq!(
            parse_messages(&nlmsg(NLMSG_DONE, 9, &[0; 4]), 9, TCP4, 5, &mut out),
            Ok(true)
        );
    }

    #[test]
    fn errors_and_truncation_are_errors_not_short_lists() {
        let mut out = Vec::new();
        let refused = nlmsg(NLMSG_ERROR, 1, &(-libc::ENOENT).to_ne_bytes());
        assert!(parse_messages(&refused, 1, TCP4, 0, &mut out)
            .unwrap_err()
            .contains("refused"));
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &inet_msg()[..40]);
        assert!(parse_messages(&short, 1, TCP4, 0, &mut out).is_err());
        let mut lying_length = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &inet_msg());
        lying_length[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(parse_messages(&lying_length, 1, TCP4, 0, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn packet_answers_carry_protocol_and_interface() {
        let mut p = vec![AF_PACKET, 3];
        p.extend_from_slice(&3u16.to_ne_bytes());
        p.extend_from_slice(&777u32.to_ne_bytes());
        p.extend_from_slice(&[0; 8]);
        // PACKET_DIAG_INFO { pdi_index = 2, pdi_version, ... }
        p.extend_from_slice(&12u16.to_ne_bytes());
        p.extend_from_slice(&PACKET_DIAG_INFO.to_ne_bytes());
        p.extend_from_slice(&2u32.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        let s = parse_packet_msg(&p, 1).unwrap();
        assert_eq!(s.inode, 777);
        assert_eq!(
            s.packet,
            Some(PacketBinding {
                ethertype: 3,
                ifindex: 2
            })
        );
    }

    #[test]
    fn own_listener_is_in_the_dump() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fd = open_socket().unwrap();
        let socks = run_dump(&fd, TCP4, 0).unwrap();
        assert!(socks
            .iter()
            .any(|s| s.local.map(|l| l.port()) == Some(port) && s.state == 10 && s.inode != 0));
    }
}
