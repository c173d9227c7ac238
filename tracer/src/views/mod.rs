//! Views of the process list, each from a different layer, to be diffed.
//!
//! | view | source                                   | module         |
//! |------|------------------------------------------|----------------|
//! | K    | the kernel's task list (eBPF `iter/task`) | `kernel`       |
//! | P    | /proc through the getdents64 system call  | `crate::proc`  |
//! | L    | /proc through libc's readdir (a child)    | `libc_readdir` |
//! | S    | the output of `ps`                        | `ps`           |
//! | D    | direct probes of each PID                 | `probes`, `mounts` |
//!
//! `file_users` and `selection` answer "which processes use this file or
//! talk to this address" for the `--file` and `--remote` selectors.
//!
//! `host` holds what turns a process record into evidence (user names,
//! wall-clock start times, parent chains).
//!
//! A [`Snapshot`] takes them all at the same time: the helpers of L and S
//! (child processes, `ps` the slowest of all) start first, and K, P and D
//! are taken while they run, so a scan costs about one `ps` run. A PID in a
//! reference view (K, P) and missing from another either came or went in
//! between or is hidden, which the detector then settles by asking the
//! lying layer again and probing that PID (the only serial pass).
pub mod bpf;
pub mod dns;
pub mod file_users;
pub mod file_writes;
pub mod host;
pub mod hosts_file;
pub mod kallsyms;
pub mod kernel;
pub mod kernel_hooks;
pub mod libc_readdir;
pub mod lineage;
pub mod module_memory;
pub mod mounts;
pub mod net;
pub mod placement;
pub mod probes;
pub mod ps;
pub mod selection;
pub mod syscalls;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::model::Process;

pub use kernel::{KernelProcess, KernelView};
pub use libc_readdir::LibcListing;
pub use mounts::ProcMount;
pub use probes::Probe;
pub use ps::PsListing;

/// How long a helper program (`ps`, the libc lister) may take before it is
/// killed: a hostile `ps` must not hang the responder.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(20);

/// Every view of the process list, taken once.
pub struct Snapshot {
    /// K: every process the kernel has, by tgid, or why it was skipped.
    pub kernel: KernelView,
    /// P: the PIDs /proc lists through getdents64.
    pub proc_pids: BTreeSet<u32>,
    /// Where P's listing broke the directory record format, if it did:
    /// something rewrites getdents64's results.
    pub proc_listing_corrupt: Option<crate::getdents::Corruption>,
    /// L: the PIDs libc's readdir lists, or why that listing failed.
    pub libc: Result<LibcListing, String>,
    /// S: one listing per distinct `ps` program (PATH's, then /bin/ps).
    pub ps: Vec<PsListing>,
    /// D: direct probes of every PID of K and P.
    pub probes: BTreeMap<u32, Probe>,
    /// Mounts on or under /proc/PID (part of D).
    pub proc_mounts: Result<Vec<ProcMount>, String>,
    /// PIDs of tracer itself and the helpers it ran for this snapshot.
    pub own_pids: BTreeSet<u32>,
    /// How long each view took, by letter (all run side by side).
    pub took: BTreeMap<&'static str, Duration>,
}

