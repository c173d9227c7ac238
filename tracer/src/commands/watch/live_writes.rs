//! watch's part in "hiding and persistence as they happen": the file-write
//! source (`views::file_writes`) matched against `kill-tree`'s persistence
//! places, and the kernel's mount records (`kernel::mounts`), each hit
//! turned into a finding by `detect::live_writes` with the acting process's
//! chain from the process table.
use std::io;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tracer_common::{MountEvent, MOUNT_HOOK_SYSCALL, MOUNT_SYSCALL_MOUNT};

use super::Watcher;
use crate::{
    detect::live_writes::{self, Actor, Hit, LiveEvent},
    kernel::{events::text, HookChoice},
    model::{Finding, HostStr},
    proc,
    respond::persistence::{self, PlaceIndex},
    views::file_writes::{self, FileWrites},
};

/// The places watched and the source of writes, until the stream starts.
pub(super) struct LiveWrites {
    places: PlaceIndex,
    source: Option<FileWrites>,
    own_mount_ns: Option<HostStr>,
}

/// Starts watching writes to every persistence place (under
/// `TRACER_PERSISTENCE_ROOT`); the hook line says how, or why not.
pub(super) fn start() -> (LiveWrites, HookChoice) {
    let places = persistence::places(&persistence::Roots::from_env());
    let (source, hook) = file_writes::watch_places(&places);
    let live = LiveWrites {
        places: PlaceIndex::new(places),
        source,
        own_mount_ns: proc::read_link("/proc/self/ns/mnt").ok(),
    };
    (live, hook)
}

/// The source, registered with the runtime (inside it).
pub(super) fn register(live: &mut LiveWrites) -> io::Result<Option<AsyncFd<FileWrites>>> {
    // As for the ring buffer: the descriptor is owned by what is registered.
    #[allow(deprecated)]
    live.source.take().map(AsyncFd::new).transpose()
}

/// Ready to read, or never when there is no source.
pub(super) async fn readable(
    source: Option<&AsyncFd<FileWrites>>,
) -> Option<io::Result<AsyncFdReadyGuard<'_, FileWrites>>> {
    match source {
        Some(s) => Some(s.readable().await),
        None => None,
    }
}

impl Watcher {
    /// A batch of queued writes: those at a persistence place become
    /// findings. Returns whether the queue was emptied (a busy host's
    /// writes are taken a batch at a time, between signals and the ring
    /// buffer). The ring buffer is drained first by the caller, so the
    /// writer's fork and exec are in the table.
    pub(super) fn on_file_writes(&mut self, source: &FileWrites) -> io::Result<bool> {
        let (writes, overflows, emptied) = source.read(std::process::id())?;
        if overflows > 0 {
            eprintln!(
                "tracer: the kernel's file-write queue overflowed {overflows} time(s): some writes to persistence places were not seen"
            );
        }
        for w in writes {
            let event = LiveEvent::FileWritten {
                path: &w.path,
                how: w.kind,
            };
            self.sigma_write(w.pid, &w.path)?;
            let Some(hit) = live_writes::hit(&event, &self.live_writes.places, w.pid) else {
                continue;
            };
            let ns = proc::read_link(&format!("/proc/{}/ns/mnt", w.pid)).ok();
            let finding = self.live_finding(w.pid, ns, &event, hit);
            self.raise("write", finding)?;
        }
        Ok(emptied)
    }

    /// The finding for `event` (a `hit`) by `pid`, with its chain from the
    /// table (a process not seen start is read from /proc once and kept).
    fn live_finding(
        &mut self,
        pid: u32,
        mount_ns: Option<HostStr>,
        event: &LiveEvent,
        hit: Hit,
    ) -> Finding {
        let id = (pid != 0)
            .then(|| self.ensure_known(pid, |t| t.latest(pid).map(|p| p.id())))
            .flatten();
        let process = id.and_then(|id| self.table.by_id(&id));
        let ancestry = id.map(|id| self.table.ancestry(&id)).unwrap_or_default();
        let actor = Actor {
            pid,
            process,
            ancestry: &ancestry,
            other_mount_ns: mount_ns
                .filter(|ns| Some(ns) != self.live_writes.own_mount_ns.as_ref())
                .map(|ns| ns.escaped().into_owned()),
        };
        live_writes::detect(event, hit, &actor)
    }

    /// A mount the kernel saw succeed: a finding when it covers /proc/PID.
    pub(super) fn on_mount(&mut self, m: &MountEvent) -> io::Result<()> {
        let field = |bytes: &[u8], len: u32| text(&bytes[..(len as usize).min(bytes.len())]);
        let target = absolute_target(m, field(&m.target, m.target_len));
        let source = field(&m.source, m.source_len);
        let fstype = field(&m.fstype, m.fstype_len);
        let event = LiveEvent::Mounted {
            target: &target,
            syscall: if m.syscall == MOUNT_SYSCALL_MOUNT {
                "mount"
            } else {
                "move_mount"
            },
            source: (m.source_len > 0).then_some(&source),
            fstype: (m.fstype_len > 0).then_some(&fstype),
            returned: m.hook == MOUNT_HOOK_SYSCALL,
        };
        let Some(hit) = live_writes::hit(&event, &self.live_writes.places, m.tgid) else {
            return Ok(());
        };
        let ns = HostStr::from_text(&format!("mnt:[{}]", m.mnt_ns));
        let finding = self.live_finding(m.tgid, Some(ns), &event, hit);
        self.raise("mount", finding)
    }
}

/// The mount point as an absolute path: a relative target (or
/// `move_mount`'s empty one, the directory descriptor itself) is resolved
/// through the caller's working directory or descriptor while it lives;
/// otherwise it stays as given.
fn absolute_target(m: &MountEvent, target: HostStr) -> HostStr {
    if target.as_str().starts_with('/') {
        return target;
    }
    let base = if m.target_dfd == -100 {
        format!("/proc/{}/cwd", m.tgid)
    } else {
        format!("/proc/{}/fd/{}", m.tgid, m.target_dfd)
    };
    match proc::read_link(&base) {
        Ok(dir) if target.byte_len() == 0 => dir,
        Ok(dir) => HostStr::from_text(&format!(
            "{}/{}",
            dir.as_str().trim_end_matches('/'),
            target.as_str()
        )),
        Err(_) => target,
    }
}
