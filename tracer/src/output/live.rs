//! watch's `finding` record: a finding raised while watch runs (an exec
//! that breaks a rule, a rename, a write to a persistence file...), with
//! the chain and the kill tree tracer would propose, as a JSON line or a
//! human block.
use std::io::{self, Write};

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    model::{host_str::escape, Finding},
    output::{
        events::{EventWriter, KillPlanSummary, ProcessOut},
        style,
    },
};

/// One finding as watch prints it. The fields of a `hidden` finding
/// (`kind` is the rule that fired, `ancestry` the chain, nearest parent
/// first), plus when, which event raised it, and the proposed kill tree.
/// Inside `hidden` reports the same record appears without the watch-only
/// fields.
#[derive(Serialize, JsonSchema)]
pub struct FindingOut<'a> {
    /// Wall-clock time the finding was raised, RFC 3339 UTC (watch only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The event that raised it: `exec`, `rename`, ... (watch only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    #[serde(flatten)]
    pub finding: &'a Finding,
    /// The kill tree tracer would propose for the process (watch only;
    /// absent when the process is gone or may not be stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_tree: Option<KillPlanSummary>,
}

impl<W: Write> EventWriter<W> {
    /// A finding: a JSON line, or a block of human lines (header, summary,
    /// evidence, chain, next step, kill tree).
    pub fn finding(&mut self, f: &FindingOut, chain: &[ProcessOut]) -> io::Result<()> {
        if self.json {
            return self.json_line(f);
        }
        let finding = f.finding;
        let (pid, comm) =
            finding
                .process
                .as_ref()
                .map_or(("-".to_string(), "-".to_string()), |p| {
                    let place = super::events::placement_text(
                        p.namespaces.as_ref(),
                        p.container.as_deref(),
                    );
                    (format!("{}{place}", p.pid), p.comm.escaped().into_owned())
                });
        if let Some(t) = &f.timestamp {
            write!(self.out, "{t} ")?;
        }
        writeln!(
            self.out,
            "FINDING [{}] {} pid={} {}: {}",
            style::severity(finding.severity, false, self.colour),
            escape(&finding.kind),
            pid,
            comm,
            escape(&finding.summary)
        )?;
        for (label, value) in &finding.evidence {
            let value = super::bounded::evidence(label, value, finding.process.as_ref());
            writeln!(self.out, "        {}: {}", escape(label), escape(&value))?;
        }
        self.chain_block(chain)?;
        writeln!(self.out, "        next: {}", escape(&finding.next_step))?;
        self.kill_tree_line(f.kill_tree.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Process, Severity};

    fn finding() -> Finding {
        Finding {
            id: "kernel-thread-name:42:7".into(),
            kind: "kernel-thread-name".into(),
            severity: Severity::High,
            layer: "masquerade".into(),
            summary: "renamed itself \u{1b}[2J".into(),
            process: Some(Process {
                pid: 42,
                comm: "kworker/0:2".into(),
                start_ticks: 7,
                ..Default::default()
            }),
            ancestry: Vec::new(),
            evidence: vec![("old name".into(), "bash".into())],
            next_step: "look".into(),
            connection: None,
            related: Vec::new(),
            sigma: None,
        }
    }

    #[test]
    fn human_block_escapes_and_json_line_carries_the_watch_fields() {
        let f = finding();
        let out = FindingOut {
            timestamp: Some("2026-01-01T00:00:00Z".into()),
            event: Some("rename"),
            finding: &f,
            kill_tree: Some(KillPlanSummary {
                command: "tracer kill-tree 42 --kill".into(),
                pids: vec![42],
                persistence: vec![],
            }),
        };
        let mut human = EventWriter::new(Vec::new(), false);
        human.finding(&out, &[]).unwrap();
        let text = String::from_utf8(human.get_mut().clone()).unwrap();
        assert!(text.starts_with(
            "2026-01-01T00:00:00Z FINDING [high] kernel-thread-name pid=42 kworker/0:2: renamed itself \\x1b[2J\n"
        ));
        assert!(text.contains("        old name: bash\n"));
        assert!(text.contains("stop it: tracer kill-tree 42 --kill"));
        assert!(!text.contains('\u{1b}'));

        let mut json = EventWriter::new(Vec::new(), true);
        json.finding(&out, &[]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(json.get_mut()).unwrap();
        assert_eq!(v["type"], "finding");
        assert_eq!(v["event"], "rename");
        assert_eq!(v["kind"], "kernel-thread-name");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["process"]["pid"], 42);
        assert_eq!(v["kill_tree"]["pids"][0], 42);
    }
}
