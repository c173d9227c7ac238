//! Kernel side of tracer: loads the embedded eBPF object with offsets
//! resolved from BTF, chooses and attaches hooks, runs the task iterator,
//! and hands out the event ring buffer and the loss counters.
pub mod attach_btf;
pub mod bpf_files;
pub mod bpf_sys;
mod btf_index;
pub mod capture;
pub mod datagram;
pub mod events;
pub mod file_users;
pub mod kmem;
pub mod mounts;
pub mod offsets;
pub mod sockets;

use std::collections::HashMap;
use std::{io::Read, os::fd::BorrowedFd};

use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, Iter, KProbe, RawTracePoint},
    Btf, Ebpf, EbpfLoader,
};
use schemars::JsonSchema;
use serde::Serialize;
use tracer_common::{BpfFileRecord, TaskRecord, LOST_SLOTS};

use crate::error::UserError;

/// The eBPF object built from `tracer-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

const BTF_RELEASED: &str = "kernel BTF already released: load programs before release_btf";

/// Which kernel hook feeds one kind of event, and why it was chosen.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct HookChoice {
    pub event: &'static str,
    pub hook: String,
    pub reason: String,
}

pub struct Kernel {
    ebpf: Ebpf,
    /// The attach BTF aya loads BTF-typed programs with, and the indexed
    /// kernel BTF the offsets come from (hooks attached later read theirs
    /// from it too); both released once the programs are loaded (see
    /// `release_btf`).
    btf: Option<Btf>,
    kernel_btf: Option<offsets::KernelBtf>,
    pub hooks: Vec<HookChoice>,
    /// Whether each socket iterator loaded, and why not (`tracer status`).
    pub socket_iterators: Vec<sockets::IteratorStatus>,
    /// Why the BPF-file iterator is not available, if it is not: the rest
    /// of tracer works without it.
    bpf_files_unavailable: Option<String>,
    /// Why the kernel-memory reader is not available, if it is not.
    kmem_unavailable: Option<String>,
    /// Why the kallsyms iterator is not available, if it is not.
    ksym_unavailable: Option<String>,
    /// How to recognise a `struct module` in memory (kernel checks).
    module_layout: Option<offsets::ModuleLayout>,
    /// Which file-user iterators loaded (`--file` selectors).
    file_users: file_users::Availability,
}

/// CAP_PERFMON (38) and CAP_BPF (39), or CAP_SYS_ADMIN (21) which implies both.
fn has_bpf_capabilities() -> bool {
    let Ok(status) = crate::proc::read_file("/proc/self/status") else {
        return false;
    };
    let text = String::from_utf8_lossy(&status);
    let Some(caps) = text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    has(21) || (has(38) && has(39))
}

/// Fails with one clear line when the caller cannot load eBPF programs.
pub fn check_privileges(command: &str) -> Result<()> {
    if has_bpf_capabilities() {
        Ok(())
    } else {
        Err(UserError::NotPrivileged {
            command: command.to_string(),
        }
        .into())
    }
}

/// What a command needs of the kernel object beside the task iterator:
/// each iterator costs a verifier pass at start-up, and the event ring
/// buffer megabytes the kernel must zero.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// `iter/task_file`, `iter/tcp`, `iter/udp` for sockets.
    pub sockets: bool,
    /// The BPF-file and BPF-program iterators of the kernel checks.
    pub bpf_files: bool,
    /// A full-size event ring buffer, for commands that attach hooks.
    pub events: bool,
    /// The file-user iterators (`--file` selectors).
    pub files: bool,
    /// BTF tracepoints and fentry may be attached (watch's hooks,
    /// kill-tree's fork capture): their attach targets cost a parse of part
    /// of the BTF.
    pub tracepoints: bool,
}

