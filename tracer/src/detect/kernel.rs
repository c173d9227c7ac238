//! Kernel-layer findings: BPF programs that can rewrite what user space
//! reads or signal processes, programs on the syscalls and /proc functions
//! rootkits hook, programs nobody holds, pins in odd places, patched
//! function pointers, ftrace hooks and hidden modules. Each finding says
//! which hook, where it points, who owns it and (through `link`) which
//! hidden processes or connections it likely explains.
use crate::{
    model::{Finding, Process, Severity},
    views::{
        bpf::BpfProgram,
        kernel_hooks::{FtraceHook, KernelState, Verdict},
    },
};

/// The layer of every finding here.
pub const LAYER: &str = "kernel";

/// Helpers that let a program change what user space sees or does.
const DANGEROUS_HELPERS: &[(&str, &str)] = &[
    (
        "bpf_probe_write_user",
        "writes into user memory (rewrites what a program reads)",
    ),
    (
        "bpf_override_return",
        "overrides a kernel function's return value",
    ),
    ("bpf_send_signal", "sends signals to processes"),
    ("bpf_send_signal_thread", "sends signals to threads"),
];

/// What a hook on a function or syscall likely hides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hides {
    /// Processes missing from /proc (getdents64, /proc readdir, openat).
    Processes,
    /// Processes kill(2) denies.
    FromKill,
    /// Connections missing from /proc/net (seq_show of tcp/udp).
    Connections,
    /// File contents (read): nothing tracer diffs.
    Reads,
}

/// Which finding kinds/layers of the other detectors a hook explains.
/// `net-hidden`'s connection findings are matched by layer.
pub fn explains(hides: Hides, other: &Finding) -> bool {
    match hides {
        Hides::Processes => matches!(
            other.kind.as_str(),
            "hidden-from-proc" | "proc-pid-unreadable" | super::hidden::CORRUPT_LISTING
        ),
        Hides::FromKill => other.kind == "hidden-from-kill",
        Hides::Connections => {
            matches!(other.layer.as_str(), "procnet" | "proc-net")
                || (other.kind.contains("connection") && other.layer != LAYER)
        }
        Hides::Reads => false,
    }
}

