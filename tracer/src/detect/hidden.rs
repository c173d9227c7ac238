//! Hidden processes: diff the views, blame the lowest layer that lies, and
//! confirm each suspect once more before it becomes a finding.
//!
//! Layers, lowest first: the kernel's task list (K) -> /proc's directory
//! listing (P) -> the /proc/PID entry itself and kill(2) (D) -> libc's
//! readdir (L) -> ps (S). A process missing from one layer is missing from
//! every layer built on it, so only the lowest layer that misses it is
//! blamed; the others are listed as "also missing from".
//!
//! Views are taken one after another while processes come and go, so a
//! difference alone proves nothing. A suspect is reported only if, asked
//! again after all views were taken, the same process (same PID, same start
//! time) is still alive and the lying layer still does not show it.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest, Sha256};

use crate::{
    kernel::Kernel,
    model::{Finding, Process, Severity},
    proc,
    table::ProcessTable,
    views::{
        self, host::Host, kernel::KernelProcess, mounts, probes, probes::SignalProbe, ps,
        LibcListing, PsListing, Snapshot,
    },
};

/// The layer that does not show a process.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liar {
    /// In the kernel's task list, missing from /proc's directory listing.
    Kernel,
    /// Something is mounted on or under /proc/PID.
    ProcMount,
    /// /proc lists the PID and kill finds it, but /proc/PID cannot be read.
    ProcEntry,
    /// /proc shows the process but kill(pid, 0) says there is none.
    Kill,
    /// /proc lists it, libc's readdir does not.
    Libc,
    /// /proc lists it, this ps does not.
    Ps(PathBuf),
}

/// Every kind of finding this detector makes: a process some layer hides.
pub const KINDS: [&str; 6] = [
    "hidden-from-proc",
    "proc-pid-mounted",
    "proc-pid-unreadable",
    "hidden-from-kill",
    "hidden-from-libc",
    "hidden-from-ps",
];

impl Liar {
    pub fn kind(&self) -> &'static str {
        match self {
            Liar::Kernel => "hidden-from-proc",
            Liar::ProcMount => "proc-pid-mounted",
            Liar::ProcEntry => "proc-pid-unreadable",
            Liar::Kill => "hidden-from-kill",
            Liar::Libc => "hidden-from-libc",
            Liar::Ps(_) => "hidden-from-ps",
        }
    }

    pub fn layer(&self) -> &'static str {
        match self {
            Liar::Kernel => "kernel",
            Liar::ProcMount => "proc-mount",
            Liar::ProcEntry => "procfs",
            Liar::Kill => "kill",
            Liar::Libc => "libc",
            Liar::Ps(_) => "ps",
        }
    }

    /// The view that misses the process, as a responder would name it.
    pub fn view(&self) -> String {
        match self {
            Liar::Kernel => "the /proc directory listing (getdents64)".into(),
            Liar::ProcMount => "/proc/PID (a mount covers it)".into(),
            Liar::ProcEntry => "/proc/PID (unreadable)".into(),
            Liar::Kill => "kill(pid, 0)".into(),
            Liar::Libc => "libc's readdir of /proc".into(),
            Liar::Ps(path) => format!("{}", path.display()),
        }
    }
}

/// A process some layer does not show, before confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    pub pid: u32,
    /// Start time from the most trustworthy view that saw it; `None` when
    /// only kill(2) vouches for the process (no kernel view, /proc masked).
    pub start_ticks: Option<u64>,
    /// The lowest layer that misses it.
    pub liar: Liar,
    /// Higher layers that miss it too (a consequence, not a cause).
    pub also: Vec<Liar>,
}