impl Needs {
    pub const ALL: Needs = Needs {
        sockets: true,
        bpf_files: true,
        events: true,
        files: true,
        tracepoints: true,
    };
    /// Every iterator and no hook (`hidden`).
    pub const SCAN: Needs = Needs {
        sockets: true,
        bpf_files: true,
        events: false,
        files: false,
        tracepoints: false,
    };
    /// A one-shot look at sockets and processes (`net`, `kill-tree`).
    pub const SOCKETS: Needs = Needs {
        sockets: true,
        bpf_files: false,
        events: false,
        files: false,
        tracepoints: false,
    };
    /// `net`, `kill-tree` and `hidden` with `--file`: sockets and the
    /// file-user iterators.
    pub const FILES: Needs = Needs {
        sockets: true,
        bpf_files: false,
        events: false,
        files: true,
        tracepoints: false,
    };
    /// `watch`: events, and sockets for its start-up snapshot.
    pub const WATCH: Needs = Needs {
        sockets: true,
        bpf_files: false,
        events: true,
        files: false,
        tracepoints: true,
    };
}

/// The kernel checks' iterators: BPF files of every process, and every
/// BPF program.
const BPF_FILE_ITERATORS: [(&str, &str); 2] = [
    ("bpf_files_iter", "task_file"),
    ("bpf_progs_iter", "bpf_prog"),
];

impl Kernel {
    /// Loads the object and every iterator. `command` names the subcommand
    /// for the privilege error message.
    pub fn load(command: &str) -> Result<Self> {
        Self::load_for(command, Needs::ALL)
    }

