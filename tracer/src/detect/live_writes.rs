//! Hiding and persistence as they happen, for `watch`: a file written at a
//! persistence place (`kill-tree`'s list, `respond::persistence::places`),
//! /etc/ld.so.preload among them, and a mount on or under `/proc/PID`.
//! [`hit`] says whether an event is one, from the event alone (a write is
//! far more often elsewhere than at a place); [`detect`] then turns it and
//! the acting process (with its chain from the process table) into a
//! finding.
//!
//! Severity, and why:
//! - a write to /etc/ld.so.preload: high (every dynamically linked program
//!   loads what it names, the classic way to hide from `ps` and `ls`);
//! - a mount over /proc/PID: high (it hides that process from every tool
//!   that reads /proc);
//! - a write to any other persistence place: medium, high when the writer
//!   or one of its ancestors runs a dropped program (from /tmp, /var/tmp,
//!   /dev/shm, deleted, a memfd) or is named like a miner, low when the
//!   package manager wrote it (an install or upgrade writes units and
//!   cron files).
use std::path::Path;

use crate::{
    detect::masquerade,
    model::{Finding, HostStr, Process, Severity},
    respond::{persistence::PlaceIndex, program},
    views::file_writes::WriteKind,
};

/// Something the host did that watch checks.
pub enum LiveEvent<'a> {
    /// A file written (named as the writer's mount namespace sees it),
    /// moved in or linked.
    FileWritten { path: &'a Path, how: WriteKind },
    /// A mount attached at `target` (as the caller named it: absolute, or
    /// relative to its working directory `cwd` when known).
    Mounted {
        target: &'a HostStr,
        /// The system call (`mount`, `move_mount`).
        syscall: &'static str,
        /// `mount(2)`'s source and file system type, when given.
        source: Option<&'a HostStr>,
        fstype: Option<&'a HostStr>,
        /// The call was seen to return 0 (else: the kernel allowed it and
        /// its result was not seen).
        returned: bool,
    },
}

/// The process that acted, as the table knows it.
pub struct Actor<'a> {
    pub pid: u32,
    /// `None` when the table does not know it (outside tracer's PID
    /// namespace, or gone before it was seen).
    pub process: Option<&'a Process>,
    /// Nearest parent first.
    pub ancestry: &'a [&'a Process],
    /// The actor's mount namespace, when it is not tracer's (`mnt:[N]`).
    pub other_mount_ns: Option<String>,
}

/// Package managers: what they write is an install, not an intrusion.
const PACKAGE_MANAGERS: &[&str] = &[
    "dpkg",
    "apt",
    "apt-get",
    "aptitude",
    "unattended-upgrade",
    "rpm",
    "dnf",
    "yum",
    "zypper",
    "pacman",
    "apk",
];

/// What makes an event a finding.
#[derive(Clone, Copy, Debug)]
pub enum Hit {
    /// A write at a persistence place of this kind and ATT&CK technique.
    Place {
        kind: &'static str,
        technique: &'static str,
    },
    /// A mount on or under /proc/PID, hiding that PID.
    ProcPid(u32),
}

/// Whether `event` by process `pid` is a finding: a write outside every
/// place, or a mount elsewhere than /proc/PID, is not.
pub fn hit(event: &LiveEvent, places: &PlaceIndex, pid: u32) -> Option<Hit> {
    match event {
        LiveEvent::FileWritten { path, .. } => places.find(path).map(|p| Hit::Place {
            kind: p.kind,
            technique: p.technique,
        }),
        LiveEvent::Mounted { target, .. } => proc_pid_of(target.as_str(), pid).map(Hit::ProcPid),
    }
}

/// The finding for `event`, which [`hit`] found to be one, by `actor`.
pub fn detect(event: &LiveEvent, hit: Hit, actor: &Actor) -> Finding {
    match (event, hit) {
        (LiveEvent::FileWritten { path, how }, Hit::Place { kind, technique }) => {
            written(path, *how, kind, technique, actor)
        }
        (
            LiveEvent::Mounted {
                target,
                syscall,
                source,
                fstype,
                returned,
            },
            Hit::ProcPid(covered),
        ) => {
            let mut f = mounted(target, covered, syscall, *source, *fstype, actor);
            f.evidence.insert(
                2,
                (
                    "result".into(),
                    if *returned {
                        "returned 0".into()
                    } else {
                        "allowed by the kernel's CAP_SYS_ADMIN check (the call's return is not seen)"
                            .into()
                    },
                ),
            );
            f
        }
        _ => unreachable!("a hit is found on its own event"),
    }
}

