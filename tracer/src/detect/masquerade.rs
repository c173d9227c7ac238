//! Masquerade: processes that pretend to be something else — a kernel
//! thread, a system daemon, a program they are not — or that run from where
//! programs do not live.
//!
//! Every rule is written against what legitimate systems do, so a busy host
//! stays quiet: a command name differs from its executable for symlinks,
//! scripts, versioned interpreters, truncated names and rewritten argv
//! ("sshd: root@pts/0"); those are resolved the way the kernel and the
//! shell would before anything is called a lie. A name that differs but
//! claims nothing (no system program or daemon has it) is not reported.
use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::{
    detect::indicators,
    model::{host_str::original_bytes, Finding, HostStr, Process, Severity},
    respond::program::{file_name, strip_deleted},
    table::ProcessTable,
    views::{host::Host, probes, Snapshot},
};

/// Each rule that can fire, one finding kind each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    KernelThreadName,
    NameMismatch,
    NearMissName,
    ExeMemfd,
    ExeDeleted,
    ExeInTemp,
    ExeHiddenDir,
    DaemonUser,
    DaemonPath,
    DaemonParent,
    MinerName,
    MinerArguments,
    ExeByFd,
}

impl Rule {
    pub fn kind(self) -> &'static str {
        match self {
            Rule::KernelThreadName => "kernel-thread-name",
            Rule::NameMismatch => "name-mismatch",
            Rule::NearMissName => "near-miss-name",
            Rule::ExeMemfd => "exe-memfd",
            Rule::ExeDeleted => "exe-deleted",
            Rule::ExeInTemp => "exe-in-temp",
            Rule::ExeHiddenDir => "exe-hidden-dir",
            Rule::DaemonUser => "daemon-user",
            Rule::DaemonPath => "daemon-path",
            Rule::DaemonParent => "daemon-parent",
            Rule::MinerName => "miner-name",
            Rule::MinerArguments => "miner-arguments",
            Rule::ExeByFd => "exe-by-fd",
        }
    }
}

/// One rule firing on one process.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub rule: Rule,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<(String, String)>,
    pub next_step: String,
}

/// Directories whose programs are the system's. Bare command names are
/// looked up here, in this order (a usual root PATH).
const SYSTEM_BIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/lib/systemd",
    "/lib/systemd",
    "/snap/bin",
];

/// Where installed software lives; a daemon running from elsewhere is not
/// the system's.
const SYSTEM_PREFIXES: &[&str] = &[
    "/usr/",
    "/bin/",
    "/sbin/",
    "/lib/",
    "/lib64/",
    "/lib32/",
    "/libx32/",
    "/opt/",
    "/snap/",
    "/nix/store/",
    "/gnu/store/",
];

/// World-writable places programs are dropped in, and how suspicious each is.
const TEMP_DIRS: &[(&str, Severity)] = &[
    ("/dev/shm/", Severity::High),
    ("/run/shm/", Severity::High),
    ("/tmp/", Severity::Medium),
    ("/var/tmp/", Severity::Medium),
];

/// Hidden directories in home directories that toolchain managers install
/// into; their programs (cargo, rustc, node, python...) run all day on
/// developer machines and CI.
const TOOLCHAIN_DIRS: &[&str] = &[
    ".rustup/toolchains/",
    ".cargo/bin/",
    ".pyenv/versions/",
    ".rbenv/versions/",
    ".nvm/versions/",
    ".sdkman/candidates/",
    ".vscode-server/",
    ".cursor-server/",
];

/// Kernel thread families named `family/...` (per-CPU or per-device).
const KTHREAD_FAMILIES: &[&str] = &[
    "kworker",
    "ksoftirqd",
    "migration",
    "watchdog",
    "cpuhp",
    "idle_inject",
    "rcuop",
    "rcuog",
    "rcuos",
    "rcuob",
    "irq",
    "jbd2",
    "events",
    "kintegrityd",
    "kblockd",
];

/// Kernel thread names without a slash; digit runs written as `N`, `-` as `_`.
const KTHREAD_NAMES: &[&str] = &[
    "kthreadd",
    "kworker",
    "ksoftirqd",
    "rcu_sched",
    "rcu_bh",
    "rcu_preempt",
    "rcu_gp",
    "rcu_par_gp",
    "rcu_tasks_kthread",
    "rcu_tasks_rude_kthread",
    "rcu_tasks_trace_kthread",
    "kswapdN",
    "kswapd",
    "kcompactdN",
    "khugepaged",
    "ksmd",
    "kauditd",
    "khungtaskd",
    "oom_reaper",
    "kdevtmpfs",
    "kblockd",
    "kintegrityd",
    "kthrotld",
    "writeback",
    "netns",
    "watchdogd",
    "kstrp",
    "ipvN_addrconf",
    "scsi_eh_N",
    "scsi_tmf_N",
    "ata_sff",
    "edac_poller",
    "devfreq_wq",
    "kpsmoused",
    "kaluad",
    "kmpathd",
    "bioset",
    "kacpid",
    "kacpi_notify",
    "pdflush",
    "kjournald",
    "khelper",
    "kmpath_rdacd",
];

/// Names commonly borrowed by malware: system daemons and programs. A name
/// one edit away from one of these, that is not itself installed, is a
/// near miss. (`kworker` is left out: "worker" is one edit away, and
/// kernel-thread look-alikes have their own rule.)
const IMITATED: &[&str] = &[
    "sshd",
    "cron",
    "crond",
    "anacron",
    "systemd",
    "dhcpcd",
    "dhclient",
    "rsyslogd",
    "syslogd",
    "syslog-ng",
    "udevd",
    "dbus-daemon",
    "agetty",
    "auditd",
    "polkitd",
    "chronyd",
    "ntpd",
    "apache2",
    "httpd",
    "nginx",
    "mysqld",
    "mariadbd",
    "postgres",
    "php-fpm",
    "containerd",
    "dockerd",
    "kubelet",
    "snapd",
    "irqbalance",
    "acpid",
    "avahi-daemon",
    "cupsd",
    "NetworkManager",
    "wpa_supplicant",
    "ModemManager",
    "accounts-daemon",
    "udisksd",
    "upowerd",
    "rpcbind",
    "xinetd",
    "sssd",
    "nscd",
    "exim4",
    "sendmail",
    "kthreadd",
    "kswapd0",
    "ksoftirqd",
    "watchdogd",
    "systemd-journald",
    "systemd-udevd",
    "systemd-logind",
    "systemd-resolved",
    "systemd-networkd",
    "systemd-timesyncd",
    "bash",
    "sudo",
];