/// Every process of the reference views that some layer does not show.
pub fn suspects(snap: &Snapshot) -> Vec<Suspect> {
    let kernel = snap.kernel.processes();
    let candidates: BTreeSet<u32> = snap
        .proc_pids
        .iter()
        .chain(kernel.into_iter().flat_map(|k| k.keys()))
        .copied()
        .filter(|pid| !snap.own_pids.contains(pid))
        .collect();
    candidates
        .into_iter()
        .filter_map(|pid| {
            let mut liars = liars_of(pid, snap);
            if liars.is_empty() {
                return None;
            }
            liars.sort();
            let liar = liars.remove(0);
            let start_ticks = match liar {
                Liar::Kernel | Liar::ProcMount | Liar::ProcEntry => {
                    kernel.and_then(|k| k.get(&pid)).map(|k| k.start_ticks)
                }
                // /proc lists it: if it could not be read, it is gone (an
                // unreadable entry would have made ProcEntry the liar).
                Liar::Kill | Liar::Libc | Liar::Ps(_) => {
                    Some(snap.probes.get(&pid)?.genuine_process()?.start_ticks)
                }
            };
            Some(Suspect {
                pid,
                start_ticks,
                liar,
                also: liars,
            })
        })
        .collect()
}

/// Every layer that does not show `pid`, unordered.
fn liars_of(pid: u32, snap: &Snapshot) -> Vec<Liar> {
    let probe = snap.probes.get(&pid);
    if probe.is_some_and(probes::Probe::is_defunct) {
        return Vec::new();
    }
    let mut liars = Vec::new();
    let in_proc = snap.proc_pids.contains(&pid);
    let in_kernel = snap.kernel.processes().and_then(|k| k.get(&pid));
    if in_kernel.is_some_and(|k| !k.is_exiting()) && !in_proc {
        liars.push(Liar::Kernel);
    }
    if !in_proc {
        return liars;
    }
    let mounted = snap
        .proc_mounts
        .as_ref()
        .is_ok_and(|m| mounts::on_pid(m, pid).next().is_some());
    if mounted {
        liars.push(Liar::ProcMount);
    } else if probe.is_some_and(entry_unreadable) {
        liars.push(Liar::ProcEntry);
    }
    if probe
        .is_some_and(|p| p.genuine_process().is_some() && p.signal == SignalProbe::NoSuchProcess)
    {
        liars.push(Liar::Kill);
    }
    if snap.libc.as_ref().is_ok_and(|l| !l.pids.contains(&pid)) {
        liars.push(Liar::Libc);
    }
    for listing in &snap.ps {
        if listing.pids.as_ref().is_ok_and(|pids| !pids.contains(&pid)) {
            liars.push(Liar::Ps(listing.program.clone()));
        }
    }
    liars
}

/// kill(2) finds the process but its /proc entry cannot be read, for a
/// reason other than lack of privilege.
fn entry_unreadable(p: &probes::Probe) -> bool {
    p.signal == SignalProbe::Exists && p.error().is_some_and(|e| !e.is_permission())
}

/// Asks the layers again about one suspect.
pub trait Recheck {
    /// The lying layer, asked again, still does not show it.
    fn still_lies(&mut self, s: &Suspect) -> bool;
    /// The same process (PID and start time) is still alive per the
    /// reference views, and not exiting.
    fn same_process(&mut self, s: &Suspect) -> bool;
}

/// The suspects that survive a second look. The lying layer is asked
/// first and the process's identity after: a process with the same start
/// time after the second listing was alive all through it.
pub fn confirm(suspects: Vec<Suspect>, recheck: &mut impl Recheck) -> Vec<Suspect> {
    suspects
        .into_iter()
        .filter(|s| recheck.still_lies(s) && recheck.same_process(s))
        .collect()
}

/// Rechecks against the live system, re-taking each view at most once.
pub struct LiveRecheck<'k> {
    kernel: Option<&'k mut Kernel>,
    kernel_now: Option<Option<BTreeMap<u32, KernelProcess>>>,
    proc_now: Option<BTreeSet<u32>>,
    mounts_now: Option<Vec<views::ProcMount>>,
    libc_now: Option<Option<BTreeSet<u32>>>,
    ps_now: HashMap<PathBuf, Option<BTreeSet<u32>>>,
}

impl<'k> LiveRecheck<'k> {
    pub fn new(kernel: Option<&'k mut Kernel>) -> Self {
        LiveRecheck {
            kernel,
            kernel_now: None,
            proc_now: None,
            mounts_now: None,
            libc_now: None,
            ps_now: HashMap::new(),
        }
    }

