//! S: the sockets the `ss` and `netstat` programs print, as a responder
//! would run them: the first of each on PATH, and `/usr/bin` and `/bin`'s
//! copies when they are other files, so a trojaned copy early in PATH shows
//! against the packaged one. Each runs with a time limit; its output is the
//! attacker's text and is parsed defensively (lines that do not parse are
//! skipped, never trusted).
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
};

use super::{Scope, SocketListing, INET_PARTS};
use crate::{
    model::socket::{state_name, Family, Protocol, Socket},
    views::{
        ps::{first_in_path, is_executable, same_file},
        run_helper, HELPER_TIMEOUT,
    },
};

/// Which program, which decides how to run it and read its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    Ss,
    Netstat,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Ss => "ss",
            Tool::Netstat => "netstat",
        }
    }

    /// TCP and UDP, every state, numeric, with socket inodes.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Tool::Ss => &["-tuane"],
            Tool::Netstat => &["-tuanWe"],
        }
    }

    /// The Debian package that ships it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Ss => "iproute2",
            Tool::Netstat => "net-tools",
        }
    }
}

/// What one program printed.
#[derive(Clone, Debug)]
pub struct ToolListing {
    pub tool: Tool,
    pub program: PathBuf,
    pub listing: Result<SocketListing, String>,
    pub helper_pid: Option<u32>,
}

impl ToolListing {
    /// Runs the program once; it sees tracer's own network namespace.
    pub fn take(tool: Tool, program: &Path, netns: u64) -> ToolListing {
        let run = run_helper(Command::new(program).args(tool.args()), HELPER_TIMEOUT)
            .and_then(|o| o.success());
        let helper_pid = run.as_ref().ok().map(|o| o.pid);
        let command = format!("{} {}", program.display(), tool.args().join(" "));
        let listing = run
            .map_err(|e| format!("{command} failed: {e:#}"))
            .and_then(|o| {
                let sockets = parse(tool, &o.stdout, netns);
                if !sockets.is_empty() && sockets.iter().all(|s| s.inode == 0) {
                    return Err(format!("{command} printed no socket inodes"));
                }
                let scopes = INET_PARTS.map(|(protocol, family)| Scope {
                    netns,
                    protocol,
                    family,
                });
                Ok(SocketListing::from_parts(scopes, sockets))
            });
        ToolListing {
            tool,
            program: program.to_path_buf(),
            listing,
            helper_pid,
        }
    }
}

/// Runs every distinct `ss` and `netstat`, side by side (each waits on
/// its child).
pub fn take(netns: u64) -> Vec<ToolListing> {
    let programs = programs();
    std::thread::scope(|s| {
        let runs: Vec<_> = programs
            .iter()
            .map(|(tool, program)| {
                (
                    tool,
                    program,
                    s.spawn(|| ToolListing::take(*tool, program, netns)),
                )
            })
            .collect();
        runs.into_iter()
            .map(|(tool, program, run)| {
                run.join().unwrap_or_else(|_| ToolListing {
                    tool: *tool,
                    program: program.clone(),
                    listing: Err("the thread running it panicked".into()),
                    helper_pid: None,
                })
            })
            .collect()
    })
}

/// Each tool's programs: the first on PATH, then `/usr/bin`'s and `/bin`'s
/// when they are other files.
pub fn programs() -> Vec<(Tool, PathBuf)> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut out: Vec<(Tool, PathBuf)> = Vec::new();
    for tool in [Tool::Ss, Tool::Netstat] {
        let system = ["/usr/bin", "/bin"]
            .map(|d| Path::new(d).join(tool.name()))
            .into_iter()
            .filter(|p| is_executable(p));
        let candidates = first_in_path(tool.name(), &path_var)
            .into_iter()
            .chain(system);
        for program in candidates {
            if !out.iter().any(|(_, p)| same_file(p, &program)) {
                out.push((tool, program));
            }
        }
    }
    out
}

/// Parses a tool's output into sockets; lines that are not a TCP or UDP
/// socket line are skipped.
pub fn parse(tool: Tool, text: &str, netns: u64) -> Vec<Socket> {
    text.lines()
        .filter_map(|l| match tool {
            Tool::Ss => parse_ss_line(l, netns),
            Tool::Netstat => parse_netstat_line(l, netns),
        })
        .collect()
}

