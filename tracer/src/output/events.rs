//! Rendering of watch events: one JSON object per line, or one human line.
//!
//! JSON field names are part of tracer's interface (README, "Event format");
//! change them only with a note there. Host strings are `HostStr` (JSON: a
//! string, or `{text, hex}` when not UTF-8); every string a human line
//! shows goes through `escape`.
use crate::table::AncestryCut;
use std::io::{self, Write};

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    kernel::HookChoice,
    model::{
        host_str::escape, placement, Container, HostStr, Namespaces, Process, Severity, ThreadName,
    },
    output::{
        bounded::{self, LineCap},
        schema::{self, Record},
        style,
    },
    users::Users,
};

/// An ancestor or the acting process, as shown in events.
#[derive(Serialize, JsonSchema)]
pub struct ProcessOut<'a> {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub user: HostStr,
    pub comm: &'a HostStr,
    pub exe: Option<&'a HostStr>,
    pub cmdline: HostStr,
    pub start_ticks: u64,
    pub exited: bool,
    /// Threads named differently from the process.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub threads: &'a [ThreadName],
    /// Where it lives (see `model::placement`); each absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<&'a Namespaces>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<&'a HostStr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a Container>,
}

/// ` in=docker:3f2a9c1b7d4e nspid=1` (or ` in=ns:pid,mnt`) for a human
/// line; empty on the host.
pub fn placement_text(ns: Option<&Namespaces>, container: Option<&Container>) -> String {
    placement::token_of(ns, container).map_or(String::new(), |t| format!(" in={}", escape(&t)))
}

impl<'a> ProcessOut<'a> {
    /// An ancestor in an event's chain: its namespaces and cgroup only when
    /// it lives outside the host's (a chain is mostly host processes, and
    /// their placement, the host's, would double every event's size).
    pub fn ancestor(p: &'a Process, users: &Users) -> Self {
        let mut out = ProcessOut::new(p, users);
        let off_host = p.container.is_some()
            || p.namespaces
                .as_ref()
                .is_some_and(|ns| !ns.separate.is_empty());
        if !off_host {
            out.namespaces = None;
            out.cgroup = None;
        }
        out
    }

