//! Failures a user can cause, each with one line saying what went wrong and
//! what to do, and a documented exit code (see README, "Exit codes").
use std::fmt;

/// Exit codes shared by every command.
pub mod exit {
    /// Success; for `hidden`, a clean machine.
    pub const OK: i32 = 0;
    /// `hidden` found something.
    pub const FINDINGS: i32 = 1;
    /// Bad usage or input, or an unexpected runtime error.
    pub const ERROR: i32 = 2;
    /// Not root, or missing CAP_BPF/CAP_PERFMON.
    pub const NOT_PRIVILEGED: i32 = 3;
    /// The kernel cannot run tracer's programs (no BTF, load refused).
    pub const KERNEL_UNSUPPORTED: i32 = 4;
    /// `kill-tree` refused its target (PID 1, kernel thread, tracer itself,
    /// no such process).
    pub const REFUSED: i32 = 5;
    /// `hidden` found nothing, but could not check everything (without
    /// root: the kernel view, other users' executables and open files).
    /// Not "clean".
    pub const INCOMPLETE: i32 = 6;
    /// A `--file` or `--remote` selector (or `kill-tree PATH`) matched no
    /// process.
    pub const NO_MATCH: i32 = 7;
    /// `status --sigma`: some rules were skipped (each named in one line).
    pub const RULES_SKIPPED: i32 = 8;
}

#[derive(Debug)]
pub enum UserError {
    NotPrivileged {
        command: String,
    },
    /// The kernel has no BTF at this path.
    NoBtf(&'static str),
    /// The kernel lacks something a command cannot do without.
    KernelUnsupported(String),
    Refused(String),
    BadInput(String),
    /// A selector matched no process.
    NoMatch(String),
}

impl UserError {
    pub fn exit_code(&self) -> i32 {
        match self {
            UserError::NotPrivileged { .. } => exit::NOT_PRIVILEGED,
            UserError::NoBtf(_) | UserError::KernelUnsupported(_) => exit::KERNEL_UNSUPPORTED,
            UserError::Refused(_) => exit::REFUSED,
            UserError::BadInput(_) => exit::ERROR,
            UserError::NoMatch(_) => exit::NO_MATCH,
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::NotPrivileged { command } if command.starts_with("kill-tree") => write!(
                f,
                "`tracer {command}` signals other users' processes and needs root: run `sudo tracer {command}`"
            ),
            UserError::NotPrivileged { command } => write!(
                f,
                "`tracer {command}` loads eBPF programs and needs root (or CAP_BPF and CAP_PERFMON): run `sudo tracer {command}`"
            ),
            UserError::NoBtf(path) => write!(
                f,
                "this kernel has no BTF ({path}): tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
            ),
            UserError::KernelUnsupported(why) => f.write_str(why),
            UserError::Refused(why) => write!(f, "refused: {why}"),
            UserError::BadInput(why) => f.write_str(why),
            UserError::NoMatch(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UserError {}

/// The exit code for any error: a `UserError`'s own, else `ERROR`.
pub fn exit_code_of(err: &anyhow::Error) -> i32 {
    err.downcast_ref::<UserError>()
        .map(UserError::exit_code)
        .unwrap_or(exit::ERROR)
}