    /// Loads the object and the iterators `needs` names; hooks are
    /// attached later by the command that wants them.
    pub fn load_for(command: &str, needs: Needs) -> Result<Self> {
        check_privileges(command)?;
        // A command that attaches no hook needs only the iterators' attach
        // BTF: it is built on a thread from the targets the BTF pass
        // streams to it, as the pass finds them.
        let (found_tx, streamed_attach_btf) = if needs.tracepoints {
            (None, None)
        } else {
            let (tx, rx) = std::sync::mpsc::channel();
            let builder = std::thread::spawn(move || {
                let _t = crate::timings::span("kernel: attach BTF (a thread, beside the pass)");
                attach_btf::build_from(rx)
            });
            (Some(tx), Some(builder))
        };
        // aya's loader is made beside our own indexed lookup of the BTF
        // (see `loader_without_btf_parse`).
        let (kernel_btf, loader) = std::thread::scope(|s| {
            let loader = s.spawn(|| {
                let _t = crate::timings::span("kernel: aya's loader (a thread)");
                let mut loader = loader_without_btf_parse();
                loader.btf(None);
                // aya probes the kernel's BPF features (a dozen small
                // program and BTF loads) on first use: here, off the path.
                aya::features();
                loader
            });
            let kernel_btf = {
                let _t = crate::timings::span("kernel: BTF index");
                let btf = offsets::load_vmlinux_btf_with(|t| {
                    let iterator =
                        t.kind == attach_btf::TargetKind::Func && t.name.starts_with("bpf_iter_");
                    if let (Some(tx), true) = (&found_tx, iterator) {
                        // The builder only ends early on an error, which
                        // its join reports.
                        let _ = tx.send(t.clone());
                    }
                });
                drop(found_tx);
                btf
            };
            (
                kernel_btf,
                loader
                    .join()
                    .map_err(|_| anyhow::anyhow!("BTF loader thread panicked")),
            )
        });
        let kernel_btf = kernel_btf?;
        let mut loader = loader?;
        // The attach BTF is only needed to verify programs: with hooks, it
        // is built on a thread while the offsets are resolved and the
        // object loads.
        let attach_btf = streamed_attach_btf.unwrap_or_else(|| {
            let targets = kernel_btf.attach_targets().to_vec();
            std::thread::spawn(move || {
                let _t = crate::timings::span("kernel: attach BTF (a thread)");
                attach_btf::build(&targets)
            })
        });
        let offsets_span = crate::timings::span("kernel: offsets");
        let offsets =
            offsets::resolve(&kernel_btf).context("resolving kernel structure offsets from BTF")?;
        // The socket iterators are optional: without their offsets they
        // stay unloaded and say why, and everything else still runs.
        let socket_offsets = offsets::resolve_sockets(&kernel_btf)
            .map_err(|e| format!("socket fields not in this kernel's BTF: {e:#}"));
        // Not fatal: without these offsets only the BPF-file iterator is lost.
        let bpf_file_offsets = bpf_files::resolve(&kernel_btf, std::process::id());
        let bpf_file_globals = bpf_file_offsets.as_ref().copied().unwrap_or_default();
        let module_layout = needs
            .bpf_files
            .then(|| offsets::resolve_module_layout(&kernel_btf).ok())
            .flatten();
        let socket_globals = socket_offsets.as_ref().copied().unwrap_or_default();
        // The kallsyms iterator came in Linux 6.0: without it (or its
        // fields), the kernel checks read /proc/kallsyms.
        let ksym_offsets = needs
            .bpf_files
            .then(|| offsets::resolve_ksyms(&kernel_btf).map_err(|e| format!("{e:#}")));
        let ksym_globals = globals_of(&ksym_offsets);
        let file_user_offsets = needs
            .files
            .then(|| file_users::resolve(&kernel_btf).map_err(|e| format!("{e:#}")));
        let file_user_globals = globals_of(&file_user_offsets);
        // eBPF memory is charged to the memory cgroup since Linux 5.11; on
        // older kernels a low RLIMIT_MEMLOCK fails the load, so try to raise
        // it, but do not insist (raising needs CAP_SYS_RESOURCE).
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Memlock,
            rustix::process::Rlimit {
                current: None,
                maximum: None,
            },
        );
        if !needs.events {
            // One page, the smallest ring buffer: nothing is attached to
            // fill it, and the kernel zeroes every byte of the 8 MiB one.
            loader.map_max_entries("EVENTS", rustix::param::page_size() as u32);
            // Hash maps are preallocated whole at creation: the datagram
            // and mount tables only serve watch's hooks.
            loader.map_max_entries("DGRAM_SEEN", 1);
            loader.map_max_entries("PENDING_MOUNTS", 1);
        }
        if !needs.tracepoints {
            // kill-tree's fork capture set (65,536 entries): only its hook
            // fills it.
            loader.map_max_entries("CAPTURE_SET", 1);
        }
        drop(offsets_span);
        let object_span = crate::timings::span("kernel: object load (maps, relocations)");
        #[allow(deprecated)]
        let mut ebpf = loader
            .set_global("OFFSETS", &offsets, true)
            .set_global("SOCKET_OFFSETS", &socket_globals, true)
            .set_global("BPF_FILE_OFFSETS", &bpf_file_globals, true)
            .set_global("FILE_USER_OFFSETS", &file_user_globals, true)
            .set_global("KSYM_OFFSETS", &ksym_globals, true)
            .load(EBPF_OBJECT)
            .context("loading tracer's eBPF object")?;
        drop(loader);
        drop(object_span);
        let btf = attach_btf
            .join()
            .map_err(|_| anyhow::anyhow!("attach BTF thread panicked"))??;
        // Every iterator this command needs, verified side by side.
        let mut wanted = vec![("task_iter", "task")];
        if needs.sockets && socket_offsets.is_ok() {
            wanted.extend(sockets::ALL.iter().map(|it| (it.program, it.iterator)));
        }
        if needs.bpf_files && bpf_file_offsets.is_ok() {
            wanted.extend(BPF_FILE_ITERATORS);
        }
        if needs.bpf_files {
            wanted.push(KMEM_ITERATOR);
        }
        let has_ksym_iter = kernel_btf
            .attach_targets()
            .iter()
            .any(|t| t.name == "bpf_iter_ksym");
        if matches!(ksym_offsets, Some(Ok(_))) && has_ksym_iter {
            wanted.push(KSYM_ITERATOR);
        }
        if matches!(file_user_offsets, Some(Ok(_))) {
            wanted.extend([file_users::EXE, file_users::FD, file_users::MAP]);
        }
        // watch's BTF tracepoints are verified beside the iterators.
        let early_hooks: &[(&str, &str)] = if needs.events { &EARLY_TP_BTF } else { &[] };
        let mut loaded = {
            let _t = crate::timings::span("kernel: iterators verified");
            load_parallel(&mut ebpf, &btf, &wanted, early_hooks)
        };
        let mut kernel = Kernel {
            ebpf,
            btf: Some(btf),
            kernel_btf: Some(kernel_btf),
            hooks: Vec::new(),
            socket_iterators: Vec::new(),
            bpf_files_unavailable: None,
            kmem_unavailable: None,
            ksym_unavailable: None,
            module_layout,
            file_users: file_users::Availability::not_loaded(),
        };
        let mut result_of = |prog: &str| {
            loaded
                .remove(prog)
                .unwrap_or_else(|| Err(anyhow::anyhow!("{prog} missing from tracer's eBPF object")))
        };
        result_of("task_iter").context("loading the task iterator")?;
        if needs.sockets {
            let socket_results = sockets::ALL
                .iter()
                .map(|it| match &socket_offsets {
                    Err(why) => Err(why.clone()),
                    Ok(_) => result_of(it.program).map_err(|e| root_cause(&e)),
                })
                .collect();
            kernel.record_socket_iterators(socket_results);
        }
        let bpf_files = if needs.bpf_files {
            bpf_file_offsets.and_then(|_| {
                BPF_FILE_ITERATORS.iter().try_for_each(|(prog, target)| {
                    result_of(prog).with_context(|| format!("loading the iter/{target} program"))
                })
            })
        } else {
            Err(anyhow::anyhow!("not loaded by this command"))
        };
        if let Err(e) = bpf_files {
            kernel.bpf_files_unavailable = Some(format!("{e:#}"));
        }
        if needs.bpf_files {
            if let Err(e) = result_of(KMEM_ITERATOR.0) {
                kernel.kmem_unavailable =
                    Some(format!("loading iter/task kmem_iter: {}", root_cause(&e)));
            }
        } else {
            kernel.kmem_unavailable = Some("not loaded by this command".into());
        }
        kernel.ksym_unavailable = match ksym_offsets {
            None => Some("not loaded by this command".into()),
            Some(Err(e)) => Some(format!("kallsym_iter fields not in this kernel's BTF: {e}")),
            Some(Ok(_)) if !has_ksym_iter => {
                Some("no iter/ksym in this kernel (Linux 6.0 and later)".into())
            }
            Some(Ok(_)) => result_of(KSYM_ITERATOR.0)
                .err()
                .map(|e| format!("loading iter/ksym ksym_iter: {}", root_cause(&e))),
        };
        if let Some(offsets) = file_user_offsets {
            let mut why = |(prog, target): (&str, &str)| match &offsets {
                Err(e) => Some(format!("file fields not in this kernel's BTF: {e}")),
                Ok(_) => result_of(prog)
                    .err()
                    .map(|e| format!("loading iter/{target} {prog}: {}", root_cause(&e))),
            };
            let exe = why(file_users::EXE);
            let fd = why(file_users::FD);
            kernel.file_users = file_users::Availability {
                files: exe.or(fd),
                maps: why(file_users::MAP),
            };
        }
        Ok(kernel)
    }

    /// Lets the process's exit free the BTF, for a command that ends in
    /// milliseconds: freeing 64,000 filler types on a thread cost more CPU
    /// (page by page, with TLB shootdowns to the other CPU) than the exit's
    /// one unmapping, beside the command's own work.
    pub fn leave_btf_to_exit(&mut self) {
        std::mem::forget((self.btf.take(), self.kernel_btf.take()));
    }

    /// Frees the parsed kernel BTF (tens of MB) once every program this
    /// command needs is loaded.
    pub fn release_btf(&mut self) {
        let (btf, kernel_btf) = (self.btf.take(), self.kernel_btf.take());
        // Freeing tens of thousands of types is off the command's path.
        std::thread::spawn(move || {
            let _t = crate::timings::span("kernel: BTF released (a thread)");
            drop((btf, kernel_btf));
            // Hand the freed pages back to the system: glibc keeps them in
            // the heap otherwise, and they would count against watch's
            // footprint.
            #[cfg(target_env = "gnu")]
            unsafe {
                libc::malloc_trim(0);
            }
        });
    }

    fn tp_btf(&mut self, prog: &str, tracepoint: &str) -> Result<()> {
        // Borrow the two fields apart: the BTF is too large to clone.
        let Kernel { ebpf, btf, .. } = self;
        let btf = btf.as_ref().context(BTF_RELEASED)?;
        let p: &mut BtfTracePoint = ebpf
            .program_mut(prog)
            .context("program missing from object")?
            .try_into()?;
        // Verified already beside the iterators, when that worked.
        if p.fd().is_err() {
            p.load(tracepoint, btf)?;
        }
        p.attach()?;
        Ok(())
    }

    fn raw_tp(&mut self, prog: &str, tracepoint: &str) -> Result<()> {
        let p: &mut RawTracePoint = self
            .ebpf
            .program_mut(prog)
            .context("program missing from object")?
            .try_into()?;
        p.load()?;
        p.attach(tracepoint)?;
        Ok(())
    }

    pub(super) fn fentry(&mut self, prog: &str, function: &str) -> Result<()> {
        // Borrow the two fields apart: the BTF is too large to clone.
        let Kernel { ebpf, btf, .. } = self;
        let btf = btf.as_ref().context(BTF_RELEASED)?;
        let p: &mut FEntry = ebpf
            .program_mut(prog)
            .context("program missing from object")?
            .try_into()?;
        p.load(function, btf)?;
        p.attach()?;
        Ok(())
    }

    /// Attaches kprobe program `prog` to `function` (loading it first,
    /// once: one program may probe several functions).
    pub(super) fn kprobe(&mut self, prog: &str, function: &str) -> Result<()> {
        let p: &mut KProbe = self
            .ebpf
            .program_mut(prog)
            .context("program missing from object")?
            .try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
        p.attach(function, 0)?;
        Ok(())
    }

    /// Attaches every program watch runs (exec, fork, exit, connect,
    /// rename, mount), choosing for each the best hook this kernel accepts.
    pub fn attach_watch(&mut self) -> Result<()> {
        // exec: tp_btf reads arguments straight from BTF; raw_tracepoint is
        // the fallback with the same arguments.
        let exec = match self.tp_btf("exec_tp_btf", "sched_process_exec") {
            Ok(()) => HookChoice {
                event: "exec",
                hook: "tp_btf/sched_process_exec".into(),
                reason: "BTF-enabled tracepoint accepted".into(),
            },
            Err(e) => {
                self.raw_tp("exec_raw_tp", "sched_process_exec")
                    .context("attaching the exec hook (tp_btf and raw_tracepoint both failed)")?;
                HookChoice {
                    event: "exec",
                    hook: "raw_tracepoint/sched_process_exec".into(),
                    reason: format!("tp_btf refused: {}", root_cause(&e)),
                }
            }
        };
        self.hooks.push(exec);
        self.tp_btf("fork_tp_btf", "sched_process_fork")
            .context("attaching tp_btf/sched_process_fork")?;
        self.hooks.push(HookChoice {
            event: "fork",
            hook: "tp_btf/sched_process_fork".into(),
            reason: "new processes only; threads are skipped in the kernel".into(),
        });
        self.tp_btf("exit_tp_btf", "sched_process_exit")
            .context("attaching tp_btf/sched_process_exit")?;
        self.hooks.push(HookChoice {
            event: "exit",
            hook: "tp_btf/sched_process_exit".into(),
            reason: "a process's last thread; a main thread that exits before the others (a zombie leader) is told apart".into(),
        });
        // connect: fentry on tcp_connect sees the chosen source port; a
        // kprobe on it does too, where kprobes exist but trampolines are
        // refused; otherwise (as on lockdown kernels without kprobes) the
        // stable sock:inet_sock_set_state tracepoint (move to SYN_SENT).
        let connect = match self.fentry("connect_fentry", "tcp_connect") {
            Ok(()) => HookChoice {
                event: "connect",
                hook: "fentry/tcp_connect".into(),
                reason: "BPF trampolines available".into(),
            },
            Err(fentry) => match self.kprobe("connect_kprobe", "tcp_connect") {
                Ok(()) => HookChoice {
                    event: "connect",
                    hook: "kprobe/tcp_connect".into(),
                    reason: format!(
                        "fentry/tcp_connect refused ({}); kprobes available",
                        root_cause(&fentry)
                    ),
                },
                Err(kprobe) => {
                    self.raw_tp("connect_state_raw_tp", "inet_sock_set_state")
                        .context(
                        "attaching the connect hook (fentry, kprobe and raw_tracepoint all failed)",
                    )?;
                    HookChoice {
                        event: "connect",
                        hook: "raw_tracepoint/inet_sock_set_state (TCP_SYN_SENT)".into(),
                        reason: format!(
                            "fentry/tcp_connect refused ({}), kprobe refused ({}); source port is not chosen yet at SYN_SENT and shows as 0",
                            root_cause(&fentry),
                            root_cause(&kprobe)
                        ),
                    }
                }
            },
        };
        self.hooks.push(connect);
        let rename = self.attach_rename();
        self.hooks.push(rename);
        let udp = datagram::attach(self);
        self.hooks.push(udp);
        mounts::attach(self);
        Ok(())
    }

    /// Renames after exec (`task_rename`): tp_btf, else the raw
    /// tracepoint; without either, watch goes on and its start line says
    /// renames are not seen.
    fn attach_rename(&mut self) -> HookChoice {
        let tp_btf = match self.tp_btf("rename_tp_btf", "task_rename") {
            Ok(()) => {
                return HookChoice {
                    event: "rename",
                    hook: "tp_btf/task_rename".into(),
                    reason: "BTF-enabled tracepoint accepted; exec's own renames and kernel threads skipped in the kernel".into(),
                }
            }
            Err(e) => e,
        };
        match self.raw_tp("rename_raw_tp", "task_rename") {
            Ok(()) => HookChoice {
                event: "rename",
                hook: "raw_tracepoint/task_rename".into(),
                reason: format!("tp_btf refused: {}", root_cause(&tp_btf)),
            },
            Err(e) => HookChoice {
                event: "rename",
                hook: "none".into(),
                reason: format!(
                    "renames after exec are not seen: tp_btf ({}) and raw_tracepoint ({}) refused",
                    root_cause(&tp_btf),
                    root_cause(&e)
                ),
            },
        }
    }

    /// Every task the kernel has right now, threads included, from the
    /// `iter/task` program. Does not look at /proc at all.
    pub fn tasks(&mut self) -> Result<Vec<TaskRecord>> {
        let bytes = self.run_iterator("task_iter")?;
        Ok(events::decode_task_records(&bytes))
    }

    /// Every BPF program, link and perf event any process holds open, and
    /// the function pointers behind tracer's own open files, from the
    /// `iter/task_file` program.
    pub fn bpf_files(&mut self) -> Result<Vec<BpfFileRecord>> {
        if let Some(why) = &self.bpf_files_unavailable {
            anyhow::bail!("the BPF-file iterator did not load: {why}");
        }
        let bytes = self.run_iterator("bpf_files_iter")?;
        Ok(bpf_files::decode(&bytes))
    }

    /// The id of every BPF program, from the kernel's `iter/bpf_prog`.
    pub fn bpf_prog_ids(&mut self) -> Result<Vec<u32>> {
        if let Some(why) = &self.bpf_files_unavailable {
            anyhow::bail!("the BPF iterators did not load: {why}");
        }
        let bytes = self.run_iterator("bpf_progs_iter")?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// A reader of kernel memory for the kernel checks, usable on another
    /// thread.
    pub fn kernel_memory(&mut self) -> Result<kmem::KernelMemory> {
        if let Some(why) = &self.kmem_unavailable {
            anyhow::bail!("the kernel-memory reader did not load: {why}");
        }
        kmem::KernelMemory::new(&mut self.ebpf, self.module_layout)
    }

    /// An iterator over the kernel's symbol table, to be read (with
    /// [`read_iterator`]) on another thread; why not, where this kernel or
    /// command has none.
    pub fn kallsyms_iterator(&mut self) -> Result<std::fs::File, String> {
        if let Some(why) = &self.ksym_unavailable {
            return Err(why.clone());
        }
        self.open_iterator(KSYM_ITERATOR.0, None)
            .map_err(|e| format!("{e:#}"))
    }

    /// Where the kernel checks read the symbol table from (`tracer status`).
    pub fn kallsyms_choice(&self) -> HookChoice {
        let (hook, reason) = match &self.ksym_unavailable {
            None => (
                "iter/ksym",
                "the kernel's symbol walk as bytes, not through the proc file".to_string(),
            ),
            Some(why) => (
                "/proc/kallsyms",
                format!("kallsyms iterator unavailable: {why}"),
            ),
        };
        HookChoice {
            event: "kallsyms",
            hook: hook.to_string(),
            reason,
        }
    }

    /// Ids of the programs this process loaded.
    pub fn own_program_ids(&self) -> Vec<u32> {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
            .collect()
    }

    /// Names of the programs in tracer's object, as the kernel keeps them
    /// (at most 15 bytes).
    pub fn program_names(&self) -> Vec<String> {
        self.ebpf
            .programs()
            .map(|(name, _)| name.chars().take(15).collect())
            .collect()
    }

    /// Runs an iterator of `prog` in tracer's own namespaces and reads it
    /// to the end.
    fn run_iterator(&mut self, prog: &str) -> Result<Vec<u8>> {
        let _t = crate::timings::span("kernel: an iterator run");
        let file = self.open_iterator(prog, None)?;
        read_iterator(file, prog)
    }

    /// Attaches a loaded iterator program and creates one iterator from it,
    /// without reading it, so that several can be read side by side. With
    /// `netns`, the iterator is created from a thread that first joins that
    /// network namespace: `iter/tcp` and `iter/udp` walk the namespace of
    /// the task that creates them.
    fn open_iterator(
        &mut self,
        prog: &str,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<std::fs::File> {
        let iter: &mut Iter = self
            .ebpf
            .program_mut(prog)
            .with_context(|| format!("{prog} missing from object"))?
            .try_into()?;
        let link_id = iter.attach().with_context(|| format!("attaching {prog}"))?;
        let link = iter.take_link(link_id)?;
        Ok(match netns {
            None => link.into_file()?,
            Some(ns) => std::thread::scope(|s| {
                s.spawn(move || -> Result<std::fs::File> {
                    rustix::thread::move_into_link_name_space(
                        ns,
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .context("joining the network namespace")?;
                    Ok(link.into_file()?)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
            })?,
        })
    }

    /// The ring buffer every event arrives through.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS map missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Records the kernel could not queue, per event kind, summed over CPUs.
    pub fn lost(&self) -> Result<[u64; LOST_SLOTS as usize]> {
        let map = self.ebpf.map("LOST").context("LOST map missing")?;
        let lost: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = [0u64; LOST_SLOTS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = lost.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}

/// An `EbpfLoader` without its parse of all of vmlinux's BTF.
///
/// `EbpfLoader::new()` always parses `/sys/kernel/btf/vmlinux` whole
/// (~20 ms of CPU, ~20 MB), a copy tracer drops: offsets reach the
/// programs as globals, and attach targets come from the small BTF of
/// `attach_btf`. So the loader is made on a thread of its own whose file
/// system root (unshared from the process's: `CLONE_FS` is per thread) is
/// `/sys/kernel/btf` itself, where that path does not exist and nothing can
/// be created, and its parse fails at once. Where that is refused (no
/// CAP_SYS_CHROOT), the loader parses as before.
fn loader_without_btf_parse() -> EbpfLoader<'static> {
    let isolated = std::thread::spawn(|| {
        // SAFETY: CLONE_FS gives this thread its own root and working
        // directory; nothing else of the process changes, and the thread
        // only makes the loader and ends.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }.ok()?;
        rustix::process::chroot(offsets::BTF_DIR).ok()?;
        Some(EbpfLoader::new())
    })
    .join()
    .ok()
    .flatten();
    isolated.unwrap_or_else(EbpfLoader::new)
}

/// The offsets a program's global is set to: zeros where the command does
/// not load the program or the kernel lacks the fields (it then stays
/// unloaded).
fn globals_of<T: Copy + Default>(offsets: &Option<Result<T, String>>) -> T {
    match offsets {
        Some(Ok(off)) => *off,
        _ => T::default(),
    }
}

/// The kallsyms reader of the kernel checks (see `views::kallsyms`).
const KSYM_ITERATOR: (&str, &str) = ("ksym_iter", "ksym");

/// The kernel-memory reader of the kernel checks (see `kmem`).
const KMEM_ITERATOR: (&str, &str) = ("kmem_iter", "task");

/// Hook programs watch attaches whose verification can start with the
/// iterators' (see `load_parallel`): (program, BTF tracepoint).
const EARLY_TP_BTF: [(&str, &str); 4] = [
    ("exec_tp_btf", "sched_process_exec"),
    ("fork_tp_btf", "sched_process_fork"),
    ("exit_tp_btf", "sched_process_exit"),
    ("rename_tp_btf", "task_rename"),
];

/// What a program is loaded as.
#[derive(Clone, Copy)]
enum LoadAs {
    /// An iterator of this target.
    Iter(&'static str),
    /// A BTF tracepoint of this name.
    TpBtf(&'static str),
}

/// Loads each iterator of `wanted` (program, target) and each hook of
/// `hooks` (program, BTF tracepoint), each verifier pass on its own thread
/// (the programs are independent), and returns the result of each program
/// the object has. A hook that fails here is tried again, with its
/// fallbacks, when it is attached.
fn load_parallel(
    ebpf: &mut Ebpf,
    btf: &Btf,
    wanted: &[(&'static str, &'static str)],
    hooks: &[(&'static str, &'static str)],
) -> HashMap<&'static str, Result<()>> {
    let jobs: Vec<(&'static str, LoadAs)> = wanted
        .iter()
        .map(|(p, t)| (*p, LoadAs::Iter(t)))
        .chain(hooks.iter().map(|(p, t)| (*p, LoadAs::TpBtf(t))))
        .collect();
    let programs: Vec<(&'static str, LoadAs, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter_map(|(name, prog)| {
            let (p, how) = jobs.iter().find(|(p, _)| *p == name)?;
            Some((*p, *how, prog))
        })
        .collect();
    std::thread::scope(|s| {
        let running: Vec<_> = programs
            .into_iter()
            .map(|(name, how, prog)| {
                let load = move || -> Result<()> {
                    let _t = crate::timings::span_of("kernel: verify ", name);
                    match how {
                        LoadAs::Iter(target) => {
                            let iter: &mut Iter = prog.try_into()?;
                            iter.load(target, btf)?;
                        }
                        LoadAs::TpBtf(tracepoint) => {
                            let p: &mut BtfTracePoint = prog.try_into()?;
                            p.load(tracepoint, btf)?;
                        }
                    }
                    Ok(())
                };
                (name, s.spawn(load))
            })
            .collect();
        running
            .into_iter()
            .map(|(name, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("loader thread panicked")));
                (name, r)
            })
            .collect()
    })
}

/// The innermost cause of an error, for one-line reasons.
fn root_cause(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

/// Describes the kernel: version and BTF, for `tracer status`.
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Reads an iterator of `prog` to the end.
pub fn read_iterator(mut file: std::fs::File, prog: &str) -> Result<Vec<u8>> {
    // Read in large chunks: a read smaller than one record makes the
    // kernel's seq_file drop the rest of that record.
    let mut bytes = Vec::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut chunk)
            .with_context(|| format!("reading {prog}"))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok(bytes)
}
