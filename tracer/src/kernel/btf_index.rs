//! The kernel's BTF, read in place: one pass over the type section finds
//! where every type starts and the ids of the names tracer needs, and the
//! structs' members are then read straight from the bytes.
//!
//! btf-rs built its own index of every type in a second pass, and its name
//! search resolved each of vmlinux's ~140,000 types through its reader with
//! a regex: ~5 to 11 ms of every command's start-up. Only structs,
//! functions and typedefs can be wanted here, and their names are compared
//! as bytes where they sit in the string section, after a test of their
//! first 8 bytes. The layout is the kernel's uapi `btf.h`.
use std::{collections::HashSet, ops::Range};

use anyhow::{anyhow, bail, ensure, Result};

const MAGIC: u16 = 0xeb9f;
pub const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
pub const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
pub const KIND_FUNC: u32 = 12;

/// The kind in a type's info word.
fn kind_of(info: u32) -> u32 {
    (info >> 24) & 0x1f
}

/// Names wanted exactly, and prefixes wanted as families
/// (`bpf_iter_*`, `btf_trace_*`).
pub struct Wanted<'a> {
    names: HashSet<&'a [u8]>,
    /// A bit for the head (first 8 bytes, up to the NUL) of every wanted
    /// name and prefix: most of vmlinux's names fail this test from one
    /// word of the string section, before their length is known.
    heads: Box<[u64; HEAD_WORDS]>,
    /// A prefix shorter than a head cannot be told by one: then every
    /// name takes the full test.
    every_name: bool,
    prefixes: &'a [&'a str],
}

const HEAD_WORDS: usize = 64;

/// The bit of `head` in [`Wanted::heads`].
fn head_bit(head: u64) -> (usize, u64) {
    let bit = (head.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize;
    (bit / 64, 1 << (bit % 64))
}

/// A name's first 8 bytes from where it starts in the string section,
/// cut at its NUL; the section's end reads as NULs.
fn head_at(strings: &[u8], at: usize) -> u64 {
    let word = match strings.get(at..at.saturating_add(8)) {
        Some(w) => u64::from_le_bytes(w.try_into().unwrap_or_default()),
        None => {
            let mut w = [0u8; 8];
            let rest = strings.get(at..).unwrap_or_default();
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
    };
    // The lowest byte that is zero: this test flags it exactly (its false
    // positives lie only above a true zero byte).
    const LOW: u64 = 0x0101_0101_0101_0101;
    let zeros = word.wrapping_sub(LOW) & !word & (LOW << 7);
    match zeros {
        0 => word,
        z => word & ((1u64 << (z.trailing_zeros() & !7)) - 1),
    }
}

impl<'a> Wanted<'a> {
    pub fn new(names: impl IntoIterator<Item = &'a str>, prefixes: &'a [&'a str]) -> Self {
        let names: HashSet<&[u8]> = names
            .into_iter()
            .map(str::as_bytes)
            .filter(|n| !n.is_empty())
            .collect();
        let mut heads = Box::new([0u64; HEAD_WORDS]);
        for n in names
            .iter()
            .copied()
            .chain(prefixes.iter().map(|p| p.as_bytes()))
        {
            let (word, bit) = head_bit(head_at(n, 0));
            heads[word] |= bit;
        }
        Wanted {
            names,
            heads,
            every_name: prefixes.iter().any(|p| p.len() < 8),
            prefixes,
        }
    }

    /// Whether the name at `at` in `strings` may be wanted: false for
    /// nearly every name that is not.
    fn may_match(&self, strings: &[u8], at: usize) -> bool {
        let (word, bit) = head_bit(head_at(strings, at));
        self.every_name || self.heads[word] & bit != 0
    }

    fn matches(&self, name: &[u8]) -> bool {
        self.names.contains(name) || self.prefixes.iter().any(|p| name.starts_with(p.as_bytes()))
    }
}

/// BTF bytes: the kernel's file mapped (Linux 6.16 and later), or read.
pub enum BtfBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for BtfBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BtfBytes::Mapped(m) => m,
            BtfBytes::Read(v) => v,
        }
    }
}

/// A BTF blob with the start of every type known.
pub struct BtfIndex {
    bytes: BtfBytes,
    types: Range<usize>,
    strings: Range<usize>,
    /// Where type `id` starts in the type section, at `id - 1`.
    starts: Vec<u32>,
}

/// One member of a struct or union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: &'a [u8],
    pub type_id: u32,
    pub bit_offset: u32,
    /// 0 unless the member is a bitfield.
    pub bitfield_size: u32,
}