    fn kernel_now(&mut self) -> Option<&BTreeMap<u32, KernelProcess>> {
        let kernel = &mut self.kernel;
        self.kernel_now
            .get_or_insert_with(|| {
                kernel
                    .as_deref_mut()
                    .and_then(|k| views::kernel::list(k).ok())
            })
            .as_ref()
    }
}

impl Recheck for LiveRecheck<'_> {
    fn same_process(&mut self, s: &Suspect) -> bool {
        match s.liar {
            Liar::Kernel | Liar::ProcMount | Liar::ProcEntry => match self.kernel_now() {
                Some(k) => k
                    .get(&s.pid)
                    .is_some_and(|p| Some(p.start_ticks) == s.start_ticks && !p.is_exiting()),
                // Without the kernel view and with /proc/PID masked, only
                // kill(2) can vouch for the process.
                None => s.start_ticks.is_none() && probes::signal(s.pid) == SignalProbe::Exists,
            },
            Liar::Kill | Liar::Libc | Liar::Ps(_) => {
                let p = probes::probe(s.pid);
                let now = p.genuine_process().map(|g| g.start_ticks);
                !p.is_defunct() && now.is_some() && now == s.start_ticks
            }
        }
    }

    fn still_lies(&mut self, s: &Suspect) -> bool {
        match &s.liar {
            Liar::Kernel => !self
                .proc_now
                .get_or_insert_with(|| proc::list_pids().unwrap_or_default().into_iter().collect())
                .contains(&s.pid),
            Liar::ProcMount => {
                let now = self
                    .mounts_now
                    .get_or_insert_with(|| mounts::proc_pid_mounts().unwrap_or_default());
                mounts::on_pid(now, s.pid).next().is_some()
            }
            Liar::ProcEntry => entry_unreadable(&probes::probe(s.pid)),
            Liar::Kill => probes::signal(s.pid) == SignalProbe::NoSuchProcess,
            Liar::Libc => self
                .libc_now
                .get_or_insert_with(|| LibcListing::take().ok().map(|l| l.pids))
                .as_ref()
                .is_some_and(|pids| !pids.contains(&s.pid)),
            Liar::Ps(program) => self
                .ps_now
                .entry(program.clone())
                .or_insert_with(|| PsListing::take(program).pids.ok())
                .as_ref()
                .is_some_and(|pids| !pids.contains(&s.pid)),
        }
    }
}

/// Turns confirmed suspects into findings, with the evidence and next step
/// each layer calls for.
pub fn findings(
    confirmed: &[Suspect],
    snap: &Snapshot,
    table: &ProcessTable,
    host: &Host,
) -> Vec<Finding> {
    // Facts about a lying layer (its program's hash, dpkg's verdict) are
    // gathered once, however many processes it hides.
    let mut layer_facts: HashMap<Liar, Evidence> = HashMap::new();
    confirmed
        .iter()
        .map(|s| {
            let process = snap.process(s.pid).unwrap_or_else(|| Process {
                pid: s.pid,
                comm: "?".into(),
                start_ticks: s.start_ticks.unwrap_or_default(),
                ..Default::default()
            });
            let ancestry: Vec<Process> =
                table.ancestry(&process.id()).into_iter().cloned().collect();
            let mut evidence = host.process_evidence(&process, &ancestry);
            let (summary, specific, next_step) = explain(s, snap, &mut layer_facts);
            evidence.extend(specific);
            if !s.also.is_empty() {
                let also: Vec<String> = s.also.iter().map(Liar::view).collect();
                evidence.push(("also missing from".into(), also.join(", ")));
            }
            Finding {
                id: Finding::process_finding_id(s.liar.kind(), &process),
                related: Vec::new(),
                sigma: None,
                connection: None,
                kind: s.liar.kind().into(),
                severity: if s.liar == Liar::Kernel {
                    Severity::Critical
                } else {
                    Severity::High
                },
                layer: s.liar.layer().into(),
                summary,
                process: Some(process),
                ancestry,
                evidence,
                next_step,
            }
        })
        .collect()
}

/// The kind of the finding for a /proc listing that breaks the record format.
pub const CORRUPT_LISTING: &str = "corrupt-directory-listing";

