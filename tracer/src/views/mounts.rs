//! Part of D: mounts on or under `/proc/PID`. Mounting an empty directory
//! (or another process's /proc entry) over `/proc/PID` hides a process from
//! every tool that reads /proc, while /proc still lists the PID.
use std::io;

/// One mount on `/proc/PID` or below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcMount {
    pub pid: u32,
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// The mountinfo line, as the evidence to show.
    pub line: String,
}

/// The mounts among `mounts` that cover `/proc/PID` of this `pid`.
pub fn on_pid(mounts: &[ProcMount], pid: u32) -> impl Iterator<Item = &ProcMount> {
    mounts.iter().filter(move |m| m.pid == pid)
}

/// The mounts on or under `/proc/PID` in tracer's mount namespace.
pub fn proc_pid_mounts() -> io::Result<Vec<ProcMount>> {
    let bytes = crate::proc::read_file("/proc/self/mountinfo")?;
    Ok(parse_proc_pid_mounts(
        crate::model::HostStr::from_bytes(&bytes).as_str(),
    ))
}

/// Picks the `/proc/PID[/...]` mounts out of mountinfo text.
pub fn parse_proc_pid_mounts(mountinfo: &str) -> Vec<ProcMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = crate::mountinfo::unescape(fields.get(4)?);
            let pid = mount_point
                .strip_prefix("/proc/")?
                .split('/')
                .next()?
                .parse()
                .ok()?;
            // Optional fields end at " - "; then fs type and source.
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(ProcMount {
                pid,
                mount_point,
                fs_type: fields.get(dash + 1)?.to_string(),
                source: crate::mountinfo::unescape(fields.get(dash + 2)?),
                line: line.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
90 22 0:50 / /proc/4242 rw,relatime shared:7 - tmpfs none rw
91 22 0:21 /77 /proc/4343 rw,relatime - proc proc rw
92 22 0:51 / /proc/4444/cmdline rw - tmpfs my\\040src rw
93 22 0:52 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
";

    #[test]
    fn only_mounts_on_pid_entries_are_picked() {
        let mounts = parse_proc_pid_mounts(MOUNTINFO);
        let got: Vec<(u32, &str, &str, &str)> = mounts
            .iter()
            .map(|m| {
                (
                    m.pid,
                    m.mount_point.as_str(),
                    m.fs_type.as_str(),
                    m.source.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (4242, "/proc/4242", "tmpfs", "none"),
                (4343, "/proc/4343", "proc", "proc"),
                (4444, "/proc/4444/cmdline", "tmpfs", "my src"),
            ]
        );
        assert!(mounts[1].line.contains("/77 /proc/4343"));
    }
}
