//! watch's lineage file: what its process table knows that /proc no longer
//! says, for `kill-tree`.
//!
//! A child whose parent exits is reparented by the kernel to init (or a
//! subreaper), so /proc cannot tell it belonged to a tree; a running watch
//! saw the fork. While it runs, watch saves its table's lineage (the
//! entries [`ProcessTable::lineage_entries`] picks: exited processes that
//! still have children, and the live children they left, with start times and parent links, as the
//! table's own `Process` records) to `STATE_DIR/lineage.json`, and
//! `kill-tree` merges it back into its table ([`ProcessTable::merge_lineage`]).
//!
//! - Where: `/run/tracer` (tmpfs: gone at reboot), or `TRACER_STATE_DIR`.
//!   The directory is created 0700, the file 0600, both owned by root.
//! - How: written to a temporary file created exclusively in the same
//!   directory, then renamed over the old one (readers never see half a
//!   file; no link is ever followed: [`crate::safe_fs`]); at most every
//!   [`SAVE_INTERVAL`], and only when events came in since; at most
//!   [`MAX_ENTRIES`] entries and [`MAX_BYTES`] (live reparented children
//!   first, then exited processes, most recent first). watch removes it
//!   (and the directory, when empty) when it stops.
//! - Fresh, so `kill-tree` uses it: same boot (`boot_id`), and either its
//!   writer (pid and start time) still runs, or it was written at most
//!   [`FRESH_WITHOUT_WRITER`] ago (a watch that just died). A file that is
//!   not a regular file, not owned by root (or tracer's user), readable or
//!   writable by others, too big or malformed is not used, and the plan
//!   says why.
use std::{
    fs,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    model::{Process, ProcessId},
    proc,
    table::ProcessTable,
};

/// Default state directory.
pub const DEFAULT_DIR: &str = "/run/tracer";
/// Overrides [`DEFAULT_DIR`] (tests use a temporary directory).
pub const DIR_ENV: &str = "TRACER_STATE_DIR";
const FILE_NAME: &str = "lineage.json";
/// Format of the file; another number is not read.
const FORMAT: u32 = 1;
/// Shortest time between two saves.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a file whose writer is gone is still used.
pub const FRESH_WITHOUT_WRITER: Duration = Duration::from_secs(30);
/// Most entries saved.
pub const MAX_ENTRIES: usize = 100_000;
/// Largest file written or read.
pub const MAX_BYTES: usize = 32 << 20;

/// The state directory in use.
pub fn state_dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The socket a running watch answers lineage requests on, in the state
/// directory (root's own, 0700: only root reaches it; watch checks the
/// caller's uid too).
const SOCKET_NAME: &str = "lineage.sock";
/// What kill-tree asks and watch answers once the file is written.
const REQUEST: &[u8] = b"lineage\n";
const SAVED: &[u8] = b"saved\n";
/// How long kill-tree waits for watch's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks a running watch to save its lineage now, so kill-tree never plans
/// from a copy older than its own start. `Ok` when watch answered that it
/// saved; `Err` says why not (no watch, or it did not answer).
pub fn request_fresh() -> Result<(), String> {
    use std::os::unix::net::UnixStream;
    let path = state_dir().join(SOCKET_NAME);
    let mut s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "no watch is running to ask".to_string()
        }
        _ => format!("cannot ask watch ({e})"),
    })?;
    let _ = s.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = s.set_write_timeout(Some(REQUEST_TIMEOUT));
    std::io::Write::write_all(&mut s, REQUEST).map_err(|e| format!("cannot ask watch ({e})"))?;
    let mut answer = [0u8; 16];
    let n = s
        .read(&mut answer)
        .map_err(|e| format!("watch did not answer ({e})"))?;
    if answer[..n] == *SAVED {
        Ok(())
    } else {
        Err("watch did not confirm the save".into())
    }
}

/// One saved process and the parent it was forked from.
#[derive(Serialize, Deserialize)]
struct SavedEntry {
    process: Process,
    parent: Option<ProcessId>,
}