/// A finding when /proc's directory listing came back corrupt: the kernel
/// (or a hook on its getdents64) handed back records no kernel writes.
/// The processes after the break are missing from P, so they show up as
/// hidden from /proc too; the BPF program or hook that rewrites the listing
/// is linked to this finding by the kernel checks.
pub fn corrupt_listing(snap: &Snapshot) -> Option<Finding> {
    let bad = snap.proc_listing_corrupt.as_ref()?;
    Some(Finding {
        id: format!("{CORRUPT_LISTING}:/proc"),
        kind: CORRUPT_LISTING.into(),
        severity: Severity::Critical,
        layer: Liar::Kernel.layer().into(),
        summary: format!(
            "/proc's directory listing is corrupt: something rewrites getdents64's results ({bad})"
        ),
        process: None,
        ancestry: Vec::new(),
        evidence: vec![
            ev("reader", "tracer's own getdents64 of /proc (no libc)"),
            ev("corruption", bad.to_string()),
            ev(
                "listed before it",
                format!(
                    "{} PIDs (the rest of the listing was not trusted)",
                    snap.proc_pids.len()
                ),
            ),
        ],
        next_step: "A BPF program with bpf_probe_write_user or a kernel hook on getdents64 \
                    rewrites directory listings: see the kernel findings for the program and \
                    its owner; ls, ps and every /proc tool on this host see the rewritten list."
            .into(),
        connection: None,
        related: Vec::new(),
        sigma: None,
    })
}

pub type Evidence = Vec<(String, String)>;

pub fn ev(label: impl Into<String>, value: impl Into<String>) -> (String, String) {
    (label.into(), value.into())
}

