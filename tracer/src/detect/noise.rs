//! Noise control for findings raised while watch runs: a finding is
//! printed at most once per id (for a process's rule, `KIND:PID:START_TICKS`:
//! once per process and rule), and findings below `--min-severity` are not
//! printed. Both are counted, never lost silently.
use std::collections::{HashSet, VecDeque};

use crate::model::{Finding, Severity};

/// (process, rule) pairs remembered; the oldest are forgotten past this,
/// so a long watch on a host that keeps tripping rules stays bounded.
const REMEMBERED: usize = 65_536;

pub struct FindingGate {
    min_severity: Severity,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl FindingGate {
    pub fn new(min_severity: Severity) -> Self {
        FindingGate {
            min_severity,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether the finding is printed: at or above the minimum severity and
    /// the first with its id.
    pub fn admit(&mut self, f: &Finding) -> bool {
        if f.severity < self.min_severity {
            return false;
        }
        if !self.seen.insert(f.id.clone()) {
            return false;
        }
        self.order.push_back(f.id.clone());
        if self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Process;

    fn finding(pid: u32, start_ticks: u64, kind: &str, severity: Severity) -> Finding {
        Finding {
            id: format!("{kind}:{pid}:{start_ticks}"),
            kind: kind.into(),
            severity,
            layer: "masquerade".into(),
            summary: String::new(),
            process: Some(Process {
                pid,
                start_ticks,
                ..Default::default()
            }),
            ancestry: Vec::new(),
            evidence: Vec::new(),
            next_step: String::new(),
            connection: None,
            related: Vec::new(),
            sigma: None,
        }
    }

    #[test]
    fn once_per_process_and_rule_and_none_below_the_minimum() {
        let mut gate = FindingGate::new(Severity::Medium);
        assert!(gate.admit(&finding(10, 5, "exe-in-temp", Severity::High)));
        assert!(!gate.admit(&finding(10, 5, "exe-in-temp", Severity::High)));
        // Another rule on the same process, and the same rule on a recycled PID.
        assert!(gate.admit(&finding(10, 5, "exe-deleted", Severity::High)));
        assert!(gate.admit(&finding(10, 9, "exe-in-temp", Severity::High)));
        assert!(!gate.admit(&finding(11, 5, "exe-deleted", Severity::Low)));
        assert!(gate.admit(&finding(11, 5, "exe-deleted", Severity::Medium)));
    }

    #[test]
    fn memory_is_bounded() {
        let mut gate = FindingGate::new(Severity::Low);
        for pid in 0..(REMEMBERED as u32 + 10) {
            assert!(gate.admit(&finding(pid, 1, "x", Severity::Low)));
        }
        assert_eq!(gate.seen.len(), REMEMBERED);
        // The oldest were forgotten; the newest are still remembered.
        assert!(gate.admit(&finding(0, 1, "x", Severity::Low)));
        assert!(!gate.admit(&finding(REMEMBERED as u32 + 9, 1, "x", Severity::Low)));
    }
}