/// A connect watch saw, kept in the file for `kill-tree --remote`: its
/// process may have exited since, its launcher not.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecentConnect {
    /// The process as watch's table had it (command line cut to
    /// [`RECENT_CMDLINE_BYTES`]).
    pub process: Process,
    /// The process it was forked from.
    pub parent: Option<ProcessId>,
    pub remote: std::net::SocketAddr,
    /// CLOCK_BOOTTIME of the connect, ns.
    pub at_ns: u64,
    /// `tcp`, or `udp` (a UDP connect or send to an address).
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// Connects kept (the most recent).
pub const RECENT_CONNECTS: usize = 1024;
/// Bytes of a connecting process's command line kept in the file.
const RECENT_CMDLINE_BYTES: usize = 1024;

/// A [`SavedEntry`] as written, borrowing the table's process.
#[derive(Serialize)]
struct SavedEntryRef<'a> {
    process: &'a Process,
    parent: Option<ProcessId>,
}

/// The fields of [`LineageFile`] before its entries, as written.
#[derive(Serialize)]
struct FileHeader<'a> {
    format: u32,
    writer: ProcessId,
    boot_id: &'a str,
    written_boottime_ns: u64,
    truncated: bool,
    connects: &'a [RecentConnect],
}

/// The file's content.
#[derive(Serialize, Deserialize)]
struct LineageFile {
    format: u32,
    /// The watch that wrote it.
    writer: ProcessId,
    /// `/proc/sys/kernel/random/boot_id`: start times mean nothing across
    /// a reboot.
    boot_id: String,
    /// CLOCK_BOOTTIME of the write, ns.
    written_boottime_ns: u64,
    /// Entries left out by the size bounds.
    truncated: bool,
    /// Recent connects, oldest first (absent in files of older watches).
    #[serde(default)]
    connects: Vec<RecentConnect>,
    entries: Vec<SavedEntry>,
}

fn boot_id() -> String {
    proc::read_file("/proc/sys/kernel/random/boot_id")
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default()
}

/// The lineage file as `kill-tree` found it: where its table's lineage
/// came from (JSON `lineage` in the plan).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct LineageSource {
    /// `watch` (the state file was merged in) or `proc` (/proc alone).
    pub source: String,
    /// The file read or looked for.
    pub file: String,
    /// One sentence: the writer and age, or why the file was not used.
    pub detail: String,
    /// Processes whose parent link came from the file (0 for `proc`).
    pub relinked: usize,
    /// The connects the file recorded (for `kill-tree --remote`).
    #[serde(skip)]
    pub recent_connects: Vec<RecentConnect>,
    /// Parent links of the file that were refused, and why.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub refused: Vec<String>,
}

/// Saves watch's lineage on a bounded schedule.
pub struct LineageWriter {
    dir: PathBuf,
    writer: ProcessId,
    boot_id: String,
    /// Events seen at the last save (nothing new: nothing to write).
    saved_at_events: Option<u64>,
    /// Why saving failed, once said.
    warned: bool,
    /// The latest connects: (process, remote, boottime ns, protocol).
    connects: std::collections::VecDeque<(ProcessId, std::net::SocketAddr, u64, &'static str)>,
}

impl LineageWriter {
    pub fn new() -> Self {
        let pid = std::process::id();
        LineageWriter {
            dir: state_dir(),
            writer: ProcessId {
                pid,
                start_ticks: proc::start_ticks(pid).unwrap_or(0),
            },
            boot_id: boot_id(),
            saved_at_events: None,
            warned: false,
            connects: std::collections::VecDeque::with_capacity(RECENT_CONNECTS),
        }
    }

    /// Notes a connect for the next save (the oldest is dropped when
    /// [`RECENT_CONNECTS`] are kept): constant cost, no allocation.
    pub fn note_connect(
        &mut self,
        id: ProcessId,
        remote: std::net::SocketAddr,
        at_ns: u64,
        protocol: &'static str,
    ) {
        if self.connects.len() == RECENT_CONNECTS {
            self.connects.pop_front();
        }
        self.connects.push_back((id, remote, at_ns, protocol));
    }

