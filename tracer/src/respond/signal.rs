//! Signalling through pidfds, so that a recycled PID is never signalled.
//!
//! A pidfd names one process for as long as it is open, whatever happens to
//! its PID. So the order is: open the pidfd, then check that the PID still
//! holds the planned process (start time from /proc/PID/stat). If it does,
//! the pidfd refers to that process; if the process died and the PID was
//! reused in between, the start times differ and the pidfd is dropped
//! unused. Signals then go through the pidfd only.
use std::{os::fd::OwnedFd, time::Duration};

use rustix::{
    event::{poll, PollFd, PollFlags, Timespec},
    io::Errno,
    process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal},
};

use crate::model::Process;

/// A planned process, pinned by a pidfd after its identity was checked.
pub struct Held {
    pub process: Process,
    fd: OwnedFd,
}

/// Why a planned process could not be held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotHeld {
    /// It exited before we got to it.
    Gone,
    /// Its PID now holds another process: not ours to signal.
    Recycled,
    Error(String),
}

impl std::fmt::Display for NotHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotHeld::Gone => f.write_str("already exited"),
            NotHeld::Recycled => {
                f.write_str("its PID now belongs to another process: not signalled")
            }
            NotHeld::Error(e) => write!(f, "cannot open a pidfd: {e}"),
        }
    }
}

/// Opens a pidfd on `p.pid`, then checks it is still the planned process.
pub fn hold(p: &Process) -> Result<Held, NotHeld> {
    let pid = Pid::from_raw(p.pid as i32).ok_or(NotHeld::Gone)?;
    let fd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Err(NotHeld::Gone),
        Err(e) => return Err(NotHeld::Error(e.to_string())),
    };
    match crate::proc::start_ticks(p.pid) {
        Some(t) if t == p.start_ticks => Ok(Held {
            process: p.clone(),
            fd,
        }),
        Some(_) => Err(NotHeld::Recycled),
        None => Err(NotHeld::Gone),
    }
}

impl Held {
    /// Sends `sig`. A process that already exited counts as done.
    pub fn signal(&self, sig: Signal) -> Result<(), Errno> {
        match pidfd_send_signal(&self.fd, sig) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Sends `sig` to each held process; returns the ones that refused, with why.
pub fn signal_all(held: &[Held], sig: Signal) -> Vec<(u32, Errno)> {
    held.iter()
        .filter_map(|h| h.signal(sig).err().map(|e| (h.process.pid, e)))
        .collect()
}

/// Waits until every held process has exited (its pidfd turns readable),
/// at most `limit`. Returns the PIDs still alive after that.
pub fn wait_exited(held: &[Held], limit: Duration) -> Vec<u32> {
    let deadline = std::time::Instant::now() + limit;
    let mut alive: Vec<&Held> = held.iter().collect();
    while !alive.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut fds: Vec<PollFd> = alive
            .iter()
            .map(|h| PollFd::new(&h.fd, PollFlags::IN))
            .collect();
        let timeout = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => break,
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => break,
        }
        let exited: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        let mut i = 0;
        alive.retain(|_| {
            i += 1;
            !exited[i - 1]
        });
        if left.is_zero() {
            break;
        }
    }
    alive.iter().map(|h| h.process.pid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn spawn_sleeper() -> (std::process::Child, Process) {
        let child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let p = crate::proc::read_process(child.id()).unwrap();
        (child, p)
    }

    #[test]
    fn holds_stops_and_kills_the_planned_process() {
        let (mut child, p) = spawn_sleeper();
        let held = hold(&p).unwrap();
        assert!(signal_all(std::slice::from_ref(&held), Signal::STOP).is_empty());
        assert!(signal_all(std::slice::from_ref(&held), Signal::KILL).is_empty());
        assert!(wait_exited(std::slice::from_ref(&held), Duration::from_secs(2)).is_empty());
        assert!(child.wait().is_ok());
        // Signalling after exit is not an error.
        assert!(held.signal(Signal::KILL).is_ok());
    }

    #[test]
    fn a_changed_start_time_is_never_signalled() {
        let (mut child, mut p) = spawn_sleeper();
        p.start_ticks += 1; // as if the PID had been reused since planning
        assert_eq!(hold(&p).err(), Some(NotHeld::Recycled));
        let _ = child.kill();
        let _ = child.wait();
        let gone = Process {
            pid: i32::MAX as u32,
            ..p
        };
        assert_eq!(hold(&gone).err(), Some(NotHeld::Gone));
    }

    #[test]
    fn waiting_reports_survivors() {
        let (mut child, p) = spawn_sleeper();
        let held = hold(&p).unwrap();
        assert_eq!(
            wait_exited(std::slice::from_ref(&held), Duration::from_millis(50)),
            [p.pid]
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
