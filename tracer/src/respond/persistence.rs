//! Persistence that would start a kill-tree set again: crontabs, at jobs,
//! systemd units, rc.local and init scripts, /etc/ld.so.preload, shell
//! profiles and recently touched authorized_keys. Reported with file and
//! line; never edited.
//!
//! A line "starts it" when it mentions a member's program path, its file
//! name, or the directory it was dropped in (see `ChainClues`); comments are
//! skipped. authorized_keys lines rarely name a program, so an
//! authorized_keys file is also reported when it was modified within
//! [`AUTHORIZED_KEYS_WINDOW`] of a dropped program's mtime.
//!
//! The scan reads paths under a root, `/` unless the environment variable
//! `TRACER_PERSISTENCE_ROOT` names another directory (tests point it at a
//! temporary tree); users' home directories come from that root's
//! /etc/passwd.
use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use schemars::JsonSchema;
use serde::Serialize;

use super::{plan::ChainClues, program};
use crate::model::Process;

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
    /// What kind of persistence: `crontab`, `systemd unit`, `rc.local`...
    pub kind: String,
    pub file: String,
    /// 1-based line number.
    pub line_no: usize,
    pub line: String,
    /// The program path, name or directory the line mentions, or why the
    /// file is reported (authorized_keys).
    pub matched: String,
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
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// How a location is read.
#[derive(Clone, Copy)]
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

/// System-wide places, each with its kind.
const SYSTEM_LOCATIONS: &[(&str, &str, Pattern)] = &[
    ("crontab", "/etc/crontab", Pattern::File),
    ("crontab", "/etc/cron.d", Pattern::Dir),
    ("crontab", "/var/spool/cron/crontabs", Pattern::Dir),
    ("crontab", "/var/spool/cron", Pattern::Dir), // Red Hat keeps user crontabs here
    ("crontab", "/etc/anacrontab", Pattern::File),
    ("cron script", "/etc/cron.hourly", Pattern::Dir),
    ("cron script", "/etc/cron.daily", Pattern::Dir),
    ("cron script", "/etc/cron.weekly", Pattern::Dir),
    ("cron script", "/etc/cron.monthly", Pattern::Dir),
    ("at job", "/var/spool/cron/atjobs", Pattern::Dir),
    ("at job", "/var/spool/at", Pattern::Dir),
    ("systemd unit", "/etc/systemd/system", Pattern::Tree),
    ("systemd unit", "/etc/systemd/user", Pattern::Tree),
    ("systemd unit", "/run/systemd/system", Pattern::Tree),
    (
        "systemd unit",
        "/lib/systemd/system",
        Pattern::DirSuffix(".service"),
    ),
    (
        "systemd unit",
        "/usr/lib/systemd/system",
        Pattern::DirSuffix(".service"),
    ),
    ("rc.local", "/etc/rc.local", Pattern::File),
    ("rc.local", "/etc/rc.d/rc.local", Pattern::File),
    ("init script", "/etc/init.d", Pattern::Dir),
    ("ld.so.preload", "/etc/ld.so.preload", Pattern::File),
    ("shell profile", "/etc/profile", Pattern::File),
    ("shell profile", "/etc/profile.d", Pattern::Dir),
    ("shell profile", "/etc/bash.bashrc", Pattern::File),
    ("shell profile", "/etc/bashrc", Pattern::File),
];

/// Per-user places, relative to the home directory.
const HOME_LOCATIONS: &[(&str, &str, Pattern)] = &[
    ("systemd unit", ".config/systemd/user", Pattern::Tree),
    ("shell profile", ".bashrc", Pattern::File),
    ("shell profile", ".profile", Pattern::File),
    ("shell profile", ".bash_profile", Pattern::File),
    ("shell profile", ".bash_login", Pattern::File),
    ("shell profile", ".zshrc", Pattern::File),
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
    let homes = home_dirs(roots, members.iter().map(|p| p.uid));
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
        HOME_LOCATIONS.iter().map(move |(kind, rel, pat)| {
            (*kind, format!("{}/{rel}", h.trim_end_matches('/')), *pat)
        })
    });
    let locations = SYSTEM_LOCATIONS
        .iter()
        .map(|(kind, path, pat)| (*kind, path.to_string(), *pat))
        .chain(home_locations);
    for (kind, path, pattern) in locations {
        for file in files_of(&roots.at(&path), pattern) {
            if let Some(text) = read_config(&file, &mut seen) {
                hits.extend(matching_lines(kind, &file, &text, clues));
            }
        }
    }
    for home in homes {
        for rel in AUTHORIZED_KEYS {
            let file = roots.at(&format!("{}/{rel}", home.trim_end_matches('/')));
            let Some(text) = read_config(&file, &mut seen) else {
                continue;
            };
            let mut found = matching_lines("authorized_keys", &file, &text, clues);
            if found.is_empty() {
                let mtime = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
                found.extend(mtime.and_then(|m| recent_key(&file, &text, m, dropped_mtimes)));
            }
            hits.extend(found);
        }
    }
    hits
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
            if let Ok(entries) = std::fs::read_dir(path) {
                out.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix)),
                );
            }
        }
        Pattern::Tree => walk(path, 0, &mut out),
    }
    out.sort();
    out
}

/// Every regular file below `dir`, a few levels deep.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    const MAX_DEPTH: usize = 4;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
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
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Lines of `text` that mention a clue, comments left out.
fn matching_lines(kind: &str, file: &Path, text: &str, clues: &ChainClues) -> Vec<PersistenceHit> {
    let mut hits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        // The most specific clue first: a path says more than a name.
        let clue = clues
            .paths
            .iter()
            .chain(&clues.dirs)
            .chain(&clues.names)
            .find(|c| program::mentions(trimmed, c));
        if let Some(clue) = clue {
            hits.push(PersistenceHit {
                kind: kind.to_string(),
                file: file.display().to_string(),
                line_no: n + 1,
                line: quote(trimmed),
                matched: clue.clone(),
            });
        }
    }
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
    Some(PersistenceHit {
        kind: "authorized_keys".to_string(),
        file: file.display().to_string(),
        line_no: line_no + 1,
        line: quote(line.trim()),
        matched: format!(
            "file modified {} s from {path}'s mtime (last key shown)",
            gap.as_secs()
        ),
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

/// Home directories of these users and of root, from the root's /etc/passwd.
fn home_dirs(roots: &Roots, uids: impl Iterator<Item = u32>) -> Vec<String> {
    let mut wanted: Vec<u32> = std::iter::once(0).chain(uids).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let passwd = std::fs::read_to_string(roots.at("/etc/passwd")).unwrap_or_default();
    let users = crate::users::Users::parse(&passwd);
    let mut homes: Vec<String> = Vec::new();
    for uid in wanted {
        let listed = users.homes(uid);
        let fallback = (uid == 0 && listed.is_empty()).then(|| "/root".to_string());
        for h in listed.iter().cloned().chain(fallback) {
            if h.starts_with('/') && h != "/" && !homes.contains(&h) {
                homes.push(h);
            }
        }
    }
    homes
}

#[cfg(test)]
mod tests {
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
        let homes = home_dirs(&r.roots(), [1000].into_iter());
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
