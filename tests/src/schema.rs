//! Every JSON record a test reads from tracer is checked against the
//! shipped schema its `type` names (`schemas/` in the workspace, generated
//! from tracer's Rust types), with a maintained validator (jsonschema).
//! A record type without a schema fails too: add it to the `records!` list
//! in tracer's `output::schema`.
use std::{collections::HashMap, fs, sync::OnceLock};

use jsonschema::Validator;
use serde_json::Value;

use crate::workspace_root;

/// Validators by record type, from every `schemas/*.schema.json`.
fn validators() -> &'static HashMap<String, Validator> {
    static VALIDATORS: OnceLock<HashMap<String, Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let dir = workspace_root().join("schemas");
        let mut map = HashMap::new();
        for entry in fs::read_dir(&dir).expect("schemas/ in the workspace") {
            let path = entry.unwrap().path();
            let schema: Value = serde_json::from_slice(&fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            let kind = schema["properties"]["type"]["const"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no fixed type", path.display()))
                .to_string();
            let validator = jsonschema::validator_for(&schema)
                .unwrap_or_else(|e| panic!("{}: not a valid schema: {e}", path.display()));
            map.insert(kind, validator);
        }
        map
    })
}

/// The record types the shipped schemas describe.
pub fn known_types() -> Vec<String> {
    let mut kinds: Vec<String> = validators().keys().cloned().collect();
    kinds.sort();
    kinds
}

/// Panics, naming every error, unless `record` matches the schema of its
/// `type`.
pub fn check(record: &Value) {
    let kind = record["type"]
        .as_str()
        .unwrap_or_else(|| panic!("a tracer record without a type: {record}"));
    let validator = validators().get(kind).unwrap_or_else(|| {
        panic!(
            "no schema for record type `{kind}`: add it to tracer's output::schema records! list"
        )
    });
    let errors: Vec<String> = validator
        .iter_errors(record)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "a `{kind}` record does not match schemas/{kind}.schema.json: {errors:?}\nrecord: {record}"
    );
}
