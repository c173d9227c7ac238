//! Persistence that would start a kill-tree set again, reported with its
//! ATT&CK technique, file and line, and why it points at the set; never
//! edited.
//!
//! Covered (after MITRE ATT&CK's Linux persistence techniques and public
//! persistence test kits): cron, anacron and at (T1053.003, T1053.002);
//! systemd services, user units and generators (T1543.002) and timers
//! (T1053.006); rc.local and init scripts (T1037.004); the message of the
//! day (T1037); udev rules (T1546.017); XDG autostart (T1547.013); kernel
//! module loading: modprobe `install` lines and modules-load.d
//! (T1547.006); PAM modules such as `pam_exec` (T1556.003); sshd_config's
//! `AuthorizedKeysCommand` and `ForceCommand`, apt and dpkg hooks,
//! logrotate scripts, NetworkManager dispatcher and ifupdown scripts (event
//! triggered execution, T1546); /etc/ld.so.preload, `LD_PRELOAD` in
//! /etc/environment or in units (T1574.006); every user's shell start-up
//! files (T1546.004); and recently touched authorized_keys (T1098.004).
//!
//! A line "starts it" when it mentions a member's program path, its file
//! name, or the directory it was dropped in (see `ChainClues`); comments are
//! skipped. A timer is reported with the service it activates. An
//! authorized_keys file is also reported when it was modified within
//! [`AUTHORIZED_KEYS_WINDOW`] of a dropped program's mtime.
//!
//! Files are read as bytes; a name or line that is not UTF-8 is matched
//! like any other and kept exactly (`HostStr`).
//!
//! The scan reads paths under a root, `/` unless the environment variable
//! `TRACER_PERSISTENCE_ROOT` names another directory (tests point it at a
//! temporary tree); users' home directories come from that root's
//! /etc/passwd (every account's, and root's).
use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use schemars::JsonSchema;
use serde::Serialize;

use super::{plan::ChainClues, program};
use crate::model::{HostStr, Process};

/// Environment variable that moves the scan's root (for tests).
pub const ROOT_ENV: &str = "TRACER_PERSISTENCE_ROOT";
/// An authorized_keys file modified this close to a dropped program's
/// mtime was probably written by the same intrusion.
pub const AUTHORIZED_KEYS_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Files larger than this are not persistence configuration.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Longest line quoted in a report.
const MAX_LINE_CHARS: usize = 300;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PersistenceHit {
    /// What kind of persistence: `crontab`, `systemd unit`, `udev rule`...
    pub kind: String,
    /// The MITRE ATT&CK technique, e.g. `T1053.003`.
    pub technique: String,
    pub file: HostStr,
    /// 1-based line number.
    pub line_no: usize,
    pub line: HostStr,
    /// The program path, name or directory the line mentions, or why the
    /// file is reported (authorized_keys).
    pub matched: String,
    /// Why this line points at the set, in words.
    pub reason: String,
}

/// Where the scan reads from.
#[derive(Clone, Debug)]
pub struct Roots {
    pub root: PathBuf,
}

