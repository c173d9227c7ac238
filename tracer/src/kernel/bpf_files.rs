//! The `iter/task_file` program that lists the BPF programs, links and perf
//! events each process holds (and the function pointers behind tracer's own
//! files): its offsets from BTF and the decoding of its records.
use anyhow::Result;
use tracer_common::{BpfFileOffsets, BpfFileRecord};

use super::offsets::KernelBtf;

/// Offsets for `bpf_files_iter`, from the running kernel's BTF.
pub fn resolve(btf: &KernelBtf, own_tgid: u32) -> Result<BpfFileOffsets> {
    let f = |s, m| btf.field_offset(s, m);
    Ok(BpfFileOffsets {
        ready: 1,
        own_tgid,
        file_dentry: f("file", "f_path")? + f("path", "dentry")?,
        dentry_name: f("dentry", "d_name")? + f("qstr", "name")?,
        file_private_data: f("file", "private_data")?,
        file_f_op: f("file", "f_op")?,
        fops_iterate_shared: f("file_operations", "iterate_shared")?,
        seq_file_op: f("seq_file", "op")?,
        seq_ops_show: f("seq_operations", "show")?,
        prog_aux: f("bpf_prog", "aux")?,
        prog_aux_id: f("bpf_prog_aux", "id")?,
        link_id: f("bpf_link", "id")?,
        perf_event_prog: f("perf_event", "prog")?,
        _pad: 0,
    })
}

/// The iterator's output as records; a trailing partial record is dropped.
pub fn decode(bytes: &[u8]) -> Vec<BpfFileRecord> {
    super::events::read_records(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_resolve_from_running_kernel() {
        let Ok(btf) = super::super::offsets::load_vmlinux_btf() else {
            eprintln!("no BTF on this kernel; skipping");
            return;
        };
        let off = resolve(&btf, 7).expect("every field resolves");
        assert_eq!(off.own_tgid, 7);
        assert_ne!(off.file_private_data, off.file_f_op);
        assert!(off.dentry_name > 0 && off.link_id > 0);
    }

    #[test]
    fn decode_keeps_whole_records_only() {
        let size = std::mem::size_of::<BpfFileRecord>();
        let mut bytes = vec![0u8; size * 2 + 5];
        bytes[0] = 42;
        bytes[size + 8] = 1;
        let recs = decode(&bytes);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].tgid, 42);
        assert_eq!(recs[1].kind, 1);
    }
}
