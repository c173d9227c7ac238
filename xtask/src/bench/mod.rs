//! `cargo xtask bench`: benchmarks against the bars of the project, with
//! baselines and peer tools measured in the same run. Shared helpers:
//! child processes that are always cleaned up, timing and statistics.
pub mod connect;
pub mod exec;
pub mod hidden;
pub mod ioc;
pub mod net;
pub mod sigma;

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::ValueEnum;

use crate::{build, setup};

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    which: Which,
    /// Interleaved rounds of each configuration in `exec` (the median is kept).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Threads running the exec storm in `exec` (2 keeps both cores busy).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Benchmark this tracer binary instead of building target/release/tracer.
    #[arg(long)]
    tracer: Option<PathBuf>,
    /// An earlier tracer build to measure beside this one, interleaved in
    /// the same rounds (`exec`): the baseline of a change.
    #[arg(long)]
    before: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Which {
    Exec,
    Hidden,
    Connect,
    Net,
    Ioc,
    Sigma,
    All,
}

pub fn run(args: &Args) -> Result<u8> {
    setup::require_root("bench")?;
    let tracer = match &args.tracer {
        Some(path) => path.clone(),
        None => build::build_release()?,
    };
    install_signal_handlers();
    // Orphans of the trees we start come back to us, so we can reap them.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let mut verdicts = Vec::new();
    let mut bench = |which: Which, name: &str, f: &dyn Fn() -> Result<bool>| {
        if args.which == which || args.which == Which::All {
            let result = f();
            reap_orphans();
            verdicts.push((name.to_string(), result));
        }
    };
    bench(Which::Exec, "exec", &|| {
        exec::run(
            &tracer,
            args.before.as_deref(),
            args.rounds.into(),
            args.workers.into(),
        )
    });
    bench(Which::Hidden, "hidden", &|| hidden::run(&tracer));
    bench(Which::Connect, "connect", &|| connect::run(&tracer));
    bench(Which::Net, "net", &|| net::run(&tracer));
    bench(Which::Ioc, "ioc", &|| ioc::run(&tracer));
    bench(Which::Sigma, "sigma", &|| {
        sigma::run(&tracer, args.rounds.into(), args.workers.into())
    });
    let mut all_pass = true;
    for (name, result) in &verdicts {
        let verdict = match result {
            Ok(true) => "PASS".to_string(),
            Ok(false) => "FAIL".to_string(),
            Err(e) => format!("FAIL (error: {e:#})"),
        };
        all_pass &= matches!(result, Ok(true));
        if verdicts.len() > 1 || result.is_err() {
            println!("bench {name}: {verdict}");
        }
    }
    Ok(if all_pass { 0 } else { 1 })
}

/// Prints the bar line of a benchmark and returns whether it passed.
fn verdict(name: &str, bar: &str, failures: &[String]) -> bool {
    if failures.is_empty() {
        println!("{name}: PASS ({bar})");
    } else {
        println!("{name}: FAIL ({bar}): {}", failures.join("; "));
    }
    failures.is_empty()
}

// ---- processes that are always cleaned up ----------------------------------

/// Process groups to kill if we are interrupted.
static GROUPS: [AtomicI32; 32] = [const { AtomicI32::new(0) }; 32];
/// Set when interrupted: long loops stop starting processes.
pub static STOPPING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    STOPPING.store(true, Ordering::SeqCst);
    for g in &GROUPS {
        let pgid = g.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill, waitpid and _exit are async-signal-safe.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    // We are a subreaper: reap everything so nothing is left as a zombie.
    unsafe {
        while libc::waitpid(-1, std::ptr::null_mut(), 0) > 0 {}
        libc::_exit(128 + sig);
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches atomics and async-signal-safe calls.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Reaps children that were handed to us as orphans.
fn reap_orphans() {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        // SAFETY: plain waitpid; called only when no `Proc` is alive.
        match unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } {
            0 => std::thread::sleep(Duration::from_millis(10)),
            pid if pid > 0 => {}
            _ => return,
        }
    }
}

/// A child in its own process group, killed with its whole group when
/// dropped (on success, error or panic), and if we die (PDEATHSIG).
pub struct Proc {
    pub child: Child,
    name: String,
}