impl Roots {
    /// `TRACER_PERSISTENCE_ROOT`, or `/`.
    pub fn from_env() -> Self {
        let root = std::env::var_os(ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Roots { root }
    }

    /// An absolute path as seen under the root.
    fn at(&self, abs: &str) -> PathBuf {
        self.root
            .join(HostStr::from_text(abs.trim_start_matches('/')).to_path())
    }
}

/// How a location is read.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// One file.
    File,
    /// The files directly in a directory.
    Dir,
    /// The files directly in a directory, with this suffix.
    DirSuffix(&'static str),
    /// Every file below a directory.
    Tree,
}

/// One kind of place: its name, ATT&CK technique, path and how it is read.
type Location = (&'static str, &'static str, &'static str, Pattern);

const CRON: &str = "T1053.003";
const AT: &str = "T1053.002";
const SYSTEMD_SERVICE: &str = "T1543.002";
const SYSTEMD_TIMER: &str = "T1053.006";
const RC_SCRIPTS: &str = "T1037.004";
const LOGON_SCRIPTS: &str = "T1037";
const UDEV: &str = "T1546.017";
const XDG_AUTOSTART: &str = "T1547.013";
const KERNEL_MODULES: &str = "T1547.006";
const PAM: &str = "T1556.003";
const EVENT_TRIGGERED: &str = "T1546";
const DYNAMIC_LINKER: &str = "T1574.006";
const SHELL_CONFIG: &str = "T1546.004";
const AUTHORIZED_KEYS_TECHNIQUE: &str = "T1098.004";

/// System-wide places.
const SYSTEM_LOCATIONS: &[Location] = &[
    ("crontab", CRON, "/etc/crontab", Pattern::File),
    ("crontab", CRON, "/etc/cron.d", Pattern::Dir),
    ("crontab", CRON, "/var/spool/cron/crontabs", Pattern::Dir),
    ("crontab", CRON, "/var/spool/cron", Pattern::Dir), // Red Hat keeps user crontabs here
    ("crontab", CRON, "/etc/anacrontab", Pattern::File),
    ("cron script", CRON, "/etc/cron.hourly", Pattern::Dir),
    ("cron script", CRON, "/etc/cron.daily", Pattern::Dir),
    ("cron script", CRON, "/etc/cron.weekly", Pattern::Dir),
    ("cron script", CRON, "/etc/cron.monthly", Pattern::Dir),
    ("at job", AT, "/var/spool/cron/atjobs", Pattern::Dir),
    ("at job", AT, "/var/spool/at", Pattern::Dir),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/etc/systemd/system",
        Pattern::Tree,
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/etc/systemd/user",
        Pattern::Tree,
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/run/systemd/system",
        Pattern::Tree,
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/run/systemd/user",
        Pattern::Tree,
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/usr/local/lib/systemd/system",
        Pattern::Tree,
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/lib/systemd/system",
        Pattern::DirSuffix(".service"),
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/usr/lib/systemd/system",
        Pattern::DirSuffix(".service"),
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        "/usr/lib/systemd/user",
        Pattern::DirSuffix(".service"),
    ),
    (
        "systemd generator",
        SYSTEMD_SERVICE,
        "/etc/systemd/system-generators",
        Pattern::Dir,
    ),
    (
        "systemd generator",
        SYSTEMD_SERVICE,
        "/etc/systemd/user-generators",
        Pattern::Dir,
    ),
    (
        "systemd generator",
        SYSTEMD_SERVICE,
        "/run/systemd/system-generators",
        Pattern::Dir,
    ),
    (
        "systemd generator",
        SYSTEMD_SERVICE,
        "/usr/local/lib/systemd/system-generators",
        Pattern::Dir,
    ),
    (
        "systemd generator",
        SYSTEMD_SERVICE,
        "/lib/systemd/system-generators",
        Pattern::Dir,
    ),
    (
        "systemd generator",
        SYSTEMD_SERVICE,
        "/usr/lib/systemd/system-generators",
        Pattern::Dir,
    ),
    (
        "systemd generator",
        SYSTEMD_SERVICE,
        "/usr/lib/systemd/user-generators",
        Pattern::Dir,
    ),
    ("rc.local", RC_SCRIPTS, "/etc/rc.local", Pattern::File),
    ("rc.local", RC_SCRIPTS, "/etc/rc.d/rc.local", Pattern::File),
    ("init script", RC_SCRIPTS, "/etc/init.d", Pattern::Dir),
    (
        "motd script",
        LOGON_SCRIPTS,
        "/etc/update-motd.d",
        Pattern::Dir,
    ),
    ("udev rule", UDEV, "/etc/udev/rules.d", Pattern::Dir),
    ("udev rule", UDEV, "/run/udev/rules.d", Pattern::Dir),
    ("udev rule", UDEV, "/lib/udev/rules.d", Pattern::Dir),
    ("udev rule", UDEV, "/usr/lib/udev/rules.d", Pattern::Dir),
    (
        "xdg autostart",
        XDG_AUTOSTART,
        "/etc/xdg/autostart",
        Pattern::Dir,
    ),
    (
        "modprobe config",
        KERNEL_MODULES,
        "/etc/modprobe.d",
        Pattern::Dir,
    ),
    (
        "modprobe config",
        KERNEL_MODULES,
        "/run/modprobe.d",
        Pattern::Dir,
    ),
    (
        "modprobe config",
        KERNEL_MODULES,
        "/lib/modprobe.d",
        Pattern::Dir,
    ),
    (
        "modprobe config",
        KERNEL_MODULES,
        "/usr/lib/modprobe.d",
        Pattern::Dir,
    ),
    (
        "modules-load.d",
        KERNEL_MODULES,
        "/etc/modules-load.d",
        Pattern::Dir,
    ),
    (
        "modules-load.d",
        KERNEL_MODULES,
        "/run/modules-load.d",
        Pattern::Dir,
    ),
    (
        "modules-load.d",
        KERNEL_MODULES,
        "/usr/lib/modules-load.d",
        Pattern::Dir,
    ),
    (
        "modules-load.d",
        KERNEL_MODULES,
        "/etc/modules",
        Pattern::File,
    ),
    ("pam config", PAM, "/etc/pam.d", Pattern::Dir),
    ("pam config", PAM, "/etc/pam.conf", Pattern::File),
    (
        "sshd_config",
        EVENT_TRIGGERED,
        "/etc/ssh/sshd_config",
        Pattern::File,
    ),
    (
        "sshd_config",
        EVENT_TRIGGERED,
        "/etc/ssh/sshd_config.d",
        Pattern::Dir,
    ),
    (
        "apt hook",
        EVENT_TRIGGERED,
        "/etc/apt/apt.conf.d",
        Pattern::Dir,
    ),
    (
        "apt hook",
        EVENT_TRIGGERED,
        "/etc/apt/apt.conf",
        Pattern::File,
    ),
    (
        "dpkg hook",
        EVENT_TRIGGERED,
        "/etc/dpkg/dpkg.cfg.d",
        Pattern::Dir,
    ),
    (
        "dpkg hook",
        EVENT_TRIGGERED,
        "/etc/dpkg/dpkg.cfg",
        Pattern::File,
    ),
    (
        "logrotate script",
        EVENT_TRIGGERED,
        "/etc/logrotate.conf",
        Pattern::File,
    ),
    (
        "logrotate script",
        EVENT_TRIGGERED,
        "/etc/logrotate.d",
        Pattern::Dir,
    ),
    (
        "network hook",
        EVENT_TRIGGERED,
        "/etc/NetworkManager/dispatcher.d",
        Pattern::Tree,
    ),
    (
        "network hook",
        EVENT_TRIGGERED,
        "/etc/network/if-up.d",
        Pattern::Dir,
    ),
    (
        "network hook",
        EVENT_TRIGGERED,
        "/etc/network/if-pre-up.d",
        Pattern::Dir,
    ),
    (
        "network hook",
        EVENT_TRIGGERED,
        "/etc/network/if-down.d",
        Pattern::Dir,
    ),
    (
        "network hook",
        EVENT_TRIGGERED,
        "/etc/network/if-post-down.d",
        Pattern::Dir,
    ),
    (
        "network hook",
        EVENT_TRIGGERED,
        "/etc/network/interfaces",
        Pattern::File,
    ),
    (
        "network hook",
        EVENT_TRIGGERED,
        "/etc/network/interfaces.d",
        Pattern::Dir,
    ),
    (
        "ld.so.preload",
        DYNAMIC_LINKER,
        "/etc/ld.so.preload",
        Pattern::File,
    ),
    (
        "environment",
        SHELL_CONFIG,
        "/etc/environment",
        Pattern::File,
    ),
    ("shell profile", SHELL_CONFIG, "/etc/profile", Pattern::File),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/profile.d",
        Pattern::Dir,
    ),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/bash.bashrc",
        Pattern::File,
    ),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/bash.bash_logout",
        Pattern::File,
    ),
    ("shell profile", SHELL_CONFIG, "/etc/bashrc", Pattern::File),
    ("shell profile", SHELL_CONFIG, "/etc/zsh", Pattern::Dir),
    ("shell profile", SHELL_CONFIG, "/etc/zshrc", Pattern::File),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/zprofile",
        Pattern::File,
    ),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/csh.cshrc",
        Pattern::File,
    ),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/csh.login",
        Pattern::File,
    ),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/fish/config.fish",
        Pattern::File,
    ),
    (
        "shell profile",
        SHELL_CONFIG,
        "/etc/fish/conf.d",
        Pattern::Dir,
    ),
];

