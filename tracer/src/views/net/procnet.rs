//! P: `/proc/net/{tcp,tcp6,udp,udp6,raw,raw6,packet}` read with raw system
//! calls, once per network namespace in use (through `/proc/PID/net` of a
//! process in that namespace). The files are the kernel's own text, so this
//! is a kernel view; only a kernel hook on their `seq_show` can lie here.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::{Scope, SocketListing};
use crate::{
    model::socket::{Family, PacketBinding, Protocol, Socket},
    proc,
};

/// The files of one namespace's `/proc/PID/net` and what each holds.
pub const FILES: [(&str, Protocol, Family); 7] = [
    ("tcp", Protocol::Tcp, Family::Ipv4),
    ("tcp6", Protocol::Tcp, Family::Ipv6),
    ("udp", Protocol::Udp, Family::Ipv4),
    ("udp6", Protocol::Udp, Family::Ipv6),
    ("raw", Protocol::Raw, Family::Ipv4),
    ("raw6", Protocol::Raw, Family::Ipv6),
    ("packet", Protocol::Packet, Family::Packet),
];

/// The network namespaces processes use, each with the processes in it.
#[derive(Clone, Debug, Default)]
pub struct Namespaces {
    /// Namespace inode -> PIDs in it (ascending).
    pub members: BTreeMap<u64, Vec<u32>>,
    /// tracer's own namespace.
    pub own: u64,
}

impl Namespaces {
    /// The namespace of each listed process (ascending PIDs): `known` when
    /// it knows (the kernel's task iterator reads `nsproxy->net_ns`), else
    /// `/proc/PID/ns/net`, a readlink per process.
    pub fn discover(
        pids: impl IntoIterator<Item = u32>,
        known: impl Fn(u32) -> Option<u64>,
    ) -> Namespaces {
        let mut ns = Namespaces {
            own: netns_of("self").unwrap_or_default(),
            ..Default::default()
        };
        for pid in pids {
            if let Some(inode) = known(pid).or_else(|| netns_of(&pid.to_string())) {
                ns.members.entry(inode).or_default().push(pid);
            }
        }
        ns.members.entry(ns.own).or_default();
        ns
    }

    /// The `/proc/.../net` directories through which a namespace can be
    /// read: tracer's own first for its namespace, else its processes'
    /// (lazily: the first readable one ends the search).
    pub fn net_dirs(&self, netns: u64) -> impl Iterator<Item = String> + '_ {
        let own = (netns == self.own).then(|| "/proc/self/net".to_string());
        let members = self.members.get(&netns).into_iter().flatten();
        own.into_iter()
            .chain(members.map(|p| format!("/proc/{p}/net")))
    }
}

