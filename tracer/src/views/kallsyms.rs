//! The kernel's symbol table, read once per command: where kernel text
//! starts and ends, where a named function is, and which symbol an address
//! falls in. Used to name the helpers a BPF program calls and to check
//! kernel function pointers against the functions they should be.
//!
//! Read from the kallsyms BPF iterator where the kernel has one (6.0+):
//! the same walk as `/proc/kallsyms`, as bytes (35 against 48 ms read
//! alone here), and not through the proc file's read, which a rootkit can
//! filter.
//! `/proc/kallsyms` otherwise.
use std::{collections::HashMap, ops::Range};

use tracer_common::ksyms::KSYM_HEADER_LEN;

use crate::kernel::Kernel;

/// The symbol table: names in one buffer, symbols sorted by address.
pub struct Kallsyms {
    /// The names (and, read from the proc file, the rest of its text).
    text: Vec<u8>,
    syms: Vec<Symbol>,
    /// Owners by index: 0 is the core kernel, then modules and
    /// pseudo-modules (`[bpf]`) in order of first appearance.
    owners: Vec<String>,
    /// Where the table was read from: `iter/ksym` or `/proc/kallsyms`.
    pub source: &'static str,
}

struct Symbol {
    addr: u64,
    name: Range<usize>,
    owner: u32,
}

/// A read of the symbol table running on its own thread: it needs nothing
/// else, and is the longest of the kernel checks, so it starts as soon as
/// it can.
pub struct PendingKallsyms(std::thread::JoinHandle<Result<Kallsyms, String>>);

impl PendingKallsyms {
    /// From `kernel`'s kallsyms iterator where it has one, else from
    /// `/proc/kallsyms` (which is said in the table's `source`).
    pub fn start(kernel: Option<&mut Kernel>) -> PendingKallsyms {
        let iterator = kernel.map(|k| k.kallsyms_iterator());
        PendingKallsyms(std::thread::spawn(move || {
            let _t = crate::timings::span("kernel checks: kallsyms (a thread)");
            match iterator {
                Some(Ok(file)) => Kallsyms::read_iterator(file),
                _ => Kallsyms::read(),
            }
        }))
    }

    pub fn wait(self) -> Result<Kallsyms, String> {
        self.0
            .join()
            .unwrap_or_else(|_| Err("the kallsyms reader thread panicked".into()))
    }
}

/// Indexes owner names as symbols name them.
struct Owners {
    names: Vec<String>,
    index: HashMap<Vec<u8>, u32>,
}

impl Owners {
    fn new() -> Owners {
        Owners {
            names: vec![String::new()],
            index: HashMap::new(),
        }
    }

    fn of(&mut self, name: &[u8]) -> u32 {
        // Most symbols are the core kernel's, which has no name: no hash.
        if name.is_empty() {
            return 0;
        }
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(String::from_utf8_lossy(name).into_owned());
        self.index.insert(name.to_vec(), i);
        i
    }
}

impl Kallsyms {
    /// Reads `/proc/kallsyms` with raw reads. Fails when the file cannot be
    /// read, or shows only zero addresses (not root, or `kptr_restrict`).
    pub fn read() -> Result<Kallsyms, String> {
        let text =
            read_all("/proc/kallsyms").map_err(|e| format!("/proc/kallsyms unreadable: {e}"))?;
        let k = Kallsyms::parse(text);
        if k.syms.is_empty() {
            return Err(
                "/proc/kallsyms shows no addresses (kptr_restrict, or not root)".to_string(),
            );
        }
        Ok(k)
    }

    /// Reads the kallsyms iterator's records to the end.
    fn read_iterator(file: std::fs::File) -> Result<Kallsyms, String> {
        let bytes = crate::kernel::read_iterator(file, "ksym_iter")
            .map_err(|e| format!("the kallsyms iterator failed: {e:#}"))?;
        let k = Kallsyms::from_records(bytes);
        if k.syms.is_empty() {
            return Err("the kallsyms iterator gave no symbols".to_string());
        }
        Ok(k)
    }

