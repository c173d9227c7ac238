//! Command-line definitions only (clap). Behaviour lives in `commands`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Live response for compromised Linux hosts: the kernel's view of processes and connections",
    after_help = "Exit codes: 0 ok/clean, 1 findings, 2 error or bad input, 3 needs root, \
                  4 kernel unsupported, 5 kill-tree refused its target, \
                  6 hidden found nothing but could not check everything (not root), \
                  7 a --file/--remote selector (or kill-tree PATH) matched no process, \
                  8 status --sigma skipped some rules."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print on stderr where the time went (BTF, program loads, views).
    #[arg(long, global = true)]
    pub timings: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream every exec and outbound TCP connect from the kernel, with ancestry.
    Watch(WatchArgs),
    /// Find processes and connections hidden from /proc, libc, ps, ss or netstat, and name-spoofed processes.
    Hidden(HiddenArgs),
    /// Plan (and with --kill, carry out) stopping a malicious process tree.
    KillTree(KillTreeArgs),
    /// Every connection as the kernel sees it, with its process and ancestry (like `ss -tuanp`).
    Net(NetArgs),
    /// Kernel version, BTF, and which hooks tracer would use.
    Status(StatusArgs),
    /// Internal: list /proc through libc's readdir, as ordinary programs see it.
    #[command(name = "__libc-readdir", hide = true)]
    LibcReaddir,
    /// Internal: print files read through libc's fopen, as netstat reads /proc/net.
    #[command(name = "__libc-cat", hide = true)]
    LibcCat {
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Internal (benchmarks): load indicator files as watch does, without
    /// resolving domains, and print load time, memory and match cost (JSON).
    #[command(name = "__ioc-bench", hide = true)]
    IocBench {
        /// Indicator files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Lookups to time.
        #[arg(long, default_value_t = 1_000_000)]
        lookups: u32,
    },
    /// Internal: write man pages, shell completions and JSON schemas into DIR.
    #[command(name = "__generate", hide = true)]
    Generate {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// JSON lines instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
    /// Only events from these PIDs or their descendants (repeatable).
    #[arg(long = "pid", value_name = "PID", value_parser = crate::model::parse_pid,
          allow_negative_numbers = true)]
    pub pids: Vec<u32>,
    /// Only events whose process name (comm) is one of these (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Only exec events.
    #[arg(long, conflicts_with = "connect_only")]
    pub exec_only: bool,
    /// Only connect events (and alerts).
    #[arg(long)]
    pub connect_only: bool,
    /// Indicator file: one address, CIDR, ADDR:PORT, :PORT or domain a line (repeatable).
    #[arg(long = "ioc", value_name = "FILE")]
    pub ioc_files: Vec<PathBuf>,
    /// Do not load the built-in mining-pool indicators.
    #[arg(long)]
    pub no_default_iocs: bool,
    /// Also look indicator domains up through the host's resolver (off by
    /// default: the lookups land in the incident's DNS logs).
    #[arg(long)]
    pub resolve_domains: bool,
    /// Sigma rules: a rule file or a directory of them (repeatable); see "Sigma rules" in the README.
    #[arg(long = "sigma", value_name = "PATH")]
    pub sigma: Vec<PathBuf>,
    /// Internal (benchmarks): add a `timing` object to each alert.
    #[arg(long, hide = true)]
    pub timing: bool,
    /// Print only findings of this severity or above (repeats and the rest are counted in the summary).
    #[arg(long, value_name = "LEVEL", value_enum, default_value_t = crate::model::Severity::Low)]
    pub min_severity: crate::model::Severity,
    /// Append records to FILE instead of stdout, rotated by size (SIGHUP re-opens it).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Rotate the --output file before it would exceed SIZE (bytes, or with K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "100M", requires = "output",
          value_parser = crate::output::sink::parse_size)]
    pub output_max_size: u64,
    /// Rotated --output files kept: FILE.1 (newest) to FILE.N; 0 truncates FILE instead.
    #[arg(long, value_name = "N", default_value_t = 5, requires = "output")]
    pub output_keep: u32,
}

#[derive(Args, Debug, Clone, Default)]
pub struct HiddenArgs {
    /// Sigma rules: a rule file or a directory of them (repeatable): process_creation rules run on every running process; see "Sigma rules" in the README.
    #[arg(long = "sigma", value_name = "PATH")]
    pub sigma: Vec<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Skip the kernel (eBPF) view even when running as root.
    #[arg(long)]
    pub no_kernel: bool,
    /// Skip the kernel checks (BPF programs, kernel hooks, hidden modules).
    #[arg(long)]
    pub no_kernel_checks: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Selectors shared by `hidden` and `net`: look at the processes that
/// `kill-tree PATH` or `kill-tree --remote ADDR` would stop.
#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Only the processes that run, map or hold open this file.
    #[arg(long = "file", value_name = "PATH", conflicts_with = "remote")]
    pub file: Option<PathBuf>,
    /// Only the processes holding a connection to ADDR[:PORT].
    #[arg(long = "remote", value_name = "ADDR[:PORT]")]
    pub remote: Option<String>,
    /// Only the processes in this container: its id or an id prefix of 4
    /// or more digits (`docker ps` shows 12), its name (LXC, nspawn), a
    /// Kubernetes pod's uid, or `ns:INODE` for a PID namespace.
    #[arg(long = "container", value_name = "ID|NAME")]
    pub container: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct KillTreeArgs {
    /// The process to stop (a PID), or a file: every process that runs it,
    /// maps it or holds it open (also deleted or replaced since), each with
    /// everything that keeps it alive.
    // Negative numbers reach the PID check, so `-5` gets its one-line refusal.
    #[arg(
        value_name = "PID|PATH",
        allow_negative_numbers = true,
        required_unless_present = "remote",
        conflicts_with = "remote"
    )]
    pub target: Option<String>,
    /// Instead of a PID: every process holding a connection to ADDR
    /// (`10.0.0.1`, `10.0.0.1:3333`, `[2001:db8::1]:443`).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub remote: Option<String>,
    /// Carry out the plan (default is a dry run that only prints it).
    #[arg(long)]
    pub kill: bool,
    /// With --kill, also stop the related processes the plan lists (same
    /// process group or session as the target, outside its tree).
    #[arg(long)]
    pub relatives: bool,
    /// Before killing, copy each member's executable here with a JSON record.
    #[arg(long, value_name = "DIR")]
    pub quarantine: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct NetArgs {
    /// One JSON object instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
    /// Only connections held by these PIDs or their descendants (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Indicator file: one address, CIDR, ADDR:PORT, :PORT or domain a line (repeatable).
    #[arg(long = "ioc", value_name = "FILE")]
    pub ioc_files: Vec<PathBuf>,
    /// Do not load the built-in mining-pool indicators.
    #[arg(long)]
    pub no_default_iocs: bool,
    /// Also look indicator domains up through the host's resolver (off by
    /// default: the lookups land in the incident's DNS logs).
    #[arg(long)]
    pub resolve_domains: bool,
    /// Only listening TCP sockets and bound, unconnected datagram sockets.
    #[arg(long)]
    pub listening: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Sigma rules: a rule file or a directory of them (repeatable): load them and print what loaded, without watching; see "Sigma rules" in the README.
    #[arg(long = "sigma", value_name = "PATH")]
    pub sigma: Vec<PathBuf>,
}
