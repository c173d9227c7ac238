//! The output contract. Every JSON record tracer prints is one Rust type
//! rendered through [`write_line`] or [`write_pretty`], which put `type` and
//! `schema_version` first; its JSON Schema is generated from the same type
//! (schemars). `tracer __generate DIR` writes the schemas out, and the
//! copies committed under `schemas/` must equal freshly generated ones (a
//! unit test), so a field renamed in code without a schema change fails.
//!
//! This module knows no record type: each is listed (its `type` and
//! schema) in `output::catalog`, which imports the renderers; the
//! renderers import only this.
use std::io::{self, Write};

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

/// Bumped when a field is removed, renamed or changes meaning; adding a
/// field keeps the version.
pub const SCHEMA_VERSION: u32 = 2;

/// A JSON record type: its fields (the type) and the `type` it is printed
/// with.
pub trait Record: Serialize + JsonSchema {
    const TYPE: &'static str;
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
    write_line_through(w, &mut Vec::new(), record)
}

/// [`write_line`] through `line`, a buffer the caller keeps between
/// records: serde_json writes a record token by token, and a token costs a
/// call through the sink each when written straight to it. The line then
/// reaches `w` in one write.
pub fn write_line_through<R: Record>(
    w: &mut impl Write,
    line: &mut Vec<u8>,
    record: &R,
) -> io::Result<()> {
    /// Kept between records; one huge record (a 4 MiB command line) does
    /// not pin its buffer for the rest of the run.
    const KEEP: usize = 256 * 1024;
    line.clear();
    serde_json::to_writer(&mut *line, &envelope(record))?;
    line.push(b'\n');
    let written = w.write_all(line);
    if line.capacity() > KEEP {
        *line = Vec::new();
    }
    written
}

/// The record as indented JSON (one-shot commands).
pub fn write_pretty<R: Record>(w: &mut impl Write, record: &R) -> io::Result<()> {
    // serde_json writes token by token: gathered here, they reach the
    // caller's writer (a line cap, stdout) in large pieces.
    let mut buffered = io::BufWriter::with_capacity(64 * 1024, w);
    serde_json::to_writer_pretty(&mut buffered, &envelope(record))?;
    buffered.write_all(b"\n")?;
    buffered.flush()
}

/// The schema of `R`'s fields plus the envelope's two, which are required
/// and fixed.
pub fn schema_of<R: JsonSchema>(name: &str) -> Value {
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
