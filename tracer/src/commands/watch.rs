//! `tracer watch`: the kernel event stream, with ancestry and alerts.
use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};
use tracer_common::{ConnectEvent, ExecEvent, HOOK_FENTRY};

use crate::{
    cli::WatchArgs,
    detect::indicators::{self, Indicators},
    error::{exit, UserError},
    kernel::{
        events::{decode, text, KernelEvent},
        Kernel,
    },
    model::{boottime_ns_to_ticks, Process},
    output::{
        events::{
            AlertOut, ConnectOut, Counts, EventWriter, ExecOut, KillPlanSummary, ProcessOut,
            StartOut, SummaryOut,
        },
        sink::{RotatingFile, Sink},
        style,
    },
    proc, respond,
    table::ProcessTable,
    users::Users,
    views,
};

/// How often resolved indicator domains are taken in. `refresh` never
/// blocks: lookups run in the background and are started anew every few
/// minutes by the indicators themselves.
const IOC_REFRESH: Duration = Duration::from_secs(5);

/// Longest time a batched event waits in the ring buffer before it is shown.
const DRAIN_INTERVAL: Duration = Duration::from_millis(25);

pub fn run(args: WatchArgs) -> Result<i32> {
    // Cheap checks first: privileges, then bad input, before anything is
    // loaded into the kernel.
    crate::kernel::check_privileges("watch")?;
    let indicators = Indicators::load(&args.ioc_files, !args.no_default_iocs)?;
    let sink = open_output(&args)?;
    let mut kernel = Kernel::load("watch")?;
    kernel.attach_watch()?;
    kernel.release_btf();
    let ring = kernel.take_events()?;
    // The table is seeded after the programs are attached, so nothing that
    // starts in between is missed: it is either in the snapshot or an event.
    let table = seed_table(&mut kernel);

    let json = args.json;
    let colour = style::colour_for(sink.is_terminal());
    let to_file = args.output.is_some();
    let mut w = Watcher {
        args,
        table,
        users: Users::load(),
        indicators,
        out: EventWriter::new(sink, json).with_colour(colour),
        // A person at the terminal gets a human summary on stderr when the
        // records go elsewhere (JSON, a file).
        summary_to_stderr: json || to_file,
        seen: Counts::default(),
        malformed: 0,
        alerts: 0,
        shown: 0,
        persistence_cache: HashMap::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let hooks = kernel.hooks.clone();
    let stream_result = rt.block_on(async {
        // Signal handlers go in before the start line: whoever waits for it
        // may stop us at once, and must get a clean detach and a summary.
        let stop = Stop::install()?;
        w.out.start(&StartOut {
            kernel: crate::kernel::kernel_release(),
            hooks: &hooks,
            processes: w.table.live_count(),
        })?;
        w.out.flush()?;
        w.stream(ring, stop, &kernel).await
    });

    let _ = w.report_summary(&kernel, true);
    drop(kernel); // detaches every program and link
    stream_result?;
    Ok(exit::OK)
}

/// The table from the kernel's task list, enriched with /proc's view of
/// each process (exe, command line) where /proc agrees on its identity.
/// Processes /proc shows but the iterator does not (the iterator walks only
/// tracer's own PID namespace) are added from /proc.
fn seed_table(kernel: &mut Kernel) -> ProcessTable {
    let tasks = kernel.tasks().unwrap_or_default();
    let mut processes: Vec<Process> = views::kernel::group_by_tgid(&tasks)
        .values()
        .map(|k| {
            let mut p = k.to_process();
            if proc::start_ticks(k.tgid) == Some(k.start_ticks) {
                p.exe = proc::read_exe(k.tgid);
                p.cmdline = proc::read_cmdline(k.tgid);
            }
            p
        })
        .collect();
    let known: HashSet<u32> = processes.iter().map(|p| p.pid).collect();
    let pids = proc::list_pids().unwrap_or_default();
    processes.extend(
        pids.into_iter()
            .filter(|pid| !known.contains(pid))
            .filter_map(proc::read_process),
    );
    let mut table = ProcessTable::new();
    table.seed(processes);
    table
}

/// Where records go: `--output FILE` (rotated) or stdout. A file that
/// cannot be opened stops watch before anything is loaded.
fn open_output(args: &WatchArgs) -> Result<Sink> {
    let Some(path) = &args.output else {
        return Ok(Sink::stdout());
    };
    let file = RotatingFile::open(path, args.output_max_size, args.output_keep).map_err(|e| {
        UserError::BadInput(format!(
            "cannot write --output {}: {}; give a file in an existing, writable directory",
            path.display(),
            e.kind()
        ))
    })?;
    Ok(Sink::File(file))
}

/// SIGINT and SIGTERM, caught so that watch always detaches and reports;
/// SIGUSR1 (summary so far) and SIGHUP (re-open the output file), caught
/// so that they never stop it.
struct Stop {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sigusr1: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
}

impl Stop {
    fn install() -> Result<Self> {
        Ok(Stop {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            sigusr1: signal(SignalKind::user_defined1())?,
            sighup: signal(SignalKind::hangup())?,
        })
    }
}

struct Watcher {
    args: WatchArgs,
    table: ProcessTable,
    users: Users,
    indicators: Indicators,
    out: EventWriter<Sink>,
    summary_to_stderr: bool,
    seen: Counts,
    /// Records too short or of an unknown kind (never expected; counted so
    /// that nothing disappears unnoticed).
    malformed: u64,
    alerts: u64,
    shown: u64,
    /// Persistence found per set of executables, for alerts.
    persistence_cache: HashMap<String, Vec<String>>,
}

impl Watcher {
    /// Drains the ring buffer until SIGINT or SIGTERM, then once more.
    async fn stream(
        &mut self,
        ring: RingBuf<MapData>,
        mut stop: Stop,
        kernel: &Kernel,
    ) -> Result<()> {
        #[allow(deprecated)]
        let mut ring = AsyncFd::new(ring).context("polling the event ring buffer")?;
        let mut refresh = tokio::time::interval(IOC_REFRESH);
        refresh.tick().await;
        // exec, fork and exit records do not wake us one by one (see
        // tracer-ebpf maps::batched_submit_flags): drain them on a timer.
        let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    let closed = self.drain(guard.get_inner_mut())?;
                    guard.clear_ready();
                    if closed {
                        return Ok(());
                    }
                }
                _ = stop.sigint.recv() => break,
                _ = stop.sigterm.recv() => break,
                _ = stop.sigusr1.recv() => {
                    if self.drain(ring.get_mut())? {
                        return Ok(());
                    }
                    self.report_summary(kernel, false)?;
                }
                _ = stop.sighup.recv() => {
                    // A file moved away keeps what was written; the rest
                    // goes to a new one under the same name.
                    if let Err(e) = self.out.flush().and_then(|_| self.out.get_mut().reopen()) {
                        eprintln!("tracer: re-opening the output file after SIGHUP failed: {e}; still writing to the old one");
                    }
                }
                _ = drain_tick.tick() => {
                    if self.drain(ring.get_mut())? {
                        return Ok(());
                    }
                }
                _ = refresh.tick() => self.indicators.refresh(),
            }
        }
        self.drain(ring.get_mut())?;
        Ok(())
    }

    /// Counts so far: with the events (JSON consumers read it there) and,
    /// when those are not human lines on the terminal, on stderr too.
    fn report_summary(&mut self, kernel: &Kernel, is_final: bool) -> io::Result<()> {
        let lost = kernel.lost().unwrap_or_default();
        let lost = Counts {
            exec: lost[1],
            fork: lost[2],
            exit: lost[3],
            connect: lost[4],
        };
        let summary = SummaryOut {
            timestamp: style::now(),
            is_final,
            events_seen: self.seen.exec + self.seen.fork + self.seen.exit + self.seen.connect,
            events_lost: lost.exec + lost.fork + lost.exit + lost.connect,
            seen: self.seen,
            lost,
            malformed: self.malformed,
            alerts: self.alerts,
            shown: self.shown,
        };
        let written = self.out.summary(&summary).and_then(|_| self.out.flush());
        if self.summary_to_stderr {
            let _ = EventWriter::new(io::stderr(), false).summary(&summary);
        }
        written
    }

    /// Handles every queued record; returns true when stdout is gone.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<bool> {
        while let Some(item) = ring.next() {
            let event = decode(&item);
            drop(item);
            let Some(event) = event else {
                self.malformed += 1;
                continue;
            };
            if let Err(e) = self.handle(event) {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    return Ok(true);
                }
                return Err(e.into());
            }
        }
        match self.out.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
            r => r.map(|_| false).map_err(Into::into),
        }
    }

    fn handle(&mut self, event: KernelEvent) -> io::Result<()> {
        match event {
            KernelEvent::Exec(e) => {
                self.seen.exec += 1;
                self.on_exec(&e)
            }
            KernelEvent::Fork(f) => {
                self.seen.fork += 1;
                self.table.on_fork(
                    f.parent_tgid,
                    f.child_tgid,
                    boottime_ns_to_ticks(f.child_start_boottime_ns),
                    f.uid,
                );
                Ok(())
            }
            KernelEvent::Exit(x) => {
                self.seen.exit += 1;
                self.table.on_exit(
                    x.tgid,
                    boottime_ns_to_ticks(x.start_boottime_ns),
                    x.ktime_ns,
                );
                Ok(())
            }
            KernelEvent::Connect(c) => {
                self.seen.connect += 1;
                self.on_connect(&c)
            }
        }
    }

    /// Whether the filters let an event of this process through.
    fn selected(&self, comm: &str, pid: u32, ancestry: &[&Process]) -> bool {
        let comm_ok = self.args.comms.is_empty() || self.args.comms.iter().any(|c| c == comm);
        let pid_ok = self.args.pids.is_empty()
            || self.args.pids.contains(&pid)
            || ancestry.iter().any(|a| self.args.pids.contains(&a.pid));
        comm_ok && pid_ok
    }

    fn on_exec(&mut self, e: &ExecEvent) -> io::Result<()> {
        let argv_bytes = &e.argv[..(e.argv_len as usize).min(e.argv.len())];
        let argv = proc::split_nul_args(argv_bytes);
        let comm = text(&e.comm);
        let filename = text(&e.filename[..(e.filename_len as usize).min(e.filename.len())]);
        let start_ticks = boottime_ns_to_ticks(e.start_boottime_ns);
        let id = self.table.on_exec(
            e.tgid,
            e.ppid,
            e.uid,
            start_ticks,
            comm.clone(),
            filename.clone(),
            argv.clone(),
        );
        if self.args.connect_only {
            return Ok(());
        }
        let ancestry = self.table.ancestry(&id);
        if !self.selected(&comm, e.tgid, &ancestry) {
            return Ok(());
        }
        let signs = self
            .table
            .by_id(&id)
            .map(indicators::exec_signs)
            .unwrap_or_default();
        let users = &self.users;
        let out = ExecOut {
            timestamp: style::event_time(e.ktime_ns),
            ktime_ns: e.ktime_ns,
            pid: e.tgid,
            tid: e.pid,
            ppid: e.ppid,
            uid: e.uid,
            user: users.name(e.uid),
            comm: &comm,
            filename: &filename,
            argv: &argv,
            argv_truncated: e.argv_total_len > e.argv_len,
            start_ticks,
            signs: &signs,
            ancestry: ancestry.iter().map(|p| ProcessOut::new(p, users)).collect(),
        };
        self.shown += 1;
        self.out.exec(&out)
    }

    fn on_connect(&mut self, c: &ConnectEvent) -> io::Result<()> {
        if self.args.exec_only {
            return Ok(());
        }
        // A process we have not seen start is read from /proc once and kept.
        if self.table.get(c.tgid).is_none() {
            if let Some(p) = proc::read_process(c.tgid) {
                self.table.upsert(p, None);
            }
        }
        let (daddr, saddr, family) = addresses(c);
        let comm = text(&c.comm);
        let Some(process) = self.table.get(c.tgid) else {
            return Ok(());
        };
        let id = process.id();
        let ancestry = self.table.ancestry(&id);
        let matched = self.indicators.match_connect(daddr, c.dport);
        if matched.is_none() && !self.selected(&comm, c.tgid, &ancestry) {
            return Ok(());
        }
        let users = &self.users;
        let out = ConnectOut {
            timestamp: style::event_time(c.ktime_ns),
            ktime_ns: c.ktime_ns,
            pid: c.tgid,
            tid: c.pid,
            uid: c.uid,
            user: users.name(c.uid),
            comm: &comm,
            exe: process.exe.as_deref(),
            cmdline: process.cmdline_string(),
            family,
            saddr: saddr.to_string(),
            sport: c.sport,
            daddr: daddr.to_string(),
            dport: c.dport,
            hook: if c.hook == HOOK_FENTRY {
                "fentry/tcp_connect"
            } else {
                "tracepoint/inet_sock_set_state"
            },
            ancestry: ancestry.iter().map(|p| ProcessOut::new(p, users)).collect(),
        };
        self.shown += 1;
        self.out.connect(&out)?;
        if let Some(m) = matched {
            self.alerts += 1;
            let severity = self.indicators.severity(&m, process);
            let kill_tree = proposed_kill_tree(&self.table, c.tgid, &mut self.persistence_cache);
            self.out.alert(&AlertOut {
                severity,
                indicator: &m.indicator,
                indicator_source: &m.source,
                reason: if m.port_only {
                    "destination port commonly used by mining pools".into()
                } else {
                    "destination is a known pool or C2 address".into()
                },
                connect: &out,
                kill_tree,
            })?;
        }
        Ok(())
    }
}