fn written(
    path: &Path,
    how: WriteKind,
    place_kind: &'static str,
    technique: &str,
    actor: &Actor,
) -> Finding {
    let file = HostStr::from_bytes(path.as_os_str().as_encoded_bytes());
    let preload = place_kind == "ld.so.preload";
    let (kind, mut severity) = if preload {
        ("ld-so-preload-written", Severity::High)
    } else {
        ("persistence-written", Severity::Medium)
    };
    let mut evidence = vec![
        ("file".to_string(), file.escaped().into_owned()),
        ("place".to_string(), format!("{place_kind} ({technique})")),
    ];
    if let Some(why) = dropped_writer(actor) {
        severity = severity.max(Severity::High);
        evidence.push(("writer".into(), why));
    } else if let Some(manager) = package_manager(actor).filter(|_| !preload) {
        severity = Severity::Low;
        evidence.push((
            "writer".into(),
            format!("run by the package manager ({manager})"),
        ));
    }
    push_actor_evidence(&mut evidence, actor);
    let did = match how {
        WriteKind::Written => "wrote",
        WriteKind::MovedIn => "moved a file to",
        WriteKind::Linked => "created a symbolic link at",
    };
    let who = who(actor);
    let summary = if preload {
        format!(
            "{who} {did} {}: every dynamically linked program will load what it names",
            file.escaped()
        )
    } else {
        format!(
            "{who} {did} {}, a {place_kind} place ({technique})",
            file.escaped()
        )
    };
    Finding {
        id: finding_id(kind, actor, &file),
        kind: kind.into(),
        severity,
        layer: place_kind.into(),
        summary,
        process: actor.process.cloned(),
        ancestry: actor.ancestry.iter().map(|p| (*p).clone()).collect(),
        evidence,
        next_step: format!(
            "read {} (what it starts or preloads), then `tracer kill-tree {}` before removing it",
            file.escaped(),
            actor.pid
        ),
        connection: None,
        related: Vec::new(),
        sigma: None,
    }
}

fn mounted(
    target: &HostStr,
    covered: u32,
    syscall: &str,
    source: Option<&HostStr>,
    fstype: Option<&HostStr>,
    actor: &Actor,
) -> Finding {
    let kind = "proc-pid-mount";
    let mut evidence = vec![
        ("mount point".to_string(), target.escaped().into_owned()),
        ("system call".to_string(), syscall.to_string()),
        ("hides".to_string(), format!("/proc/{covered}")),
    ];
    if let Some(s) = source {
        evidence.push(("source".into(), s.escaped().into_owned()));
    }
    if let Some(t) = fstype {
        evidence.push(("type".into(), t.escaped().into_owned()));
    }
    push_actor_evidence(&mut evidence, actor);
    Finding {
        id: finding_id(kind, actor, target),
        kind: kind.into(),
        severity: Severity::High,
        layer: "proc-mount".into(),
        summary: format!(
            "{} mounted over {}: process {covered} disappears from ps, top and anything that reads /proc",
            who(actor),
            target.escaped()
        ),
        process: actor.process.cloned(),
        ancestry: actor.ancestry.iter().map(|p| (*p).clone()).collect(),
        evidence,
        next_step: format!(
            "`umount -l /proc/{covered}` in that mount namespace (nsenter -m -t {}) and `tracer hidden`; then `tracer kill-tree {}`",
            actor.pid, actor.pid
        ),
        connection: None,
        related: Vec::new(),
        sigma: None,
    }
}

/// `comm (pid N)`, or `process N` when the table does not know it.
fn who(actor: &Actor) -> String {
    match actor.process {
        Some(p) => format!("{} (pid {})", p.comm.escaped(), actor.pid),
        None if actor.pid == 0 => "a process outside tracer's PID namespace".into(),
        None => format!("process {}", actor.pid),
    }
}