/// The function or syscall a hook point names, and what hooking it hides.
/// `tracepoint/sys_exit_getdents64`, `kprobe/__x64_sys_kill`,
/// `tcp4_seq_show`...
pub fn sensitive(point: &str) -> Option<Hides> {
    let name = point.rsplit(['/', ':']).next().unwrap_or(point);
    let name = name.split('+').next().unwrap_or(name);
    let base = [
        "sys_enter_",
        "sys_exit_",
        "__x64_sys_",
        "__ia32_sys_",
        "__se_sys_",
        "__do_sys_",
        "ksys_",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .unwrap_or(name);
    match base {
        "getdents64" | "getdents" | "openat" | "openat2" | "open" => Some(Hides::Processes),
        "kill" | "tkill" | "tgkill" | "pidfd_send_signal" => Some(Hides::FromKill),
        "read" | "pread64" | "readv" | "vfs_read" => Some(Hides::Reads),
        _ if base.starts_with("proc_") || base.starts_with("filldir") => Some(Hides::Processes),
        _ if [
            "tcp4_seq_",
            "tcp6_seq_",
            "udp4_seq_",
            "udp6_seq_",
            "udp_seq_",
            "tcp_seq_",
        ]
        .iter()
        .any(|p| base.starts_with(p)) =>
        {
            Some(Hides::Connections)
        }
        _ => None,
    }
}

/// The kernel findings, and for each what it likely hides.
pub fn detect(state: &KernelState) -> Vec<(Finding, Vec<Hides>)> {
    let mut out = Vec::new();
    for p in state.bpf.programs.iter().filter(|p| !p.tracer_own) {
        out.extend(program_finding(p));
    }
    for c in state
        .pointers
        .iter()
        .filter(|c| c.verdict != Verdict::Expected)
    {
        let hides = sensitive(&c.expected).into_iter().collect();
        let where_ = c.points_to.clone().unwrap_or_else(|| "no symbol".into());
        out.push((
            Finding {
                kind: "hooked-function-pointer".into(),
                severity: Severity::Critical,
                layer: LAYER.into(),
                id: String::new(),
                connection: None,
                related: vec![],
                sigma: None,
                summary: format!(
                    "{} points to {} instead of {}",
                    c.what, where_, c.expected
                ),
                process: None,
                ancestry: vec![],
                evidence: vec![
                    ("pointer".into(), c.what.clone()),
                    ("address".into(), c.address.clone()),
                    ("points to".into(), where_),
                    ("expected".into(), c.expected.clone()),
                    (
                        "verdict".into(),
                        match c.verdict {
                            Verdict::OutsideKernelText => "outside kernel text (_stext.._etext)",
                            _ => "another kernel function",
                        }
                        .into(),
                    ),
                ],
                next_step: "the kernel is compromised: preserve memory (e.g. with LiME) and rebuild the host".into(),
            },
            hides,
        ));
    }
    for h in &state.hooks {
        out.push(hook_finding(h));
    }
    for m in &state.hidden_modules {
        out.push((
            Finding {
                kind: "hidden-kernel-module".into(),
                severity: Severity::Critical,
                layer: LAYER.into(),
                id: String::new(),
                connection: None,
                related: vec![],
                sigma: None,
                summary: format!(
                    "kernel module {} is missing from the module list but seen in {}",
                    m.name,
                    m.seen_in.join(", ")
                ),
                process: None,
                ancestry: vec![],
                evidence: vec![
                    ("module".into(), m.name.clone()),
                    ("seen in".into(), m.seen_in.join(", ")),
                ],
                next_step: "the kernel is compromised: preserve memory and rebuild the host".into(),
            },
            vec![Hides::Processes, Hides::Connections],
        ));
    }
    // Ids only need to tell this run's kernel findings apart, for `related`.
    for (n, (f, _)) in out.iter_mut().enumerate() {
        f.id = format!("{}:{n}", f.kind);
    }
    link_hidden_modules(&mut out);
    link_kprobes_to_their_ftrace_hook(&mut out);
    out
}

/// On x86 a kprobe at a function's entry is an ftrace hook whose callback
/// is `kprobe_ftrace_handler`: that hook is the kprobes' mechanism, so it is
/// linked to the kprobes (tracefs ones and BPF kprobe programs) on the same
/// function, and says whose they are.
fn link_kprobes_to_their_ftrace_hook(out: &mut [(Finding, Vec<Hides>)]) {
    let mut pairs = Vec::new();
    for (i, (f, _)) in out.iter().enumerate() {
        let by_kprobes = f.kind == "ftrace-hook"
            && evidence(f, "hook").is_some_and(|h| h.contains("kprobe_ftrace_handler"));
        let Some(function) = evidence(f, "function").filter(|_| by_kprobes) else {
            continue;
        };
        for (j, (k, _)) in out.iter().enumerate() {
            let kprobe = k.kind == "kprobe-hook" && evidence(k, "function") == Some(function);
            let program = evidence(k, "attach").is_some_and(|a| {
                a.split(", ").any(|point| {
                    point.starts_with("kprobe")
                        && point
                            .rsplit(['/', ':'])
                            .next()
                            .map(|n| n.split('+').next().unwrap_or(n))
                            == Some(function)
                })
            });
            if kprobe || program {
                pairs.push((i, j));
            }
        }
    }
    for (ftrace, kprobe) in pairs {
        let (kid, ksummary) = (out[kprobe].0.id.clone(), out[kprobe].0.summary.clone());
        let fid = out[ftrace].0.id.clone();
        let f = &mut out[ftrace].0;
        f.related.push(kid);
        f.evidence.push(("kprobe behind it".into(), ksummary));
        out[kprobe].0.related.push(fid);
    }
}

fn evidence<'f>(f: &'f Finding, label: &str) -> Option<&'f str> {
    f.evidence
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, v)| v.as_str())
}

