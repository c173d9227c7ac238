//! Hidden connections: diff the socket views, blame the lowest layer that
//! does not show a socket, and confirm each suspect before it becomes a
//! finding. The same method as `detect::hidden` for processes.
//!
//! Layers, lowest first: the kernel (K) -> `/proc/net` (P) -> sock_diag (N)
//! -> `/proc/PID/fd` links (F) -> libc readers of `/proc/net` (L) -> `ss`
//! and `netstat` (S). The reference is the lowest view taken: K when the
//! kernel side lists sockets, else P. Sockets are matched by inode within a
//! network namespace, so only sockets a file holds (inode not 0) are
//! diffed; a view is asked only about the parts it read completely
//! (`SocketListing::covers`). F needs to know who holds a socket, which only
//! K tells, so F is diffed only with K.
//!
//! Views are taken one after another while connections open and close, so
//! a difference alone proves nothing. A suspect is reported only if the
//! lying layer, asked again, still does not show it, and the reference,
//! asked after every such second look, still has the same socket.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
};

use super::hidden::{self, ev, program_evidence, Evidence};
use crate::{
    model::{
        socket::{Socket, SocketOwner},
        Finding, Process, Severity,
    },
    table::ProcessTable,
    views::{
        host::Host,
        net::{
            diag, libc, procnet, tools::Tool, FdView, Namespaces, NetSnapshot, SocketListing,
            ToolListing,
        },
        Snapshot,
    },
};

/// The layer that does not show a socket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetLiar {
    /// The kernel's iterators have it; `/proc/net` does not.
    ProcNet,
    /// `/proc/net` has it; sock_diag does not.
    Diag,
    /// The kernel says a process holds it; that process's `/proc/PID/fd`
    /// does not link it (or the process is missing from /proc).
    Fds,
    /// `/proc/net` has it; read through libc, it is gone.
    Libc,
    /// `/proc/net` has it; this `ss` or `netstat` does not print it.
    Tool(Tool, PathBuf),
}

impl NetLiar {
    pub fn kind(&self) -> &'static str {
        match self {
            NetLiar::ProcNet => "connection-hidden-from-proc-net",
            NetLiar::Diag => "connection-hidden-from-sock-diag",
            NetLiar::Fds => "connection-hidden-from-fds",
            NetLiar::Libc => "connection-hidden-from-libc",
            NetLiar::Tool(Tool::Ss, _) => "connection-hidden-from-ss",
            NetLiar::Tool(Tool::Netstat, _) => "connection-hidden-from-netstat",
        }
    }

    pub fn layer(&self) -> &'static str {
        match self {
            NetLiar::ProcNet => "proc-net",
            NetLiar::Diag => "sock-diag",
            NetLiar::Fds => "proc-fd",
            NetLiar::Libc => "libc",
            NetLiar::Tool(tool, _) => tool.name(),
        }
    }

    /// The view that misses the socket, as a responder would name it.
    pub fn view(&self) -> String {
        match self {
            NetLiar::ProcNet => "/proc/net".into(),
            NetLiar::Diag => "sock_diag (netlink, as ss asks)".into(),
            NetLiar::Fds => "/proc/PID/fd links".into(),
            NetLiar::Libc => "libc's reads of /proc/net".into(),
            NetLiar::Tool(_, path) => path.display().to_string(),
        }
    }
}

/// A socket some layer does not show, before confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSuspect {
    /// The socket as the reference view shows it.
    pub socket: Socket,
    /// Who holds it: the kernel's owners, else the fd links'.
    pub owners: Vec<SocketOwner>,
    /// The lowest layer that misses it.
    pub liar: NetLiar,
    /// Higher layers that miss it too (a consequence, not a cause).
    pub also: Vec<NetLiar>,
}

