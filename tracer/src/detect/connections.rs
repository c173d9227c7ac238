//! Open connections against indicators, and the connections a set of
//! processes holds: what `tracer net`, watch's start-up snapshot and the
//! kill-tree plan share.
use std::{
    collections::{BTreeSet, HashSet},
    net::{IpAddr, SocketAddr},
};

use super::indicators::{IndicatorMatch, Indicators};
use crate::model::socket::Socket;

/// An open socket whose peer matches an indicator.
#[derive(Debug)]
pub struct OpenMatch<'a> {
    pub socket: &'a Socket,
    pub peer: SocketAddr,
    pub matched: IndicatorMatch,
}

/// The indicator a socket's peer matches, if it has a peer.
pub fn match_socket(socket: &Socket, indicators: &Indicators) -> Option<IndicatorMatch> {
    let peer = socket.peer()?;
    indicators.match_connect(peer.ip(), peer.port())
}

/// Every socket with a peer that matches an indicator, in the given order.
pub fn match_open<'a>(sockets: &'a [Socket], indicators: &Indicators) -> Vec<OpenMatch<'a>> {
    sockets
        .iter()
        .filter_map(|socket| {
            Some(OpenMatch {
                socket,
                peer: socket.peer()?,
                matched: match_socket(socket, indicators)?,
            })
        })
        .collect()
}

/// The sockets any of `pids` holds.
pub fn held_by<'a>(sockets: &'a [Socket], pids: &HashSet<u32>) -> Vec<&'a Socket> {
    sockets
        .iter()
        .filter(|s| s.owners.iter().any(|o| pids.contains(&o.pid)))
        .collect()
}

/// The distinct remote addresses of these sockets, to block at the
/// firewall (v4-mapped peers as IPv4, which is what a firewall matches).
pub fn remote_addresses<'a>(sockets: impl IntoIterator<Item = &'a Socket>) -> Vec<IpAddr> {
    let set: BTreeSet<IpAddr> = sockets
        .into_iter()
        .filter(|s| !s.is_listening())
        .filter_map(|s| s.peer())
        .map(|p| p.ip().to_canonical())
        .collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::socket::{Family, Protocol, SocketOwner};

    fn conn(pid: u32, remote: &str, state: u8) -> Socket {
        Socket {
            netns: 1,
            family: if remote.starts_with('[') {
                Family::Ipv6
            } else {
                Family::Ipv4
            },
            protocol: Protocol::Tcp,
            state,
            inode: pid as u64,
            local: None,
            remote: Some(remote.parse().unwrap()),
            uid: 0,
            packet: None,
            owners: vec![SocketOwner { pid, fd: 3 }],
        }
    }

    #[test]
    fn open_connections_match_by_peer_and_listeners_never() {
        let dir = std::env::temp_dir().join(format!("tracer-conn-ioc-{}", std::process::id()));
        std::fs::write(&dir, "127.0.0.9:3333\n").unwrap();
        let iocs = Indicators::load(std::slice::from_ref(&dir), false).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let sockets = [
            conn(10, "127.0.0.9:3333", 1),
            conn(11, "[::ffff:127.0.0.9]:3333", 1),
            conn(12, "127.0.0.9:80", 1),
            conn(13, "0.0.0.0:0", 10),
        ];
        let m = match_open(&sockets, &iocs);
        let pids: Vec<u32> = m.iter().map(|m| m.socket.owners[0].pid).collect();
        assert_eq!(pids, [10, 11]);
        assert_eq!(m[0].matched.indicator, "127.0.0.9:3333");
    }

    #[test]
    fn block_list_is_the_members_distinct_peers() {
        let sockets = [
            conn(10, "127.0.0.9:3333", 1),
            conn(10, "[::ffff:127.0.0.9]:4444", 1),
            conn(11, "[::1]:5555", 1),
            conn(12, "127.0.0.7:80", 1),
            conn(10, "0.0.0.0:0", 10),
        ];
        let pids: HashSet<u32> = [10, 11].into();
        let held = held_by(&sockets, &pids);
        assert_eq!(held.len(), 4);
        let block = remote_addresses(held);
        assert_eq!(
            block,
            [
                "127.0.0.9".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }
}
