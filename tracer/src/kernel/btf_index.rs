//! The type ids of the names tracer needs, found in one pass over the raw
//! type section of the kernel's BTF.
//!
//! btf-rs's name search resolves every type of vmlinux (~140,000) through
//! its reader and runs a regex on each name: ~5 to 11 ms of every command's
//! start-up. Only structs, functions and typedefs can be wanted here, and
//! their names are compared as bytes, after a first-byte and length check,
//! where they sit in the string section. The layout is the kernel's uapi `btf.h`.
use std::collections::HashSet;

use anyhow::{bail, ensure, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;

/// Names wanted exactly, and prefixes wanted as families
/// (`bpf_iter_*`, `btf_trace_*`).
pub struct Wanted<'a> {
    names: HashSet<&'a [u8]>,
    /// By first byte, bit n set: some exact name of n bytes starts with
    /// it (bit 63: 63 bytes or more). Most names fail here, unhashed.
    shapes: Box<[u64; 256]>,
    prefixes: &'a [&'a str],
}

fn shape_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl<'a> Wanted<'a> {
    pub fn new(names: impl IntoIterator<Item = &'a str>, prefixes: &'a [&'a str]) -> Self {
        let names: HashSet<&[u8]> = names
            .into_iter()
            .map(str::as_bytes)
            .filter(|n| !n.is_empty())
            .collect();
        let mut shapes = Box::new([0u64; 256]);
        for n in &names {
            shapes[n[0] as usize] |= shape_bit(n.len());
        }
        Wanted {
            names,
            shapes,
            prefixes,
        }
    }

    fn matches(&self, name: &[u8]) -> bool {
        let Some(&first) = name.first() else {
            return false;
        };
        (self.shapes[first as usize] & shape_bit(name.len()) != 0 && self.names.contains(name))
            || self
                .prefixes
                .iter()
                .any(|p| p.as_bytes().first() == Some(&first) && name.starts_with(p.as_bytes()))
    }
}

/// The ids of the structs, functions and typedefs whose names `wanted`
/// takes, in id order. An error when the bytes are not BTF as this
/// machine's byte order writes it, or a type runs past its section.
pub fn ids_named(raw: &[u8], wanted: &Wanted) -> Result<Vec<u32>> {
    let magic = raw.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    ensure!(magic == Some(MAGIC), "not BTF in this byte order");
    let header = |i: usize| u32_at(raw, 4 + 4 * i).map(|v| v as usize);
    let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
        (header(0), header(1), header(2), header(3), header(4))
    else {
        bail!("BTF header cut short");
    };
    let types = hdr_len
        .checked_add(type_off)
        .and_then(|start| Some(start..start.checked_add(type_len)?));
    let strings = hdr_len
        .checked_add(str_off)
        .and_then(|start| Some(start..start.checked_add(str_len)?));
    let (Some(types), Some(strings)) = (types, strings) else {
        bail!("BTF sections overflow");
    };
    let (Some(types), Some(strings)) = (raw.get(types), raw.get(strings)) else {
        bail!("BTF sections lie past the data");
    };
    let mut ids = Vec::new();
    let (mut at, mut id) = (0usize, 1u32);
    while at < types.len() {
        let (Some(name_off), Some(info)) = (u32_at(types, at), u32_at(types, at + 4)) else {
            bail!("BTF type {id} cut short");
        };
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        if matches!(kind, KIND_STRUCT | KIND_TYPEDEF | KIND_FUNC) && name_off != 0 {
            let name = strings.get(name_off as usize..).unwrap_or_default();
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if wanted.matches(name) {
                ids.push(id);
            }
        }
        let extra = match kind {
            // int: one word of encoding
            1 => 4,
            // array: element type, index type, count
            3 => 12,
            // struct, union, datasec, enum64: three words a member
            4 | 5 | 15 | 19 => 12 * vlen,
            // enum, func_proto: two words a member
            6 | 13 => 8 * vlen,
            // var, decl_tag: one word
            14 | 17 => 4,
            // ptr, fwd, typedef, volatile, const, restrict, func, float,
            // type_tag: none
            2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
            other => bail!("BTF type {id} has unknown kind {other}"),
        };
        at += 12 + extra;
        id += 1;
    }
    ensure!(at == types.len(), "the last BTF type runs past its section");
    Ok(ids)
}

/// The word at `at`, in this machine's byte order; `None` past the end.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: the header, `types` (as words) and `strings`.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(MAGIC.to_ne_bytes());
        b.extend([1u8, 0]);
        let type_len = (types.len() * 4) as u32;
        for v in [24u32, 0, type_len, type_len, strings.len() as u32] {
            b.extend(v.to_ne_bytes());
        }
        types.iter().for_each(|w| b.extend(w.to_ne_bytes()));
        b.extend(strings);
        b
    }

    fn info(kind: u32, vlen: u32) -> u32 {
        (kind << 24) | vlen
    }

    #[test]
    fn finds_wanted_structs_functions_and_families_by_id_and_skips_members() {
        // strings: 0 "", 1 "task_struct", 13 "pid", 17 "bpf_iter_task", 31 "int"
        let strings = b"\0task_struct\0pid\0bpf_iter_task\0int\0";
        let types = [
            // 1: int (one extra word)
            31,
            info(1, 0),
            4,
            0x0100_0020,
            // 2: struct task_struct with two members
            1,
            info(KIND_STRUCT, 2),
            8,
            13,
            1,
            0,
            13,
            1,
            32,
            // 3: func bpf_iter_task
            17,
            info(KIND_FUNC, 0),
            0,
            // 4: a struct named "pid" is not wanted here
            13,
            info(KIND_STRUCT, 0),
            0,
        ];
        let raw = blob(&types, strings);
        let wanted = Wanted::new(["task_struct"], &["bpf_iter_"]);
        assert_eq!(ids_named(&raw, &wanted).unwrap(), [2, 3]);
    }

    #[test]
    fn refuses_what_is_not_btf_or_runs_past_its_end() {
        let wanted = Wanted::new(["task_struct"], &[]);
        assert!(ids_named(b"not btf at all, not at all", &wanted).is_err());
        assert!(ids_named(&[], &wanted).is_err());
        // A struct claiming members beyond the section.
        let raw = blob(&[1, info(KIND_STRUCT, 1000), 8], b"\0task_struct\0");
        assert!(ids_named(&raw, &wanted).is_err());
        // An unknown kind.
        let raw = blob(&[1, info(31, 0), 0], b"\0task_struct\0");
        assert!(ids_named(&raw, &wanted).is_err());
        // A name offset past the strings is no name, not a crash.
        let raw = blob(&[999, info(KIND_STRUCT, 0), 0], b"\0");
        assert_eq!(ids_named(&raw, &wanted).unwrap(), Vec::<u32>::new());
    }
}