/// Summary, layer-specific evidence and next step for one suspect.
fn explain(
    s: &Suspect,
    snap: &Snapshot,
    layer_facts: &mut HashMap<Liar, Evidence>,
) -> (String, Evidence, String) {
    let pid = s.pid;
    let probe = snap.probes.get(&pid);
    match &s.liar {
        Liar::Kernel => {
            let direct = match probe.and_then(|p| p.error()) {
                None => "opens and reads: only the directory listing hides it (a getdents hook)".to_string(),
                Some(e) => format!("does not open ({e}): lookups are hooked too"),
            };
            let signal = match probes::signal(pid) {
                SignalProbe::Exists => "finds the process",
                SignalProbe::NoSuchProcess => "says no such process: kill(2) is hooked too",
            };
            (
                "in the kernel's task list but missing from the /proc directory listing".into(),
                vec![ev(format!("/proc/{pid}"), direct), ev("kill(pid, 0)", signal)],
                "Kernel-level hiding (a getdents hook or rootkit): do not trust any tool on this host. \
                 Compare /proc/modules with /sys/module, list eBPF programs (`bpftool prog list`), \
                 read `dmesg` for taint and module loads, and image memory before rebooting."
                    .into(),
            )
        }
        Liar::ProcMount => {
            let mounts: Vec<&views::ProcMount> = snap
                .proc_mounts
                .as_ref()
                .map(|m| mounts::on_pid(m, pid).collect())
                .unwrap_or_default();
            let shows = match probe.and_then(|p| p.stat_pid) {
                Some(other) if other != pid => format!("process {other}'s entry"),
                Some(_) => "altered contents".to_string(),
                None => "nothing readable".to_string(),
            };
            let first = mounts.first();
            let what = first.map_or("a filesystem".to_string(), |m| format!("{} ({})", m.mount_point, m.fs_type));
            let mut evidence: Evidence = mounts.iter().map(|m| ev("mount", m.line.clone())).collect();
            evidence.push(ev(format!("/proc/{pid} shows"), shows.clone()));
            (
                format!("{what} is mounted over the process's /proc entry: tools reading /proc see {shows}"),
                evidence,
                format!(
                    "Bind-mount hiding: show the mount with `grep ' /proc/{pid}' /proc/self/mountinfo`, \
                     remove it with `umount {}`, then examine the process; find what mounted it \
                     (a service, rc script or cron job running mount).",
                    first.map_or(format!("/proc/{pid}"), |m| m.mount_point.clone())
                ),
            )
        }
        Liar::ProcEntry => {
            let error = probe
                .and_then(|p| p.error())
                .map(ToString::to_string)
                .unwrap_or_default();
            (
                "listed in /proc and alive to kill(2), but its /proc entry cannot be read".into(),
                vec![ev("error", error)],
                "A kernel hook on /proc lookups (or an unusual procfs mount option): check the /proc mount in \
                 /proc/self/mountinfo, then treat it as kernel-level hiding (loaded modules, eBPF programs)."
                    .into(),
            )
        }
        Liar::Kill => (
            "/proc shows the process but kill(pid, 0) says there is no such process".into(),
            vec![ev("kill(pid, 0)", "ESRCH (no such process)")],
            "kill(2) is hooked in the kernel (rootkits use it as a control channel): treat it as \
             kernel-level hiding; list modules and eBPF programs and image memory before rebooting."
                .into(),
        ),
        Liar::Libc => {
            let mut evidence = layer_facts
                .entry(Liar::Libc)
                .or_insert_with(preload_evidence)
                .clone();
            if let Ok(l) = &snap.libc {
                evidence.push(ev("libc view", l.method.clone()));
            }
            (
                "listed by /proc (getdents64) but hidden from libc's readdir: a user-space hook".into(),
                evidence,
                "A user-space hook in every dynamically linked program: inspect /etc/ld.so.preload and the \
                 libraries it names (above) and LD_PRELOAD in service environments; move the library aside \
                 (keep a copy) and empty /etc/ld.so.preload, then look at the process with ordinary tools."
                    .into(),
            )
        }
        Liar::Ps(program) => {
            let mut evidence = layer_facts
                .entry(s.liar.clone())
                .or_insert_with(|| ps_program_evidence(program))
                .clone();
            for other in snap.ps.iter().filter(|o| &o.program != program) {
                if other.pids.as_ref().is_ok_and(|p| p.contains(&pid)) {
                    evidence.push(ev(format!("{}", other.program.display()), "lists it"));
                }
            }
            let listed_by = match snap.libc {
                Ok(_) => "/proc and libc's readdir",
                Err(_) => "/proc (the libc view is unavailable, a libc hook is not ruled out)",
            };
            (
                format!(
                    "listed by {listed_by} but not by {}: the ps binary lies",
                    program.display()
                ),
                evidence,
                format!(
                    "The ps program lies: keep a copy of {} for analysis, compare its hash with a trusted \
                     copy, check `dpkg --verify procps` and PATH for writable directories, and reinstall procps \
                     from a trusted source.",
                    program.display()
                ),
            )
        }
    }
}

/// The ps program's path, hash, kind of file, and what dpkg says of procps.
fn ps_program_evidence(program: &Path) -> Evidence {
    program_evidence("ps program", program, "procps")
}

/// A lying program's path (under `label`), hash, kind of file, and what
/// `dpkg --verify` says of the package that should have shipped it.
pub fn program_evidence(label: &str, program: &Path, package: &str) -> Evidence {
    let mut evidence = vec![
        ev(label, program.display().to_string()),
        ev("file", file_facts(program)),
    ];
    if let Some(kind) = script_interpreter(program) {
        evidence.push(ev("file type", kind));
    }
    if let Some(verify) = dpkg_verify(package) {
        evidence.push(ev(format!("dpkg --verify {package}"), verify));
    }
    evidence
}

/// /etc/ld.so.preload, each library it names, and LD_PRELOAD.
pub fn preload_evidence() -> Evidence {
    const PRELOAD: &str = "/etc/ld.so.preload";
    let mut out = Vec::new();
    match proc::read_file(PRELOAD) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let libraries = preload_entries(&text);
            let listed = if libraries.is_empty() {
                "(no libraries)".to_string()
            } else {
                libraries.join(" ")
            };
            out.push(ev(PRELOAD, listed));
            for lib in libraries {
                out.push(ev(format!("library {lib}"), file_facts(Path::new(&lib))));
            }
        }
        Err(e) => out.push(ev(
            PRELOAD,
            format!("absent ({e}): look at LD_PRELOAD and at libc itself"),
        )),
    }
    if let Some(v) = std::env::var_os("LD_PRELOAD") {
        out.push(ev("LD_PRELOAD (tracer's environment)", v.to_string_lossy()));
    }
    out
}

