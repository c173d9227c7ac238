//! Sigma rules: the user's own detections, loaded from files, compiled
//! once into one engine per log source category, and evaluated by `watch`
//! on every exec, connect and persistence write and by `hidden` on every
//! running process. A match is a [`Finding`] of kind `sigma`.
//!
//! The Rust Sigma crates (sigma-rust, rsigma-eval) evaluate JSON-like
//! events of UTF-8 strings built per event; tracer matches the host's
//! bytes (a command line need not be UTF-8) with nothing allocated per
//! event, so the evaluator is its own: [`compile`] (YAML to matchers and
//! one expression per rule) and [`engine`] (automata and evaluation).
pub mod compile;
pub mod engine;
pub mod fields;
pub mod hunt;

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

pub use fields::{Category, Field, SigmaEvent};

use self::{compile::Detection, engine::CategoryEngine};
use crate::{
    error::UserError,
    model::{Finding, HostStr, Process, Severity, SigmaField, SigmaMatch},
};

/// A rule file bigger than this is refused (a rule is a few KB).
const MAX_RULE_FILE: u64 = 4 << 20;

/// A loaded rule: what it says about itself and its compiled detection.
pub struct Rule {
    pub meta: SigmaMatch,
    pub severity: Severity,
    pub detection: Detection,
}

/// A rule file or rule that did not load.
#[derive(Clone, Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Skipped {
    pub file: String,
    /// `-` when the rule's id could not be read.
    pub rule: String,
    pub why: String,
}

impl Skipped {
    /// The one line a user sees (escaped: names and messages quote files).
    pub fn line(&self) -> String {
        crate::model::host_str::escape(&format!(
            "sigma: {}: rule {}: {}",
            self.file, self.rule, self.why
        ))
        .into_owned()
    }
}

/// What loading said: rules per category, and each one skipped.
#[derive(Clone, Debug, Default, serde::Serialize, schemars::JsonSchema)]
pub struct LoadSummary {
    pub paths: Vec<String>,
    pub files: usize,
    pub process_creation: usize,
    pub network_connection: usize,
    pub file_event: usize,
    pub skipped: Vec<Skipped>,
    pub load_ms: u64,
}

impl LoadSummary {
    pub fn loaded(&self) -> usize {
        self.process_creation + self.network_connection + self.file_event
    }

    /// `sigma: N rules loaded (process_creation A, ...), M skipped`.
    pub fn line(&self) -> String {
        format!(
            "sigma: {} rules loaded from {} files in {} ms (process_creation {}, network_connection {}, file_event {}), {} skipped",
            self.loaded(),
            self.files,
            self.load_ms,
            self.process_creation,
            self.network_connection,
            self.file_event,
            self.skipped.len()
        )
    }
}

/// Every loaded rule, one engine per category.
pub struct SigmaRules {
    engines: Vec<CategoryEngine>,
    pub summary: LoadSummary,
}

impl SigmaRules {
    /// Loads every `.yml`/`.yaml` under `paths` (files or directories).
    /// A path that cannot be read is an error; a bad rule is a
    /// [`Skipped`] and the rest load.
    pub fn load(paths: &[PathBuf]) -> Result<SigmaRules, UserError> {
        let started = std::time::Instant::now();
        let mut files = Vec::new();
        for path in paths {
            collect_files(path, &mut files).map_err(|e| {
                UserError::BadInput(format!(
                    "--sigma {}: {e}; give a Sigma rule file or a directory of them",
                    crate::model::host_str::escape(&path.display().to_string())
                ))
            })?;
        }
        let mut summary = LoadSummary {
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            files: files.len(),
            ..LoadSummary::default()
        };
        let mut by_category: Vec<Vec<Rule>> = Category::ALL.iter().map(|_| Vec::new()).collect();
        for file in &files {
            load_file(file, &mut by_category, &mut summary.skipped);
        }
        summary.process_creation = by_category[0].len();
        summary.network_connection = by_category[1].len();
        summary.file_event = by_category[2].len();
        let engines = Category::ALL
            .into_iter()
            .zip(by_category)
            .map(|(c, rules)| CategoryEngine::build(c, rules))
            .collect();
        summary.load_ms = started.elapsed().as_millis() as u64;
        Ok(SigmaRules { engines, summary })
    }