/// The inode of a process's network namespace, from `net:[INODE]`.
pub fn netns_of(pid: &str) -> Option<u64> {
    let link = proc::read_link(&format!("/proc/{pid}/ns/net")).ok()?;
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Every socket `/proc/net` shows, in every namespace in use.
pub fn take(ns: &Namespaces) -> SocketListing {
    let mut listing = SocketListing::default();
    for &netns in ns.members.keys() {
        read_namespace(ns, netns, &mut listing);
    }
    listing
}

/// Reads one namespace's files into `listing`, trying its processes in turn
/// (one may exit while it is read).
pub fn read_namespace(ns: &Namespaces, netns: u64, listing: &mut SocketListing) {
    for (file, protocol, family) in FILES {
        let scope = Scope {
            netns,
            protocol,
            family,
        };
        let read = ns
            .net_dirs(netns)
            .find_map(|dir| proc::read_proc_table(&format!("{dir}/{file}")).ok());
        match read {
            Some(bytes) => listing.add(scope, parse(&bytes, netns, protocol, family)),
            None => listing.gaps.push(format!(
                "/proc/PID/net/{file} of network namespace {netns}: no process in it could be read"
            )),
        }
    }
}

/// Parses one `/proc/net` file. Lines that do not parse are skipped.
pub fn parse(bytes: &[u8], netns: u64, protocol: Protocol, family: Family) -> Vec<Socket> {
    let text = String::from_utf8_lossy(bytes);
    let lines = text.lines().skip(1);
    match protocol {
        Protocol::Packet => lines.filter_map(|l| parse_packet_line(l, netns)).collect(),
        _ => lines
            .filter_map(|l| parse_inet_line(l, netns, protocol, family))
            .collect(),
    }
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`
fn parse_inet_line(line: &str, netns: u64, protocol: Protocol, family: Family) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || !f[0].ends_with(':') {
        return None;
    }
    Some(Socket {
        netns,
        family,
        protocol,
        local: Some(parse_hex_endpoint(f[1])?),
        remote: Some(parse_hex_endpoint(f[2])?),
        state: u8::from_str_radix(f[3], 16).ok()?,
        uid: f[7].parse().ok()?,
        inode: f[9].parse().ok()?,
        packet: None,
        owners: Vec::new(),
    })
}

/// `sk RefCnt Type Proto Iface R Rmem User Inode` (Proto in hex).
fn parse_packet_line(line: &str, netns: u64) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 9 {
        return None;
    }
    Some(Socket {
        netns,
        family: Family::Packet,
        protocol: Protocol::Packet,
        state: 7,
        inode: f[8].parse().ok()?,
        local: None,
        remote: None,
        uid: f[7].parse().ok()?,
        packet: Some(PacketBinding {
            ethertype: u16::from_str_radix(f[3], 16).ok()?,
            ifindex: f[4].parse().ok()?,
        }),
        owners: Vec::new(),
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel
/// prints each 32-bit word of the address as a number in host byte order,
/// and the port as a number.
pub fn parse_hex_endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_endpoints_decode_v4_v6_and_v4_mapped() {
        assert_eq!(
            parse_hex_endpoint("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_hex_endpoint("00000000000000000000000001000000:0016"),
            Some("[::1]:22".parse().unwrap())
        );
        assert_eq!(
            parse_hex_endpoint("0000000000000000FFFF00000100007F:0050"),
            Some("[::ffff:127.0.0.1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_hex_endpoint("B80D0120000000000000000001000000:01BB"),
            Some("[2001:db8::1]:443".parse().unwrap())
        );
        for bad in [
            "",
            "0100007F",
            "0100007G:0050",
            "0100:0050",
            "0100007F:10000",
        ] {
            assert_eq!(parse_hex_endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn tcp_file_lines_become_sockets_and_garbage_is_skipped() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A1B2 0100007F:0277 01 00000000:00000000 00:00000000 00000000  1000        0 23999 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:A1B3 0100007F:0277 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n\
garbage \x1b[31m line\n\
   3: 0100007F:XYZ 0100007F:0277 01\n";
        let socks = parse(text.as_bytes(), 42, Protocol::Tcp, Family::Ipv4);
        assert_eq!(socks.len(), 3);
        assert_eq!(socks[0].state_name(), "LISTEN");
        assert_eq!(socks[0].inode, 23456);
        assert_eq!(socks[1].uid, 1000);
        assert_eq!(socks[1].remote, Some("127.0.0.1:631".parse().unwrap()));
        assert_eq!(socks[1].netns, 42);
        assert_eq!((socks[2].state_name(), socks[2].inode), ("TIME-WAIT", 0));
    }

    #[test]
    fn packet_file_lines_keep_ethertype_and_interface() {
        let text = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n\
ffff8881054e3000 3      3    0003   2     1 0      0      31337\n\
short line\n";
        let socks = parse(text.as_bytes(), 1, Protocol::Packet, Family::Packet);
        assert_eq!(socks.len(), 1);
        assert_eq!(
            socks[0].packet,
            Some(PacketBinding {
                ethertype: 3,
                ifindex: 2
            })
        );
        assert_eq!(socks[0].inode, 31337);
    }

    #[test]
    fn this_process_namespace_is_found_and_readable() {
        let me = std::process::id();
        let ns = Namespaces::discover([me], |_| None);
        assert_ne!(ns.own, 0);
        assert_eq!(ns.members[&ns.own], [me]);
        let listing = take(&ns);
        assert!(listing.covers.iter().any(|s| s.protocol == Protocol::Tcp));
    }
}