/// Per-user places, relative to the home directory.
const HOME_LOCATIONS: &[Location] = &[
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        ".config/systemd/user",
        Pattern::Tree,
    ),
    (
        "systemd unit",
        SYSTEMD_SERVICE,
        ".local/share/systemd/user",
        Pattern::Tree,
    ),
    (
        "xdg autostart",
        XDG_AUTOSTART,
        ".config/autostart",
        Pattern::Dir,
    ),
    ("shell profile", SHELL_CONFIG, ".bashrc", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".profile", Pattern::File),
    (
        "shell profile",
        SHELL_CONFIG,
        ".bash_profile",
        Pattern::File,
    ),
    ("shell profile", SHELL_CONFIG, ".bash_login", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".bash_logout", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".zshrc", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".zshenv", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".zprofile", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".zlogin", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".cshrc", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".tcshrc", Pattern::File),
    ("shell profile", SHELL_CONFIG, ".kshrc", Pattern::File),
    (
        "shell profile",
        SHELL_CONFIG,
        ".config/fish/config.fish",
        Pattern::File,
    ),
    (
        "environment",
        SHELL_CONFIG,
        ".pam_environment",
        Pattern::File,
    ),
];

/// Where timers live (they name the service they start).
const TIMER_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/etc/systemd/user",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/usr/lib/systemd/user",
];

const AUTHORIZED_KEYS: [&str; 2] = [".ssh/authorized_keys", ".ssh/authorized_keys2"];

/// Everything under `roots` that would start one of `members` again.
pub fn scan(roots: &Roots, members: &[&Process]) -> Vec<PersistenceHit> {
    let mut clues = ChainClues::default();
    for p in members {
        clues.add(p);
    }
    let dropped_mtimes: Vec<(String, SystemTime)> =
        members.iter().filter_map(|p| dropped_mtime(p)).collect();
    let homes = home_dirs(roots);
    scan_with(roots, &clues, &homes, &dropped_mtimes)
}

/// The scan proper, over explicit inputs.
fn scan_with(
    roots: &Roots,
    clues: &ChainClues,
    homes: &[String],
    dropped_mtimes: &[(String, SystemTime)],
) -> Vec<PersistenceHit> {
    if clues.is_empty() {
        return Vec::new(); // only system binaries in the set: nothing specific to look for
    }
    let mut seen = HashSet::new(); // (dev, inode): /lib and /usr/lib are often one directory
    let mut hits = Vec::new();
    let home_locations = homes.iter().flat_map(|h| {
        HOME_LOCATIONS
            .iter()
            .map(move |(kind, technique, rel, pat)| {
                (
                    *kind,
                    *technique,
                    format!("{}/{rel}", h.trim_end_matches('/')),
                    *pat,
                )
            })
    });
    let locations = SYSTEM_LOCATIONS
        .iter()
        .map(|(kind, technique, path, pat)| (*kind, *technique, path.to_string(), *pat))
        .chain(home_locations);
    for (kind, technique, path, pattern) in locations {
        for file in files_of(&roots.at(&path), pattern) {
            if let Some(text) = read_config(&file, &mut seen) {
                hits.extend(matching_lines(kind, technique, &file, &text, clues));
            }
        }
    }
    let timers = timers_of(roots, &hits);
    hits.extend(timers);
    for home in homes {
        for rel in AUTHORIZED_KEYS {
            let file = roots.at(&format!("{}/{rel}", home.trim_end_matches('/')));
            let Some(text) = read_config(&file, &mut seen) else {
                continue;
            };
            let mut found = matching_lines(
                "authorized_keys",
                AUTHORIZED_KEYS_TECHNIQUE,
                &file,
                &text,
                clues,
            );
            if found.is_empty() {
                let mtime = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
                found.extend(mtime.and_then(|m| recent_key(&file, &text, m, dropped_mtimes)));
            }
            hits.extend(found);
        }
    }
    hits
}

