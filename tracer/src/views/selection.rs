//! What a selector names: the processes that use a file (`--file PATH`,
//! or `kill-tree PATH`) or hold a connection to an address (`--remote
//! ADDR[:PORT]`), each with why it matched. `kill-tree`, `hidden` and `net`
//! share it, so the responder looks at exactly the set that would be
//! stopped.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use schemars::JsonSchema;
use serde::Serialize;

use super::file_users::{self, FileUsers};
use crate::{error::UserError, kernel::Kernel, model::HostStr};

/// A way to name processes other than by PID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every process that runs, maps or holds open this file.
    File(PathBuf),
    /// Every process holding a connection to this address.
    Remote(Remote),
}

/// `ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl Remote {
    pub fn parse(text: &str) -> Result<Remote, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Remote { ip, port: None });
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Remote {
                ip: addr.ip(),
                port: Some(addr.port()),
            });
        }
        if let Some(ip) = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<IpAddr>().ok())
        {
            return Ok(Remote { ip, port: None });
        }
        Err(format!(
            "--remote {text:?}: expected ADDR, ADDR:PORT or [IPV6]:PORT"
        ))
    }

    /// Whether a peer is this address (v4-mapped peers compare as IPv4).
    pub fn is(&self, peer: SocketAddr) -> bool {
        peer.ip().to_canonical() == self.ip.to_canonical()
            && self.port.is_none_or(|p| p == peer.port())
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::File(path) => write!(
                f,
                "file {}",
                HostStr::from_bytes(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
                    .escaped()
            ),
            Selector::Remote(Remote { ip, port: None }) => write!(f, "remote {ip}"),
            Selector::Remote(Remote {
                ip: IpAddr::V6(ip),
                port: Some(p),
            }) => write!(f, "remote [{ip}]:{p}"),
            Selector::Remote(Remote { ip, port: Some(p) }) => write!(f, "remote {ip}:{p}"),
        }
    }
}

/// The processes a selector matched, and why each.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Selection {
    /// The selector as given: `file /tmp/x`, `remote 10.0.0.1:3333`.
    pub selector: String,
    /// Every matching process (PID) with why it matched: "runs it",
    /// "maps it", "holds it open as fd 3", "connected to ... (fd 5)".
    pub matched: BTreeMap<u32, Vec<String>>,
    /// Matches planning refused (PID 1, kernel threads, tracer's own
    /// chain), with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<u32, String>,
    /// For a file: the identities (device, inode) it was matched by.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// What the search could not cover, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
}

impl Selection {
    /// The matched PIDs, in PID order (planning orders them by start).
    pub fn pids(&self) -> Vec<u32> {
        self.matched.keys().copied().collect()
    }

    /// Fails with one line (exit code 7) when nothing matched.
    pub fn require_some(&self) -> anyhow::Result<()> {
        if self.matched.is_empty() {
            let mut why = format!("{}: no process matches", self.selector);
            if let Some(gap) = self.gaps.first() {
                why.push_str(&format!(" ({gap})"));
            }
            return Err(UserError::NoMatch(why).into());
        }
        Ok(())
    }
}

/// Runs `selector` against the kernel's views (or /proc when `kernel` is
/// not there, with a gap saying so).
pub fn select(kernel: Result<&mut Kernel, String>, selector: &Selector) -> Selection {
    let mut selection = Selection {
        selector: selector.to_string(),
        matched: BTreeMap::new(),
        refused: BTreeMap::new(),
        identities: Vec::new(),
        gaps: Vec::new(),
    };
    match selector {
        Selector::File(path) => {
            let FileUsers {
                identities,
                users,
                gaps,
            } = file_users::find(kernel, path);
            selection.identities = identities;
            selection.gaps = gaps;
            selection.matched = users
                .into_iter()
                .map(|(pid, uses)| (pid, uses.iter().map(|u| u.describe()).collect()))
                .collect();
        }
        Selector::Remote(remote) => {
            let view =
                kernel.and_then(|k| super::net::kernel::take(k).map_err(|e| format!("{e:#}")));
            match view {
                Ok(view) => {
                    selection.gaps = view.gaps.clone();
                    for s in &view.sockets {
                        let Some(peer) = s.peer().filter(|p| !s.is_listening() && remote.is(*p))
                        else {
                            continue;
                        };
                        for o in &s.owners {
                            selection.matched.entry(o.pid).or_default().push(format!(
                                "connected to {peer} ({} {}, fd {})",
                                s.protocol.name(),
                                s.state_name(),
                                o.fd
                            ));
                        }
                    }
                }
                Err(why) => selection
                    .gaps
                    .push(format!("kernel socket view unavailable: {why}")),
            }
        }
    }
    selection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addresses_parse_with_and_without_port() {
        let r = Remote::parse("10.0.0.1").unwrap();
        assert_eq!((r.ip.to_string(), r.port), ("10.0.0.1".into(), None));
        let r = Remote::parse("10.0.0.1:3333").unwrap();
        assert_eq!(r.port, Some(3333));
        let r = Remote::parse("[::1]:80").unwrap();
        assert_eq!((r.ip.to_string(), r.port), ("::1".into(), Some(80)));
        assert_eq!(Remote::parse("::1").unwrap().port, None);
        assert_eq!(Remote::parse("[::1]").unwrap().port, None);
        assert!(Remote::parse("pool.example:80").is_err());
        assert!(Remote::parse("10.0.0.1:99999").is_err());
    }

    #[test]
    fn a_remote_matches_its_peer_and_port() {
        let r = Remote::parse("127.0.0.1:3333").unwrap();
        assert!(r.is("127.0.0.1:3333".parse().unwrap()));
        assert!(r.is("[::ffff:127.0.0.1]:3333".parse().unwrap()));
        assert!(!r.is("127.0.0.1:3334".parse().unwrap()));
        let any_port = Remote::parse("127.0.0.1").unwrap();
        assert!(any_port.is("127.0.0.1:1".parse().unwrap()));
    }

    #[test]
    fn selectors_display_as_given() {
        let s = Selector::Remote(Remote::parse("[::1]:80").unwrap());
        assert_eq!(s.to_string(), "remote [::1]:80");
        let f = Selector::File(PathBuf::from("/tmp/a\nb"));
        assert_eq!(f.to_string(), "file /tmp/a\\nb");
    }
}