/// Every socket of the reference view that some layer does not show.
/// Sockets held only by `own_pids` (tracer and its helpers) are skipped.
pub fn suspects(net: &NetSnapshot, own_pids: &BTreeSet<u32>) -> Vec<NetSuspect> {
    let with_kernel = matches!(net.kernel, Some(Ok(_)));
    net.reference()
        .sockets
        .iter()
        .filter(|s| s.inode != 0)
        .filter_map(|s| {
            // Without the kernel view owners are found after confirmation
            // (see `attribute`): few sockets need them.
            let owners = s.owners.clone();
            if !owners.is_empty() && owners.iter().all(|o| own_pids.contains(&o.pid)) {
                return None;
            }
            let mut liars = liars_of(s, &owners, net, with_kernel);
            if liars.is_empty() {
                return None;
            }
            liars.sort();
            let liar = liars.remove(0);
            Some(NetSuspect {
                socket: s.clone(),
                owners,
                liar,
                also: liars,
            })
        })
        .collect()
}

/// Every layer that does not show `s`, unordered.
fn liars_of(
    s: &Socket,
    owners: &[SocketOwner],
    net: &NetSnapshot,
    with_kernel: bool,
) -> Vec<NetLiar> {
    let misses = |l: &SocketListing| l.shows(s) == Some(false);
    let mut liars = Vec::new();
    if with_kernel && misses(&net.procnet) {
        liars.push(NetLiar::ProcNet);
    }
    if net.diag.as_ref().is_ok_and(misses) {
        liars.push(NetLiar::Diag);
    }
    if with_kernel && net.fds.as_ref().is_ok_and(|f| f.misses(s.inode, owners)) {
        liars.push(NetLiar::Fds);
    }
    if net.libc.as_ref().is_ok_and(misses) {
        liars.push(NetLiar::Libc);
    }
    for t in &net.tools {
        if t.listing.as_ref().is_ok_and(misses) {
            liars.push(NetLiar::Tool(t.tool, t.program.clone()));
        }
    }
    liars
}

/// Asks the layers again about a suspect.
pub trait NetRecheck {
    /// The lying layer, asked again, still does not show it.
    fn still_lies(&mut self, s: &NetSuspect) -> bool;
    /// The reference view, asked again, still has the same socket.
    fn still_present(&mut self, s: &NetSuspect) -> bool;
}

/// The suspects that survive a second look. Every lying layer is asked
/// before the reference is asked again, so a socket still present then
/// was open all through the second looks.
pub fn confirm(suspects: Vec<NetSuspect>, recheck: &mut impl NetRecheck) -> Vec<NetSuspect> {
    let lying: Vec<NetSuspect> = suspects
        .into_iter()
        .filter(|s| recheck.still_lies(s))
        .collect();
    lying
        .into_iter()
        .filter(|s| recheck.still_present(s))
        .collect()
}

/// Fills in the owners of confirmed suspects that have none (without the
/// kernel view), from the fd links of every listed process, read once and
/// only when needed; drops sockets held only by `own_pids`.
pub fn attribute(
    confirmed: Vec<NetSuspect>,
    proc_pids: &BTreeSet<u32>,
    own_pids: &BTreeSet<u32>,
) -> Vec<NetSuspect> {
    let fds = confirmed
        .iter()
        .any(|s| s.owners.is_empty())
        .then(|| FdView::take(proc_pids, proc_pids));
    fill_owners(confirmed, fds.as_ref(), own_pids)
}

fn fill_owners(
    confirmed: Vec<NetSuspect>,
    fds: Option<&FdView>,
    own_pids: &BTreeSet<u32>,
) -> Vec<NetSuspect> {
    confirmed
        .into_iter()
        .map(|mut s| {
            if s.owners.is_empty() {
                let found = fds.and_then(|f| f.owners.get(&s.socket.inode));
                s.owners = found.cloned().unwrap_or_default();
            }
            s
        })
        .filter(|s| s.owners.is_empty() || !s.owners.iter().all(|o| own_pids.contains(&o.pid)))
        .collect()
}

/// A fresh kernel socket listing, for the second look at the reference.
pub type KernelSockets<'a> = Box<dyn FnMut() -> Option<SocketListing> + 'a>;