/// The timers that start a service already found: a `.timer` of the same
/// name, or one whose `Unit=` names it.
fn timers_of(roots: &Roots, hits: &[PersistenceHit]) -> Vec<PersistenceHit> {
    let services: Vec<(String, &PersistenceHit)> = hits
        .iter()
        .filter(|h| h.kind == "systemd unit")
        .filter_map(|h| {
            let name = program::file_name(h.file.as_str());
            name.ends_with(".service").then(|| (name.to_string(), h))
        })
        .collect();
    if services.is_empty() {
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for dir in TIMER_DIRS {
        for file in files_of(&roots.at(dir), Pattern::Tree) {
            let file_text = HostStr::from_bytes(file.as_os_str().as_encoded_bytes());
            let Some(timer) = program::file_name(file_text.as_str()).strip_suffix(".timer") else {
                continue;
            };
            let Some(text) = read_config(&file, &mut seen) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let unit_line = lines.iter().enumerate().find_map(|(n, l)| {
                let unit = l.trim().strip_prefix("Unit=")?;
                Some((n, unit.trim()))
            });
            let started = unit_line.map_or(format!("{timer}.service"), |(_, u)| u.to_string());
            let Some((_, service_hit)) = services.iter().find(|(name, _)| *name == started) else {
                continue;
            };
            let (n, line) = unit_line
                .map(|(n, _)| (n, lines[n]))
                .or_else(|| {
                    lines
                        .iter()
                        .enumerate()
                        .find(|(_, l)| l.trim_start().starts_with("On"))
                        .map(|(n, l)| (n, *l))
                })
                .unwrap_or((0, lines.first().copied().unwrap_or_default()));
            out.push(PersistenceHit {
                kind: "systemd timer".into(),
                technique: SYSTEMD_TIMER.into(),
                file: file_text.clone(),
                line_no: n + 1,
                line: HostStr::from_text(&quote(line.trim())),
                matched: service_hit.matched.clone(),
                reason: format!(
                    "starts {started} ({}:{}), which {}",
                    service_hit.file.as_str(),
                    service_hit.line_no,
                    service_hit.reason
                ),
            });
        }
    }
    out
}

/// The files a location holds, sorted (regular files, links followed).
fn files_of(path: &Path, pattern: Pattern) -> Vec<PathBuf> {
    let mut out = Vec::new();
    match pattern {
        Pattern::File => {
            if path.is_file() {
                out.push(path.to_path_buf());
            }
        }
        Pattern::Dir | Pattern::DirSuffix(_) => {
            let suffix = match pattern {
                Pattern::DirSuffix(s) => s,
                _ => "",
            };
            out.extend(
                crate::getdents::child_paths(path)
                    .into_iter()
                    .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix)),
            );
        }
        Pattern::Tree => walk(path, 0, &mut out),
    }
    out.sort();
    out
}

/// Every regular file below `dir`, a few levels deep.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    const MAX_DEPTH: usize = 4;
    for path in crate::getdents::child_paths(dir) {
        let Ok(kind) = std::fs::symlink_metadata(&path).map(|m| m.file_type()) else {
            continue;
        };
        if kind.is_dir() && depth < MAX_DEPTH {
            walk(&path, depth + 1, out); // real directories only: no loops through links
        } else if path.is_file() {
            out.push(path);
        }
    }
}

/// A configuration file's text, once per file even when reached twice.
fn read_config(path: &Path, seen: &mut HashSet<(u64, u64)>) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES || !seen.insert((meta.dev(), meta.ino())) {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    Some(HostStr::from_bytes(&bytes).as_str().to_string())
}

/// Lines of `text` that mention a clue, comments left out.
fn matching_lines(
    kind: &str,
    technique: &str,
    file: &Path,
    text: &str,
    clues: &ChainClues,
) -> Vec<PersistenceHit> {
    let mut hits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        // The most specific clue first: a path says more than a name.
        let found = [
            (&clues.paths, "names the program's path"),
            (
                &clues.dirs,
                "names the directory the program was dropped in",
            ),
            (&clues.names, "names the program"),
        ]
        .into_iter()
        .find_map(|(list, why)| {
            list.iter()
                .find(|c| program::mentions(trimmed, c))
                .map(|c| (c, why))
        });
        if let Some((clue, why)) = found {
            // A preload set in the environment or a unit hijacks the
            // dynamic linker, whatever file it is in.
            let technique = if trimmed.contains("LD_PRELOAD") || trimmed.contains("LD_LIBRARY_PATH")
            {
                DYNAMIC_LINKER
            } else {
                technique
            };
            hits.push(PersistenceHit {
                kind: kind.to_string(),
                technique: technique.to_string(),
                file: HostStr::from_bytes(file.as_os_str().as_encoded_bytes()),
                line_no: n + 1,
                line: HostStr::from_text(&quote(trimmed)),
                matched: clue.clone(),
                reason: format!("{why} {clue}"),
            });
        }
    }
    hits
}

/// For the fuzz test: a crontab or unit file's bytes, matched against a
/// dropped program's clues, and its timer read.
#[cfg(test)]
pub(crate) fn fuzz_matching_lines(bytes: &[u8]) -> Vec<PersistenceHit> {
    let mut clues = ChainClues::default();
    clues.add(&Process {
        exe: Some("/tmp/.x/kswapd0".into()),
        cmdline: vec!["/tmp/.x/kswapd0".into(), "-c".into()],
        ..Default::default()
    });
    let text = HostStr::from_bytes(bytes);
    let mut hits = matching_lines("crontab", CRON, Path::new("/f"), text.as_str(), &clues);
    for h in &mut hits {
        h.kind = "systemd unit".into();
    }
    let _ = quote(text.as_str());
    hits
}

