//! watch's place in the CPU queue. Its reader is woken for every connect;
//! on a host whose cores are taken (a miner at 200%, a kernel thread that
//! scans memory) a reader at normal priority waits a scheduler slice or
//! more behind them, and alerts come milliseconds late. So the reader runs
//! `SCHED_FIFO` at the lowest real-time priority while that is cheap, and
//! drops back to an ordinary, raised priority (nice -10, like auditd's
//! `priority_boost`) while it takes more than half a CPU: an event storm
//! must not take a core from the host.
use std::time::{Duration, Instant};

/// The nice value outside real time: ahead of ordinary work, behind the
/// kernel's own.
pub const NICE: i32 = -10;
/// `SCHED_FIFO` priority: the lowest, below every real-time task the host has.
const FIFO_PRIORITY: i32 = 1;
/// CPU share (of one CPU) above which real time is given up...
const DEMOTE_ABOVE: f64 = 0.5;
/// ... and below which it is taken back.
const PROMOTE_BELOW: f64 = 0.25;
/// How long a CPU share is measured over.
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Policy {
    Fifo,
    /// Real time was given up while busy; taken back when quiet.
    Demoted,
    /// Real time is not allowed here (no CAP_SYS_NICE, a container's
    /// limits), for this reason: nice only (if that was allowed), for good.
    Refused(String),
}

/// The calling thread's scheduling, kept within its CPU budget by
/// [`Priority::check`].
pub struct Priority {
    policy: Policy,
    /// Whether nice -10 was taken (it needs CAP_SYS_NICE or RLIMIT_NICE).
    niced: bool,
    window_start: Instant,
    cpu_at_window_start: Duration,
}

impl Priority {
    /// Raises the calling thread: nice -10, then `SCHED_FIFO` when allowed.
    /// Threads and processes it starts later begin at normal priority
    /// (`SCHED_RESET_ON_FORK`). Best effort: a refusal is kept for
    /// [`Priority::describe`].
    pub fn raise() -> Priority {
        let niced = rustix::process::setpriority_process(None, NICE).is_ok();
        let policy = match set_fifo(true) {
            Ok(()) => Policy::Fifo,
            Err(e) => Policy::Refused(e.to_string()),
        };
        Priority {
            policy,
            niced,
            window_start: Instant::now(),
            cpu_at_window_start: thread_cpu(),
        }
    }

    /// One line for the start record.
    pub fn describe(&self) -> String {
        match &self.policy {
            Policy::Refused(why) if self.niced => {
                format!("nice {NICE} (real-time priority refused: {why})")
            }
            Policy::Refused(why) => {
                format!("normal priority (nice {NICE} and real time refused: {why}); alerts may wait behind busy cores")
            }
            Policy::Fifo | Policy::Demoted => format!(
                "SCHED_FIFO {FIFO_PRIORITY} for the event reader, nice {NICE} while it uses \
                 over {:.0}% of a CPU",
                DEMOTE_ABOVE * 100.0
            ),
        }
    }

    /// Called often (every drain tick): once per [`WINDOW`], gives up or
    /// takes back real time by the CPU share the thread used in it.
    pub fn check(&mut self) {
        let wall = self.window_start.elapsed();
        if wall < WINDOW || matches!(self.policy, Policy::Refused(_)) {
            return;
        }
        let cpu = thread_cpu();
        let share = cpu.saturating_sub(self.cpu_at_window_start).as_secs_f64() / wall.as_secs_f64();
        self.window_start = Instant::now();
        self.cpu_at_window_start = cpu;
        if let Some(next) = next_policy(&self.policy, share) {
            if set_fifo(next == Policy::Fifo).is_ok() {
                self.policy = next;
            }
        }
    }
}

/// The policy to switch to after a window with `share` of a CPU, if any.
fn next_policy(now: &Policy, share: f64) -> Option<Policy> {
    match now {
        Policy::Fifo if share > DEMOTE_ABOVE => Some(Policy::Demoted),
        Policy::Demoted if share < PROMOTE_BELOW => Some(Policy::Fifo),
        _ => None,
    }
}

/// `SCHED_FIFO` (or back to `SCHED_OTHER`, which keeps the nice value) for
/// the calling thread, with `SCHED_RESET_ON_FORK`.
fn set_fifo(fifo: bool) -> std::io::Result<()> {
    let (policy, priority) = if fifo {
        (libc::SCHED_FIFO, FIFO_PRIORITY)
    } else {
        (libc::SCHED_OTHER, 0)
    };
    // The system call itself, not libc's wrapper: musl's sched_setscheduler
    // is a stub that returns ENOSYS, so the static build would never get
    // real time. The kernel's struct sched_param is one int.
    let param: libc::c_int = priority;
    // SAFETY: pid 0 is the calling thread; `param` outlives the call and
    // has the layout of the kernel's struct sched_param.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0 as libc::pid_t,
            policy | libc::SCHED_RESET_ON_FORK,
            &param as *const libc::c_int,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's policy, by the system call (musl's wrapper is
    /// a stub).
    fn thread_policy() -> i32 {
        // SAFETY: queries the calling thread.
        unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0 as libc::pid_t) as i32 }
    }

    #[test]
    fn real_time_is_given_up_when_busy_and_taken_back_when_quiet() {
        assert_eq!(next_policy(&Policy::Fifo, 0.1), None);
        assert_eq!(next_policy(&Policy::Fifo, 0.8), Some(Policy::Demoted));
        assert_eq!(next_policy(&Policy::Demoted, 0.4), None, "hysteresis");
        assert_eq!(next_policy(&Policy::Demoted, 0.1), Some(Policy::Fifo));
        assert_eq!(next_policy(&Policy::Refused("EPERM".into()), 0.0), None);
    }

    #[test]
    fn a_raised_thread_and_its_children_start_where_they_should() {
        // On its own thread: the test harness's threads keep their policy.
        std::thread::spawn(|| {
            let p = Priority::raise();
            let policy = thread_policy() & !libc::SCHED_RESET_ON_FORK;
            // What the start record says is what the thread got.
            let said = p.describe();
            assert_eq!(
                said.starts_with("SCHED_FIFO"),
                policy == libc::SCHED_FIFO,
                "{said}"
            );
            if rustix::process::geteuid().is_root() {
                assert_eq!(policy, libc::SCHED_FIFO, "{said}");
                // A thread it starts is back to normal.
                let child = std::thread::spawn(thread_policy).join().unwrap();
                assert_eq!(child, libc::SCHED_OTHER);
            } else {
                assert!(said.contains("refused"), "{said}");
            }
        })
        .join()
        .unwrap();
    }
}
