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
use tracer_common::{
    ConnectEvent, DatagramEvent, ExecEvent, RenameEvent, DGRAM_CONNECT, DGRAM_HOOK_FENTRY,
    DGRAM_HOOK_KPROBE, HOOK_FENTRY, HOOK_KPROBE,
};

use crate::{
    cli::WatchArgs,
    detect::{
        connections,
        indicators::{self, Indicators},
        live::{self, LiveRules},
        noise::FindingGate,
    },
    error::{exit, UserError},
    kernel::{
        events::{decode, text, KernelEvent},
        Kernel, Needs,
    },
    model::{boottime_ns_to_ticks, socket::Socket, Finding, HostStr, Process},
    output::{
        events::{
            AlertOut, AlertTiming, ConnectOut, Counts, EventWriter, ExecOut, KillPlanSummary,
            LossOut, ProcessOut, StartOut, SummaryOut,
        },
        live::FindingOut,
        sink::{RotatingFile, Sink},
        style,
    },
    proc, respond,
    table::ProcessTable,
    users::Users,
    views,
};

mod datagrams;
pub use datagrams::BeaconOut;
mod live_writes;
mod sigma;

/// How often resolved indicator domains are taken in. `refresh` never
/// blocks: lookups run in the background and are started anew every few
/// minutes by the indicators themselves.
const IOC_REFRESH: Duration = Duration::from_secs(5);

/// Shortest time between two `loss` records.
const LOSS_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Losses that go on longer than this get the table re-read anyway.
const RESYNC_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// Longest time a batched event waits in the ring buffer before it is shown.
const DRAIN_INTERVAL: Duration = Duration::from_millis(25);

