//! The kernel section of a findings report: kernel-layer findings, then one
//! line per check that could not run, then a count of BPF programs.
use std::io::{self, Write};

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    model::{host_str::escape, Finding},
    output::findings::write_findings,
    views::kernel_hooks::KernelState,
};

/// Everything the kernel checks saw (JSON `kernel`). Its findings are
/// printed in this section for people, and are in the report's one
/// `findings` list in JSON.
#[derive(Serialize, JsonSchema)]
pub struct KernelSection<'a> {
    #[serde(skip)]
    pub findings: &'a [Finding],
    #[serde(flatten)]
    pub state: &'a KernelState,
}

pub fn write_human(w: &mut impl Write, k: &KernelSection) -> io::Result<()> {
    writeln!(w, "== kernel ==")?;
    write_findings(w, k.findings)?;
    for note in &k.state.notes {
        writeln!(w, "kernel: {}", escape(note))?;
    }
    let progs = &k.state.bpf.programs;
    let foreign = progs.iter().filter(|p| !p.tracer_own).count();
    let n = k.findings.len();
    writeln!(
        w,
        "kernel: {n} finding{}; {} BPF program{} loaded, {foreign} not tracer's; {} function pointer{} checked; in {} ms",
        if n == 1 { "" } else { "s" },
        progs.len(),
        if progs.len() == 1 { "" } else { "s" },
        k.state.pointers.len(),
        if k.state.pointers.len() == 1 { "" } else { "s" },
        k.state.ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::bpf::BpfProgram;

    #[test]
    fn section_lists_notes_and_counts() {
        let mut state = KernelState::default();
        state
            .notes
            .push("no kernel modules: this kernel is built without module support".into());
        state.bpf.programs = vec![
            BpfProgram {
                tracer_own: true,
                ..Default::default()
            },
            BpfProgram::default(),
        ];
        state.ms = 12;
        let mut out = Vec::new();
        write_human(
            &mut out,
            &KernelSection {
                findings: &[],
                state: &state,
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("== kernel ==\n"));
        assert!(text
            .contains("kernel: no kernel modules: this kernel is built without module support\n"));
        assert!(text.ends_with(
            "kernel: 0 findings; 2 BPF programs loaded, 1 not tracer's; 0 function pointers checked; in 12 ms\n"
        ));
    }
}
