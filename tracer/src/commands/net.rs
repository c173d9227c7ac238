//! `tracer net`: every connection as the kernel sees it, with the process
//! that holds it and that process's ancestry; connections whose peer
//! matches an indicator first. Exit 0, 2 on bad input, 3 without root, 4
//! when the kernel has no socket iterator.
use std::{
    collections::HashSet,
    io::{self, Write},
    time::Instant,
};

use anyhow::Result;

use crate::{
    cli::NetArgs,
    detect::{
        connections::match_socket,
        indicators::{severity_of, Indicators},
    },
    error::{exit, UserError},
    kernel::{self, Kernel},
    model::socket::Socket,
    output::net::{self as render, Ancestors, ConnectionOut, NetReport, NetSummary},
    table::ProcessTable,
    users::Users,
    views::{
        self,
        selection::{select, Selector},
    },
};

pub fn run(args: NetArgs) -> Result<i32> {
    let started = Instant::now();
    kernel::check_privileges("net")?;
    let mut indicators = {
        let _t = crate::timings::span("net: indicators");
        Indicators::load(&args.ioc_files, !args.no_default_iocs)?
    };
    let selector = super::selector_of(&args.select)?;
    let needs = match selector {
        Some(Selector::File(_)) => kernel::Needs::FILES,
        _ => kernel::Needs::SOCKETS,
    };
    let mut kernel = Kernel::load_for("net", needs)?;
    kernel.leave_btf_to_exit();
    let view = {
        let _t = crate::timings::span("net: kernel socket view");
        views::net::kernel::take(&mut kernel)
    }
    .map_err(|e| UserError::KernelUnsupported(format!("{e:#}")))?;
    // `--file`: the connections of the processes that use the file;
    // `--remote`: the connections to that address.
    let selection = match &selector {
        Some(sel @ Selector::File(_)) => {
            let found = select(Ok(&mut kernel), sel);
            found.require_some()?;
            Some(found)
        }
        _ => None,
    };
    let remote = match &selector {
        Some(Selector::Remote(r)) => Some(*r),
        _ => None,
    };
    if args.resolve_domains {
        indicators.resolve_domains();
    } else if indicators.domain_count() > 0 {
        // Said, never passed off as checked: net sees no DNS answers.
        eprintln!(
            "tracer: note: {} indicator domains are not looked up (a lookup from this host lands \
             in the incident's DNS logs); watch matches them on the host's own DNS answers, \
             or give --resolve-domains",
            indicators.domain_count()
        );
    }
    let owners: HashSet<u32> = view
        .sockets
        .iter()
        .flat_map(|s| s.owners.iter().map(|o| o.pid))
        .chain(args.pids.iter().copied())
        .collect();
    let mut table = {
        let _t = crate::timings::span("net: process table");
        views::kernel::process_table_for(&mut kernel, &owners)
    };
    {
        let _t = crate::timings::span("net: containers");
        let wanted = args.select.container.as_deref();
        views::placement::fill_table(&mut table, |p| {
            wanted.is_some() || (owners.contains(&p.pid) && views::placement::maybe_contained(p))
        });
        if let Some(wanted) = wanted {
            views::placement::require_any(&table, wanted)?;
        }
    }
    // Built-in domains resolve in the background: take what has arrived.
    indicators.refresh();
    let selected = selected_pids(&table, &args.pids)?;
    let users = Users::load();

    let mut processes = Ancestors::new();
    let mut connections: Vec<ConnectionOut> = view
        .sockets
        .iter()
        .filter(|s| !args.listening || s.is_listening())
        .filter(|s| selected.as_ref().is_none_or(|pids| held_by_any(s, pids)))
        .filter(|s| {
            selection
                .as_ref()
                .is_none_or(|sel| s.owners.iter().any(|o| sel.matched.contains_key(&o.pid)))
        })
        .filter(|s| remote.is_none_or(|r| s.peer().is_some_and(|p| r.is(p))))
        .filter(|s| {
            args.select.container.as_deref().is_none_or(|wanted| {
                s.owners.iter().any(|o| {
                    table
                        .get(o.pid)
                        .is_some_and(|p| crate::model::placement::in_container(p, wanted))
                })
            })
        })
        .map(|s| {
            let matched = match_socket(s, &indicators).map(|m| {
                let severity = s
                    .owners
                    .iter()
                    .filter_map(|o| table.get(o.pid))
                    .map(|p| indicators.severity(&m, p))
                    .max()
                    .unwrap_or_else(|| severity_of(&m, &[]));
                (m, severity)
            });
            ConnectionOut::new(s, &table, &users, matched, &mut processes)
        })
        .collect();
    if let (Some(sel), true) = (&selector, connections.is_empty()) {
        // The selector matched processes but none holds a connection (or
        // no connection goes to the address): said, with its own code.
        if selection.as_ref().is_none_or(|s| s.matched.is_empty()) || remote.is_some() {
            return Err(UserError::NoMatch(format!("{sel}: no connection matches")).into());
        }
    }
    let mut gaps = view.gaps.clone();
    if let Some(gap) = add_recent_destinations(&mut connections, &table) {
        gaps.push(gap);
    }
    // Matches first, most severe first; otherwise the view's order.
    connections.sort_by_key(|c| std::cmp::Reverse(c.severity));
    let report = NetReport {
        iterators: &kernel.socket_iterators,
        namespaces: &view.namespaces,
        gaps: &gaps,
        elapsed_ms: started.elapsed().as_millis() as u64,
        summary: NetSummary::of(&connections),
        connections,
        processes,
        selection: selection.as_ref(),
    };
    // Buffered: stdout is line-buffered, and 10,000 connections are
    // hundreds of thousands of lines.
    let _t = crate::timings::span("net: output");
    let buffered = io::BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut out = if args.json {
        crate::output::bounded::LineCap::unbounded(buffered)
    } else {
        crate::output::bounded::LineCap::new(buffered)
    };
    if args.json {
        render::write_json(&mut out, &report)?;
    } else {
        render::write_human(&mut out, &report)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

/// Unconnected UDP sockets send to any address: their holders' recent
/// destinations come from a running watch's lineage file (its last 1,024
/// connects and UDP destinations). Returns the gap to report when there
/// are such sockets and no watch to ask.
fn add_recent_destinations(
    connections: &mut [ConnectionOut],
    table: &ProcessTable,
) -> Option<String> {
    let unconnected = |c: &ConnectionOut| c.protocol.name() == "udp" && c.state == "UNCONN";
    if !connections.iter().any(unconnected) {
        return None;
    }
    let recent = match views::lineage::recent_connects() {
        Ok(recent) => recent,
        Err(why) => {
            return Some(format!(
                "unconnected UDP sockets are listed without their destinations: watch sees them as \
                 they are sent, and its lineage file is {why}"
            ))
        }
    };
    let now = crate::proc::boottime_ns();
    for c in connections.iter_mut().filter(|c| unconnected(c)) {
        let holders: Vec<crate::model::ProcessId> = c
            .owners
            .iter()
            .filter_map(|o| table.get(o.pid).map(|p| p.id()))
            .collect();
        c.recent_destinations = recent
            .iter()
            .rev()
            .filter(|r| r.protocol == "udp" && holders.contains(&r.process.id()))
            .map(|r| render::RecentDestination {
                pid: r.process.pid,
                remote: r.remote.to_string(),
                seconds_ago: now.saturating_sub(r.at_ns) / 1_000_000_000,
            })
            .collect();
    }
    None
}

fn held_by_any(s: &Socket, pids: &HashSet<u32>) -> bool {
    s.owners.iter().any(|o| pids.contains(&o.pid))
}

/// The given PIDs and every live descendant, or `None` for no filter.
fn selected_pids(table: &ProcessTable, pids: &[u32]) -> Result<Option<HashSet<u32>>> {
    if pids.is_empty() {
        return Ok(None);
    }
    if let Some(missing) = pids.iter().find(|p| table.get(**p).is_none()) {
        return Err(UserError::BadInput(format!(
            "--pid {missing}: no such process (see `tracer net` without --pid)"
        ))
        .into());
    }
    let roots: HashSet<u32> = pids.iter().copied().collect();
    Ok(Some(
        table
            .live()
            .filter(|p| {
                roots.contains(&p.pid)
                    || table
                        .ancestry(&p.id())
                        .iter()
                        .any(|a| roots.contains(&a.pid))
            })
            .map(|p| p.pid)
            .collect(),
    ))
}