/// Rechecks against the live system, re-taking each view at most once.
pub struct LiveNetRecheck<'a> {
    namespaces: &'a Namespaces,
    kernel: Option<KernelSockets<'a>>,
    kernel_now: Option<Option<SocketListing>>,
    /// P re-read as a suspected liar, and as the reference (later).
    procnet_liar: HashMap<u64, SocketListing>,
    procnet_reference: HashMap<u64, SocketListing>,
    diag_now: HashMap<u64, Option<SocketListing>>,
    libc_now: Option<Option<SocketListing>>,
    tools_now: HashMap<PathBuf, Option<SocketListing>>,
}

impl<'a> LiveNetRecheck<'a> {
    /// `kernel` re-lists the kernel's sockets when K is the reference.
    pub fn new(namespaces: &'a Namespaces, kernel: Option<KernelSockets<'a>>) -> Self {
        LiveNetRecheck {
            namespaces,
            kernel,
            kernel_now: None,
            procnet_liar: HashMap::new(),
            procnet_reference: HashMap::new(),
            diag_now: HashMap::new(),
            libc_now: None,
            tools_now: HashMap::new(),
        }
    }
}

fn read_procnet(ns: &Namespaces, netns: u64) -> SocketListing {
    let mut l = SocketListing::default();
    procnet::read_namespace(ns, netns, &mut l);
    l
}

impl NetRecheck for LiveNetRecheck<'_> {
    fn still_lies(&mut self, s: &NetSuspect) -> bool {
        let netns = s.socket.netns;
        let ns = self.namespaces;
        let misses = |l: &SocketListing| l.shows(&s.socket) == Some(false);
        match &s.liar {
            NetLiar::ProcNet => misses(
                self.procnet_liar
                    .entry(netns)
                    .or_insert_with(|| read_procnet(ns, netns)),
            ),
            NetLiar::Diag => self
                .diag_now
                .entry(netns)
                .or_insert_with(|| {
                    let fd = diag::open_in(ns, netns).ok()?;
                    let mut l = SocketListing::default();
                    diag::dump_namespace(&fd, netns, &mut l);
                    Some(l)
                })
                .as_ref()
                .is_some_and(misses),
            NetLiar::Fds => {
                let listed: BTreeSet<u32> = crate::proc::list_pids()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| s.owners.iter().any(|o| o.pid == *p))
                    .collect();
                FdView::take(&listed, &listed).misses(s.socket.inode, &s.owners)
            }
            NetLiar::Libc => self
                .libc_now
                .get_or_insert_with(|| libc::take(ns).ok().map(|(l, _)| l))
                .as_ref()
                .is_some_and(misses),
            NetLiar::Tool(tool, program) => self
                .tools_now
                .entry(program.clone())
                .or_insert_with(|| ToolListing::take(*tool, program, ns.own).listing.ok())
                .as_ref()
                .is_some_and(misses),
        }
    }

    fn still_present(&mut self, s: &NetSuspect) -> bool {
        let netns = s.socket.netns;
        let ns = self.namespaces;
        let now = match self.kernel.as_mut() {
            Some(list) => self.kernel_now.get_or_insert_with(list).as_ref(),
            None => Some(
                &*self
                    .procnet_reference
                    .entry(netns)
                    .or_insert_with(|| read_procnet(ns, netns)),
            ),
        };
        now.and_then(|l| l.by_inode(s.socket.inode))
            .is_some_and(|x| x.key() == s.socket.key() && still_held(s, x))
    }
}

/// For the fd-link layer, the same process must still hold the socket: a
/// descriptor in flight (passed over a unix socket, then closed by the
/// sender) leaves its sender's fd table without being hidden.
fn still_held(s: &NetSuspect, now: &Socket) -> bool {
    s.liar != NetLiar::Fds
        || now
            .owners
            .iter()
            .any(|o| s.owners.iter().any(|was| was.pid == o.pid))
}

