//! `tracer hidden`: take every view of the process list, report processes
//! some layer hides (and which layer lies) and processes that pretend to be
//! something else. Exit 0 when clean, 1 with findings, 2 on error.
use std::{collections::BTreeMap, io, time::Instant};

use anyhow::Result;

use crate::{
    cli::HiddenArgs,
    detect::{hidden, masquerade},
    error::{exit, UserError},
    kernel::Kernel,
    model::Finding,
    output::{
        findings::{self, Report, ViewSummary},
        style,
    },
    table::ProcessTable,
    views::{host::Host, Snapshot},
};

/// Views in the order the summary line names them.
const VIEW_ORDER: &[&str] = &["K", "P", "L", "S", "S2", "D"];

pub fn run(args: HiddenArgs) -> Result<i32> {
    let started = Instant::now();
    let mut kernel = load_kernel(&args);
    let snap = Snapshot::take(&mut kernel)?;
    let host = Host::load();
    let mut table = ProcessTable::new();
    table.seed(snap.processes());

    let suspects = hidden::suspects(&snap);
    let confirmed = hidden::confirm(
        suspects,
        &mut hidden::LiveRecheck::new(kernel.as_mut().ok()),
    );
    let mut found = hidden::findings(&confirmed, &snap, &table, &host);
    found.extend(masquerade::detect(&snap, &table, &host));
    sort_findings(&mut found);

    let report = Report {
        views: view_summaries(&snap),
        kernel_view: match snap.kernel.skipped() {
            None => "used".into(),
            Some(why) => format!("skipped: {why}"),
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
        findings: &found,
    };
    let mut out = io::stdout().lock();
    if args.json {
        findings::write_json(&mut out, &report)?;
    } else {
        let colour = style::colour_for(io::IsTerminal::is_terminal(&io::stdout()));
        findings::write_human(&mut out, &report, VIEW_ORDER, colour)?;
    }
    Ok(if found.is_empty() {
        exit::OK
    } else {
        exit::FINDINGS
    })
}

/// The kernel side, or why the kernel view is skipped. Never fatal: the
/// other views still catch user-space hiding.
fn load_kernel(args: &HiddenArgs) -> Result<Kernel, String> {
    if args.no_kernel {
        return Err("--no-kernel was given".into());
    }
    // The task iterator is loaded with the kernel; its BTF is not needed
    // again, and is large.
    let loaded = Kernel::load("hidden").map(|mut k| {
        k.release_btf();
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
        views.insert(letter.to_string(), ViewSummary { count, source, ms });
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
