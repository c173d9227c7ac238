//! D: direct probes of one PID, through raw system calls: does /proc/PID
//! exist, can its files be read, does kill(pid, 0) find the process. The
//! same reads give the process record every other check works from, so each
//! PID costs a handful of small reads and nothing more.
use std::{collections::BTreeMap, fmt, io};

use rustix::{io::Errno, process::Pid};

use super::KernelProcess;
use crate::{model::Process, proc};

/// Why one probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeError {
    /// What was tried, e.g. `read /proc/42/stat`.
    pub what: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl ProbeError {
    fn new(what: String, err: &io::Error) -> Self {
        ProbeError {
            what,
            errno: err.raw_os_error(),
            message: err.to_string(),
        }
    }

    /// Refused for lack of privilege (hidepid, another user's process):
    /// says nothing about hiding.
    pub fn is_permission(&self) -> bool {
        matches!(self.errno, Some(libc::EACCES) | Some(libc::EPERM))
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.message)
    }
}

/// What `kill(pid, 0)` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalProbe {
    /// The process exists (EPERM counts: it exists, we may not signal it).
    Exists,
    NoSuchProcess,
}

/// Everything D learned about one PID.
#[derive(Clone, Debug)]
pub struct Probe {
    pub pid: u32,
    /// `stat("/proc/PID")` failed (only tried when its stat file could not
    /// be read).
    pub dir_error: Option<ProbeError>,
    /// Reading `/proc/PID/stat` or `/proc/PID/status` failed.
    pub read_error: Option<ProbeError>,
    pub signal: SignalProbe,
    /// The PID written inside `/proc/PID/stat`; another one means another
    /// process's entry is mounted over this one.
    pub stat_pid: Option<u32>,
    /// Process state letter from stat (`Z` zombie, `X` dead...).
    pub state: Option<char>,
    /// The kernel flags the process as exiting (`PF_EXITING`): it has begun
    /// to die, its memory and program may already be gone.
    pub exiting: bool,
    /// The process as /proc shows it, when stat and status were readable.
    pub process: Option<Process>,
    /// The kernel refused to show this process's executable (and so its
    /// open files: the same ptrace access check guards both): another
    /// user's process, seen without root. Its exe-based checks could not run.
    pub exe_denied: bool,
}

impl Probe {
    /// The first thing that failed on the way into /proc/PID, if anything.
    pub fn error(&self) -> Option<&ProbeError> {
        self.dir_error.as_ref().or(self.read_error.as_ref())
    }

    /// An exiting, zombie or dead process: it is leaving during the scan,
    /// and nothing it shows or lacks means anything. Not one whose main
    /// thread alone has exited: its other threads still run (and speak
    /// for it, see `proc::leader_exited`).
    pub fn is_defunct(&self) -> bool {
        let leaving = self.exiting || matches!(self.state, Some('Z') | Some('X'));
        leaving && !self.process.as_ref().is_some_and(|p| p.leader_exited)
    }

    /// The process record, if /proc answered for this PID and not for some
    /// other PID mounted over it.
    pub fn genuine_process(&self) -> Option<&Process> {
        self.process
            .as_ref()
            .filter(|_| self.stat_pid == Some(self.pid))
    }
}

/// Probes one PID.
pub fn probe(pid: u32) -> Probe {
    probe_with(pid, None)
}

