//! The output contract. Every JSON record tracer prints is one Rust type
//! rendered through [`write_line`] or [`write_pretty`], which put `type` and
//! `schema_version` first; its JSON Schema is generated from the same type
//! (schemars). `tracer __generate DIR` writes the schemas out, and the
//! copies committed under `schemas/` must equal freshly generated ones (a
//! unit test), so a field renamed in code without a schema change fails.
//!
//! Adding a record type is one line in the `records!` list below.
use std::io::{self, Write};

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    commands::status::Status,
    output::{
        events::{AlertOut, ConnectOut, ExecOut, LossOut, StartOut, SummaryOut},
        findings::Report,
        live::FindingOut,
        net::NetReport,
    },
    respond::{plan::RelativesAlive, respawn::RespawnReport, Execution, KillPlan, PlanMember},
};

/// Bumped when a field is removed, renamed or changes meaning; adding a
/// field keeps the version.
pub const SCHEMA_VERSION: u32 = 1;

/// A JSON record type: its fields (the type) and the `type` it is printed
/// with.
pub trait Record: Serialize + JsonSchema {
    const TYPE: &'static str;
}

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
}

/// The record with `type` and `schema_version` in front of its own fields.
#[derive(Serialize)]
struct Envelope<'a, R> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema_version: u32,
    #[serde(flatten)]
    record: &'a R,
}

fn envelope<R: Record>(record: &R) -> Envelope<'_, R> {
    Envelope {
        kind: R::TYPE,
        schema_version: SCHEMA_VERSION,
        record,
    }
}

/// The record as one JSON line.
pub fn write_line<R: Record>(w: &mut impl Write, record: &R) -> io::Result<()> {
    serde_json::to_writer(&mut *w, &envelope(record))?;
    w.write_all(b"\n")
}

/// The record as indented JSON (one-shot commands).
pub fn write_pretty<R: Record>(w: &mut impl Write, record: &R) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, &envelope(record))?;
    w.write_all(b"\n")
}

/// The schema of `R`'s fields plus the envelope's two, which are required
/// and fixed.
fn schema_of<R: JsonSchema>(name: &str) -> Value {
    // Records are written, never read: optional is what may be left out.
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<R>().to_value();
    let object = schema
        .as_object_mut()
        .expect("a struct's schema is an object");
    object.insert(
        "$id".into(),
        json!(format!("tracer/{name}.v{SCHEMA_VERSION}.json")),
    );
    object.insert("title".into(), json!(format!("tracer `{name}` record")));
    let properties = object
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("properties is an object");
    properties.insert(
        "type".into(),
        json!({ "const": name, "description": "The record type." }),
    );
    properties.insert(
        "schema_version".into(),
        json!({ "const": SCHEMA_VERSION, "description": "Version of the output contract (bumped when a field is removed, renamed or changes meaning)." }),
    );
    let required = object
        .entry("required")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("required is an array");
    required.retain(|r| r != "type" && r != "schema_version");
    required.insert(0, json!("schema_version"));
    required.insert(0, json!("type"));
    schema
}

/// The file name a record type's schema is shipped under.
pub fn file_name(kind: &str) -> String {
    format!("{kind}.schema.json")
}

/// Text of a schema file: indented, with a final newline.
pub fn file_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a Value always serializes");
    text.push('\n');
    text
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

    use super::*;
    use crate::model::{Finding, Process, Severity};

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
             `TRACER_UPDATE_SCHEMAS=1 cargo test -p tracer --lib output::schema` and commit schemas/"
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
            text.starts_with(r#"{"type":"finding","schema_version":1,"id":"masquerade:1:0""#),
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
