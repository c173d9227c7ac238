//! `tracer hidden`: take every view of the process list, report processes
//! some layer hides (and which layer lies) and processes that pretend to be
//! something else. Exit 0 when clean, 1 with findings, 6 when nothing was
//! found but some checks could not run (not root), 2 on error.
use std::{collections::BTreeMap, io, time::Instant};

use anyhow::Result;

use crate::{
    cli::HiddenArgs,
    detect::{self, hidden, hidden_net, masquerade},
    error::{exit, UserError},
    kernel::{Kernel, Needs},
    model::{placement, Finding},
    output::{
        bounded::LineCap,
        findings::{self, Report, Unchecked, ViewSummary},
        kernel::KernelSection,
        style,
    },
    table::ProcessTable,
    views::{
        self,
        host::Host,
        kallsyms::PendingKallsyms,
        kernel_hooks::KernelInput,
        net::{libc, NetSnapshot, SocketListing},
        selection::{select, Selection},
        Snapshot,
    },
};

/// Views in the order the summary line names them.
const VIEW_ORDER: &[&str] = &["K", "P", "L", "S", "S2", "D"];
/// Connection views, lowest layer first.
const CONNECTION_VIEW_ORDER: &[&str] = &["K", "P", "N", "F", "L", "S", "S2", "S3", "S4"];

