//! kill-tree's fork capture (the `capture_*` programs): a kernel-side set
//! of the tree's thread-group ids that every fork of a member joins, and
//! a mode that makes any member's next system call stop or kill it. Loaded
//! only by `kill-tree --kill`, for as long as it runs; dropping the
//! [`Capture`] detaches it.
use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, HashMap as BpfHashMap},
    programs::{BtfTracePoint, RawTracePoint},
};
use tracer_common::{CAPTURE_KILL, CAPTURE_MAX, CAPTURE_STOP};

use super::Kernel;

/// What a member's next system call gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Record,
    Stop,
    Kill,
}

/// The attached capture, over the kernel side that loaded it.
pub struct Capture {
    kernel: Kernel,
}

impl Capture {
    /// Puts `members` (tgids) in the set and attaches the fork and
    /// system-call programs, in `mode`. Members go in before the fork hook
    /// is attached, so no fork of theirs is missed from then on.
    pub fn start(mut kernel: Kernel, members: &[u32], mode: Mode) -> Result<Capture> {
        {
            let mut set: BpfHashMap<_, u32, u64> = BpfHashMap::try_from(
                kernel
                    .ebpf
                    .map_mut("CAPTURE_SET")
                    .context("CAPTURE_SET missing")?,
            )?;
            for &tgid in members.iter().take(CAPTURE_MAX as usize) {
                set.insert(tgid, 0, 0)?;
            }
        }
        let mut capture = Capture { kernel };
        capture.set_mode(mode)?;
        let Kernel { ebpf, btf, .. } = &mut capture.kernel;
        let btf = btf.as_ref().context(super::BTF_RELEASED)?;
        let fork: &mut BtfTracePoint = ebpf
            .program_mut("capture_fork")
            .context("capture_fork missing from object")?
            .try_into()?;
        fork.load("sched_process_fork", btf)
            .context("loading kill-tree's fork capture (tp_btf/sched_process_fork)")?;
        fork.attach()?;
        let syscall: &mut RawTracePoint = ebpf
            .program_mut("capture_syscall")
            .context("capture_syscall missing from object")?
            .try_into()?;
        syscall
            .load()
            .context("loading kill-tree's syscall trap (raw_tracepoint/sys_enter)")?;
        syscall.attach("sys_enter")?;
        Ok(capture)
    }

    /// Adds members (tgids) to the running capture.
    pub fn add(&mut self, members: &[u32]) -> Result<()> {
        let mut set: BpfHashMap<_, u32, u64> = BpfHashMap::try_from(
            self.kernel
                .ebpf
                .map_mut("CAPTURE_SET")
                .context("CAPTURE_SET missing")?,
        )?;
        for &tgid in members {
            if set.get(&tgid, 0).is_err() {
                set.insert(tgid, 0, 0)?;
            }
        }
        Ok(())
    }

    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        let mut m: Array<_, u32> = Array::try_from(
            self.kernel
                .ebpf
                .map_mut("CAPTURE_MODE")
                .context("CAPTURE_MODE missing")?,
        )?;
        let value = match mode {
            Mode::Record => 0,
            Mode::Stop => CAPTURE_STOP,
            Mode::Kill => CAPTURE_KILL,
        };
        m.set(0, value, 0)?;
        Ok(())
    }

    /// Every member the set holds: tgid and, for those the kernel added,
    /// their start time (CLOCK_BOOTTIME ns; 0 for the members put in).
    pub fn members(&self) -> Result<Vec<(u32, u64)>> {
        let set: BpfHashMap<_, u32, u64> = BpfHashMap::try_from(
            self.kernel
                .ebpf
                .map("CAPTURE_SET")
                .context("CAPTURE_SET missing")?,
        )?;
        Ok(set.iter().filter_map(|r| r.ok()).collect())
    }

    /// Whether a set of `members` is full (a fork bomb outgrew it): then
    /// some forks were not captured, and the kill must say so.
    pub fn is_full(members: usize) -> bool {
        members >= CAPTURE_MAX as usize
    }

    /// The kernel side, for the other views kill-tree takes (sockets).
    pub fn kernel(&mut self) -> &mut Kernel {
        &mut self.kernel
    }
}
