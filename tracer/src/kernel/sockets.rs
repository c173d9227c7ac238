//! The socket iterators: loading them (each optional, with the reason when
//! one is refused) and running them, per network namespace for `iter/tcp`
//! and `iter/udp`.
use std::os::fd::BorrowedFd;

use anyhow::{bail, Result};
use serde::Serialize;
use tracer_common::SocketRecord;

use super::{events::read_records, Kernel};

/// One socket iterator: the kernel's iterator name and tracer's program.
pub struct SocketIterator {
    pub iterator: &'static str,
    pub program: &'static str,
    /// What is lost without it, and what tracer does instead.
    pub fallback: &'static str,
}

pub const TASK_FILE: SocketIterator = SocketIterator {
    iterator: "task_file",
    program: "socket_file_iter",
    fallback: "no kernel socket view: sockets come only from /proc/net and /proc/PID/fd, \
               which a rootkit can filter",
};
pub const TCP: SocketIterator = SocketIterator {
    iterator: "tcp",
    program: "socket_tcp_iter",
    fallback: "TCP sockets no process holds (TIME_WAIT, orphans) are not listed",
};
pub const UDP: SocketIterator = SocketIterator {
    iterator: "udp",
    program: "socket_udp_iter",
    fallback: "UDP sockets no process holds are not listed",
};
pub const ALL: [&SocketIterator; 3] = [&TASK_FILE, &TCP, &UDP];

/// Whether one socket iterator loaded on this kernel (`tracer status`).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct IteratorStatus {
    /// `iter/task_file`, `iter/tcp`, `iter/udp`.
    pub iterator: String,
    pub loaded: bool,
    /// Why it did not load, and what tracer falls back to; empty if loaded.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fallback: String,
}

impl Kernel {
    /// Records how each socket iterator of [`ALL`] fared (in that order):
    /// loaded, or why not, with what tracer falls back to.
    pub(super) fn record_socket_iterators(&mut self, results: Vec<Result<(), String>>) {
        for (it, result) in ALL.iter().zip(results) {
            self.socket_iterators.push(IteratorStatus {
                iterator: format!("iter/{}", it.iterator),
                loaded: result.is_ok(),
                fallback: match result {
                    Ok(()) => String::new(),
                    Err(why) => format!("not loaded ({why}): {}", it.fallback),
                },
            });
        }
    }

    /// Whether a socket iterator loaded.
    pub fn has_socket_iterator(&self, it: &SocketIterator) -> bool {
        self.socket_iterators
            .iter()
            .any(|s| s.loaded && s.iterator.strip_prefix("iter/") == Some(it.iterator))
    }

    /// Runs one socket iterator: `iter/task_file` over every process, or
    /// `iter/tcp` / `iter/udp` in the network namespace `netns` (tracer's
    /// own when `None`).
    pub fn socket_records(
        &mut self,
        it: &'static SocketIterator,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<Vec<SocketRecord>> {
        self.open_socket_records(it, netns)?.read()
    }

    /// [`Self::socket_records`] in two steps: the iterator is created
    /// here, and read by [`PendingSockets::read`], which needs no access
    /// to the kernel object and so can run beside other reads.
    pub fn open_socket_records(
        &mut self,
        it: &'static SocketIterator,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<PendingSockets> {
        if !self.has_socket_iterator(it) {
            bail!("iter/{} is not loaded on this kernel", it.iterator);
        }
        let file = self.open_iterator(it.program, netns)?;
        Ok(PendingSockets { it, file })
    }
}

/// A socket iterator created but not yet read.
pub struct PendingSockets {
    pub it: &'static SocketIterator,
    file: std::fs::File,
}

impl PendingSockets {
    pub fn read(self) -> Result<Vec<SocketRecord>> {
        let bytes = super::read_iterator(self.file, self.it.program)?;
        Ok(read_records(&bytes))
    }
}
