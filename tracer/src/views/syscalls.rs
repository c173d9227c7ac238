//! Syscall dispatch, read from kernel memory: every `sys_call_table` entry
//! (where kallsyms has the table, whether or not the kernel still
//! dispatches through it) and every direct call and jump in the
//! `x64_sys_call` dispatcher (Linux 6.9 and its backports). Module rootkits
//! patch one or the other; each entry and branch must land on a system
//! call's `__x64_sys_*` function in kernel text. Anything else is a
//! [`PointerCheck`] that names where it points (symbol and module).
use std::{
    collections::{BTreeSet, HashMap},
    ops::Range,
};

use iced_x86::{Decoder, DecoderOptions, FlowControl};

use super::{
    kallsyms::Kallsyms,
    kernel_hooks::{PointerCheck, Verdict},
};
use crate::kernel::kmem::KernelMemory;

/// x86-64 system call names by number (`-`: unassigned).
const NAMES: &str = include_str!("syscall_names_x86_64.txt");
/// The dispatcher is a few KiB; a symbol gap larger than this is not it.
const MAX_DISPATCHER: u64 = 256 * 1024;
/// More entries than any kernel's table has.
const MAX_ENTRIES: usize = 1024;

/// The system call names, by number.
pub fn names() -> Vec<Option<&'static str>> {
    NAMES
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| (l != "-").then_some(l))
        .collect()
}

/// The system call a function implements, by the kernel's naming: the
/// dispatcher may call `__x64_sys_NAME`, or (where the compiler inlined the
/// wrapper or folded identical code) `__do_sys_NAME`, `__se_sys_NAME` or
/// the `__ia32_sys_NAME` twin.
fn syscall_base(name: &str) -> Option<&str> {
    ["__x64_sys_", "__ia32_sys_", "__do_sys_", "__se_sys_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .filter(|base| !base.is_empty())
}

/// What this kernel's syscall functions are, from kallsyms.
struct Syscalls<'k> {
    ksyms: &'k Kallsyms,
    text: Range<u64>,
    /// `__x64_sys_NAME` -> address.
    functions: HashMap<&'k str, u64>,
    names: Vec<Option<&'static str>>,
}

impl<'k> Syscalls<'k> {
    fn new(ksyms: &'k Kallsyms, text: Range<u64>) -> Self {
        Syscalls {
            ksyms,
            text,
            functions: ksyms.with_prefix("__x64_sys_").collect(),
            names: names(),
        }
    }

    /// The function system call `nr` should reach, when this kernel has it.
    fn function_of(&self, nr: usize) -> Option<(String, u64)> {
        let name = format!("__x64_sys_{}", self.names.get(nr).copied().flatten()?);
        let addr = *self.functions.get(name.as_str())?;
        Some((name, addr))
    }

    /// How many entries this kernel's table has: one past the highest
    /// number whose function it has (`__NR_syscalls`).
    fn count(&self) -> usize {
        (0..self.names.len())
            .rev()
            .find(|&nr| self.function_of(nr).is_some())
            .map_or(0, |nr| nr + 1)
    }

    /// Whether `addr` is the start of a system call function (or of the
    /// "not implemented" one), or of the return and retpoline thunks the
    /// dispatcher's compiled code jumps through.
    fn is_dispatch_target(&self, addr: u64) -> bool {
        let Some((name, 0)) = self.ksyms.symbol_at(addr) else {
            return false;
        };
        let name = name.strip_prefix("__pfx_").unwrap_or(name);
        syscall_base(name).is_some()
            || name.ends_with("ni_syscall")
            || name.starts_with("__x86_return_thunk")
            || name.starts_with("__x86_indirect_")
            || name.starts_with("srso_")
            || name.starts_with("retbleed_")
            || name.starts_with("zen_untrain_ret")
            || name == "entry_untrain_ret"
    }

    fn check(&self, what: String, expected: &str, addr: u64, verdict: Verdict) -> PointerCheck {
        PointerCheck {
            what,
            expected: expected.to_string(),
            address: format!("{addr:#x}"),
            points_to: self.ksyms.describe(addr),
            verdict,
        }
    }

