//! Names the kernel module behind an address that no listed module owns.
//! A rootkit module takes itself off the module list (so `/proc/modules`,
//! `lsmod` and kallsyms forget it) and often out of `/sys/module` too, but
//! its `struct module` stays in memory next to its code: in the same
//! allocation before Linux 6.4, in the neighbouring one since. So, from a
//! hooked address, kernel memory around it is read page by page (pages
//! that cannot be read, such as guard pages, are stepped over) and scanned
//! for a `struct module` whose `mkobj.mod` points back at itself, with a
//! plain module name (a pattern nothing else in memory has by chance), and
//! whose code (`mem[MOD_TEXT]`, or `core_layout` before 6.4) holds the
//! address, so a neighbouring module's struct is not taken for it.
use crate::kernel::{kmem::KernelMemory, offsets::ModuleLayout};

const PAGE: u64 = 4096;
/// How far from the hooked address the scan goes, each way: a module's
/// code and data are within a few MiB of each other.
const REACH: u64 = 4 << 20;
/// `MODULE_NAME_LEN`: the name field's size.
const NAME_LEN: usize = 56;

/// A module found in memory: its name and where its `struct module` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundModule {
    pub name: String,
    pub at: u64,
}

/// The `struct module` nearest to `addr` in kernel memory, if any.
pub fn module_around(memory: &KernelMemory, addr: u64) -> Option<FoundModule> {
    let layout = memory.module_layout?;
    let start = addr & !(PAGE - 1);
    // Pages after the address first (the data follows the code), then
    // before it, nearest first.
    let after = (0..REACH / PAGE).map(|i| start.checked_add(i * PAGE));
    let before = (1..REACH / PAGE).map(|i| start.checked_sub(i * PAGE));
    for page in after.chain(before).flatten() {
        // A struct module may straddle pages: read two, or the one alone
        // when the next is a guard page (the struct can end a region).
        let Ok(bytes) = memory
            .read(page, 2 * PAGE as usize)
            .or_else(|_| memory.read(page, PAGE as usize))
        else {
            continue;
        };
        if let Some(found) = scan(&bytes, page, &layout, addr) {
            return Some(found);
        }
    }
    None
}

/// Looks for the `struct module` whose code holds `addr`, starting in the
/// first page of `bytes` (read from `base`).
pub fn scan(bytes: &[u8], base: u64, layout: &ModuleLayout, addr: u64) -> Option<FoundModule> {
    let field = |off: usize, len: usize| bytes.get(off..off.checked_add(len)?);
    let u64_at = |off: usize| Some(u64::from_ne_bytes(field(off, 8)?.try_into().ok()?));
    let u32_at = |off: usize| Some(u32::from_ne_bytes(field(off, 4)?.try_into().ok()?));
    (0..PAGE as usize).step_by(8).find_map(|off| {
        let at = base + off as u64;
        if u64_at(off + layout.kobj_mod as usize)? != at {
            return None;
        }
        // MODULE_STATE_LIVE, COMING, GOING, UNFORMED.
        if u32_at(off + layout.state as usize)? > 3 {
            return None;
        }
        // Its code must hold the address: not a neighbour's struct.
        let text = u64_at(off + layout.text_base as usize)?;
        let size = u32_at(off + layout.text_size as usize)?;
        if !(text..text.saturating_add(size as u64)).contains(&addr) {
            return None;
        }
        let name_field = field(off + layout.name as usize, NAME_LEN)?;
        let len = name_field.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&name_field[..len]).ok()?;
        is_module_name(name).then(|| FoundModule {
            name: name.to_string(),
            at,
        })
    })
}

/// What the kernel accepts as a module name (and nothing random is).
fn is_module_name(name: &str) -> bool {
    (2..NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: ModuleLayout = ModuleLayout {
        state: 0,
        name: 24,
        kobj_mod: 96,
        text_base: 104,
        text_size: 112,
    };
    const CODE: u64 = 0xffff_ffff_c030_0000;

    fn page_with_module(at_off: usize, base: u64, name: &[u8], state: u32) -> Vec<u8> {
        let mut page = vec![0xaau8; 2 * PAGE as usize];
        page[at_off..at_off + 4].copy_from_slice(&state.to_ne_bytes());
        let n = at_off + LAYOUT.name as usize;
        page[n..n + NAME_LEN].fill(0);
        page[n..n + name.len()].copy_from_slice(name);
        let k = at_off + LAYOUT.kobj_mod as usize;
        page[k..k + 8].copy_from_slice(&(base + at_off as u64).to_ne_bytes());
        let c = at_off + LAYOUT.text_base as usize;
        page[c..c + 8].copy_from_slice(&CODE.to_ne_bytes());
        let z = at_off + LAYOUT.text_size as usize;
        page[z..z + 4].copy_from_slice(&0x3000u32.to_ne_bytes());
        page
    }

    #[test]
    fn a_struct_module_pointing_back_at_itself_is_found_by_name() {
        let base = 0xffff_ffff_c040_0000;
        let page = page_with_module(0x340, base, b"tracer_test_rootkit", 0);
        assert_eq!(
            scan(&page, base, &LAYOUT, CODE + 0x140),
            Some(FoundModule {
                name: "tracer_test_rootkit".into(),
                at: base + 0x340
            })
        );
    }

    #[test]
    fn lookalikes_are_not_modules() {
        let base = 0xffff_ffff_c040_0000;
        // Wrong self pointer.
        let mut page = page_with_module(0x340, base, b"mod", 0);
        page[0x340 + 96] ^= 0x08;
        assert_eq!(scan(&page, base, &LAYOUT, CODE + 0x140), None);
        // Impossible state, and a name that is not one.
        assert_eq!(
            scan(
                &page_with_module(0x340, base, b"mod", 9),
                base,
                &LAYOUT,
                CODE + 0x140
            ),
            None
        );
        assert_eq!(
            scan(
                &page_with_module(0x340, base, b"\x1b[2Jx", 0),
                base,
                &LAYOUT,
                CODE
            ),
            None
        );
        // Too close to the end to hold a whole struct: no panic.
        assert_eq!(scan(&[0u8; 16], base, &LAYOUT, CODE), None);
        // A neighbour's struct, whose code does not hold the address.
        let page = page_with_module(0x340, base, b"overlay", 0);
        assert_eq!(scan(&page, base, &LAYOUT, CODE + 0x10_0000), None);
    }
}
