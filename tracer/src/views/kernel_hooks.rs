//! Kernel hooks below /proc: function pointers behind the files tracer
//! opens (read in the kernel by the BPF-file iterator, checked against
//! kernel text and the symbol they should be), ftrace-hooked functions and
//! kprobes (tracefs), syscall dispatch (`syscalls`), and modules hidden
//! from the module list. Each check that cannot run on this kernel says so in one line.
use std::{ops::Range, os::fd::AsRawFd};

use serde::Serialize;
use tracer_common::BpfFileRecord;

use crate::{
    kernel::Kernel,
    views::{
        bpf::{BpfInventory, OwnPrograms},
        kallsyms::{Kallsyms, PendingKallsyms},
    },
};

/// Everything the kernel checks look at: the BPF inventory, the function
/// pointers, ftrace and kprobe hooks, hidden modules, and one note per check
/// that could not run.
#[derive(Default, Serialize, schemars::JsonSchema)]
pub struct KernelState {
    pub bpf: BpfInventory,
    pub pointers: Vec<PointerCheck>,
    pub hooks: Vec<FtraceHook>,
    pub hidden_modules: Vec<HiddenModule>,
    pub notes: Vec<String>,
    /// How long the checks took.
    pub ms: u64,
}

/// The part of the kernel checks that needs tracer's loaded programs (the
/// BPF-file iterator runs while the target files are open). Quick; the
/// rest (`finish`) can run on another thread.
pub struct KernelInput {
    files: Result<Vec<BpfFileRecord>, String>,
    kernel_ids: Result<Vec<u32>, String>,
    own: OwnPrograms,
    targets: OpenTargets,
    memory: Result<crate::kernel::kmem::KernelMemory, String>,
    ksyms: PendingKallsyms,
    started: std::time::Instant,
}

impl KernelInput {
    /// `ksyms`: the symbol table, read since the command started.
    pub fn collect(kernel: Result<&mut Kernel, &str>, ksyms: PendingKallsyms) -> KernelInput {
        let _t = crate::timings::span("kernel checks: BPF objects, kernel memory");
        let started = std::time::Instant::now();
        let targets = OpenTargets::open();
        let (files, kernel_ids, own, memory) = match kernel {
            Ok(k) => (
                k.bpf_files().map_err(|e| format!("{e:#}")),
                k.bpf_prog_ids().map_err(|e| format!("{e:#}")),
                OwnPrograms::of(k),
                k.kernel_memory().map_err(|e| format!("{e:#}")),
            ),
            Err(why) => (
                Err(why.to_string()),
                Err(why.to_string()),
                OwnPrograms::default(),
                Err(why.to_string()),
            ),
        };
        KernelInput {
            files,
            kernel_ids,
            own,
            targets,
            memory,
            ksyms,
            started,
        }
    }