    /// Parses kallsyms text; lines with a zero address are dropped.
    pub fn parse(text: Vec<u8>) -> Kallsyms {
        let mut syms = Vec::with_capacity(text.len() / 40);
        let mut owners = Owners::new();
        let mut start = 0;
        while start < text.len() {
            let end = memchr(&text[start..]).map_or(text.len(), |n| start + n);
            if let Some((addr, name, owner)) = parse_line(&text[start..end], start) {
                let owner = owners.of(owner);
                syms.push(Symbol { addr, name, owner });
            }
            start = end + 1;
        }
        Kallsyms::sorted(text, syms, owners, "/proc/kallsyms")
    }

    /// Decodes the iterator's records (`KsymHeader`: address, name and
    /// owner lengths; then the name and the owner); a record cut short
    /// ends the table.
    pub fn from_records(bytes: Vec<u8>) -> Kallsyms {
        let mut syms = Vec::with_capacity(bytes.len() / 40);
        let mut owners = Owners::new();
        let mut at = 0;
        while let Some(head) = bytes.get(at..at + KSYM_HEADER_LEN) {
            let addr = u64::from_ne_bytes(head[..8].try_into().unwrap_or_default());
            let name_len = u16::from_ne_bytes([head[8], head[9]]) as usize;
            let name = at + KSYM_HEADER_LEN..at + KSYM_HEADER_LEN + name_len;
            let owner = name.end..name.end + head[10] as usize;
            let Some(owner_name) = bytes.get(owner.clone()) else {
                break;
            };
            let owner_id = owners.of(owner_name);
            syms.push(Symbol {
                addr,
                name,
                owner: owner_id,
            });
            at = owner.end;
        }
        Kallsyms::sorted(bytes, syms, owners, "iter/ksym")
    }

    fn sorted(text: Vec<u8>, mut syms: Vec<Symbol>, owners: Owners, source: &'static str) -> Self {
        // The core kernel's symbols come sorted; modules' follow.
        if !syms.is_sorted_by_key(|s| s.addr) {
            syms.sort_by_key(|s| s.addr);
        }
        Kallsyms {
            text,
            syms,
            owners: owners.names,
            source,
        }
    }

    fn name(&self, s: &Symbol) -> &str {
        std::str::from_utf8(&self.text[s.name.clone()]).unwrap_or("?")
    }

    fn name_bytes(&self, s: &Symbol) -> &[u8] {
        &self.text[s.name.clone()]
    }

    /// The address of the first symbol called `name`.
    pub fn addr_of(&self, name: &str) -> Option<u64> {
        self.syms
            .iter()
            .find(|s| self.name_bytes(s) == name.as_bytes())
            .map(|s| s.addr)
    }

    /// Whether a symbol called `name` starts at `addr` (one of its aliases
    /// may): a binary search, not a walk of every name.
    pub fn is_at(&self, name: &str, addr: u64) -> bool {
        let from = self.syms.partition_point(|s| s.addr < addr);
        self.syms[from..]
            .iter()
            .take_while(|s| s.addr == addr)
            .any(|s| self.name_bytes(s) == name.as_bytes())
    }

    /// The symbol `addr` falls in, and the offset into it.
    pub fn symbol_at(&self, addr: u64) -> Option<(&str, u64)> {
        let s = self.at_or_below(addr)?;
        Some((self.name(s), addr - s.addr))
    }

    fn at_or_below(&self, addr: u64) -> Option<&Symbol> {
        let i = self.syms.partition_point(|s| s.addr <= addr);
        self.syms.get(i.checked_sub(1)?)
    }

    /// `name+0xoff [module]` for an address, as a responder reads it.
    pub fn describe(&self, addr: u64) -> Option<String> {
        let s = self.at_or_below(addr)?;
        let mut out = self.name(s).to_string();
        if addr != s.addr {
            out.push_str(&format!("+{:#x}", addr - s.addr));
        }
        if s.owner != 0 {
            out.push_str(&format!(" [{}]", self.owners[s.owner as usize]));
        }
        Some(out)
    }

    /// The address of the first symbol above `addr`: where the function at
    /// `addr` ends, at the latest.
    pub fn next_after(&self, addr: u64) -> Option<u64> {
        let i = self.syms.partition_point(|s| s.addr <= addr);
        self.syms.get(i).map(|s| s.addr)
    }