/// Names of cryptocurrency miners as their authors ship them (and as
/// loaders name their worker threads), lower case. A process, or a thread
/// of it, with one of these names is worth a look whatever it claims.
const MINER_NAMES: &[&str] = &[
    "xmrig",
    "xmrig-notls",
    "xmrig-cuda",
    "xmr-stak",
    "xmr-stak-rx",
    "cpuminer",
    "cpuminer-multi",
    "cpuminer-opt",
    "minerd",
    "ccminer",
    "cgminer",
    "bfgminer",
    "ethminer",
    "nbminer",
    "t-rex",
    "lolminer",
    "phoenixminer",
    "nanominer",
    "srbminer",
    "srbminer-multi",
    "teamredminer",
    "gminer",
    "kdevtmpfsi",
    "kinsing",
];

/// The miner a name is, if any: exact, or the name followed by a version
/// or platform suffix (`xmrig-6.21`, `xmrig_x64`).
pub fn miner_named(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    MINER_NAMES.iter().copied().find(|m| {
        lower == *m
            || lower
                .strip_prefix(m)
                .is_some_and(|rest| rest.starts_with(['-', '_', '.']) && !rest[1..].is_empty())
    })
}

/// A system daemon and what genuine copies look like.
struct Daemon {
    name: &'static str,
    /// Runs as root (children of the same daemon may drop privileges).
    root_only: bool,
    /// Started by init or a service manager, or by itself.
    init_started: bool,
}

const fn daemon(name: &'static str, root_only: bool, init_started: bool) -> Daemon {
    Daemon {
        name,
        root_only,
        init_started,
    }
}

const DAEMONS: &[Daemon] = &[
    daemon("sshd", true, true),
    daemon("sshd-session", false, false),
    daemon("cron", true, true),
    daemon("crond", true, true),
    daemon("atd", true, true),
    daemon("anacron", true, false),
    daemon("systemd", true, true),
    daemon("systemd-journald", true, true),
    daemon("systemd-udevd", true, true),
    daemon("systemd-logind", true, true),
    daemon("udevd", true, true),
    daemon("init", true, false),
    daemon("agetty", true, true),
    daemon("auditd", true, true),
    daemon("containerd", true, true),
    daemon("dockerd", true, true),
    daemon("kubelet", true, true),
    daemon("NetworkManager", true, true),
    daemon("rsyslogd", false, true),
    daemon("dbus-daemon", false, false),
    daemon("polkitd", false, true),
    daemon("chronyd", false, true),
    daemon("ntpd", false, true),
    daemon("cupsd", true, true),
];

/// Parents that legitimately start daemons: init systems, supervisors and
/// container runtimes.
const SERVICE_MANAGERS: &[&str] = &[
    "systemd",
    "init",
    "upstart",
    "runit",
    "runsv",
    "runsvdir",
    "s6-supervise",
    "s6-svscan",
    "supervisord",
    "containerd-shim",
    "conmon",
    "tini",
    "dumb-init",
    "docker-init",
    "catatonit",
    "openrc-run",
    "procd",
    "monit",
];

/// The daemon a name belongs to, if any (`systemd-*` helpers count as
/// system daemons for where they run from, nothing else).
fn daemon_named(name: &str) -> Option<&'static Daemon> {
    const SYSTEMD_HELPER: Daemon = daemon("systemd-*", false, false);
    DAEMONS
        .iter()
        .find(|d| d.name == name)
        .or_else(|| name.starts_with("systemd-").then_some(&SYSTEMD_HELPER))
}

/// What the rules need to know about the file system.
pub trait Files {
    /// The system program called `name` (first in [`SYSTEM_BIN_DIRS`]).
    fn system_binary(&self, name: &str) -> Option<String>;
    /// The file is a `#!` script (its process runs the interpreter).
    fn is_script(&self, path: &str) -> bool;
    /// `name` (a path, or a bare command name looked up like a shell
    /// would), resolved in the process's own root and cwd, is the very file
    /// the process runs.
    fn resolves_to_exe(&self, p: &Process, name: &str) -> bool;
    fn exists(&self, path: &str) -> bool;
}

/// The live file system, through raw system calls, with lookups cached.
#[derive(Default)]
pub struct HostFiles {
    system_binaries: RefCell<HashMap<String, Option<String>>>,
}

type FileId = (u64, u64);

/// Names whose system program lookup is remembered.
const SYSTEM_BINARY_CACHE: usize = 4096;

fn file_id(st: &rustix::fs::Stat) -> FileId {
    (st.st_dev, st.st_ino)
}

impl HostFiles {
    /// Opens `path` inside the process's root (absolute symlinks resolve
    /// there too) or relative to its cwd.
    fn stat_in_process(pid: u32, path: &str) -> Option<FileId> {
        let (base, rel) = match path.strip_prefix('/') {
            Some(rel) => (format!("/proc/{pid}/root"), rel),
            None => (format!("/proc/{pid}/cwd"), path),
        };
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        let dir = rustix::fs::open(base.as_str(), flags | OFlags::DIRECTORY, Mode::empty()).ok()?;
        let rel = original_bytes(rel);
        let fd =
            rustix::fs::openat2(&dir, &*rel, flags, Mode::empty(), ResolveFlags::IN_ROOT).ok()?;
        rustix::fs::fstat(&fd).ok().map(|st| file_id(&st))
    }
}

impl Files for HostFiles {
    fn system_binary(&self, name: &str) -> Option<String> {
        if name.is_empty() || name.contains('/') {
            return None;
        }
        let mut cache = self.system_binaries.borrow_mut();
        // watch asks for every name it sees: names are the attacker's, so
        // the cache is bounded.
        if cache.len() >= SYSTEM_BINARY_CACHE {
            cache.clear();
        }
        cache
            .entry(name.to_string())
            .or_insert_with(|| {
                SYSTEM_BIN_DIRS
                    .iter()
                    .map(|dir| format!("{dir}/{name}"))
                    .find(|p| rustix::fs::stat(original_bytes(p)).is_ok())
            })
            .clone()
    }