/// The library paths in ld.so.preload text (whitespace- or colon-separated,
/// `#` comments).
pub fn preload_entries(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ':'))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Hash, size, owner, change time and package of a file, on one line.
pub fn file_facts(path: &Path) -> String {
    let Some(path_str) = path.to_str() else {
        return "non-UTF-8 path".into();
    };
    let stat = match rustix::fs::stat(path) {
        Ok(st) => st,
        Err(e) => return format!("cannot stat: {}", std::io::Error::from(e)),
    };
    let hash = match proc::read_file(path_str) {
        Ok(bytes) => format!("sha256 {:x}", Sha256::digest(&bytes)),
        Err(e) => format!("unreadable ({e})"),
    };
    let mut facts = format!(
        "{hash}, {} bytes, owner uid {}, mode {:o}, changed {}",
        stat.st_size,
        stat.st_uid,
        stat.st_mode & 0o7777,
        views::host::format_utc(stat.st_ctime.max(0) as u64)
    );
    if let Some(package) = dpkg_owner(path_str) {
        facts.push_str(&format!(", package: {package}"));
    }
    facts
}

/// `#!/bin/sh` and the like: a script standing in for a binary.
fn script_interpreter(path: &Path) -> Option<String> {
    let bytes = proc::read_file(path.to_str()?).ok()?;
    let first = bytes.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    Some(format!(
        "script, interpreter {}",
        String::from_utf8_lossy(first).trim()
    ))
}

fn dpkg() -> Option<PathBuf> {
    ps::first_in_path("dpkg", &std::env::var_os("PATH").unwrap_or_default())
}

/// Which Debian package owns a file; "not from any package" if none. The
/// path is also tried under its merged-/usr alias, since dpkg records the
/// name it was installed under.
fn dpkg_owner(path: &str) -> Option<String> {
    let dpkg = dpkg()?;
    let alias = match path.strip_prefix("/usr") {
        Some(rest)
            if ["/bin/", "/sbin/", "/lib"]
                .iter()
                .any(|p| rest.starts_with(p)) =>
        {
            Some(rest.to_string())
        }
        _ => ["/bin/", "/sbin/", "/lib"]
            .iter()
            .any(|p| path.starts_with(p))
            .then(|| format!("/usr{path}")),
    };
    for candidate in std::iter::once(path.to_string()).chain(alias) {
        let mut command = Command::new(&dpkg);
        command.args(["-S", &candidate]);
        if let Ok(out) =
            views::run_helper(&mut command, views::HELPER_TIMEOUT).and_then(|o| o.success())
        {
            let owner = out
                .stdout
                .lines()
                .next()
                .and_then(|l| l.split(':').next())
                .unwrap_or("?");
            return Some(owner.trim().to_string());
        }
    }
    Some("not from any package".into())
}