/// Probes one PID. `kernel` is the kernel's record of it, if any: when its
/// start time matches this very /proc entry, its uid and thread names are
/// taken (the kernel's own, from `real_cred` and the task list) instead of
/// reading `/proc/PID/status` and every thread's `comm`, the costliest
/// reads of a probe.
fn probe_with(pid: u32, kernel: Option<&KernelProcess>) -> Probe {
    let dir = format!("/proc/{pid}");
    let mut probe = Probe {
        pid,
        dir_error: None,
        read_error: None,
        signal: signal(pid),
        stat_pid: None,
        state: None,
        exiting: false,
        process: None,
        exe_denied: false,
    };
    let stat = match proc::read_stat(pid) {
        Ok(s) => s,
        Err(e) => {
            probe.read_error = Some(ProbeError::new(format!("read {dir}/stat"), &e));
            // Only now is the directory itself worth a look: present but
            // unreadable is not the same as gone.
            probe.dir_error = rustix::fs::stat(dir.as_str())
                .err()
                .map(|e| ProbeError::new(format!("stat {dir}"), &e.into()));
            return probe;
        }
    };
    probe.stat_pid = u32::try_from(stat.pid).ok();
    probe.state = Some(stat.state);
    probe.exiting = stat.flags & tracer_common::PF_EXITING != 0;
    let kernel = kernel.filter(|k| probe.stat_pid == Some(pid) && k.start_ticks == stat.starttime);
    let uid = match kernel
        .map(|k| Ok(k.uid))
        .unwrap_or_else(|| proc::read_uid(pid))
    {
        Ok(uid) => uid,
        Err(e) => {
            probe.read_error = Some(ProbeError::new(format!("read {dir}/status"), &e));
            return probe;
        }
    };
    let threads = kernel.map(|k| k.thread_names.clone());
    let process = proc::process_from_stat(pid, stat, uid, threads);
    // Only a refusal counts: a kernel thread or a zombie has no exe to show.
    probe.exe_denied = process.exe.is_none()
        && !process.kernel_thread
        && proc::read_link(&format!("{dir}/exe"))
            .is_err_and(|e| matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)));
    probe.process = Some(process);
    probe
}

/// `kill(pid, 0)`.
pub fn signal(pid: u32) -> SignalProbe {
    let Some(p) = Pid::from_raw(pid as i32) else {
        return SignalProbe::NoSuchProcess;
    };
    match rustix::process::test_kill_process(p) {
        Err(Errno::SRCH) => SignalProbe::NoSuchProcess,
        _ => SignalProbe::Exists,
    }
}

/// Probes every PID, spread over the CPUs: with thousands of processes the
/// /proc reads are most of a scan's time. `kernel`: the kernel's processes,
/// when its view was taken.
pub fn probe_all(
    pids: &[u32],
    kernel: Option<&BTreeMap<u32, KernelProcess>>,
) -> BTreeMap<u32, Probe> {
    const PER_THREAD_MIN: usize = 512;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(pids.len().div_ceil(PER_THREAD_MIN).max(1));
    let chunk = pids.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = pids
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&p| (p, probe_with(p, kernel.and_then(|k| k.get(&p)))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("probe thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_probes_clean() {
        let me = std::process::id();
        let p = probe(me);
        assert!(p.dir_error.is_none() && p.read_error.is_none());
        assert_eq!(p.signal, SignalProbe::Exists);
        assert_eq!(p.stat_pid, Some(me));
        assert!(!p.is_defunct());
        let process = p.genuine_process().expect("own process");
        assert_eq!(process.ppid, std::os::unix::process::parent_id());
        assert_eq!(Some(process.start_ticks), proc::start_ticks(me));
    }

    #[test]
    fn the_kernels_record_replaces_status_only_for_the_same_process() {
        let me = std::process::id();
        let real = probe(me).process.unwrap();
        let kernel = |start_ticks| KernelProcess {
            tgid: me,
            ppid: real.ppid,
            uid: real.uid + 4242,
            comm: real.comm.clone(),
            start_ticks,
            kernel_thread: false,
            has_mm: true,
            threads: 1,
            thread_names: Vec::new(),
            netns: None,
            ns: Default::default(),
        };
        let same = probe_with(me, Some(&kernel(real.start_ticks)));
        assert_eq!(same.process.unwrap().uid, real.uid + 4242);
        // Another start time is another process under a reused PID.
        let other = probe_with(me, Some(&kernel(real.start_ticks + 1)));
        assert_eq!(other.process.unwrap().uid, real.uid);
    }

    #[test]
    fn a_free_pid_probes_as_gone() {
        // PIDs never exceed pid_max (at most 2^22).
        let p = probe(4_194_305);
        assert!(p.dir_error.is_some() && p.read_error.is_some());
        assert_eq!(p.signal, SignalProbe::NoSuchProcess);
        assert!(p.process.is_none());
    }

    #[test]
    fn probing_many_pids_keeps_every_one() {
        let pids: Vec<u32> = proc::list_pids().unwrap();
        let probes = probe_all(&pids, None);
        assert_eq!(probes.len(), pids.len());
        assert!(probes.contains_key(&std::process::id()));
    }
}