impl Proc {
    /// Must be called from the main thread (PDEATHSIG follows the spawning thread).
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id() as i32;
        GROUPS.iter().any(|g| {
            g.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Ok(Proc {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: our own child, not yet reaped while `self` lives.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        // A pidfd turns readable when the child exits: no busy polling.
        // SAFETY: pidfd_open on our own unreaped child.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid(), 0) } as libc::c_int;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break Some(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            let ms = left.as_millis().clamp(1, 100) as libc::c_int;
            if pidfd >= 0 {
                let mut fds = libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut fds, 1, ms) };
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        if pidfd >= 0 {
            // SAFETY: our own fd.
            unsafe { libc::close(pidfd) };
        }
        Ok(status)
    }

    /// Sends `sig` and waits up to `timeout`; then kills the group and fails.
    pub fn stop(&mut self, sig: libc::c_int, timeout: Duration) -> Result<ExitStatus> {
        self.signal(sig);
        match self.wait_timeout(timeout)? {
            Some(status) => Ok(status),
            None => {
                self.kill_group();
                anyhow::bail!(
                    "{} did not exit within {timeout:?} of signal {sig}: killed",
                    self.name
                )
            }
        }
    }

    /// Kills the group and reaps the leader, and the members that were
    /// handed to us (we are their subreaper), for up to a second.
    fn kill_group(&mut self) {
        let pgid = self.pid();
        // SAFETY: the group is ours (we made the child its leader).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(1);
        // SAFETY: waits only for children in this group.
        while unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) } >= 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_group();
        let pid = self.pid();
        for g in &GROUPS {
            let _ = g.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

/// The outcome of a command run under a time cap.
pub struct Timed {
    pub secs: f64,
    /// User + system CPU seconds of the command and the children it
    /// waited for: unlike `secs`, not inflated by other load.
    pub cpu_secs: f64,
    /// None: the cap was hit and the command killed.
    pub status: Option<ExitStatus>,
}

/// Runs `cmd` with output to `out` (and `out`.err), killing it at `cap`.
pub fn timed(name: &str, cmd: &mut Command, out: &Path, cap: Duration) -> Result<Timed> {
    cmd.stdin(Stdio::null())
        .stdout(File::create(out)?)
        .stderr(File::create(out.with_extension("err"))?);
    let cpu_before = children_cpu_secs();
    let start = Instant::now();
    let mut proc = Proc::spawn(name, cmd)?;
    let status = proc.wait_timeout(cap)?;
    let secs = start.elapsed().as_secs_f64();
    // Every child reaped meanwhile is this one: the others are still alive.
    let cpu_secs = children_cpu_secs() - cpu_before;
    Ok(Timed {
        secs,
        cpu_secs,
        status,
    })
}

/// CPU seconds of every child this process has reaped so far.
fn children_cpu_secs() -> f64 {
    rusage_secs(libc::RUSAGE_CHILDREN)
}

/// User + system CPU seconds from `getrusage(who)`.
pub fn rusage_secs(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Real-time priority of the threads that stamp arrivals: above tracer's
/// own (`tracer::sched`), so that a tool's line is stamped when it arrives,
/// not when the bench next gets a CPU.
pub const READER_FIFO_PRIORITY: i32 = 2;

/// Raises the calling thread to [`READER_FIFO_PRIORITY`] (SCHED_FIFO), or
/// else to nice -15; best effort.
pub fn reader_priority() {
    let param = libc::sched_param {
        sched_priority: READER_FIFO_PRIORITY,
    };
    // SAFETY: both act on the calling thread only.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -15);
        }
    }
}

/// Reads lines in a thread, each stamped with CLOCK_BOOTTIME at arrival.
pub fn line_reader(input: impl Read + Send + 'static) -> Receiver<(u64, String)> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        reader_priority();
        let mut input = BufReader::new(input);
        let mut buf = Vec::new();
        while input.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if tx.send((boottime_ns(), line)).is_err() {
                break;
            }
            buf.clear();
        }
    });
    rx
}

/// The last lines of a file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{}: {}",
        path.display(),
        lines[lines.len().saturating_sub(5)..].join(" | ")
    )
}

// ---- measurements ------------------------------------------------------------

pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Peak resident set (VmHWM) of a live process, in KiB.
pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident set (VmRSS) of a live process, in KiB.
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Percentile `p` (0..=100) by nearest rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The `type` of a JSON event line.
pub fn event_type(v: &serde_json::Value) -> &str {
    v.get("type").and_then(|t| t.as_str()).unwrap_or("")
}