/// A pointer that leads out of kernel text into a hidden module's symbol,
/// or to no symbol at all (a module gone from the list takes its symbols
/// out of kallsyms), likely belongs to that hidden module: link the two.
fn link_hidden_modules(out: &mut [(Finding, Vec<Hides>)]) {
    let modules: Vec<(usize, String)> = out
        .iter()
        .enumerate()
        .filter(|(_, (f, _))| f.kind == "hidden-kernel-module")
        .filter_map(|(i, (f, _))| Some((i, evidence(f, "module")?.to_string())))
        .collect();
    let mut pairs = Vec::new();
    for (i, (f, _)) in out.iter().enumerate() {
        let outside = evidence(f, "verdict").is_some_and(|v| v.starts_with("outside"));
        if f.kind != "hooked-function-pointer" || !outside {
            continue;
        }
        let points = evidence(f, "points to").unwrap_or("no symbol");
        for (m, name) in &modules {
            if points == "no symbol" || points.ends_with(&format!("[{name}]")) {
                pairs.push((i, *m, name.clone()));
            }
        }
    }
    for (pointer, module, name) in pairs {
        let (pointer_id, pointer_summary) =
            (out[pointer].0.id.clone(), out[pointer].0.summary.clone());
        let module_id = out[module].0.id.clone();
        let p = &mut out[pointer].0;
        p.related.push(module_id);
        p.evidence.push((
            "likely planted by".into(),
            format!("hidden kernel module {name}"),
        ));
        let m = &mut out[module].0;
        m.related.push(pointer_id);
        m.evidence.push(("likely patched".into(), pointer_summary));
    }
}

fn hook_finding(h: &FtraceHook) -> (Finding, Vec<Hides>) {
    let hides: Vec<Hides> = sensitive(&h.function).into_iter().collect();
    let severity = if hides.is_empty() {
        Severity::Medium
    } else {
        Severity::High
    };
    (
        Finding {
            kind: format!("{}-hook", h.mechanism),
            severity,
            layer: LAYER.into(),
            id: String::new(),
            connection: None,
            related: vec![],
            sigma: None,
            summary: format!(
                "kernel function {} is hooked through {}",
                h.function, h.mechanism
            ),
            process: None,
            ancestry: vec![],
            evidence: vec![
                ("function".into(), h.function.clone()),
                ("hook".into(), h.detail.clone()),
            ],
            next_step: "find the owner of the callback named above (a module or a tracing tool)"
                .into(),
        },
        hides,
    )
}