/// Runs `f` and measures it; `--timings` lists it as `name`.
pub fn timed<T>(name: &'static str, f: impl FnOnce() -> T) -> (T, Duration) {
    let _span = crate::timings::span(name);
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

impl Snapshot {
    /// Takes every view. `kernel` is the already loaded kernel side, or the
    /// reason the kernel view is skipped.
    pub fn take(kernel: &mut Result<crate::kernel::Kernel, String>) -> Result<Snapshot> {
        Ok(Snapshot::start().finish(kernel, |_, _, _| ())?.0)
    }

    /// Starts the views that wait on helper processes (L, S), so that the
    /// caller can load the kernel side meanwhile; [`Started::finish`] takes
    /// the rest.
    pub fn start() -> Started {
        let libc =
            std::thread::spawn(|| timed("view L: libc listing (a helper)", LibcListing::take));
        let ps = std::thread::spawn(|| {
            timed("view S: ps (helpers)", || {
                ps::programs()
                    .into_iter()
                    .map(|p| PsListing::take(&p))
                    .collect::<Vec<_>>()
            })
        });
        Started { libc, ps }
    }
    /// The best record of a process: /proc's (it has exe and arguments)
    /// when /proc answered for this very PID, else the kernel's.
    pub fn process(&self, pid: u32) -> Option<Process> {
        let from_proc = self.probes.get(&pid).and_then(Probe::genuine_process);
        let from_kernel = || {
            self.kernel
                .processes()?
                .get(&pid)
                .map(KernelProcess::to_process)
        };
        from_proc.cloned().or_else(from_kernel)
    }

    /// Every process any reference view saw, for the process table.
    pub fn processes(&self) -> Vec<Process> {
        let kernel_pids = self.kernel.processes().into_iter().flat_map(|k| k.keys());
        let pids: BTreeSet<u32> = self.probes.keys().chain(kernel_pids).copied().collect();
        pids.into_iter()
            .filter_map(|pid| self.process(pid))
            .collect()
    }
}

/// A snapshot whose helper views (L, S) are running.
pub struct Started {
    libc: std::thread::JoinHandle<(Result<LibcListing, String>, Duration)>,
    ps: std::thread::JoinHandle<(Vec<PsListing>, Duration)>,
}

impl Started {
    /// Takes K, P and D (CPU-bound /proc reads) on this thread while the
    /// helpers run, then collects them. `kernel` is the loaded kernel side,
    /// or the reason the kernel view is skipped. `alongside` runs on its own
    /// thread once K and P are taken, beside D: it gets the kernel's
    /// processes when there are any, /proc's PIDs, and every PID either
    /// lists (ascending).
    pub fn finish<T: Send>(
        self,
        kernel: &mut Result<crate::kernel::Kernel, String>,
        alongside: impl FnOnce(Option<&BTreeMap<u32, KernelProcess>>, &BTreeSet<u32>, &[u32]) -> T
            + Send,
    ) -> Result<(Snapshot, T)> {
        let (kernel_view, k_time) = timed("view K: task iterator", || match kernel {
            Ok(k) => KernelView::take(k),
            Err(why) => KernelView::Skipped(why.clone()),
        });
        let (proc_listing, p_time) = timed("view P: /proc listing", crate::proc::list_pids_checked);
        let (proc_pids, proc_listing_corrupt) =
            proc_listing.context("listing /proc with getdents64")?;
        let proc_pids: BTreeSet<u32> = proc_pids.into_iter().collect();
        let tasks = kernel_view.processes();
        let to_probe: Vec<u32> = proc_pids
            .iter()
            .chain(tasks.into_iter().flat_map(|k| k.keys()))
            .copied()
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        let ((probes, d_time), beside) = std::thread::scope(|s| {
            let beside = s.spawn(|| alongside(tasks, &proc_pids, &to_probe));
            let probes = timed("view D: direct probes", || {
                probes::probe_all(&to_probe, tasks)
            });
            (probes, beside.join())
        });
        let beside = beside.map_err(|_| anyhow::anyhow!("a view taken beside D panicked"))?;
        let proc_mounts =
            mounts::proc_pid_mounts().map_err(|e| format!("reading /proc/self/mountinfo: {e}"));
        let (libc, l_time) = self.libc.join().unwrap_or_else(|_| {
            (
                Err("the libc listing thread panicked".into()),
                Duration::ZERO,
            )
        });
        let (ps, s_time) = self.ps.join().unwrap_or_default();
        let mut own_pids = BTreeSet::from([std::process::id()]);
        own_pids.extend(libc.as_ref().ok().map(|l| l.helper_pid));
        own_pids.extend(ps.iter().filter_map(|p| p.helper_pid));
        let snapshot = Snapshot {
            kernel: kernel_view,
            proc_pids,
            proc_listing_corrupt,
            libc,
            ps,
            probes,
            proc_mounts,
            own_pids,
            took: BTreeMap::from([
                ("K", k_time),
                ("P", p_time),
                ("L", l_time),
                ("S", s_time),
                ("D", d_time),
            ]),
        };
        Ok((snapshot, beside))
    }
}

/// What a helper program printed, and its PID (so its own entry in the
/// process list is never taken for a finding).
#[derive(Debug)]
pub struct HelperOutput {
    pub pid: u32,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl HelperOutput {
    /// The output, or an error naming the exit status and stderr.
    pub fn success(self) -> Result<HelperOutput> {
        if !self.status.success() {
            bail!("{}: {}", self.status, self.stderr.trim());
        }
        Ok(self)
    }
}

/// Runs a helper program with a time limit; fails when it cannot start or
/// takes longer than `timeout` (it is killed then).
pub fn run_helper(command: &mut Command, timeout: Duration) -> Result<HelperOutput> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(result) => result?,
        Err(_) => {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            bail!("timed out after {} s and was killed", timeout.as_secs_f32());
        }
    };
    Ok(HelperOutput {
        pid,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The numbers a helper printed, one per line (blank and other lines skipped).
pub fn parse_pid_lines(text: &str) -> BTreeSet<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_lines_skip_headers_and_padding() {
        let pids = parse_pid_lines("  PID\n    1\n  42\n\n.\n..\n1000\n");
        assert_eq!(pids, BTreeSet::from([1, 42, 1000]));
    }

    #[test]
    fn a_helper_that_fails_or_hangs_is_an_error() {
        assert!(run_helper(Command::new("false").arg("x"), HELPER_TIMEOUT)
            .unwrap()
            .success()
            .is_err());
        let started = std::time::Instant::now();
        let hang = run_helper(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(hang.unwrap_err().to_string().contains("timed out"));
        assert!(started.elapsed() < Duration::from_secs(5));
        let ok = run_helper(Command::new("echo").arg("7"), HELPER_TIMEOUT)
            .unwrap()
            .success()
            .unwrap();
        assert_eq!(parse_pid_lines(&ok.stdout), BTreeSet::from([7]));
    }
}
