//! Findings for people and for programs: a list (severity, layer, PID,
//! name, what was found, evidence, next step) closed by one summary line;
//! or one JSON object. Any command that produces findings renders them here.
//!
//! JSON field names are part of tracer's interface (README, "Findings").
use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    model::{host_str::escape, Finding},
    output::style,
};

/// One view's contribution, as the report shows it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ViewSummary {
    /// Processes (or PIDs) the view listed; `None` when it was not taken.
    pub count: Option<usize>,
    /// Where the view came from, or why it is missing.
    pub source: String,
    /// How long taking it took.
    pub ms: u64,
    /// Parts of what it covers that it could not read (then it is not
    /// diffed there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
}

/// A findings report.
#[derive(Serialize, JsonSchema)]
pub struct Report<'a> {
    /// By view letter: K, P, L, S (S2 for a second ps), D.
    pub views: BTreeMap<String, ViewSummary>,
    /// The views of the host's sockets, by letter: K, P, N, F, L, S (S2...
    /// for further ss or netstat programs). Empty when not taken.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub connection_views: BTreeMap<String, ViewSummary>,
    /// `used`, or `skipped: <why>`.
    pub kernel_view: String,
    pub elapsed_ms: u64,
    /// Processes some checks could not run on, and why.
    pub unchecked: Unchecked,
    /// Every finding of the run, in one list: processes, connections,
    /// Sigma matches, then the kernel's (layer `kernel`).
    pub findings: &'a [Finding],
    /// What the kernel checks saw (BPF programs, hooks, modules); absent
    /// when they were not run. Their findings are in `findings`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<super::kernel::KernelSection<'a>>,
    /// With `--file` or `--remote`: the processes selected; `findings`
    /// holds only those about them (kernel findings are kept whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<&'a crate::views::selection::Selection>,
    /// The Sigma rules loaded (`--sigma`), per category, and each skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma: Option<&'a crate::detect::sigma::LoadSummary>,
}

impl Report<'_> {
    /// The findings printed before the kernel section (human output).
    fn outside_kernel(&self) -> &[Finding] {
        let k = self.kernel.as_ref().map_or(0, |k| k.findings.len());
        &self.findings[..self.findings.len() - k]
    }
}

/// Processes that could not be fully checked.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Unchecked {
    pub count: usize,
    /// Why, and what to do; empty when `count` is 0.
    pub why: String,
    /// Their PIDs, in order.
    pub pids: Vec<u32>,
}

pub fn write_json(w: &mut impl Write, report: &Report) -> io::Result<()> {
    super::schema::write_pretty(w, report)
}

/// The findings, then a note for each missing or incomplete view, the
/// connection views' counts, then one summary line; severities in colour
/// when `colour` is on (see `style::colour_for`).
/// The selected processes, each with why, before the findings about them.
pub fn write_selection(
    w: &mut impl Write,
    sel: &crate::views::selection::Selection,
) -> io::Result<()> {
    writeln!(
        w,
        "{} ({} processes):",
        escape(&sel.selector),
        sel.matched.len()
    )?;
    for (pid, why) in &sel.matched {
        writeln!(w, "  {pid:>7}  {}", escape(&why.join(", ")))?;
    }
    for gap in &sel.gaps {
        writeln!(w, "  not covered: {}", escape(gap))?;
    }
    writeln!(w)
}

pub fn write_human(
    w: &mut impl Write,
    report: &Report,
    view_order: &[&str],
    connection_view_order: &[&str],
    colour: bool,
) -> io::Result<()> {
    if let Some(sel) = report.selection {
        write_selection(w, sel)?;
    }
    write_findings_styled(w, report.outside_kernel(), colour)?;
    if let Some(k) = &report.kernel {
        super::kernel::write_human(w, k)?;
    }
    if let Some(why) = report.kernel_view.strip_prefix("skipped: ") {
        writeln!(w, "kernel view skipped: {}", escape(why))?;
    }
    for (letter, view) in &report.views {
        if view.count.is_none() && letter != "K" {
            writeln!(w, "view {letter} unavailable: {}", escape(&view.source))?;
        }
    }
    for (letter, view) in &report.connection_views {
        if view.count.is_none() {
            writeln!(w, "connection view {letter} unavailable: {}", view.source)?;
        } else if !view.gaps.is_empty() {
            writeln!(
                w,
                "connection view {letter} incomplete, could not read: {}",
                view.gaps.join("; ")
            )?;
        }
    }
    if !report.connection_views.is_empty() {
        writeln!(
            w,
            "connection views: {}",
            counts(&report.connection_views, connection_view_order).join(", ")
        )?;
    }
    if let Some(sigma) = report.sigma {
        writeln!(w, "{}", escape(&sigma.line()))?;
    }
    let n = report.outside_kernel().len();
    let unchecked = match report.unchecked.count {
        0 => String::new(),
        u => format!(
            "; {u} process{} not fully checked ({})",
            if u == 1 { "" } else { "es" },
            escape(&report.unchecked.why)
        ),
    };
    writeln!(
        w,
        "{n} finding{} (views: {}) in {} ms{unchecked}",
        if n == 1 { "" } else { "s" },
        counts(&report.views, view_order).join(", "),
        report.elapsed_ms
    )
}