    pub fn new(p: &'a Process, users: &Users) -> Self {
        ProcessOut {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            user: users.name(p.uid),
            comm: &p.comm,
            exe: p.exe.as_ref(),
            cmdline: p.cmdline_string(),
            start_ticks: p.start_ticks,
            exited: p.exited_at_ns.is_some(),
            threads: &p.threads,
            namespaces: p.namespaces.as_ref(),
            cgroup: p.cgroup.as_deref(),
            container: p.container.as_deref(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
pub struct ExecOut<'a> {
    /// Wall-clock time of the event, RFC 3339 UTC.
    pub timestamp: String,
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub user: HostStr,
    pub comm: &'a HostStr,
    pub filename: &'a HostStr,
    pub argv: &'a [HostStr],
    pub argv_truncated: bool,
    pub start_ticks: u64,
    /// Where it lives (see `model::placement`); each absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<&'a Namespaces>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<&'a HostStr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a Container>,
    /// Signs of mining or C2 in the command line, if any.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub signs: &'a [String],
    pub ancestry: Vec<ProcessOut<'a>>,
    /// Where `ancestry` was cut, when the chain is deeper than it shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ancestry_cut: Option<AncestryCut>,
}

#[derive(Serialize, JsonSchema)]
pub struct ConnectOut<'a> {
    /// Wall-clock time of the event, RFC 3339 UTC.
    pub timestamp: String,
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub user: HostStr,
    pub comm: &'a HostStr,
    pub exe: Option<&'a HostStr>,
    pub cmdline: HostStr,
    /// Where it lives (see `model::placement`); each absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<&'a Namespaces>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<&'a HostStr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a Container>,
    pub family: &'static str,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    /// The name a DNS answer seen by watch gave for `daddr` (the name asked
    /// for, before any CNAME), else one the connecting process's own
    /// `/etc/hosts` gives it, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<&'a HostStr>,
    /// Where `domain` came from: `dns` or `hosts` (the /etc/hosts of the
    /// process's mount namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_source: Option<&'static str>,
    pub hook: &'static str,
    /// The connection was already open when watch started (found by the
    /// start-up snapshot, not by a connect event).
    pub established_before_start: bool,
    /// `tcp`, or `udp` for a datagram socket's connect or send.
    pub protocol: &'static str,
    /// UDP: `connect` (a connected socket) or `send` (to an address, not
    /// connected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_call: Option<&'static str>,
    /// UDP: datagrams (and connects) from this process to this destination
    /// since watch first saw one. Each destination is shown once a minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams: Option<u64>,
    /// UDP: datagrams in the minute before this record, when it is not
    /// the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams_earlier_minute: Option<u64>,
    pub ancestry: Vec<ProcessOut<'a>>,
    /// Where `ancestry` was cut, when the chain is deeper than it shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ancestry_cut: Option<AncestryCut>,
}

/// The kill-tree tracer would propose for an alert's process.
#[derive(Serialize, JsonSchema, Clone, Debug)]
pub struct KillPlanSummary {
    /// The exact command that carries the plan out.
    pub command: String,
    /// Every process the plan would stop.
    pub pids: Vec<u32>,
    /// Persistence that would start it again, as `file:line`.
    pub persistence: Vec<String>,
}

#[derive(Serialize, JsonSchema)]
pub struct AlertOut<'a> {
    pub severity: Severity,
    pub indicator: &'a str,
    pub indicator_source: &'a str,
    pub reason: String,
    pub connect: &'a ConnectOut<'a>,
    pub kill_tree: Option<KillPlanSummary>,
    /// Where the time went (only with the hidden `--timing` flag, for
    /// `cargo xtask bench connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<AlertTiming>,
}

/// Boot-time stamps and stage durations of one alert, in nanoseconds.
/// With the connect's `ktime_ns` and the reader's arrival time they split
/// connect-to-alert latency into its parts.
#[derive(Serialize, JsonSchema, Default, Clone, Copy, Debug)]
pub struct AlertTiming {
    /// When the reader woke to drain the ring buffer holding the record.
    pub woken_ns: u64,
    /// When the record was taken from the ring buffer and decoded.
    pub handled_ns: u64,
    /// Table lookup and ancestry.
    pub ancestry_ns: u64,
    /// Indicator match.
    pub match_ns: u64,
    /// The connect line built and written (JSON) to the buffer.
    pub connect_out_ns: u64,
    /// Kill-tree plan (and persistence, cached per program set).
    pub plan_ns: u64,
    /// When the alert line began to be written; the rest (JSON of the
    /// alert, flush, pipe, reader) is the arrival time minus this.
    pub alert_write_ns: u64,
}

#[derive(Serialize, JsonSchema)]
pub struct StartOut<'a> {
    pub kernel: String,
    pub hooks: &'a [HookChoice],
    pub processes: usize,
    /// Connections open at start (sockets with a peer, from the kernel's
    /// socket iterators); absent when they could not be listed.
    pub connections: Option<usize>,
    /// Why the open connections were not (all) listed, if so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connections_gaps: Vec<String>,
    /// How connects get their domain: the DNS answer source, or why none.
    pub dns: &'a str,
    /// The event reader's CPU scheduling (real-time while cheap, or why not).
    pub scheduling: String,
    /// The Sigma rules loaded (`--sigma`): per category, and each skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma: Option<&'a crate::detect::sigma::LoadSummary>,
}