pub fn run(args: HiddenArgs) -> Result<i32> {
    let started = Instant::now();
    // Bad input first, before anything is loaded or scanned.
    let mut sigma = if args.sigma.is_empty() {
        None
    } else {
        let rules = detect::sigma::SigmaRules::load(&args.sigma)?;
        for s in &rules.summary.skipped {
            eprintln!("tracer: {}", s.line());
        }
        Some(rules)
    };
    // ps and the libc lister run while the kernel side loads; the read of
    // kallsyms the kernel checks need starts once it has (from its
    // iterator, where the kernel has one).
    let started_views = Snapshot::start();
    let selector = super::selector_of(&args.select)?;
    let mut kernel = load_kernel(&args, selector.is_some());
    let ksyms = (!args.no_kernel_checks).then(|| PendingKallsyms::start(kernel.as_mut().ok()));
    // `--file`/`--remote`: the processes kill-tree would start from; the
    // report keeps only findings about them.
    let selection = match &selector {
        Some(sel) => {
            let found = select(kernel.as_mut().map_err(|why| why.clone()), sel);
            found.require_some()?;
            Some(found)
        }
        None => None,
    };
    // The kernel checks need tracer's programs only briefly; the rest
    // (kallsyms, tracefs, bpf syscalls) runs beside the process views.
    let kernel_checks = ksyms.map(|ksyms| {
        let input = KernelInput::collect(kernel.as_mut().map_err(|why| why.as_str()), ksyms);
        std::thread::spawn(move || input.finish())
    });
    // The kernel's sockets are the reference layer when the kernel side
    // loaded; /proc/net is, otherwise. The connection views are taken beside
    // D: none of them waits on the process views.
    let kernel_sockets = kernel
        .as_mut()
        .ok()
        .map(|k| views::timed("net view K: socket iterators", || kernel_socket_listing(k)));
    let (snap, net) = started_views.finish(&mut kernel, |tasks, proc_pids, every_pid| {
        NetSnapshot::take(kernel_sockets, proc_pids, every_pid, tasks)
    })?;
    let detect_span = crate::timings::span("hidden: detectors");
    let host = Host::load();
    let mut table = ProcessTable::new();
    table.seed(snap.processes());

    let suspects = hidden::suspects(&snap);
    let confirmed = hidden::confirm(
        suspects,
        &mut hidden::LiveRecheck::new(kernel.as_mut().ok()),
    );
    let mut found = hidden::findings(&confirmed, &snap, &table, &host);
    found.extend(hidden::corrupt_listing(&snap));
    found.extend(masquerade::detect(&snap, &table, &host));
    found.extend(detect::zombie_leader::detect(&snap, &table));
    if let Some(rules) = sigma.as_mut() {
        found.extend(detect::sigma::hunt::hunt(rules, &snap, &table));
    }

    let own_pids = snap.own_pids.union(&net.helper_pids).copied().collect();
    let net_suspects = hidden_net::suspects(&net, &own_pids);
    let relist: Option<hidden_net::KernelSockets> = match kernel.as_mut() {
        Ok(k) if matches!(net.kernel, Some(Ok(_))) => {
            Some(Box::new(move || kernel_socket_listing(k).ok()))
        }
        _ => None,
    };
    let net_confirmed = hidden_net::confirm(
        net_suspects,
        &mut hidden_net::LiveNetRecheck::new(&net.namespaces, relist),
    );
    let net_confirmed = hidden_net::attribute(net_confirmed, &snap.proc_pids, &own_pids);
    found.extend(hidden_net::findings(
        &net_confirmed,
        &net,
        &snap,
        &table,
        &host,
    ));
    hidden_net::link_related(&mut found);
    if let Some(sel) = &selection {
        found.retain(|f| is_about_selected(f, sel));
    }
    let kernel_tasks = snap.kernel.processes();
    views::placement::annotate_findings(&mut found, &table, |id| {
        let task = kernel_tasks?.get(&id.pid)?;
        (task.start_ticks == id.start_ticks && task.ns.cgroup_id != 0).then_some(task.ns.cgroup_id)
    });
    if let Some(wanted) = &args.select.container {
        views::placement::fill_table(&mut table, |_| true);
        views::placement::require_any(&table, wanted)?;
        found.retain(|f| is_in_container(f, wanted, &table));
    }
    sort_findings(&mut found);
    drop(detect_span);
    let kernel_state = {
        let _t = crate::timings::span("hidden: waiting on the kernel checks");
        kernel_checks.map(|t| t.join().unwrap_or_default())
    };
    let mut kernel_found = match &kernel_state {
        Some(state) => detect::kernel::link(detect::kernel::detect(state), &mut found),
        None => Vec::new(),
    };
    sort_findings(&mut kernel_found);
    // One list: the kernel's findings follow the others (layer `kernel`).
    let process_count = found.len();
    found.extend(kernel_found);

    let report = Report {
        views: view_summaries(&snap),
        connection_views: connection_view_summaries(&net),
        kernel_view: match snap.kernel.skipped() {
            None => "used".into(),
            Some(why) => format!("skipped: {why}"),
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
        unchecked: unchecked(&snap),
        findings: &found,
        kernel: kernel_state.as_ref().map(|state| KernelSection {
            findings: &found[process_count..],
            state,
        }),
        selection: selection.as_ref(),
        sigma: sigma.as_ref().map(|s| &s.summary),
    };
    let mut out = if args.json {
        LineCap::unbounded(io::stdout().lock())
    } else {
        LineCap::new(io::stdout().lock())
    };
    if args.json {
        findings::write_json(&mut out, &report)?;
    } else {
        let colour = style::colour_for(io::IsTerminal::is_terminal(&io::stdout()));
        findings::write_human(&mut out, &report, VIEW_ORDER, CONNECTION_VIEW_ORDER, colour)?;
    }
    let incomplete =
        report.unchecked.count > 0 || (snap.kernel.skipped().is_some() && !args.no_kernel);
    Ok(if !found.is_empty() {
        exit::FINDINGS
    } else if incomplete {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// K for the connection diff: the kernel's sockets with their holders.
fn kernel_socket_listing(kernel: &mut Kernel) -> Result<SocketListing, String> {
    views::net::kernel::take(kernel)
        .map(|k| k.into_listing())
        .map_err(|e| format!("{e:#}"))
}

/// Processes whose executable (and open files) the kernel would not show.
/// Their exe rules did not run.
fn unchecked(snap: &Snapshot) -> Unchecked {
    let pids: Vec<u32> = snap
        .probes
        .values()
        .filter(|p| p.exe_denied && !p.is_defunct() && !snap.own_pids.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    let why = match (pids.is_empty(), rustix::process::geteuid().is_root()) {
        (true, _) => "",
        (false, false) => {
            "the kernel refused their executables and open files: other users' processes \
             need root; run `sudo tracer hidden`"
        }
        // Root is refused when the target is privileged beyond tracer (a
        // capability missing from tracer's bounding set, a sandbox's init,
        // a security module): nothing a re-run fixes, so say what to check.
        (false, true) => {
            "the kernel refused their executables and open files even to root (the ptrace \
             access check: they hold privileges this tracer lacks); check them by hand from \
             a fully privileged shell"
        }
    };
    Unchecked {
        count: pids.len(),
        why: why.into(),
        pids,
    }
}

/// The kernel side, or why the kernel view is skipped. Never fatal: the
/// other views still catch user-space hiding.
/// Whether a finding is about a selected process (or a connection one of
/// them holds).
fn is_about_selected(f: &Finding, sel: &Selection) -> bool {
    f.process
        .as_ref()
        .is_some_and(|p| sel.matched.contains_key(&p.pid))
        || f.connection
            .as_ref()
            .is_some_and(|c| c.owners.iter().any(|o| sel.matched.contains_key(&o.pid)))
}

/// Whether a finding is about a process in the container (or a
/// connection one of them holds).
fn is_in_container(f: &Finding, wanted: &str, table: &ProcessTable) -> bool {
    f.process
        .as_ref()
        .is_some_and(|p| placement::in_container(p, wanted))
        || f.connection.as_ref().is_some_and(|c| {
            c.owners.iter().any(|o| {
                table
                    .get(o.pid)
                    .is_some_and(|p| placement::in_container(p, wanted))
            })
        })
}

fn load_kernel(args: &HiddenArgs, files: bool) -> Result<Kernel, String> {
    if args.no_kernel {
        return Err("--no-kernel was given".into());
    }
    // The task iterator is loaded with the kernel; its BTF is not needed
    // again, and the exit frees it for less than a free now would cost.
    let needs = Needs {
        files,
        ..Needs::SCAN
    };
    let loaded = Kernel::load_for("hidden", needs).map(|mut k| {
        k.leave_btf_to_exit();
        k
    });
    loaded.map_err(|e| match e.downcast_ref::<UserError>() {
        Some(UserError::NotPrivileged { .. }) => {
            "not root (the eBPF task iterator needs root, or CAP_BPF and CAP_PERFMON); \
             comparing /proc, libc, ps and direct probes only"
                .into()
        }
        _ => format!("the eBPF programs did not load ({e:#}); comparing /proc, libc, ps and direct probes only"),
    })
}

/// Most severe first, then by PID, so one process's findings sit together.
fn sort_findings(found: &mut [Finding]) {
    found.sort_by(|a, b| {
        let pid = |f: &Finding| f.process.as_ref().map_or(0, |p| p.pid);
        b.severity
            .cmp(&a.severity)
            .then(pid(a).cmp(&pid(b)))
            .then(a.kind.cmp(&b.kind))
    });
}

fn view_summaries(snap: &Snapshot) -> BTreeMap<String, ViewSummary> {
    let mut views = BTreeMap::new();
    let mut add = |letter: &str, count: Option<usize>, source: String| {
        let took = snap.took.get(&letter[..1]).copied().unwrap_or_default();
        let ms = took.as_millis() as u64;
        let gaps = Vec::new();
        views.insert(
            letter.to_string(),
            ViewSummary {
                count,
                source,
                ms,
                gaps,
            },
        );
    };
    match snap.kernel.processes() {
        Some(k) => add(
            "K",
            Some(k.len()),
            "eBPF task iterator (threads grouped by tgid)".into(),
        ),
        None => add("K", None, snap.kernel.skipped().unwrap_or_default().into()),
    }
    add(
        "P",
        Some(snap.proc_pids.len()),
        "getdents64 on /proc".into(),
    );
    match &snap.libc {
        Ok(l) => add("L", Some(l.pids.len()), l.method.clone()),
        Err(why) => add("L", None, why.clone()),
    }
    for (letter, listing) in ["S", "S2"].iter().zip(&snap.ps) {
        match &listing.pids {
            Ok(pids) => add(
                letter,
                Some(pids.len()),
                listing.program.display().to_string(),
            ),
            Err(why) => add(letter, None, why.clone()),
        }
    }
    if snap.ps.is_empty() {
        add("S", None, "no ps program on PATH or at /bin/ps".into());
    }
    add(
        "D",
        Some(snap.probes.len()),
        "reads of /proc/PID/{stat,status,cmdline,exe}, kill(pid, 0), /proc/self/mountinfo".into(),
    );
    views
}

fn connection_view_summaries(net: &NetSnapshot) -> BTreeMap<String, ViewSummary> {
    let summary = |letter: &str, listing: Result<&SocketListing, &String>, source: String| {
        let ms = net
            .took
            .get(&letter[..1])
            .copied()
            .unwrap_or_default()
            .as_millis() as u64;
        let (count, source, gaps) = match listing {
            Ok(l) => (Some(l.sockets.len()), source, l.gaps.clone()),
            Err(why) => (None, why.clone(), Vec::new()),
        };
        let view = ViewSummary {
            count,
            source,
            ms,
            gaps,
        };
        (letter.to_string(), view)
    };
    let mut views = BTreeMap::new();
    if let Some(k) = &net.kernel {
        views.extend([summary("K", k.as_ref(), "eBPF socket iterators".into())]);
    }
    let namespaces = net.namespaces.members.len();
    views.extend([
        summary(
            "P",
            Ok(&net.procnet),
            format!(
                "/proc/net/{{tcp,tcp6,udp,udp6,raw,raw6,packet}} of {namespaces} network namespace(s), raw reads"
            ),
        ),
        summary(
            "N",
            net.diag.as_ref(),
            "sock_diag over netlink (tcp, udp, packet), per network namespace".into(),
        ),
        summary("L", net.libc.as_ref(), libc::method().into()),
    ]);
    let fds = match &net.fds {
        Ok(f) => ViewSummary {
            count: Some(f.owners.len()),
            source: format!(
                "socket links under /proc/PID/fd of the {} socket owners the kernel names",
                f.read.len()
            ),
            ms: net.took.get("F").copied().unwrap_or_default().as_millis() as u64,
            gaps: Vec::new(),
        },
        Err(why) => ViewSummary {
            count: None,
            source: why.clone(),
            ms: 0,
            gaps: Vec::new(),
        },
    };
    views.insert("F".into(), fds);
    for (i, tool) in net.tools.iter().enumerate() {
        let letter = match i {
            0 => "S".to_string(),
            n => format!("S{}", n + 1),
        };
        let source = format!("{} {}", tool.program.display(), tool.tool.args().join(" "));
        views.extend([summary(&letter, tool.listing.as_ref(), source)]);
    }
    if net.tools.is_empty() {
        let why = "no ss or netstat on PATH, in /usr/bin or /bin".to_string();
        views.extend([summary("S", Err(&why), String::new())]);
    }
    views
}