    /// Takes kallsyms, reads tracefs, lists the BPF objects and checks every
    /// pointer.
    pub fn finish(self) -> KernelState {
        let _t = crate::timings::span("kernel checks: the rest");
        let mut notes = Vec::new();
        let ksyms = {
            let _t = crate::timings::span("kernel checks: waiting on kallsyms");
            self.ksyms.wait()
        };
        let mut bpf = {
            let _t = crate::timings::span("kernel checks: BPF inventory");
            BpfInventory::take(self.files, self.kernel_ids, &self.own, ksyms.as_ref().ok())
        };
        let pointers_span = crate::timings::span("kernel checks: pointers, ftrace, syscalls");
        let mut pointers = self.targets.check(
            &bpf.own_files,
            ksyms.as_ref().map_err(String::as_str),
            &mut notes,
        );
        drop(self.targets);
        let hooks = ftrace_hooks(&mut notes);
        let mut found_modules = Vec::new();
        if let Ok(k) = &ksyms {
            let dispatch = super::syscalls::check(self.memory.as_ref().map_err(String::as_str), k);
            pointers.extend(dispatch.anomalies);
            notes.extend(dispatch.notes);
            found_modules = dispatch.modules;
        } else {
            notes.push("syscall dispatch not checked: no kernel symbol addresses".into());
        }
        drop(pointers_span);
        let _modules = crate::timings::span("kernel checks: modules");
        let sources = module_sources(ksyms.as_ref().ok(), &mut notes);
        let mut hidden_modules = sources.as_ref().map(hidden_modules).unwrap_or_default();
        // A module found in memory behind a patched syscall that the
        // module list does not have.
        for m in found_modules {
            let listed = sources.as_ref().is_some_and(|s| s.list.contains(&m.name));
            match hidden_modules.iter_mut().find(|h| h.name == m.name) {
                Some(h) => h.seen_in.push(MEMORY_SOURCE),
                None if !listed => hidden_modules.push(HiddenModule {
                    name: m.name,
                    seen_in: vec![MEMORY_SOURCE],
                }),
                None => {}
            }
        }
        let mut all_notes = std::mem::take(&mut bpf.notes);
        all_notes.extend(notes);
        KernelState {
            bpf,
            pointers,
            hooks,
            hidden_modules,
            notes: all_notes,
            ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// Which pointer of an open file a check reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `file->f_op->iterate_shared`: how a /proc directory lists itself.
    IterateShared,
    /// `seq_file->op->show`: how a /proc/net table prints one line.
    SeqShow,
}

/// One function pointer to check: the file tracer opens, the slot, and
/// the kernel function it must be.
pub struct Target {
    pub path: &'static str,
    pub slot: Slot,
    pub expected: &'static str,
}

/// The structures behind /proc and /proc/net that rootkits patch.
pub const TARGETS: &[Target] = &[
    Target {
        path: "/proc",
        slot: Slot::IterateShared,
        expected: "proc_root_readdir",
    },
    Target {
        path: "/proc/self",
        slot: Slot::IterateShared,
        expected: "proc_tgid_base_readdir",
    },
    Target {
        path: "/proc/net/tcp",
        slot: Slot::SeqShow,
        expected: "tcp4_seq_show",
    },
    Target {
        path: "/proc/net/tcp6",
        slot: Slot::SeqShow,
        expected: "tcp6_seq_show",
    },
    Target {
        path: "/proc/net/udp",
        slot: Slot::SeqShow,
        expected: "udp4_seq_show",
    },
    Target {
        path: "/proc/net/udp6",
        slot: Slot::SeqShow,
        expected: "udp6_seq_show",
    },
];

/// What a pointer turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The expected function.
    Expected,
    /// Inside kernel text, but another function (or the middle of one).
    OtherKernelFunction,
    /// Outside `_stext.._etext`: a module, a BPF program, or data.
    OutsideKernelText,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PointerCheck {
    /// e.g. `/proc/net/tcp seq_ops->show`.
    pub what: String,
    pub expected: String,
    pub address: String,
    /// The symbol the address falls in, `name+0xoff`, if any.
    pub points_to: Option<String>,
    pub verdict: Verdict,
}

/// Checks one pointer against kernel text and its expected symbol.
pub fn check_pointer(
    what: &str,
    expected: &str,
    addr: u64,
    text: &Range<u64>,
    ksyms: &Kallsyms,
) -> PointerCheck {
    let points_to = ksyms.symbol_at(addr).map(|(name, off)| {
        if off == 0 {
            name.to_string()
        } else {
            format!("{name}+{off:#x}")
        }
    });
    let verdict = if !text.contains(&addr) {
        Verdict::OutsideKernelText
    } else if ksyms.is_at(expected, addr) {
        Verdict::Expected
    } else {
        Verdict::OtherKernelFunction
    };
    PointerCheck {
        what: what.to_string(),
        expected: expected.to_string(),
        address: format!("{addr:#x}"),
        points_to,
        verdict,
    }
}

/// The target files, opened so the BPF-file iterator reads their pointers.
pub struct OpenTargets(Vec<(&'static Target, Result<rustix::fd::OwnedFd, String>)>);

impl OpenTargets {
    pub fn open() -> OpenTargets {
        use rustix::fs::{open, Mode, OFlags};
        OpenTargets(
            TARGETS
                .iter()
                .map(|t| {
                    let fd = open(t.path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                        .map_err(|e| e.to_string());
                    (t, fd)
                })
                .collect(),
        )
    }

    /// Checks each pointer the iterator read for these files.
    pub fn check(
        &self,
        own_files: &[BpfFileRecord],
        ksyms: Result<&Kallsyms, &str>,
        notes: &mut Vec<String>,
    ) -> Vec<PointerCheck> {
        let ksyms = match ksyms {
            Ok(k) => k,
            Err(why) => {
                notes.push(format!("function pointers not checked: {why}"));
                return Vec::new();
            }
        };
        let Some(text) = ksyms.kernel_text() else {
            notes.push("function pointers not checked: no _stext/_etext in kallsyms".into());
            return Vec::new();
        };
        if own_files.is_empty() {
            notes.push("function pointers not checked: the BPF-file iterator did not run".into());
            return Vec::new();
        }
        let mut out = Vec::new();
        for (t, fd) in &self.0 {
            let (slot_name, what) = match t.slot {
                Slot::IterateShared => ("f_op->iterate_shared", t.path),
                Slot::SeqShow => ("seq_ops->show", t.path),
            };
            let fd = match fd {
                Ok(fd) => fd.as_raw_fd() as u32,
                Err(e) => {
                    notes.push(format!("{what} {slot_name} not checked: open failed: {e}"));
                    continue;
                }
            };
            let Some(rec) = own_files.iter().find(|r| r.fd == fd) else {
                notes.push(format!(
                    "{what} {slot_name} not checked: the iterator missed fd {fd}"
                ));
                continue;
            };
            let addr = match t.slot {
                Slot::IterateShared => rec.iterate_shared,
                Slot::SeqShow => rec.seq_show,
            };
            if addr == 0 {
                notes.push(format!(
                    "{what} {slot_name} not checked: the kernel read failed"
                ));
                continue;
            }
            out.push(check_pointer(
                &format!("{what} {slot_name}"),
                t.expected,
                addr,
                &text,
                ksyms,
            ));
        }
        out
    }
}

/// A function some ftrace user has hooked, or a kprobe.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct FtraceHook {
    pub function: String,
    /// The rest of the `enabled_functions` line (flags, trampoline, callback)
    /// or the kprobe definition.
    pub detail: String,
    /// `ftrace` or `kprobe`.
    pub mechanism: &'static str,
}

/// `enabled_functions` lines: `name (refs) flags ... ->callback`.
pub fn parse_enabled_functions(text: &str) -> Vec<FtraceHook> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(char::is_whitespace)?;
            Some(FtraceHook {
                function: name.to_string(),
                // The kernel separates the trampoline and callback parts
                // with tabs: one space each, so the detail reads as one line.
                detail: rest.split_whitespace().collect::<Vec<_>>().join(" "),
                mechanism: "ftrace",
            })
        })
        .collect()
}

/// `kprobe_events` lines: `p:kprobes/name func+off args`.
pub fn parse_kprobe_events(text: &str) -> Vec<FtraceHook> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let _name = words.next()?;
            let target = words.next()?;
            let function = target.split('+').next().unwrap_or(target);
            Some(FtraceHook {
                function: function.to_string(),
                detail: l.trim().to_string(),
                mechanism: "kprobe",
            })
        })
        .collect()
}

