//! Types every part of tracer speaks: process identity, process records,
//! findings and their severity.
pub mod socket;

use schemars::JsonSchema;
use serde::Serialize;

/// Clock ticks per second used by /proc for start times (USER_HZ). Linux
/// fixes it at 100 on every architecture tracer runs on.
pub const USER_HZ: u64 = 100;

/// Converts the kernel's `start_boottime` (ns) to /proc's start-time ticks,
/// exactly as `/proc/PID/stat` does (`nsec_to_clock_t`).
pub fn boottime_ns_to_ticks(ns: u64) -> u64 {
    ns / (1_000_000_000 / USER_HZ)
}

/// A process identity. PIDs are recycled; (pid, start time) is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct ProcessId {
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_ticks: u64,
}

/// What tracer knows about one process, from whichever source saw it.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The kernel's 15-byte task name.
    pub comm: String,
    /// Executable path (`/proc/PID/exe`, or the exec event's filename);
    /// ends in " (deleted)" when the file was unlinked.
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub start_ticks: u64,
    /// Kernel thread (`PF_KTHREAD`): no user-space program behind it.
    pub kernel_thread: bool,
    /// When the process was seen to exit (boot-time ns), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited_at_ns: Option<u64>,
}

impl Process {
    pub fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }

    /// The command line as one shell-like string, or `[comm]` when empty
    /// (kernel threads, zombies), the way ps shows it.
    pub fn cmdline_string(&self) -> String {
        if self.cmdline.is_empty() {
            format!("[{}]", self.comm)
        } else {
            self.cmdline.join(" ")
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }
}

/// One thing a detector found. Every detector returns these; every
/// renderer prints them.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Finding {
    /// Short stable identifier of what was found, e.g. `hidden-from-libc`.
    pub kind: String,
    pub severity: Severity,
    /// The layer that lies (`libc`, `ps`, `proc-mount`, `kernel`...) or the
    /// rule that fired.
    pub layer: String,
    /// One sentence for a human.
    pub summary: String,
    /// The process concerned, with its ancestry (nearest parent first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<Process>,
    /// Supporting facts as (label, value) pairs, in display order.
    pub evidence: Vec<(String, String)>,
    /// What the responder should look at or run next.
    pub next_step: String,
}