fn push_actor_evidence(evidence: &mut Vec<(String, String)>, actor: &Actor) {
    if let Some(exe) = actor.process.and_then(|p| p.exe.as_ref()) {
        evidence.push(("executable".into(), exe.escaped().into_owned()));
    }
    if let Some(ns) = &actor.other_mount_ns {
        evidence.push((
            "mount namespace".into(),
            format!("{ns} (not tracer's: the path is as that namespace sees it)"),
        ));
    }
}

fn finding_id(kind: &str, actor: &Actor, what: &HostStr) -> String {
    let base = match actor.process {
        Some(p) => Finding::process_finding_id(kind, p),
        None => format!("{kind}:{}:0", actor.pid),
    };
    format!("{base}:{}", what.escaped())
}

/// Why the writer looks like an intruder: it or an ancestor runs a dropped
/// program, or is named like a miner.
fn dropped_writer(actor: &Actor) -> Option<String> {
    let chain = actor
        .process
        .into_iter()
        .chain(actor.ancestry.iter().copied());
    for p in chain {
        if let Some(why) = program::dropped_location(p) {
            return Some(format!("{} ({}): {why}", p.comm.escaped(), p.pid));
        }
        if let Some(miner) = masquerade::miner_named(program::program_name(p)) {
            return Some(format!(
                "{} ({}) is named like the miner {miner}",
                p.comm.escaped(),
                p.pid
            ));
        }
    }
    None
}

/// The package manager in the writer's chain, run from a system path.
fn package_manager(actor: &Actor) -> Option<String> {
    actor
        .process
        .into_iter()
        .chain(actor.ancestry.iter().copied())
        .find(|p| {
            program::runs_system_binary(p) && PACKAGE_MANAGERS.contains(&program::program_name(p))
        })
        .map(|p| format!("{} ({})", program::program_name(p), p.pid))
}