/// What `dpkg --verify PACKAGE` says (nothing printed means no change).
fn dpkg_verify(package: &str) -> Option<String> {
    let mut command = Command::new(dpkg()?);
    command.args(["--verify", package]);
    // dpkg exits non-zero when it finds changes; its findings are on stdout.
    Some(
        match views::run_helper(&mut command, views::HELPER_TIMEOUT) {
            Ok(out) if out.stdout.trim().is_empty() && out.status.success() => {
                "no changed files".to_string()
            }
            Ok(out) if out.stdout.trim().is_empty() => format!("failed: {}", out.stderr.trim()),
            Ok(out) => out.stdout.trim().lines().collect::<Vec<_>>().join("; "),
            Err(e) => format!("failed: {e:#}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{
        probes::{Probe, ProbeError},
        KernelView, ProcMount,
    };

    fn kernel_process(pid: u32, start: u64) -> KernelProcess {
        KernelProcess {
            tgid: pid,
            ppid: 1,
            uid: 0,
            comm: format!("p{pid}").into(),
            start_ticks: start,
            kernel_thread: false,
            has_mm: true,
            threads: 1,
            thread_names: Vec::new(),
            netns: None,
            ns: Default::default(),
        }
    }

    fn probe(pid: u32, start: u64) -> Probe {
        Probe {
            pid,
            dir_error: None,
            read_error: None,
            signal: SignalProbe::Exists,
            stat_pid: Some(pid),
            state: Some('S'),
            exiting: false,
            exe_denied: false,
            process: Some(Process {
                pid,
                comm: format!("p{pid}").into(),
                start_ticks: start,
                ..Default::default()
            }),
        }
    }

    /// PIDs 1..=9 everywhere, tracer is PID 9.
    fn clean() -> Snapshot {
        let pids: BTreeSet<u32> = (1..=9).collect();
        Snapshot {
            kernel: KernelView::Used(
                pids.iter()
                    .map(|&p| (p, kernel_process(p, p as u64 * 10)))
                    .collect(),
            ),
            proc_pids: pids.clone(),
            proc_listing_corrupt: None,
            libc: Ok(LibcListing {
                pids: pids.clone(),
                method: "test".into(),
                helper_pid: 100,
            }),
            ps: vec![PsListing {
                program: "/bin/ps".into(),
                pids: Ok(pids.clone()),
                helper_pid: Some(101),
            }],
            probes: pids.iter().map(|&p| (p, probe(p, p as u64 * 10))).collect(),
            proc_mounts: Ok(Vec::new()),
            own_pids: BTreeSet::from([9, 100, 101]),
            took: BTreeMap::new(),
        }
    }

    fn remove(snap: &mut Snapshot, pid: u32, from: &str) {
        match from {
            "P" => drop(snap.proc_pids.remove(&pid)),
            "L" => drop(snap.libc.as_mut().unwrap().pids.remove(&pid)),
            "S" => drop(snap.ps[0].pids.as_mut().unwrap().remove(&pid)),
            "D" => drop(snap.probes.remove(&pid)),
            _ => unreachable!(),
        }
    }

    fn blamed(snap: &Snapshot) -> Vec<(u32, Liar, Vec<Liar>)> {
        suspects(snap)
            .into_iter()
            .map(|s| (s.pid, s.liar, s.also))
            .collect()
    }

    #[test]
    fn agreeing_views_raise_no_suspect() {
        assert!(suspects(&clean()).is_empty());
    }

    #[test]
    fn the_lowest_layer_that_misses_a_process_is_blamed() {
        let mut snap = clean();
        let ps = Liar::Ps("/bin/ps".into());
        // 2: only the kernel has it.
        for view in ["P", "L", "S", "D"] {
            remove(&mut snap, 2, view);
        }
        // 3: a libc hook (ps, which uses libc, misses it too).
        remove(&mut snap, 3, "L");
        remove(&mut snap, 3, "S");
        // 4: ps alone lies.
        remove(&mut snap, 4, "S");
        // 5: /proc/5 is covered by a mount.
        snap.proc_mounts = Ok(vec![ProcMount {
            pid: 5,
            mount_point: "/proc/5".into(),
            fs_type: "tmpfs".into(),
            source: "none".into(),
            line: "90 22 0:50 / /proc/5 rw - tmpfs none rw".into(),
        }]);
        remove(&mut snap, 5, "S");
        // 6: listed and alive, but its entry cannot be read.
        let p6 = snap.probes.get_mut(&6).unwrap();
        p6.process = None;
        p6.read_error = Some(ProbeError {
            what: "read /proc/6/stat".into(),
            errno: Some(libc::ENOENT),
            message: "No such file or directory".into(),
        });
        // 7: kill(2) denies a process /proc shows.
        snap.probes.get_mut(&7).unwrap().signal = SignalProbe::NoSuchProcess;
        assert_eq!(
            blamed(&snap),
            [
                (2, Liar::Kernel, vec![]),
                (3, Liar::Libc, vec![ps.clone()]),
                (4, ps.clone(), vec![]),
                (5, Liar::ProcMount, vec![ps.clone()]),
                (6, Liar::ProcEntry, vec![]),
                (7, Liar::Kill, vec![]),
            ]
        );
        let kernel_only = &suspects(&snap)[0];
        assert_eq!(
            kernel_only.start_ticks,
            Some(20),
            "identity comes from the kernel view"
        );
    }

    #[test]
    fn leaving_processes_tracer_itself_and_privilege_refusals_are_not_suspects() {
        let mut snap = clean();
        // A zombie ps does not list, an exiting process, tracer and its helpers.
        snap.probes.get_mut(&2).unwrap().state = Some('Z');
        remove(&mut snap, 2, "S");
        snap.probes.get_mut(&3).unwrap().exiting = true;
        remove(&mut snap, 3, "L");
        remove(&mut snap, 9, "L");
        // Exiting in the kernel and already gone from /proc.
        if let KernelView::Used(k) = &mut snap.kernel {
            k.get_mut(&4).unwrap().has_mm = false;
        }
        remove(&mut snap, 4, "P");
        // Gone before D could read it (then ps missed it too).
        remove(&mut snap, 5, "D");
        remove(&mut snap, 5, "S");
        // Another user's process under hidepid: EACCES says nothing.
        let p6 = snap.probes.get_mut(&6).unwrap();
        p6.process = None;
        p6.read_error = Some(ProbeError {
            what: "read /proc/6/status".into(),
            errno: Some(libc::EACCES),
            message: "Permission denied".into(),
        });
        assert_eq!(blamed(&snap), []);
    }

    #[test]
    fn without_the_kernel_view_the_other_layers_are_still_diffed() {
        let mut snap = clean();
        snap.kernel = KernelView::Skipped("not root".into());
        remove(&mut snap, 3, "L");
        assert_eq!(blamed(&snap), [(3, Liar::Libc, vec![])]);
    }

    /// A recheck that answers from fixed facts.
    struct Facts {
        still_hidden: Vec<u32>,
        alive: Vec<(u32, u64)>,
        asked: Vec<String>,
    }

    impl Recheck for Facts {
        fn still_lies(&mut self, s: &Suspect) -> bool {
            self.asked.push(format!("lies {}", s.pid));
            self.still_hidden.contains(&s.pid)
        }
        fn same_process(&mut self, s: &Suspect) -> bool {
            self.asked.push(format!("alive {}", s.pid));
            s.start_ticks
                .is_some_and(|t| self.alive.contains(&(s.pid, t)))
        }
    }

    #[test]
    fn only_suspects_that_survive_a_second_look_are_kept() {
        let suspect = |pid, start| Suspect {
            pid,
            start_ticks: Some(start),
            liar: Liar::Libc,
            also: vec![],
        };
        let mut facts = Facts {
            // 10 still hidden and alive; 11 exited; 12's PID was reused;
            // 13 shows up now (it was only starting when L was taken).
            still_hidden: vec![10, 11, 12],
            alive: vec![(10, 100), (12, 999), (13, 130)],
            asked: vec![],
        };
        let kept = confirm(
            vec![
                suspect(10, 100),
                suspect(11, 110),
                suspect(12, 120),
                suspect(13, 130),
            ],
            &mut facts,
        );
        assert_eq!(kept.iter().map(|s| s.pid).collect::<Vec<_>>(), [10]);
        // The layer is asked before the identity, so "alive after" covers
        // the whole second listing.
        assert_eq!(&facts.asked[..2], ["lies 10", "alive 10"]);
    }

    #[test]
    fn every_liar_kind_is_listed() {
        let liars = [
            Liar::Kernel,
            Liar::ProcMount,
            Liar::ProcEntry,
            Liar::Kill,
            Liar::Libc,
            Liar::Ps("/bin/ps".into()),
        ];
        assert_eq!(liars.map(|l| l.kind()), KINDS);
    }

    #[test]
    fn preload_entries_split_on_space_colon_and_skip_comments() {
        let text = "# hook\n/usr/lib/libx.so /opt/a.so:/opt/b.so  # trailing\n\n";
        assert_eq!(
            preload_entries(text),
            ["/usr/lib/libx.so", "/opt/a.so", "/opt/b.so"]
        );
    }
}