    pub fn engine(&mut self, category: Category) -> &mut CategoryEngine {
        &mut self.engines[category.index()]
    }

    pub fn has_rules(&self, category: Category) -> bool {
        !self.engines[category.index()].rules.is_empty()
    }

    pub fn uses(&self, category: Category, field: Field) -> bool {
        self.engines[category.index()].uses(field)
    }

    /// Evaluates `event` and returns a finding per matching rule, about
    /// `process` with its ancestry (asked for only on a match).
    pub fn findings(
        &mut self,
        category: Category,
        event: &SigmaEvent,
        process: &Process,
        ancestry: impl FnOnce() -> Vec<Process>,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut ancestry = Some(ancestry);
        let mut chain = Vec::new();
        self.engine(category).evaluate(event, |rule, matched| {
            if let Some(get) = ancestry.take() {
                chain = get();
            }
            let fields = matched
                .fields()
                .into_iter()
                .map(|(f, v)| SigmaField {
                    field: f.name().to_string(),
                    value: HostStr::from_bytes(v),
                })
                .collect();
            out.push(finding(rule, fields, process, &chain));
        });
        out
    }
}

/// The finding a rule's match is.
pub fn finding(
    rule: &Rule,
    matched: Vec<SigmaField>,
    process: &Process,
    ancestry: &[Process],
) -> Finding {
    let mut meta = rule.meta.clone();
    meta.matched = matched;
    let mut evidence = vec![
        (
            "sigma rule".to_string(),
            format!("{} ({})", meta.rule_id, meta.file),
        ),
        ("level".to_string(), meta.level.clone()),
    ];
    for f in &meta.matched {
        evidence.push((f.field.clone(), f.value.as_str().to_string()));
    }
    if !meta.attack.is_empty() {
        evidence.push(("att&ck".to_string(), meta.attack.join(", ")));
    }
    if !meta.falsepositives.is_empty() {
        evidence.push((
            "false positives".to_string(),
            meta.falsepositives.join("; "),
        ));
    }
    Finding {
        id: format!(
            "sigma:{}:{}:{}",
            meta.rule_id, process.pid, process.start_ticks
        ),
        kind: "sigma".into(),
        severity: rule.severity,
        layer: "sigma".into(),
        summary: format!("Sigma rule matched: {}", meta.title),
        process: Some(process.clone()),
        ancestry: ancestry.to_vec(),
        evidence,
        next_step: format!(
            "check the match against the rule's known false positives, then `tracer kill-tree {}` to see what keeps it running",
            process.pid
        ),
        connection: None,
        related: Vec::new(),
        sigma: Some(Box::new(meta)),
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        // Links to directories are not followed (no loops).
        let Ok(link) = std::fs::symlink_metadata(&entry) else {
            continue;
        };
        if link.is_dir() {
            collect_files(&entry, out)?;
        } else if entry.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(entry);
        }
    }
    Ok(())
}

fn load_file(file: &Path, by_category: &mut [Vec<Rule>], skipped: &mut Vec<Skipped>) {
    let name = file.display().to_string();
    let skip = |rule: &str, why: String| Skipped {
        file: name.clone(),
        rule: rule.to_string(),
        why,
    };
    let text = match read_text(file) {
        Ok(t) => t,
        Err(why) => return skipped.push(skip("-", why)),
    };
    let docs = match YamlLoader::load_from_str(&text) {
        Ok(d) => d,
        Err(e) => return skipped.push(skip("-", format!("not valid YAML: {e}"))),
    };
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for doc in docs {
        let id = scalar(&doc["id"]).unwrap_or_else(|| stem.clone());
        match rule(&doc, &id, &name) {
            Ok(rule) => {
                let category = Category::from_name(&rule.meta.category).expect("checked");
                by_category[category.index()].push(rule);
            }
            Err(why) => skipped.push(skip(&id, why)),
        }
    }
}