/// Turns confirmed suspects into findings, each naming the owning process
/// when one is known.
pub fn findings(
    confirmed: &[NetSuspect],
    net: &NetSnapshot,
    snap: &Snapshot,
    table: &ProcessTable,
    host: &Host,
) -> Vec<Finding> {
    let mut layer_facts: HashMap<NetLiar, Evidence> = HashMap::new();
    confirmed
        .iter()
        .map(|s| {
            let owner = s.owners.first().map(|o| {
                snap.process(o.pid).unwrap_or_else(|| Process {
                    pid: o.pid,
                    comm: "?".into(),
                    ..Default::default()
                })
            });
            let ancestry: Vec<Process> = owner
                .as_ref()
                .map(|p| table.ancestry(&p.id()).into_iter().cloned().collect())
                .unwrap_or_default();
            let mut evidence = match &owner {
                Some(p) => host.process_evidence(p, &ancestry),
                None => vec![ev("owner", "no process holds it in any view tracer has")],
            };
            evidence.push(ev("connection", describe(&s.socket)));
            evidence.push(ev("network namespace", s.socket.netns.to_string()));
            if !s.owners.is_empty() {
                let held: Vec<String> = s
                    .owners
                    .iter()
                    .map(|o| format!("pid {} fd {}", o.pid, o.fd))
                    .collect();
                evidence.push(ev("held by", held.join(", ")));
            }
            let (shown_by, specific, next_step) = explain(s, net, &mut layer_facts);
            evidence.extend(specific);
            if !s.also.is_empty() {
                let also: Vec<String> = s.also.iter().map(NetLiar::view).collect();
                evidence.push(ev("also missing from", also.join(", ")));
            }
            let holder = owner.as_ref().map_or(String::new(), |p| {
                format!(" held by {}({})", p.comm.as_str(), p.pid)
            });
            Finding {
                id: Finding::socket_finding_id(s.liar.kind(), &s.socket),
                kind: s.liar.kind().into(),
                severity: match s.liar {
                    NetLiar::ProcNet | NetLiar::Diag => Severity::Critical,
                    _ => Severity::High,
                },
                layer: s.liar.layer().into(),
                summary: format!(
                    "{}{holder} is shown by {shown_by} but not by {}",
                    describe(&s.socket),
                    s.liar.view()
                ),
                process: owner,
                ancestry,
                evidence,
                next_step,
                connection: Some(s.socket.clone()),
                related: Vec::new(),
                sigma: None,
            }
        })
        .collect()
}

/// `tcp 127.0.0.1:40000 -> 127.0.0.1:3333 ESTAB inode 1234`.
pub fn describe(s: &Socket) -> String {
    let proto = format!("{:?}", s.protocol).to_lowercase();
    let addr = |a: Option<std::net::SocketAddr>| a.map_or("*".to_string(), |a| a.to_string());
    match s.peer() {
        Some(peer) => format!(
            "{proto} {} -> {peer} {} inode {}",
            addr(s.local),
            s.state_name(),
            s.inode
        ),
        None => format!(
            "{proto} {} {} inode {}",
            addr(s.local),
            s.state_name(),
            s.inode
        ),
    }
}

