//! Human output stays readable whatever the host holds: a process with
//! 3,000 threads of random names or a 1.5 MB command line must not make a
//! responder's terminal unusable, nor a line a log shipper drops.
//!
//! - Attacker-sized fields are cut where they are printed, with a marker
//!   saying how much was left out: command lines to their first
//!   [`CMDLINE_HEAD`] characters and the [`CMDLINE_AROUND`] around the
//!   first sign of a miner in them; thread lists to [`THREADS_SHOWN`]
//!   names, then `+2,998 more`; any other field to [`FIELD_MAX`].
//! - Then every human line passes [`LineCap`], which cuts what is still
//!   longer than [`LINE_MAX`] bytes.
//!
//! These cut the rule text (see `model::host_str`); the renderer escapes
//! the result once, as it does every host string. JSON keeps everything.
use std::io::{self, Write};

use crate::model::{HostStr, ThreadName};

/// Bytes of one human line at most, marker included.
pub const LINE_MAX: usize = 512;
/// Characters of a command line's start shown.
pub const CMDLINE_HEAD: usize = 160;
/// Characters shown around a sign in a long command line.
pub const CMDLINE_AROUND: usize = 100;
/// Thread names shown in one list.
pub const THREADS_SHOWN: usize = 8;
/// Characters of any other host field shown.
pub const FIELD_MAX: usize = 240;

/// `text` cut to `max` characters, marked `…(+N chars)`.
pub fn cut(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}…(+{} chars)", group(total - max))
}

/// A command line for a human line: whole when short; else its start
/// and, when a sign of a miner lies further on, the part around it.
pub fn cmdline(text: &HostStr) -> String {
    let raw = text.as_str();
    let total = raw.chars().count();
    if total <= CMDLINE_HEAD + CMDLINE_AROUND {
        return raw.to_string();
    }
    let head: String = raw.chars().take(CMDLINE_HEAD).collect();
    let sign = crate::detect::indicators::first_sign_at(raw)
        .map(|byte| raw[..byte].chars().count())
        .filter(|&at| at + 20 > CMDLINE_HEAD);
    match sign {
        Some(at) => {
            let from = at.saturating_sub(CMDLINE_AROUND / 4).max(CMDLINE_HEAD);
            let window: String = raw.chars().skip(from).take(CMDLINE_AROUND).collect();
            let after = total.saturating_sub(from + CMDLINE_AROUND);
            format!(
                "{head}…(+{} chars)…{window}{}",
                group(from - CMDLINE_HEAD),
                if after > 0 {
                    format!("…(+{} chars)", group(after))
                } else {
                    String::new()
                }
            )
        }
        None => format!("{head}…(+{} chars)", group(total - CMDLINE_HEAD)),
    }
}

/// `name(tid), ...` for at most [`THREADS_SHOWN`] threads, then `+N more`;
/// `first` picks the ones named before the rest (the suspicious ones).
pub fn threads(threads: &[ThreadName], first: impl Fn(&str) -> bool) -> String {
    let (picked, rest): (Vec<&ThreadName>, Vec<&ThreadName>) =
        threads.iter().partition(|t| first(t.comm.as_str()));
    let shown: Vec<String> = picked
        .iter()
        .chain(rest.iter())
        .take(THREADS_SHOWN)
        .map(|t| format!("{}({})", cut(t.comm.as_str(), 32), t.tid))
        .collect();
    let more = threads.len().saturating_sub(THREADS_SHOWN);
    if more > 0 {
        format!("{}, +{} more", shown.join(", "), group(more))
    } else {
        shown.join(", ")
    }
}

/// An evidence value for a human line: a command line cut as one, the
/// `threads` list as one (from the process's own threads, when it has
/// them), anything else as a field.
pub fn evidence(label: &str, value: &str, process: Option<&crate::model::Process>) -> String {
    if label.starts_with("cmdline") {
        return cmdline(&HostStr::from_text(value));
    }
    match process.map(|p| p.threads.as_slice()) {
        Some(list) if label == "threads" => threads(list, |n| {
            crate::detect::masquerade::miner_named(n).is_some()
        }),
        _ => cut(value, FIELD_MAX),
    }
}