    /// The noted connects whose process the table still has.
    fn recent_connects(&self, table: &ProcessTable) -> Vec<RecentConnect> {
        self.connects
            .iter()
            .filter_map(|(id, remote, at_ns, protocol)| {
                let mut process = table.by_id(id)?.clone();
                let mut kept = 0;
                process.cmdline.retain(|a| {
                    kept += a.byte_len();
                    kept <= RECENT_CMDLINE_BYTES
                });
                Some(RecentConnect {
                    process,
                    parent: table.parent_of(id),
                    remote: *remote,
                    at_ns: *at_ns,
                    protocol: protocol.to_string(),
                })
            })
            .collect()
    }

    pub fn path(&self) -> PathBuf {
        file_in(&self.dir)
    }

    /// The socket kill-tree asks on ([`request_fresh`]), in the state
    /// directory, made tracer's own first.
    pub fn listen(&self) -> std::io::Result<std::os::unix::net::UnixListener> {
        let dir = crate::safe_fs::SafeDir::own(&self.dir)?;
        // A socket left by a watch that died; the directory is ours alone.
        if dir.exists(SOCKET_NAME) {
            dir.remove(SOCKET_NAME)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(dir.join(SOCKET_NAME))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Whether a request may be answered: root, or tracer's own user.
    pub fn may_ask(uid: u32) -> bool {
        uid == 0 || uid == rustix::process::geteuid().as_raw()
    }

    /// The answer to one request: the file is written now, or the error.
    pub fn answer(&mut self, table: &ProcessTable) -> &'static [u8] {
        match self.save(table) {
            Ok(()) => SAVED,
            Err(_) => b"failed\n",
        }
    }

    /// Called every [`SAVE_INTERVAL`]: saves when `events` (a count of
    /// events seen) moved since the last save. A failure is said once on
    /// stderr; watch goes on.
    pub fn maybe_save(&mut self, table: &ProcessTable, events: u64) {
        if self.saved_at_events == Some(events) {
            return;
        }
        match self.save(table) {
            Ok(()) => self.saved_at_events = Some(events),
            Err(e) if !self.warned => {
                self.warned = true;
                eprintln!(
                    "tracer: cannot save the lineage for kill-tree to {}: {e}; kill-tree will see /proc only",
                    self.path().display()
                );
            }
            Err(_) => {}
        }
    }

    /// Writes the file now (temporary file, then rename).
    pub fn save(&self, table: &ProcessTable) -> std::io::Result<()> {
        let bytes = encode(
            table,
            self.writer,
            &self.boot_id,
            proc::boottime_ns(),
            &self.recent_connects(table),
            MAX_BYTES,
        )?;
        // Root-owned state in a directory of its own: no link followed,
        // no file of anyone else's replaced or written through.
        crate::safe_fs::SafeDir::own(&self.dir)?.replace(FILE_NAME, &bytes, 0o600)
    }

    /// Removes the file when this watch wrote the current one.
    pub fn remove_own(&self) {
        let path = self.path();
        if let Ok(f) = read_file(&path) {
            if f.writer == self.writer {
                if let Ok(dir) = crate::safe_fs::SafeDir::existing(&self.dir) {
                    let _ = dir.remove(FILE_NAME);
                    let _ = dir.remove(SOCKET_NAME);
                }
                // Only when empty: no other watch's file goes with it.
                let _ = fs::remove_dir(&self.dir);
            }
        }
    }
}

impl Default for LineageWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// The file's bytes: the table's lineage entries up to `max_bytes`.
fn encode(
    table: &ProcessTable,
    writer: ProcessId,
    boot_id: &str,
    now_ns: u64,
    connects: &[RecentConnect],
    max_bytes: usize,
) -> std::io::Result<Vec<u8>> {
    // The connects (bounded in number and size) come out of the budget
    // first: the whole file stays within what a reader accepts.
    let connect_bytes = serde_json::to_vec(connects).map_err(std::io::Error::other)?;
    let max_bytes = max_bytes.saturating_sub(connect_bytes.len());
    // Each entry is serialised once, into the array as it grows, so the
    // bounds are checked on the bytes that are written.
    let mut entries = b"[".to_vec();
    let (mut count, mut truncated) = (0, false);
    for (process, parent) in table.lineage_entries() {
        let mark = entries.len();
        if count > 0 {
            entries.push(b',');
        }
        serde_json::to_writer(&mut entries, &SavedEntryRef { process, parent })
            .map_err(std::io::Error::other)?;
        if count >= MAX_ENTRIES || entries.len() > max_bytes.saturating_sub(4096) {
            entries.truncate(mark);
            truncated = true;
            break;
        }
        count += 1;
    }
    entries.push(b']');
    let header = FileHeader {
        format: FORMAT,
        writer,
        boot_id,
        written_boottime_ns: now_ns,
        truncated,
        connects,
    };
    // The header's object, its closing brace replaced by the entries: the
    // fields of LineageFile in its order.
    let mut file = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    file.pop();
    file.extend_from_slice(b",\"entries\":");
    file.extend_from_slice(&entries);
    file.push(b'}');
    Ok(file)
}

/// Reads and checks the file: a regular file (not followed through a
/// symlink), owned by root or by this user, closed to others, within
/// [`MAX_BYTES`], well-formed.
fn read_file(path: &Path) -> Result<LineageFile, String> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "not present (no watch running)".to_string(),
            _ => format!("cannot be read ({e})"),
        })?;
    let meta = f.metadata().map_err(|e| format!("cannot be read ({e})"))?;
    let euid = rustix::process::geteuid().as_raw();
    if !meta.is_file() {
        return Err("not a regular file; ignored".into());
    }
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!("owned by uid {}, not root; ignored", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:o} lets others read or write it; ignored",
            meta.mode() & 0o777
        ));
    }
    if meta.len() > MAX_BYTES as u64 {
        return Err(format!("{} bytes, over the limit; ignored", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut f)
        .take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    let file: LineageFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("malformed ({e}); ignored"))?;
    if file.format != FORMAT {
        return Err(format!("format {} is not {FORMAT}; ignored", file.format));
    }
    Ok(file)
}

