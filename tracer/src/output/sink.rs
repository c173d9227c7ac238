//! Where watch's records go: stdout, or a file that log shippers tail
//! (Filebeat, Vector, Fluent Bit), rotated by size.
//!
//! Rotation renames `FILE` to `FILE.1` (and `FILE.1` to `FILE.2`, ...,
//! keeping `keep` rotated files) and starts a new `FILE`, the scheme
//! shippers follow by inode. Only whole lines are ever written, and a
//! rotation happens only between lines, so no line is split or lost.
//! `reopen` (on SIGHUP) opens `FILE` again after an outside tool such as
//! logrotate moved it. The directory is opened once with no symbolic link
//! on the way, and the file is never opened through a link nor when it
//! belongs to another user ([`SafeDir`]): watch runs as root, and a planted
//! link at the output's name must not make it append to `/etc/passwd`.
use std::{
    fs::File,
    io::{self, BufWriter, StdoutLock, Write},
    path::Path,
};

use crate::safe_fs::SafeDir;

/// Records are gathered up to this size before whole lines are written.
const BUFFER: usize = 64 * 1024;

/// stdout, or a rotating file.
pub enum Sink {
    Stdout(BufWriter<StdoutLock<'static>>),
    File(RotatingFile),
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink::Stdout(BufWriter::with_capacity(BUFFER, io::stdout().lock()))
    }

    /// Opens the file again (after SIGHUP); stdout needs nothing.
    pub fn reopen(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(_) => Ok(()),
            Sink::File(f) => f.reopen(),
        }
    }

    /// Whether a human reads this as it comes (colour allowed).
    pub fn is_terminal(&self) -> bool {
        use std::io::IsTerminal;
        matches!(self, Sink::Stdout(_)) && io::stdout().is_terminal()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

/// An append-only file rotated by size, written in whole lines.
pub struct RotatingFile {
    /// The file's directory, opened once without following links; the
    /// file and its rotated copies are opened and renamed inside it.
    dir: SafeDir,
    name: String,
    max_size: u64,
    keep: u32,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// Written by callers, not yet in the file; may end in a partial line.
    pending: Vec<u8>,
}

impl RotatingFile {
    /// Opens (appending to) `path`; rotates once it would exceed `max_size`
    /// bytes, keeping `keep` rotated files (0: the file is truncated
    /// instead).
    pub fn open(path: &Path, max_size: u64, keep: u32) -> io::Result<RotatingFile> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file name", path.display()),
            )
        };
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = SafeDir::existing(parent)?;
        let file = open_append(&dir, name)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            dir,
            name: name.to_string(),
            max_size: max_size.max(1),
            keep,
            file,
            size,
            pending: Vec::with_capacity(BUFFER),
        })
    }

    pub fn reopen(&mut self) -> io::Result<()> {
        self.write_lines(false)?;
        self.file = open_append(&self.dir, &self.name)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    /// Writes the complete lines of `pending` (and with `all`, a trailing
    /// partial line too), rotating between lines when the next would not
    /// fit. A line longer than the limit gets a file of its own.
    fn write_lines(&mut self, all: bool) -> io::Result<()> {
        let end = if all {
            self.pending.len()
        } else {
            match self.pending.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => return Ok(()),
            }
        };
        let mut start = 0;
        while start < end {
            let room = self.max_size.saturating_sub(self.size) as usize;
            // The longest run of whole lines that fits in the room left.
            let chunk_end = match self.pending[start..end]
                .iter()
                .take(room)
                .rposition(|&b| b == b'\n')
            {
                Some(i) if start + i < end => start + i + 1,
                _ if self.size > 0 => {
                    self.rotate()?;
                    continue;
                }
                // An empty file and a first line longer than the limit.
                _ => self.pending[start..end]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(end, |i| start + i + 1),
            };
            self.file.write_all(&self.pending[start..chunk_end])?;
            self.size += (chunk_end - start) as u64;
            start = chunk_end;
        }
        self.pending.drain(..end);
        Ok(())
    }

    /// FILE.(n-1) -> FILE.n ... FILE -> FILE.1, then a new FILE.
    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            // Rotated files are numbered without gaps: only those present
            // are looked at, however many may be kept.
            let mut last = 0;
            while last < self.keep && self.dir.exists(&numbered(&self.name, last + 1)) {
                last += 1;
            }
            for n in (1..=last.min(self.keep - 1)).rev() {
                self.dir
                    .rename(&numbered(&self.name, n), &numbered(&self.name, n + 1))?;
            }
            self.dir.rename(&self.name, &numbered(&self.name, 1))?;
            self.file = open_append(&self.dir, &self.name)?;
        }
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= BUFFER {
            self.write_lines(false)?;
        }
        Ok(buf.len())
    }

    /// Writes every complete line; a partial line waits for its end.
    fn flush(&mut self) -> io::Result<()> {
        self.write_lines(false)
    }
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        let _ = self.write_lines(true);
    }
}