impl BtfIndex {
    /// Indexes `bytes` in one pass, and returns with the index the ids of
    /// the structs, functions and typedefs whose names `wanted` takes, in
    /// id order. An error when the bytes are not BTF as this machine's byte
    /// order writes it, or a type runs past its section.
    /// `found` is told of each wanted type (id, kind, name) the moment the
    /// pass reaches it.
    pub fn new(
        bytes: BtfBytes,
        wanted: &Wanted,
        mut found: impl FnMut(u32, u32, &[u8]),
    ) -> Result<(BtfIndex, Vec<u32>)> {
        let raw: &[u8] = &bytes;
        let magic = raw.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        ensure!(magic == Some(MAGIC), "not BTF in this byte order");
        let header = |i: usize| u32_at(raw, 4 + 4 * i).map(|v| v as usize);
        let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (header(0), header(1), header(2), header(3), header(4))
        else {
            bail!("BTF header cut short");
        };
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            let range = start..start.checked_add(len)?;
            raw.get(range.clone()).map(|_| range)
        };
        let (Some(types_range), Some(strings_range)) =
            (section(type_off, type_len), section(str_off, str_len))
        else {
            bail!("BTF sections lie past the data");
        };
        ensure!(
            types_range.len() <= u32::MAX as usize,
            "BTF type section too large"
        );
        let (types, strings) = (&raw[types_range.clone()], &raw[strings_range.clone()]);
        // vmlinux averages ~22 bytes a type.
        let mut starts = Vec::with_capacity(types.len() / 16);
        let mut ids = Vec::new();
        let mut at = 0usize;
        while at < types.len() {
            let id = starts.len() as u32 + 1;
            let (Some(name_off), Some(info)) = (u32_at(types, at), u32_at(types, at + 4)) else {
                bail!("BTF type {id} cut short");
            };
            starts.push(at as u32);
            let kind = kind_of(info);
            let vlen = (info & 0xffff) as usize;
            if matches!(kind, KIND_STRUCT | KIND_TYPEDEF | KIND_FUNC)
                && name_off != 0
                && wanted.may_match(strings, name_off as usize)
                && wanted.matches(name_at(strings, name_off))
            {
                ids.push(id);
                found(id, kind, name_at(strings, name_off));
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
                // ptr, fwd, typedef, volatile, const, restrict, func,
                // float, type_tag: none
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                other => bail!("BTF type {id} has unknown kind {other}"),
            };
            at += 12 + extra;
        }
        ensure!(at == types.len(), "the last BTF type runs past its section");
        let index = BtfIndex {
            bytes,
            types: types_range,
            strings: strings_range,
            starts,
        };
        Ok((index, ids))
    }

    fn types(&self) -> &[u8] {
        &self.bytes[self.types.clone()]
    }

    fn strings(&self) -> &[u8] {
        &self.bytes[self.strings.clone()]
    }

    /// The three words every type starts with: name offset, info, and size
    /// or type.
    fn head(&self, id: u32) -> Result<(u32, u32, u32)> {
        let at = id
            .checked_sub(1)
            .and_then(|i| self.starts.get(i as usize))
            .ok_or_else(|| anyhow!("BTF type {id} does not exist"))?;
        let types = self.types();
        let word = |n: usize| u32_at(types, *at as usize + 4 * n);
        match (word(0), word(1), word(2)) {
            (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
            _ => bail!("BTF type {id} cut short"),
        }
    }

    pub fn kind(&self, id: u32) -> Result<u32> {
        Ok(kind_of(self.head(id)?.1))
    }

    pub fn name(&self, id: u32) -> Result<&[u8]> {
        Ok(name_at(self.strings(), self.head(id)?.0))
    }

    /// A struct's or union's size in bytes.
    pub fn size(&self, id: u32) -> Result<u32> {
        Ok(self.head(id)?.2)
    }

    pub fn is_struct_or_union(&self, id: u32) -> Result<bool> {
        Ok(matches!(self.kind(id)?, KIND_STRUCT | KIND_UNION))
    }

    /// `id` with its typedef, const and volatile wrappers taken off.
    pub fn unwrapped(&self, mut id: u32) -> Result<u32> {
        // A chain longer than this is a cycle in broken BTF.
        for _ in 0..32 {
            let (_, info, inner) = self.head(id)?;
            if !matches!(kind_of(info), KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST) {
                return Ok(id);
            }
            id = inner;
        }
        bail!("BTF type {id} wraps itself")
    }

    /// The members of struct or union `id` (none for another kind).
    pub fn members(&self, id: u32) -> Result<Vec<Member<'_>>> {
        let (_, info, _) = self.head(id)?;
        if !matches!(kind_of(info), KIND_STRUCT | KIND_UNION) {
            return Ok(Vec::new());
        }
        let bitfields = info & (1 << 31) != 0;
        let first = self.starts[id as usize - 1] as usize + 12;
        let (types, strings) = (self.types(), self.strings());
        (0..(info & 0xffff) as usize)
            .map(|i| {
                let word = |n: usize| u32_at(types, first + 12 * i + 4 * n);
                let (Some(name_off), Some(type_id), Some(offset)) = (word(0), word(1), word(2))
                else {
                    bail!("BTF type {id} cut short");
                };
                let (bit_offset, bitfield_size) = match bitfields {
                    true => (offset & 0xff_ffff, offset >> 24),
                    false => (offset, 0),
                };
                Ok(Member {
                    name: name_at(strings, name_off),
                    type_id,
                    bit_offset,
                    bitfield_size,
                })
            })
            .collect()
    }

    /// The ids of the structs named `name`, by a walk of every type: for a
    /// name the first pass did not look for.
    pub fn structs_named(&self, name: &str) -> Vec<u32> {
        (1..=self.starts.len() as u32)
            .filter(|&id| {
                self.kind(id).ok() == Some(KIND_STRUCT)
                    && self.name(id).ok() == Some(name.as_bytes())
            })
            .collect()
    }
}

