//! `cargo xtask`: set up the machine, build, test, run and benchmark tracer.
mod bench;
mod build;
mod dist;
mod fixtures;
mod matrix;
mod setup;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test, run and benchmark tracer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building, testing and benchmarking need (idempotent).
    Setup,
    /// Set up, then build the tracer.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, then build a static (musl) release binary.
    BuildStatic,
    /// Set up, build static, and package: .deb, .tar.gz and SHA256SUMS in target/xtask/dist.
    Dist,
    /// Set up, build (release) and run the tracer as root with ARGS.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, run the test suite on this host on one test thread,
    /// then the kernel matrix (the kernel tests in Debian's 5.10, 6.1 and
    /// 6.12 under QEMU).
    Test {
        /// This host's tests only, no kernel matrix.
        #[arg(long)]
        host_only: bool,
        /// Passed to the test binaries (on the host).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build (release) and run a benchmark.
    Bench(bench::Args),
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels in QEMU and run tracer's kernel tests in each.
    Matrix(matrix::Args),
    /// Bench helper: N children that sleep until stdin closes.
    #[command(name = "__sleepers", hide = true)]
    Sleepers { count: usize },
    /// Bench helper: a chain of LEVELS processes whose leaf connects COUNT
    /// times, one every INTERVAL_US microseconds.
    #[command(name = "__chain", hide = true)]
    Chain {
        levels: u32,
        port: u16,
        count: u32,
        interval_us: u64,
    },
    /// Bench helper: PROCS processes each holding PAIRS loopback connections (both ends).
    #[command(name = "__holders", hide = true)]
    Holders { procs: usize, pairs: usize },
    /// Bench helper: prints, for each boot-time stamp read from stdin, how
    /// many ns after it the line arrived (a process wakeup through a pipe).
    #[command(name = "__wakeups", hide = true)]
    Wakeups,
    /// Bench helper: a tree of sleeping processes, each printing its pid.
    #[command(name = "__tree", hide = true)]
    Tree { fanouts: Vec<usize> },
}

fn main() -> ExitCode {
    setup::prepend_cargo_bin_to_path();
    let result = match Cli::parse().cmd {
        Cmd::Setup => setup::run().map(|()| 0),
        Cmd::Build { release } => build::build(release).map(|()| 0),
        Cmd::BuildStatic => build::build_static().map(|()| 0),
        Cmd::Dist => dist::dist(),
        Cmd::Run { args } => build::run_tracer(&args),
        Cmd::Test { host_only, args } => build::test(&args).and_then(|host| {
            if host_only {
                return Ok(host);
            }
            let matrix = matrix::run(&matrix::Args::all())?;
            println!(
                "xtask test: host tests {}, kernel matrix {}",
                if host == 0 { "passed" } else { "FAILED" },
                if matrix == 0 { "passed" } else { "FAILED" }
            );
            Ok(if host == 0 { matrix } else { host })
        }),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Matrix(args) => matrix::run(&args),
        Cmd::Sleepers { count } => bench::hidden::sleepers(count),
        Cmd::Chain {
            levels,
            port,
            count,
            interval_us,
        } => bench::connect::chain(levels, port, count, interval_us),
        Cmd::Tree { fanouts } => bench::connect::tree(&fanouts),
        Cmd::Wakeups => bench::connect::wakeups(),
        Cmd::Holders { procs, pairs } => bench::net::holders(procs, pairs),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A scratch folder of ours under target/xtask.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = target_dir().join("xtask").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `cargo`, the one running us if any, in the workspace root.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command to completion and fails unless it succeeds.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Our own binary, for the bench helpers; /proc/self/exe still works when a
/// rebuild has replaced the file meanwhile.
fn self_exe() -> PathBuf {
    match std::env::current_exe() {
        Ok(path) if path.exists() => path,
        _ => PathBuf::from("/proc/self/exe"),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Exit code of a finished child for our own exit (signals map to 128+n).
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128 + s as u8,
        _ => 1,
    }
}