/// `2998` → `2,998`.
pub fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Cuts every line written through it to [`LINE_MAX`] bytes (at a
/// character boundary), ending a cut line with how many bytes were left
/// out. `unbounded` passes everything (JSON lines).
pub struct LineCap<W: Write> {
    inner: W,
    unbounded: bool,
    /// Bytes of the current line written, and cut.
    column: usize,
    cut: usize,
}

/// Writes human text to stdout, each line bounded.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = LineCap::new(io::stdout().lock());
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Room kept at the end of a cut line for its marker.
const MARKER_ROOM: usize = 40;

impl<W: Write> LineCap<W> {
    pub fn new(inner: W) -> Self {
        LineCap {
            inner,
            unbounded: false,
            column: 0,
            cut: 0,
        }
    }

    /// Passes lines through whole (for JSON).
    pub fn unbounded(inner: W) -> Self {
        LineCap {
            unbounded: true,
            ..LineCap::new(inner)
        }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn end_line(&mut self) -> io::Result<()> {
        if self.cut > 0 {
            write!(self.inner, "…(+{} bytes cut)", group(self.cut))?;
        }
        self.column = 0;
        self.cut = 0;
        self.inner.write_all(b"\n")
    }
}

impl<W: Write> Write for LineCap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.unbounded {
            return self.inner.write(buf);
        }
        let limit = LINE_MAX - MARKER_ROOM;
        for (i, piece) in buf.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                self.end_line()?;
            }
            let room = limit.saturating_sub(self.column);
            if self.cut > 0 || piece.len() > room {
                // Back off to a character boundary (UTF-8 continuation
                // bytes are 10xxxxxx), so the cut never splits one.
                let mut keep = room.min(piece.len());
                if self.cut > 0 {
                    keep = 0;
                }
                while keep > 0 && keep < piece.len() && piece[keep] & 0xC0 == 0x80 {
                    keep -= 1;
                }
                self.inner.write_all(&piece[..keep])?;
                self.column += keep;
                self.cut += piece.len() - keep;
            } else {
                self.inner.write_all(piece)?;
                self.column += piece.len();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_a_char_boundary_and_say_how_much() {
        let mut out = LineCap::new(Vec::new());
        let long = "é".repeat(2000); // 4,000 bytes
        writeln!(out, "short").unwrap();
        write!(out, "{}", &long[..1000]).unwrap();
        writeln!(out, "{}", &long[1000..]).unwrap();
        writeln!(out, "after").unwrap();
        let text = String::from_utf8(out.into_inner()).expect("still UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "short");
        assert!(lines[1].len() <= LINE_MAX, "{}", lines[1].len());
        assert!(lines[1].ends_with("bytes cut)"), "{}", lines[1]);
        assert!(lines[1].contains(&format!("+{} bytes cut", group(4000 - 472))));
        assert_eq!(lines[2], "after");
    }

    #[test]
    fn json_passes_whole() {
        let mut out = LineCap::unbounded(Vec::new());
        let long = "x".repeat(10_000);
        writeln!(out, "{long}").unwrap();
        assert_eq!(out.into_inner().len(), 10_001);
    }

    #[test]
    fn a_long_command_line_shows_its_start_and_its_sign() {
        let mut cmd = String::from("/tmp/.x/run ");
        cmd.push_str(&"A".repeat(1_500_000));
        cmd.push_str(" -o stratum+tcp://pool.evil.test:3333 -u wallet ");
        cmd.push_str(&"B".repeat(5000));
        let shown = cmdline(&HostStr::from_text(&cmd));
        assert!(shown.len() < 400, "{}", shown.len());
        assert!(shown.starts_with("/tmp/.x/run AAAA"));
        assert!(
            shown.contains("stratum+tcp://pool.evil.test:3333"),
            "{shown}"
        );
        assert!(shown.contains("chars)"));
        let short = cmdline(&HostStr::from_text("sleep 5"));
        assert_eq!(short, "sleep 5");
    }

    #[test]
    fn thread_lists_name_the_chosen_first_then_count_the_rest() {
        let threads: Vec<ThreadName> = (0..3000)
            .map(|i| ThreadName {
                tid: 100 + i,
                comm: HostStr::from_text(&format!("w{i:04}")),
            })
            .chain(std::iter::once(ThreadName {
                tid: 9999,
                comm: HostStr::from_text("xmrig"),
            }))
            .collect();
        let shown = super::threads(&threads, |n| n == "xmrig");
        assert!(shown.starts_with("xmrig(9999), w0000(100)"), "{shown}");
        assert!(shown.ends_with("+2,993 more"), "{shown}");
    }
}