    /// One table entry: a system call function in kernel text. Which one
    /// is not checked against the number's name: the table's entry points
    /// differ from the names on purpose (`stat` is `sys_newstat`,
    /// `sendfile` is `sys_sendfile64`, `uselib` on 64-bit is
    /// `ni_syscall`), and a rootkit's entry leads out of kernel text or into
    /// something that is no system call at all.
    fn table_entry(&self, nr: usize, addr: u64) -> Option<PointerCheck> {
        let name = self.names.get(nr).copied().flatten().unwrap_or("?");
        let what = format!("sys_call_table[{nr}] ({name})");
        let expected = self
            .function_of(nr)
            .map_or("a system call function".to_string(), |(n, _)| n);
        let verdict = if !self.text.contains(&addr) {
            Verdict::OutsideKernelText
        } else if self.is_dispatch_target(addr) {
            return None;
        } else {
            Verdict::OtherKernelFunction
        };
        Some(self.check(what, &expected, addr, verdict))
    }
}

/// What the dispatch checks found: the anomalies, and one line each for
/// what was checked or could not be.
#[derive(Default)]
pub struct Dispatch {
    pub anomalies: Vec<PointerCheck>,
    /// Modules found in memory next to where patched entries point (they
    /// may be on no list: the kernel checks compare).
    pub modules: Vec<super::module_memory::FoundModule>,
    pub notes: Vec<String>,
}

/// Checks the syscall table and the dispatcher of the running kernel.
pub fn check(memory: Result<&KernelMemory, &str>, ksyms: &Kallsyms) -> Dispatch {
    let mut out = Dispatch::default();
    let table = ksyms.addr_of("sys_call_table");
    let dispatcher = ksyms.addr_of("x64_sys_call");
    if table.is_none() && dispatcher.is_none() {
        out.notes.push(
            "syscall dispatch not checked: neither sys_call_table nor x64_sys_call is in kallsyms"
                .into(),
        );
        return out;
    }
    let memory = match memory {
        Ok(m) => m,
        Err(why) => {
            out.notes.push(format!(
                "syscall dispatch not checked: kernel memory unreadable: {why}"
            ));
            return out;
        }
    };
    let Some(text) = ksyms.kernel_text() else {
        out.notes
            .push("syscall dispatch not checked: no _stext/_etext in kallsyms".into());
        return out;
    };
    let sys = Syscalls::new(ksyms, text);
    match table {
        Some(addr) => check_table(&sys, memory, addr, &mut out),
        None => out.notes.push(
            "sys_call_table not checked: not in kallsyms (CONFIG_KALLSYMS_ALL off); \
             this kernel dispatches through x64_sys_call"
                .into(),
        ),
    }
    if let Some(addr) = dispatcher {
        check_dispatcher(&sys, memory, addr, &mut out);
    }
    name_owners(memory, &mut out);
    out
}

/// Most addresses without a symbol that get a memory scan for their module.
const MAX_SCANS: usize = 4;

/// Where a patched entry leads out of kernel text, the code belongs to a
/// module (or to something posing as one): name it from the `struct module`
/// next to that code in memory, which holds even when the module left the
/// module list and kallsyms (then the nearest kallsyms symbol below the
/// address is some other module's, and would name the wrong one).
fn name_owners(memory: &KernelMemory, out: &mut Dispatch) {
    let mut scans = 0;
    for a in out.anomalies.iter_mut() {
        if a.verdict != Verdict::OutsideKernelText {
            continue;
        }
        let Some(addr) = a
            .address
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        // Code a little below a struct module found already is its module's.
        let known = out
            .modules
            .iter()
            .find(|m| m.at > addr && m.at - addr < 4 << 20)
            .cloned();
        let found = match known {
            Some(m) => Some(m),
            None if scans < MAX_SCANS => {
                scans += 1;
                super::module_memory::module_around(memory, addr)
            }
            None => None,
        };
        if let Some(m) = found {
            a.points_to = Some(format!("code of module [{}]", m.name));
            if !out.modules.contains(&m) {
                out.modules.push(m);
            }
        }
    }
}

