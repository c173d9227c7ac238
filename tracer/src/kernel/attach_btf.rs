//! The BTF that aya is given to attach programs. aya takes a program's
//! attach target (`bpf_iter_task`, `btf_trace_sched_process_exec`) only as
//! a name to look up in a parsed `aya::Btf`, and parsing all of vmlinux
//! costs ~25 ms and ~20 MB per run. The ids come from tracer's one-pass
//! BTF index instead ([`super::offsets::KernelBtf`]); this builds the smallest
//! BTF in which each of those names has its kernel id: one filler type per
//! id in between.
use anyhow::{Context, Result};
use aya::{Btf, Endianness};
use aya_obj::btf::{BtfType, Func, FuncLinkage, Ptr};

/// A function or typedef programs attach to, with its id in vmlinux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachTarget {
    pub name: String,
    pub id: u32,
    pub kind: TargetKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// `bpf_iter_*` for iterators, kernel functions for fentry.
    Func,
    /// `btf_trace_*` for BTF tracepoints.
    Typedef,
}

// BTF_KIND_* values from the kernel's uapi btf.h.
const KIND_PTR: u32 = 2;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;

/// An `aya::Btf` in which each target has its kernel id.
///
/// aya keeps the constructor of a typedef to itself, so the ids up to the
/// last typedef target come from parsing encoded bytes; the rest (the
/// iterators, fentry functions) are added to it directly, which is ~20
/// times cheaper per id than parsing: a command that attaches no BTF
/// tracepoint (`net`, `hidden`) parses nothing.
pub fn build(targets: &[AttachTarget]) -> Result<Btf> {
    let parsed_upto = targets
        .iter()
        .filter(|t| t.kind == TargetKind::Typedef)
        .map(|t| t.id)
        .max()
        .unwrap_or(0);
    let btf = match parsed_upto {
        0 => Btf::new(),
        _ => {
            let typedefs: Vec<AttachTarget> = targets
                .iter()
                .filter(|t| t.id <= parsed_upto)
                .cloned()
                .collect();
            Btf::parse(&encode(&typedefs), Endianness::default())
                .context("building the attach BTF")?
        }
    };
    let mut rest: Vec<&AttachTarget> = targets.iter().filter(|t| t.id > parsed_upto).collect();
    rest.sort_by_key(|t| t.id);
    rest.dedup_by_key(|t| t.id);
    let mut functions = Functions {
        btf,
        next_id: parsed_upto + 1,
    };
    for t in rest {
        functions.add(t)?;
    }
    Ok(functions.btf)
}

/// The attach BTF of iterators (functions only), built while the BTF
/// index finds them: the pass yields them in id order, and the fillers up
/// to each (64,000 on a 6.x kernel, ~4.6 MB that the allocator must fault
/// in) are added while the pass goes on, not after it.
pub fn build_from(found: std::sync::mpsc::Receiver<AttachTarget>) -> Result<Btf> {
    let mut functions = Functions {
        btf: Btf::new(),
        next_id: 1,
    };
    for t in found {
        functions.add(&t)?;
    }
    Ok(functions.btf)
}

/// An attach BTF grown by functions in rising id order.
struct Functions {
    btf: Btf,
    next_id: u32,
}

impl Functions {
    fn add(&mut self, t: &AttachTarget) -> Result<()> {
        anyhow::ensure!(
            t.kind == TargetKind::Func,
            "{} is a typedef: its id is built by a parse",
            t.name
        );
        anyhow::ensure!(
            t.id >= self.next_id,
            "{} (id {}) comes after id {}",
            t.name,
            t.id,
            self.next_id - 1
        );
        for _ in self.next_id..t.id {
            self.btf.add_type(BtfType::Ptr(Ptr::new(0, 0)));
        }
        let name = self.btf.add_string(&t.name);
        self.btf
            .add_type(BtfType::Func(Func::new(name, 0, FuncLinkage::Static)));
        self.next_id = t.id + 1;
        Ok(())
    }
}

