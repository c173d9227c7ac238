//! L: /proc as libc's readdir shows it to an ordinary, dynamically linked
//! program. A hook in `/etc/ld.so.preload` (or `LD_PRELOAD`) lives in libc's
//! callers' address space, so the listing is made by a child process that the
//! dynamic loader starts normally: tracer itself (`tracer __libc-readdir`)
//! when it is dynamically linked, else `ls` (a static tracer ignores
//! ld.so.preload, and so would its child).
use std::{
    collections::BTreeSet,
    ffi::CStr,
    io::{self, Write},
    os::unix::process::CommandExt as _,
    process::Command,
};

use anyhow::Result;

use super::{parse_pid_lines, run_helper, HELPER_TIMEOUT};
use crate::error::exit;

/// The PIDs libc's readdir lists.
#[derive(Clone, Debug)]
pub struct LibcListing {
    pub pids: BTreeSet<u32>,
    /// How the listing was made, for the evidence.
    pub method: String,
    pub helper_pid: u32,
}

impl LibcListing {
    /// Lists /proc in a helper process. Errors are kept as text: a missing
    /// L view weakens the diff but does not stop it.
    pub fn take() -> Result<LibcListing, String> {
        let (mut command, method) = helper_command();
        run_helper(&mut command, HELPER_TIMEOUT)
            .and_then(|o| o.success())
            .map(|out| LibcListing {
                pids: parse_pid_lines(&out.stdout),
                method: method.clone(),
                helper_pid: out.pid,
            })
            .map_err(|e| format!("{method} failed: {e:#}"))
    }
}

/// The program that lists /proc through libc, and how to describe it.
fn helper_command() -> (Command, String) {
    if has_program_interpreter() {
        // /proc/self/exe resolves in the child to this very binary, even if
        // the file was replaced or deleted since tracer started.
        let mut c = Command::new("/proc/self/exe");
        c.arg0("tracer").arg("__libc-readdir");
        let how = "`tracer __libc-readdir` (dynamically linked: loads libc and ld.so.preload like any program)";
        (c, how.into())
    } else {
        let mut c = Command::new("ls");
        c.args(["-1", "-f", "/proc"]);
        let how =
            "`ls -1 -f /proc` (tracer is statically linked and cannot load ld.so.preload itself)";
        (c, how.into())
    }
}

/// Whether this executable has a PT_INTERP header, i.e. is started by the
/// dynamic loader (which is what applies ld.so.preload).
pub fn has_program_interpreter() -> bool {
    // SAFETY: AT_PHDR/AT_PHNUM describe this executable's program headers,
    // mapped for the life of the process.
    unsafe {
        let phdr = libc::getauxval(libc::AT_PHDR) as *const libc::Elf64_Phdr;
        let count = libc::getauxval(libc::AT_PHNUM) as usize;
        if phdr.is_null() {
            return false;
        }
        (0..count).any(|i| (*phdr.add(i)).p_type == libc::PT_INTERP)
    }
}

/// `tracer __libc-readdir`: prints the numeric entries of /proc, one a line,
/// as libc's opendir/readdir return them.
pub fn print_listing() -> Result<i32> {
    let pids = libc_list_numeric(c"/proc")?;
    let mut out = io::stdout().lock();
    for pid in pids {
        writeln!(out, "{pid}")?;
    }
    out.flush()?;
    Ok(exit::OK)
}

fn libc_list_numeric(path: &CStr) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    // SAFETY: plain libc directory stream use; the entry pointer is only
    // read before the next readdir call, and the stream is closed once.
    unsafe {
        let dir = libc::opendir(path.as_ptr());
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        loop {
            let entry = libc::readdir(dir);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr());
            if let Some(pid) = name.to_str().ok().and_then(|s| s.parse().ok()) {
                out.push(pid);
            }
        }
        libc::closedir(dir);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_listing_sees_this_process() {
        let pids = libc_list_numeric(c"/proc").unwrap();
        assert!(pids.contains(&std::process::id()));
    }

    #[test]
    fn test_binary_is_dynamically_linked_on_glibc() {
        assert_eq!(has_program_interpreter(), cfg!(target_env = "gnu"));
    }
}
