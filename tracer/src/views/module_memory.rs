//! Names the kernel module behind an address that no listed module owns.
//! A rootkit module takes itself off the module list (so `/proc/modules`,
//! `lsmod` and kallsyms forget it) and often out of `/sys/module` too, but
//! its `struct module` stays in memory next to its code: in the same
//! allocation before Linux 6.4, in the neighbouring one since. So, from a
//! hooked address, kernel memory around it is read page by page (pages
//! that cannot be read, such as guard pages, are stepped over) and scanned
//! for a `struct module` whose `mkobj.mod` points back at itself, with a
//! plain module name: a pattern nothing else in memory has by chance.
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
        // A struct module may straddle pages: read two.
        let Ok(bytes) = memory.read(page, 2 * PAGE as usize) else {
            continue;
        };
        if let Some(found) = scan(&bytes, page, &layout) {
            return Some(found);
        }
    }
    None
}

/// Looks for a `struct module` starting in the first page of `bytes`
/// (read from `base`).
pub fn scan(bytes: &[u8], base: u64, layout: &ModuleLayout) -> Option<FoundModule> {
    let u64_at = |off: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(
            bytes.get(off..off + 8)?.try_into().ok()?,
        ))
    };
    for off in (0..PAGE as usize).step_by(8) {
        let at = base + off as u64;
        if u64_at(off + layout.kobj_mod as usize) != Some(at) {
            continue;
        }
        let state = u32::from_ne_bytes(
            bytes
                .get(off + layout.state as usize..off + layout.state as usize + 4)?
                .try_into()
                .ok()?,
        );
        // MODULE_STATE_LIVE, COMING, GOING, UNFORMED.
        if state > 3 {
            continue;
        }
        let name_field =
            bytes.get(off + layout.name as usize..off + layout.name as usize + NAME_LEN)?;
        let len = name_field.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&name_field[..len]).ok()?;
        if is_module_name(name) {
            return Some(FoundModule {
                name: name.to_string(),
                at,
            });
        }
    }
    None
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
    };

    fn page_with_module(at_off: usize, base: u64, name: &[u8], state: u32) -> Vec<u8> {
        let mut page = vec![0xaau8; 2 * PAGE as usize];
        page[at_off..at_off + 4].copy_from_slice(&state.to_ne_bytes());
        let n = at_off + LAYOUT.name as usize;
        page[n..n + NAME_LEN].fill(0);
        page[n..n + name.len()].copy_from_slice(name);
        let k = at_off + LAYOUT.kobj_mod as usize;
        page[k..k + 8].copy_from_slice(&(base + at_off as u64).to_ne_bytes());
        page
    }

    #[test]
    fn a_struct_module_pointing_back_at_itself_is_found_by_name() {
        let base = 0xffff_ffff_c040_0000;
        let page = page_with_module(0x340, base, b"tracer_test_rootkit", 0);
        assert_eq!(
            scan(&page, base, &LAYOUT),
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
        assert_eq!(scan(&page, base, &LAYOUT), None);
        // Impossible state, and a name that is not one.
        assert_eq!(
            scan(&page_with_module(0x340, base, b"mod", 9), base, &LAYOUT),
            None
        );
        assert_eq!(
            scan(
                &page_with_module(0x340, base, b"\x1b[2Jx", 0),
                base,
                &LAYOUT
            ),
            None
        );
        // Too close to the end to hold a whole struct: no panic.
        assert_eq!(scan(&[0u8; 16], base, &LAYOUT), None);
    }
}