pub fn run(args: WatchArgs) -> Result<i32> {
    // Cheap checks first: privileges, then bad input, before anything is
    // loaded into the kernel.
    crate::kernel::check_privileges("watch")?;
    // The reader is woken for every connect: it must not queue behind a
    // busy host's work (see `sched`).
    let priority = crate::sched::Priority::raise();
    let indicators = {
        let _t = crate::timings::span("watch: indicators");
        Indicators::load(&args.ioc_files, !args.no_default_iocs)?
    };
    let sigma_rules = if args.sigma.is_empty() {
        None
    } else {
        let rules = crate::detect::sigma::SigmaRules::load(&args.sigma)?;
        for s in &rules.summary.skipped {
            eprintln!("tracer: {}", s.line());
        }
        Some(rules)
    };
    let sink = open_output(&args)?;
    let mut kernel = Kernel::load_for("watch", Needs::WATCH)?;
    {
        let _t = crate::timings::span("watch: hooks attached");
        kernel.attach_watch()?;
    }
    kernel.release_btf();
    let ring = kernel.take_events()?;
    // Connections already open: counted in the start record, and those
    // that match an indicator alerted at once.
    let open = {
        let _t = crate::timings::span("watch: open connections");
        views::net::kernel::take(&mut kernel)
    };
    // The table is seeded after the programs are attached, so nothing that
    // starts in between is missed: it is either in the snapshot or an event.
    // /proc is read now only for the holders of open connections (and their
    // parents); everyone else when an event first shows them.
    let holders: HashSet<u32> = open
        .iter()
        .flat_map(|v| &v.sockets)
        .flat_map(|s| s.owners.iter().map(|o| o.pid))
        .collect();
    let table = {
        let _t = crate::timings::span("watch: process table");
        views::kernel::process_table_deferred(&mut kernel, &holders)
    };

    // Domains come from the host's own DNS answers; looked up only when
    // asked (a lookup lands in the incident's DNS logs).
    let mut indicators = indicators;
    if args.resolve_domains {
        indicators.resolve_domains();
    }
    let dns = {
        let _t = crate::timings::span("watch: DNS socket");
        views::dns::DnsWatch::open()
    };
    let dns_status = match &dns {
        Ok(_) => views::dns::SOURCE.to_string(),
        Err(e) => format!(
            "not read: {e:#}; connects are not tagged with domains{}",
            if indicators.domain_count() > 0 && !args.resolve_domains {
                ", and domain indicators match only with --resolve-domains"
            } else {
                ""
            }
        ),
    };
    let (live_writes, write_hook) = {
        let _t = crate::timings::span("watch: write watching");
        live_writes::start()
    };

    let json = args.json;
    let colour = style::colour_for(sink.is_terminal());
    let to_file = args.output.is_some();
    let mut w = Watcher {
        priority,
        rules: LiveRules::new(&table),
        gate: FindingGate::new(args.min_severity),
        findings: 0,
        findings_suppressed: 0,
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
        cgroups: Default::default(),
        datagrams: Default::default(),
        hosts: Default::default(),
        kernel,
        lost_reported: Counts::default(),
        last_loss_report: None,
        resync_pending_since: None,
        woken_ns: 0,
        dns: dns.ok(),
        lineage: views::lineage::LineageWriter::new(),
        live_writes,
        sigma: sigma_rules.map(sigma::LiveSigma::new),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut hooks = w.kernel.hooks.clone();
    hooks.push(write_hook);
    let stream_result = rt.block_on(async {
        // Signal handlers go in before the start line: whoever waits for it
        // may stop us at once, and must get a clean detach and a summary.
        let stop = Stop::install()?;
        w.out.start(&StartOut {
            kernel: crate::kernel::kernel_release(),
            hooks: &hooks,
            processes: w.table.live_count(),
            connections: open.as_ref().ok().map(|v| {
                v.sockets
                    .iter()
                    .filter(|s| s.peer().is_some() && !s.is_listening())
                    .count()
            }),
            connections_gaps: match &open {
                Ok(v) => v.gaps.clone(),
                Err(e) => vec![format!(
                    "{e:#}; connections open before watch started are not checked"
                )],
            },
            dns: &dns_status,
            scheduling: w.priority.describe(),
            sigma: w.sigma.as_ref().map(|s| &s.rules.summary),
        })?;
        if let Ok(v) = &open {
            w.report_open(&v.sockets)?;
        }
        w.out.flush()?;
        crate::timings::mark("watch: start record out");
        w.stream(ring, stop).await
    });

    let _ = w.report_summary(true);
    w.lineage.remove_own();
    drop(w); // detaches every program and link
    stream_result?;
    Ok(exit::OK)
}

/// The kernel's loss counters, per kind.
fn lost_counts(kernel: &Kernel) -> Counts {
    let lost = kernel.lost().unwrap_or_default();
    Counts {
        exec: lost[1],
        fork: lost[2],
        exit: lost[3],
        connect: lost[4],
        mount: lost[tracer_common::EventKind::Mount as usize],
        rename: lost[tracer_common::EventKind::Rename as usize],
        datagram: lost[tracer_common::EventKind::Datagram as usize],
    }
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
    /// The reader's real-time priority, given up while it is costly.
    priority: crate::sched::Priority,
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
    /// The masquerade rules of `hidden`, run on each exec and rename.
    rules: LiveRules,
    /// Which findings are printed (`--min-severity`, once per process and rule).
    gate: FindingGate,
    findings: u64,
    findings_suppressed: u64,
    /// Persistence found per set of executables, for alerts.
    persistence_cache: HashMap<String, Vec<String>>,
    /// Cgroup paths and containers by cgroup id.
    cgroups: views::placement::CgroupCache,
    /// Outbound UDP destinations: shown once a minute, counted always.
    datagrams: datagrams::DatagramLedger,
    /// `/etc/hosts` names by mount namespace.
    hosts: views::hosts_file::HostsFiles,
    /// Owned here to read the loss counters and the task list mid-stream;
    /// dropped last, which detaches every program.
    kernel: Kernel,
    /// Loss counters as of the last `loss` record.
    lost_reported: Counts,
    last_loss_report: Option<std::time::Instant>,
    /// Losses seen and the table not re-read since.
    resync_pending_since: Option<std::time::Instant>,
    /// When the current drain began (boot-time ns), for `--timing`.
    woken_ns: u64,
    /// DNS answers read from the host's traffic (None: could not open).
    dns: Option<views::dns::DnsWatch>,
    /// The lineage file for kill-tree.
    lineage: views::lineage::LineageWriter,
    /// Writes to persistence places (see `live_writes`).
    live_writes: live_writes::LiveWrites,
    /// The user's Sigma rules (`--sigma`).
    sigma: Option<sigma::LiveSigma>,
}

/// The next lineage request, or never when watch could not listen.
async fn accept(
    listener: Option<&tokio::net::UnixListener>,
) -> io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Watcher {
    /// Drains the ring buffer until SIGINT or SIGTERM, then once more.
    async fn stream(&mut self, ring: RingBuf<MapData>, mut stop: Stop) -> Result<()> {
        #[allow(deprecated)]
        let mut ring = AsyncFd::new(ring).context("polling the event ring buffer")?;
        let writes = live_writes::register(&mut self.live_writes)?;
        let mut refresh = tokio::time::interval(IOC_REFRESH);
        refresh.tick().await;
        // exec, fork and exit records do not wake us one by one (see
        // tracer-ebpf maps::batched_submit_flags): drain them on a timer.
        let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // At most one save per interval, even after a busy stretch.
        let mut lineage_tick = tokio::time::interval(views::lineage::SAVE_INTERVAL);
        lineage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // kill-tree asks here for the lineage as of now.
        let requests = match self
            .lineage
            .listen()
            .and_then(tokio::net::UnixListener::from_std)
        {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "tracer: kill-tree cannot ask this watch for its lineage ({e}); it reads the file saved every {} s",
                    views::lineage::SAVE_INTERVAL.as_secs()
                );
                None
            }
        };
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
                    self.report_summary(false)?;
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
                    self.priority.check();
                }
                _ = refresh.tick() => self.indicators.refresh(),
                Ok((mut conn, _)) = accept(requests.as_ref()) => {
                    let allowed = conn
                        .peer_cred()
                        .is_ok_and(|c| views::lineage::LineageWriter::may_ask(c.uid()));
                    if allowed {
                        // Forks still queued in the kernel first.
                        if self.drain(ring.get_mut())? {
                            return Ok(());
                        }
                        let mut asked = [0u8; 16];
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            tokio::io::AsyncReadExt::read(&mut conn, &mut asked),
                        )
                        .await;
                        let answer = self.lineage.answer(&self.table);
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut conn, answer).await;
                    }
                }
                _ = lineage_tick.tick() => {
                    let events = self.seen.exec + self.seen.fork + self.seen.exit;
                    self.lineage.maybe_save(&self.table, events);
                }
                Some(guard) = live_writes::readable(writes.as_ref()) => {
                    let mut guard = guard?;
                    // The writer's fork and exec first, so its chain is known.
                    if self.drain(ring.get_mut())? {
                        return Ok(());
                    }
                    match self.on_file_writes(guard.get_inner()) {
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                        Ok(true) => guard.clear_ready(),
                        r => {
                            r?;
                        }
                    }
                }
            }
        }
        self.drain(ring.get_mut())?;
        Ok(())
    }

    /// Counts so far: with the events (JSON consumers read it there) and,
    /// when those are not human lines on the terminal, on stderr too.
    fn report_summary(&mut self, is_final: bool) -> io::Result<()> {
        let lost = lost_counts(&self.kernel);
        let summary = SummaryOut {
            timestamp: style::now(),
            is_final,
            events_seen: self.seen.total(),
            events_lost: lost.total(),
            seen: self.seen,
            lost,
            malformed: self.malformed,
            alerts: self.alerts,
            findings: self.findings,
            findings_suppressed: self.findings_suppressed,
            shown: self.shown,
            beacons: {
                let kernel = &self.kernel;
                self.datagrams
                    .beacons(|d| kernel.datagrams_pending(d.pid, d.addr, d.port))
            },
        };
        let written = self.out.summary(&summary).and_then(|_| self.out.flush());
        if self.summary_to_stderr {
            let _ = EventWriter::new(io::stderr(), false).summary(&summary);
        }
        written
    }

    /// Handles every queued record; returns true when stdout is gone.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<bool> {
        if self.args.timing {
            self.woken_ns = proc::boottime_ns();
        }
        if let Some(dns) = &mut self.dns {
            dns.drain();
        }
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
        if let Err(e) = self.report_losses() {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(true);
            }
            return Err(e.into());
        }
        match self.out.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
            r => r.map(|_| false).map_err(Into::into),
        }
    }

    /// When the kernel counted losses since the last look: a `loss` record
    /// with the counts per kind (at most one a second). Once losses stop,
    /// the table is re-read from the kernel's task list, since missed
    /// forks, execs and exits leave it wrong; not during the storm, so the
    /// cure does not feed it (unless it lasts, see `RESYNC_AT_MOST_EVERY`).
    fn report_losses(&mut self) -> io::Result<()> {
        use std::time::Instant;
        let due = self
            .last_loss_report
            .is_none_or(|t| t.elapsed() >= LOSS_REPORT_INTERVAL);
        let now = if due || self.resync_pending_since.is_some() {
            lost_counts(&self.kernel)
        } else {
            return Ok(());
        };
        let new_losses = now.total() != self.lost_reported.total();
        if new_losses && due {
            let last = self.lost_reported;
            self.lost_reported = now;
            self.last_loss_report = Some(Instant::now());
            self.resync_pending_since.get_or_insert_with(Instant::now);
            self.out.loss(&LossOut {
                timestamp: style::now(),
                lost: Counts {
                    exec: now.exec.saturating_sub(last.exec),
                    fork: now.fork.saturating_sub(last.fork),
                    exit: now.exit.saturating_sub(last.exit),
                    connect: now.connect.saturating_sub(last.connect),
                    mount: now.mount.saturating_sub(last.mount),
                    rename: now.rename.saturating_sub(last.rename),
                    datagram: now.datagram.saturating_sub(last.datagram),
                },
                total_lost: now.total(),
            })?;
        }
        let overdue = self
            .resync_pending_since
            .is_some_and(|t| t.elapsed() >= RESYNC_AT_MOST_EVERY);
        if self.resync_pending_since.is_some() && (!new_losses || overdue) {
            self.resync_pending_since = None;
            self.resync();
        }
        Ok(())
    }

    /// Re-reads the kernel's task list into the table. /proc is read only
    /// for processes the table does not know (or knows under another name:
    /// an exec it missed), so a re-read costs little on a busy host.
    fn resync(&mut self) {
        let Ok(tasks) = self.kernel.tasks() else {
            return;
        };
        let processes: Vec<Process> = views::kernel::group_by_tgid(&tasks)
            .values()
            .map(|k| {
                let id = crate::model::ProcessId {
                    pid: k.tgid,
                    start_ticks: k.start_ticks,
                };
                match self.table.by_id(&id) {
                    Some(known) if known.comm == k.comm => known.clone(),
                    _ => views::kernel::with_proc_details(k),
                }
            })
            .collect();
        self.table.resync(processes, proc::boottime_ns());
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
            KernelEvent::Exit(x) if x.live_threads > 0 => {
                self.seen.exit += 1;
                self.on_leader_exit(x.tgid, boottime_ns_to_ticks(x.start_boottime_ns))
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
            KernelEvent::Mount(m) => {
                self.seen.mount += 1;
                self.on_mount(&m)
            }
            KernelEvent::Rename(r) => {
                self.seen.rename += 1;
                self.on_rename(&r)
            }
            KernelEvent::Datagram(d) => {
                self.seen.datagram += 1;
                self.on_datagram(&d)
            }
        }
    }

    /// A process's main thread exited while its other threads run on: the
    /// process lives (ps shows it `<defunct>`); its record is re-read
    /// through a live thread and the state is a finding.
    fn on_leader_exit(&mut self, pid: u32, start_ticks: u64) -> io::Result<()> {
        let id = crate::model::ProcessId { pid, start_ticks };
        if self
            .ensure_known(pid, |t| t.by_id(&id).map(|_| id))
            .is_none()
        {
            return Ok(());
        }
        let Ok(stat) = proc::read_stat(pid) else {
            return Ok(());
        };
        // Gone altogether since, or all its threads on their way out.
        if stat.starttime != start_ticks
            || !proc::leader_exited(&stat)
            || proc::live_thread(pid).is_none()
        {
            return Ok(());
        }
        self.table.update(&id, proc::read_details);
        let Some(p) = self.table.by_id(&id).cloned() else {
            return Ok(());
        };
        let finding = crate::detect::zombie_leader::finding(
            &p,
            &self.table,
            stat.num_threads.saturating_sub(1),
        );
        self.raise("exit", finding)
    }

    /// A task renamed itself after exec: the table takes the new name (the
    /// process's, or its thread's), and the name rules run again.
    fn on_rename(&mut self, r: &RenameEvent) -> io::Result<()> {
        let id = crate::model::ProcessId {
            pid: r.tgid,
            start_ticks: boottime_ns_to_ticks(r.start_boottime_ns),
        };
        let (old, new) = (text(&r.old_comm), text(&r.new_comm));
        if self
            .ensure_known(r.tgid, |t| t.by_id(&id).map(|_| id))
            .is_none()
        {
            return Ok(());
        }
        self.table
            .update(&id, |p| live::apply_rename(p, r.pid, &new));
        for finding in self
            .rules
            .check_rename(&mut self.table, &id, r.pid, &old, &new)
        {
            self.raise("rename", finding)?;
        }
        Ok(())
    }

    /// The process `pid` as `find` picks it from the table, else read from
    /// /proc once and kept (it ran before watch and no event showed it
    /// since), with its chain's pending /proc details read.
    fn ensure_known(
        &mut self,
        pid: u32,
        find: impl Fn(&ProcessTable) -> Option<crate::model::ProcessId>,
    ) -> Option<crate::model::ProcessId> {
        let id = find(&self.table).or_else(|| {
            self.table.upsert(proc::read_process(pid)?, None);
            find(&self.table)
        })?;
        self.table.read_pending_details(&id);
        Some(id)
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
            live::exec_path(e.tgid, &filename, &argv),
            argv.clone(),
        );
        self.cgroups.place(&mut self.table, &id, &e.ns);
        self.print_exec(e, id, &comm, &filename, &argv)?;
        for finding in self.rules.check(&mut self.table, &id) {
            self.raise("exec", finding)?;
        }
        self.sigma_exec(id)
    }

    fn print_exec(
        &mut self,
        e: &ExecEvent,
        id: crate::model::ProcessId,
        comm: &HostStr,
        filename: &HostStr,
        argv: &[HostStr],
    ) -> io::Result<()> {
        let start_ticks = id.start_ticks;
        if self.args.connect_only {
            return Ok(());
        }
        self.table.read_pending_details(&id);
        let ancestry = self.table.ancestry(&id);
        if !self.selected(comm.as_str(), e.tgid, &ancestry) {
            return Ok(());
        }
        let signs = self
            .table
            .by_id(&id)
            .map(indicators::exec_signs)
            .unwrap_or_default();
        let users = &self.users;
        let placed = self.table.by_id(&id);
        let out = ExecOut {
            timestamp: style::event_time(e.ktime_ns),
            ktime_ns: e.ktime_ns,
            pid: e.tgid,
            tid: e.pid,
            ppid: e.ppid,
            uid: e.uid,
            user: users.name(e.uid),
            comm,
            filename,
            argv,
            argv_truncated: e.argv_total_len > e.argv_len,
            start_ticks,
            namespaces: placed.and_then(|p| p.namespaces.as_ref()),
            cgroup: placed.and_then(|p| p.cgroup.as_deref()),
            container: placed.and_then(|p| p.container.as_deref()),
            signs: &signs,
            ancestry_cut: self.table.ancestry_cut_of(&id, &ancestry),
            ancestry: ancestry
                .iter()
                .map(|p| ProcessOut::ancestor(p, users))
                .collect(),
        };
        self.shown += 1;
        self.out.exec(&out)
    }

    /// Raises a finding while watch runs: the one way every live detector
    /// reports. Printed at once (flushed, like an alert) unless it is below
    /// `--min-severity` or repeats an id already raised (a process's rule
    /// has the id `KIND:PID:START_TICKS`: once per process and rule);
    /// either way it is counted in the summary. `event` names what raised
    /// it (`exec`, `rename`, ...). The chain is the finding's `ancestry`
    /// (every detector takes it from the table, its details read); the
    /// proposed kill tree is worked out as for alerts.
    pub fn raise(&mut self, event: &str, finding: Finding) -> io::Result<()> {
        if !self.gate.admit(&finding) {
            self.findings_suppressed += 1;
            return Ok(());
        }
        self.findings += 1;
        let live = finding
            .process
            .as_ref()
            .filter(|p| self.table.get(p.pid).is_some_and(|t| t.id() == p.id()))
            .map(|p| p.id());
        if let Some(id) = live {
            // The plan shows the descendants too.
            self.table.read_pending_details_below(&id);
        }
        let kill_tree = live
            .and_then(|id| proposed_kill_tree(&self.table, id.pid, &mut self.persistence_cache));
        let users = &self.users;
        let chain: Vec<ProcessOut> = finding
            .ancestry
            .iter()
            .map(|p| ProcessOut::ancestor(p, users))
            .collect();
        let out = FindingOut {
            timestamp: Some(style::now()),
            event: Some(event),
            finding: &finding,
            kill_tree,
        };
        self.out.finding(&out, &chain)?;
        self.out.flush()
    }

    fn on_connect(&mut self, c: &ConnectEvent) -> io::Result<()> {
        let (daddr, saddr, family) = addresses(c);
        let seen = SeenConnect {
            ktime_ns: c.ktime_ns,
            pid: c.tgid,
            tid: c.pid,
            uid: c.uid,
            comm: text(&c.comm),
            family,
            saddr,
            sport: c.sport,
            daddr,
            dport: c.dport,
            hook: match c.hook {
                HOOK_FENTRY => "fentry/tcp_connect",
                HOOK_KPROBE => "kprobe/tcp_connect",
                _ => "tracepoint/inet_sock_set_state",
            },
            established_before_start: false,
            protocol: "tcp",
            udp: None,
        };
        self.sigma_connect(&seen)?;
        self.report_connect(seen).map(|_| ())
    }

    /// A UDP connect or send to an address: shown (and alerted, on a
    /// match) once a minute per process and destination, counted always.
    fn on_datagram(&mut self, d: &DatagramEvent) -> io::Result<()> {
        let (daddr, family) = datagram_destination(d);
        let comm = text(&d.comm);
        let dest = datagrams::Destination {
            pid: d.tgid,
            addr: daddr,
            port: d.dport,
        };
        let earlier = match self
            .datagrams
            .note(dest, comm.as_str(), d.ktime_ns, d.count)
        {
            datagrams::Verdict::Counted => return Ok(()),
            datagrams::Verdict::Show { earlier } => earlier,
        };
        let seen = SeenConnect {
            ktime_ns: d.ktime_ns,
            pid: d.tgid,
            tid: d.pid,
            uid: d.uid,
            comm,
            family,
            saddr: if family == "ipv6" {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            },
            sport: 0,
            daddr,
            dport: d.dport,
            hook: match d.hook {
                DGRAM_HOOK_FENTRY => "fentry/udp",
                DGRAM_HOOK_KPROBE => "kprobe/udp",
                _ => "cgroup/sock_addr",
            },
            established_before_start: false,
            protocol: "udp",
            udp: Some(UdpFacts {
                call: if d.call == DGRAM_CONNECT {
                    "connect"
                } else {
                    "send"
                },
                datagrams: self.datagrams.total(&dest),
                earlier_minute: earlier,
            }),
        };
        self.sigma_connect(&seen)?;
        if self.report_connect(seen)? {
            self.datagrams.alerted(dest);
        }
        Ok(())
    }

    /// Connections already open at start that match an indicator: each
    /// holder raises its alert now, through the same path as a connect.
    fn report_open(&mut self, sockets: &[Socket]) -> io::Result<()> {
        let now = proc::boottime_ns();
        for m in connections::match_open(sockets, &self.indicators) {
            let Some(local) = m.socket.local else {
                continue;
            };
            for owner in &m.socket.owners {
                let comm = self
                    .table
                    .get(owner.pid)
                    .map(|p| p.comm.clone())
                    .unwrap_or_default();
                self.report_connect(SeenConnect {
                    ktime_ns: now,
                    pid: owner.pid,
                    tid: owner.pid,
                    uid: m.socket.uid,
                    comm,
                    family: m.socket.family.name(),
                    saddr: local.ip(),
                    sport: local.port(),
                    daddr: m.peer.ip(),
                    dport: m.peer.port(),
                    hook: "iter/task_file",
                    established_before_start: true,
                    protocol: m.socket.protocol.name(),
                    udp: None,
                })?;
            }
        }
        Ok(())
    }

    /// Prints a connection (new or already open) and, when it matches an
    /// indicator, its alert with the chain and the proposed kill tree.
    /// Returns whether it alerted.
    fn report_connect(&mut self, c: SeenConnect) -> io::Result<bool> {
        if self.args.exec_only {
            return Ok(false);
        }
        let mut clock = StageClock::new(self.args.timing, self.woken_ns);
        // An answer that reached the host before this connect is queued on
        // the DNS socket: take it in first.
        let names: Vec<HostStr> = match &mut self.dns {
            Some(dns) => {
                dns.drain();
                dns.names(c.daddr).to_vec()
            }
            None => Vec::new(),
        };
        let mut matched = self
            .indicators
            .match_connect_named(c.daddr, c.dport, &names);
        clock.timing.match_ns = clock.lap();
        let Some(id) = self.ensure_known(c.pid, |t| t.get(c.pid).map(Process::id)) else {
            return Ok(false);
        };
        // Names the connecting process's own /etc/hosts gives the address
        // (one read per mount namespace, re-checked once a second).
        let mnt_ns = self
            .table
            .by_id(&id)
            .and_then(|p| p.namespaces.as_ref())
            .map_or(u64::MAX - u64::from(c.pid), |ns| u64::from(ns.mnt));
        let hosts_names: Vec<HostStr> = self.hosts.names(mnt_ns, c.pid, c.daddr).to_vec();
        if !hosts_names.is_empty() && matched.as_ref().is_none_or(|m| m.port_only) {
            matched = self
                .indicators
                .match_connect_named(c.daddr, c.dport, &hosts_names)
                .or(matched);
        }
        // The hosts name shown is the one that matched, when one did
        // (127.0.0.1 is `localhost` first, and the pool's name after).
        let hosts_name = hosts_names
            .iter()
            .find(|n| {
                self.indicators
                    .match_connect_named(c.daddr, c.dport, std::slice::from_ref(*n))
                    .is_some_and(|m| !m.port_only)
            })
            .or(hosts_names.first());
        let (domain, domain_source) = match (names.first(), hosts_name) {
            (Some(d), _) => (Some(d), Some("dns")),
            (None, Some(h)) => (Some(h), Some("hosts")),
            (None, None) => (None, None),
        };
        // For `kill-tree --remote`, after the connector is gone.
        self.lineage.note_connect(
            id,
            std::net::SocketAddr::new(c.daddr, c.dport),
            c.ktime_ns,
            c.protocol,
        );
        if matched.is_some() {
            // The alert's kill-tree plan shows the descendants too.
            self.table.read_pending_details_below(&id);
        }
        let Some(process) = self.table.by_id(&id) else {
            return Ok(false);
        };
        let ancestry = self.table.ancestry(&id);
        clock.timing.ancestry_ns = clock.lap();
        if matched.is_none() && !self.selected(c.comm.as_str(), c.pid, &ancestry) {
            return Ok(false);
        }
        let users = &self.users;
        let out = ConnectOut {
            timestamp: style::event_time(c.ktime_ns),
            ktime_ns: c.ktime_ns,
            pid: c.pid,
            tid: c.tid,
            uid: c.uid,
            user: users.name(c.uid),
            comm: &c.comm,
            exe: process.exe.as_ref(),
            cmdline: process.cmdline_string(),
            namespaces: process.namespaces.as_ref(),
            cgroup: process.cgroup.as_deref(),
            container: process.container.as_deref(),
            family: c.family,
            saddr: c.saddr.to_string(),
            sport: c.sport,
            daddr: c.daddr.to_string(),
            dport: c.dport,
            domain,
            domain_source,
            hook: c.hook,
            established_before_start: c.established_before_start,
            protocol: c.protocol,
            udp_call: c.udp.map(|u| u.call),
            datagrams: c.udp.map(|u| u.datagrams),
            datagrams_earlier_minute: c.udp.and_then(|u| u.earlier_minute),
            ancestry_cut: self.table.ancestry_cut_of(&id, &ancestry),
            ancestry: ancestry
                .iter()
                .map(|p| ProcessOut::ancestor(p, users))
                .collect(),
        };
        self.shown += 1;
        self.out.connect(&out)?;
        clock.timing.connect_out_ns = clock.lap();
        if let Some(m) = matched {
            self.alerts += 1;
            let severity = self.indicators.severity(&m, process);
            let kill_tree = proposed_kill_tree(&self.table, c.pid, &mut self.persistence_cache);
            clock.timing.plan_ns = clock.lap();
            clock.timing.alert_write_ns = clock.last;
            self.out.alert(&AlertOut {
                severity,
                indicator: &m.indicator,
                indicator_source: &m.source,
                reason: if c.protocol == "udp" {
                    "outbound UDP to a known pool or C2 address (a beacon is alerted once a minute; \
                     its datagrams are counted in the summary)"
                        .into()
                } else if m.port_only {
                    "destination port commonly used by mining pools".into()
                } else {
                    "destination is a known pool or C2 address".into()
                },
                connect: &out,
                kill_tree,
                timing: clock.enabled.then_some(clock.timing),
            })?;
            // An alert leaves at once, not with the rest of the batch.
            self.out.flush()?;
            return Ok(true);
        }
        Ok(false)
    }
}
/// Stage stamps for `--timing`; reads no clock when timing is off.
struct StageClock {
    enabled: bool,
    last: u64,
    timing: AlertTiming,
}