/// `tcp ESTAB 0 0 127.0.0.1:40000 127.0.0.1:3333 [uid:N] ino:N sk:...`
fn parse_ss_line(line: &str, netns: u64) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let protocol = match *f.first()? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    if f.len() < 6 {
        return None;
    }
    let field = |key: &str| {
        f[6..]
            .iter()
            .find_map(|t| t.strip_prefix(key)?.parse::<u64>().ok())
    };
    let (local, remote) = (parse_endpoint(f[4]), parse_endpoint(f[5]));
    Some(Socket {
        netns,
        family: family_of(local),
        protocol,
        state: state_number(protocol, f[1]),
        inode: field("ino:").unwrap_or(0),
        local,
        remote,
        uid: field("uid:").unwrap_or(0) as u32,
        packet: None,
        owners: Vec::new(),
    })
}

/// `tcp 0 0 127.0.0.1:631 0.0.0.0:* LISTEN 0 23456` (UDP may have no
/// state); the user and inode are the last two columns.
fn parse_netstat_line(line: &str, netns: u64) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (protocol, v6) = match *f.first()? {
        "tcp" => (Protocol::Tcp, false),
        "tcp6" => (Protocol::Tcp, true),
        "udp" => (Protocol::Udp, false),
        "udp6" => (Protocol::Udp, true),
        _ => return None,
    };
    if f.len() < 7 {
        return None;
    }
    let inode = f[f.len() - 1].parse().ok()?;
    let uid = f[f.len() - 2].parse().unwrap_or(0);
    let state = if f.len() >= 8 {
        state_number(protocol, f[5])
    } else {
        7
    };
    Some(Socket {
        netns,
        family: if v6 { Family::Ipv6 } else { Family::Ipv4 },
        protocol,
        state,
        inode,
        local: parse_endpoint(f[3]),
        remote: parse_endpoint(f[4]),
        uid,
        packet: None,
        owners: Vec::new(),
    })
}