    fn is_script(&self, path: &str) -> bool {
        let path = original_bytes(path);
        let Ok(fd) = rustix::fs::open(&*path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        else {
            return false;
        };
        let mut head = [0u8; 2];
        rustix::io::read(&fd, &mut head).is_ok_and(|n| n == 2 && &head == b"#!")
    }

    fn resolves_to_exe(&self, p: &Process, name: &str) -> bool {
        let Ok(exe) = rustix::fs::stat(format!("/proc/{}/exe", p.pid).as_str()) else {
            // Cannot see the executable: nothing to contradict the name.
            return true;
        };
        let exe = file_id(&exe);
        if name.contains('/') {
            return Self::stat_in_process(p.pid, name) == Some(exe);
        }
        SYSTEM_BIN_DIRS
            .iter()
            .any(|dir| Self::stat_in_process(p.pid, &format!("{dir}/{name}")) == Some(exe))
    }

    fn exists(&self, path: &str) -> bool {
        rustix::fs::stat(original_bytes(path)).is_ok()
    }
}

/// Names this host's real kernel threads use, added to the built-in ones.
#[derive(Default)]
pub struct KernelThreadNames {
    families: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl KernelThreadNames {
    /// The built-in names plus those of `host_threads` (comms of processes
    /// the kernel flags `PF_KTHREAD`).
    pub fn new<'a>(host_threads: impl IntoIterator<Item = &'a str>) -> Self {
        let mut k = KernelThreadNames {
            families: KTHREAD_FAMILIES
                .iter()
                .map(|f| normalize_kthread(f))
                .collect(),
            names: KTHREAD_NAMES.iter().map(|n| normalize_kthread(n)).collect(),
        };
        for comm in host_threads {
            match comm.split_once('/') {
                Some((family, _)) => k.families.insert(normalize_kthread(family)),
                None => k.names.insert(normalize_kthread(comm)),
            };
        }
        // Very short names ("md") collide with ordinary programs.
        k.names.retain(|n| n.len() >= 3);
        k
    }

    /// `[kworker/0:2]`, `kworker/0:2`, `rcu_sched`, `rcu-sched`, `kswapd0`...
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim();
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if name.is_empty() {
            return false;
        }
        match name.split_once('/') {
            Some((family, _)) => self.families.contains(&normalize_kthread(family)),
            None => self.names.contains(&normalize_kthread(name)),
        }
    }
}