#[derive(Serialize, JsonSchema, Default, Clone, Copy)]
pub struct Counts {
    pub exec: u64,
    pub fork: u64,
    pub exit: u64,
    pub connect: u64,
    /// Successful `mount`/`move_mount` calls (every one is checked for
    /// /proc/PID, only those are shown).
    pub mount: u64,
    /// Renames after exec (`task_rename`).
    pub rename: u64,
    /// Outbound UDP records (the kernel sends one a second at most per
    /// process and destination).
    #[serde(default)]
    pub datagram: u64,
}

impl Counts {
    /// Every kind together.
    pub fn total(&self) -> u64 {
        self.exec + self.fork + self.exit + self.connect + self.mount + self.rename + self.datagram
    }
}

/// Events the kernel could not queue since the last `loss` record (or the
/// start), per kind. Once losses stop, the table is re-read from the
/// kernel's task list.
#[derive(Serialize, JsonSchema)]
pub struct LossOut {
    /// When the loss was reported, RFC 3339 UTC.
    pub timestamp: String,
    /// Since the last loss record.
    pub lost: Counts,
    /// Since watch started.
    pub total_lost: u64,
}

#[derive(Serialize, JsonSchema)]
pub struct SummaryOut {
    /// When the summary was made, RFC 3339 UTC.
    pub timestamp: String,
    /// False for a summary asked for with SIGUSR1 while watch goes on.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub events_seen: u64,
    pub events_lost: u64,
    pub seen: Counts,
    pub lost: Counts,
    pub malformed: u64,
    pub alerts: u64,
    /// `finding` records printed.
    pub findings: u64,
    /// Findings not printed: below `--min-severity`, or a repeat for the
    /// same process and rule.
    pub findings_suppressed: u64,
    pub shown: u64,
    /// UDP destinations that raised alerts, with every datagram counted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub beacons: Vec<crate::commands::watch::BeaconOut>,
}

/// Writes events as JSON lines or human lines.
pub struct EventWriter<W: Write> {
    /// Human lines are bounded (see `bounded`); JSON lines pass whole.
    pub(super) out: LineCap<W>,
    pub(super) json: bool,
    /// Severity in colour (human lines on a terminal only).
    pub(super) colour: bool,
    /// The JSON line being written, kept between records.
    line: Vec<u8>,
}

/// ` < ... N more (from pid P)` after a chain that was cut.
pub(super) fn cut_text(cut: Option<AncestryCut>) -> String {
    match cut {
        Some(c) => format!(" < ... {} more (from pid {})", c.left_out, c.continues_at),
        None => String::new(),
    }
}