/// The kill-tree tracer would propose for `pid`, shown with an alert: the
/// set comes from the table (no I/O); the persistence scan reads files, so
/// its result is kept per executable and reused by later alerts.
fn proposed_kill_tree(
    table: &ProcessTable,
    pid: u32,
    persistence_cache: &mut HashMap<String, Vec<String>>,
) -> Option<KillPlanSummary> {
    let plan = respond::plan::plan_tree(table, pid, std::process::id()).ok()?;
    let key = plan
        .members
        .iter()
        .filter_map(|m| m.process.exe.as_deref())
        .collect::<Vec<_>>()
        .join("\n");
    let persistence = persistence_cache
        .entry(key)
        .or_insert_with(|| {
            let members: Vec<&Process> = plan.members.iter().map(|m| &m.process).collect();
            respond::persistence::scan(&respond::persistence::Roots::from_env(), &members)
                .into_iter()
                .map(|h| format!("{}:{} ({})", h.file, h.line_no, h.kind))
                .collect()
        })
        .clone();
    Some(KillPlanSummary {
        command: plan.command.clone(),
        pids: plan.members.iter().map(|m| m.process.pid).collect(),
        persistence,
    })
}

/// Destination, source and family name of a connect record.
fn addresses(c: &ConnectEvent) -> (IpAddr, IpAddr, &'static str) {
    const AF_INET6: u16 = 10;
    if c.family == AF_INET6 {
        (
            IpAddr::V6(Ipv6Addr::from(c.daddr)),
            IpAddr::V6(Ipv6Addr::from(c.saddr)),
            "ipv6",
        )
    } else {
        let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        (v4(&c.daddr), v4(&c.saddr), "ipv4")
    }
}
