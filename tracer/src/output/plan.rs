//! Renders a kill-tree plan and what carrying it out did: human text, or
//! JSON (the plan as one object; with --kill, one JSON object a line, so
//! each step is out before the next one acts).
use std::{collections::HashMap, fmt::Write as _};

use crate::{
    model::{host_str::escape, Process},
    respond::{
        network::PlanNetwork, quarantine::Quarantined, respawn::RespawnReport, Execution, KillPlan,
        PlanMember,
    },
    users::Users,
    views::selection::Selection,
};

/// The plan as a human reads it: the tree (like `pstree -asp`), the set
/// and why, the persistence, and the command that carries it out.
pub fn plan_text(plan: &KillPlan, users: &Users, quarantine_note: bool) -> String {
    let mut out = String::new();
    let threads: usize = plan.members.iter().map(|m| m.threads.len().max(1)).sum();
    let target = plan.members.iter().find(|m| m.process.pid == plan.target);
    match &plan.selection {
        None => push_line(
            &mut out,
            &format!(
                "kill-tree plan for PID {} ({}): {} processes, {} threads",
                plan.target,
                target.map(|m| m.process.comm.as_str()).unwrap_or("?"),
                plan.members.len(),
                threads
            ),
        ),
        Some(sel) => selection_text(&mut out, plan, sel, threads),
    }
    if let Some(l) = &plan.lineage {
        push_line(&mut out, &format!("Lineage: {}.", l.detail));
        for why in &l.refused {
            push_line(&mut out, &format!("  refused a lineage link: {why}"));
        }
    }
    out.push('\n');
    out.push_str(&tree_text(plan, users));
    if let (Some(b), Some(why)) = (&plan.boundary, &plan.boundary_reason) {
        push_line(
            &mut out,
            &format!(
                "\nStops at {} ({}): {why}; left running.",
                b.pid,
                b.comm.as_str()
            ),
        );
    }
    if let Some(c) = &plan.container {
        let what = c
            .container
            .as_ref()
            .map_or("a bare PID namespace".to_string(), |k| {
                format!("container {} {}", k.runtime.name(), k.id.as_str())
            });
        let init = c.init.map_or(String::new(), |pid| {
            format!(", whose init is PID {pid} on the host")
        });
        push_line(
            &mut out,
            &format!(
                "Runs in {what} (PID namespace {}{init}). Stop it as a whole: {}",
                c.pid_ns, c.stop
            ),
        );
    }
    for b in &plan.other_boundaries {
        push_line(
            &mut out,
            &format!(
                "Stops at {} ({}): {}; left running.",
                b.process.pid,
                b.process.comm.as_str(),
                b.reason
            ),
        );
    }

    push_line(&mut out, "\nSet to stop (* above), and why:");
    let comm_width = plan
        .members
        .iter()
        .map(|m| m.process.comm.chars().count())
        .max()
        .unwrap_or(0);
    for m in &plan.members {
        let mut threads = match m.threads.len() {
            0 | 1 => String::new(),
            n => format!(" [{n} threads]"),
        };
        if !m.process.threads.is_empty() {
            threads.push_str(&format!(
                " (threads named {})",
                super::bounded::threads(&m.process.threads, |n| {
                    crate::detect::masquerade::miner_named(n).is_some()
                })
            ));
        }
        push_line(
            &mut out,
            &format!(
                "  {:>7}  {:<comm_width$}  {}{threads}",
                m.process.pid,
                m.process.comm.as_str(),
                m.reason
            ),
        );
    }

    if !plan.relatives.is_empty() {
        push_line(
            &mut out,
            "\nRelated processes outside the tree (stopped with --kill --relatives):",
        );
        for r in &plan.relatives {
            push_line(
                &mut out,
                &format!(
                    "  {:>7}  {}  {}",
                    r.process.pid,
                    super::bounded::cmdline(&r.process.cmdline_string()),
                    r.reason
                ),
            );
        }
    }
    push_line(
        &mut out,
        "\nPersistence that would start it again (reported only; tracer never edits these):",
    );
    if plan.persistence.is_empty() {
        push_line(
            &mut out,
            "  none found (cron, at, systemd units, timers and generators, rc.local, init.d, motd, \
             udev, XDG autostart, modprobe, PAM, sshd_config, apt/dpkg hooks, logrotate, network \
             hooks, ld.so.preload, environment, shell profiles, authorized_keys)",
        );
    }
    for h in &plan.persistence {
        push_line(
            &mut out,
            &format!(
                "  {}:{}  [{}, {}] {}",
                h.file.as_str(),
                h.line_no,
                h.kind,
                h.technique,
                super::bounded::cut(h.line.as_str(), super::bounded::FIELD_MAX)
            ),
        );
        push_line(
            &mut out,
            &format!(
                "  {:>w$}  why: {}",
                "",
                h.reason,
                w = h.file.chars().count() + 1 + digits(h.line_no)
            ),
        );
    }
    if quarantine_note {
        push_line(
            &mut out,
            "\nQuarantine copies each member's program before the kill; system binaries \
             (under /usr, /bin, /sbin, /lib, e.g. a watchdog's shell) are not copied.",
        );
    }
    if let Some(net) = &plan.network {
        out.push_str(&connections_text(net));
    }
    push_line(&mut out, "\nTo carry out this plan:");
    push_line(&mut out, &format!("  {}", plan.command));
    if let Some(net) = &plan.network {
        out.push_str(&block_text(net));
    }
    out
}

