//! The connections a kill-tree set holds, from the kernel socket view, and
//! the remote addresses to block at the firewall: the first containment
//! step, taken before or alongside the kill.
use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use super::KillPlan;
use crate::{
    detect::connections::{held_by, remote_addresses},
    error::UserError,
    kernel::{Kernel, Needs},
    model::socket::{Family, Protocol, Socket},
    views::net::kernel::KernelSockets,
};

/// The set's open connections, as the plan shows them.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct PlanNetwork {
    /// Each member's open sockets, by member.
    pub connections: Vec<MemberConnection>,
    /// The distinct remote addresses of those connections.
    pub block: Vec<IpAddr>,
    /// Why the connections could not be listed, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// What the kernel view could not cover, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct MemberConnection {
    pub pid: u32,
    pub fd: u32,
    pub protocol: Protocol,
    pub family: Family,
    pub state: &'static str,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// Lists the set's connections from the kernel view (of `kernel` when
/// kill-tree has loaded it already), or says why not.
pub fn collect(plan: &KillPlan, kernel: Option<&mut Kernel>) -> PlanNetwork {
    let view = match kernel {
        Some(k) => crate::views::net::kernel::take(k),
        None => Kernel::load_for("kill-tree", Needs::SOCKETS).and_then(|mut k| {
            k.release_btf();
            crate::views::net::kernel::take(&mut k)
        }),
    };
    match view {
        Ok(view) => of_members(plan, &view),
        Err(e) => PlanNetwork {
            unavailable: Some(match e.downcast_ref::<UserError>() {
                Some(UserError::NotPrivileged { .. }) => {
                    "listing connections needs root (the kernel socket view): run with sudo".into()
                }
                _ => format!("{e:#}"),
            }),
            ..Default::default()
        },
    }
}

/// The sockets the plan's members hold (pure, for tests).
pub fn of_members(plan: &KillPlan, view: &KernelSockets) -> PlanNetwork {
    let pids: HashSet<u32> = plan.members.iter().map(|m| m.process.pid).collect();
    let held: Vec<&Socket> = held_by(&view.sockets, &pids);
    let mut connections: Vec<MemberConnection> = held
        .iter()
        .flat_map(|s| {
            s.owners
                .iter()
                .filter(|o| pids.contains(&o.pid))
                .map(|o| MemberConnection {
                    pid: o.pid,
                    fd: o.fd,
                    protocol: s.protocol,
                    family: s.family,
                    state: s.state_name(),
                    local: s.local,
                    remote: s.remote,
                })
        })
        .collect();
    connections.sort_by_key(|c| (c.pid, c.fd));
    PlanNetwork {
        block: remote_addresses(held),
        connections,
        unavailable: None,
        gaps: view.gaps.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::socket::SocketOwner,
        respond::plan::{plan_tree, tests::cron_chain},
    };

    fn conn(pid: u32, fd: u32, remote: &str, state: u8) -> Socket {
        Socket {
            netns: 1,
            family: Family::Ipv4,
            protocol: Protocol::Tcp,
            state,
            inode: (pid * 100 + fd) as u64,
            local: Some("10.0.0.5:40000".parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
            uid: 0,
            packet: None,
            owners: vec![SocketOwner { pid, fd }],
        }
    }

    #[test]
    fn members_connections_and_their_peers_to_block() {
        let plan = plan_tree(&cron_chain(), 500, 630).unwrap();
        let view = KernelSockets {
            sockets: vec![
                conn(500, 4, "198.51.100.7:3333", 1),
                conn(510, 5, "198.51.100.8:443", 1),
                conn(510, 6, "0.0.0.0:0", 10),
                // cron itself is outside the set: its connection stays.
                conn(200, 3, "192.0.2.1:25", 1),
            ],
            ..Default::default()
        };
        let net = of_members(&plan, &view);
        let listed: Vec<(u32, u32)> = net.connections.iter().map(|c| (c.pid, c.fd)).collect();
        assert_eq!(listed, [(500, 4), (510, 5), (510, 6)]);
        assert_eq!(
            net.block,
            [
                "198.51.100.7".parse::<IpAddr>().unwrap(),
                "198.51.100.8".parse().unwrap()
            ]
        );
    }
}
