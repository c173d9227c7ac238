//! watch's part in "hiding and persistence as they happen": the file-write
//! source (`views::file_writes`) matched against `kill-tree`'s persistence
//! places, each hit turned into a finding by `detect::live_writes` with the
//! writer's chain from the process table.
use std::io;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

use super::Watcher;
use crate::{
    detect::live_writes::{self, Actor, LiveEvent},
    kernel::HookChoice,
    model::{Finding, HostStr},
    output::live_finding,
    proc,
    respond::persistence::{self, Place},
    views::file_writes::FileWrites,
};

/// The places watched and the source of writes, until the stream starts.
pub(super) struct LiveWrites {
    places: Vec<Place>,
    source: Option<FileWrites>,
    own_mount_ns: Option<HostStr>,
}

/// Starts watching writes to every persistence place (under
/// `TRACER_PERSISTENCE_ROOT`); the hook line says how, or why not.
pub(super) fn start() -> (LiveWrites, HookChoice) {
    let places = persistence::places(&persistence::Roots::from_env());
    let source = FileWrites::start(places.iter().map(|p| p.path.as_path()));
    let hook = match &source {
        Ok(s) => HookChoice {
            event: "write",
            hook: "fanotify FAN_CLOSE_WRITE".into(),
            reason: format!(
                "filesystem marks on {}: writes to {} persistence places (ld.so.preload, cron, systemd, shell profiles...), in any mount namespace{}",
                s.marked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                places.len(),
                if s.unmarked.is_empty() {
                    String::new()
                } else {
                    format!("; not watched: {}", s.unmarked.join("; "))
                }
            ),
        },
        Err(e) => HookChoice {
            event: "write",
            hook: "none".into(),
            reason: format!(
                "fanotify refused ({e}; it needs CAP_SYS_ADMIN): writes to persistence places are NOT watched"
            ),
        },
    };
    let live = LiveWrites {
        places,
        source: source.ok(),
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
    /// Every write queued: those at a persistence place become findings.
    /// The ring buffer is drained first by the caller, so the writer's
    /// fork and exec are in the table.
    pub(super) fn on_file_writes(&mut self, source: &FileWrites) -> io::Result<()> {
        let (writes, overflows) = source.read(std::process::id())?;
        if overflows > 0 {
            eprintln!(
                "tracer: the kernel's file-write queue overflowed {overflows} time(s): some writes to persistence places were not seen"
            );
        }
        for w in writes {
            if !self.live_writes.places.iter().any(|p| p.covers(&w.path)) {
                continue;
            }
            let finding = self.live_finding(w.pid, &LiveEvent::FileWritten { path: &w.path });
            if let Some(f) = finding {
                self.raise_live(&f)?;
            }
        }
        Ok(())
    }

    /// The finding for `event` by `pid`, with its chain from the table (a
    /// process not seen start is read from /proc once and kept).
    fn live_finding(&mut self, pid: u32, event: &LiveEvent) -> Option<Finding> {
        if pid != 0 && self.table.latest(pid).is_none() {
            if let Some(p) = proc::read_process(pid) {
                self.table.upsert(p, None);
            }
        }
        let process = (pid != 0).then(|| self.table.latest(pid)).flatten();
        let ancestry = process
            .map(|p| self.table.ancestry(&p.id()))
            .unwrap_or_default();
        let ns = (pid != 0)
            .then(|| proc::read_link(&format!("/proc/{pid}/ns/mnt")).ok())
            .flatten();
        let actor = Actor {
            pid,
            process,
            ancestry: &ancestry,
            other_mount_ns: ns
                .filter(|ns| Some(ns) != self.live_writes.own_mount_ns.as_ref())
                .map(|ns| ns.escaped().into_owned()),
        };
        live_writes::detect(event, &self.live_writes.places, &actor)
    }

    /// Interim hook: writes the `finding` record. The merge replaces it by
    /// watch's raise function (part A, with noise control).
    fn raise_live(&mut self, f: &Finding) -> io::Result<()> {
        live_finding::write(self.out.get_mut(), self.args.json, f)?;
        self.out.flush()
    }
}
