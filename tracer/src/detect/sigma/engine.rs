//! The compiled rule set of one category, evaluated per event. Every
//! literal of every rule on a field is in one Aho-Corasick automaton
//! (one case-insensitive, one cased) scanned once per event; a rule that
//! can only match when one of its literals occurs is evaluated only when
//! one does, the others on every event. Evaluating allocates nothing.
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::{
    compile::{Detection, LitDef, ANY, END, START, WHOLE},
    fields::{Category, Field, SigmaEvent, FIELD_COUNT},
    Rule,
};

#[derive(Default)]
struct FieldScan {
    /// Case-insensitive patterns are ids `0..ci_count`, cased ones follow.
    ci: Option<AhoCorasick>,
    cs: Option<AhoCorasick>,
    ci_count: u32,
    /// Rules to evaluate when a pattern occurs, by pattern id.
    rules_of: Vec<Vec<u32>>,
}

pub struct CategoryEngine {
    pub category: Category,
    pub rules: Vec<Rule>,
    /// Per rule, its literals' pattern ids in their field's scan.
    lit_ids: Vec<Vec<u32>>,
    scans: Vec<FieldScan>,
    /// Rules evaluated on every event.
    always: Vec<u32>,
    /// Fields some rule reads.
    used: u32,
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    /// Per field, per pattern: which of ANY/START/END/WHOLE occurred.
    flags: Vec<Vec<u8>>,
    touched: Vec<Vec<u32>>,
    /// Rule marks for this event (a generation counter, never cleared).
    mark: Vec<u32>,
    generation: u32,
    candidates: Vec<u32>,
}

impl CategoryEngine {
    pub fn build(category: Category, rules: Vec<Rule>) -> CategoryEngine {
        let mut patterns: Vec<[Vec<Vec<u8>>; 2]> =
            (0..FIELD_COUNT).map(|_| [Vec::new(), Vec::new()]).collect();
        let mut index: std::collections::HashMap<(usize, bool, Vec<u8>), u32> =
            std::collections::HashMap::new();
        // First every case-insensitive literal, then the cased, so ids are final.
        let mut local: Vec<Vec<(usize, bool, u32)>> = Vec::with_capacity(rules.len());
        for rule in &rules {
            let mut ids = Vec::new();
            for lit in &rule.detection.lits {
                let LitDef {
                    field,
                    bytes,
                    cased,
                } = lit;
                let f = field.index();
                let bytes = if *cased {
                    bytes.clone()
                } else {
                    bytes.to_ascii_lowercase()
                };
                let list = &mut patterns[f][usize::from(*cased)];
                let id = *index.entry((f, *cased, bytes.clone())).or_insert_with(|| {
                    list.push(bytes);
                    list.len() as u32 - 1
                });
                ids.push((f, *cased, id));
            }
            local.push(ids);
        }
        let mut scans: Vec<FieldScan> = Vec::with_capacity(FIELD_COUNT);
        for [ci, cs] in &patterns {
            let build = |pats: &Vec<Vec<u8>>, insensitive: bool| {
                (!pats.is_empty()).then(|| {
                    AhoCorasickBuilder::new()
                        .match_kind(MatchKind::Standard)
                        .ascii_case_insensitive(insensitive)
                        .build(pats)
                        .expect("literal patterns always build")
                })
            };
            scans.push(FieldScan {
                ci: build(ci, true),
                cs: build(cs, false),
                ci_count: ci.len() as u32,
                rules_of: vec![Vec::new(); ci.len() + cs.len()],
            });
        }
        let mut lit_ids = Vec::with_capacity(rules.len());
        let mut always = Vec::new();
        let mut used = 0u32;
        for (r, (rule, ids)) in rules.iter().zip(local).enumerate() {
            let global: Vec<u32> = ids
                .iter()
                .map(
                    |&(f, cased, id)| {
                        if cased {
                            scans[f].ci_count + id
                        } else {
                            id
                        }
                    },
                )
                .collect();
            for leaf in &rule.detection.leaves {
                if let Some(f) = leaf.field {
                    used |= 1 << f.index();
                }
            }
            if rule.detection.triggered_by_literals() {
                for (lit, &g) in rule.detection.lits.iter().zip(&global) {
                    let list = &mut scans[lit.field.index()].rules_of[g as usize];
                    if list.last() != Some(&(r as u32)) {
                        list.push(r as u32);
                    }
                }
            } else {
                always.push(r as u32);
            }
            lit_ids.push(global);
        }
        let scratch = Scratch {
            flags: scans.iter().map(|s| vec![0; s.rules_of.len()]).collect(),
            touched: scans
                .iter()
                .map(|s| Vec::with_capacity(s.rules_of.len().min(64)))
                .collect(),
            mark: vec![0; rules.len()],
            generation: 0,
            candidates: Vec::with_capacity(rules.len()),
        };
        CategoryEngine {
            category,
            rules,
            lit_ids,
            scans,
            always,
            used,
            scratch,
        }
    }

