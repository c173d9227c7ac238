//! L: `/proc/net/{tcp,tcp6,udp,udp6}` as a program that reads them through
//! libc sees them (`netstat` does, with `fopen`). An `/etc/ld.so.preload`
//! hook lives in its callers' address space, so the files are read by a
//! child that the dynamic loader starts normally: tracer itself
//! (`tracer __libc-cat`) when it is dynamically linked, else `cat` under
//! `sh` (a static tracer would ignore ld.so.preload, and so would a child
//! it forked without exec).
use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{self, Write},
    os::unix::{ffi::OsStrExt, process::CommandExt as _},
    path::PathBuf,
    process::Command,
};

use anyhow::Result;

use super::{procnet, Namespaces, Scope, SocketListing, INET_PARTS};
use crate::{
    error::exit,
    model::socket::{Family, Protocol},
    views::{libc_readdir::has_program_interpreter, run_helper, HELPER_TIMEOUT},
};

/// The line that opens each file's contents in the helper's output.
const FILE_MARK: &str = "@@tracer-file ";

/// The TCP and UDP files of every namespace, through libc in a helper;
/// also the helper's PID. Files the helper could not read are gaps.
pub fn take(ns: &Namespaces) -> Result<(SocketListing, u32), String> {
    let mut wanted: BTreeMap<String, Scope> = BTreeMap::new();
    for &netns in ns.members.keys() {
        // Hooks match the path ordinary tools open: `/proc/net/tcp` for
        // the reader's own namespace.
        let dir = if netns == ns.own {
            "/proc/net".to_string()
        } else {
            match ns.members[&netns].first() {
                Some(pid) => format!("/proc/{pid}/net"),
                None => continue,
            }
        };
        for (protocol, family) in INET_PARTS {
            let path = format!("{dir}/{}", file_name(protocol, family));
            wanted.insert(
                path,
                Scope {
                    netns,
                    protocol,
                    family,
                },
            );
        }
    }
    let mut command = helper_command(wanted.keys());
    let method = method();
    let out = run_helper(&mut command, HELPER_TIMEOUT)
        .and_then(|o| o.success())
        .map_err(|e| format!("{method} failed: {e:#}"))?;
    let mut listing = SocketListing::default();
    let mut sections = split_files(&out.stdout);
    for (path, scope) in wanted {
        match sections.remove(path.as_str()) {
            Some(text) => listing.add(
                scope,
                procnet::parse(text.as_bytes(), scope.netns, scope.protocol, scope.family),
            ),
            None => listing.gaps.push(format!("{path}: not read by {method}")),
        }
    }
    Ok((listing, out.pid))
}

fn file_name(protocol: Protocol, family: Family) -> &'static str {
    match (protocol, family) {
        (Protocol::Tcp, Family::Ipv4) => "tcp",
        (Protocol::Tcp, _) => "tcp6",
        (_, Family::Ipv4) => "udp",
        _ => "udp6",
    }
}

/// How the files are read through libc, for the evidence.
pub fn method() -> &'static str {
    if has_program_interpreter() {
        "`tracer __libc-cat` (dynamically linked: fopen/fread with libc and ld.so.preload loaded, like netstat)"
    } else {
        "`cat` under `sh` (tracer is statically linked and cannot load ld.so.preload itself)"
    }
}

/// The helper that prints each file after a [`FILE_MARK`] line.
fn helper_command<'a>(paths: impl Iterator<Item = &'a String>) -> Command {
    if has_program_interpreter() {
        // /proc/self/exe resolves in the child to this very binary.
        let mut c = Command::new("/proc/self/exe");
        c.arg0("tracer").arg("__libc-cat").args(paths);
        c
    } else {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!("for f; do printf '{FILE_MARK}%s\\n' \"$f\" && cat \"$f\"; done"),
            "sh",
        ])
        .args(paths);
        c
    }
}

/// The helper's output, split by file; a file's marker without contents
/// after it still counts as read (an empty file).
fn split_files(out: &str) -> BTreeMap<&str, String> {
    let mut files: BTreeMap<&str, String> = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in out.lines() {
        if let Some(path) = line.strip_prefix(FILE_MARK) {
            files.entry(path).or_default();
            current = Some(path);
        } else if let Some(path) = current {
            let text = files.entry(path).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    files
}

/// `tracer __libc-cat PATH...`: prints each file, read with libc's
/// `fopen`/`fread`, after a marker line; a file that cannot be opened is
/// left out (the parent then names it as not read).
pub fn print_files(paths: &[PathBuf]) -> Result<i32> {
    let mut out = io::stdout().lock();
    for path in paths {
        if let Some(bytes) = libc_read(path) {
            out.write_all(FILE_MARK.as_bytes())?;
            out.write_all(path.as_os_str().as_bytes())?;
            out.write_all(b"\n")?;
            out.write_all(&bytes)?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

fn libc_read(path: &std::path::Path) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    // SAFETY: a plain stdio stream, read into a buffer of the size given,
    // and closed once.
    unsafe {
        let f = libc::fopen(c_path.as_ptr(), c"r".as_ptr());
        if f.is_null() {
            return None;
        }
        loop {
            let n = libc::fread(buf.as_mut_ptr().cast(), 1, buf.len(), f);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        libc::fclose(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_output_splits_by_file_marker() {
        let out = "@@tracer-file /proc/net/tcp\nheader\nline 1\n@@tracer-file /proc/net/udp\n@@tracer-file /proc/9/net/tcp\nheader\n";
        let files = split_files(out);
        assert_eq!(files["/proc/net/tcp"], "header\nline 1\n");
        assert_eq!(files["/proc/net/udp"], "");
        assert_eq!(files["/proc/9/net/tcp"], "header\n");
        assert!(!files.contains_key("/proc/net/tcp6"));
        assert!(split_files("stray text before any marker\n").is_empty());
    }

    #[test]
    fn libc_reads_the_kernel_file() {
        let bytes = libc_read(std::path::Path::new("/proc/net/tcp")).unwrap();
        assert!(bytes.starts_with(b"  sl"));
        assert_eq!(libc_read(std::path::Path::new("/nonexistent/x")), None);
    }
}
