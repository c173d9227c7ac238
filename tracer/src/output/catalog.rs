//! Every JSON record type tracer prints: its `type` and its schema, in one
//! list. Adding a record type is one line in `records!` below. Kept apart
//! from `schema` (the envelope and writers) so that the renderers, which
//! write records, and this list, which names them, import each other in one
//! direction only.
use std::io;

use serde_json::Value;

use super::schema::{file_name, file_text, schema_of, Record};
use crate::{
    commands::status::Status,
    detect::sigma::LoadSummary,
    output::{
        events::{AlertOut, ConnectOut, ExecOut, LossOut, StartOut, SummaryOut},
        findings::Report,
        live::FindingOut,
        net::NetReport,
    },
    respond::{plan::RelativesAlive, respawn::RespawnReport, Execution, KillPlan, PlanMember},
};

/// Declares each record type's `type` and collects every schema.
macro_rules! records {
    ($($ty:ty => $name:literal,)*) => {
        $(impl Record for $ty {
            const TYPE: &'static str = $name;
        })*

        /// Every record type as (`type`, JSON Schema), in a stable order.
        pub fn all() -> Vec<(&'static str, Value)> {
            vec![$(($name, schema_of::<$ty>($name)),)*]
        }
    };
}

records! {
    StartOut<'_> => "start",
    ExecOut<'_> => "exec",
    ConnectOut<'_> => "connect",
    AlertOut<'_> => "alert",
    SummaryOut => "summary",
    LossOut => "loss",
    FindingOut<'_> => "finding",
    Report<'_> => "hidden",
    KillPlan => "kill-tree-plan",
    PlanMember => "kill-tree-joined",
    Execution => "kill-tree-result",
    RespawnReport => "kill-tree-respawn",
    RelativesAlive => "kill-tree-relatives",
    Status => "status",
    NetReport<'_> => "net",
    LoadSummary => "sigma",
}

/// Writes every schema into `dir`.
pub fn write_all(dir: &std::path::Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (kind, schema) in all() {
        std::fs::write(dir.join(file_name(kind)), file_text(&schema))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::{
        model::{Finding, Process, Severity},
        output::schema::write_line,
    };

    /// The committed schemas, shipped in the package.
    fn committed_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
    }

    #[test]
    fn committed_schemas_equal_the_generated_ones() {
        let dir = committed_dir();
        if std::env::var_os("TRACER_UPDATE_SCHEMAS").is_some() {
            write_all(&dir).unwrap();
        }
        let mut stale = Vec::new();
        for (kind, schema) in all() {
            let path = dir.join(file_name(kind));
            if std::fs::read_to_string(&path).ok() != Some(file_text(&schema)) {
                stale.push(path.display().to_string());
            }
        }
        let expected: Vec<String> = all().iter().map(|(k, _)| file_name(k)).collect();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !expected.contains(&name) {
                stale.push(format!("{name} (no such record type)"));
            }
        }
        assert!(
            stale.is_empty(),
            "the output contract changed: {stale:?} differ from the Rust types. If the change \
             is meant, bump SCHEMA_VERSION when a field was removed or renamed, then run \
             `TRACER_UPDATE_SCHEMAS=1 cargo test -p tracer --lib output::catalog` and commit schemas/"
        );
    }

    #[test]
    fn every_record_names_its_type_and_version_first() {
        let finding = Finding {
            id: "masquerade:1:0".into(),
            related: vec![],
            sigma: None,
            connection: None,
            kind: "masquerade".into(),
            severity: Severity::High,
            layer: "rule".into(),
            summary: "s".into(),
            process: Some(Process::default()),
            ancestry: vec![],
            evidence: vec![("exe".into(), "/tmp/x".into())],
            next_step: "n".into(),
        };
        let mut out = Vec::new();
        let record = FindingOut {
            timestamp: None,
            event: None,
            finding: &finding,
            kill_tree: None,
        };
        write_line(&mut out, &record).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(r#"{"type":"finding","schema_version":2,"id":"masquerade:1:0""#),
            "{text}"
        );
        assert!(text.ends_with("}\n") && text.lines().count() == 1);
        let value: Value = serde_json::from_str(&text).unwrap();
        let schema = all().into_iter().find(|(k, _)| *k == "finding").unwrap().1;
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let mut renamed = value.clone();
        renamed["severity"] = json!("urgent");
        assert!(!validator.is_valid(&renamed), "an unknown severity passed");
        renamed = value.clone();
        renamed.as_object_mut().unwrap().remove("schema_version");
        assert!(
            !validator.is_valid(&renamed),
            "a record without version passed"
        );
    }

    #[test]
    fn every_schema_is_valid_and_requires_type_and_version() {
        let all = all();
        let mut kinds: Vec<&str> = all.iter().map(|(k, _)| *k).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len(), "two record types share a name");
        for (kind, schema) in &all {
            jsonschema::meta::validate(schema)
                .unwrap_or_else(|e| panic!("{kind}: not a valid JSON Schema: {e}"));
            assert_eq!(schema["properties"]["type"]["const"], *kind);
            assert_eq!(schema["required"][0], "type");
            assert_eq!(schema["required"][1], "schema_version");
        }
    }
}
