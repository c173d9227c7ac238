//! `tracer kill-tree PID|PATH|--remote ADDR`: plan (and with --kill, carry out) stopping a
//! malicious process tree, with what would start it again.
//!
//! Dry run by default: prints the plan and the command that carries it out.
//! With --kill: every member is pinned by pidfd and identity-checked,
//! stopped, optionally quarantined, killed; then tracer watches for a
//! respawn for `TRACER_RESPAWN_CHECK_MS` (default 2000 ms), printing the
//! kill time on its own line first.
//!
//! Exit codes: 0 done (or dry run); 1 something survived, came back, or
//! could not be signalled; 3 --kill without root; 5 target refused (not a
//! PID, no such process, PID 1, kernel thread, tracer or its ancestors).
use std::{
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::{
    cli::KillTreeArgs,
    error::{exit, UserError},
    kernel::{
        capture::{Capture, Mode},
        Kernel, Needs,
    },
    model::HostStr,
    output::{bounded, plan as render, schema},
    respond::{self, respawn, KillPlan},
    safe_fs::SafeDir,
    table::ProcessTable,
    users::Users,
    views::{
        self,
        selection::{select, Remote, Selection, Selector},
    },
};

/// What kill-tree was asked to stop.
enum Target {
    Pid(u32),
    Select(Selector),
}

impl Target {
    fn of(args: &KillTreeArgs) -> Result<Target> {
        if let Some(remote) = &args.remote {
            let remote = Remote::parse(remote).map_err(UserError::BadInput)?;
            return Ok(Target::Select(Selector::Remote(remote)));
        }
        let arg = args.target.as_deref().unwrap_or_default();
        // A number (or what looks like one: `-5`, `+7`) is a PID and gets
        // the PID checks; anything else names a file.
        let numeric = !arg.is_empty()
            && arg
                .trim_start_matches(['-', '+'])
                .bytes()
                .all(|b| b.is_ascii_digit());
        Ok(match numeric {
            true => Target::Pid(respond::parse_target(arg)?),
            false => Target::Select(Selector::File(PathBuf::from(arg))),
        })
    }

    /// The command-line words that name this target again.
    fn words(&self, args: &KillTreeArgs, plan: &KillPlan) -> String {
        match self {
            Target::Pid(_) => plan.target.to_string(),
            Target::Select(Selector::File(_)) => {
                shell_quote(args.target.as_deref().unwrap_or_default())
            }
            Target::Select(Selector::Remote(_)) => {
                format!(
                    "--remote {}",
                    shell_quote(args.remote.as_deref().unwrap_or_default())
                )
            }
        }
    }
}

pub fn run(args: KillTreeArgs) -> Result<i32> {
    let requested = Target::of(&args)?;
    let shown = args
        .target
        .clone()
        .or_else(|| args.remote.as_ref().map(|r| format!("--remote {r}")))
        .unwrap_or_default();
    let root = rustix::process::geteuid().is_root();
    if args.kill && !root {
        return Err(UserError::NotPrivileged {
            command: format!("kill-tree {shown} --kill"),
        }
        .into());
    }
    // With --kill, the kernel side loads first (it takes a moment), so that
    // the fork capture can go on the moment the tree is known. A selector
    // searches the kernel's views, dry run or not.
    let needs = Needs {
        // The fork capture attaches a BTF tracepoint.
        tracepoints: args.kill,
        ..match &requested {
            Target::Select(Selector::File(_)) => Needs::FILES,
            _ => Needs::SOCKETS,
        }
    };
    let mut kernel = match (&requested, args.kill) {
        (_, true) | (Target::Select(_), _) if root => {
            Some(Kernel::load_for("kill-tree", needs).map_err(|e| format!("{e:#}")))
        }
        (Target::Select(_), _) => Some(Err("not root".to_string())),
        _ => None,
    };
    // A quarantine directory that cannot be made fails here, before
    // anything is stopped; one refused as unsafe (a link, another user's,
    // open to others) is said in one line and the kill goes on without it.
    let quarantine = match (args.kill, &args.quarantine) {
        (true, Some(dir)) => match respond::quarantine::prepare_dir(dir) {
            Ok(d) => Some(Ok(d)),
            Err(e) if crate::safe_fs::is_unsafe(&e) => {
                eprintln!("tracer: {e:#}; killing without quarantine");
                Some(Err(format!("{e:#}")))
            }
            Err(e) => return Err(e),
        },
        _ => None,
    };
    let (mut plan, mut lineage) = plan_now(&requested, loaded(&mut kernel))?;
    // From here every fork of a member joins the set in the kernel (the
    // set's next system calls stop them once the kill starts).
    let mut capture = match (args.kill, kernel) {
        (true, Some(kernel)) => kernel
            .and_then(|k| start_capture(k, &plan, args.relatives))
            .map_err(Uncaptured::Why),
        (_, Some(Ok(kernel))) => Err(Uncaptured::Kernel(Box::new(kernel))),
        _ => Err(Uncaptured::Why("not killing".into())),
    };
    if let Ok(c) = capture.as_mut() {
        // What forked (and orphaned its children) while the capture was
        // going on: plan again, now that no member escapes the set.
        let (again, again_lineage) = plan_now(&requested, Ok(c.kernel()))?;
        if let Err(e) = c.add(&stopped_tgids(&again, args.relatives)) {
            eprintln!("tracer: fork capture: cannot add members: {e:#}");
        }
        (plan, lineage) = (again, again_lineage);
    }
    plan.lineage = Some(lineage);
    plan.command = command_line(
        &requested.words(&args, &plan),
        args.quarantine.as_deref(),
        args.relatives,
    );
    {
        let _t = crate::timings::span("kill-tree: persistence");
        respond::plan::add_persistence(&mut plan);
    }
    respond::attach_threads(&mut plan);
    let kernel_for_network = match capture.as_mut() {
        Ok(c) => Some(c.kernel()),
        Err(Uncaptured::Kernel(k)) => Some(&mut **k),
        Err(Uncaptured::Why(_)) => None,
    };
    plan.network = {
        let _t = crate::timings::span("kill-tree: connections");
        Some(respond::network::collect(&plan, kernel_for_network))
    };

    if !args.kill {
        if args.json {
            schema::write_pretty(&mut io::stdout().lock(), &plan)?;
        } else {
            bounded::print(&render::plan_text(
                &plan,
                &Users::load(),
                args.quarantine.is_some(),
            ))?;
        }
        return Ok(exit::OK);
    }
    let capture = match capture.as_mut() {
        Ok(c) => Ok(c),
        Err(Uncaptured::Why(why)) => Err(why.as_str()),
        Err(Uncaptured::Kernel(_)) => Err("not killing"),
    };
    execute(
        &plan,
        &args,
        quarantine
            .as_ref()
            .map(|q| q.as_ref().map_err(String::as_str)),
        capture,
    )
}

/// The kernel kill-tree loaded, or why there is none.
fn loaded(kernel: &mut Option<Result<Kernel, String>>) -> Result<&mut Kernel, String> {
    match kernel {
        Some(Ok(k)) => Ok(k),
        Some(Err(why)) => Err(why.clone()),
        None => Err("not loaded".into()),
    }
}

/// Why there is no fork capture: a dry run keeps the loaded kernel for
/// the connection listing.
enum Uncaptured {
    Kernel(Box<Kernel>),
    Why(String),
}

/// The plan for `target` as /proc (and a running watch's lineage) and, for
/// a selector, the kernel's views show it now: members, relatives and the
/// tree's orphans; no persistence yet.
fn plan_now(
    target: &Target,
    kernel: Result<&mut Kernel, String>,
) -> Result<(KillPlan, views::lineage::LineageSource)> {
    // Exe and command lines are read for the plan's chain only: the whole
    // host's would cost more than all the rest at 10,000 processes. A
    // selector's search runs in the kernel meanwhile.
    let mut kernel = kernel;
    let (table, found) = std::thread::scope(|s| {
        let table = s.spawn(|| {
            let _t = crate::timings::span("kill-tree: process table");
            ProcessTable::from_proc_deferred()
        });
        let found = match target {
            Target::Select(selector) => {
                let _t = crate::timings::span("kill-tree: selection");
                Some(select(
                    kernel.as_deref_mut().map_err(|why| why.clone()),
                    selector,
                ))
            }
            Target::Pid(_) => None,
        };
        (table.join(), found)
    });
    let mut table = table.map_err(|_| anyhow::anyhow!("the /proc reader thread panicked"))?;
    // A running watch saw the forks that /proc no longer shows.
    let lineage = {
        let _t = crate::timings::span("kill-tree: lineage");
        views::lineage::merge_into(&mut table)
    };
    let _t = crate::timings::span("kill-tree: plan");
    let plan = match target {
        Target::Select(selector) => {
            let mut found = found.ok_or_else(|| anyhow::anyhow!("the selection did not run"))?;
            if let Selector::Remote(remote) = selector {
                add_exited_connectors(&mut table, &lineage, *remote, &mut found);
            }
            found.require_some()?;
            if let Ok(k) = kernel {
                add_hidden_matches(&mut table, k, &found, selector);
            }
            let pids = found.pids();
            with_details(&mut table, &pids, |t| {
                respond::plan_selected(t, found.clone(), std::process::id())
            })?
        }
        Target::Pid(pid) => {
            let pid = thread_group_of(&table, *pid);
            with_details(&mut table, &[pid], |t| {
                respond::plan(t, pid, std::process::id())
            })?
        }
    };
    Ok((plan, lineage))
}

/// Plans with `plan` once the exe and command line of `targets` and their
/// ancestors are read (the chain's clues), then again once the members',
/// relatives' and boundary's are, so the plan shows them.
fn with_details(
    table: &mut ProcessTable,
    targets: &[u32],
    plan: impl Fn(&ProcessTable) -> Result<KillPlan>,
) -> Result<KillPlan> {
    for pid in targets {
        if let Some(id) = table.get(*pid).map(|p| p.id()) {
            table.read_pending_details(&id);
        }
    }
    let first = plan(table)?;
    let shown = first
        .members
        .iter()
        .chain(&first.relatives)
        .map(|m| m.process.id())
        .chain(first.ancestry.iter().map(|p| p.id()))
        .chain(first.other_boundaries.iter().map(|b| b.process.id()));
    table.read_details_for(shown.collect::<Vec<_>>());
    plan(table)
}

/// Processes a running watch saw connect to `remote` and that have exited
/// since: their launcher (a loop, a dropper still running) is what keeps
/// the beacon coming back, and joins the selection; where there is none,
/// the selection says so.
fn add_exited_connectors(
    table: &mut ProcessTable,
    lineage: &views::lineage::LineageSource,
    remote: Remote,
    found: &mut Selection,
) {
    const GAPS_SHOWN: usize = 3;
    let now = crate::proc::boottime_ns();
    // Per launcher: the latest connector (connects come oldest first) and
    // how many there were; a loop relaunches its beacon every few seconds.
    let mut launched: std::collections::BTreeMap<u32, (String, String, usize)> = Default::default();
    let mut unplanned = Vec::new();
    for c in lineage
        .recent_connects
        .iter()
        .filter(|c| remote.is(c.remote))
    {
        let id = c.process.id();
        if table.get(id.pid).map(|p| p.id()) == Some(id) {
            continue; // still running: the socket view has it, if it holds on
        }
        let mut gone = c.process.clone();
        gone.exited_at_ns = Some(gone.exited_at_ns.unwrap_or(now));
        table.upsert(gone, c.parent);
        table.read_pending_details(&id);
        let what = format!(
            "{} ({}), which connected to {} {} s ago and exited",
            id.pid,
            c.process.comm.as_str(),
            c.remote,
            now.saturating_sub(c.at_ns) / 1_000_000_000
        );
        match respond::plan::launcher_of(table, &id, std::process::id()) {
            Ok((launcher, why)) => {
                let entry = launched.entry(launcher).or_insert((String::new(), why, 0));
                entry.0 = what;
                entry.2 += 1;
            }
            Err(why) => unplanned.push(format!("{what} (seen by watch); {why}: not planned")),
        }
    }
    for (launcher, (latest, why, count)) in launched {
        let more = match count {
            1 => String::new(),
            n => format!(" (the latest of {n})"),
        };
        found
            .matched
            .entry(launcher)
            .or_default()
            .push(format!("launched {latest}{more}, seen by watch; {why}"));
    }
    let hidden = unplanned.len().saturating_sub(GAPS_SHOWN);
    found
        .gaps
        .extend(unplanned.into_iter().rev().take(GAPS_SHOWN));
    if hidden > 0 {
        found
            .gaps
            .push(format!("{hidden} more exited connectors not planned"));
    }
}

/// Matches /proc does not show (hidden from it) join the table from the
/// kernel's task list, so they are planned like the rest.
fn add_hidden_matches(
    table: &mut ProcessTable,
    kernel: &mut Kernel,
    found: &Selection,
    selector: &Selector,
) {
    let missing: Vec<u32> = found
        .matched
        .keys()
        .copied()
        .filter(|pid| table.get(*pid).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(tasks) = views::kernel::list(kernel) else {
        return;
    };
    for pid in missing {
        let Some(k) = tasks.get(&pid) else { continue };
        let mut process = k.to_process();
        // The kernel said it runs the file: that is its executable.
        if let Selector::File(path) = selector {
            if found.matched[&pid].iter().any(|w| w == "runs it") {
                process.exe = Some(HostStr::from_bytes(path.as_os_str().as_bytes()));
            }
        }
        let parent = table.get(process.ppid).map(|p| p.id());
        table.upsert(process, parent);
    }
}

/// The tgids `--kill` stops: the plan's members, and its relatives with
/// `--relatives`.
fn stopped_tgids(plan: &KillPlan, relatives: bool) -> Vec<u32> {
    let mut tgids: Vec<u32> = plan.members.iter().map(|m| m.process.pid).collect();
    if relatives {
        tgids.extend(plan.relatives.iter().map(|m| m.process.pid));
    }
    tgids
}

/// Starts the fork capture over what `--kill` stops.
fn start_capture(kernel: Kernel, plan: &KillPlan, relatives: bool) -> Result<Capture, String> {
    let mut capture = Capture::start(kernel, &stopped_tgids(plan, relatives), Mode::Record)
        .map_err(|e| format!("{e:#}"))?;
    capture.kernel().release_btf();
    Ok(capture)
}

/// Prints the plan, carries it out, and watches for a respawn.
fn execute(
    plan: &KillPlan,
    args: &KillTreeArgs,
    quarantine: Option<Result<&SafeDir, &str>>,
    capture: Result<&mut Capture, &str>,
) -> Result<i32> {
    let users = Users::load();
    if args.json {
        schema::write_line(&mut io::stdout().lock(), plan)?;
    } else {
        bounded::print(&render::plan_text(plan, &users, args.quarantine.is_some()))?;
        println!("\nCarrying it out:");
    }
    let mut announce = |m: &respond::PlanMember| {
        if args.json {
            let _ = schema::write_line(&mut io::stdout().lock(), m);
        } else {
            let _ = bounded::print(&format!("{}\n", render::joined_text(m)));
        }
    };
    // Relatives join the set only when asked; either way they are checked
    // at the end, so a living one never passes for a clean result.
    let mut to_stop = plan.clone();
    if args.relatives {
        to_stop.members.extend(plan.relatives.iter().cloned());
    }
    let ex = respond::execute(&to_stop, quarantine, &users, capture, &mut announce)?;
    let check = respawn::check_duration();
    if args.json {
        schema::write_line(&mut io::stdout().lock(), &ex)?;
    } else {
        bounded::print(&render::execution_text(&ex))?;
        println!(
            "watching for a respawn ({} ms; set {} to change)...",
            check.as_millis(),
            respawn::CHECK_ENV
        );
    }
    let report = respawn::watch(&to_stop, &ex.joined, ex.started_ticks, check);
    let living: Vec<&respond::PlanMember> = plan
        .relatives
        .iter()
        .filter(|r| respawn::still_running(&r.process))
        .collect();
    if args.json {
        schema::write_line(&mut io::stdout().lock(), &report)?;
        let relatives_alive = living.iter().map(|m| (*m).clone()).collect();
        schema::write_line(
            &mut io::stdout().lock(),
            &respond::plan::RelativesAlive { relatives_alive },
        )?;
    } else {
        bounded::print(&render::respawn_text(&report))?;
        bounded::print(&render::relatives_text(&living, args.relatives))?;
    }
    let complete =
        report.clean() && ex.survivors.is_empty() && ex.refused.is_empty() && living.is_empty();
    Ok(if complete { exit::OK } else { exit::FINDINGS })
}

/// A thread id names its process: plan for the thread group it belongs to.
fn thread_group_of(table: &ProcessTable, pid: u32) -> u32 {
    if table.get(pid).is_some() {
        return pid;
    }
    let tgid = crate::proc::read_file(&format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            String::from_utf8_lossy(&s).lines().find_map(|l| {
                l.strip_prefix("Tgid:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })
        });
    match tgid {
        Some(tgid) if tgid != pid && table.get(tgid).is_some() => {
            eprintln!("tracer: {pid} is a thread of process {tgid}: planning for {tgid}");
            tgid
        }
        _ => pid,
    }
}

/// The exact command that carries out the plan.
fn command_line(target: &str, quarantine: Option<&Path>, relatives: bool) -> String {
    let mut cmd = format!("sudo tracer kill-tree {target} --kill");
    if relatives {
        cmd.push_str(" --relatives");
    }
    if let Some(dir) = quarantine {
        cmd.push_str(" --quarantine ");
        cmd.push_str(&shell_quote(&dir.display().to_string()));
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_quotes_the_quarantine_dir() {
        assert_eq!(
            command_line("7", None, false),
            "sudo tracer kill-tree 7 --kill"
        );
        assert_eq!(
            command_line("7", Some(Path::new("/root/q")), false),
            "sudo tracer kill-tree 7 --kill --quarantine /root/q"
        );
        assert_eq!(
            command_line("7", Some(Path::new("/root/it's here")), true),
            r"sudo tracer kill-tree 7 --kill --relatives --quarantine '/root/it'\''s here'"
        );
    }
}