/// `K=120, P=118, L=skipped` in the given order.
fn counts(views: &BTreeMap<String, ViewSummary>, order: &[&str]) -> Vec<String> {
    order
        .iter()
        .filter_map(|l| views.get(*l).map(|v| (l, v)))
        .map(|(l, v)| match v.count {
            Some(n) => format!("{l}={n}"),
            None => format!("{l}=skipped"),
        })
        .collect()
}

/// Each finding as a block: a header line, the summary, the evidence and
/// the next step.
pub fn write_findings(w: &mut impl Write, findings: &[Finding]) -> io::Result<()> {
    write_findings_styled(w, findings, false)
}

fn write_findings_styled(w: &mut impl Write, findings: &[Finding], colour: bool) -> io::Result<()> {
    for f in findings {
        // Every string below may quote the attacker: all are escaped.
        // Padded before colouring: escape codes have no width.
        let severity = format!("{:<8}", f.severity.to_string().to_uppercase());
        let severity = severity.replacen(
            f.severity.to_string().to_uppercase().as_str(),
            &style::severity(f.severity, true, colour),
            1,
        );
        let (pid, comm) = f
            .process
            .as_ref()
            .map_or((String::from("-"), "-".into()), |p| {
                (p.pid.to_string(), p.comm.escaped())
            });
        writeln!(
            w,
            "{severity} {:<10} pid {:<7} {:<16} {}",
            escape(&f.layer),
            pid,
            comm,
            f.kind
        )?;
        writeln!(w, "    {}", escape(&f.summary))?;
        if let Some(place) = f.process.as_ref().and_then(crate::model::placement::token) {
            writeln!(w, "    in: {}", escape(&place))?;
        }
        for (label, value) in f.evidence.iter().filter(|(l, _)| l != "pid") {
            let value = super::bounded::evidence(label, value, f.process.as_ref());
            writeln!(w, "    {}: {}", escape(label), escape(&value))?;
        }
        if !f.related.is_empty() {
            writeln!(w, "    related: {}", f.related.join(", "))?;
        }
        writeln!(w, "    next: {}", escape(&f.next_step))?;
        writeln!(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Process, Severity};

    fn report(findings: &[Finding]) -> Report<'_> {
        let view = |count, source: &str| ViewSummary {
            count,
            source: source.into(),
            ms: 1,
            gaps: vec![],
        };
        let views = BTreeMap::from([
            ("K".to_string(), view(None, "not root")),
            ("P".to_string(), view(Some(120), "getdents64")),
            ("L".to_string(), view(None, "helper failed: boom")),
        ]);
        Report {
            views,
            connection_views: BTreeMap::new(),
            kernel_view: "skipped: not root".into(),
            elapsed_ms: 42,
            unchecked: Unchecked::default(),
            findings,
            kernel: None,
            selection: None,
            sigma: None,
        }
    }

    fn finding() -> Finding {
        Finding {
            id: "hidden-from-libc:77:0".into(),
            related: vec![],
            sigma: None,
            connection: None,
            kind: "hidden-from-libc".into(),
            severity: Severity::High,
            layer: "libc".into(),
            summary: "hidden from readdir".into(),
            process: Some(Process {
                pid: 77,
                comm: "sleep".into(),
                ..Default::default()
            }),
            ancestry: vec![],
            evidence: vec![
                ("pid".into(), "77".into()),
                ("/etc/ld.so.preload".into(), "/x.so".into()),
            ],
            next_step: "look at /etc/ld.so.preload".into(),
        }
    }

    #[test]
    fn human_report_lists_findings_then_skipped_views_then_one_summary_line() {
        let findings = [finding()];
        let mut out = Vec::new();
        write_human(&mut out, &report(&findings), &["K", "P", "L"], &[], false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("HIGH")
                && lines[0].contains("pid 77")
                && lines[0].contains("sleep")
        );
        assert!(text.contains("    /etc/ld.so.preload: /x.so\n"));
        assert!(text.contains("    next: look at /etc/ld.so.preload\n"));
        assert!(
            !text.contains("    pid: 77"),
            "the header already says the pid"
        );
        assert!(text.contains("kernel view skipped: not root\n"));
        assert!(text.contains("view L unavailable: helper failed: boom\n"));
        assert_eq!(
            *lines.last().unwrap(),
            "1 finding (views: K=skipped, P=120, L=skipped) in 42 ms"
        );
        let mut partial = report(&[]);
        partial.unchecked = Unchecked {
            count: 3,
            why: "other users' executables need root".into(),
            pids: vec![1, 2, 3],
        };
        let mut out = Vec::new();
        write_human(&mut out, &partial, &["P"], &[], false).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with(
            "0 findings (views: P=120) in 42 ms; 3 processes not fully checked \
             (other users' executables need root)\n"
        ));
        let v = serde_json::to_value(&partial).unwrap();
        assert_eq!(v["unchecked"]["count"], 3);
        assert_eq!(v["unchecked"]["pids"][2], 3);
    }

    #[test]
    fn json_report_has_views_kernel_view_and_findings() {
        let findings = [finding()];
        let mut out = Vec::new();
        write_json(&mut out, &report(&findings)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["views"]["P"]["count"], 120);
        assert!(v["views"]["K"]["count"].is_null());
        assert_eq!(v["kernel_view"], "skipped: not root");
        assert_eq!(v["findings"][0]["kind"], "hidden-from-libc");
        assert_eq!(v["findings"][0]["process"]["pid"], 77);
        assert_eq!(v["findings"][0]["evidence"][1][0], "/etc/ld.so.preload");
    }

    #[test]
    fn connection_views_and_related_findings_are_shown() {
        use crate::model::socket::{Family, Protocol, Socket, SocketOwner};
        let mut process_finding = finding();
        process_finding.related = vec!["connection-hidden-from-ss:1:99".into()];
        let mut connection_finding = finding();
        connection_finding.id = "connection-hidden-from-ss:1:99".into();
        connection_finding.related = vec![process_finding.id.clone()];
        connection_finding.connection = Some(Socket {
            netns: 1,
            family: Family::Ipv4,
            protocol: Protocol::Tcp,
            state: 1,
            inode: 99,
            local: Some("127.0.0.1:40000".parse().unwrap()),
            remote: Some("127.0.0.1:3333".parse().unwrap()),
            uid: 0,
            packet: None,
            owners: vec![SocketOwner { pid: 77, fd: 3 }],
        });
        let findings = [process_finding, connection_finding];
        let mut r = report(&findings);
        let view = |count, gaps: Vec<String>| ViewSummary {
            count,
            source: "x".into(),
            ms: 1,
            gaps,
        };
        r.connection_views = BTreeMap::from([
            ("P".to_string(), view(Some(5), vec![])),
            (
                "N".to_string(),
                view(Some(4), vec!["namespace 7: gone".into()]),
            ),
            ("S".to_string(), view(None, vec![])),
        ]);
        let mut out = Vec::new();
        write_human(&mut out, &r, &["K", "P", "L"], &["K", "P", "N", "S"], false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("    related: connection-hidden-from-ss:1:99\n"));
        assert!(text.contains("    related: hidden-from-libc:77:0\n"));
        assert!(text.contains("connection view N incomplete, could not read: namespace 7: gone\n"));
        assert!(text.contains("connection view S unavailable: x\n"));
        assert!(text.contains("\nconnection views: P=5, N=4, S=skipped\n"));
        assert!(text.lines().last().unwrap().starts_with("2 findings"));

        let mut out = Vec::new();
        write_json(&mut out, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["connection_views"]["N"]["gaps"][0], "namespace 7: gone");
        assert!(v["connection_views"]["P"].get("gaps").is_none());
        let c = &v["findings"][1];
        assert_eq!(c["id"], "connection-hidden-from-ss:1:99");
        assert_eq!(c["related"][0], "hidden-from-libc:77:0");
        assert_eq!(c["connection"]["remote"], "127.0.0.1:3333");
        assert_eq!(c["connection"]["protocol"], "tcp");
        assert_eq!(c["connection"]["owners"][0]["fd"], 3);
        assert!(v["findings"][0].get("connection").is_none());
    }
}