/// `sh(300) < cron(200,exited)`; a thread named differently from its
/// process is shown inside braces: `kworkerd(300){xmrig:301}`.
pub(super) fn chain_text(ancestry: &[ProcessOut]) -> String {
    ancestry
        .iter()
        .map(|a| {
            let threads: Vec<String> = a
                .threads
                .iter()
                .map(|t| format!("{}:{}", t.comm.as_str(), t.tid))
                .collect();
            format!(
                "{}({}{}){}",
                a.comm.as_str(),
                a.pid,
                if a.exited { ",exited" } else { "" },
                if threads.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", threads.join(","))
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" < ")
}

impl<W: Write> EventWriter<W> {
    pub fn new(out: W, json: bool) -> Self {
        EventWriter {
            out: if json {
                LineCap::unbounded(out)
            } else {
                LineCap::new(out)
            },
            json,
            colour: false,
            line: Vec::new(),
        }
    }

    /// Colours severities in human lines when `colour` is true.
    pub fn with_colour(mut self, colour: bool) -> Self {
        self.colour = colour && !self.json;
        self
    }

    /// The writer underneath (to re-open a file).
    pub fn get_mut(&mut self) -> &mut W {
        self.out.get_mut()
    }

    pub(super) fn json_line<R: Record>(&mut self, r: &R) -> io::Result<()> {
        // Past the line cap: JSON lines are whole.
        schema::write_line_through(self.out.get_mut(), &mut self.line, r)
    }

    pub fn start(&mut self, s: &StartOut) -> io::Result<()> {
        if self.json {
            return self.json_line(s);
        }
        let connections = s.connections.map_or("connections unknown".into(), |n| {
            format!("{n} open connections")
        });
        write!(self.out, "{} ", style::now())?;
        writeln!(
            self.out,
            "tracer: watching (kernel {}, {} processes known, {connections}); Ctrl-C to stop",
            s.kernel, s.processes
        )?;
        for gap in &s.connections_gaps {
            writeln!(self.out, "  note: {gap}")?;
        }
        if let Some(sigma) = s.sigma {
            writeln!(self.out, "  {}", sigma.line())?;
        }
        for h in s.hooks {
            writeln!(self.out, "  {:<8} {}  ({})", h.event, h.hook, h.reason)?;
        }
        writeln!(self.out, "  {:<8} {}", "dns", escape(s.dns))?;
        writeln!(self.out, "  {:<8} {}", "sched", s.scheduling)?;
        Ok(())
    }

    pub fn exec(&mut self, e: &ExecOut) -> io::Result<()> {
        if self.json {
            return self.json_line(e);
        }
        let args = HostStr::join(e.argv, " ");
        write!(self.out, "{} ", e.timestamp)?;
        write!(
            self.out,
            "EXEC    pid={} ppid={} user={}{} {} [{}]{}",
            e.pid,
            e.ppid,
            e.user.escaped(),
            placement_text(e.namespaces, e.container),
            escape(&bounded::cut(e.filename.as_str(), bounded::FIELD_MAX)),
            escape(&bounded::cmdline(&args)),
            if e.argv_truncated { "..." } else { "" }
        )?;
        if !e.signs.is_empty() {
            write!(self.out, "  !! {}", escape(&e.signs.join("; ")))?;
        }
        writeln!(
            self.out,
            "\n        chain: {}{}",
            escape(&chain_text(&e.ancestry)),
            cut_text(e.ancestry_cut)
        )
    }

    pub fn connect(&mut self, c: &ConnectOut) -> io::Result<()> {
        if self.json {
            return self.json_line(c);
        }
        write!(self.out, "{} ", c.timestamp)?;
        let (label, udp) = match (c.udp_call, c.datagrams) {
            (Some(call), Some(n)) => (
                "UDP    ",
                format!(
                    " ({call}; datagrams so far: {n}{})",
                    c.datagrams_earlier_minute
                        .map_or(String::new(), |m| format!(", {m} in the minute before"))
                ),
            ),
            _ => ("CONNECT", String::new()),
        };
        writeln!(
            self.out,
            "{label} pid={} user={}{} {} {} -> {}{}{}{udp}\n        chain: {}{}",
            c.pid,
            c.user.escaped(),
            placement_text(c.namespaces, c.container),
            c.comm.escaped(),
            endpoint(&c.saddr, c.sport),
            endpoint(&c.daddr, c.dport),
            domain_text(c.domain),
            if c.established_before_start {
                " (open before watch started)"
            } else {
                ""
            },
            escape(&chain_text(&c.ancestry)),
            cut_text(c.ancestry_cut)
        )
    }

    pub fn alert(&mut self, a: &AlertOut) -> io::Result<()> {
        if self.json {
            return self.json_line(a);
        }
        let c = a.connect;
        write!(self.out, "{} ", c.timestamp)?;
        writeln!(
            self.out,
            "ALERT [{}] {} (pid {}{}) {} {}{}: matches {} ({}); {}",
            style::severity(a.severity, false, self.colour),
            c.comm.escaped(),
            c.pid,
            placement_text(c.namespaces, c.container),
            if c.established_before_start {
                "has been connected since before watch started to"
            } else if c.protocol == "udp" {
                "sends UDP to"
            } else {
                "connects to"
            },
            endpoint(&c.daddr, c.dport),
            domain_text(c.domain),
            escape(a.indicator),
            escape(a.indicator_source),
            escape(&a.reason)
        )?;
        self.chain_block(&c.ancestry)?;
        self.kill_tree_line(a.kill_tree.as_ref())
    }

    /// One line per ancestor, nearest first, with its threads.
    pub(super) fn chain_block(&mut self, ancestry: &[ProcessOut]) -> io::Result<()> {
        for p in ancestry {
            writeln!(
                self.out,
                "        < {} {} user={}{} exe={} start={} `{}`{}",
                p.pid,
                p.comm.escaped(),
                p.user.escaped(),
                placement_text(p.namespaces, p.container),
                p.exe.map_or("?".into(), |e| escape(&bounded::cut(
                    e.as_str(),
                    bounded::FIELD_MAX
                ))
                .into_owned()),
                p.start_ticks,
                escape(&bounded::cmdline(&p.cmdline)),
                if p.exited { " (exited)" } else { "" }
            )?;
            if !p.threads.is_empty() {
                let threads = bounded::threads(p.threads, |n| {
                    crate::detect::masquerade::miner_named(n).is_some()
                });
                writeln!(self.out, "          threads: {}", escape(&threads))?;
            }
        }
        Ok(())
    }

    pub(super) fn kill_tree_line(&mut self, k: Option<&KillPlanSummary>) -> io::Result<()> {
        if let Some(k) = k {
            writeln!(
                self.out,
                "        stop it: {}  (members: {:?})",
                escape(&k.command),
                k.pids
            )?;
        }
        Ok(())
    }

    pub fn loss(&mut self, l: &LossOut) -> io::Result<()> {
        if self.json {
            return self.json_line(l);
        }
        let n = l.lost.total();
        write!(self.out, "{} ", l.timestamp)?;
        writeln!(
            self.out,
            "LOSS    the kernel dropped {n} events (exec {}, fork {}, exit {}, connect {}, mount {}, rename {}, udp {}) since the last \
             report, {} in all; ancestry is re-read from the kernel once losses stop",
            l.lost.exec, l.lost.fork, l.lost.exit, l.lost.connect, l.lost.mount, l.lost.rename, l.lost.datagram, l.total_lost
        )
    }

    pub fn summary(&mut self, s: &SummaryOut) -> io::Result<()> {
        if self.json {
            return self.json_line(s);
        }
        write!(self.out, "{} ", s.timestamp)?;
        writeln!(
            self.out,
            "tracer: {} events seen (exec {}, fork {}, exit {}, connect {}, rename {}, udp {}), {} lost in the kernel, {} malformed, {} alerts, {} findings ({} suppressed)",
            s.events_seen,
            s.seen.exec,
            s.seen.fork,
            s.seen.exit,
            s.seen.connect,
            s.seen.rename,
            s.seen.datagram,
            s.events_lost,
            s.malformed,
            s.alerts,
            s.findings,
            s.findings_suppressed
        )?;
        for b in &s.beacons {
            writeln!(
                self.out,
                "  beacon: pid {} {} -> {}: {} datagrams over {} s, {} alerts",
                b.pid,
                escape(&b.comm),
                endpoint(&b.daddr, b.dport),
                b.datagrams,
                b.last_ktime_ns.saturating_sub(b.first_ktime_ns) / 1_000_000_000,
                b.alerts
            )?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// ` (domain)` after an address, escaped; empty without one.
fn domain_text(domain: Option<&HostStr>) -> String {
    domain.map_or(String::new(), |d| format!(" ({})", d.escaped()))
}

/// `addr:port`, with brackets for IPv6 and `?` for an unknown port.
pub fn endpoint(addr: &str, port: u16) -> String {
    let port = if port == 0 {
        "?".to_string()
    } else {
        port.to_string()
    };
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_bracket_ipv6_and_mark_unknown_ports() {
        assert_eq!(endpoint("127.0.0.1", 3333), "127.0.0.1:3333");
        assert_eq!(endpoint("::1", 443), "[::1]:443");
        assert_eq!(endpoint("10.0.0.1", 0), "10.0.0.1:?");
    }
}