/// Whether a file is fresh (see the module comment): `Ok(why)` to use it.
fn freshness(
    file: &LineageFile,
    boot_id: &str,
    now_ns: u64,
    writer_start: Option<u64>,
) -> Result<String, String> {
    if file.boot_id != boot_id {
        return Err("written before the last reboot; ignored".into());
    }
    let age = Duration::from_nanos(now_ns.saturating_sub(file.written_boottime_ns));
    let age_text = format!("{:.1} s ago", age.as_secs_f64());
    if writer_start == Some(file.writer.start_ticks) {
        return Ok(format!(
            "written {age_text} by watch (pid {}, still running)",
            file.writer.pid
        ));
    }
    if age <= FRESH_WITHOUT_WRITER {
        return Ok(format!(
            "written {age_text} by watch (pid {}, no longer running)",
            file.writer.pid
        ));
    }
    Err(format!(
        "written {age_text} by a watch (pid {}) that no longer runs; stale, ignored",
        file.writer.pid
    ))
}

/// Merges the lineage file of a running watch into `table`, when present
/// and fresh, and says where the table's lineage came from.
/// The recent connects and UDP destinations a running watch saved
/// (`net` shows them beside unconnected UDP sockets), or why there are none.
pub fn recent_connects() -> Result<Vec<RecentConnect>, String> {
    let saved = read_file(&file_in(&state_dir()))?;
    let writer_start = proc::start_ticks(saved.writer.pid);
    freshness(&saved, &boot_id(), proc::boottime_ns(), writer_start)?;
    Ok(saved.connects)
}

pub fn merge_into(table: &mut ProcessTable) -> LineageSource {
    // A running watch writes its table now, so the plan is not up to a
    // save interval behind the tree.
    let asked = request_fresh();
    let mut source = merge_from(table, &state_dir());
    match asked {
        Ok(()) => source.detail.push_str(" (saved by watch on request)"),
        Err(why) if source.source == "watch" => source.detail.push_str(&format!(
            " (not saved on request: {why}; up to {} s old)",
            SAVE_INTERVAL.as_secs()
        )),
        Err(_) => {}
    }
    source
}

