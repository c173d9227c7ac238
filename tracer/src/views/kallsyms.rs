//! `/proc/kallsyms`, read once per command: where kernel text starts and
//! ends, where a named function is, and which symbol an address falls in.
//! Used to name the helpers a BPF program calls and to check kernel
//! function pointers against the functions they should be.
use std::ops::Range;

/// The symbol table, kept as the raw text plus a sorted address index.
pub struct Kallsyms {
    text: Vec<u8>,
    /// (address, byte range of the name in `text`), sorted by address.
    syms: Vec<(u64, Range<usize>)>,
}

/// A read of `/proc/kallsyms` running on its own thread: it needs nothing
/// else, and is the longest of the kernel checks (the kernel formats every
/// symbol), so it starts when the command does.
pub struct PendingKallsyms(std::thread::JoinHandle<Result<Kallsyms, String>>);

impl PendingKallsyms {
    pub fn start() -> PendingKallsyms {
        PendingKallsyms(std::thread::spawn(|| {
            let _t = crate::timings::span("kernel checks: kallsyms (a thread)");
            Kallsyms::read()
        }))
    }

    pub fn wait(self) -> Result<Kallsyms, String> {
        self.0
            .join()
            .unwrap_or_else(|_| Err("the kallsyms reader thread panicked".into()))
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

    /// Parses kallsyms text; lines with a zero address are dropped.
    pub fn parse(text: Vec<u8>) -> Kallsyms {
        let mut syms = Vec::with_capacity(text.len() / 40);
        let mut start = 0;
        while start < text.len() {
            let end = memchr(&text[start..]).map_or(text.len(), |n| start + n);
            if let Some(sym) = parse_line(&text[start..end], start) {
                syms.push(sym);
            }
            start = end + 1;
        }
        // The core kernel's symbols come sorted; modules' follow.
        if !syms.is_sorted_by_key(|(a, _)| *a) {
            syms.sort_unstable_by_key(|(a, _)| *a);
        }
        Kallsyms { text, syms }
    }

    fn name(&self, r: &Range<usize>) -> &str {
        std::str::from_utf8(&self.text[r.clone()]).unwrap_or("?")
    }

    /// The address of the first symbol called `name`.
    pub fn addr_of(&self, name: &str) -> Option<u64> {
        self.syms
            .iter()
            .find(|(_, r)| &self.text[r.clone()] == name.as_bytes())
            .map(|(a, _)| *a)
    }

    /// The symbol `addr` falls in, and the offset into it.
    pub fn symbol_at(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        let (a, r) = self.syms.get(i.checked_sub(1)?)?;
        Some((self.name(r), addr - a))
    }

    /// `name+0xoff [module]` for an address, as a responder reads it.
    pub fn describe(&self, addr: u64) -> Option<String> {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        let (a, r) = self.syms.get(i.checked_sub(1)?)?;
        let mut out = self.name(r).to_string();
        if addr != *a {
            out.push_str(&format!("+{:#x}", addr - a));
        }
        if let Some(module) = self.module_of(r) {
            out.push_str(&format!(" [{module}]"));
        }
        Some(out)
    }

    /// The `[module]` suffix of a symbol's line, if any.
    fn module_of(&self, name: &Range<usize>) -> Option<&str> {
        let rest = self.text.get(name.end..)?;
        let line = &rest[..memchr(rest).unwrap_or(rest.len())];
        let open = line.iter().position(|&b| b == b'[')?;
        let close = line.iter().position(|&b| b == b']')?;
        std::str::from_utf8(line.get(open + 1..close)?).ok()
    }

    /// The address of the first symbol above `addr`: where the function at
    /// `addr` ends, at the latest.
    pub fn next_after(&self, addr: u64) -> Option<u64> {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        self.syms.get(i).map(|(a, _)| *a)
    }

    /// Every symbol whose name starts with `prefix`, with its address.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.syms
            .iter()
            .filter(move |(_, r)| self.text[r.clone()].starts_with(prefix.as_bytes()))
            .map(|(a, r)| (self.name(r), *a))
    }

    /// `_stext.._etext`: the core kernel's code.
    pub fn kernel_text(&self) -> Option<Range<u64>> {
        Some(self.addr_of("_stext")?..self.addr_of("_etext")?)
    }

    /// Names of the modules that own symbols (the `[name]` suffix), without
    /// tracer-irrelevant pseudo-modules such as `[bpf]`.
    pub fn module_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .text
            .split(|&b| b == b'\n')
            .filter_map(|l| {
                let open = l.iter().position(|&b| b == b'[')?;
                let name = l[open + 1..].strip_suffix(b"]")?;
                Some(String::from_utf8_lossy(name).into_owned())
            })
            .filter(|m| !PSEUDO_MODULES.contains(&m.as_str()))
            .collect();
        out.sort();
        out.dedup();
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

/// `ffffffff81000000 T _stext` (optionally `\t[module]`): the address and
/// the name's byte range within the whole text.
fn parse_line(line: &[u8], offset: usize) -> Option<(u64, Range<usize>)> {
    let addr = line.get(..16)?.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | d as u64)
    })?;
    if addr == 0 || line.get(16) != Some(&b' ') {
        return None;
    }
    let name_start = 19;
    let name = &line[name_start.min(line.len())..];
    let name_len = memchr::memchr2(b'\t', b' ', name).unwrap_or(name.len());
    Some((addr, offset + name_start..offset + name_start + name_len))
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

    #[test]
    fn symbols_are_found_by_name_and_by_address() {
        let k = Kallsyms::parse(RECORDED.as_bytes().to_vec());
        assert_eq!(k.addr_of("tcp4_seq_show"), Some(0xffffffff820301a0));
        assert_eq!(k.addr_of("nope"), None);
        assert_eq!(k.symbol_at(0xffffffff820301a8), Some(("tcp4_seq_show", 8)));
        assert_eq!(k.symbol_at(0xffffffffc0100004), Some(("evil_show", 4)));
        assert_eq!(k.symbol_at(0x10), None);
        assert_eq!(
            k.kernel_text(),
            Some(0xffffffff81000000..0xffffffff8220bb08)
        );
        assert_eq!(k.module_names(), ["rootkit"]);
        assert_eq!(
            k.describe(0xffffffffc0100004).as_deref(),
            Some("evil_show+0x4 [rootkit]")
        );
        assert_eq!(
            k.describe(0xffffffff820301a0).as_deref(),
            Some("tcp4_seq_show")
        );
        assert_eq!(k.next_after(0xffffffff820301a0), Some(0xffffffff82030400));
        assert_eq!(k.with_prefix("tcp4_").count(), 2);
    }

    #[test]
    fn zero_addresses_are_dropped() {
        let k = Kallsyms::parse(b"0000000000000000 T _stext\n0000000000000000 T x\n".to_vec());
        assert!(k.syms.is_empty());
    }
}
