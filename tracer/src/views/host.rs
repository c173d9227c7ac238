//! Host facts that turn a process record into evidence a responder can
//! read: user names, wall-clock start times, the parent chain.
use crate::{
    model::{Process, USER_HZ},
    users::Users,
};

pub struct Host {
    pub users: Users,
    /// Boot time, seconds since the epoch (`btime` in /proc/stat).
    pub boot_time: Option<u64>,
}

impl Host {
    pub fn load() -> Host {
        let stat = crate::proc::read_file("/proc/stat").unwrap_or_default();
        Host {
            users: Users::load(),
            boot_time: parse_btime(&String::from_utf8_lossy(&stat)),
        }
    }

    /// When a process started, in UTC, from its start ticks.
    pub fn start_time(&self, start_ticks: u64) -> String {
        match self.boot_time {
            Some(boot) => format_utc(boot + start_ticks / USER_HZ),
            None => format!("{} s after boot", start_ticks / USER_HZ),
        }
    }

    /// The facts every finding about a process carries: pid, user, exe,
    /// command line, parent chain (nearest first), start time.
    pub fn process_evidence(&self, p: &Process, ancestry: &[Process]) -> Vec<(String, String)> {
        let mut ev = vec![
            ("pid".to_string(), p.pid.to_string()),
            (
                "user".to_string(),
                format!("{} ({})", self.users.name(p.uid).as_str(), p.uid),
            ),
            (
                "exe".to_string(),
                p.exe
                    .as_ref()
                    .map_or("(unreadable)".into(), |e| e.to_string()),
            ),
            ("cmdline".to_string(), p.cmdline_string().to_string()),
        ];
        if !p.threads.is_empty() {
            ev.push(("threads".to_string(), thread_list(p)));
        }
        if !ancestry.is_empty() {
            ev.push(("parents".to_string(), parent_chain(ancestry)));
        }
        ev.push(("started".to_string(), self.start_time(p.start_ticks)));
        ev
    }
}

/// Threads named differently from their process: `xmrig(1301), xmrig(1302)`.
pub fn thread_list(p: &Process) -> String {
    p.threads
        .iter()
        .map(|t| format!("{}({})", t.comm.as_str(), t.tid))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `bash(1200) <- sshd(900) <- systemd(1)`.
pub fn parent_chain(ancestry: &[Process]) -> String {
    ancestry
        .iter()
        .map(|a| format!("{}({})", a.comm.as_str(), a.pid))
        .collect::<Vec<_>>()
        .join(" <- ")
}

fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
pub fn format_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_civil_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn boot_time_comes_from_btime() {
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn evidence_names_the_process_and_its_parents() {
        let host = Host {
            users: Users::parse("root:x:0:0::/root:/bin/sh\n"),
            boot_time: Some(1_700_000_000),
        };
        let p = Process {
            pid: 42,
            uid: 0,
            comm: "sleep".into(),
            exe: Some("/usr/bin/sleep".into()),
            cmdline: vec!["sleep".into(), "60".into()],
            start_ticks: 250,
            ..Default::default()
        };
        let parent = Process {
            pid: 1,
            comm: "systemd".into(),
            ..Default::default()
        };
        let ev = host.process_evidence(&p, &[parent]);
        let get = |k: &str| ev.iter().find(|(l, _)| l == k).map(|(_, v)| v.as_str());
        assert_eq!(get("user"), Some("root (0)"));
        assert_eq!(get("parents"), Some("systemd(1)"));
        assert_eq!(get("started"), Some("2023-11-14 22:13:22 UTC"));
        assert_eq!(get("cmdline"), Some("sleep 60"));
    }
}