/// The PID whose /proc directory `target` is or lies under: `/proc/N`,
/// `/proc/N/...`, `/proc/self` and `/proc/thread-self` (the mounter's own),
/// after removing `.` and repeated slashes; `None` for any other path.
fn proc_pid_of(target: &str, actor_pid: u32) -> Option<u32> {
    let mut parts = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if !target.starts_with('/') || parts.first() != Some(&"proc") {
        return None;
    }
    match *parts.get(1)? {
        "self" | "thread-self" => Some(actor_pid),
        n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::persistence::{places, PlaceIndex, Roots};

    fn process(pid: u32, comm: &str, exe: &str) -> Process {
        Process {
            pid,
            comm: comm.into(),
            exe: Some(exe.into()),
            start_ticks: 7,
            ..Default::default()
        }
    }

    fn roots() -> Roots {
        Roots {
            root: "/nonexistent-root".into(),
        }
    }

    fn check(path: &str, writer: &Process, ancestry: &[&Process]) -> Option<Finding> {
        let places = PlaceIndex::new(places(&roots()));
        let actor = Actor {
            pid: writer.pid,
            process: Some(writer),
            ancestry,
            other_mount_ns: None,
        };
        let event = LiveEvent::FileWritten {
            path: Path::new(path),
            how: WriteKind::Written,
        };
        hit(&event, &places, writer.pid).map(|h| detect(&event, h, &actor))
    }

    #[test]
    fn writes_to_persistence_places_are_findings_with_the_writer_and_chain() {
        let sh = process(40, "sh", "/usr/bin/dash");
        let bash = process(30, "bash", "/usr/bin/bash");
        let f = check("/nonexistent-root/etc/cron.d/job", &sh, &[&bash]).unwrap();
        assert_eq!(f.kind, "persistence-written");
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.layer, "crontab");
        assert_eq!(f.process.as_ref().unwrap().pid, 40);
        assert_eq!(f.ancestry[0].pid, 30);
        assert!(f
            .summary
            .contains("sh (pid 40) wrote /nonexistent-root/etc/cron.d/job"));
        assert!(f
            .evidence
            .contains(&("place".into(), "crontab (T1053.003)".into())));
        assert!(check("/nonexistent-root/etc/hostname", &sh, &[]).is_none());
        assert!(
            check("/etc/cron.d/job", &sh, &[]).is_none(),
            "outside the root"
        );
    }

    #[test]
    fn preload_is_high_a_dropped_writer_raises_and_the_package_manager_lowers() {
        let sh = process(40, "sh", "/usr/bin/dash");
        let f = check("/nonexistent-root/etc/ld.so.preload", &sh, &[]).unwrap();
        assert_eq!(
            (f.kind.as_str(), f.severity),
            ("ld-so-preload-written", Severity::High)
        );

        let dropper = process(20, "x", "/dev/shm/.x/x");
        let f = check("/nonexistent-root/root/.bashrc", &sh, &[&dropper]).unwrap();
        assert_eq!(f.severity, Severity::High);
        assert!(f
            .evidence
            .iter()
            .any(|(l, v)| l == "writer" && v.contains("/dev/shm/.x")));

        let unit = "/nonexistent-root/lib/systemd/system/a.service";
        let dpkg = process(20, "dpkg", "/usr/bin/dpkg");
        assert_eq!(check(unit, &sh, &[&dpkg]).unwrap().severity, Severity::Low);
        let fake_dpkg = process(20, "dpkg", "/tmp/dpkg");
        let f = check(unit, &sh, &[&fake_dpkg]).unwrap();
        assert_eq!(
            f.severity,
            Severity::High,
            "a dpkg from /tmp is a dropped program"
        );
        let f = check("/nonexistent-root/etc/ld.so.preload", &sh, &[&dpkg]).unwrap();
        assert_eq!(
            f.severity,
            Severity::High,
            "preload stays high whoever writes it"
        );
    }

    #[test]
    fn only_mounts_on_or_under_proc_pid_are_findings() {
        assert_eq!(proc_pid_of("/proc/1234", 9), Some(1234));
        assert_eq!(proc_pid_of("/proc//1234/", 9), Some(1234));
        assert_eq!(proc_pid_of("/proc/./1234/fd", 9), Some(1234));
        assert_eq!(proc_pid_of("/proc/self", 9), Some(9));
        assert_eq!(proc_pid_of("/proc/thread-self/", 9), Some(9));
        assert_eq!(proc_pid_of("/proc/x/../55", 9), Some(55));
        assert_eq!(proc_pid_of("/proc", 9), None);
        assert_eq!(proc_pid_of("/proc/sys", 9), None);
        assert_eq!(proc_pid_of("/mnt/proc/12", 9), None);
        assert_eq!(
            proc_pid_of("proc/12", 9),
            None,
            "relative to an unknown directory"
        );
        assert_eq!(proc_pid_of("/proc/12x", 9), None);

        let mounter = process(50, "mount", "/usr/bin/mount");
        let sh = process(49, "sh", "/usr/bin/dash");
        let actor = Actor {
            pid: 50,
            process: Some(&mounter),
            ancestry: &[&sh],
            other_mount_ns: Some("mnt:[4026532000]".into()),
        };
        let target = HostStr::from("/proc/1234");
        let source = HostStr::from("/tmp/empty");
        let event = LiveEvent::Mounted {
            target: &target,
            syscall: "mount",
            source: Some(&source),
            fstype: None,
            returned: false,
        };
        let no_places = PlaceIndex::new(Vec::new());
        let f = detect(&event, hit(&event, &no_places, 50).unwrap(), &actor);
        assert_eq!(
            (f.kind.as_str(), f.severity),
            ("proc-pid-mount", Severity::High)
        );
        assert!(f.evidence.contains(&("hides".into(), "/proc/1234".into())));
        assert!(f
            .evidence
            .iter()
            .any(|(l, v)| l == "result" && v.starts_with("allowed by the kernel")));
        assert!(f
            .evidence
            .iter()
            .any(|(l, v)| l == "mount namespace" && v.starts_with("mnt:[4026532000]")));
        assert_eq!(f.ancestry[0].pid, 49);
        let elsewhere = HostStr::from("/mnt");
        let event = LiveEvent::Mounted {
            target: &elsewhere,
            syscall: "mount",
            source: None,
            fstype: None,
            returned: true,
        };
        assert!(hit(&event, &no_places, 50).is_none());
    }
}
