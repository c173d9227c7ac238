//! `hidden --sigma`: the `process_creation` rules over every process that
//! runs now, as if each had just started (its program, command line,
//! parent's program and command line, user, working directory).
use std::collections::BTreeSet;

use super::{fields, Category, Field, SigmaEvent, SigmaRules};
use crate::{
    model::{Finding, Process},
    table::ProcessTable,
    users::Users,
    views::Snapshot,
};

/// A finding per rule and running process it matches (tracer's own
/// processes and kernel threads left out).
pub fn hunt(rules: &mut SigmaRules, snap: &Snapshot, table: &ProcessTable) -> Vec<Finding> {
    let category = Category::ProcessCreation;
    if !rules.has_rules(category) {
        return Vec::new();
    }
    let users = Users::load();
    let own: &BTreeSet<u32> = &snap.own_pids;
    let wants_cwd = rules.uses(category, Field::CurrentDirectory);
    let wants_user = rules.uses(category, Field::User);
    let mut ev = SigmaEvent::new();
    let mut found = Vec::new();
    for probe in snap.probes.values() {
        if probe.is_defunct() || own.contains(&probe.pid) {
            continue;
        }
        let Some(p) = probe.genuine_process() else {
            continue;
        };
        if p.kernel_thread {
            continue;
        }
        let parent = table.parent_of(&p.id()).and_then(|id| table.by_id(&id));
        ev.clear();
        let user = wants_user.then(|| users.name(p.uid));
        fields::fill_process(&mut ev, p, parent, user.as_ref());
        if wants_cwd {
            fields::fill_cwd(&mut ev, p.pid);
        }
        found.extend(rules.findings(category, &ev, p, || {
            table
                .ancestry(&p.id())
                .into_iter()
                .cloned()
                .collect::<Vec<Process>>()
        }));
    }
    found
}
