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

use crate::{model::Finding, output::style};

/// One view's contribution, as the report shows it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ViewSummary {
    /// Processes (or PIDs) the view listed; `None` when it was not taken.
    pub count: Option<usize>,
    /// Where the view came from, or why it is missing.
    pub source: String,
    /// How long taking it took.
    pub ms: u64,
}

/// A findings report.
#[derive(Serialize, JsonSchema)]
pub struct Report<'a> {
    /// By view letter: K, P, L, S (S2 for a second ps), D.
    pub views: BTreeMap<String, ViewSummary>,
    /// `used`, or `skipped: <why>`.
    pub kernel_view: String,
    pub elapsed_ms: u64,
    pub findings: &'a [Finding],
}

pub fn write_json(w: &mut impl Write, report: &Report) -> io::Result<()> {
    super::schema::write_pretty(w, report)
}

/// The findings, then a note for each missing view, then one summary line;
/// severities in colour when `colour` is on (see `style::colour_for`).
pub fn write_human(
    w: &mut impl Write,
    report: &Report,
    view_order: &[&str],
    colour: bool,
) -> io::Result<()> {
    write_findings_styled(w, report.findings, colour)?;
    if let Some(why) = report.kernel_view.strip_prefix("skipped: ") {
        writeln!(w, "kernel view skipped: {why}")?;
    }
    for (letter, view) in &report.views {
        if view.count.is_none() && letter != "K" {
            writeln!(w, "view {letter} unavailable: {}", view.source)?;
        }
    }
    let counts: Vec<String> = view_order
        .iter()
        .filter_map(|l| report.views.get(*l).map(|v| (l, v)))
        .map(|(l, v)| match v.count {
            Some(n) => format!("{l}={n}"),
            None => format!("{l}=skipped"),
        })
        .collect();
    let n = report.findings.len();
    writeln!(
        w,
        "{n} finding{} (views: {}) in {} ms",
        if n == 1 { "" } else { "s" },
        counts.join(", "),
        report.elapsed_ms
    )
}

/// Each finding as a block: a header line, the summary, the evidence and
/// the next step.
pub fn write_findings(w: &mut impl Write, findings: &[Finding]) -> io::Result<()> {
    write_findings_styled(w, findings, false)
}

fn write_findings_styled(w: &mut impl Write, findings: &[Finding], colour: bool) -> io::Result<()> {
    for f in findings {
        // Padded before colouring: escape codes have no width.
        let severity = format!("{:<8}", f.severity.to_string().to_uppercase());
        let severity = severity.replacen(
            f.severity.to_string().to_uppercase().as_str(),
            &style::severity(f.severity, true, colour),
            1,
        );
        let (pid, comm) = f.process.as_ref().map_or((String::from("-"), "-"), |p| {
            (p.pid.to_string(), p.comm.as_str())
        });
        writeln!(
            w,
            "{severity} {:<10} pid {:<7} {:<16} {}",
            f.layer, pid, comm, f.kind
        )?;
        writeln!(w, "    {}", f.summary)?;
        for (label, value) in f.evidence.iter().filter(|(l, _)| l != "pid") {
            writeln!(w, "    {label}: {value}")?;
        }
        writeln!(w, "    next: {}", f.next_step)?;
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
        };
        let views = BTreeMap::from([
            ("K".to_string(), view(None, "not root")),
            ("P".to_string(), view(Some(120), "getdents64")),
            ("L".to_string(), view(None, "helper failed: boom")),
        ]);
        Report {
            views,
            kernel_view: "skipped: not root".into(),
            elapsed_ms: 42,
            findings,
        }
    }

    fn finding() -> Finding {
        Finding {
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
        write_human(&mut out, &report(&findings), &["K", "P", "L"], false).unwrap();
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
}