/// Which views show it, layer-specific evidence, and the next step.
fn explain(
    s: &NetSuspect,
    net: &NetSnapshot,
    layer_facts: &mut HashMap<NetLiar, Evidence>,
) -> (String, Evidence, String) {
    let reference = match net.kernel {
        Some(Ok(_)) => "the kernel",
        _ => "/proc/net (read with raw system calls)",
    };
    match &s.liar {
        NetLiar::ProcNet => (
            reference.into(),
            vec![],
            "Kernel-level hiding of a connection (a hook on /proc/net's output): do not trust any tool on \
             this host. List eBPF programs (`bpftool prog list`), compare /proc/modules with /sys/module, \
             capture the traffic from outside the host, and image memory before rebooting."
                .into(),
        ),
        NetLiar::Diag => (
            reference.into(),
            vec![ev("sock_diag", "answered, without this socket")],
            "sock_diag hides a socket the kernel's /proc/net shows: a kernel hook (eBPF or a module) \
             filters netlink answers, so ss and anything built on netlink miss it. Treat it as kernel-level \
             hiding: list eBPF programs (`bpftool prog list`), loaded modules, and capture the traffic \
             from outside the host."
                .into(),
        ),
        NetLiar::Fds => {
            let pids: Vec<u32> = s.owners.iter().map(|o| o.pid).collect();
            let hidden_owner = net
                .fds
                .as_ref()
                .is_ok_and(|f| pids.iter().any(|p| !f.listed.contains(p)));
            if hidden_owner {
                (
                    "the kernel".into(),
                    vec![ev("owner", "missing from the /proc listing: the process is hidden too")],
                    "The process holding this connection is hidden from /proc (see the related finding): \
                     deal with that first, then use `tracer net` to list what it talks to."
                        .into(),
                )
            } else {
                (
                    "the kernel".into(),
                    vec![ev(
                        "fd links",
                        format!("/proc/{}/fd has no link to socket:[{}]", pids[0], s.socket.inode),
                    )],
                    format!(
                        "The kernel says process {} holds this socket but its /proc fd links do not show \
                         it, so lsof, ss -p and netstat -p cannot attribute it: a kernel-level hook on \
                         /proc. List eBPF programs (`bpftool prog list`) and modules.",
                        pids[0]
                    ),
                )
            }
        }
        NetLiar::Libc => {
            let mut evidence = layer_facts
                .entry(NetLiar::Libc)
                .or_insert_with(hidden::preload_evidence)
                .clone();
            evidence.push(ev("libc view", libc::method()));
            (
                "/proc/net (read with raw system calls)".into(),
                evidence,
                "A user-space hook in every dynamically linked program filters /proc/net (netstat and \
                 other libc readers miss this connection): inspect /etc/ld.so.preload and the libraries it \
                 names (above) and LD_PRELOAD in service environments; move the library aside (keep a \
                 copy) and empty /etc/ld.so.preload."
                    .into(),
            )
        }
        NetLiar::Tool(tool, program) => {
            let mut evidence = layer_facts
                .entry(s.liar.clone())
                .or_insert_with(|| {
                    program_evidence(&format!("{} program", tool.name()), program, tool.package())
                })
                .clone();
            for other in net.tools.iter().filter(|t| &t.program != program) {
                if other.listing.as_ref().is_ok_and(|l| l.has_inode(s.socket.inode)) {
                    evidence.push(ev(other.program.display().to_string(), "lists it"));
                }
            }
            let diag_shows = net
                .diag
                .as_ref()
                .is_ok_and(|l| l.shows(&s.socket) == Some(true));
            let shown_by = if diag_shows {
                "/proc/net and sock_diag"
            } else {
                "/proc/net"
            };
            (
                shown_by.into(),
                evidence,
                format!(
                    "The {} program lies: keep a copy of {} for analysis, compare its hash with a trusted \
                     copy, check `dpkg --verify {}` and PATH for writable directories, and reinstall it \
                     from a trusted source; meanwhile list connections with `tracer net`.",
                    tool.name(),
                    program.display(),
                    tool.package()
                ),
            )
        }
    }
}

