//! Domains learned from the host's own DNS answers, without a lookup.
//!
//! Resolving a pool domain from a compromised host puts the lookup into the
//! incident's DNS logs (and the SOC's alerts). Instead, watch reads the
//! answers the host already receives: `AF_PACKET` sockets for IPv4 and
//! IPv6 (the host's network namespace, every interface, received packets
//! only) with a classic BPF filter that keeps
//! only IPv4 and IPv6 UDP and TCP packets from source port 53 arriving at
//! the host (answers to its programs, including those of a local stub
//! resolver on loopback). The kernel filters; user space reads the packets
//! with `recv` through rustix (no libc in the data path) and parses them
//! with the `simple-dns` crate. A DNS message over TCP is read when it
//! starts in one segment and fits in it (most answers do).
//!
//! Each A and AAAA record teaches an address and the names that led to it
//! (the question's name, then the CNAME chain): [`DnsCache`] keeps them,
//! bounded (see its constants), so a connect to that address is tagged
//! with the domain and domain indicators match on it.
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use simple_dns::{rdata::RData, Packet, PacketFlag, RCODE};

use crate::model::HostStr;

/// Shortest time an answer is kept, whatever its TTL: programs and local
/// caches (nscd, a stub resolver) keep answers past a short TTL, and a
/// miner reconnects to the address it already has.
pub const MIN_KEEP: Duration = Duration::from_secs(600);
/// Longest time an answer is kept, whatever its TTL.
pub const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Most addresses remembered; past it the entry that expires first goes.
pub const MAX_ADDRESSES: usize = 65_536;
/// Most names kept per address (a CDN address serves many), newest first.
pub const MAX_NAMES_PER_ADDRESS: usize = 8;
/// Longest CNAME chain followed back to the question.
const MAX_CHAIN: usize = 16;
/// Most packets read in one drain, so a DNS flood cannot stall watch.
const MAX_PACKETS_PER_DRAIN: usize = 4096;

/// One address an answer mapped, with the names that led to it: the
/// question's name first, then each CNAME on the way to the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub addr: IpAddr,
    pub names: Vec<HostStr>,
    pub ttl: u32,
}

#[derive(Debug)]
struct CacheEntry {
    names: Vec<HostStr>,
    expires: Instant,
}

/// Address -> names, from DNS answers seen. Each entry lives for its TTL
/// clamped to [`MIN_KEEP`]..[`MAX_KEEP`] (a later answer renews it); at most
/// [`MAX_ADDRESSES`] entries, the one expiring first evicted when full.
#[derive(Debug, Default)]
pub struct DnsCache {
    by_addr: HashMap<IpAddr, CacheEntry>,
    /// (expiry, address) of every entry, for expiry and eviction in order.
    by_expiry: BTreeSet<(Instant, IpAddr)>,
}