/// Each member's open connections (or why they could not be listed).
fn connections_text(net: &PlanNetwork) -> String {
    let mut out = String::from("\nOpen connections of the set (from the kernel):\n");
    if let Some(why) = &net.unavailable {
        push_line(&mut out, &format!("  not listed: {why}"));
        return out;
    }
    for gap in &net.gaps {
        push_line(&mut out, &format!("  note: {gap}"));
    }
    if net.connections.is_empty() {
        let _ = writeln!(out, "  none");
    }
    let shown = |a: Option<std::net::SocketAddr>| a.map_or("*".to_string(), |a| a.to_string());
    for c in &net.connections {
        let _ = writeln!(
            out,
            "  {:>7} fd {:<4} {:<4} {:<10} {} -> {}",
            c.pid,
            c.fd,
            c.protocol.name(),
            c.state,
            shown(c.local),
            shown(c.remote)
        );
    }
    out
}

/// The remote addresses to block at the firewall, last in the plan.
fn block_text(net: &PlanNetwork) -> String {
    if net.unavailable.is_some() {
        return String::new();
    }
    let mut out = String::from("\nRemote addresses to block at the firewall:\n");
    if net.block.is_empty() {
        out.push_str("  none (the set has no open connection with a peer)\n");
    }
    for addr in &net.block {
        let _ = writeln!(out, "  {addr}");
    }
    out
}

/// Appends one line, escaped: plan lines quote process names, command
/// lines and persistence lines, all of them the attacker's. A leading
/// `\n` is a blank line before it, kept.
/// The header of a plan for a selector: what it matched, how, and what
/// it could not search or would not stop.
fn selection_text(out: &mut String, plan: &KillPlan, sel: &Selection, threads: usize) {
    push_line(
        out,
        &format!(
            "kill-tree plan for {}: {} matching {}, {} processes, {} threads",
            sel.selector,
            sel.matched.len(),
            if sel.matched.len() == 1 {
                "process"
            } else {
                "processes"
            },
            plan.members.len(),
            threads
        ),
    );
    if !sel.identities.is_empty() {
        push_line(
            out,
            &format!(
                "Matched by device and inode: {}.",
                sel.identities.join(", ")
            ),
        );
    }
    for (pid, why) in &sel.matched {
        let comm = plan
            .members
            .iter()
            .find(|m| m.process.pid == *pid)
            .map(|m| m.process.comm.as_str())
            .unwrap_or("?");
        push_line(out, &format!("  {pid:>7}  {comm}  {}", why.join(", ")));
    }
    for (pid, why) in &sel.refused {
        push_line(out, &format!("  {pid:>7}  not stopped: {why}"));
    }
    for gap in &sel.gaps {
        push_line(out, &format!("Not covered: {gap}."));
    }
}