fn read_text(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_RULE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_RULE_FILE {
        return Err(format!("larger than {MAX_RULE_FILE} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

fn strings(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
        v => scalar(v).into_iter().collect(),
    }
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `level` to tracer's severity.
pub fn severity_of(level: &str) -> Option<Severity> {
    match level {
        "informational" | "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// `attack.t1059.004` → `T1059.004`.
fn attack_id(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("attack.")?;
    let t = rest.strip_prefix('t')?;
    t.chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit())
        .then(|| format!("T{}", t.to_ascii_uppercase()))
}

fn rule(doc: &Yaml, id: &str, file: &str) -> Result<Rule, String> {
    if doc.as_hash().is_none() {
        return Err("not a Sigma rule (a YAML mapping)".into());
    }
    if !matches!(doc["action"], Yaml::BadValue) {
        return Err("rule collections (`action`) are not supported".into());
    }
    if !matches!(doc["correlation"], Yaml::BadValue) {
        return Err("correlation rules are not supported".into());
    }
    let title = doc["title"].as_str().ok_or("no `title`")?.to_string();
    let logsource = &doc["logsource"];
    let product = logsource["product"].as_str().unwrap_or("");
    let category_name = logsource["category"].as_str().unwrap_or("");
    if product != "linux" {
        return Err(format!(
            "logsource product `{product}`: tracer runs `product: linux` rules"
        ));
    }
    let category = Category::from_name(category_name).ok_or_else(|| {
        format!(
            "logsource category `{category_name}`: tracer runs process_creation, network_connection and file_event"
        )
    })?;
    let level = doc["level"].as_str().unwrap_or("medium").to_string();
    let severity = severity_of(&level).ok_or_else(|| format!("unknown level `{level}`"))?;
    let detection = compile::detection(&doc["detection"], category)?;
    let expr = detection.expr.as_ref().expect("compiled with a condition");
    // With only the fields tracer has unknown, can the condition hold?
    let usable = expr.eval3(&|i| {
        let leaf = &detection.leaves[i as usize];
        match leaf.field {
            Some(_) => None,
            None => Some(leaf.on_absent()),
        }
    });
    if usable == Some(false) {
        let absent: Vec<&str> = detection
            .leaves
            .iter()
            .filter(|l| l.field.is_none())
            .map(|l| l.field_name.as_str())
            .collect();
        return Err(format!(
            "unusable: it can only match on fields tracer does not have in {category_name} ({})",
            absent.join(", ")
        ));
    }
    let tags = strings(&doc["tags"]);
    let attack = tags.iter().filter_map(|t| attack_id(t)).collect();
    Ok(Rule {
        meta: SigmaMatch {
            rule_id: id.to_string(),
            title,
            level,
            status: scalar(&doc["status"]),
            tags,
            attack,
            author: scalar(&doc["author"]),
            references: strings(&doc["references"]),
            falsepositives: strings(&doc["falsepositives"]),
            file: file.to_string(),
            category: category_name.to_string(),
            matched: Vec::new(),
        },
        severity,
        detection,
    })
}

impl Detection {
    /// With every literal absent the condition is false: the rule need be
    /// evaluated only when one of its literals occurs.
    pub fn triggered_by_literals(&self) -> bool {
        let Some(expr) = &self.expr else { return true };
        expr.eval3(&|i| {
            let leaf = &self.leaves[i as usize];
            match leaf.field {
                None => Some(leaf.on_absent()),
                Some(_) if leaf.literal_only() => Some(false),
                Some(_) => None,
            }
        }) == Some(false)
    }
}

#[cfg(test)]
mod tests;
