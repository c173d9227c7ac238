//! Kernel side of tracer: loads the embedded eBPF object with offsets
//! resolved from BTF, chooses and attaches hooks, runs the task iterator,
//! and hands out the event ring buffer and the loss counters.
pub mod events;
pub mod offsets;

use std::io::Read;

use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, Iter, RawTracePoint},
    Btf, Ebpf, EbpfLoader,
};
use schemars::JsonSchema;
use serde::Serialize;
use tracer_common::{TaskRecord, LOST_SLOTS};

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
    /// aya's parse of vmlinux BTF, needed only to load BTF-typed programs;
    /// released once they are loaded (see `release_btf`), as it is large.
    btf: Option<Btf>,
    pub hooks: Vec<HookChoice>,
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

impl Kernel {
    /// Loads the object (maps created, no program loaded yet). `command`
    /// names the subcommand for the privilege error message.
    pub fn load(command: &str) -> Result<Self> {
        check_privileges(command)?;
        let btf_rs = offsets::load_vmlinux_btf()?;
        let offsets =
            offsets::resolve(&btf_rs).context("resolving kernel structure offsets from BTF")?;
        drop(btf_rs);
        // EbpfLoader::new() parses the kernel BTF on its own; drop that copy
        // before parsing the one we keep, so only one (~20 MB) is ever held.
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
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
        #[allow(deprecated)]
        let ebpf = loader
            .btf(Some(&btf))
            .set_global("OFFSETS", &offsets, true)
            .load(EBPF_OBJECT)
            .context("loading tracer's eBPF object")?;
        drop(loader);
        let mut kernel = Kernel {
            ebpf,
            btf: Some(btf),
            hooks: Vec::new(),
        };
        kernel.load_task_iterator()?;
        Ok(kernel)
    }

    /// Frees the parsed kernel BTF (tens of MB) once every program this
    /// command needs is loaded.
    pub fn release_btf(&mut self) {
        self.btf = None;
        // Hand the freed pages back to the system: glibc keeps them in the
        // heap otherwise, and they would count against watch's footprint.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn load_task_iterator(&mut self) -> Result<()> {
        let Kernel { ebpf, btf, .. } = self;
        let btf = btf.as_ref().context(BTF_RELEASED)?;
        let iter: &mut Iter = ebpf
            .program_mut("task_iter")
            .context("task iterator missing from object")?
            .try_into()?;
        iter.load("task", btf).context("loading the task iterator")
    }

    fn tp_btf(&mut self, prog: &str, tracepoint: &str) -> Result<()> {
        // Borrow the two fields apart: the BTF is too large to clone.
        let Kernel { ebpf, btf, .. } = self;
        let btf = btf.as_ref().context(BTF_RELEASED)?;
        let p: &mut BtfTracePoint = ebpf
            .program_mut(prog)
            .context("program missing from object")?
            .try_into()?;
        p.load(tracepoint, btf)?;
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

    fn fentry(&mut self, prog: &str, function: &str) -> Result<()> {
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

    /// Attaches the exec, fork, exit and connect programs, choosing for each
    /// the best hook this kernel accepts.
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
            reason: "thread-group leaders only".into(),
        });
        // connect: fentry on tcp_connect sees the chosen source port; where
        // BPF trampolines are refused (as on lockdown kernels) the stable
        // sock:inet_sock_set_state tracepoint (move to SYN_SENT) does the job.
        let connect = match self.fentry("connect_fentry", "tcp_connect") {
            Ok(()) => HookChoice {
                event: "connect",
                hook: "fentry/tcp_connect".into(),
                reason: "BPF trampolines available".into(),
            },
            Err(e) => {
                self.raw_tp("connect_state_raw_tp", "inet_sock_set_state")
                    .context(
                        "attaching the connect hook (fentry and raw_tracepoint both failed)",
                    )?;
                HookChoice {
                    event: "connect",
                    hook: "raw_tracepoint/inet_sock_set_state (TCP_SYN_SENT)".into(),
                    reason: format!(
                        "fentry/tcp_connect refused ({}); source port is not chosen yet at SYN_SENT and shows as 0",
                        root_cause(&e)
                    ),
                }
            }
        };
        self.hooks.push(connect);
        Ok(())
    }

    /// Every task the kernel has right now, threads included, from the
    /// `iter/task` program. Does not look at /proc at all.
    pub fn tasks(&mut self) -> Result<Vec<TaskRecord>> {
        let iter: &mut Iter = self
            .ebpf
            .program_mut("task_iter")
            .context("task iterator missing from object")?
            .try_into()?;
        let link_id = iter.attach().context("attaching the task iterator")?;
        let link = iter.take_link(link_id)?;
        let mut file = link.into_file().context("creating the task iterator")?;
        // Read in large chunks: a read smaller than one record makes the
        // kernel's seq_file drop the rest of that record.
        let mut bytes = Vec::with_capacity(256 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut chunk).context("reading the task iterator")?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        Ok(events::decode_task_records(&bytes))
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
