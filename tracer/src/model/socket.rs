//! Sockets as every view names them: the kernel's iterators, `/proc/net`,
//! sock_diag, `/proc/PID/fd`, `ss` and `netstat`. One type for all views,
//! so that a detector can diff them the way it diffs process lists.
use std::net::SocketAddr;

use serde::Serialize;

/// Address family, as `socket(2)` names it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `AF_INET`.
    Ipv4,
    /// `AF_INET6` (v4-mapped peers stay IPv6 here, as the kernel keeps them).
    Ipv6,
    /// `AF_PACKET`: raw frames from a device (packet-socket backdoors).
    Packet,
}

impl Family {
    /// The name JSON uses (`ipv4`, `ipv6`, `packet`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Packet => "packet",
        }
    }

    /// From the kernel's `AF_*` number.
    pub fn from_af(af: u16) -> Option<Family> {
        match af {
            2 => Some(Family::Ipv4),
            10 => Some(Family::Ipv6),
            17 => Some(Family::Packet),
            _ => None,
        }
    }
}

/// Transport protocol, as `ss` and `netstat` group sockets.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// `SOCK_RAW` on an IP family (`/proc/net/raw`).
    Raw,
    /// Any `AF_PACKET` socket (`/proc/net/packet`).
    Packet,
}

impl Protocol {
    /// The name JSON and `ss` use (`tcp`, `udp`, `raw`, `packet`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Raw => "raw",
            Protocol::Packet => "packet",
        }
    }
}

/// TCP state numbers (include/net/tcp_states.h, a stable ABI), and the
/// names `ss` prints for them. UDP and raw sockets report 7 (`CLOSE`),
/// which `ss` shows as `UNCONN`, or 1 once connected.
pub fn state_name(protocol: Protocol, state: u8) -> &'static str {
    match (protocol, state) {
        (Protocol::Tcp, 1) | (Protocol::Udp | Protocol::Raw, 1) => "ESTAB",
        (Protocol::Tcp, 2) => "SYN-SENT",
        (Protocol::Tcp, 3) => "SYN-RECV",
        (Protocol::Tcp, 4) => "FIN-WAIT-1",
        (Protocol::Tcp, 5) => "FIN-WAIT-2",
        (Protocol::Tcp, 6) => "TIME-WAIT",
        (Protocol::Tcp, 7) => "CLOSE",
        (Protocol::Tcp, 8) => "CLOSE-WAIT",
        (Protocol::Tcp, 9) => "LAST-ACK",
        (Protocol::Tcp, 10) => "LISTEN",
        (Protocol::Tcp, 11) => "CLOSING",
        (Protocol::Tcp, 12) => "NEW-SYN-RECV",
        (_, 7) => "UNCONN",
        _ => "UNKNOWN",
    }
}

/// `TCP_LISTEN`: a socket waiting for connections, not talking to anyone.
pub const TCP_LISTEN: u8 = 10;

/// Which socket two views are talking about. Within one network namespace,
/// a socket a file holds has a unique inode, which every view but some
/// `netstat` builds shows; sockets no file holds any more (TIME_WAIT,
/// orphans) have inode 0 and are told apart by their addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SocketKey {
    /// Inode number of the network namespace (`/proc/PID/ns/net`).
    pub netns: u64,
    pub protocol: Protocol,
    pub family: Family,
    pub inode: u64,
    /// `None` for packet sockets.
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// A process that holds a socket open, through one of its descriptors.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
pub struct SocketOwner {
    pub pid: u32,
    pub fd: u32,
}

/// One socket as one view saw it. Views fill in what they know; the kernel
/// view knows everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Socket {
    pub netns: u64,
    pub family: Family,
    pub protocol: Protocol,
    /// TCP state number (see [`state_name`]); 7 for unconnected datagrams.
    pub state: u8,
    /// Socket inode; 0 when no file holds it.
    pub inode: u64,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// `sk_uid`: the user that created it.
    pub uid: u32,
    /// For packet sockets, the ethertype (`ETH_P_ALL` is 0x0003) and the
    /// interface index it is bound to (0: every interface).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<PacketBinding>,
    /// Every process and descriptor that holds it (empty in views that
    /// cannot tell, and for sockets no process holds).
    pub owners: Vec<SocketOwner>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub struct PacketBinding {
    pub ethertype: u16,
    pub ifindex: u32,
}

impl Socket {
    pub fn key(&self) -> SocketKey {
        SocketKey {
            netns: self.netns,
            protocol: self.protocol,
            family: self.family,
            inode: self.inode,
            local: self.local,
            remote: self.remote,
        }
    }

    /// The state as `ss` names it.
    pub fn state_name(&self) -> &'static str {
        state_name(self.protocol, self.state)
    }

    /// A listening TCP socket, or an unconnected datagram socket bound to
    /// a port: what `ss -l` lists.
    pub fn is_listening(&self) -> bool {
        match self.protocol {
            Protocol::Tcp => self.state == TCP_LISTEN,
            _ => self
                .remote
                .is_none_or(|r| r.port() == 0 && r.ip().is_unspecified()),
        }
    }

    /// Has a peer: the remote address to match indicators against and to
    /// block at the firewall.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.remote
            .filter(|r| !(r.port() == 0 && r.ip().is_unspecified()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(protocol: Protocol, state: u8, remote: Option<&str>) -> Socket {
        Socket {
            netns: 4026531840,
            family: Family::Ipv4,
            protocol,
            state,
            inode: 1,
            local: Some("127.0.0.1:5000".parse().unwrap()),
            remote: remote.map(|r| r.parse().unwrap()),
            uid: 0,
            packet: None,
            owners: vec![],
        }
    }

    #[test]
    fn states_are_named_as_ss_names_them() {
        assert_eq!(
            sock(Protocol::Tcp, 1, Some("1.2.3.4:80")).state_name(),
            "ESTAB"
        );
        assert_eq!(
            sock(Protocol::Tcp, 10, Some("0.0.0.0:0")).state_name(),
            "LISTEN"
        );
        assert_eq!(
            sock(Protocol::Udp, 7, Some("0.0.0.0:0")).state_name(),
            "UNCONN"
        );
        assert_eq!(state_name(Protocol::Tcp, 99), "UNKNOWN");
    }

    #[test]
    fn listeners_have_no_peer() {
        let l = sock(Protocol::Tcp, TCP_LISTEN, Some("0.0.0.0:0"));
        assert!(l.is_listening() && l.peer().is_none());
        let e = sock(Protocol::Tcp, 1, Some("10.0.0.1:3333"));
        assert!(!e.is_listening());
        assert_eq!(e.peer(), Some("10.0.0.1:3333".parse().unwrap()));
        let u = sock(Protocol::Udp, 7, Some("0.0.0.0:0"));
        assert!(u.is_listening() && u.peer().is_none());
    }

    #[test]
    fn af_numbers_map_to_families() {
        assert_eq!(Family::from_af(2), Some(Family::Ipv4));
        assert_eq!(Family::from_af(10), Some(Family::Ipv6));
        assert_eq!(Family::from_af(17), Some(Family::Packet));
        assert_eq!(Family::from_af(1), None);
    }
}