/// An authorized_keys file modified near a dropped program's mtime: its
/// last key is the likeliest addition.
fn recent_key(
    file: &Path,
    text: &str,
    mtime: SystemTime,
    dropped: &[(String, SystemTime)],
) -> Option<PersistenceHit> {
    let (path, gap) = dropped
        .iter()
        .map(|(path, t)| {
            (
                path,
                mtime
                    .duration_since(*t)
                    .or_else(|e| Ok::<_, ()>(e.duration()))
                    .unwrap_or_default(),
            )
        })
        .filter(|(_, gap)| *gap <= AUTHORIZED_KEYS_WINDOW)
        .min_by_key(|(_, gap)| *gap)?;
    let (line_no, line) = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .last()?;
    let matched = format!(
        "file modified {} s from {path}'s mtime (last key shown)",
        gap.as_secs()
    );
    Some(PersistenceHit {
        kind: "authorized_keys".to_string(),
        technique: AUTHORIZED_KEYS_TECHNIQUE.to_string(),
        file: HostStr::from_bytes(file.as_os_str().as_encoded_bytes()),
        line_no: line_no + 1,
        line: HostStr::from_text(&quote(line.trim())),
        reason: format!("a key added near the drop: {matched}"),
        matched,
    })
}

fn quote(line: &str) -> String {
    if line.chars().count() <= MAX_LINE_CHARS {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(MAX_LINE_CHARS).collect::<String>())
    }
}

/// The mtime of a member's dropped program, read through /proc/PID/exe so
/// it works after the file was deleted (when the PID still holds the
/// planned process).
fn dropped_mtime(p: &Process) -> Option<(String, SystemTime)> {
    if program::runs_system_binary(p) {
        return None;
    }
    let path = program::exe_path(p)?.to_string();
    let via_proc = (crate::proc::start_ticks(p.pid) == Some(p.start_ticks))
        .then(|| std::fs::metadata(format!("/proc/{}/exe", p.pid)).ok())
        .flatten();
    let meta = via_proc.or_else(|| std::fs::metadata(&path).ok())?;
    Some((path, meta.modified().ok()?))
}

/// One place persistence is written to, as `watch` matches file writes
/// against it: the same list the scan reads ([`SYSTEM_LOCATIONS`], every
/// home's [`HOME_LOCATIONS`] and authorized_keys), under the root.
#[derive(Clone, Debug)]
pub struct Place {
    pub kind: &'static str,
    pub technique: &'static str,
    /// The location under the root (a file, or the directory holding them).
    pub path: PathBuf,
    pattern: Pattern,
}

impl Place {
    /// The directory whose entries this place is: the file's parent, or
    /// the directory itself.
    pub fn directory(&self) -> &Path {
        match self.pattern {
            Pattern::File => self.path.parent().unwrap_or(&self.path),
            _ => &self.path,
        }
    }

    /// Whether a file at `path` (as the writer named it) belongs to this
    /// place: the file itself, a file directly in the directory (with the
    /// suffix, if any), or anywhere below a tree.
    pub fn covers(&self, path: &Path) -> bool {
        let parent_is_place = path.parent() == Some(self.path.as_path());
        match self.pattern {
            Pattern::File => path == self.path,
            Pattern::Dir => parent_is_place,
            Pattern::DirSuffix(suffix) => {
                parent_is_place
                    && path
                        .as_os_str()
                        .as_encoded_bytes()
                        .ends_with(suffix.as_bytes())
            }
            Pattern::Tree => path != self.path && path.starts_with(&self.path),
        }
    }
}

/// The places, indexed by directory: which place a path belongs to costs
/// a hash lookup per ancestor directory, not a pass over every place (watch
/// asks it for every file closed after writing on the host).
pub struct PlaceIndex {
    places: Vec<Place>,
    by_dir: std::collections::HashMap<PathBuf, Vec<usize>>,
}

impl PlaceIndex {
    pub fn new(places: Vec<Place>) -> Self {
        let mut by_dir: std::collections::HashMap<PathBuf, Vec<usize>> = Default::default();
        for (i, p) in places.iter().enumerate() {
            by_dir
                .entry(p.directory().to_path_buf())
                .or_default()
                .push(i);
        }
        PlaceIndex { places, by_dir }
    }

    /// The first place (in the list's order) that `path` belongs to.
    pub fn find(&self, path: &Path) -> Option<&Place> {
        path.ancestors()
            .skip(1)
            .filter_map(|dir| self.by_dir.get(dir))
            .flatten()
            .copied()
            .filter(|&i| self.places[i].covers(path))
            .min()
            .map(|i| &self.places[i])
    }
}

/// Every place persistence is written to under `roots`, system-wide first,
/// then each user's.
pub fn places(roots: &Roots) -> Vec<Place> {
    let homes = home_dirs(roots);
    let system = SYSTEM_LOCATIONS
        .iter()
        .map(|&(kind, technique, path, pattern)| (kind, technique, path.to_string(), pattern));
    let per_home = homes.iter().flat_map(|home| {
        let home = home.trim_end_matches('/').to_string();
        let keys = AUTHORIZED_KEYS.iter().map(|rel| {
            (
                "authorized_keys",
                AUTHORIZED_KEYS_TECHNIQUE,
                rel.to_string(),
                Pattern::File,
            )
        });
        HOME_LOCATIONS
            .iter()
            .map(|&(kind, technique, rel, pattern)| (kind, technique, rel.to_string(), pattern))
            .chain(keys)
            .map(move |(kind, technique, rel, pattern)| {
                (kind, technique, format!("{home}/{rel}"), pattern)
            })
    });
    system
        .chain(per_home)
        .map(|(kind, technique, path, pattern)| Place {
            kind,
            technique,
            path: roots.at(&path),
            pattern,
        })
        .collect()
}