/// `FILE.n`
fn numbered(name: &str, n: u32) -> String {
    format!("{name}.{n}")
}

/// The output file, never through a link, and only tracer's user's own.
fn open_append(dir: &SafeDir, name: &str) -> io::Result<File> {
    dir.append(name, 0o640)
        .map_err(|e| io::Error::new(e.kind(), format!("opening the output file: {e}")))
}

/// A size such as `1048576`, `64K`, `100M` or `1G` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => {
            return Err(format!(
                "`{text}`: expected a size such as 1048576, 64K, 100M or 1G"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a size such as 1048576, 64K, 100M or 1G"))?;
    match n.checked_shl(shift).filter(|v| v >> shift == n) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("`{text}`: the size must be above 0 and below 16E")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// `FILE.n` next to `path`.
    fn numbered_path(path: &Path, n: u32) -> PathBuf {
        path.with_file_name(numbered(path.file_name().unwrap().to_str().unwrap(), n))
    }

    #[test]
    fn a_planted_link_at_the_output_name_is_refused_and_its_target_untouched() {
        let dir = scratch("link");
        let victim = dir.join("passwd");
        std::fs::write(&victim, "root:x:0:0\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("events.json")).unwrap();
        let e = RotatingFile::open(&dir.join("events.json"), 1000, 2)
            .err()
            .expect("opened through a link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every file's lines, oldest file first.
    fn all_lines(path: &Path, keep: u32) -> Vec<String> {
        let mut lines = Vec::new();
        for n in (0..=keep + 1).rev() {
            let p = if n == 0 {
                path.to_path_buf()
            } else {
                numbered_path(path, n)
            };
            if let Ok(text) = std::fs::read_to_string(&p) {
                assert!(
                    text.is_empty() || text.ends_with('\n'),
                    "{} ends mid-line",
                    p.display()
                );
                lines.extend(text.lines().map(String::from));
            }
        }
        lines
    }

    #[test]
    fn rotation_keeps_every_line_whole_and_in_order() {
        let dir = scratch("order");
        let path = dir.join("events.json");
        {
            let mut f = RotatingFile::open(&path, 1000, 1000).unwrap();
            for i in 0..5000 {
                // Written in pieces, as serde_json does.
                write!(f, "{{\"n\":").unwrap();
                write!(f, "{i},\"pad\":\"{}\"}}", "x".repeat(i % 37)).unwrap();
                f.write_all(b"\n").unwrap();
                if i % 7 == 0 {
                    f.flush().unwrap();
                }
            }
        }
        let lines = all_lines(&path, 1000);
        let expected: Vec<String> = (0..5000)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 37)))
            .collect();
        assert_eq!(lines.len(), expected.len());
        assert!(lines == expected, "lines out of order or changed");
        for n in 1..=1000 {
            if let Ok(m) = std::fs::metadata(numbered_path(&path, n)) {
                assert!(m.len() <= 1000, "file {n} has {} bytes", m.len());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_keep_rotated_files_remain_and_long_lines_get_their_own() {
        let dir = scratch("keep");
        let path = dir.join("out");
        {
            let mut f = RotatingFile::open(&path, 10, 2).unwrap();
            f.write_all(b"aaaa\nbbbb\ncccccccccccccccc\ndd\neeeeeeeee\n")
                .unwrap();
        }
        assert!(!numbered_path(&path, 3).exists());
        assert_eq!(all_lines(&path, 2), ["cccccccccccccccc", "dd", "eeeeeeeee"]);
        assert_eq!(
            std::fs::read_to_string(numbered_path(&path, 1)).unwrap(),
            "dd\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_follows_a_file_moved_away() {
        let dir = scratch("reopen");
        let path = dir.join("out");
        let mut f = RotatingFile::open(&path, 1 << 20, 1).unwrap();
        f.write_all(b"one\n").unwrap();
        f.flush().unwrap();
        std::fs::rename(&path, dir.join("moved")).unwrap();
        f.write_all(b"two\n").unwrap();
        f.reopen().unwrap();
        f.write_all(b"three\n").unwrap();
        drop(f);
        assert_eq!(
            std::fs::read_to_string(dir.join("moved")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
