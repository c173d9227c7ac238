//! Where a process's program file lives, and whether that looks dropped.
//!
//! Shared by the indicator signs (`detect::indicators`), the kill-tree
//! planner, the persistence scan and quarantine, so that "dropped",
//! "system binary" and "mentions" mean one thing everywhere.
use crate::model::Process;

/// What the kernel appends to `/proc/PID/exe` once the file is unlinked.
pub const DELETED_SUFFIX: &str = " (deleted)";

/// World-writable places where droppers put their payloads.
pub const DROP_DIRS: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/run/shm"];

/// Directories that hold the distribution's own programs and libraries.
const SYSTEM_DIRS: [&str; 6] = ["/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/"];

/// Shells, by program name: a watchdog loop is almost always one of these.
const SHELLS: [&str; 11] = [
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "tcsh", "csh", "fish", "busybox",
];

/// The executable's path without the " (deleted)" suffix.
pub fn exe_path(p: &Process) -> Option<&str> {
    p.exe
        .as_deref()
        .map(strip_deleted)
        .filter(|e| !e.is_empty())
}

/// An exe link's text without the kernel's " (deleted)" mark.
pub fn strip_deleted(exe: &str) -> &str {
    exe.strip_suffix(DELETED_SUFFIX).unwrap_or(exe)
}

/// The executable was unlinked after the process started.
pub fn is_deleted(p: &Process) -> bool {
    p.exe
        .as_deref()
        .is_some_and(|e| e.ends_with(DELETED_SUFFIX))
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The directory part of an absolute path (`/` for a top-level file).
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// The path lies under one of the world-writable drop directories.
pub fn in_drop_dir(path: &str) -> bool {
    DROP_DIRS.iter().any(|d| {
        path.strip_prefix(d)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The path is a distribution program or library (under /usr, /bin, /sbin, /lib).
pub fn is_system_path(path: &str) -> bool {
    SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
}

/// The process runs from a system binary that is still on disk.
pub fn runs_system_binary(p: &Process) -> bool {
    !is_deleted(p) && exe_path(p).is_some_and(is_system_path)
}

/// Why the process's program looks dropped: deleted after start, or run
/// from a world-writable directory. `None` when it looks installed.
pub fn dropped_location(p: &Process) -> Option<String> {
    let path = exe_path(p)?;
    if is_deleted(p) {
        Some(format!("executable {path} was deleted after it started"))
    } else if in_drop_dir(path) {
        Some(format!("executable runs from {}", parent_dir(path)))
    } else {
        None
    }
}

/// The program name: the executable's file name, else the kernel's comm.
pub fn program_name(p: &Process) -> &str {
    exe_path(p).map(file_name).unwrap_or(&p.comm)
}

/// The process is a shell (by executable or comm).
pub fn is_shell(p: &Process) -> bool {
    SHELLS.contains(&program_name(p)) || SHELLS.contains(&p.comm.as_str())
}

/// `haystack` mentions `word` as a whole word or path component: the
/// characters around it are not part of a file name. So `./miner` and
/// `/tmp/x/miner;` mention `miner`, `miners` and `xminer` do not.
pub fn mentions(haystack: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let is_name_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    haystack.match_indices(word).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + word.len()..].chars().next();
        // A '.' after the name ends a sentence ("run miner.") unless a name
        // continues after it ("miner.sh"); before the name it is part of it.
        let before_ok = before.is_none_or(|c| !is_name_char(c));
        let after_ok = match after {
            None => true,
            Some('.') => !haystack[at + word.len() + 1..]
                .chars()
                .next()
                .is_some_and(is_name_char),
            Some(c) => !is_name_char(c),
        };
        before_ok && after_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_exe(exe: &str) -> Process {
        Process {
            exe: Some(exe.into()),
            comm: file_name(exe).chars().take(15).collect::<String>().into(),
            ..Default::default()
        }
    }

    #[test]
    fn deleted_suffix_is_stripped_and_noticed() {
        let p = with_exe("/tmp/x/miner (deleted)");
        assert_eq!(exe_path(&p), Some("/tmp/x/miner"));
        assert!(is_deleted(&p));
        assert!(dropped_location(&p).unwrap().contains("deleted"));
        assert!(!runs_system_binary(&with_exe("/usr/bin/dash (deleted)")));
    }

    #[test]
    fn drop_dirs_and_system_dirs() {
        assert!(in_drop_dir("/dev/shm/.x/y"));
        assert!(
            in_drop_dir("/run/shm/m"),
            "the same tmpfs, seen where /dev/shm links to it"
        );
        assert!(!in_drop_dir("/tmpfoo/y"));
        assert!(!in_drop_dir("/tmp"));
        assert!(is_system_path("/usr/bin/dash"));
        assert!(!is_system_path("/opt/app/bin"));
        assert!(runs_system_binary(&with_exe("/usr/sbin/cron")));
        assert_eq!(
            dropped_location(&with_exe("/var/tmp/k")).unwrap(),
            "executable runs from /var/tmp"
        );
        assert_eq!(dropped_location(&with_exe("/usr/bin/ls")), None);
    }

    #[test]
    fn paths_split() {
        assert_eq!(file_name("/tmp/x/miner"), "miner");
        assert_eq!(parent_dir("/tmp/x/miner"), "/tmp/x");
        assert_eq!(parent_dir("/miner"), "/");
    }

    #[test]
    fn shells_are_known_by_exe_or_comm() {
        assert!(is_shell(&with_exe("/usr/bin/dash")));
        let mut p = with_exe("/usr/bin/bash");
        p.exe = None;
        assert!(is_shell(&p));
        assert!(!is_shell(&with_exe("/tmp/miner")));
    }

    #[test]
    fn mentions_whole_names_only() {
        assert!(mentions("while true; do ./miner; sleep 1; done", "miner"));
        assert!(mentions("/tmp/x/miner -o a:1", "miner"));
        assert!(mentions("run miner.", "miner"));
        assert!(mentions("\"miner\"", "miner"));
        assert!(!mentions("xminer", "miner"));
        assert!(!mentions("miners", "miner"));
        assert!(!mentions("x.miner", "miner"));
        assert!(!mentions("miner.sh", "miner"));
        assert!(mentions(
            "*/5 * * * * /tmp/x/miner >/dev/null",
            "/tmp/x/miner"
        ));
        assert!(!mentions("", "miner"));
    }
}