/// Digit runs become `N` and `-` becomes `_`, so `kswapd1` matches
/// `kswapd0` and `rcu-sched` matches `rcu_sched`.
fn normalize_kthread(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '0'..='9' if out.ends_with('N') => {}
            '0'..='9' => out.push('N'),
            '-' => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

/// The program name a command name or argv[0] claims: login-shell `-` and
/// systemd `@` prefixes dropped, argv rewrites cut at ':' ("sshd: root"),
/// only the first word. May still be a path.
pub fn claimed_name(raw: &str) -> &str {
    let s = raw.trim().trim_start_matches(['-', '@']);
    let s = s.split(':').next().unwrap_or_default();
    s.split_whitespace().next().unwrap_or_default()
}

/// Under a directory where installed software lives.
fn is_installed(path: &str) -> bool {
    SYSTEM_PREFIXES.iter().any(|d| path.starts_with(d))
}

/// The name and the executable's file name agree by text alone: equal,
/// the kernel's 15-byte truncation of it, or it with a version suffix
/// (`python3` for `python3.11`).
fn names_agree(name: &str, exe_base: &str) -> bool {
    const COMM_MAX: usize = 15;
    if name == exe_base {
        return true;
    }
    // The kernel cuts at 15 bytes, maybe inside a multi-byte character:
    // compare the original bytes.
    let (name_bytes, base_bytes) = (original_bytes(name), original_bytes(exe_base));
    if name_bytes.len() == COMM_MAX && base_bytes.starts_with(&name_bytes) {
        return true;
    }
    match exe_base.strip_prefix(name) {
        Some(_) if name.len() == COMM_MAX => true,
        Some(rest) => {
            rest.starts_with(['.', '-', '_']) || rest.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Longest name compared with the imitated ones (the longest is 20).
const NEAR_MISS_MAX: usize = 24;

/// `name`'s characters, ASCII letters lower-cased, on the stack (watch
/// asks on every exec); `None` when longer than any imitated name.
fn folded(name: &str) -> Option<([char; NEAR_MISS_MAX], usize)> {
    let mut out = ['\0'; NEAR_MISS_MAX];
    let mut n = 0;
    for c in name.chars() {
        *out.get_mut(n)? = c.to_ascii_lowercase();
        n += 1;
    }
    Some((out, n))
}

/// At most one edit apart (an insertion, a deletion, a substitution, or a
/// swap of two neighbours), case-insensitively for ASCII letters.
fn within_one_edit(a: &[char], b: &[char]) -> bool {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let Some(i) = long.iter().zip(short).position(|(x, y)| x != y) else {
        return true; // equal, or one trailing insertion
    };
    if long.len() != short.len() {
        return long[i + 1..] == short[i..];
    }
    long[i + 1..] == short[i + 1..]
        || (i + 1 < long.len()
            && long[i] == short[i + 1]
            && long[i + 1] == short[i]
            && long[i + 2..] == short[i + 2..])
}

/// The imitated name `name` is one edit from, if it is not that name.
pub fn near_miss(name: &str) -> Option<&'static str> {
    const MIN_LEN: usize = 4;
    if name.len() < MIN_LEN || IMITATED.contains(&name) {
        return None;
    }
    let (name, n) = folded(name)?;
    let name = &name[..n];
    // One edit changes the length by at most one: skip the rest unexamined.
    IMITATED
        .iter()
        .copied()
        .filter(|t| t.len().abs_diff(n) <= 1)
        .find(|t| folded(t).is_some_and(|(t, m)| within_one_edit(name, &t[..m])))
}

/// Whether the path lies in a hidden directory (or is a hidden file),
/// toolchain directories in homes excepted.
fn hidden_component(path: &str) -> Option<&str> {
    let in_home = path.starts_with("/root/") || path.starts_with("/home/");
    let toolchain = in_home
        && TOOLCHAIN_DIRS
            .iter()
            .any(|d| path.contains(&format!("/{d}")));
    if toolchain {
        return None;
    }
    path.split('/').find(|c| c.starts_with('.') && c.len() > 1)
}

/// The rules, with what they need to know about the host.
pub struct Rules<'a, F: Files> {
    pub kernel_threads: &'a KernelThreadNames,
    pub files: &'a F,
}

impl<F: Files> Rules<'_, F> {
    /// Every rule that fires on one process. `parent` is its parent, if known.
    pub fn check(&self, p: &Process, parent: Option<&Process>) -> Vec<Hit> {
        let mut hits = Vec::new();
        if p.kernel_thread || (p.exe.is_none() && p.cmdline.is_empty()) {
            // Kernel threads have no program; zombies have nothing left.
            return hits;
        }
        let argv0 = p.cmdline.first().map(|a| a.as_str()).unwrap_or_default();
        hits.extend(self.kernel_thread_name(p, parent, argv0));
        hits.extend(miner_name(p, argv0));
        hits.extend(miner_arguments(p));
        hits.extend(self.thread_names(p));
        let Some(exe) = p.exe.as_deref() else {
            // Another user's process without root: its program is not ours to see.
            return hits;
        };
        hits.extend(self.name_mismatch(p, exe, argv0));
        hits.extend(self.near_miss_name(p, exe, argv0));
        hits.extend(exe_location(p.pid, exe, self.files));
        hits.extend(self.daemon(p, parent, exe, argv0));
        hits
    }

    fn kernel_thread_name(
        &self,
        p: &Process,
        parent: Option<&Process>,
        argv0: &str,
    ) -> Option<Hit> {
        let spawned_by_kernel = p.ppid == 2 || parent.is_some_and(|pp| pp.kernel_thread);
        if spawned_by_kernel {
            return None;
        }
        let (source, name) = [("comm", p.comm.as_str()), ("argv[0]", argv0)]
            .into_iter()
            .find(|(_, n)| self.kernel_threads.matches(n))?;
        Some(Hit {
            rule: Rule::KernelThreadName,
            severity: Severity::High,
            summary: format!(
                "user process named like a kernel thread ({source} \"{name}\"); kernel threads have no program, this one runs {}",
                p.exe.as_deref().unwrap_or("a program")
            ),
            evidence: vec![("comm".into(), p.comm.to_string()), ("argv[0]".into(), argv0.into())],
            next_step: format!(
                "A user process disguised as a kernel thread: look at `ls -l /proc/{0}/exe /proc/{0}/fd`, \
                 its sockets (`ss -tupn | grep pid={0},`) and its parents, then stop it with `tracer kill-tree {0}`.",
                p.pid
            ),
        })
    }

    /// Threads named unlike their process: named like a miner, a kernel
    /// thread, or one letter away from a system program. (A thread's name
    /// is set by the program itself, with prctl or pthread_setname_np: it
    /// is what `top -H` shows while the process looks benign.)
    fn thread_names(&self, p: &Process) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        for t in &p.threads {
            let name = t.comm.as_str();
            let about = format!(
                "thread {} of \"{}\" ({}) is named \"{name}\"",
                t.tid,
                p.comm.as_str(),
                p.pid
            );
            let next_step = format!(
                "A process hiding work in a thread: `top -H -p {0}` shows which thread burns CPU; \
                 hash /proc/{0}/exe, check its connections (`ss -tupn | grep pid={0},`), then \
                 stop it with `tracer kill-tree {0}`.",
                p.pid
            );
            let found = if let Some(miner) = miner_named(name) {
                Some((
                    Rule::MinerName,
                    format!("{about}, the name of the miner {miner}"),
                ))
            } else if self.kernel_threads.matches(name) {
                Some((
                    Rule::KernelThreadName,
                    format!("{about}, like a kernel thread; a user process has no kernel threads"),
                ))
            } else {
                near_miss(name)
                    .filter(|_| self.files.system_binary(name).is_none())
                    .map(|target| {
                        (
                            Rule::NearMissName,
                            format!(
                                "{about}, one letter away from the system program \"{target}\""
                            ),
                        )
                    })
            };
            let Some((rule, summary)) = found else {
                continue;
            };
            if hits.iter().any(|h| h.rule == rule) {
                continue; // one finding per rule; the evidence lists every thread
            }
            hits.push(Hit {
                rule,
                severity: Severity::High,
                summary,
                evidence: vec![("thread".into(), format!("{name}({})", t.tid))],
                next_step,
            });
        }
        hits
    }

    /// Whether `raw` (a comm or argv[0]) names the program the process runs.
    fn names_exe(&self, p: &Process, exe: &str, raw: &str) -> bool {
        let name = claimed_name(raw);
        let base = file_name(name);
        if base.is_empty() || names_agree(base, file_name(strip_deleted(exe))) {
            return true;
        }
        if self.files.resolves_to_exe(p, name) {
            return true;
        }
        // A script run by path: the command line is the interpreter's
        // (`interpreter [arg] /path/script ...`) and the name is the script's.
        let runs_script = |a: &HostStr| {
            a.starts_with('/') && file_name(a.as_str()) == base && self.files.is_script(a.as_str())
        };
        if p.cmdline.iter().skip(1).take(2).any(runs_script) {
            return true;
        }
        // A script's comm is the script's name; the process runs its interpreter.
        self.files
            .system_binary(base)
            .is_some_and(|path| self.files.is_script(&path))
    }

    fn name_mismatch(&self, p: &Process, exe: &str, argv0: &str) -> Option<Hit> {
        let lies: Vec<(&str, &str)> = [("comm", p.comm.as_str()), ("argv[0]", argv0)]
            .into_iter()
            .filter(|(_, raw)| !raw.is_empty() && !self.kernel_threads.matches(raw))
            .filter(|(_, raw)| !self.names_exe(p, exe, raw))
            .collect();
        // Only a name that claims to be something the system has is a lie
        // worth a finding; invented titles ("worker 3") claim nothing.
        let (source, raw, claimed, what) = lies.into_iter().find_map(|(source, raw)| {
            let base = file_name(claimed_name(raw));
            let what = match daemon_named(base) {
                Some(_) => Some(format!("the system daemon {base}")),
                None => self
                    .files
                    .system_binary(base)
                    .map(|path| format!("the system program {path}")),
            }?;
            Some((source, raw, base, what))
        })?;
        let severity = if daemon_named(claimed).is_some() {
            Severity::High
        } else {
            Severity::Medium
        };
        Some(Hit {
            rule: Rule::NameMismatch,
            severity,
            summary: format!("{source} \"{raw}\" claims to be {what}, but the process runs {exe}"),
            evidence: vec![("comm".into(), p.comm.to_string()), ("argv[0]".into(), argv0.into())],
            next_step: format!(
                "Compare what it claims with what runs: `ls -l /proc/{0}/exe`, hash the executable, and find \
                 who started it (parents, service units).",
                p.pid
            ),
        })
    }

    fn near_miss_name(&self, p: &Process, exe: &str, argv0: &str) -> Option<Hit> {
        let exe_base = file_name(strip_deleted(exe));
        let exe_installed = is_installed(exe);
        let names: BTreeSet<&str> = [p.comm.as_str(), file_name(claimed_name(argv0)), exe_base]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        names.into_iter().find_map(|name| {
            let target = near_miss(name)?;
            let installed = (exe_installed && names_agree(name, exe_base))
                || self.files.system_binary(name).is_some();
            if installed {
                return None;
            }
            Some(Hit {
                rule: Rule::NearMissName,
                severity: Severity::High,
                summary: format!(
                    "\"{name}\" is one letter away from the system program \"{target}\""
                ),
                evidence: vec![("looks like".into(), target.into())],
                next_step: format!(
                    "A name chosen to pass for {target} at a glance: compare with the real one \
                     (`command -v {target}`), hash /proc/{}/exe and check its parents.",
                    p.pid
                ),
            })
        })
    }

    fn daemon(&self, p: &Process, parent: Option<&Process>, exe: &str, argv0: &str) -> Vec<Hit> {
        let names = [
            p.comm.as_str(),
            file_name(claimed_name(argv0)),
            file_name(strip_deleted(exe)),
        ];
        let Some((name, d)) = names.iter().find_map(|n| daemon_named(n).map(|d| (*n, d))) else {
            return Vec::new();
        };
        // sshd, sshd-session and sshd-auth are one daemon; so are cron's forks.
        let family = |n: &str| n.split('-').next().unwrap_or_default().to_string();
        let same_daemon = |pp: &Process| family(&pp.comm) == family(name);
        let next_step = format!(
            "Genuine {name} runs from the system's path as root, started by init: compare /proc/{}/exe \
             with the packaged file (`dpkg -S`, `dpkg --verify`), check its listening sockets and parents.",
            p.pid
        );
        let hit = |rule, severity, summary: String| Hit {
            rule,
            severity,
            summary,
            evidence: vec![("daemon".into(), name.to_string())],
            next_step: next_step.clone(),
        };
        let mut hits = Vec::new();
        let path = strip_deleted(exe);
        if !is_installed(path) {
            hits.push(hit(
                Rule::DaemonPath,
                Severity::High,
                format!("named like the system daemon {name} but runs from {path}, outside the system's directories"),
            ));
        }
        let user_instance = name == "systemd" && p.cmdline.iter().any(|a| a == "--user");
        if d.root_only && p.uid != 0 && !user_instance && !parent.is_some_and(same_daemon) {
            hits.push(hit(
                Rule::DaemonUser,
                Severity::High,
                format!(
                    "named like the system daemon {name} but runs as uid {}, not root",
                    p.uid
                ),
            ));
        }
        if let Some(pp) = parent.filter(|_| d.init_started) {
            let expected = pp.pid == 1
                || same_daemon(pp)
                || SERVICE_MANAGERS.iter().any(|m| pp.comm.starts_with(m));
            if !expected {
                hits.push(hit(
                    Rule::DaemonParent,
                    Severity::Medium,
                    format!(
                        "named like the system daemon {name} but started by {}({}), not by init or a service manager",
                        pp.comm.as_str(), pp.pid
                    ),
                ));
            }
        }
        hits
    }
}

