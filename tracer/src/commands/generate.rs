//! `tracer __generate DIR`: what the package ships beside the binary,
//! generated from the code so it never drifts: `DIR/man` (section 1 pages),
//! `DIR/completions` (bash, zsh, fish) and `DIR/schemas` (JSON Schemas).
use std::path::Path;

use anyhow::{Context, Result};

use crate::{
    error::exit,
    output::{catalog, manual},
};

pub fn run(dir: &Path) -> Result<i32> {
    let write = |what: &str, result: std::io::Result<()>| {
        result.with_context(|| format!("writing {what} under {}", dir.display()))
    };
    write("man pages", manual::write_man_pages(&dir.join("man")))?;
    write(
        "completions",
        manual::write_completions(&dir.join("completions")),
    )?;
    write("schemas", catalog::write_all(&dir.join("schemas")))?;
    Ok(exit::OK)
}
