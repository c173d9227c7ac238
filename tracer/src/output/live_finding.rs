//! A finding raised while `watch` runs (a write to a persistence place, a
//! mount over /proc/PID): the `finding` record in JSON, or a stamped line
//! and the finding's block for people.
//!
//! Interim: the `live-rules` branch brings watch's own `finding` event
//! (with rule, chain and kill tree) and its raise function; once merged,
//! watch raises these through it and this module goes.
use std::io::{self, Write};

use crate::{
    model::{host_str::escape, Finding},
    output::{findings, schema, style},
};

pub fn write(w: &mut impl Write, json: bool, f: &Finding) -> io::Result<()> {
    if json {
        return schema::write_line(w, f);
    }
    let chain: Vec<String> = f
        .process
        .iter()
        .chain(&f.ancestry)
        .map(|p| format!("{}({})", p.comm.escaped(), p.pid))
        .collect();
    writeln!(
        w,
        "{} FINDING chain: {}",
        style::now(),
        escape(&chain.join(" < "))
    )?;
    findings::write_findings(w, std::slice::from_ref(f))
}