/// Makes each hidden connection and the hidden process that holds it point
/// at each other through `related`.
pub fn link_related(findings: &mut [Finding]) {
    let hidden_processes: BTreeMap<u32, Vec<usize>> = findings
        .iter()
        .enumerate()
        .filter(|(_, f)| f.connection.is_none() && hidden::KINDS.contains(&f.kind.as_str()))
        .filter_map(|(i, f)| Some((f.process.as_ref()?.pid, i)))
        .fold(BTreeMap::new(), |mut m, (pid, i)| {
            m.entry(pid).or_default().push(i);
            m
        });
    for c in 0..findings.len() {
        if findings[c].connection.is_none() {
            continue;
        }
        let Some(pid) = findings[c].process.as_ref().map(|p| p.pid) else {
            continue;
        };
        for &p in hidden_processes.get(&pid).into_iter().flatten() {
            let (process_id, connection_id) = (findings[p].id.clone(), findings[c].id.clone());
            findings[c].related.push(process_id);
            findings[p].related.push(connection_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::socket::{Family, Protocol},
        views::net::{Scope, INET_PARTS},
    };

    const NS: u64 = 4026531840;

    fn sock(inode: u64, port: u16, owners: &[(u32, u32)]) -> Socket {
        Socket {
            netns: NS,
            family: Family::Ipv4,
            protocol: Protocol::Tcp,
            state: 1,
            inode,
            local: Some(format!("127.0.0.1:{port}").parse().unwrap()),
            remote: Some("127.0.0.1:3333".parse().unwrap()),
            uid: 0,
            packet: None,
            owners: owners
                .iter()
                .map(|&(pid, fd)| SocketOwner { pid, fd })
                .collect(),
        }
    }

    fn scopes() -> Vec<Scope> {
        INET_PARTS
            .map(|(protocol, family)| Scope {
                netns: NS,
                protocol,
                family,
            })
            .to_vec()
    }

    fn listing(sockets: &[Socket]) -> SocketListing {
        SocketListing::from_parts(
            scopes(),
            sockets.iter().cloned().map(|mut s| {
                s.owners.clear();
                s
            }),
        )
    }

    /// Sockets 11..=16 held by processes 1..=6 (fd 3), tracer's helper
    /// holds 17; every view shows all of them.
    fn clean(with_kernel: bool) -> (NetSnapshot, Vec<Socket>) {
        let all: Vec<Socket> = (1..=7)
            .map(|i| sock(10 + i as u64, 40000 + i as u16, &[(i, 3)]))
            .collect();
        let pids: BTreeSet<u32> = (1..=7).collect();
        let mut fds = FdView {
            read: pids.clone(),
            listed: pids,
            ..Default::default()
        };
        for s in &all {
            fds.owners.insert(s.inode, s.owners.clone());
        }
        let tool = |tool, path: &str| ToolListing {
            tool,
            program: path.into(),
            listing: Ok(listing(&all)),
            helper_pid: Some(90),
        };
        let net = NetSnapshot {
            namespaces: Namespaces {
                own: NS,
                ..Default::default()
            },
            kernel: with_kernel.then(|| Ok(SocketListing::from_parts(scopes(), all.clone()))),
            procnet: listing(&all),
            diag: Ok(listing(&all)),
            fds: if with_kernel {
                Ok(fds)
            } else {
                Err("no kernel view".into())
            },
            libc: Ok(listing(&all)),
            tools: vec![
                tool(Tool::Ss, "/usr/bin/ss"),
                tool(Tool::Netstat, "/usr/bin/netstat"),
            ],
            helper_pids: BTreeSet::from([90]),
            took: BTreeMap::new(),
        };
        (net, all)
    }

    fn fds_of(net: &mut NetSnapshot) -> &mut FdView {
        net.fds.as_mut().unwrap()
    }

    fn without(l: &SocketListing, inode: u64) -> SocketListing {
        SocketListing::from_parts(
            l.covers.iter().copied(),
            l.sockets.iter().filter(|s| s.inode != inode).cloned(),
        )
    }

    fn blamed(net: &NetSnapshot) -> Vec<(u64, NetLiar, Vec<NetLiar>)> {
        suspects(net, &BTreeSet::from([7]))
            .into_iter()
            .map(|s| (s.socket.inode, s.liar, s.also))
            .collect()
    }

    #[test]
    fn agreeing_views_raise_no_suspect() {
        assert!(blamed(&clean(false).0).is_empty());
        assert!(blamed(&clean(true).0).is_empty());
    }

    #[test]
    fn the_lowest_layer_that_misses_a_socket_is_blamed() {
        let (mut net, _) = clean(true);
        let ss = NetLiar::Tool(Tool::Ss, "/usr/bin/ss".into());
        let netstat = NetLiar::Tool(Tool::Netstat, "/usr/bin/netstat".into());
        // 11: a kernel hook hides it from /proc/net, and so from everything above.
        net.procnet = without(&net.procnet, 11);
        net.libc = Ok(without(net.libc.as_ref().unwrap(), 11));
        // 12: sock_diag lies (ss, which asks it, misses it too).
        net.diag = Ok(without(net.diag.as_ref().unwrap(), 12));
        // 13: its owner's fd links do not show it.
        fds_of(&mut net).owners.remove(&13);
        // 14: a preload library (netstat reads through libc).
        net.libc = Ok(without(net.libc.as_ref().unwrap(), 14));
        // 15, 16: one tool each.
        for (i, inode) in [(0, 12), (0, 15), (1, 14), (1, 16), (1, 11), (0, 11)] {
            let l = net.tools[i].listing.as_ref().unwrap();
            net.tools[i].listing = Ok(without(l, inode));
        }
        assert_eq!(
            blamed(&net),
            [
                (
                    11,
                    NetLiar::ProcNet,
                    vec![NetLiar::Libc, ss.clone(), netstat.clone()]
                ),
                (12, NetLiar::Diag, vec![ss.clone()]),
                (13, NetLiar::Fds, vec![]),
                (14, NetLiar::Libc, vec![netstat.clone()]),
                (15, ss, vec![]),
                (16, netstat, vec![]),
            ]
        );
    }

    #[test]
    fn an_owner_hidden_from_proc_hides_its_sockets_from_the_fd_view() {
        let (mut net, _) = clean(true);
        fds_of(&mut net).listed.remove(&3);
        fds_of(&mut net).read.remove(&3);
        fds_of(&mut net).owners.remove(&13);
        assert_eq!(blamed(&net), [(13, NetLiar::Fds, vec![])]);
        // An owner that exited before its fd directory was read says nothing.
        let (mut net, _) = clean(true);
        fds_of(&mut net).read.remove(&3);
        fds_of(&mut net).owners.remove(&13);
        assert!(blamed(&net).is_empty());
    }

    #[test]
    fn without_the_kernel_p_is_the_reference_and_owners_come_from_fd_links_after() {
        let (mut net, all) = clean(false);
        net.libc = Ok(without(net.libc.as_ref().unwrap(), 14));
        net.libc = Ok(without(net.libc.as_ref().unwrap(), 17));
        assert_eq!(
            blamed(&net),
            [(14, NetLiar::Libc, vec![]), (17, NetLiar::Libc, vec![])]
        );
        let mut fds = FdView::default();
        for s in &all {
            fds.owners.insert(s.inode, s.owners.clone());
        }
        // 17 is held by tracer's helper (pid 7) and is dropped.
        let own = BTreeSet::from([7]);
        let owned = fill_owners(suspects(&net, &BTreeSet::new()), Some(&fds), &own);
        assert_eq!(owned.len(), 1);
        assert_eq!(owned[0].owners, [SocketOwner { pid: 4, fd: 3 }]);
    }

    #[test]
    fn uncovered_parts_ownerless_and_own_sockets_are_not_suspects() {
        let (mut net, _) = clean(false);
        // A tool that covers only IPv6 says nothing about IPv4 sockets.
        net.tools[0].listing = Ok(SocketListing::from_parts(
            scopes().into_iter().filter(|s| s.family == Family::Ipv6),
            [],
        ));
        // A failed view is no view.
        net.diag = Err("no netlink".into());
        // TIME-WAIT sockets (inode 0) are not diffed.
        let mut tw = sock(0, 40100, &[]);
        tw.state = 6;
        net.procnet.add(scopes()[0], [tw]);
        assert!(blamed(&net).is_empty());
        // With the kernel's owners, tracer's helper's socket is never a suspect.
        let (mut net, _) = clean(true);
        net.tools[1].listing = Ok(without(net.tools[1].listing.as_ref().unwrap(), 17));
        assert!(blamed(&net).is_empty());
    }

    /// A recheck that answers from fixed facts and records the order.
    struct Facts {
        still_hidden: Vec<u64>,
        present: Vec<u64>,
        asked: Vec<String>,
    }

    impl NetRecheck for Facts {
        fn still_lies(&mut self, s: &NetSuspect) -> bool {
            self.asked.push(format!("lies {}", s.socket.inode));
            self.still_hidden.contains(&s.socket.inode)
        }
        fn still_present(&mut self, s: &NetSuspect) -> bool {
            self.asked.push(format!("present {}", s.socket.inode));
            self.present.contains(&s.socket.inode)
        }
    }

    #[test]
    fn only_suspects_that_survive_a_second_look_are_kept_and_the_reference_is_asked_last() {
        let suspect = |inode| NetSuspect {
            socket: sock(inode, 40000, &[]),
            owners: vec![],
            liar: NetLiar::Libc,
            also: vec![],
        };
        // 1 hidden and open; 2 closed (the layer still misses it, the
        // reference lost it); 3 shows up now (opened while L was read).
        let mut facts = Facts {
            still_hidden: vec![1, 2],
            present: vec![1, 3],
            asked: vec![],
        };
        let kept = confirm(vec![suspect(1), suspect(2), suspect(3)], &mut facts);
        assert_eq!(kept.iter().map(|s| s.socket.inode).collect::<Vec<_>>(), [1]);
        assert_eq!(
            facts.asked,
            ["lies 1", "lies 2", "lies 3", "present 1", "present 2"]
        );
    }

    fn finding(kind: &str, pid: u32, connection: Option<Socket>) -> Finding {
        Finding {
            id: format!("{kind}:{pid}"),
            kind: kind.into(),
            severity: Severity::High,
            layer: "x".into(),
            summary: String::new(),
            process: Some(Process {
                pid,
                ..Default::default()
            }),
            ancestry: vec![],
            evidence: vec![],
            next_step: String::new(),
            connection,
            related: vec![],
            sigma: None,
        }
    }

    #[test]
    fn an_fd_finding_needs_the_same_owner_in_the_second_kernel_listing() {
        let suspect = NetSuspect {
            socket: sock(13, 40003, &[]),
            owners: vec![SocketOwner { pid: 3, fd: 3 }],
            liar: NetLiar::Fds,
            also: vec![],
        };
        assert!(still_held(&suspect, &sock(13, 40003, &[(3, 5)])));
        // Passed to another process (or in flight, held by none).
        assert!(!still_held(&suspect, &sock(13, 40003, &[(8, 3)])));
        assert!(!still_held(&suspect, &sock(13, 40003, &[])));
        // Other layers do not look at owners.
        let libc = NetSuspect {
            liar: NetLiar::Libc,
            ..suspect
        };
        assert!(still_held(&libc, &sock(13, 40003, &[])));
    }

    #[test]
    fn a_hidden_connection_and_its_hidden_process_point_at_each_other() {
        let mut found = [
            finding("hidden-from-proc", 5, None),
            finding("exe-deleted", 5, None),
            finding("connection-hidden-from-fds", 5, Some(sock(15, 1, &[]))),
            finding("connection-hidden-from-ss", 6, Some(sock(16, 1, &[]))),
            finding("hidden-from-libc", 7, None),
        ];
        link_related(&mut found);
        assert_eq!(found[0].related, ["connection-hidden-from-fds:5"]);
        assert_eq!(found[2].related, ["hidden-from-proc:5"]);
        assert!(found[1].related.is_empty(), "a masquerade is not hiding");
        assert!(found[3].related.is_empty() && found[4].related.is_empty());
    }

    #[test]
    fn connections_are_described_like_ss() {
        assert_eq!(
            describe(&sock(9, 40000, &[])),
            "tcp 127.0.0.1:40000 -> 127.0.0.1:3333 ESTAB inode 9"
        );
        let mut l = sock(10, 22, &[]);
        (l.state, l.remote) = (10, Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(describe(&l), "tcp 127.0.0.1:22 LISTEN inode 10");
    }
}
