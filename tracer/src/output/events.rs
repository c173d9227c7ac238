//! Rendering of watch events: one JSON object per line, or one human line.
//!
//! JSON field names are part of tracer's interface (README, "Event format");
//! change them only with a note there.
use std::io::{self, Write};

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    kernel::HookChoice,
    model::{Process, Severity},
    output::{
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
    pub user: String,
    pub comm: &'a str,
    pub exe: Option<&'a str>,
    pub cmdline: String,
    pub start_ticks: u64,
    pub exited: bool,
}

impl<'a> ProcessOut<'a> {
    pub fn new(p: &'a Process, users: &Users) -> Self {
        ProcessOut {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            user: users.name(p.uid),
            comm: &p.comm,
            exe: p.exe.as_deref(),
            cmdline: p.cmdline_string(),
            start_ticks: p.start_ticks,
            exited: p.exited_at_ns.is_some(),
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
    pub user: String,
    pub comm: &'a str,
    pub filename: &'a str,
    pub argv: &'a [String],
    pub argv_truncated: bool,
    pub start_ticks: u64,
    /// Signs of mining or C2 in the command line, if any.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub signs: &'a [String],
    pub ancestry: Vec<ProcessOut<'a>>,
}

#[derive(Serialize, JsonSchema)]
pub struct ConnectOut<'a> {
    /// Wall-clock time of the event, RFC 3339 UTC.
    pub timestamp: String,
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub user: String,
    pub comm: &'a str,
    pub exe: Option<&'a str>,
    pub cmdline: String,
    pub family: &'static str,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub hook: &'static str,
    pub ancestry: Vec<ProcessOut<'a>>,
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
}

#[derive(Serialize, JsonSchema)]
pub struct StartOut<'a> {
    pub kernel: String,
    pub hooks: &'a [HookChoice],
    pub processes: usize,
}

#[derive(Serialize, JsonSchema, Default, Clone, Copy)]
pub struct Counts {
    pub exec: u64,
    pub fork: u64,
    pub exit: u64,
    pub connect: u64,
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
    pub shown: u64,
}

/// Writes events as JSON lines or human lines.
pub struct EventWriter<W: Write> {
    out: W,
    json: bool,
    /// Severity in colour (human lines on a terminal only).
    colour: bool,
}

fn chain_text(ancestry: &[ProcessOut]) -> String {
    ancestry
        .iter()
        .map(|a| {
            format!(
                "{}({}{})",
                a.comm,
                a.pid,
                if a.exited { ",exited" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(" < ")
}

impl<W: Write> EventWriter<W> {
    pub fn new(out: W, json: bool) -> Self {
        EventWriter {
            out,
            json,
            colour: false,
        }
    }

    /// Colours severities in human lines when `colour` is true.
    pub fn with_colour(mut self, colour: bool) -> Self {
        self.colour = colour && !self.json;
        self
    }

    /// The writer underneath (to re-open a file).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn json_line<R: Record>(&mut self, r: &R) -> io::Result<()> {
        schema::write_line(&mut self.out, r)
    }

    pub fn start(&mut self, s: &StartOut) -> io::Result<()> {
        if self.json {
            return self.json_line(s);
        }
        write!(self.out, "{} ", style::now())?;
        writeln!(
            self.out,
            "tracer: watching (kernel {}, {} processes known); Ctrl-C to stop",
            s.kernel, s.processes
        )?;
        for h in s.hooks {
            writeln!(self.out, "  {:<8} {}  ({})", h.event, h.hook, h.reason)?;
        }
        Ok(())
    }

    pub fn exec(&mut self, e: &ExecOut) -> io::Result<()> {
        if self.json {
            return self.json_line(e);
        }
        let args = e.argv.join(" ");
        write!(self.out, "{} ", e.timestamp)?;
        write!(
            self.out,
            "EXEC    pid={} ppid={} user={} {} [{}]{}",
            e.pid,
            e.ppid,
            e.user,
            e.filename,
            args,
            if e.argv_truncated { "..." } else { "" }
        )?;
        if !e.signs.is_empty() {
            write!(self.out, "  !! {}", e.signs.join("; "))?;
        }
        writeln!(self.out, "\n        chain: {}", chain_text(&e.ancestry))
    }

    pub fn connect(&mut self, c: &ConnectOut) -> io::Result<()> {
        if self.json {
            return self.json_line(c);
        }
        write!(self.out, "{} ", c.timestamp)?;
        writeln!(
            self.out,
            "CONNECT pid={} user={} {} {} -> {}\n        chain: {}",
            c.pid,
            c.user,
            c.comm,
            endpoint(&c.saddr, c.sport),
            endpoint(&c.daddr, c.dport),
            chain_text(&c.ancestry)
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
            "ALERT [{}] {} (pid {}) connects to {}: matches {} ({}); {}",
            style::severity(a.severity, false, self.colour),
            c.comm,
            c.pid,
            endpoint(&c.daddr, c.dport),
            a.indicator,
            a.indicator_source,
            a.reason
        )?;
        for p in &c.ancestry {
            writeln!(
                self.out,
                "        < {} {} user={} exe={} start={} `{}`{}",
                p.pid,
                p.comm,
                p.user,
                p.exe.unwrap_or("?"),
                p.start_ticks,
                p.cmdline,
                if p.exited { " (exited)" } else { "" }
            )?;
        }
        if let Some(k) = &a.kill_tree {
            writeln!(
                self.out,
                "        stop it: {}  (members: {:?})",
                k.command, k.pids
            )?;
        }
        Ok(())
    }

    pub fn summary(&mut self, s: &SummaryOut) -> io::Result<()> {
        if self.json {
            return self.json_line(s);
        }
        write!(self.out, "{} ", s.timestamp)?;
        writeln!(
            self.out,
            "tracer: {} events seen (exec {}, fork {}, exit {}, connect {}), {} lost in the kernel, {} malformed, {} alerts",
            s.events_seen,
            s.seen.exec,
            s.seen.fork,
            s.seen.exit,
            s.seen.connect,
            s.events_lost,
            s.malformed,
            s.alerts
        )
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
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