/// What tracefs says is hooked. When tracefs is not mounted, mounts it in
/// a private mount namespace of a short-lived thread (the host's mounts are
/// not touched) and says so.
pub fn ftrace_hooks(notes: &mut Vec<String>) -> Vec<FtraceHook> {
    let mounted = crate::mountinfo::own_mount_points_of_type("tracefs")
        .ok()
        .and_then(|m| m.into_iter().next());
    match mounted {
        Some(dir) => read_tracefs(&dir, notes),
        None => {
            let result = std::thread::spawn(|| {
                let mut notes = Vec::new();
                let hooks = private_tracefs().map(|dir| read_tracefs(dir, &mut notes));
                (hooks, notes)
            })
            .join();
            match result {
                Ok((Ok(hooks), more)) => {
                    notes.push(
                        "tracefs was not mounted: mounted it in a private mount namespace to read it"
                            .into(),
                    );
                    notes.extend(more);
                    hooks
                }
                Ok((Err(e), _)) => {
                    notes.push(format!(
                        "ftrace hooks and kprobes not checked: tracefs is not mounted and mounting it privately failed: {e}"
                    ));
                    Vec::new()
                }
                Err(_) => {
                    notes.push("ftrace hooks not checked: the tracefs thread panicked".into());
                    Vec::new()
                }
            }
        }
    }
}