fn merge_from(table: &mut ProcessTable, dir: &Path) -> LineageSource {
    let path = file_in(dir);
    let file = path.display().to_string();
    let only_proc = |why: String| LineageSource {
        source: "proc".into(),
        file: file.clone(),
        detail: format!("/proc only: the watch lineage file {file} is {why}"),
        relinked: 0,
        recent_connects: Vec::new(),
        refused: Vec::new(),
    };
    let saved = match read_file(&path) {
        Ok(f) => f,
        Err(why) => return only_proc(why),
    };
    let writer_start = proc::start_ticks(saved.writer.pid);
    let why = match freshness(&saved, &boot_id(), proc::boottime_ns(), writer_start) {
        Ok(why) => why,
        Err(why) => return only_proc(why),
    };
    let truncated = saved.truncated;
    let recent_connects = saved.connects;
    let (relinked, refused) = table.merge_lineage_checked(
        saved
            .entries
            .into_iter()
            .map(|e| (e.process, e.parent))
            .collect(),
    );
    LineageSource {
        source: "watch".into(),
        file: file.clone(),
        detail: format!(
            "/proc and the watch lineage file {file}, {why}{}",
            if truncated {
                " (truncated at its size limit)"
            } else {
                ""
            }
        ),
        relinked,
        recent_connects,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, start: u64) -> Process {
        Process {
            pid,
            ppid,
            comm: "sh".into(),
            start_ticks: start,
            ..Default::default()
        }
    }

    /// sh(10) < middle(20, exited) < sleepers 30 and 31.
    fn watched() -> ProcessTable {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, 1), proc(10, 1, 10)]);
        t.on_fork(10, 20, 20, 0);
        t.on_fork(20, 30, 30, 0);
        t.on_fork(20, 31, 31, 0);
        t.on_exit(20, 20, 5);
        t
    }

    fn test_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tracer-lineage-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn writer_in(dir: &Path) -> LineageWriter {
        LineageWriter {
            dir: dir.to_path_buf(),
            ..LineageWriter::new()
        }
    }

    #[test]
    fn saved_file_is_private_and_merges_back() {
        let dir = test_dir("merge");
        let w = writer_in(&dir);
        w.save(&watched()).unwrap();
        let meta = fs::metadata(w.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // No temporary file left beside it.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

        let mut t = ProcessTable::new();
        t.seed([
            proc(1, 0, 1),
            proc(10, 1, 10),
            proc(30, 1, 30),
            proc(31, 1, 31),
        ]);
        let src = merge_from(&mut t, &dir);
        assert_eq!((src.source.as_str(), src.relinked), ("watch", 3), "{src:?}");
        assert!(src.detail.contains("still running"), "{}", src.detail);
        let sh = t.get(10).unwrap().id();
        let middle = t.children_of(&sh).next().unwrap().id();
        assert_eq!(t.children_of(&middle).count(), 2);

        w.remove_own();
        assert!(!w.path().exists());
        let src = merge_from(&mut ProcessTable::new(), &dir);
        assert_eq!(src.source, "proc");
        assert!(src.detail.contains("not present"), "{}", src.detail);
        assert!(!dir.exists(), "the emptied state directory is removed");
    }

    #[test]
    fn unsafe_or_malformed_files_are_not_used() {
        let dir = test_dir("unsafe");
        let w = writer_in(&dir);
        w.save(&watched()).unwrap();
        fs::set_permissions(
            w.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let src = merge_from(&mut ProcessTable::new(), &dir);
        assert!(
            src.source == "proc" && src.detail.contains("mode 644"),
            "{src:?}"
        );
        fs::write(w.path(), b"{not json").unwrap();
        fs::set_permissions(
            w.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let src = merge_from(&mut ProcessTable::new(), &dir);
        assert!(src.detail.contains("malformed"), "{src:?}");
        fs::remove_file(w.path()).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", w.path()).unwrap();
        let src = merge_from(&mut ProcessTable::new(), &dir);
        assert!(src.detail.contains("cannot be read"), "{src:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn connects_are_kept_within_the_size_bound_and_read_back() {
        let mut t = ProcessTable::new();
        t.seed([proc(10, 1, 100), proc(11, 10, 110)]);
        let mut w = LineageWriter::new();
        for i in 0..(RECENT_CONNECTS + 5) {
            let id = ProcessId {
                pid: 11,
                start_ticks: 110,
            };
            w.note_connect(
                id,
                format!("127.0.0.1:{}", 1000 + i % 50).parse().unwrap(),
                i as u64,
                if i % 2 == 0 { "tcp" } else { "udp" },
            );
        }
        let connects = w.recent_connects(&t);
        assert_eq!(connects.len(), RECENT_CONNECTS, "the oldest were dropped");
        assert_eq!(connects[0].at_ns, 5);
        assert_eq!(connects[0].protocol, "udp");
        assert_eq!(
            connects[0].parent,
            Some(ProcessId {
                pid: 10,
                start_ticks: 100
            })
        );
        let writer = ProcessId {
            pid: 1,
            start_ticks: 1,
        };
        let bytes = encode(&t, writer, "b", 0, &connects, MAX_BYTES).unwrap();
        let back: LineageFile = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.connects.len(), RECENT_CONNECTS);
        assert_eq!(back.connects[3].remote, connects[3].remote);
        // The connects' bytes come out of the entries' budget.
        let connect_len = serde_json::to_vec(&connects).unwrap().len();
        let tight = encode(&t, writer, "b", 0, &connects, connect_len + 100).unwrap();
        let back: LineageFile = serde_json::from_slice(&tight).unwrap();
        assert!(back.entries.is_empty());
        assert!(tight.len() < connect_len + 4096);
    }

    #[test]
    fn freshness_needs_the_same_boot_and_a_live_writer_or_a_recent_write() {
        let file = |written: u64| LineageFile {
            format: FORMAT,
            writer: ProcessId {
                pid: 77,
                start_ticks: 500,
            },
            boot_id: "boot-a".into(),
            written_boottime_ns: written,
            truncated: false,
            connects: Vec::new(),
            entries: Vec::new(),
        };
        let s = 1_000_000_000u64;
        // Writer alive: any age.
        assert!(freshness(&file(0), "boot-a", 3600 * s, Some(500)).is_ok());
        // Writer gone (or its PID recycled): 30 s at most.
        assert!(freshness(&file(100 * s), "boot-a", 120 * s, None).is_ok());
        assert!(freshness(&file(100 * s), "boot-a", 131 * s, Some(501)).is_err());
        // Another boot: never.
        assert!(freshness(&file(100 * s), "boot-b", 100 * s, Some(500)).is_err());
    }

    #[test]
    fn the_file_is_bounded_and_leaves_out_exited_leaves() {
        let mut t = ProcessTable::new();
        t.seed([proc(1, 0, 1)]);
        // 300 exited parents, each with a live child; 100 exited leaves.
        for pid in (1000..1600).step_by(2) {
            t.on_fork(1, pid, pid as u64, 0);
            t.on_fork(pid, pid + 1, pid as u64 + 1, 0);
            t.on_exit(pid, pid as u64, pid as u64);
        }
        for pid in 2000..2100 {
            t.on_fork(1, pid, pid as u64, 0);
            t.on_exit(pid, pid as u64, pid as u64);
        }
        let writer = ProcessId {
            pid: 1,
            start_ticks: 1,
        };
        let small = encode(&t, writer, "b", 0, &[], 8192).unwrap();
        assert!(small.len() <= 8192, "{}", small.len());
        let f: LineageFile = serde_json::from_slice(&small).unwrap();
        assert!(f.truncated && !f.entries.is_empty());
        // The reparented children first.
        assert_eq!(f.entries[0].process.pid, 1001);
        let all: LineageFile =
            serde_json::from_slice(&encode(&t, writer, "b", 0, &[], MAX_BYTES).unwrap()).unwrap();
        assert_eq!((all.entries.len(), all.truncated), (600, false));
        // Then the exited parents, most recently exited first.
        assert_eq!(all.entries[300].process.pid, 1598);
        assert!(all.entries.iter().all(|e| e.process.pid < 2000));
    }
}