impl StageClock {
    fn new(enabled: bool, woken_ns: u64) -> Self {
        let now = if enabled { proc::boottime_ns() } else { 0 };
        StageClock {
            enabled,
            last: now,
            timing: AlertTiming {
                woken_ns,
                handled_ns: now,
                ..AlertTiming::default()
            },
        }
    }

    /// Nanoseconds since the previous lap.
    fn lap(&mut self) -> u64 {
        if !self.enabled {
            return 0;
        }
        let now = proc::boottime_ns();
        now.saturating_sub(std::mem::replace(&mut self.last, now))
    }
}

/// A connection to report: from a connect event, or open at start.
struct SeenConnect {
    ktime_ns: u64,
    pid: u32,
    tid: u32,
    uid: u32,
    comm: HostStr,
    family: &'static str,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
    hook: &'static str,
    established_before_start: bool,
    /// `tcp` or `udp`.
    protocol: &'static str,
    udp: Option<UdpFacts>,
}

/// What a UDP record adds: the call, and the datagrams counted.
#[derive(Clone, Copy)]
struct UdpFacts {
    call: &'static str,
    /// To this destination from this process since first seen.
    datagrams: u64,
    /// In the minute before this record, when this is not the first.
    earlier_minute: Option<u64>,
}

/// The kill-tree tracer would propose for `pid`, shown with an alert: the
/// set comes from the table (no I/O); the persistence scan reads files, so
/// its result is kept per executable and reused by later alerts.
fn proposed_kill_tree(
    table: &ProcessTable,
    pid: u32,
    persistence_cache: &mut HashMap<String, Vec<String>>,
) -> Option<KillPlanSummary> {
    let plan =
        respond::plan::plan_tree_within(table, pid, std::process::id(), crate::table::MAX_DEPTH)
            .ok()?;
    let key = plan
        .members
        .iter()
        .filter_map(|m| m.process.exe.as_ref().map(|e| e.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    let persistence = persistence_cache
        .entry(key)
        .or_insert_with(|| {
            let members: Vec<&Process> = plan.members.iter().map(|m| &m.process).collect();
            respond::persistence::scan(&respond::persistence::Roots::from_env(), &members)
                .into_iter()
                .map(|h| {
                    format!(
                        "{}:{} ({}, {})",
                        h.file.as_str(),
                        h.line_no,
                        h.kind,
                        h.technique
                    )
                })
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
/// A datagram record's destination; an IPv4-mapped IPv6 address (an IPv6
/// socket sending to IPv4) is the IPv4 address it maps.
fn datagram_destination(d: &DatagramEvent) -> (IpAddr, &'static str) {
    const AF_INET6: u16 = 10;
    if d.family == AF_INET6 {
        let v6 = Ipv6Addr::from(d.daddr);
        match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), "ipv4"),
            None => (IpAddr::V6(v6), "ipv6"),
        }
    } else {
        let a = d.daddr;
        (IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])), "ipv4")
    }
}

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