fn check_table(sys: &Syscalls, memory: &KernelMemory, table: u64, out: &mut Dispatch) {
    let mut entries = sys.count().min(MAX_ENTRIES);
    // Never read past the next symbol: what follows is other data.
    if let Some(next) = sys.ksyms.next_after(table) {
        entries = entries.min(((next - table) / 8) as usize);
    }
    if entries == 0 {
        out.notes.push(format!(
            "sys_call_table at {table:#x} not checked: no syscall function in kallsyms to size it by"
        ));
        return;
    }
    let bytes = match memory.read(table, entries * 8) {
        Ok(b) => b,
        Err(e) => {
            out.notes
                .push(format!("sys_call_table at {table:#x} not checked: {e:#}"));
            return;
        }
    };
    let before = out.anomalies.len();
    for (nr, entry) in bytes.chunks_exact(8).enumerate() {
        let addr = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
        out.anomalies.extend(sys.table_entry(nr, addr));
    }
    out.notes.push(format!(
        "sys_call_table at {table:#x}: {entries} entries checked, {} patched",
        out.anomalies.len() - before
    ));
}

fn check_dispatcher(sys: &Syscalls, memory: &KernelMemory, start: u64, out: &mut Dispatch) {
    let end = match sys.ksyms.next_after(start) {
        Some(end) if end - start <= MAX_DISPATCHER => end,
        _ => {
            out.notes.push(format!(
                "x64_sys_call at {start:#x} not checked: its end is not in kallsyms"
            ));
            return;
        }
    };
    let code = match memory.read(start, (end - start) as usize) {
        Ok(c) => c,
        Err(e) => {
            out.notes
                .push(format!("x64_sys_call at {start:#x} not checked: {e:#}"));
            return;
        }
    };
    let branches = branches_out(&code, start);
    let mut reached = BTreeSet::new();
    let mut bad = Vec::new();
    for b in &branches.direct {
        if sys.is_dispatch_target(b.target) {
            let base = sys
                .ksyms
                .symbol_at(b.target)
                .and_then(|(n, _)| syscall_base(n.strip_prefix("__pfx_").unwrap_or(n)));
            reached.extend(base);
        } else {
            bad.push(b);
        }
    }
    // The syscalls no remaining branch reaches are the ones a patched
    // branch was likely taken from.
    let unreached: Vec<String> = (0..sys.count())
        .filter_map(|nr| sys.function_of(nr))
        .filter(|(name, _)| syscall_base(name).is_some_and(|b| !reached.contains(b)))
        .map(|(name, _)| name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for b in &bad {
        let verdict = if sys.text.contains(&b.target) {
            Verdict::OtherKernelFunction
        } else {
            Verdict::OutsideKernelText
        };
        let expected = match unreached.as_slice() {
            [] => "a __x64_sys_* function".to_string(),
            few if few.len() <= 3 => few.join(" or "),
            many => format!(
                "one of {} __x64_sys_* functions no other branch reaches",
                many.len()
            ),
        };
        out.anomalies.push(sys.check(
            format!("x64_sys_call+{:#x} {}", b.at - start, b.kind),
            &expected,
            b.target,
            verdict,
        ));
    }
    let indirect = if branches.indirect > 0 {
        format!(
            "; {} indirect branches not followed (their targets are computed at run time)",
            branches.indirect
        )
    } else {
        String::new()
    };
    out.notes.push(format!(
        "x64_sys_call at {start:#x}: {} direct branches out checked, {} patched{indirect}",
        branches.direct.len(),
        bad.len()
    ));
}

/// A direct branch that leaves the function.
#[derive(Debug, PartialEq, Eq)]
pub struct Branch {
    /// Address of the instruction.
    pub at: u64,
    pub kind: &'static str,
    pub target: u64,
}

/// The branches of a function's code that leave it.
#[derive(Debug, Default)]
pub struct Branches {
    pub direct: Vec<Branch>,
    pub indirect: usize,
}

/// Decodes `code` (a function at `start`) and lists the direct calls and
/// jumps that leave it, and how many indirect ones it has. Undecodable
/// bytes are stepped over like any other instruction.
pub fn branches_out(code: &[u8], start: u64) -> Branches {
    let end = start + code.len() as u64;
    let mut out = Branches::default();
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    for insn in &mut decoder {
        let kind = match insn.flow_control() {
            FlowControl::Call => "call",
            FlowControl::UnconditionalBranch => "jmp",
            FlowControl::ConditionalBranch => "jcc",
            FlowControl::IndirectBranch | FlowControl::IndirectCall => {
                out.indirect += 1;
                continue;
            }
            _ => continue,
        };
        let target = insn.near_branch_target();
        if target != 0 && !(start..end).contains(&target) {
            out.direct.push(Branch {
                at: insn.ip(),
                kind,
                target,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_numbered_from_zero() {
        let n = names();
        assert_eq!(n[0], Some("read"));
        assert_eq!(n[217], Some("getdents64"));
        assert_eq!(n[62], Some("kill"));
        assert_eq!(n[400], None);
        assert_eq!(n[462], Some("mseal"));
    }

    // A dispatcher in the shape compilers emit: compare, branch, call the
    // syscall's function, return through a thunk.
    #[test]
    fn branches_leaving_the_function_are_listed() {
        let start = 0xffff_ffff_8100_0000u64;
        let mut code = Vec::new();
        // cmp edi, 0xd9 ; je +5 (inside)
        code.extend([0x81, 0xff, 0xd9, 0x00, 0x00, 0x00, 0x74, 0x05]);
        // call rel32 -> start + 0x1000
        let rel = |at: usize, to: u64| ((to as i64) - (start as i64 + at as i64 + 5)) as i32;
        code.push(0xe8);
        code.extend(rel(code.len() - 1, start + 0x1000).to_le_bytes());
        // jmp rel32 -> a module address
        code.push(0xe9);
        code.extend(rel(code.len() - 1, 0xffff_ffff_c000_0010).to_le_bytes());
        // jmp rax (indirect)
        code.extend([0xff, 0xe0]);
        let b = branches_out(&code, start);
        assert_eq!(b.indirect, 1);
        assert_eq!(
            b.direct,
            vec![
                Branch {
                    at: start + 8,
                    kind: "call",
                    target: start + 0x1000
                },
                Branch {
                    at: start + 13,
                    kind: "jmp",
                    target: 0xffff_ffff_c000_0010
                },
            ]
        );
    }

    #[test]
    fn table_entries_are_judged_against_their_own_function() {
        let k = Kallsyms::parse(
            b"ffffffff81000000 T _stext\n\
              ffffffff81100000 T __x64_sys_read\n\
              ffffffff81100100 T __x64_sys_write\n\
              ffffffff81100200 T __x64_sys_ni_syscall\n\
              ffffffff82000000 T _etext\n\
              ffffffffc0100000 t evil_read\t[rootkit]\n"
                .to_vec(),
        );
        let sys = Syscalls::new(&k, k.kernel_text().unwrap());
        assert_eq!(sys.count(), 2);
        assert!(sys.table_entry(0, 0xffffffff81100000).is_none());
        // Another system call's function: entry points differ from names
        // (stat is sys_newstat), so that is not a patch.
        assert!(sys.table_entry(0, 0xffffffff81100100).is_none());
        // The middle of a function is.
        let mid = sys.table_entry(0, 0xffffffff81100010).unwrap();
        assert_eq!(mid.verdict, Verdict::OtherKernelFunction);
        assert_eq!(mid.points_to.as_deref(), Some("__x64_sys_read+0x10"));
        let hooked = sys.table_entry(1, 0xffffffffc0100000).unwrap();
        assert_eq!(hooked.verdict, Verdict::OutsideKernelText);
        assert_eq!(hooked.points_to.as_deref(), Some("evil_read [rootkit]"));
        assert!(hooked.what.contains("sys_call_table[1] (write)"));
        // An unimplemented number goes to ni_syscall.
        assert!(sys.table_entry(2, 0xffffffff81100200).is_none());
    }
}