/// In this thread only: a private mount namespace with tracefs mounted.
pub(crate) fn private_tracefs() -> std::io::Result<&'static str> {
    const DIR: &str = "/sys/kernel/tracing";
    crate::mountinfo::mount_privately("tracefs", DIR)?;
    Ok(DIR)
}

fn read_tracefs(dir: &str, notes: &mut Vec<String>) -> Vec<FtraceHook> {
    let mut hooks = Vec::new();
    match crate::proc::read_file(&format!("{dir}/enabled_functions")) {
        Ok(b) => hooks.extend(parse_enabled_functions(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => notes
            .push("ftrace hooks not checked: no enabled_functions (kernel without dynamic ftrace)".into()),
        Err(e) => notes.push(format!(
            "ftrace hooks not checked: {dir}/enabled_functions: {e} (refused by the kernel: lockdown or a missing capability)"
        )),
    }
    match crate::proc::read_file(&format!("{dir}/kprobe_events")) {
        Ok(b) => hooks.extend(parse_kprobe_events(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => notes.push(
            "kprobes not checked: this kernel has no kprobe_events (built without kprobes)".into(),
        ),
        Err(e) => notes.push(format!("kprobes not checked: {dir}/kprobe_events: {e}")),
    }
    hooks
}

/// Where a module found behind a patched syscall was seen.
const MEMORY_SOURCE: &str = "kernel memory (its struct module, next to a patched syscall's code)";

/// Where a module was seen.
#[derive(Clone, Debug, Default)]
pub struct ModuleSources {
    /// `/proc/modules`: the kernel's module list.
    pub list: Vec<String>,
    /// `/sys/module/NAME` with an `initstate` (loadable, not built in).
    pub sysfs: Vec<String>,
    /// `[NAME]` owners in kallsyms.
    pub kallsyms: Vec<String>,
    /// `/sys/kernel/btf/NAME` other than vmlinux.
    pub btf: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct HiddenModule {
    pub name: String,
    /// The places that still show it.
    pub seen_in: Vec<&'static str>,
}

/// Modules missing from the module list but present elsewhere.
pub fn hidden_modules(s: &ModuleSources) -> Vec<HiddenModule> {
    let mut names: Vec<&String> = s.sysfs.iter().chain(&s.kallsyms).chain(&s.btf).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| !s.list.contains(n))
        .map(|n| {
            let seen_in = [
                (&s.sysfs, "/sys/module"),
                (&s.kallsyms, "kallsyms"),
                (&s.btf, "/sys/kernel/btf"),
            ]
            .into_iter()
            .filter(|(l, _)| l.contains(n))
            .map(|(_, w)| w)
            .collect();
            HiddenModule {
                name: n.clone(),
                seen_in,
            }
        })
        .collect()
}

/// Reads every module source; `None` (with a note) when the kernel has no
/// module support.
pub fn module_sources(ksyms: Option<&Kallsyms>, notes: &mut Vec<String>) -> Option<ModuleSources> {
    let list = match crate::proc::read_file("/proc/modules") {
        Ok(b) => String::from_utf8_lossy(&b)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            notes.push("no kernel modules: this kernel is built without module support".into());
            return None;
        }
        Err(e) => {
            notes.push(format!("hidden modules not checked: /proc/modules: {e}"));
            return None;
        }
    };
    let dir_names = |path: &str, keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        crate::proc::list_dir_names(path)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .filter(|n| keep(n))
            .collect()
    };
    if ksyms.is_none() {
        notes.push("hidden modules: kallsyms not compared (no symbol addresses)".into());
    }
    Some(ModuleSources {
        list,
        sysfs: dir_names("/sys/module", &|n| {
            std::path::Path::new(&format!("/sys/module/{n}/initstate")).exists()
        }),
        kallsyms: ksyms.map(Kallsyms::module_names).unwrap_or_default(),
        btf: dir_names("/sys/kernel/btf", &|n| n != "vmlinux"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str = "\
ffffffff81000000 T _stext
ffffffff8177b070 t proc_root_readdir
ffffffff820301a0 t tcp4_seq_show
ffffffff82030400 t tcp4_seq_start
ffffffff8220bb08 T _etext
ffffffffc0100000 t evil_show\t[rootkit]
";

    fn ksyms() -> Kallsyms {
        Kallsyms::parse(RECORDED.as_bytes().to_vec())
    }

    #[test]
    fn pointer_to_the_expected_function_is_clean() {
        let k = ksyms();
        let text = k.kernel_text().unwrap();
        let c = check_pointer("tcp", "tcp4_seq_show", 0xffffffff820301a0, &text, &k);
        assert_eq!(c.verdict, Verdict::Expected);
        assert_eq!(c.points_to.as_deref(), Some("tcp4_seq_show"));
    }

    #[test]
    fn pointer_into_a_module_is_outside_kernel_text() {
        let k = ksyms();
        let text = k.kernel_text().unwrap();
        let c = check_pointer("tcp", "tcp4_seq_show", 0xffffffffc0100010, &text, &k);
        assert_eq!(c.verdict, Verdict::OutsideKernelText);
        assert_eq!(c.points_to.as_deref(), Some("evil_show+0x10"));
        assert_eq!(c.address, "0xffffffffc0100010");
    }

    #[test]
    fn pointer_to_another_kernel_function_is_named() {
        let k = ksyms();
        let text = k.kernel_text().unwrap();
        let c = check_pointer("tcp", "tcp4_seq_show", 0xffffffff82030400, &text, &k);
        assert_eq!(c.verdict, Verdict::OtherKernelFunction);
        assert_eq!(c.points_to.as_deref(), Some("tcp4_seq_start"));
        let mid = check_pointer("proc", "proc_root_readdir", 0xffffffff8177b074, &text, &k);
        assert_eq!(mid.verdict, Verdict::OtherKernelFunction, "mid-function");
    }

    #[test]
    fn module_missing_from_the_list_is_hidden() {
        let s = ModuleSources {
            list: vec!["e1000".into()],
            sysfs: vec!["e1000".into(), "diamorphine".into()],
            kallsyms: vec!["e1000".into(), "diamorphine".into(), "reptile".into()],
            btf: vec!["e1000".into()],
        };
        assert_eq!(
            hidden_modules(&s),
            [
                HiddenModule {
                    name: "diamorphine".into(),
                    seen_in: vec!["/sys/module", "kallsyms"],
                },
                HiddenModule {
                    name: "reptile".into(),
                    seen_in: vec!["kallsyms"],
                },
            ]
        );
        let clean = ModuleSources {
            list: vec!["e1000".into()],
            sysfs: vec!["e1000".into()],
            ..Default::default()
        };
        assert!(hidden_modules(&clean).is_empty());
    }

    #[test]
    fn enabled_functions_and_kprobes_parse() {
        let ef = "tcp4_seq_show (1) R I  \ttramp: 0xffffffffc0201000 (fh_ftrace_thunk+0x0/0x40) ->ftrace_ops_list_func+0x0/0x1c0\n";
        let h = parse_enabled_functions(ef);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].function, "tcp4_seq_show");
        assert!(h[0].detail.contains("fh_ftrace_thunk"));
        assert!(!h[0].detail.contains('\t'), "{}", h[0].detail);
        let kp = parse_kprobe_events("p:kprobes/hide __x64_sys_getdents64+4 arg1=%di\n");
        assert_eq!(kp[0].function, "__x64_sys_getdents64");
        assert_eq!(kp[0].mechanism, "kprobe");
    }
}