    /// Some rule of this category reads `field` (so the caller fills it).
    pub fn uses(&self, field: Field) -> bool {
        self.used & (1 << field.index()) != 0
    }

    /// Calls `on_match` with each rule that matches `event`.
    pub fn evaluate(&mut self, event: &SigmaEvent, mut on_match: impl FnMut(&Rule, &Matched<'_>)) {
        if self.rules.is_empty() {
            return;
        }
        let s = &mut self.scratch;
        s.generation = s.generation.wrapping_add(1);
        if s.generation == 0 {
            s.mark.iter_mut().for_each(|m| *m = 0);
            s.generation = 1;
        }
        s.candidates.clear();
        for &r in &self.always {
            s.mark[r as usize] = s.generation;
            s.candidates.push(r);
        }
        for (f, scan) in self.scans.iter().enumerate() {
            let Some(value) = event.get(Field::ALL[f]) else {
                continue;
            };
            let len = value.len();
            for (ac, base) in [(&scan.ci, 0), (&scan.cs, scan.ci_count)] {
                let Some(ac) = ac else { continue };
                for m in ac.find_overlapping_iter(value) {
                    let id = base + m.pattern().as_u32();
                    let mut bits = ANY;
                    if m.start() == 0 {
                        bits |= START;
                    }
                    if m.end() == len {
                        bits |= END;
                    }
                    if m.start() == 0 && m.end() == len {
                        bits |= WHOLE;
                    }
                    let flag = &mut s.flags[f][id as usize];
                    if *flag == 0 {
                        s.touched[f].push(id);
                        for &r in &scan.rules_of[id as usize] {
                            if s.mark[r as usize] != s.generation {
                                s.mark[r as usize] = s.generation;
                                s.candidates.push(r);
                            }
                        }
                    }
                    *flag |= bits;
                }
            }
        }
        for &r in &s.candidates {
            let rule = &self.rules[r as usize];
            let matched = Matched {
                event,
                detection: &rule.detection,
                lit_ids: &self.lit_ids[r as usize],
                flags: &s.flags,
            };
            if matched.rule_matches() {
                on_match(rule, &matched);
            }
        }
        for (f, touched) in s.touched.iter_mut().enumerate() {
            for id in touched.drain(..) {
                s.flags[f][id as usize] = 0;
            }
        }
    }
}

/// A rule evaluated on one event: whether it matches, and which of its
/// fields did.
pub struct Matched<'a> {
    event: &'a SigmaEvent,
    detection: &'a Detection,
    lit_ids: &'a [u32],
    flags: &'a [Vec<u8>],
}

impl Matched<'_> {
    fn leaf_matches(&self, leaf_index: u32) -> bool {
        let leaf = &self.detection.leaves[leaf_index as usize];
        let Some(value) = leaf.field.and_then(|f| self.event.get(f)) else {
            return leaf.on_absent();
        };
        let lits = &self.detection.lits;
        let hit = |pat: u32, mode: u8| {
            let field = lits[pat as usize].field.index();
            self.flags[field][self.lit_ids[pat as usize] as usize] & mode != 0
        };
        let one = |alts: &Vec<super::compile::Matcher>| alts.iter().any(|m| m.matches(value, &hit));
        if leaf.all {
            leaf.values.iter().all(one)
        } else {
            leaf.values.iter().any(one)
        }
    }

    fn rule_matches(&self) -> bool {
        self.detection
            .expr
            .as_ref()
            .is_some_and(|e| e.eval(&mut |i| self.leaf_matches(i)))
    }

    /// The fields whose conditions held, with their values (once each).
    pub fn fields(&self) -> Vec<(Field, &[u8])> {
        let mut out: Vec<(Field, &[u8])> = Vec::new();
        for (i, leaf) in self.detection.leaves.iter().enumerate() {
            let Some(f) = leaf.field else { continue };
            let Some(value) = self.event.get(f) else {
                continue;
            };
            if self.leaf_matches(i as u32) && !out.iter().any(|(g, _)| *g == f) {
                out.push((f, value));
            }
        }
        out
    }
}
