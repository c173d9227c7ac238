//! Rendering of connections as the kernel sees them (`tracer net`, and the
//! connections in a kill-tree plan): one JSON object, or `ss`-like lines
//! with each owner's process and chain.
//!
//! JSON field names are part of tracer's interface (README, "net").
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Write},
};

use schemars::JsonSchema;
use serde::Serialize;

use super::events::ProcessOut;
use crate::{
    detect::indicators::IndicatorMatch,
    kernel::sockets::IteratorStatus,
    model::{
        host_str::escape,
        socket::{Family, PacketBinding, Protocol, Socket},
        HostStr, Severity,
    },
    table::ProcessTable,
    users::Users,
};

/// A process holding a socket, through descriptor `fd`.
#[derive(Serialize, JsonSchema)]
pub struct OwnerOut<'a> {
    pub pid: u32,
    pub fd: u32,
    /// The process, when the table knows it (absent if it exited mid-scan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessOut<'a>>,
    /// PIDs of its parents, nearest first, up to PID 1; each is described
    /// once in the report's `processes` (a few parents hold thousands of
    /// connections: repeating them made the report 5 times larger).
    pub ancestry: Vec<u32>,
}

/// Every parent named in an `ancestry`, by PID.
pub type Ancestors<'a> = BTreeMap<u32, ProcessOut<'a>>;

/// One socket with its holders, and the indicator its peer matches.
#[derive(Serialize, JsonSchema)]
pub struct ConnectionOut<'a> {
    pub netns: u64,
    pub protocol: Protocol,
    pub family: Family,
    /// As `ss` names it (`ESTAB`, `LISTEN`, `TIME-WAIT`, `UNCONN`...).
    pub state: &'static str,
    /// `addr:port` (`[v6]:port`); absent for packet sockets.
    pub local: Option<String>,
    pub remote: Option<String>,
    /// Socket inode; 0 when no file holds it (TIME_WAIT, orphans).
    pub inode: u64,
    pub uid: u32,
    pub user: HostStr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<PacketBinding>,
    /// The indicator the peer matches, with its source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicator: Option<IndicatorMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub owners: Vec<OwnerOut<'a>>,
    /// An unconnected UDP socket's holders' recent destinations, as a
    /// running watch saw them (its lineage file); newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_destinations: Vec<RecentDestination>,
}

/// Where a process sent UDP lately, seen by watch.
#[derive(Serialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct RecentDestination {
    pub pid: u32,
    /// `addr:port`.
    pub remote: String,
    pub seconds_ago: u64,
}