/// One finding per suspicious program, with every reason it is suspicious.
fn program_finding(p: &BpfProgram) -> Option<(Finding, Vec<Hides>)> {
    let mut reasons: Vec<(Severity, &str, String)> = Vec::new();
    let mut hides = Vec::new();
    if p.unlisted {
        reasons.push((
            Severity::Critical,
            "bpf-hidden-program",
            "the kernel's program table (iter/bpf_prog) or a holder's fd shows it, the bpf(2) id listing does not: something doctors the listing".into(),
        ));
    }
    for (helper, why) in DANGEROUS_HELPERS {
        if p.helpers.iter().any(|h| h == helper) {
            reasons.push((
                Severity::High,
                "bpf-dangerous-helper",
                format!("calls {helper}: {why}"),
            ));
        }
    }
    // A program that writes user memory where the kernel does not say
    // where it is attached (a perf-event link before Linux 6.6) can rewrite
    // any listing: it may explain what is hidden from /proc.
    let attach_unknown =
        p.attach.is_empty() || p.attach.iter().all(|a| a.starts_with("perf_event"));
    if attach_unknown && p.helpers.iter().any(|h| h == "bpf_probe_write_user") {
        hides.push(Hides::Processes);
    }
    for point in &p.attach {
        if let Some(h) = sensitive(point) {
            hides.push(h);
            reasons.push((
                Severity::High,
                "bpf-sensitive-hook",
                format!("attached to {point}"),
            ));
        }
    }
    if p.owners_known && p.owners.is_empty() {
        if p.pins.is_empty() {
            reasons.push((
                Severity::Medium,
                "bpf-no-owner",
                "no process holds it and it is not pinned (kept alive by its attachment only)"
                    .into(),
            ));
        } else {
            reasons.push((
                Severity::Low,
                "bpf-pinned-no-owner",
                "no process holds it: it lives on through its pin".into(),
            ));
        }
    }
    for pin in &p.pins {
        if !pin.starts_with("/sys/fs/bpf") {
            reasons.push((
                Severity::Medium,
                "bpf-unusual-pin",
                format!("pinned outside /sys/fs/bpf at {}", pin.display()),
            ));
        }
    }
    let (severity, kind, _) = reasons.iter().max_by_key(|(s, _, _)| *s)?.clone();
    let owner = p.owners.first();
    let process = owner.map(|o| {
        crate::proc::read_process(o.pid).unwrap_or_else(|| Process {
            pid: o.pid,
            comm: o.comm.clone(),
            ..Default::default()
        })
    });
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let attach = list(p.attach.clone());
    let mut evidence = vec![
        (
            "program".into(),
            format!("id {} {} \"{}\" tag {}", p.id, p.prog_type, p.name, p.tag),
        ),
        ("attach".into(), attach.clone()),
        ("helpers".into(), list(p.helpers.clone())),
        (
            "owners".into(),
            list(
                p.owners
                    .iter()
                    .map(|o| format!("pid {} ({}) fd {} {}", o.pid, o.comm.as_str(), o.fd, o.via))
                    .collect(),
            ),
        ),
        (
            "pins".into(),
            list(p.pins.iter().map(|x| x.display().to_string()).collect()),
        ),
        (
            "maps".into(),
            list(p.map_ids.iter().map(u32::to_string).collect()),
        ),
        (
            "loaded".into(),
            format!(
                "{} s after boot by uid {}",
                p.loaded_at_ns / 1_000_000_000,
                p.uid
            ),
        ),
    ];
    evidence.extend(
        reasons
            .iter()
            .map(|(_, _, why)| ("reason".to_string(), why.clone())),
    );
    let summary = format!(
        "BPF program {} \"{}\" ({}) on {}: {}",
        p.id,
        p.name,
        p.prog_type,
        attach,
        reasons
            .iter()
            .map(|r| r.2.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let next_step = match owner {
        Some(o) => format!(
            "identify pid {} and, if malicious, `tracer kill-tree {}`; the program goes when its last holder does",
            o.pid, o.pid
        ),
        None if !p.pins.is_empty() => format!(
            "inspect with `bpftool prog dump xlated id {}`, then remove its pins (rm {}) to unload it",
            p.id,
            p.pins.iter().map(|x| x.display().to_string()).collect::<Vec<_>>().join(" ")
        ),
        None => format!(
            "inspect with `bpftool prog dump xlated id {}` and `bpftool link`; detach its link to unload it",
            p.id
        ),
    };
    hides.dedup();
    Some((
        Finding {
            kind: kind.into(),
            severity,
            layer: LAYER.into(),
            id: String::new(),
            connection: None,
            related: vec![],
            sigma: None,
            summary,
            process,
            ancestry: vec![],
            evidence,
            next_step,
        },
        hides,
    ))
}

/// Links each kernel finding to the process and connection findings it
/// likely explains, both ways: "likely hides" on the kernel finding,
/// "likely hidden by" on the other.
pub fn link(kernel: Vec<(Finding, Vec<Hides>)>, others: &mut [Finding]) -> Vec<Finding> {
    kernel
        .into_iter()
        .map(|(mut k, hides)| {
            for o in others.iter_mut() {
                if hides.iter().any(|h| explains(*h, o)) {
                    let pid = o.process.as_ref().map_or("-".into(), |p| p.pid.to_string());
                    k.evidence.push((
                        "likely hides".into(),
                        format!("pid {pid}: {} ({})", o.kind, o.summary),
                    ));
                    o.evidence
                        .push(("likely hidden by".into(), k.summary.clone()));
                    k.related.push(o.id.clone());
                    o.related.push(k.id.clone());
                }
            }
            k
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::bpf::Owner;

    fn prog() -> BpfProgram {
        BpfProgram {
            id: 45,
            prog_type: "tracepoint",
            name: "sys_exit_getden".into(),
            attach: vec!["tracepoint/sys_exit_getdents64".into()],
            owners: vec![Owner {
                pid: 4321,
                comm: "bpftrace".into(),
                fd: 9,
                via: "perf_event",
            }],
            owners_known: true,
            ..Default::default()
        }
    }

    #[test]
    fn hook_points_map_to_what_they_hide() {
        assert_eq!(
            sensitive("tracepoint/sys_exit_getdents64"),
            Some(Hides::Processes)
        );
        assert_eq!(sensitive("kprobe/__x64_sys_kill+4"), Some(Hides::FromKill));
        assert_eq!(sensitive("tcp4_seq_show"), Some(Hides::Connections));
        assert_eq!(sensitive("proc_root_readdir"), Some(Hides::Processes));
        assert_eq!(sensitive("raw_tracepoint/sched_process_exec"), None);
        assert_eq!(sensitive("tracepoint/sys_enter_readahead"), None);
    }

    #[test]
    fn getdents_program_names_attach_point_and_owner() {
        let (f, hides) = program_finding(&prog()).unwrap();
        assert_eq!(f.kind, "bpf-sensitive-hook");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.process.as_ref().unwrap().pid, 4321);
        assert!(f.summary.contains("tracepoint/sys_exit_getdents64"));
        assert_eq!(hides, [Hides::Processes]);
    }

    #[test]
    fn signal_helper_is_high_and_plain_owned_program_is_clean() {
        let mut p = prog();
        p.attach = vec!["tracepoint/sched_switch".into()];
        assert!(program_finding(&p).is_none(), "an owned, ordinary program");
        p.helpers = vec!["bpf_send_signal".into()];
        let (f, _) = program_finding(&p).unwrap();
        assert_eq!(
            (f.kind.as_str(), f.severity),
            ("bpf-dangerous-helper", Severity::High)
        );
    }

    #[test]
    fn program_missing_from_the_id_listing_is_critical() {
        let mut p = prog();
        p.attach = vec!["tracepoint/sched_switch".into()];
        p.unlisted = true;
        let (f, _) = program_finding(&p).unwrap();
        assert_eq!(
            (f.kind.as_str(), f.severity),
            ("bpf-hidden-program", Severity::Critical)
        );
    }

    #[test]
    fn ownerless_pinned_program_in_odd_place_is_reported_with_its_pin() {
        let mut p = prog();
        p.attach.clear();
        p.owners.clear();
        p.pins = vec!["/tmp/x/hideme".into()];
        let (f, _) = program_finding(&p).unwrap();
        assert_eq!(f.kind, "bpf-unusual-pin");
        assert!(f
            .evidence
            .iter()
            .any(|(l, v)| l == "pins" && v == "/tmp/x/hideme"));
        p.pins.clear();
        assert_eq!(program_finding(&p).unwrap().0.kind, "bpf-no-owner");
        p.owners_known = false;
        assert!(
            program_finding(&p).is_none(),
            "owners unknown is not no owner"
        );
    }

    #[test]
    fn patched_syscall_entry_links_to_the_hidden_module() {
        use crate::views::kernel_hooks::{HiddenModule, PointerCheck};
        let state = KernelState {
            pointers: vec![PointerCheck {
                what: "sys_call_table[217] (getdents64)".into(),
                expected: "__x64_sys_getdents64".into(),
                address: "0xffffffffc0100000".into(),
                points_to: None,
                verdict: Verdict::OutsideKernelText,
            }],
            hidden_modules: vec![HiddenModule {
                name: "tracer_test_rootkit".into(),
                seen_in: vec!["/sys/module"],
            }],
            ..Default::default()
        };
        let found = detect(&state);
        let (pointer, hides) = &found[0];
        let module = &found[1].0;
        assert_eq!(hides, &[Hides::Processes], "getdents64 hides processes");
        assert!(
            pointer.summary.contains("sys_call_table[217]"),
            "{}",
            pointer.summary
        );
        assert_eq!(pointer.related, std::slice::from_ref(&module.id));
        assert_eq!(module.related, std::slice::from_ref(&pointer.id));
    }

    #[test]
    fn an_ftrace_hook_by_the_kprobe_handler_names_the_kprobes_on_its_function() {
        let f = "__x64_sys_getdents64";
        let state = KernelState {
            hooks: vec![
                FtraceHook {
                    function: f.into(),
                    detail: "(1) R tramp: 0xffffffffc0000000 (kprobe_ftrace_handler+0x0/0x1b0) ->kprobe_ftrace_handler+0x0/0x1b0".into(),
                    mechanism: "ftrace",
                },
                FtraceHook {
                    function: f.into(),
                    detail: "p:kprobes/hide __x64_sys_getdents64".into(),
                    mechanism: "kprobe",
                },
            ],
            ..Default::default()
        };
        let mut p = prog();
        p.attach = vec![format!("kprobe/{f}")];
        let mut state = state;
        state.bpf.programs = vec![p];
        let found = detect(&state);
        let by = |kind: &str| {
            found
                .iter()
                .map(|(f, _)| f)
                .find(|f| f.kind == kind)
                .unwrap()
        };
        let ft = by("ftrace-hook");
        assert!(
            ft.related.contains(&by("kprobe-hook").id),
            "{:?}",
            ft.related
        );
        assert!(
            ft.related.contains(&by("bpf-sensitive-hook").id),
            "{:?}",
            ft.related
        );
    }

    #[test]
    fn a_user_memory_writer_attached_where_the_kernel_does_not_say_explains_hiding() {
        let mut p = prog();
        p.attach = vec!["perf_event type 0".into()];
        p.helpers = vec!["bpf_probe_write_user".into()];
        let (_, hides) = program_finding(&p).unwrap();
        assert_eq!(hides, [Hides::Processes]);
    }

    #[test]
    fn getdents_hook_explains_a_corrupt_listing() {
        let listing = Finding {
            kind: crate::detect::hidden::CORRUPT_LISTING.into(),
            severity: Severity::Critical,
            layer: "kernel".into(),
            summary: "corrupt".into(),
            process: None,
            ancestry: vec![],
            evidence: vec![],
            next_step: String::new(),
            id: "corrupt-directory-listing:/proc".into(),
            connection: None,
            related: vec![],
            sigma: None,
        };
        let (k, hides) = program_finding(&prog()).unwrap();
        let mut others = vec![listing];
        let linked = link(vec![(k, hides)], &mut others);
        assert_eq!(linked[0].related, ["corrupt-directory-listing:/proc"]);
    }

    #[test]
    fn getdents_hook_links_to_process_hidden_from_proc() {
        let (k, hides) = program_finding(&prog()).unwrap();
        let hidden = Finding {
            kind: "hidden-from-proc".into(),
            severity: Severity::Critical,
            layer: "kernel".into(),
            summary: "pid 77 hidden".into(),
            process: Some(Process {
                pid: 77,
                ..Default::default()
            }),
            ancestry: vec![],
            evidence: vec![],
            next_step: String::new(),
            id: String::new(),
            connection: None,
            related: vec![],
            sigma: None,
        };
        let libc = Finding {
            kind: "hidden-from-libc".into(),
            layer: "libc".into(),
            ..hidden.clone()
        };
        let mut others = vec![hidden, libc];
        let linked = link(vec![(k, hides)], &mut others);
        assert!(linked[0]
            .evidence
            .iter()
            .any(|(l, v)| l == "likely hides" && v.starts_with("pid 77")));
        assert!(others[0]
            .evidence
            .iter()
            .any(|(l, _)| l == "likely hidden by"));
        assert!(
            others[1].evidence.is_empty(),
            "libc hiding is not the kernel's doing"
        );
    }
}