impl DnsCache {
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// Takes in one learned address at `now`.
    pub fn learn(&mut self, l: Learned, now: Instant) {
        self.expire(now);
        let addr = l.addr.to_canonical();
        let keep = Duration::from_secs(l.ttl.into()).clamp(MIN_KEEP, MAX_KEEP);
        let expires = now + keep;
        let mut names = l.names;
        if let Some(old) = self.by_addr.remove(&addr) {
            self.by_expiry.remove(&(old.expires, addr));
            for n in old.names {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names.truncate(MAX_NAMES_PER_ADDRESS);
        while self.by_addr.len() >= MAX_ADDRESSES {
            let Some((_, victim)) = self.by_expiry.pop_first() else {
                break;
            };
            self.by_addr.remove(&victim);
        }
        self.by_expiry.insert((expires, addr));
        self.by_addr.insert(addr, CacheEntry { names, expires });
    }

    /// The names `addr` was last answered for, newest answer first.
    pub fn names(&self, addr: IpAddr, now: Instant) -> &[HostStr] {
        match self.by_addr.get(&addr.to_canonical()) {
            Some(e) if e.expires > now => &e.names,
            _ => &[],
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(when, addr)) = self.by_expiry.first() {
            if when > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_addr.remove(&addr);
        }
    }
}

/// The DNS message in an IP packet from source port 53 (UDP, or TCP with
/// the whole message in this segment), or None.
pub fn dns_payload(packet: &[u8]) -> Option<&[u8]> {
    const UDP: u8 = 17;
    const TCP: u8 = 6;
    let version = packet.first()? >> 4;
    let (proto, l4) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
            if ihl < 20 || frag & 0x3fff != 0 {
                return None; // a fragment: the message is not all here
            }
            (*packet.get(9)?, packet.get(ihl..total.min(packet.len()))?)
        }
        6 => {
            let len = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            (
                *packet.get(6)?,
                packet.get(40..(40 + len).min(packet.len()))?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    if sport != 53 {
        return None;
    }
    match proto {
        UDP => l4.get(8..),
        TCP => {
            let off = usize::from(l4.get(12)? >> 4) * 4;
            let seg = l4.get(off..)?;
            let len = usize::from(u16::from_be_bytes([*seg.first()?, *seg.get(1)?]));
            seg.get(2..2 + len)
        }
        _ => None,
    }
}

/// Every address a DNS response maps, with the names that led to it.
/// Queries, errors and unparsable messages give nothing.
pub fn answers(message: &[u8]) -> Vec<Learned> {
    let Ok(packet) = Packet::parse(message) else {
        return Vec::new();
    };
    if !packet.has_flags(PacketFlag::RESPONSE) || packet.rcode() != RCODE::NoError {
        return Vec::new();
    }
    let name = |n: &simple_dns::Name| -> HostStr {
        let labels: Vec<Vec<u8>> = n
            .get_labels()
            .iter()
            .map(|l| l.as_ref().to_ascii_lowercase())
            .collect();
        HostStr::from_bytes(&labels.join(&b'.'))
    };
    // CNAME target -> owner, to walk back from a record to the question.
    let aliases: HashMap<HostStr, HostStr> = packet
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::CNAME(c) => Some((name(&c.0), name(&rr.name))),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for rr in &packet.answers {
        let addr = match &rr.rdata {
            RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
            RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        let mut names = vec![name(&rr.name)];
        while let Some(owner) = aliases.get(&names[0]) {
            if names.len() >= MAX_CHAIN || names.contains(owner) {
                break;
            }
            names.insert(0, owner.clone());
        }
        out.push(Learned {
            addr,
            names,
            ttl: rr.ttl,
        });
    }
    out
}

/// The packet sockets that read DNS answers, and what they taught.
pub struct DnsWatch {
    /// One for IPv4, one for IPv6.
    fds: Vec<OwnedFd>,
    pub cache: DnsCache,
    buf: Vec<u8>,
}

/// How DNS answers are read, for the start record.
pub const SOURCE: &str =
    "AF_PACKET sockets (IPv4, IPv6), classic BPF filter on UDP and TCP source port 53 (answers arriving at this host, its network namespace)";

impl DnsWatch {
    /// Opens a packet socket per IP version, each with its filter. Bound
    /// to one protocol (not `ETH_P_ALL`), a packet socket sees only
    /// packets received, so the host's outgoing traffic is never copied
    /// to it. Needs CAP_NET_RAW.
    pub fn open() -> Result<Self> {
        use rustix::net::eth;
        let fds = [eth::IP, eth::IPV6]
            .into_iter()
            .map(open_filtered)
            .collect::<Result<Vec<_>>>()?;
        Ok(DnsWatch {
            fds,
            cache: DnsCache::default(),
            buf: vec![0; 65_536],
        })
    }

    /// Reads every answer queued on the socket into the cache. Never
    /// blocks. Called before each connect is matched, so an answer that
    /// reached the host before the connect is always taken in first.
    pub fn drain(&mut self) {
        let now = Instant::now();
        for fd in &self.fds {
            for _ in 0..MAX_PACKETS_PER_DRAIN {
                let n = match rustix::net::recv(
                    fd,
                    &mut self.buf[..],
                    rustix::net::RecvFlags::DONTWAIT,
                ) {
                    Ok((n, _)) => n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => break, // EAGAIN: nothing left
                };
                let Some(msg) = dns_payload(&self.buf[..n.min(self.buf.len())]) else {
                    continue;
                };
                for l in answers(msg) {
                    self.cache.learn(l, now);
                }
            }
        }
    }

    /// The names `addr` was answered for (drain first).
    pub fn names(&self, addr: IpAddr) -> &[HostStr] {
        self.cache.names(addr, Instant::now())
    }
}

/// Classic BPF: keep packets arriving at the host (never outgoing copies,
/// should a socket see them) that are IPv4 or IPv6, UDP or TCP, from source port 53, and
/// not a later IPv4 fragment. Offsets are from the network header (a
/// `SOCK_DGRAM` packet socket).
fn filter() -> Vec<libc::sock_filter> {
    const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
    const SKF_AD_PROTOCOL: u32 = 0;
    const SKF_AD_PKTTYPE: u32 = 4;
    const PACKET_OUTGOING: u32 = 4;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const LD_H_ABS: u16 = 0x28;
    const LD_B_ABS: u16 = 0x30;
    const LD_H_IND: u16 = 0x48;
    const LDX_B_MSH: u16 = 0xb1;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    let s = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        /* 0 */ s(LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        /* 1 */ s(JEQ_K, 17, 0, PACKET_OUTGOING), // -> drop
        /* 2 */ s(LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PROTOCOL),
        /* 3 */ s(JEQ_K, 0, 8, 0x0800), // not IPv4 -> 12
        /* 4 */ s(LD_B_ABS, 0, 0, 9),
        /* 5 */ s(JEQ_K, 1, 0, 17),
        /* 6 */ s(JEQ_K, 0, 12, 6), // neither UDP nor TCP -> drop
        /* 7 */ s(LD_H_ABS, 0, 0, 6),
        /* 8 */ s(JSET_K, 10, 0, 0x1fff), // a later fragment -> drop
        /* 9 */ s(LDX_B_MSH, 0, 0, 0),
        /* 10 */ s(LD_H_IND, 0, 0, 0),
        /* 11 */ s(JEQ_K, 6, 7, 53),
        /* 12 */ s(JEQ_K, 0, 6, 0x86dd), // not IPv6 -> drop
        /* 13 */ s(LD_B_ABS, 0, 0, 6),
        /* 14 */ s(JEQ_K, 1, 0, 17),
        /* 15 */ s(JEQ_K, 0, 3, 6),
        /* 16 */ s(LD_H_ABS, 0, 0, 40),
        /* 17 */ s(JEQ_K, 0, 1, 53),
        /* 18 */ s(RET_K, 0, 0, 0xffff),
        /* 19 */ s(RET_K, 0, 0, 0),
    ]
}

/// A non-blocking packet socket for `protocol`, with the port-53 filter.
fn open_filtered(protocol: rustix::net::Protocol) -> Result<OwnedFd> {
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    let fd = socket_with(
        AddressFamily::PACKET,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(protocol),
    )
    .context("opening a packet socket for DNS answers")?;
    attach_filter(&fd).context("attaching the port-53 filter to the packet socket")?;
    // Drained every few tens of ms: room for bursts between drains.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 1 << 20);
    Ok(fd)
}

fn attach_filter(fd: &OwnedFd) -> std::io::Result<()> {
    let mut prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // The raw system call: a preloaded library cannot intercept it.
    // SAFETY: fprog points at `prog`, alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use simple_dns::{
        rdata::{A, AAAA, CNAME},
        Name, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE,
    };

    use super::*;

    /// A response to `qname` with a CNAME to `alias` and its A and AAAA.
    fn response(qname: &str, alias: &str, ttl: u32) -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked(qname),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(qname),
            CLASS::IN,
            ttl,
            RData::CNAME(CNAME(Name::new_unchecked(alias))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(alias),
            CLASS::IN,
            ttl,
            RData::A(A {
                address: u32::from(Ipv4Addr::new(127, 0, 0, 9)),
            }),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(alias),
            CLASS::IN,
            ttl,
            RData::AAAA(AAAA {
                address: u128::from(Ipv6Addr::LOCALHOST),
            }),
        ));
        p.build_bytes_vec().unwrap()
    }

    /// `payload` in an IPv4 packet from port `sport`, over UDP or TCP.
    fn ipv4(payload: &[u8], sport: u16, tcp: bool) -> Vec<u8> {
        let mut l4 = sport.to_be_bytes().to_vec();
        l4.extend_from_slice(&40000u16.to_be_bytes());
        if tcp {
            l4.extend_from_slice(&[0; 8]);
            l4.push(5 << 4); // data offset: 20 bytes
            l4.extend_from_slice(&[0; 7]);
            l4.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(payload);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
        ip.extend_from_slice(&[127, 0, 0, 53, 127, 0, 0, 1]);
        ip.extend_from_slice(&l4);
        ip
    }

    #[test]
    fn answers_name_each_address_with_the_question_and_its_cnames() {
        let learned = answers(&response("Pool.Example.ORG", "eu.cdn.example.net", 30));
        let names = |l: &Learned| l.names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(learned.len(), 2);
        assert_eq!(learned[0].addr, "127.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(learned[1].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            names(&learned[0]),
            ["pool.example.org", "eu.cdn.example.net"]
        );
        assert_eq!(learned[0].ttl, 30);
        // A query, garbage, and an empty message teach nothing.
        let mut q = Packet::new_query(1);
        q.questions.push(Question::new(
            Name::new_unchecked("x.example"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        assert!(answers(&q.build_bytes_vec().unwrap()).is_empty());
        assert!(answers(b"\xff\x00garbage").is_empty());
        assert!(answers(&[]).is_empty());
    }

    #[test]
    fn names_that_are_not_text_stay_bytes() {
        // Lower-cased (ASCII only), never printed raw.
        let learned = answers(&response("a.example", "B\u{1b}[2J\u{ff}.example", 30));
        assert_eq!(learned[0].names[1].escaped(), "b\\x1b[2j\u{ff}.example");
    }

    #[test]
    fn payload_comes_from_udp_and_whole_tcp_messages_from_port_53_only() {
        let msg = response("pool.example.org", "x.example.net", 30);
        assert_eq!(dns_payload(&ipv4(&msg, 53, false)), Some(&msg[..]));
        assert_eq!(dns_payload(&ipv4(&msg, 53, true)), Some(&msg[..]));
        assert_eq!(dns_payload(&ipv4(&msg, 5353, false)), None);
        // A TCP message cut short is not read.
        let mut cut = ipv4(&msg, 53, true);
        cut.truncate(cut.len() - 4);
        let total = (cut.len() as u16).to_be_bytes();
        cut[2..4].copy_from_slice(&total);
        assert_eq!(dns_payload(&cut), None);
        // A fragment is not read.
        let mut frag = ipv4(&msg, 53, false);
        frag[6] = 0x20;
        assert_eq!(dns_payload(&frag), None);
        // Short and empty packets do not panic.
        for n in 0..40 {
            let _ = dns_payload(&ipv4(&msg, 53, true)[..n]);
        }
        // IPv6, UDP.
        let udp = &ipv4(&msg, 53, false)[20..];
        let mut v6 = vec![0x60, 0, 0, 0];
        v6.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        v6.extend_from_slice(&[17, 64]);
        v6.extend_from_slice(&[0; 32]);
        v6.extend_from_slice(udp);
        assert_eq!(dns_payload(&v6), Some(&msg[..]));
    }

    fn learned(addr: &str, name: &str, ttl: u32) -> Learned {
        Learned {
            addr: addr.parse().unwrap(),
            names: vec![name.into()],
            ttl,
        }
    }

    #[test]
    fn cache_keeps_answers_for_their_ttl_within_bounds() {
        let t0 = Instant::now();
        let mut c = DnsCache::default();
        c.learn(learned("192.0.2.1", "a.example", 5), t0);
        c.learn(learned("192.0.2.2", "b.example", 3 * 3600), t0);
        c.learn(learned("192.0.2.3", "c.example", u32::MAX), t0);
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        // A 5 s TTL is kept MIN_KEEP; IPv4-mapped IPv6 is the same peer.
        assert_eq!(
            c.names(a("::ffff:192.0.2.1"), t0 + MIN_KEEP / 2),
            ["a.example"]
        );
        assert!(c.names(a("192.0.2.1"), t0 + MIN_KEEP).is_empty());
        assert_eq!(
            c.names(a("192.0.2.2"), t0 + Duration::from_secs(2 * 3600))
                .len(),
            1
        );
        assert!(c.names(a("192.0.2.3"), t0 + MAX_KEEP).is_empty());
        // Expired entries leave on the next answer.
        c.learn(learned("192.0.2.4", "d.example", 60), t0 + MAX_KEEP);
        assert_eq!(c.len(), 1);
        // A second name for an address comes first; names are capped.
        for i in 0..20 {
            c.learn(
                learned("192.0.2.4", &format!("n{i}.example"), 60),
                t0 + MAX_KEEP,
            );
        }
        let names = c.names(a("192.0.2.4"), t0 + MAX_KEEP);
        assert_eq!(names.len(), MAX_NAMES_PER_ADDRESS);
        assert_eq!(names[0], "n19.example");
    }

    #[test]
    fn cache_is_size_capped_and_evicts_what_expires_first() {
        let t0 = Instant::now();
        let mut c = DnsCache::default();
        c.learn(learned("10.255.255.254", "short.example", 0), t0);
        for i in 0..MAX_ADDRESSES as u32 {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            c.learn(
                Learned {
                    addr,
                    names: vec!["x.example".into()],
                    ttl: 3600,
                },
                t0,
            );
        }
        assert_eq!(c.len(), MAX_ADDRESSES);
        assert!(c.names("10.255.255.254".parse().unwrap(), t0).is_empty());
        assert_eq!(c.names("10.0.0.1".parse().unwrap(), t0).len(), 1);
    }
}