/// `127.0.0.1:22`, `[::1]:22`, `::1:22` (netstat), `*:68`, `0.0.0.0:*`,
/// `127.0.0.53%lo:53`. A wildcard port is 0; a wildcard address is
/// unspecified (IPv6's, since ss shows dual-stack sockets so).
pub fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    let (host, port) = s.rsplit_once(':')?;
    let port = if port == "*" { 0 } else { port.parse().ok()? };
    let host = host.strip_prefix('[').unwrap_or(host);
    let host = host.strip_suffix(']').unwrap_or(host);
    let host = host.split('%').next()?;
    let ip = match host {
        "*" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        h => h.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// ss prints no family column: an IPv4 local address is IPv4, anything
/// else (IPv6, v4-mapped, `*`) IPv6.
fn family_of(local: Option<SocketAddr>) -> Family {
    if local.is_some_and(|a| a.is_ipv4()) {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

/// The TCP state number for a name as `ss` (`ESTAB`, `TIME-WAIT`) or
/// `netstat` (`ESTABLISHED`, `TIME_WAIT`) prints it; 7 otherwise.
fn state_number(protocol: Protocol, name: &str) -> u8 {
    let name = match name {
        "ESTABLISHED" => "ESTAB".to_string(),
        other => other.replace('_', "-"),
    };
    (1..=12)
        .find(|&n| state_name(protocol, n) == name)
        .unwrap_or(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SS_OUT: &str = "\
Netid State  Recv-Q Send-Q        Local Address:Port     Peer Address:PortProcess
tcp   LISTEN 0      128                 0.0.0.0:2024          0.0.0.0:*    ino:1667 sk:1 cgroup:/ <->
tcp   ESTAB  0      0                 127.0.0.1:40000       127.0.0.1:3333  uid:1000 ino:52001 sk:2 cgroup:/user.slice <->
tcp   TIME-WAIT 0   0                 127.0.0.1:40002       127.0.0.1:3333  timer:(timewait,59sec,0) ino:0 sk:3
tcp   ESTAB  0      0    [::ffff:127.0.0.1]:8080 [::ffff:127.0.0.1]:51000 ino:52002 sk:4
udp   UNCONN 0      0         127.0.0.53%lo:53            0.0.0.0:*    uid:991 ino:1500 sk:5
udp   UNCONN 0      0                     *:5353                *:*    ino:1501 sk:6
tcp   ESTAB  0      0  \x1b[2J\u{7f}garbage:xx
nl    UNCONN 0      0              rtnl:kernel                  *     ino:1 sk:7
";

    #[test]
    fn ss_lines_give_inode_addresses_and_state() {
        let socks = parse(Tool::Ss, SS_OUT, 9);
        let inodes: Vec<u64> = socks.iter().map(|s| s.inode).collect();
        assert_eq!(inodes, [1667, 52001, 0, 52002, 1500, 1501]);
        assert_eq!(socks[0].state_name(), "LISTEN");
        assert_eq!(socks[1].remote, Some("127.0.0.1:3333".parse().unwrap()));
        assert_eq!((socks[1].uid, socks[1].family), (1000, Family::Ipv4));
        assert_eq!(socks[2].state_name(), "TIME-WAIT");
        assert_eq!(socks[3].family, Family::Ipv6);
        assert_eq!(
            socks[3].local,
            Some("[::ffff:127.0.0.1]:8080".parse().unwrap())
        );
        assert_eq!(socks[4].local, Some("127.0.0.53:53".parse().unwrap()));
        assert_eq!(socks[5].state_name(), "UNCONN");
        assert!(socks.iter().all(|s| s.netns == 9));
    }

    const NETSTAT_OUT: &str = "\
Active Internet connections (servers and established)
Proto Recv-Q Send-Q Local Address           Foreign Address         State       User       Inode
tcp        0      0 0.0.0.0:2024            0.0.0.0:*               LISTEN      0          1667
tcp        0      0 127.0.0.1:40000         127.0.0.1:3333          ESTABLISHED 1000       52001
tcp6       0      0 ::ffff:127.0.0.1:8080   ::ffff:127.0.0.1:51000  ESTABLISHED 0          52002
tcp6       0      0 :::22                   :::*                    LISTEN      0          1700
udp        0      0 127.0.0.53:53           0.0.0.0:*                           991        1500
udp6       0      0 ::1:323                 :::*                                0          1502
tcp        0      0 127.0.0.1:40002         127.0.0.1:3333          TIME_WAIT   0          0
tcp   half a line
";

    #[test]
    fn netstat_lines_give_inode_addresses_and_state() {
        let socks = parse(Tool::Netstat, NETSTAT_OUT, 1);
        let inodes: Vec<u64> = socks.iter().map(|s| s.inode).collect();
        assert_eq!(inodes, [1667, 52001, 52002, 1700, 1500, 1502, 0]);
        assert_eq!(socks[1].state_name(), "ESTAB");
        assert_eq!(socks[1].uid, 1000);
        assert_eq!(
            socks[2].local,
            Some("[::ffff:127.0.0.1]:8080".parse().unwrap())
        );
        assert_eq!(socks[3].local, Some("[::]:22".parse().unwrap()));
        assert_eq!((socks[4].state_name(), socks[4].uid), ("UNCONN", 991));
        assert_eq!(socks[5].family, Family::Ipv6);
        assert_eq!(socks[6].state_name(), "TIME-WAIT");
    }

    #[test]
    fn endpoints_in_every_spelling() {
        let ep = |s| parse_endpoint(s);
        assert_eq!(ep("0.0.0.0:*"), Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(ep("[::]:*"), Some("[::]:0".parse().unwrap()));
        assert_eq!(ep("*:*"), Some("[::]:0".parse().unwrap()));
        assert_eq!(
            ep("[fe80::1%eth0]:546"),
            Some("[fe80::1]:546".parse().unwrap())
        );
        assert_eq!(ep("::1:631"), Some("[::1]:631".parse().unwrap()));
        for bad in ["", "host", "1.2.3.4:99999", "nonsense:80", ":::x"] {
            assert_eq!(ep(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_tool_that_prints_no_inodes_is_not_taken_as_a_view() {
        let dir = std::env::temp_dir().join(format!("tracer-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("ss");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'tcp ESTAB 0 0 127.0.0.1:1 127.0.0.1:2'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let listing = ToolListing::take(Tool::Ss, &fake, 1);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(listing.listing.unwrap_err().contains("no socket inodes"));
        assert!(listing.helper_pid.is_some());
    }
}