    /// Every symbol whose name starts with `prefix`, with its address.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.syms
            .iter()
            .filter(move |s| self.name_bytes(s).starts_with(prefix.as_bytes()))
            .map(|s| (self.name(s), s.addr))
    }

    /// `_stext.._etext`: the core kernel's code.
    pub fn kernel_text(&self) -> Option<Range<u64>> {
        Some(self.addr_of("_stext")?..self.addr_of("_etext")?)
    }

    /// Names of the modules that own symbols (the `[name]` suffix), without
    /// tracer-irrelevant pseudo-modules such as `[bpf]`.
    pub fn module_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.owners[1..]
            .iter()
            .filter(|m| !PSEUDO_MODULES.contains(&m.as_str()))
            .cloned()
            .collect();
        out.sort();
        out
    }
}

/// Owners in kallsyms that are not loadable modules.
const PSEUDO_MODULES: &[&str] = &["bpf", "__builtin__ftrace", "__builtin__kprobes"];

/// Reads a large /proc file in 1 MiB reads (kallsyms is ~5 MB: 4 KiB
/// reads would cost a thousand system calls).
fn read_all(path: &str) -> std::io::Result<Vec<u8>> {
    use rustix::fs::{open, Mode, OFlags};
    let fd = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut out: Vec<u8> = Vec::with_capacity(8 << 20);
    loop {
        if out.capacity() - out.len() < 1 << 20 {
            out.reserve(1 << 20);
        }
        let n = rustix::io::read(&fd, out.spare_capacity_mut())?.0.len();
        if n == 0 {
            return Ok(out);
        }
        // SAFETY: read just initialised these n bytes.
        unsafe { out.set_len(out.len() + n) };
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

/// `ffffffff81000000 T _stext` (optionally `\t[module]`): the address, the
/// name's byte range within the whole text, and the owner's name (empty
/// for the core kernel).
fn parse_line(line: &[u8], offset: usize) -> Option<(u64, Range<usize>, &[u8])> {
    let addr = line.get(..16)?.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | d as u64)
    })?;
    if addr == 0 || line.get(16) != Some(&b' ') {
        return None;
    }
    let name_start = 19.min(line.len());
    let name = &line[name_start..];
    let name_len = memchr::memchr2(b'\t', b' ', name).unwrap_or(name.len());
    let rest = &name[name_len..];
    let owner = rest
        .iter()
        .position(|&b| b == b'[')
        .and_then(|open| rest[open + 1..].strip_suffix(b"]"))
        .unwrap_or_default();
    Some((
        addr,
        offset + name_start..offset + name_start + name_len,
        owner,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const RECORDED: &str = "\
ffffffff81000000 T _stext
ffffffff814bcf50 T bpf_send_signal
ffffffff814bee40 T bpf_probe_write_user
ffffffff814cc810 T __bpf_call_base
ffffffff8177b070 t proc_root_readdir
ffffffff820301a0 t tcp4_seq_show
ffffffff82030400 t tcp4_seq_start
ffffffff8220bb08 T _etext
ffffffffc0001000 t bpf_prog_6deef7357e7b4530_hide\t[bpf]
ffffffffc0100000 t evil_show\t[rootkit]
";

    /// What both recorded tables hold: kernel text, and a module's symbol
    /// named with its module (`[bpf]` is no module).
    fn text_and_rootkit_module_are_told(k: &Kallsyms) {
        assert_eq!(
            k.kernel_text(),
            Some(0xffffffff81000000..0xffffffff8220bb08)
        );
        assert_eq!(k.module_names(), ["rootkit"]);
        assert_eq!(
            k.describe(0xffffffffc0100004).as_deref(),
            Some("evil_show+0x4 [rootkit]")
        );
    }

    #[test]
    fn symbols_are_found_by_name_and_by_address() {
        let k = Kallsyms::parse(RECORDED.as_bytes().to_vec());
        assert_eq!(k.addr_of("tcp4_seq_show"), Some(0xffffffff820301a0));
        assert_eq!(k.addr_of("nope"), None);
        assert_eq!(k.symbol_at(0xffffffff820301a8), Some(("tcp4_seq_show", 8)));
        assert_eq!(k.symbol_at(0xffffffffc0100004), Some(("evil_show", 4)));
        assert_eq!(k.symbol_at(0x10), None);
        text_and_rootkit_module_are_told(&k);
        assert_eq!(
            k.describe(0xffffffff820301a0).as_deref(),
            Some("tcp4_seq_show")
        );
        assert_eq!(k.next_after(0xffffffff820301a0), Some(0xffffffff82030400));
        assert!(k.is_at("tcp4_seq_show", 0xffffffff820301a0));
        assert!(!k.is_at("tcp4_seq_show", 0xffffffff820301a8));
        assert!(!k.is_at("tcp4_seq_start", 0xffffffff820301a0));
        assert_eq!(k.with_prefix("tcp4_").count(), 2);
    }

    /// The core kernel's symbols, as (address, name).
    fn core_symbols(k: &Kallsyms) -> Vec<(u64, &[u8])> {
        k.syms
            .iter()
            .filter(|s| s.owner == 0)
            .map(|s| (s.addr, k.name_bytes(s)))
            .collect()
    }

    // Against the running kernel (root): where it has `iter/ksym`, the
    // iterator loads and gives the symbols and modules /proc/kallsyms does.
    #[test]
    fn the_iterator_and_the_proc_file_agree_on_the_running_kernel() {
        let mut kernel = Kernel::load_for("test", crate::kernel::Needs::SCAN).unwrap();
        let has_iterator = kernel.kallsyms_choice().hook == "iter/ksym";
        let btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
        let kernel_has_it = btf.windows(15).any(|w| w == b"\0bpf_iter_ksym\0");
        assert_eq!(
            has_iterator,
            kernel_has_it,
            "{}",
            kernel.kallsyms_choice().reason
        );
        if !kernel_has_it {
            eprintln!("this kernel has no iter/ksym: only /proc/kallsyms is read");
            return;
        }
        let started = std::time::Instant::now();
        let from_iterator = PendingKallsyms::start(Some(&mut kernel)).wait().unwrap();
        let iterator_took = started.elapsed();
        let started = std::time::Instant::now();
        let from_proc = Kallsyms::read().unwrap();
        eprintln!(
            "iter/ksym {iterator_took:?}, /proc/kallsyms {:?}",
            started.elapsed()
        );
        assert_eq!(from_iterator.source, "iter/ksym");
        assert_eq!(from_proc.source, "/proc/kallsyms");
        let (a, b) = (core_symbols(&from_iterator), core_symbols(&from_proc));
        assert!(a.len() > 10_000, "{} core symbols", a.len());
        assert_eq!(a.len(), b.len());
        assert!(a == b, "the two reads differ in the core kernel's symbols");
        assert_eq!(from_iterator.module_names(), from_proc.module_names());
        assert_eq!(from_iterator.kernel_text(), from_proc.kernel_text());
    }

    #[test]
    fn iterator_records_decode_and_a_cut_record_ends_the_table() {
        let mut bytes = Vec::new();
        let record = |bytes: &mut Vec<u8>, addr: u64, name: &[u8], owner: &[u8]| {
            bytes.extend(addr.to_ne_bytes());
            bytes.extend((name.len() as u16).to_ne_bytes());
            bytes.extend([owner.len() as u8, 0, 0, 0, 0, 0]);
            bytes.extend(name);
            bytes.extend(owner);
        };
        record(&mut bytes, 0xffffffff81000000, b"_stext", b"");
        record(&mut bytes, 0xffffffffc0100000, b"evil_show", b"rootkit");
        record(&mut bytes, 0xffffffff8220bb08, b"_etext", b"");
        record(
            &mut bytes,
            0xffffffffc0001000,
            b"bpf_prog_6deef7357e7b4530_hide",
            b"bpf",
        );
        let whole = bytes.len();
        record(&mut bytes, 0xffffffffc0200000, b"cut", b"short");
        bytes.truncate(whole + KSYM_HEADER_LEN + 2);
        let k = Kallsyms::from_records(bytes);
        assert_eq!(k.syms.len(), 4);
        text_and_rootkit_module_are_told(&k);
        assert_eq!(k.addr_of("cut"), None);
    }

    #[test]
    fn zero_addresses_are_dropped() {
        let k = Kallsyms::parse(b"0000000000000000 T _stext\n0000000000000000 T x\n".to_vec());
        assert!(k.syms.is_empty());
    }
}