fn push_line(out: &mut String, line: &str) {
    let body = line.trim_start_matches('\n');
    for _ in 0..line.len() - body.len() {
        out.push('\n');
    }
    out.push_str(&escape(body));
    out.push('\n');
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// The ancestry from PID 1 down to the boundary, then the set, indented by
/// depth; set members are marked `*`.
fn tree_text(plan: &KillPlan, users: &Users) -> String {
    let mut out = String::new();
    let mut depth_of: HashMap<u32, usize> = HashMap::new();
    let mut depth = 0;
    for p in plan.ancestry.iter().rev() {
        line(&mut out, users, depth, false, p);
        depth_of.insert(p.pid, depth);
        depth += 1;
    }
    for m in &plan.members {
        let d = depth_of
            .get(&m.process.ppid)
            .map(|d| d + 1)
            .unwrap_or(depth);
        depth_of.insert(m.process.pid, d);
        line(&mut out, users, d, true, &m.process);
    }
    out
}

fn line(out: &mut String, users: &Users, depth: usize, member: bool, p: &Process) {
    let branch = if depth == 0 { "" } else { "`- " };
    let mark = if member { "* " } else { "" };
    push_line(
        out,
        &format!(
            "  {:indent$}{branch}{mark}{} {}{} {}",
            "",
            p.pid,
            users.name(p.uid).as_str(),
            crate::model::placement::token(p).map_or(String::new(), |t| format!(" [{t}]")),
            super::bounded::cmdline(&p.cmdline_string()),
            indent = depth.saturating_sub(1) * 3
        ),
    );
}

/// One line announcing a child that joined the set after planning.
pub fn joined_text(m: &PlanMember) -> String {
    escape(&format!(
        "joining the set: {} {} ({})",
        m.process.pid,
        m.process.cmdline_string().as_str(),
        m.reason
    ))
    .into_owned()
}

/// What the kill did, the kill time on its own line.
pub fn execution_text(ex: &Execution) -> String {
    let mut out = String::new();
    let stopped = ex.killed.len() + ex.survivors.len();
    push_line(
        &mut out,
        &format!(
            "stopped {stopped} processes (SIGSTOP), then killed them (SIGKILL): {} exited",
            ex.killed.len()
        ),
    );
    if ex.quarantine.is_empty() {
        push_line(&mut out, &format!("kill time: {:.1} ms", ex.kill_ms));
    } else {
        push_line(
            &mut out,
            &format!(
                "kill time: {:.1} ms (of which {:.1} ms copying to quarantine)",
                ex.kill_ms, ex.quarantine_ms
            ),
        );
    }
    push_line(&mut out, &format!("fork capture: {}", ex.fork_capture));
    for (pid, why) in &ex.not_signalled {
        push_line(&mut out, &format!("  {pid}: not signalled: {why}"));
    }
    for (pid, why) in &ex.refused {
        push_line(&mut out, &format!("  {pid}: refused by the kernel: {why}"));
    }
    for pid in &ex.survivors {
        push_line(&mut out, &format!("  {pid}: STILL RUNNING after SIGKILL"));
    }
    for q in &ex.quarantine {
        let what = match &q.result {
            Quarantined::Copied { file, .. } => format!("quarantined as {file}"),
            Quarantined::SameAs { sha256, pid } => format!("same program as {pid} ({sha256})"),
            Quarantined::SystemBinary => "system binary, not copied".to_string(),
            Quarantined::Failed { error } => format!("NOT quarantined: {error}"),
        };
        push_line(
            &mut out,
            &format!("  {} {}: {what}", q.pid, q.original_path),
        );
    }
    out
}

/// Related processes still alive after the kill: never a clean result.
pub fn relatives_text(living: &[&PlanMember], included: bool) -> String {
    let mut out = String::new();
    for r in living {
        let hint = if included {
            "it survived the kill"
        } else {
            "not stopped: run again with --relatives to stop it"
        };
        push_line(
            &mut out,
            &format!(
                "RELATED process still running: {} {} ({}); {hint}",
                r.process.pid,
                r.process.cmdline_string().as_str(),
                r.reason
            ),
        );
    }
    out
}

/// The respawn check's verdict.
pub fn respawn_text(r: &RespawnReport) -> String {
    let secs = r.watched_ms as f64 / 1e3;
    if r.clean() {
        return format!(
            "watched {secs:.1} s: nothing from the set is running and nothing came back\n"
        );
    }
    let mut out = String::new();
    for p in &r.survivors {
        push_line(
            &mut out,
            &format!(
                "still running after {secs:.1} s: {} {}",
                p.pid,
                p.cmdline_string().as_str()
            ),
        );
    }
    for (p, like) in &r.respawned {
        push_line(&mut out, &format!("CAME BACK within {secs:.1} s: {} {} (parent {}; {like}): check the persistence above",
            p.pid,
            p.cmdline_string().as_str(),
            p.ppid
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::{plan::tests::cron_chain, plan_tree, PersistenceHit};

    #[test]
    fn text_shows_tree_set_persistence_and_command() {
        let mut plan = plan_tree(&cron_chain(), 500, 630).unwrap();
        plan.persistence.push(PersistenceHit {
            kind: "crontab".into(),
            technique: "T1053.003".into(),
            file: "/etc/crontab".into(),
            line_no: 3,
            line: "* * * * * root /var/tmp/.x/kswapd0".into(),
            matched: "/var/tmp/.x/kswapd0".into(),
            reason: "names the program's path /var/tmp/.x/kswapd0".into(),
        });
        let users = Users::parse("root:x:0:0:root:/root:/bin/bash\n");
        let text = plan_text(&plan, &users, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("kill-tree plan for PID 500 (kswapd0): 4 processes"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  1 root /sbin/init\n  `- 100 root /usr/sbin/cron -f\n     `- 200 root"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n        `- * 300 root /bin/sh -c /var/tmp/.x/run.sh\n"),
            "{text}"
        );
        assert!(
            text.contains("\n                 `- * 510 root /var/tmp/.x/kswapd0 --worker\n"),
            "{text}"
        );
        assert!(
            text.contains("Stops at 200 (cron): the cron daemon"),
            "{text}"
        );
        assert!(
            text.contains(
                "/etc/crontab:3  [crontab, T1053.003] * * * * * root /var/tmp/.x/kswapd0"
            ),
            "{text}"
        );
        assert!(
            text.trim_end()
                .ends_with("sudo tracer kill-tree 500 --kill"),
            "{text}"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["members"][2]["process"]["pid"], 500);
        assert_eq!(json["persistence"][0]["line_no"], 3);
    }
}