/// The process itself carries a miner's name (comm, argv[0] or program).
fn miner_name(p: &Process, argv0: &str) -> Option<Hit> {
    let exe = p.exe.as_deref().map(strip_deleted).unwrap_or_default();
    let (source, name, miner) = [
        ("comm", p.comm.as_str()),
        ("argv[0]", file_name(claimed_name(argv0))),
        ("executable", file_name(exe)),
    ]
    .into_iter()
    .find_map(|(source, n)| miner_named(n).map(|m| (source, n, m)))?;
    Some(Hit {
        rule: Rule::MinerName,
        severity: Severity::High,
        summary: format!("{source} \"{name}\" is the name of the miner {miner}"),
        evidence: vec![("miner".into(), miner.into())],
        next_step: format!(
            "Check its connections (`ss -tupn | grep pid={0},`) and CPU use, hash /proc/{0}/exe, \
             then stop it with `tracer kill-tree {0}`.",
            p.pid
        ),
    })
}

/// The command line carries a miner's options, a stratum URL, a pool login
/// or a wallet (see [`indicators::argv_signs`]).
fn miner_arguments(p: &Process) -> Option<Hit> {
    let signs = indicators::argv_signs(p);
    let first = signs.first()?;
    Some(Hit {
        rule: Rule::MinerArguments,
        severity: Severity::High,
        summary: format!("its arguments are a miner's: {first}"),
        evidence: signs
            .iter()
            .map(|s| ("sign".to_string(), s.clone()))
            .collect(),
        next_step: format!(
            "Check where it connects (`tracer net --pid {0}`), hash /proc/{0}/exe, \
             then stop it with `tracer kill-tree {0}`.",
            p.pid
        ),
    })
}

/// Where an exec through a file descriptor (`execveat`, `fexecve`, or a
/// `/proc/PID/fd/N` path) leaves the program name when the process was
/// gone before its executable could be read.
fn by_fd(exe: &str) -> bool {
    let fd_path = |rest: &str| {
        rest.split_once('/')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    };
    exe.strip_prefix("/dev/fd/").is_some_and(fd_path)
        || exe
            .strip_prefix("/proc/")
            .and_then(|r| r.split_once("/fd/"))
            .is_some_and(|(who, rest)| {
                (who == "self" || who.bytes().all(|b| b.is_ascii_digit())) && fd_path(rest)
            })
}

/// Rules on where the executable lives.
fn exe_location(pid: u32, exe: &str, files: &impl Files) -> Vec<Hit> {
    let path = strip_deleted(exe);
    let deleted = path.len() != exe.len();
    let keep =
        format!("copy the running image first (`cp /proc/{pid}/exe ./{pid}.exe`, it may exist nowhere else)");
    let mut hits = Vec::new();
    if by_fd(path) {
        hits.push(Hit {
            rule: Rule::ExeByFd,
            severity: Severity::Medium,
            summary: format!(
                "ran a program through a file descriptor ({path}) and exited before the program could be read"
            ),
            evidence: vec![],
            next_step: "Programs run from a descriptor are often fileless (memfd) or deleted: look at \
                        what launched it (chain) and what else that parent runs."
                .into(),
        });
        return hits;
    }
    if path.starts_with("/memfd:") {
        hits.push(Hit {
            rule: Rule::ExeMemfd,
            severity: Severity::High,
            summary: format!("runs from an anonymous memory file ({path}): fileless execution"),
            evidence: vec![],
            next_step: format!("Fileless execution: {keep}, then find what launched it (parents)."),
        });
        return hits;
    }
    // A system program replaced on disk while it runs is what every package
    // upgrade leaves behind until the service restarts: not worth a finding.
    // Replaced elsewhere (a rebuilt tool) is worth a low one; gone, a high one.
    let replaced = deleted && files.exists(path);
    let upgraded = replaced && is_installed(path);
    if deleted && !upgraded {
        hits.push(Hit {
            rule: Rule::ExeDeleted,
            severity: if replaced { Severity::Low } else { Severity::High },
            summary: if replaced {
                format!("its executable {path} was replaced on disk after it started")
            } else {
                format!("its executable {path} was deleted after it started")
            },
            evidence: vec![],
            next_step: if replaced {
                format!("If no rebuild explains it, {keep} and compare it with the file now at {path}.")
            } else {
                format!(
                    "A program that removed its own file: {keep}, then look at its parents and open files."
                )
            },
        });
    }
    if let Some((dir, severity)) = TEMP_DIRS.iter().find(|(d, _)| path.starts_with(d)) {
        hits.push(Hit {
            rule: Rule::ExeInTemp,
            severity: *severity,
            summary: format!("runs from {dir}, a world-writable temporary directory: {path}"),
            evidence: vec![],
            next_step: format!(
                "Programs are not installed in {dir}: copy and hash it (`sha256sum /proc/{pid}/exe`), check its \
                 parents and connections, then stop it with `tracer kill-tree {pid}`."
            ),
        });
    }
    if let Some(component) = hidden_component(path) {
        hits.push(Hit {
            rule: Rule::ExeHiddenDir,
            severity: Severity::Medium,
            summary: format!("runs from a hidden path (\"{component}\" in {path})"),
            evidence: vec![],
            next_step: "Check who owns that hidden directory and when it appeared, hash the program, and look for \
                        what starts it (cron, systemd units, shell profiles)."
                .into(),
        });
    }
    hits
}

