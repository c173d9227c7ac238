//! S: the process list as `ps` prints it: the `ps` a user would run (first on
//! PATH), and `/bin/ps` too when that is a different file, so a trojaned
//! copy early in PATH shows against the packaged one.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use super::{parse_pid_lines, run_helper, HELPER_TIMEOUT};

/// The PIDs one `ps` program lists.
#[derive(Clone, Debug)]
pub struct PsListing {
    pub program: PathBuf,
    pub pids: Result<BTreeSet<u32>, String>,
    pub helper_pid: Option<u32>,
}

impl PsListing {
    /// Runs `program -e -o pid=` once.
    pub fn take(program: &Path) -> PsListing {
        let run = run_helper(
            Command::new(program).args(["-e", "-o", "pid="]),
            HELPER_TIMEOUT,
        )
        .and_then(|o| o.success());
        let helper_pid = run.as_ref().ok().map(|o| o.pid);
        let pids = run
            .map_err(|e| format!("{e:#}"))
            .and_then(|o| match parse_pid_lines(&o.stdout) {
                pids if pids.is_empty() => Err("printed no PIDs".into()),
                pids => Ok(pids),
            })
            .map_err(|e| format!("{} -e -o pid= failed: {e}", program.display()));
        PsListing {
            program: program.to_path_buf(),
            pids,
            helper_pid,
        }
    }
}

/// The `ps` programs to ask: the first on PATH, then `/bin/ps` if it is
/// another file.
pub fn programs() -> Vec<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut out: Vec<PathBuf> = first_in_path("ps", &path_var).into_iter().collect();
    let system = PathBuf::from("/bin/ps");
    if is_executable(&system) && !out.iter().any(|p| same_file(p, &system)) {
        out.push(system);
    }
    out
}

/// The first executable file called `name` in a PATH-style list.
pub fn first_in_path(name: &str, path_var: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    rustix::fs::stat(path).is_ok_and(|st| {
        let mode = rustix::fs::FileType::from_raw_mode(st.st_mode);
        mode == rustix::fs::FileType::RegularFile && st.st_mode & 0o111 != 0
    })
}

/// Whether two paths name the same file (same device and inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (rustix::fs::stat(a), rustix::fs::stat(b)) {
        (Ok(x), Ok(y)) => (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_takes_the_first_executable_and_skips_relative_dirs() {
        let found = first_in_path(
            "sh",
            std::ffi::OsStr::new("relative:/nonexistent:/bin:/usr/bin"),
        );
        assert_eq!(found, Some(PathBuf::from("/bin/sh")));
        assert_eq!(
            first_in_path("no-such-program-here", std::ffi::OsStr::new("/bin")),
            None
        );
    }

    #[test]
    fn one_file_under_two_names_is_the_same_file() {
        assert!(same_file(Path::new("/bin/sh"), Path::new("/bin/../bin/sh")));
        assert!(!same_file(Path::new("/bin/sh"), Path::new("/nonexistent")));
    }
}
