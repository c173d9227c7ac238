//! `getdents_hider OBJECT PID hide|corrupt`: loads the test rootkit of
//! tests/fixtures/getdents-hider (built by `cargo xtask matrix`) and
//! attaches it to `syscalls/sys_{enter,exit}_getdents64`, so that PID goes
//! missing from every directory listing (`hide`) or its record gets a
//! `d_reclen` that runs past the buffer (`corrupt`). Prints `attached` once
//! both programs are attached, then holds them until killed: this process
//! is the programs' owner, which tracer must name.
//!
//! Only for the kernel matrix's guests: the programs call
//! `bpf_probe_write_user`, which lockdown (`integrity` or above) refuses;
//! there the loader fails with one line on stderr and exit code 3.
//! Mounts (tracefs, securityfs) are made only in a private mount namespace
//! of this process.
use std::{ffi::CString, fs, io::Write as _, path::Path, process::ExitCode};

use aya::{programs::TracePoint, EbpfLoader};

/// The program's `Config` (tests/fixtures/getdents-hider/src/main.rs).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Config {
    name: u64,
    mask: u64,
    mode: u32,
    dirent_offset: u32,
    ret_offset: u32,
    pad: u32,
}

// SAFETY: repr(C), integers only, no padding.
unsafe impl aya::Pod for Config {}

const TRACEFS: &str = "/sys/kernel/tracing";
const SECURITYFS: &str = "/sys/kernel/security";
/// Exit code when the kernel refuses the programs (lockdown, no syscall
/// tracepoints): the caller says the test needs the matrix.
const REFUSED: u8 = 3;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("getdents_hider: {msg}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn usage() -> Failure {
    (2, "usage: getdents_hider OBJECT PID hide|corrupt".into())
}

fn run() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [object, pid, mode] = args.as_slice() else {
        return Err(usage());
    };
    let pid: u32 = pid.parse().map_err(|_| usage())?;
    let mode = match mode.as_str() {
        "hide" => 1,
        "corrupt" => 2,
        _ => return Err(usage()),
    };
    let digits = pid.to_string();
    if pid == 0 || digits.len() > 7 {
        return Err((2, format!("PID {pid} out of range (1..=9999999)")));
    }
    let mut name = [0u8; 8];
    name[..digits.len()].copy_from_slice(digits.as_bytes());
    let used = digits.len() + 1;
    let mask = if used == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * used)) - 1
    };
    let data = fs::read(object).map_err(|e| (2, format!("{object}: {e}")))?;

    // On 5.10 BPF memory is charged to RLIMIT_MEMLOCK; later kernels charge
    // the memory cgroup. Raising it may fail (no CAP_SYS_RESOURCE): not fatal.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

    if !Path::new(TRACEFS).join("events").is_dir() {
        private_mount("tracefs", TRACEFS).map_err(|e| {
            (
                REFUSED,
                format!("tracefs is not mounted and mounting it failed: {e}"),
            )
        })?;
    }
    let format = |event: &str, field: &str| -> Result<u32, Failure> {
        let path = format!("{TRACEFS}/events/syscalls/{event}/format");
        let text = fs::read_to_string(&path).map_err(|e| {
            (
                REFUSED,
                format!(
                    "{path}: {e} (a kernel without syscall tracepoints, CONFIG_FTRACE_SYSCALLS)"
                ),
            )
        })?;
        field_offset(&text, field)
            .ok_or_else(|| (REFUSED, format!("{path} has no field `{field}`")))
    };
    let config = Config {
        name: u64::from_le_bytes(name),
        mask,
        mode,
        dirent_offset: format("sys_enter_getdents64", "dirent")?,
        ret_offset: format("sys_exit_getdents64", "ret")?,
        pad: 0,
    };

    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .load(&data)
        .map_err(|e| (2, format!("{object}: {e}")))?;
    for (prog, event) in [
        ("getdents_enter", "sys_enter_getdents64"),
        ("getdents_exit", "sys_exit_getdents64"),
    ] {
        let tp: &mut TracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| (2, format!("{object} has no program {prog}")))?
            .try_into()
            .map_err(|e| (2, format!("{prog}: {e}")))?;
        if let Err(e) = tp.load() {
            return Err(refusal(prog, &e));
        }
        tp.attach("syscalls", event).map_err(|e| {
            (
                REFUSED,
                format!("attaching {prog} to syscalls/{event}: {e}"),
            )
        })?;
    }
    println!("attached");
    let _ = std::io::stdout().flush();
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// The one line for a program the kernel would not load: lockdown is the
/// usual reason (it forbids bpf_probe_write_user).
fn refusal(prog: &str, e: &aya::programs::ProgramError) -> Failure {
    let lockdown = lockdown();
    let locked = lockdown.as_deref().is_some_and(|l| !l.starts_with("none"));
    // The verifier's log is long; its last non-empty line says why.
    let detail = format!("{e:#}");
    let why = detail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let first = detail.lines().next().unwrap_or("").trim();
    let first = first.split(". Verifier output").next().unwrap_or(first);
    match lockdown {
        Some(l) if locked => (
            REFUSED,
            format!(
                "the kernel refused {prog}: lockdown is `{l}`, which forbids bpf_probe_write_user; \
                 this fixture runs only in the kernel matrix's guests (`cargo xtask matrix`) ({first})"
            ),
        ),
        _ => (
            REFUSED,
            format!(
                "the kernel refused {prog} (lockdown {}): {first}: {why}",
                lockdown.as_deref().unwrap_or("unknown")
            ),
        ),
    }
}

/// The active lockdown level (`[integrity]` in the lockdown file), reading
/// securityfs through a private mount when it is not mounted.
fn lockdown() -> Option<String> {
    let file = format!("{SECURITYFS}/lockdown");
    if !Path::new(&file).exists() {
        private_mount("securityfs", SECURITYFS).ok()?;
    }
    let text = fs::read_to_string(&file).ok()?;
    let active = text
        .split_whitespace()
        .find(|w| w.starts_with('['))?
        .trim_matches(['[', ']']);
    Some(active.to_string())
}

/// Mounts `fstype` on `dir` in a private mount namespace of this process
/// (made on first use): the host's mounts never change.
fn private_mount(fstype: &str, dir: &str) -> std::io::Result<()> {
    use std::sync::Once;
    static UNSHARE: Once = Once::new();
    let mut err = None;
    UNSHARE.call_once(|| {
        // SAFETY: unshare and mount with valid C strings; single-threaded.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                err = Some(std::io::Error::last_os_error());
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let (fs, d) = (CString::new(fstype)?, CString::new(dir)?);
    // SAFETY: as above.
    if unsafe { libc::mount(fs.as_ptr(), d.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The offset of `field` in a tracepoint `format` file: the line
/// `field:const struct linux_dirent64 * dirent;\toffset:24;\tsize:8;...`.
fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        parts
            .find_map(|p| p.strip_prefix("offset:"))
            .and_then(|o| o.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_come_from_the_format_file() {
        let enter = "name: sys_enter_getdents64\nID: 700\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:struct linux_dirent64 * dirent;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:unsigned int count;\toffset:32;\tsize:8;\tsigned:0;\n";
        assert_eq!(super::field_offset(enter, "dirent"), Some(24));
        assert_eq!(super::field_offset(enter, "count"), Some(32));
        assert_eq!(super::field_offset(enter, "ret"), None);
        let exit = "\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n";
        assert_eq!(super::field_offset(exit, "ret"), Some(16));
    }
}