/// Runs the rules on every process of the snapshot and returns the hits
/// that still hold when the process is read again.
pub fn detect(snap: &Snapshot, table: &ProcessTable, host: &Host) -> Vec<Finding> {
    let kernel_threads = KernelThreadNames::new(
        snap.probes
            .values()
            .filter_map(|p| p.genuine_process())
            .filter(|p| p.kernel_thread)
            .map(|p| p.comm.as_str()),
    );
    let files = HostFiles::default();
    let rules = Rules {
        kernel_threads: &kernel_threads,
        files: &files,
    };
    let parent = |p: &Process| table.parent_of(&p.id()).and_then(|id| table.by_id(&id));
    let mut findings = Vec::new();
    for probe in snap.probes.values() {
        if probe.is_defunct() || snap.own_pids.contains(&probe.pid) {
            continue;
        }
        let Some(p) = probe.genuine_process() else {
            continue;
        };
        let hits = rules.check(p, parent(p));
        if hits.is_empty() {
            continue;
        }
        // Confirm on a fresh read: a process caught mid-exec (new program,
        // old name) or a recycled PID must not be reported.
        let again = probes::probe(p.pid);
        let Some(now) = again
            .genuine_process()
            .filter(|n| n.start_ticks == p.start_ticks && !again.is_defunct())
        else {
            continue;
        };
        let confirmed: BTreeSet<Rule> = rules
            .check(now, parent(now))
            .iter()
            .map(|h| h.rule)
            .collect();
        let ancestry: Vec<Process> = table.ancestry(&now.id()).into_iter().cloned().collect();
        let process_evidence = host.process_evidence(now, &ancestry);
        for hit in hits.into_iter().filter(|h| confirmed.contains(&h.rule)) {
            let mut f = hit.into_finding(now, ancestry.clone());
            f.evidence.splice(0..0, process_evidence.iter().cloned());
            findings.push(f);
        }
    }
    findings
}