/// BTF bytes: header, types, strings. Type ids count from 1; every id that
/// is not a target is a pointer to void (12 bytes, no name).
fn encode(targets: &[AttachTarget]) -> Vec<u8> {
    let mut sorted: Vec<&AttachTarget> = targets.iter().filter(|t| t.id > 0).collect();
    sorted.sort_by_key(|t| t.id);
    sorted.dedup_by_key(|t| t.id);
    let mut strings = vec![0u8];
    let mut types = Vec::new();
    let mut push = |name_off: u32, info: u32, ty: u32| {
        for word in [name_off, info, ty] {
            types.extend_from_slice(&word.to_ne_bytes());
        }
    };
    let mut next_id = 1;
    for t in sorted {
        for _ in next_id..t.id {
            push(0, KIND_PTR << 24, 0);
        }
        let name_off = strings.len() as u32;
        strings.extend_from_slice(t.name.as_bytes());
        strings.push(0);
        let kind = match t.kind {
            TargetKind::Func => KIND_FUNC,
            TargetKind::Typedef => KIND_TYPEDEF,
        };
        push(name_off, kind << 24, 0);
        next_id = t.id + 1;
    }
    const HEADER_LEN: u32 = 24;
    let mut out = Vec::with_capacity(HEADER_LEN as usize + types.len() + strings.len());
    out.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    out.extend_from_slice(&[1, 0]); // version, flags
    for word in [
        HEADER_LEN,
        0,                    // type_off
        types.len() as u32,   // type_len
        types.len() as u32,   // str_off
        strings.len() as u32, // str_len
    ] {
        out.extend_from_slice(&word.to_ne_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    out
}

#[cfg(test)]
mod tests {
    use aya_obj::btf::BtfKind;

    use super::*;

    fn target(name: &str, id: u32, kind: TargetKind) -> AttachTarget {
        AttachTarget {
            name: name.into(),
            id,
            kind,
        }
    }

    #[test]
    fn each_target_keeps_its_kernel_id_and_kind() {
        let btf = build(&[
            target("btf_trace_sched_process_exec", 40_000, TargetKind::Typedef),
            target("bpf_iter_task", 7, TargetKind::Func),
            target("bpf_iter_tcp", 123_456, TargetKind::Func),
        ])
        .unwrap();
        let id = |name, kind| btf.id_by_type_name_kind(name, kind).ok();
        assert_eq!(id("bpf_iter_task", BtfKind::Func), Some(7));
        assert_eq!(id("bpf_iter_tcp", BtfKind::Func), Some(123_456));
        assert_eq!(
            id("btf_trace_sched_process_exec", BtfKind::Typedef),
            Some(40_000)
        );
        assert_eq!(id("bpf_iter_task", BtfKind::Typedef), None);
        assert_eq!(id("bpf_iter_udp", BtfKind::Func), None);
    }

    #[test]
    fn functions_alone_need_no_parse_and_keep_their_ids() {
        let btf = build(&[
            target("bpf_iter_tcp", 64_197, TargetKind::Func),
            target("bpf_iter_task", 64_172, TargetKind::Func),
        ])
        .unwrap();
        let id = |name| btf.id_by_type_name_kind(name, BtfKind::Func).ok();
        assert_eq!(id("bpf_iter_task"), Some(64_172));
        assert_eq!(id("bpf_iter_tcp"), Some(64_197));
    }

    #[test]
    fn functions_streamed_in_id_order_keep_their_ids_and_disorder_is_an_error() {
        let streamed = |ids: [u32; 2]| {
            let (tx, rx) = std::sync::mpsc::channel();
            for (name, id) in ["bpf_iter_task", "bpf_iter_tcp"].into_iter().zip(ids) {
                tx.send(target(name, id, TargetKind::Func)).unwrap();
            }
            drop(tx);
            build_from(rx)
        };
        let btf = streamed([64_172, 64_197]).unwrap();
        let id = |name| btf.id_by_type_name_kind(name, BtfKind::Func).ok();
        assert_eq!(id("bpf_iter_task"), Some(64_172));
        assert_eq!(id("bpf_iter_tcp"), Some(64_197));
        assert!(streamed([64_197, 64_172]).is_err());
    }

    // Against the running kernel: the ids the index finds are the ids the
    // kernel accepts (the iterators of every test that loads them use
    // these), and they match a full parse.
    #[test]
    fn ids_match_a_full_parse_of_the_running_kernel() {
        let Ok(kernel) = super::super::offsets::load_vmlinux_btf() else {
            eprintln!("no BTF on this kernel; skipping");
            return;
        };
        let full = Btf::from_sys_fs().unwrap();
        let targets = kernel.attach_targets();
        assert!(targets.iter().any(|t| t.name == "bpf_iter_task_file"));
        assert!(targets
            .iter()
            .any(|t| t.name == "btf_trace_sched_process_exec"));
        let built = build(targets).unwrap();
        for t in targets {
            let kind = match t.kind {
                TargetKind::Func => BtfKind::Func,
                TargetKind::Typedef => BtfKind::Typedef,
            };
            let want = full.id_by_type_name_kind(&t.name, kind).unwrap();
            assert_eq!(
                built.id_by_type_name_kind(&t.name, kind).unwrap(),
                want,
                "{}",
                t.name
            );
        }
    }
}