/// Home directories of every account in the root's /etc/passwd, and
/// root's: persistence may sit in any user's start-up files.
fn home_dirs(roots: &Roots) -> Vec<String> {
    let passwd = std::fs::read(roots.at("/etc/passwd")).unwrap_or_default();
    let users = crate::users::Users::parse(HostStr::from_bytes(&passwd).as_str());
    let mut homes: Vec<String> = Vec::new();
    let fallback = users.homes(0).is_empty().then(|| "/root".to_string());
    for h in users.all_homes().iter().cloned().chain(fallback) {
        if h.starts_with('/') && h != "/" && !homes.contains(&h) {
            homes.push(h);
        }
    }
    homes
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use crate::respond::plan::tests::proc;

    /// A scratch root removed on drop.
    struct Root(PathBuf);

    impl Root {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tracer-persist-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Root(dir)
        }
        fn write(&self, abs: &str, text: &str) -> PathBuf {
            let p = self.0.join(abs.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        }
        fn roots(&self) -> Roots {
            Roots {
                root: self.0.clone(),
            }
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn places_cover_the_scanned_locations_under_the_root() {
        let root = Root::new("places");
        root.write("/etc/passwd", "u:x:1000:1000::/home/u:/bin/sh\n");
        let places = places(&root.roots());
        let index = PlaceIndex::new(places.clone());
        let kind_of = |abs: &str| {
            let path = root.0.join(abs.trim_start_matches('/'));
            let linear = places.iter().find(|p| p.covers(&path)).map(|p| p.kind);
            let indexed = index.find(&path).map(|p| p.kind);
            assert_eq!(
                indexed, linear,
                "the index agrees with a pass over the list"
            );
            indexed
        };
        assert_eq!(kind_of("/etc/crontab"), Some("crontab"));
        assert_eq!(kind_of("/etc/cron.d/job"), Some("crontab"));
        assert_eq!(
            kind_of("/etc/cron.d"),
            None,
            "the directory itself is no file in it"
        );
        assert_eq!(
            kind_of("/etc/cron.d/sub/job"),
            None,
            "only files directly in it"
        );
        assert_eq!(
            kind_of("/etc/systemd/system/a/b.service"),
            Some("systemd unit")
        );
        assert_eq!(
            kind_of("/lib/systemd/system/x.service"),
            Some("systemd unit")
        );
        assert_eq!(kind_of("/lib/systemd/system/x.conf"), None);
        assert_eq!(kind_of("/etc/ld.so.preload"), Some("ld.so.preload"));
        assert_eq!(kind_of("/home/u/.bashrc"), Some("shell profile"));
        assert_eq!(
            kind_of("/root/.ssh/authorized_keys"),
            Some("authorized_keys")
        );
        assert_eq!(
            kind_of("/home/u/.ssh/authorized_keys2"),
            Some("authorized_keys")
        );
        assert_eq!(kind_of("/etc/hostname"), None);
        assert_eq!(
            places
                .iter()
                .find(|p| p.kind == "ld.so.preload")
                .unwrap()
                .path,
            root.0.join("etc/ld.so.preload")
        );
    }

    fn clues_for(members: &[Process]) -> ChainClues {
        let mut c = ChainClues::default();
        for m in members {
            c.add(m);
        }
        c
    }

    fn found(hits: &[PersistenceHit]) -> Vec<(String, usize, String)> {
        hits.iter()
            .map(|h| {
                (
                    h.file
                        .rsplit_once("tracer-persist-")
                        .unwrap()
                        .1
                        .split_once('/')
                        .unwrap()
                        .1
                        .to_string(),
                    h.line_no,
                    h.matched.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn every_kind_of_location_is_read() {
        let r = Root::new("kinds");
        r.write(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        );
        r.write("/etc/crontab", "# m h dom mon dow user command\n# */5 * * * * root /var/tmp/.x/kswapd0\n*/5 * * * * root /var/tmp/.x/kswapd0\n");
        r.write(
            "/etc/cron.d/sys",
            "@reboot root cd /var/tmp/.x && ./start\n",
        );
        r.write("/var/spool/cron/crontabs/bob", "* * * * * kswapd0 -B\n");
        r.write(
            "/etc/rc.local",
            "#!/bin/sh\nnohup /var/tmp/.x/kswapd0 &\nexit 0\n",
        );
        r.write(
            "/etc/init.d/net-helper",
            "#!/bin/sh\ncase $1 in start) /var/tmp/.x/kswapd0 ;; esac\n",
        );
        r.write(
            "/etc/systemd/system/multi-user.target.wants/kswap.service",
            "[Service]\nExecStart=/var/tmp/.x/kswapd0\n",
        );
        r.write(
            "/usr/lib/systemd/system/cron.service",
            "[Service]\nExecStart=/usr/sbin/cron -f\n",
        );
        r.write(
            "/usr/lib/systemd/system/kswap2.service",
            "[Service]\nExecStart=/var/tmp/.x/kswapd0\n",
        );
        // Merged /usr: /lib and /usr/lib are one directory, read once.
        std::os::unix::fs::symlink("usr/lib", r.0.join("lib")).unwrap();
        r.write("/etc/ld.so.preload", "/var/tmp/.x/libhide.so\n");
        r.write(
            "/etc/profile.d/x.sh",
            "pgrep kswapd0 >/dev/null || /var/tmp/.x/kswapd0 &\n",
        );
        r.write(
            "/home/bob/.bashrc",
            "alias ll='ls -l'\n(/var/tmp/.x/kswapd0 &)\n",
        );
        r.write(
            "/home/bob/.config/systemd/user/k.service",
            "[Service]\nExecStart=%h/kswapd0\n",
        );
        r.write("/root/.profile", "kswapd0s --not-it\n");
        let mut miner = proc(
            500,
            400,
            "/var/tmp/.x/kswapd0 (deleted)",
            "/var/tmp/.x/kswapd0",
        );
        miner.uid = 1000;
        let watchdog = proc(
            400,
            1,
            "/usr/bin/dash",
            "sh -c while :; do /var/tmp/.x/kswapd0; done",
        );
        let clues = clues_for(&[watchdog.clone(), miner.clone()]);
        let homes = home_dirs(&r.roots());
        assert_eq!(homes, ["/root", "/home/bob"]);
        let hits = scan_with(&r.roots(), &clues, &homes, &[]);
        let p = "/var/tmp/.x/kswapd0".to_string();
        let d = "/var/tmp/.x".to_string();
        let n = "kswapd0".to_string();
        assert_eq!(
            found(&hits),
            vec![
                ("etc/crontab".into(), 3, p.clone()),
                ("etc/cron.d/sys".into(), 1, d.clone()),
                ("var/spool/cron/crontabs/bob".into(), 1, n.clone()),
                (
                    "etc/systemd/system/multi-user.target.wants/kswap.service".into(),
                    2,
                    p.clone()
                ),
                ("lib/systemd/system/kswap2.service".into(), 2, p.clone()),
                ("etc/rc.local".into(), 2, p.clone()),
                ("etc/init.d/net-helper".into(), 2, p.clone()),
                ("etc/ld.so.preload".into(), 1, d.clone()),
                ("etc/profile.d/x.sh".into(), 1, p.clone()),
                (
                    "home/bob/.config/systemd/user/k.service".into(),
                    2,
                    n.clone()
                ),
                ("home/bob/.bashrc".into(), 2, p.clone()),
            ]
        );
        assert_eq!(hits[0].kind, "crontab");
        assert_eq!(hits[0].line, "*/5 * * * * root /var/tmp/.x/kswapd0");
        assert_eq!(hits[5].kind, "rc.local");
    }

    /// Every kind the scan covers, each planted once in a fake root, each
    /// with the technique it must be reported under.
    #[test]
    fn every_persistence_kind_is_found_with_its_technique() {
        let r = Root::new("all-kinds");
        let m = "/var/tmp/.x/kswapd0";
        r.write(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nann:x:1001:1001::/home/ann:/bin/bash\n",
        );
        let planted: &[(&str, String, &str, &str)] = &[
            (
                "/etc/crontab",
                format!("* * * * * root {m}\n"),
                "crontab",
                "T1053.003",
            ),
            (
                "/var/spool/cron/atjobs/a0001",
                format!("{m}\n"),
                "at job",
                "T1053.002",
            ),
            (
                "/etc/systemd/system/kswap.service",
                format!("[Service]\nExecStart={m}\n"),
                "systemd unit",
                "T1543.002",
            ),
            (
                "/etc/systemd/system/kswap.timer",
                "[Timer]\nOnCalendar=minutely\n".into(),
                "systemd timer",
                "T1053.006",
            ),
            (
                "/etc/systemd/system-generators/gen",
                format!("#!/bin/sh\n{m} &\n"),
                "systemd generator",
                "T1543.002",
            ),
            (
                "/home/ann/.config/systemd/user/u.service",
                format!("[Service]\nExecStart={m}\n"),
                "systemd unit",
                "T1543.002",
            ),
            (
                "/etc/systemd/system/web.service.d/override.conf",
                "[Service]\nEnvironment=LD_PRELOAD=/var/tmp/.x/libk.so\n".into(),
                "systemd unit",
                "T1574.006",
            ),
            (
                "/etc/udev/rules.d/75-k.rules",
                format!("ACTION==\"add\", RUN+=\"{m}\"\n"),
                "udev rule",
                "T1546.017",
            ),
            (
                "/etc/update-motd.d/99-k",
                format!("#!/bin/sh\n{m} &\n"),
                "motd script",
                "T1037",
            ),
            (
                "/etc/pam.d/sshd",
                format!("session optional pam_exec.so {m}\n"),
                "pam config",
                "T1556.003",
            ),
            (
                "/etc/ssh/sshd_config",
                format!("AuthorizedKeysCommand {m}\n"),
                "sshd_config",
                "T1546",
            ),
            (
                "/etc/ssh/sshd_config.d/k.conf",
                format!("ForceCommand {m}\n"),
                "sshd_config",
                "T1546",
            ),
            (
                "/etc/environment",
                "LD_PRELOAD=/var/tmp/.x/libk.so\n".into(),
                "environment",
                "T1574.006",
            ),
            (
                "/etc/xdg/autostart/k.desktop",
                format!("[Desktop Entry]\nExec={m}\n"),
                "xdg autostart",
                "T1547.013",
            ),
            (
                "/home/ann/.config/autostart/k.desktop",
                format!("[Desktop Entry]\nExec={m}\n"),
                "xdg autostart",
                "T1547.013",
            ),
            (
                "/etc/modprobe.d/k.conf",
                format!("install dummy {m}\n"),
                "modprobe config",
                "T1547.006",
            ),
            (
                "/etc/modules-load.d/k.conf",
                "kswapd0\n".into(),
                "modules-load.d",
                "T1547.006",
            ),
            (
                "/etc/apt/apt.conf.d/99k",
                format!("APT::Update::Pre-Invoke {{\"{m}\"}};\n"),
                "apt hook",
                "T1546",
            ),
            (
                "/etc/dpkg/dpkg.cfg.d/k",
                format!("post-invoke={m}\n"),
                "dpkg hook",
                "T1546",
            ),
            (
                "/etc/logrotate.d/k",
                format!("/var/log/k.log {{\n  postrotate\n    {m}\n  endscript\n}}\n"),
                "logrotate script",
                "T1546",
            ),
            (
                "/etc/NetworkManager/dispatcher.d/99-k",
                format!("#!/bin/sh\n{m} &\n"),
                "network hook",
                "T1546",
            ),
            (
                "/etc/network/if-up.d/k",
                format!("#!/bin/sh\n{m} &\n"),
                "network hook",
                "T1546",
            ),
            (
                "/home/ann/.zshrc",
                format!("{m} &!\n"),
                "shell profile",
                "T1546.004",
            ),
            ("/etc/rc.local", format!("{m} &\n"), "rc.local", "T1037.004"),
            (
                "/etc/init.d/k",
                format!("start() {{ {m}; }}\n"),
                "init script",
                "T1037.004",
            ),
            (
                "/etc/ld.so.preload",
                "/var/tmp/.x/libk.so\n".into(),
                "ld.so.preload",
                "T1574.006",
            ),
        ];
        for (path, text, _, _) in planted {
            r.write(path, text);
        }
        // A file whose name and line are not UTF-8 is read and kept exactly.
        let odd = r.0.join("etc/cron.d");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::write(
            odd.join(std::ffi::OsStr::from_bytes(b"k\xff")),
            [format!("* * * * * root {m} \x1b[2J").as_bytes(), b"\xfe\n"].concat(),
        )
        .unwrap();
        let miner = proc(500, 1, &format!("{m} (deleted)"), m);
        let clues = clues_for(&[miner]);
        let hits = scan_with(&r.roots(), &clues, &home_dirs(&r.roots()), &[]);
        for (path, _, kind, technique) in planted {
            let hit = hits
                .iter()
                .find(|h| h.file.ends_with(path))
                .unwrap_or_else(|| panic!("{path} not found: {hits:#?}"));
            assert_eq!(
                (hit.kind.as_str(), hit.technique.as_str()),
                (*kind, *technique),
                "{hit:?}"
            );
            assert!(!hit.reason.is_empty());
        }
        let timer = hits.iter().find(|h| h.kind == "systemd timer").unwrap();
        assert!(
            timer.reason.starts_with("starts kswap.service ("),
            "{timer:?}"
        );
        let odd = hits
            .iter()
            .find(|h| !h.file.is_utf8())
            .expect("the non-UTF-8 crontab");
        assert!(odd.file.to_bytes().ends_with(b"cron.d/k\xff"));
        assert!(odd.line.to_bytes().ends_with(b"\x1b[2J\xfe"));
        let unit = hits
            .iter()
            .find(|h| h.file.ends_with("kswap.service"))
            .unwrap();
        assert_eq!(unit.reason, format!("names the program's path {m}"));
    }

    #[test]
    fn a_set_of_system_binaries_has_nothing_to_look_for() {
        let r = Root::new("system");
        r.write(
            "/etc/crontab",
            "* * * * * root sh -c 'while :; do :; done'\n",
        );
        let clues = clues_for(&[proc(
            1,
            0,
            "/usr/bin/dash",
            "sh -c while :; do sleep 1; done",
        )]);
        assert!(scan_with(&r.roots(), &clues, &["/root".into()], &[]).is_empty());
    }

    #[test]
    fn authorized_keys_near_the_drop_are_reported() {
        let r = Root::new("keys");
        let keys = r.write(
            "/root/.ssh/authorized_keys",
            "ssh-ed25519 AAAAold admin\n\nssh-ed25519 AAAAnew attacker\n",
        );
        let clues = clues_for(&[proc(9, 1, "/tmp/.k/m", "/tmp/.k/m")]);
        let mtime = std::fs::metadata(&keys).unwrap().modified().unwrap();
        let near = [("/tmp/.k/m".to_string(), mtime - Duration::from_secs(60))];
        let hits = scan_with(&r.roots(), &clues, &["/root".into()], &near);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(
            (hits[0].kind.as_str(), hits[0].line_no),
            ("authorized_keys", 3)
        );
        assert!(
            hits[0]
                .matched
                .starts_with("file modified 60 s from /tmp/.k/m"),
            "{}",
            hits[0].matched
        );
        let far = [(
            "/tmp/.k/m".to_string(),
            mtime - AUTHORIZED_KEYS_WINDOW - Duration::from_secs(1),
        )];
        assert!(scan_with(&r.roots(), &clues, &["/root".into()], &far).is_empty());
        // A key whose forced command names the program is reported whatever the time.
        r.write(
            "/root/.ssh/authorized_keys",
            "command=\"/tmp/.k/m\" ssh-ed25519 AAAAx\n",
        );
        let hits = scan_with(&r.roots(), &clues, &["/root".into()], &far);
        assert_eq!(
            (hits[0].line_no, hits[0].matched.as_str()),
            (1, "/tmp/.k/m")
        );
    }

    #[test]
    fn root_comes_from_the_environment() {
        // Only read here, never set: tests run in parallel threads.
        let roots = Roots::from_env();
        assert!(roots.root.is_absolute());
        assert_eq!(
            Roots { root: "/x".into() }.at("/etc/crontab"),
            PathBuf::from("/x/etc/crontab")
        );
    }
}