impl Hit {
    /// The finding both `hidden` and `watch` report for this hit.
    pub fn into_finding(self, p: &Process, ancestry: Vec<Process>) -> Finding {
        Finding {
            id: Finding::process_finding_id(self.rule.kind(), p),
            related: Vec::new(),
            sigma: None,
            connection: None,
            kind: self.rule.kind().into(),
            severity: self.severity,
            layer: "masquerade".into(),
            summary: self.summary,
            process: Some(p.clone()),
            ancestry,
            evidence: self.evidence,
            next_step: self.next_step,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HostStr, ThreadName};

    /// A file system where only the listed system programs exist.
    #[derive(Default)]
    struct FakeFiles {
        system: HashMap<&'static str, &'static str>,
        scripts: Vec<&'static str>,
        /// (pid, name) pairs that resolve to the process's exe.
        resolving: Vec<(u32, &'static str)>,
        existing: Vec<&'static str>,
    }

    impl Files for FakeFiles {
        fn system_binary(&self, name: &str) -> Option<String> {
            self.system.get(name).map(|p| p.to_string())
        }
        fn is_script(&self, path: &str) -> bool {
            self.scripts.contains(&path)
        }
        fn resolves_to_exe(&self, p: &Process, name: &str) -> bool {
            self.resolving.contains(&(p.pid, name))
        }
        fn exists(&self, path: &str) -> bool {
            self.existing.contains(&path)
        }
    }

    fn process(pid: u32, uid: u32, comm: &str, exe: &str, argv: &[&str]) -> Process {
        Process {
            pid,
            ppid: 1,
            uid,
            comm: comm.into(),
            exe: Some(exe.into()),
            cmdline: argv.iter().map(|&s| s.into()).collect(),
            start_ticks: 100,
            ..Default::default()
        }
    }

    fn init() -> Process {
        process(1, 0, "systemd", "/usr/lib/systemd/systemd", &["/sbin/init"])
    }

    fn debian() -> FakeFiles {
        FakeFiles {
            system: HashMap::from([
                ("sshd", "/usr/sbin/sshd"),
                ("sh", "/usr/bin/sh"),
                ("dash", "/usr/bin/dash"),
                ("sleep", "/usr/bin/sleep"),
                ("lsb_release", "/usr/bin/lsb_release"),
                ("dhcpcd", "/usr/sbin/dhcpcd"),
                ("python3", "/usr/bin/python3"),
            ]),
            scripts: vec!["/usr/bin/lsb_release"],
            ..Default::default()
        }
    }

    fn kinds(files: &FakeFiles, p: &Process, parent: Option<&Process>) -> Vec<&'static str> {
        let kt =
            KernelThreadNames::new(["kworker/0:1-events", "rcu_preempt", "kswapd0", "jbd2/vda-8"]);
        let rules = Rules {
            kernel_threads: &kt,
            files,
        };
        let mut k: Vec<_> = rules
            .check(p, parent)
            .iter()
            .map(|h| h.rule.kind())
            .collect();
        k.sort();
        k
    }

    /// The same process with every name turned into bytes that are not
    /// UTF-8 where the ASCII twin has `_`.
    fn non_utf8_twin(p: &Process) -> Process {
        let swap = |h: &HostStr| {
            let bytes: Vec<u8> = h
                .to_bytes()
                .iter()
                .map(|&b| if b == b'_' { 0xff } else { b })
                .collect();
            HostStr::from_bytes(&bytes)
        };
        Process {
            comm: swap(&p.comm),
            exe: p.exe.as_ref().map(swap),
            cmdline: p.cmdline.iter().map(swap).collect(),
            ..p.clone()
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_gets_the_findings_of_its_ascii_twin() {
        let files = debian();
        let cases = [
            process(40, 0, "x_y", "/tmp/x_y", &["/tmp/x_y"]),
            process(41, 0, "k_w", "/dev/shm/.k_w (deleted)", &["k_w"]),
            process(42, 1000, "sshd", "/home/u/.c_c/sshd", &["sshd"]),
            process(43, 0, "sleep", "/usr/bin/sleep", &["[kworker/0:2_x]"]),
            process(44, 0, "xmrig", "/opt/a_b/xmrig", &["xmrig", "-o", "p_q"]),
        ];
        for p in cases {
            let twin = non_utf8_twin(&p);
            let names = [&twin.comm, twin.exe.as_ref().unwrap()];
            assert!(names.into_iter().chain(&twin.cmdline).any(|n| !n.is_utf8()));
            let ascii = kinds(&files, &p, Some(&init()));
            assert!(!ascii.is_empty(), "{p:?}");
            assert_eq!(kinds(&files, &twin, Some(&init())), ascii, "{twin:?}");
        }
    }

    #[test]
    fn miner_names_are_found_in_the_process_and_in_its_threads() {
        assert_eq!(miner_named("xmrig"), Some("xmrig"));
        assert_eq!(miner_named("XMRig-6.21.0"), Some("xmrig"));
        assert_eq!(miner_named("xmrigger"), None);
        assert_eq!(miner_named("xmrig-"), None);
        let files = debian();
        let miner = process(50, 0, "xmrig", "/opt/x/xmrig", &["./xmrig", "-o", "x"]);
        assert_eq!(kinds(&files, &miner, Some(&init())), ["miner-name"]);
        // A benign-looking process whose worker thread is named xmrig.
        let mut host = process(51, 0, "sleep", "/usr/bin/sleep", &["sleep", "600"]);
        assert!(kinds(&files, &host, Some(&init())).is_empty());
        host.threads = vec![
            ThreadName {
                tid: 52,
                comm: "gmain".into(),
            },
            ThreadName {
                tid: 53,
                comm: "xmrig".into(),
            },
            ThreadName {
                tid: 54,
                comm: "xmrig".into(),
            },
        ];
        let kt = KernelThreadNames::new(["kworker/0:1"]);
        let rules = Rules {
            kernel_threads: &kt,
            files: &files,
        };
        let hits = rules.check(&host, Some(&init()));
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].rule, Rule::MinerName);
        assert!(hits[0]
            .summary
            .contains("thread 53 of \"sleep\" (51) is named \"xmrig\""));
        host.threads = vec![ThreadName {
            tid: 55,
            comm: "kworker/0:1".into(),
        }];
        assert_eq!(kinds(&files, &host, Some(&init())), ["kernel-thread-name"]);
    }

    #[test]
    fn kernel_thread_names_match_families_and_normalized_names() {
        let kt = KernelThreadNames::new(["kworker/u8:1-events_unbound", "hwrng", "md"]);
        for name in [
            "[kworker/0:2]",
            "kworker/1:1H",
            "rcu_sched",
            "rcu-sched",
            "kthreadd",
            "ksoftirqd/3",
            "migration/0",
            "kswapd1",
            "watchdog/0",
            "[hwrng]",
            "jbd2/sda1-8",
        ] {
            assert!(kt.matches(name), "{name} should look like a kernel thread");
        }
        for name in [
            "sleep",
            "watchdog",
            "[celery]",
            "md",
            "kworker-ish",
            "",
            "[]",
        ] {
            assert!(
                !kt.matches(name),
                "{name} should not look like a kernel thread"
            );
        }
    }

    #[test]
    fn user_process_posing_as_kernel_thread_is_flagged_but_kernel_children_are_not() {
        let files = debian();
        let fake = process(300, 0, "sleep", "/usr/bin/sleep", &["[kworker/0:2]", "60"]);
        assert_eq!(kinds(&files, &fake, Some(&init())), ["kernel-thread-name"]);
        let by_prctl = process(301, 0, "kworker/0:2", "/usr/bin/bash", &["bash"]);
        assert_eq!(
            kinds(&files, &by_prctl, Some(&init())),
            ["kernel-thread-name"]
        );
        let mut helper = process(302, 0, "kworker/0:2", "/usr/sbin/modprobe", &["modprobe"]);
        helper.ppid = 2;
        assert!(kinds(&files, &helper, None).is_empty());
        let mut kthread = helper.clone();
        kthread.kernel_thread = true;
        kthread.exe = None;
        assert!(kinds(&files, &kthread, None).is_empty());
    }

    #[test]
    fn ordinary_name_differences_are_not_lies() {
        let mut files = debian();
        // sh -> dash symlink; python3 -> python3.11; a script; argv rewrites; login shells.
        files.resolving.push((10, "sh"));
        let cases = [
            process(10, 0, "sh", "/usr/bin/dash", &["sh", "-c", "true"]),
            process(
                11,
                0,
                "python3",
                "/usr/bin/python3.11",
                &["/usr/bin/python3"],
            ),
            process(
                12,
                0,
                "lsb_release",
                "/usr/bin/python3.11",
                &["/usr/bin/python3", "/usr/bin/lsb_release"],
            ),
            process(13, 0, "sshd", "/usr/sbin/sshd", &["sshd: root@pts/0"]),
            process(14, 1000, "bash", "/usr/bin/bash", &["-bash"]),
            process(
                15,
                0,
                "systemd-journal",
                "/usr/lib/systemd/systemd-journald",
                &["/usr/lib/systemd/systemd-journald"],
            ),
            process(
                16,
                1000,
                "Isolated Web Co",
                "/usr/lib/firefox-esr/firefox-esr",
                &["/usr/lib/firefox-esr/firefox-esr"],
            ),
            process(
                17,
                0,
                "memfd:sealed-91",
                "/memfd:sealed-91 (deleted)",
                &["tools/backend"],
            ),
        ];
        for p in &cases[..7] {
            assert!(kinds(&files, p, Some(&init())).is_empty(), "{p:?}");
        }
        // The memfd one is flagged for where it runs, not for its name.
        assert_eq!(kinds(&files, &cases[7], Some(&init())), ["exe-memfd"]);
    }

    #[test]
    fn a_name_claiming_a_system_program_it_is_not_is_a_lie() {
        let files = debian();
        let p = process(20, 0, "evil", "/opt/evil/evil", &["sshd"]);
        let rules_hit = kinds(&files, &p, Some(&init()));
        assert!(rules_hit.contains(&"name-mismatch"), "{rules_hit:?}");
        let p = process(21, 0, "sleep", "/opt/x/miner", &["sleep", "60"]);
        assert_eq!(kinds(&files, &p, Some(&init())), ["name-mismatch"]);
        // A made-up title claims nothing.
        let p = process(22, 0, "worker 3", "/opt/app/app", &["worker 3"]);
        assert!(kinds(&files, &p, Some(&init())).is_empty());
    }

    #[test]
    fn near_misses_of_system_names_are_caught() {
        assert_eq!(near_miss("dhpcd"), Some("dhcpcd"));
        assert_eq!(near_miss("shhd"), Some("sshd"));
        assert_eq!(near_miss("Sshd"), Some("sshd"));
        assert_eq!(near_miss("systemd-journa1d"), Some("systemd-journald"));
        assert_eq!(near_miss("sshd"), None);
        assert_eq!(near_miss("ssh"), None, "too short to judge");
        assert_eq!(near_miss("firefox"), None);
        assert_eq!(near_miss("crno"), Some("cron"), "a swap of neighbours");
        assert_eq!(near_miss("ngnix"), Some("nginx"));
        assert_eq!(near_miss("sshdd"), Some("sshd"));
        assert_eq!(near_miss("sšhd"), Some("sshd"), "one character, two bytes");
        assert_eq!(near_miss("ssxx"), None);
        assert_eq!(near_miss(&"s".repeat(40)), None);
        let files = debian();
        let p = process(30, 0, "dhpcd", "/dev/shm/dhpcd", &["/dev/shm/dhpcd"]);
        assert_eq!(
            kinds(&files, &p, Some(&init())),
            ["exe-in-temp", "near-miss-name"]
        );
        // dash is one letter from bash, and installed: not a near miss.
        let p = process(31, 0, "dash", "/usr/bin/dash", &["dash"]);
        assert!(kinds(&files, &p, Some(&init())).is_empty());
    }

    #[test]
    fn executables_in_odd_places_are_flagged() {
        let files = FakeFiles {
            existing: vec!["/usr/sbin/upgraded", "/home/u/bin/rebuilt"],
            ..Default::default()
        };
        let at = |exe: &str| {
            kinds(
                &files,
                &process(40, 0, file_name(strip_deleted(exe)), exe, &[]),
                Some(&init()),
            )
        };
        assert_eq!(at("/tmp/x/a.out (deleted)"), ["exe-deleted", "exe-in-temp"]);
        assert_eq!(at("/var/tmp/.cache/x"), ["exe-hidden-dir", "exe-in-temp"]);
        assert_eq!(at("/home/u/.local/share/.x/y"), ["exe-hidden-dir"]);
        assert!(at("/root/.rustup/toolchains/stable/bin/cargo").is_empty());
        assert!(at("/root/.cargo/bin/cargo").is_empty());
        assert!(exe_location(40, "/usr/sbin/upgraded (deleted)", &files).is_empty());
        let hits = exe_location(40, "/home/u/bin/rebuilt (deleted)", &files);
        assert_eq!(
            (hits[0].rule, hits[0].severity),
            (Rule::ExeDeleted, Severity::Low)
        );
        let hits = exe_location(40, "/opt/gone (deleted)", &files);
        assert_eq!(
            (hits[0].rule, hits[0].severity),
            (Rule::ExeDeleted, Severity::High)
        );
    }

    #[test]
    fn daemon_names_must_run_as_root_from_system_paths_under_init() {
        let files = debian();
        let fake = process(50, 65534, "sshd", "/work/t/sshd", &["./sshd", "60"]);
        assert_eq!(
            kinds(&files, &fake, Some(&init())),
            ["daemon-path", "daemon-user"]
        );
        let real = process(
            51,
            0,
            "sshd",
            "/usr/sbin/sshd",
            &["sshd: /usr/sbin/sshd -D [listener]"],
        );
        assert!(kinds(&files, &real, Some(&init())).is_empty());
        // Privilege-separated children run as users under sshd.
        let child = process(52, 1000, "sshd", "/usr/sbin/sshd", &["sshd: alice@pts/0"]);
        assert!(kinds(&files, &child, Some(&real)).is_empty());
        let shell = process(53, 0, "bash", "/usr/bin/bash", &["bash"]);
        let by_shell = process(54, 0, "cron", "/usr/sbin/cron", &["cron"]);
        assert_eq!(kinds(&files, &by_shell, Some(&shell)), ["daemon-parent"]);
        let user_systemd = process(
            55,
            1000,
            "systemd",
            "/usr/lib/systemd/systemd",
            &["/lib/systemd/systemd", "--user"],
        );
        assert!(kinds(&files, &user_systemd, Some(&init())).is_empty());
    }

    #[test]
    fn miner_arguments_fd_execs_and_scripts_by_path() {
        let mut files = debian();
        let p = process(
            60,
            0,
            "worker",
            "/opt/app/worker",
            &["worker", "-o", "stratum+tcp://10.0.0.1:3333"],
        );
        assert_eq!(kinds(&files, &p, Some(&init())), ["miner-arguments"]);
        // An fd exec whose program could not be read any more.
        let p = process(61, 0, "3", "/dev/fd/3", &["sleep", "1"]);
        assert!(kinds(&files, &p, Some(&init())).contains(&"exe-by-fd"));
        let p = process(62, 0, "x", "/proc/self/fd/7", &["x"]);
        assert!(kinds(&files, &p, Some(&init())).contains(&"exe-by-fd"));
        assert!(!by_fd("/dev/fdx/3") && !by_fd("/proc/1/fdinfo/3"));
        // A script run by path: comm is the script's, the program its interpreter.
        files.scripts.push("/home/u/bin/python3");
        let p = process(
            63,
            1000,
            "python3",
            "/usr/bin/env",
            &["/usr/bin/env", "bash", "/home/u/bin/python3", "-V"],
        );
        assert!(kinds(&files, &p, Some(&init())).is_empty());
        let p = process(64, 1000, "python3", "/opt/x/xm", &["/opt/x/xm", "python3"]);
        assert_eq!(kinds(&files, &p, Some(&init())), ["name-mismatch"]);
    }

    #[test]
    fn claimed_names_drop_decorations() {
        assert_eq!(claimed_name("-bash"), "bash");
        assert_eq!(claimed_name("@dbus-daemon"), "dbus-daemon");
        assert_eq!(claimed_name("sshd: root@pts/0"), "sshd");
        assert_eq!(
            claimed_name("/opt/google/chrome/chrome --type=renderer"),
            "/opt/google/chrome/chrome"
        );
        assert!(names_agree("python3", "python3.11"));
        assert!(names_agree("systemd-journal", "systemd-journald"));
        assert!(!names_agree("vi", "vim.basic"));
        assert!(!names_agree("sh", "sshd"));
    }
}