/// The NUL-ended name at `off`; empty past the section.
fn name_at(strings: &[u8], off: u32) -> &[u8] {
    let name = strings.get(off as usize..).unwrap_or_default();
    // Names are short: a byte loop beats memchr's set-up here.
    &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())]
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

    #[test]
    fn a_head_is_the_name_up_to_its_nul_or_eight_bytes() {
        let strings = b"\0sock\0sock_common\0bpf_iter_task\0tail";
        let head = |at| head_at(strings, at).to_le_bytes();
        assert_eq!(head(0), [0; 8]);
        assert_eq!(&head(1), b"sock\0\0\0\0");
        assert_eq!(&head(6), b"sock_com");
        // The section's end reads as NULs.
        assert_eq!(&head(strings.len() - 4), b"tail\0\0\0\0");
        assert_eq!(head(strings.len()), [0; 8]);
        // A name in a wanted set and the same name in the section agree.
        assert_eq!(head_at(b"sock", 0), head_at(strings, 1));
        let wanted = Wanted::new(["sock"], &["bpf_iter_"]);
        assert!(wanted.may_match(strings, 1));
        assert!(wanted.may_match(strings, 18));
        assert!(!wanted.may_match(strings, 6), "sock_common is not sock");
    }

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

    fn ids_named(raw: &[u8], wanted: &Wanted) -> Result<Vec<u32>> {
        BtfIndex::new(BtfBytes::Read(raw.to_vec()), wanted, |_, _, _| {}).map(|(_, ids)| ids)
    }

    #[test]
    fn members_are_read_through_wrappers_and_bitfields_are_told() {
        // strings: 0 "", 1 "outer", 7 "a", 9 "b", 11 "flag"
        let strings = b"\0outer\0a\0b\0flag\0";
        let types = [
            // 1: int
            0,
            info(1, 0),
            4,
            0x0100_0020,
            // 2: const int
            0,
            info(KIND_CONST, 0),
            1,
            // 3: typedef (unnamed here) of 2
            0,
            info(KIND_TYPEDEF, 0),
            2,
            // 4: struct outer, 12 bytes: a at 0, b at bit 64, and with
            // the bitfield flag, flag: 3 bits at bit 32
            1,
            info(KIND_STRUCT, 3) | 1 << 31,
            12,
            7,
            3,
            0,
            9,
            1,
            64,
            11,
            1,
            3 << 24 | 32,
        ];
        let raw = blob(&types, strings);
        let (btf, ids) = BtfIndex::new(
            BtfBytes::Read(raw),
            &Wanted::new(["outer"], &[]),
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(ids, [4]);
        assert_eq!(btf.name(4).unwrap(), b"outer");
        assert_eq!(btf.size(4).unwrap(), 12);
        assert_eq!(btf.unwrapped(3).unwrap(), 1);
        let m = btf.members(4).unwrap();
        let seen: Vec<_> = m
            .iter()
            .map(|m| (m.name, m.type_id, m.bit_offset, m.bitfield_size))
            .collect();
        assert_eq!(
            seen,
            [
                (&b"a"[..], 3, 0, 0),
                (&b"b"[..], 1, 64, 0),
                (&b"flag"[..], 1, 32, 3)
            ]
        );
        assert!(btf.members(1).unwrap().is_empty(), "an int has no members");
        assert!(btf.head(5).is_err() && btf.head(0).is_err());
        assert_eq!(btf.structs_named("outer"), [4]);
    }

    #[test]
    fn a_typedef_that_wraps_itself_is_an_error_not_a_hang() {
        let raw = blob(&[0, info(KIND_TYPEDEF, 0), 1], b"\0");
        let (btf, _) =
            BtfIndex::new(BtfBytes::Read(raw), &Wanted::new([], &[]), |_, _, _| {}).unwrap();
        assert!(btf.unwrapped(1).is_err());
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