impl<'a> ConnectionOut<'a> {
    /// `s` with its owners from `table`; their parents are added to
    /// `ancestors`.
    pub fn new(
        s: &Socket,
        table: &'a ProcessTable,
        users: &Users,
        matched: Option<(IndicatorMatch, Severity)>,
        ancestors: &mut Ancestors<'a>,
    ) -> Self {
        let (indicator, severity) = matched.map_or((None, None), |(m, sev)| (Some(m), Some(sev)));
        ConnectionOut {
            netns: s.netns,
            protocol: s.protocol,
            family: s.family,
            state: s.state_name(),
            local: s.local.map(|a| a.to_string()),
            remote: s.remote.map(|a| a.to_string()),
            inode: s.inode,
            uid: s.uid,
            user: users.name(s.uid),
            packet: s.packet,
            indicator,
            severity,
            recent_destinations: Vec::new(),
            owners: s
                .owners
                .iter()
                .map(|o| {
                    let process = table.get(o.pid);
                    OwnerOut {
                        pid: o.pid,
                        fd: o.fd,
                        process: process.map(|p| ProcessOut::new(p, users)),
                        ancestry: process
                            .map(|p| {
                                table
                                    .ancestry(&p.id())
                                    .into_iter()
                                    .map(|a| {
                                        ancestors
                                            .entry(a.pid)
                                            .or_insert_with(|| ProcessOut::ancestor(a, users));
                                        a.pid
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect(),
        }
    }
}

/// Counts for the summary line.
#[derive(Serialize, JsonSchema, Default, Debug, PartialEq)]
pub struct NetSummary {
    pub sockets: usize,
    /// By protocol, then state (`tcp` -> `ESTAB` -> 3).
    pub states: BTreeMap<String, BTreeMap<String, usize>>,
    pub families: BTreeMap<String, usize>,
    /// Sockets whose peer matches an indicator.
    pub matched: usize,
    /// Sockets no process holds (TIME_WAIT, orphans).
    pub unowned: usize,
}

impl NetSummary {
    pub fn of(connections: &[ConnectionOut]) -> Self {
        let mut s = NetSummary {
            sockets: connections.len(),
            ..Default::default()
        };
        for c in connections {
            *s.states
                .entry(c.protocol.name().to_string())
                .or_default()
                .entry(c.state.to_string())
                .or_default() += 1;
            *s.families.entry(c.family.name().to_string()).or_default() += 1;
            s.matched += c.indicator.is_some() as usize;
            s.unowned += c.owners.is_empty() as usize;
        }
        s
    }

    /// `12 sockets: tcp 8 (ESTAB 4, LISTEN 4), udp 4 (UNCONN 4); ipv4 9, ipv6 3; ...`
    pub fn line(&self) -> String {
        let mut out = format!("{} sockets", self.sockets);
        let protocols: Vec<String> = self
            .states
            .iter()
            .map(|(proto, states)| {
                let n: usize = states.values().sum();
                let states: Vec<String> =
                    states.iter().map(|(st, n)| format!("{st} {n}")).collect();
                format!("{proto} {n} ({})", states.join(", "))
            })
            .collect();
        if !protocols.is_empty() {
            let _ = write!(out, ": {}", protocols.join(", "));
        }
        let families: Vec<String> = self
            .families
            .iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect();
        if !families.is_empty() {
            let _ = write!(out, "; {}", families.join(", "));
        }
        let _ = write!(
            out,
            "; {} held by no process; {} matching an indicator",
            self.unowned, self.matched
        );
        out
    }
}

/// What `tracer net --json` prints: one object.
#[derive(Serialize, JsonSchema)]
pub struct NetReport<'a> {
    /// Which socket iterators ran.
    pub iterators: &'a [IteratorStatus],
    /// Network namespaces whose unheld sockets were listed.
    pub namespaces: &'a [u64],
    /// What the kernel view could not cover, one line each.
    pub gaps: &'a [String],
    pub elapsed_ms: u64,
    pub summary: NetSummary,
    /// Matching connections first, then in the kernel view's order.
    pub connections: Vec<ConnectionOut<'a>>,
    /// The parents named in the owners' `ancestry`, by PID.
    pub processes: Ancestors<'a>,
    /// With `--file`: the processes that use it (only their connections
    /// are listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<&'a crate::views::selection::Selection>,
}

pub fn write_json(out: &mut impl Write, r: &NetReport) -> io::Result<()> {
    super::schema::write_pretty(out, r)
}

pub fn write_human(out: &mut impl Write, r: &NetReport) -> io::Result<()> {
    if let Some(sel) = r.selection {
        super::findings::write_selection(out, sel)?;
    }
    for gap in r.gaps {
        writeln!(out, "note: {gap}")?;
    }
    writeln!(
        out,
        "{:<6} {:<11} {:<41} {:<41} process",
        "netid", "state", "local", "peer"
    )?;
    for c in &r.connections {
        out.write_all(connection_text(c, &r.processes).as_bytes())?;
    }
    writeln!(out, "{} (in {} ms)", r.summary.line(), r.elapsed_ms)
}

/// One connection, its holders and their chains, as human lines.
pub fn connection_text(c: &ConnectionOut, ancestors: &Ancestors) -> String {
    let mut out = String::new();
    if let (Some(m), Some(sev)) = (&c.indicator, c.severity) {
        let _ = writeln!(
            out,
            "!! [{sev}] peer {} matches {} ({})",
            c.remote.as_deref().unwrap_or("?"),
            escape(&m.indicator),
            escape(&m.source)
        );
    }
    let local = match (&c.local, c.packet) {
        (Some(l), _) => l.clone(),
        (None, Some(p)) => format!("proto 0x{:04x} if {}", p.ethertype, p.ifindex),
        (None, None) => "*".into(),
    };
    let _ = write!(
        out,
        "{:<6} {:<11} {:<41} {:<41}",
        c.protocol.name(),
        c.state,
        local,
        c.remote.as_deref().unwrap_or("*")
    );
    if c.owners.is_empty() {
        let why = if c.inode == 0 {
            "no file holds it"
        } else {
            "held, but by no process the kernel lists"
        };
        let _ = writeln!(out, " ({why}; netns {})", c.netns);
    }
    for (i, o) in c.owners.iter().enumerate() {
        if i > 0 {
            let _ = write!(out, "{:>102}", "");
        }
        match &o.process {
            Some(p) => {
                let _ = writeln!(
                    out,
                    " pid={} fd={} user={}{} comm={} exe={} `{}`",
                    o.pid,
                    o.fd,
                    escape(&p.user),
                    super::events::placement_text(p.namespaces, p.container),
                    escape(p.comm),
                    escape(&super::bounded::cut(
                        p.exe.map_or("?", |e| e.as_str()),
                        super::bounded::FIELD_MAX
                    )),
                    escape(&super::bounded::cmdline(&p.cmdline))
                );
            }
            None => {
                let _ = writeln!(out, " pid={} fd={} (exited)", o.pid, o.fd);
            }
        }
        if !o.ancestry.is_empty() {
            let chain: Vec<String> = o
                .ancestry
                .iter()
                .map(|pid| {
                    let comm = ancestors.get(pid).map_or("?", |a| a.comm.as_str());
                    format!("{}({pid})", escape(comm))
                })
                .collect();
            let _ = writeln!(out, "        chain: {}", chain.join(" < "));
        }
    }
    if !c.recent_destinations.is_empty() {
        let shown: Vec<String> = c
            .recent_destinations
            .iter()
            .take(8)
            .map(|d| format!("{} ({} s ago, pid {})", d.remote, d.seconds_ago, d.pid))
            .collect();
        let more = c.recent_destinations.len().saturating_sub(8);
        let _ = writeln!(
            out,
            "        sent to (seen by watch): {}{}",
            shown.join(", "),
            if more > 0 {
                format!(", +{more} more")
            } else {
                String::new()
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{socket::SocketOwner, Process};

    fn table() -> ProcessTable {
        let mut t = ProcessTable::new();
        let p = |pid, ppid, comm: &str| Process {
            pid,
            ppid,
            comm: comm.into(),
            cmdline: vec![comm.into(), "-o".into()],
            start_ticks: pid as u64,
            ..Default::default()
        };
        t.seed([p(1, 0, "init"), p(50, 1, "bash"), p(60, 50, "xmrig\x1b[2J")]);
        t
    }

    fn socket(state: u8, remote: &str, owners: Vec<SocketOwner>) -> Socket {
        Socket {
            netns: 4026531840,
            family: Family::Ipv4,
            protocol: Protocol::Tcp,
            state,
            inode: 77,
            local: Some("127.0.0.1:40000".parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
            uid: 0,
            packet: None,
            owners,
        }
    }

    #[test]
    fn owner_has_process_and_chain_and_terminal_bytes_are_escaped() {
        let t = table();
        let users = Users::parse("root:x:0:0:root:/root:/bin/bash\n");
        let m = IndicatorMatch {
            indicator: "127.0.0.1:3333".into(),
            source: "iocs.txt:1".into(),
            port_only: false,
        };
        let s = socket(1, "127.0.0.1:3333", vec![SocketOwner { pid: 60, fd: 5 }]);
        let mut ancestors = Ancestors::new();
        let c = ConnectionOut::new(&s, &t, &users, Some((m, Severity::High)), &mut ancestors);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["owners"][0]["process"]["pid"], 60);
        assert_eq!(json["owners"][0]["ancestry"], serde_json::json!([50, 1]));
        assert_eq!(ancestors.keys().copied().collect::<Vec<_>>(), [1, 50]);
        assert_eq!(ancestors[&50].comm.as_str(), "bash");
        assert_eq!(json["indicator"]["source"], "iocs.txt:1");
        assert_eq!(json["state"], "ESTAB");
        let text = connection_text(&c, &ancestors);
        assert!(
            text.starts_with("!! [high] peer 127.0.0.1:3333 matches"),
            "{text}"
        );
        assert!(text.contains("chain: bash(50) < init(1)"), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("xmrig\\x1b[2J"), "{text}");
    }

    #[test]
    fn summary_counts_by_protocol_state_and_family() {
        let t = table();
        let users = Users::parse("");
        let sockets = [
            socket(1, "127.0.0.1:3333", vec![SocketOwner { pid: 60, fd: 5 }]),
            socket(1, "127.0.0.1:3334", vec![SocketOwner { pid: 60, fd: 6 }]),
            socket(10, "0.0.0.0:0", vec![SocketOwner { pid: 50, fd: 3 }]),
            socket(6, "127.0.0.1:3335", vec![]),
        ];
        let conns: Vec<_> = sockets
            .iter()
            .map(|s| ConnectionOut::new(s, &t, &users, None, &mut Ancestors::new()))
            .collect();
        let sum = NetSummary::of(&conns);
        assert_eq!(sum.sockets, 4);
        assert_eq!(sum.states["tcp"]["ESTAB"], 2);
        assert_eq!(sum.families["ipv4"], 4);
        assert_eq!(sum.unowned, 1);
        assert_eq!(
            sum.line(),
            "4 sockets: tcp 4 (ESTAB 2, LISTEN 1, TIME-WAIT 1); ipv4 4; \
             1 held by no process; 0 matching an indicator"
        );
    }
}
