//! Types every part of tracer speaks: process identity, process records,
//! findings and their severity.
pub mod host_str;
pub mod placement;
pub mod socket;

pub use host_str::HostStr;
pub use placement::{Container, Namespaces};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Clock ticks per second used by /proc for start times (USER_HZ). Linux
/// fixes it at 100 on every architecture tracer runs on.
pub const USER_HZ: u64 = 100;

/// Converts the kernel's `start_boottime` (ns) to /proc's start-time ticks,
/// exactly as `/proc/PID/stat` does (`nsec_to_clock_t`).
pub fn boottime_ns_to_ticks(ns: u64) -> u64 {
    ns / (1_000_000_000 / USER_HZ)
}

/// A PID given by the user: a positive number (0 is the kernel's idle
/// task, never a process to watch or stop). The error says why, in words.
pub fn parse_pid(arg: &str) -> Result<u32, String> {
    match arg.trim().parse::<i64>() {
        Ok(0) => Err("`0` is not a PID (0 is the kernel's idle task, not a process)".into()),
        Ok(n) if n < 0 => Err(format!("`{n}` is not a PID (a PID is a positive number)")),
        Ok(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n <= 4_194_304)
            .ok_or_else(|| format!("{n} is above the largest PID Linux allows (4194304)")),
        Err(_) => Err(format!(
            "`{}` is not a PID (expected a positive number)",
            HostStr::from(arg).quoted_prefix(40)
        )),
    }
}

/// A process identity. PIDs are recycled; (pid, start time) is not.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct ProcessId {
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_ticks: u64,
}

/// What tracer knows about one process, from whichever source saw it.
// Deserialize: kill-tree reads it back from watch's lineage file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Process group and session, from /proc (0 when the source did not
    /// say: kernel records, exec events).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pgid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sid: u32,
    /// The kernel's 15-byte task name.
    pub comm: HostStr,
    /// Executable path (`/proc/PID/exe`, or the exec event's filename);
    /// ends in " (deleted)" when the file was unlinked.
    pub exe: Option<HostStr>,
    pub cmdline: Vec<HostStr>,
    pub start_ticks: u64,
    /// Kernel thread (`PF_KTHREAD`): no user-space program behind it.
    pub kernel_thread: bool,
    /// Threads whose name differs from `comm` (a miner's worker thread
    /// named `xmrig` in a process named like a daemon).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<ThreadName>,
    /// When the process was seen to exit (boot-time ns), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at_ns: Option<u64>,
    /// Its namespaces, from the kernel's task record or /proc (`None`
    /// where not read: tracer reads them for the processes it shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Namespaces>,
    /// Its cgroup v2 path (the `0::` line of /proc/PID/cgroup); shared by
    /// the processes of one cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<std::sync::Arc<HostStr>>,
    /// The container its cgroup or runtime process names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<std::sync::Arc<Container>>,
    /// Its main thread has exited while other threads run on: ps shows it
    /// `<defunct>`; `exe` and `cmdline` are a live thread's.
    #[serde(default, skip_serializing_if = "is_false")]
    pub leader_exited: bool,
    /// What of this record was cut to keep one event bounded (JSON keeps
    /// everything else): a command line past [`CMDLINE_MAX_BYTES`], thread
    /// names past [`THREAD_NAMES_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut: Vec<String>,
}

/// Bytes of a command line kept in a record (Linux allows about 6 MiB).
pub const CMDLINE_MAX_BYTES: usize = 4 << 20;
/// Distinct thread names kept in a record.
pub const THREAD_NAMES_MAX: usize = 4096;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    pub fn cmdline_string(&self) -> HostStr {
        if self.cmdline.is_empty() {
            HostStr::from_text(&format!("[{}]", self.comm.as_str()))
        } else {
            HostStr::join(&self.cmdline, " ")
        }
    }
}

/// A thread of a process, by its own name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadName {
    pub tid: u32,
    pub comm: HostStr,
}

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
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
    /// Identifies this finding within a report (`related` names others by
    /// it): the kind and what it is about, so the same thing found twice
    /// gets the same id.
    pub id: String,
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
    /// The connection concerned, for findings about a socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<socket::Socket>,
    /// Ids of other findings about the same incident from another side: a
    /// hidden connection and the hidden process that holds it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
    /// The Sigma rule that produced it (kind `sigma`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma: Option<Box<SigmaMatch>>,
}

/// What a Sigma rule says about itself, and the fields that matched.
/// These strings are the rule author's, escaped like host strings when
/// printed.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct SigmaMatch {
    /// The rule's `id` (its file name when it has none).
    pub rule_id: String,
    pub title: String,
    /// The rule's `level` as written (`informational`..`critical`).
    pub level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub tags: Vec<String>,
    /// ATT&CK technique ids from the tags (`attack.t1059.004` → `T1059.004`).
    pub attack: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub references: Vec<String>,
    pub falsepositives: Vec<String>,
    /// The rule file it was loaded from.
    pub file: String,
    /// Logsource category (`process_creation`, `network_connection`, `file_event`).
    pub category: String,
    /// Each field whose condition held, with the event's value.
    pub matched: Vec<SigmaField>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SigmaField {
    pub field: String,
    pub value: HostStr,
}

impl Finding {
    /// `KIND:PID:START_TICKS`.
    pub fn process_finding_id(kind: &str, p: &Process) -> String {
        format!("{kind}:{}:{}", p.pid, p.start_ticks)
    }

    /// `KIND:NETNS:INODE`.
    pub fn socket_finding_id(kind: &str, s: &socket::Socket) -> String {
        format!("{kind}:{}:{}", s.netns, s.inode)
    }
}
