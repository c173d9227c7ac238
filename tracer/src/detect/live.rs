//! The masquerade rules of `hidden`, run by `watch` as things happen: on
//! each exec, and on each rename of a process or thread. One rule set
//! ([`Rules`]); this module only gives it the process as the
//! event left it in the table. A check costs the rules on one process and
//! one parent lookup, whatever the number of processes on the host.
use crate::{
    detect::masquerade::{HostFiles, KernelThreadNames, Rules},
    model::{Finding, HostStr, Process, ProcessId, ThreadName},
    proc,
    table::ProcessTable,
};

pub struct LiveRules {
    kernel_threads: KernelThreadNames,
    files: HostFiles,
}

impl LiveRules {
    /// The rules, with the kernel-thread names of the host as `table`
    /// knows them at start.
    pub fn new(table: &ProcessTable) -> Self {
        LiveRules {
            kernel_threads: KernelThreadNames::new(
                table
                    .live()
                    .filter(|p| p.kernel_thread)
                    .map(|p| p.comm.as_str()),
            ),
            files: HostFiles::default(),
        }
    }

    fn rules(&self) -> Rules<'_, HostFiles> {
        Rules {
            kernel_threads: &self.kernel_threads,
            files: &self.files,
        }
    }

    /// Every finding on the process `id` as the table has it now (after an
    /// exec), with its chain. The chain's /proc details still pending (for
    /// processes that ran before watch) are read first: without its exe and
    /// command line a process passes every rule.
    pub fn check(&self, table: &mut ProcessTable, id: &ProcessId) -> Vec<Finding> {
        table.read_pending_details(id);
        let Some(p) = table.by_id(id) else {
            return Vec::new();
        };
        let parent = table.parent_of(id).and_then(|pp| table.by_id(&pp));
        let hits = self.rules().check(p, parent);
        if hits.is_empty() {
            return Vec::new();
        }
        let ancestry: Vec<Process> = table.ancestry(id).into_iter().cloned().collect();
        hits.into_iter()
            .map(|h| h.into_finding(p, ancestry.clone()))
            .collect()
    }

    /// Findings after a task renamed itself (`prctl(PR_SET_NAME)`, a write
    /// to `/proc/PID/comm`, a thread's name): only the rules on names, each
    /// with the old and the new name as evidence.
    pub fn check_rename(
        &self,
        table: &mut ProcessTable,
        id: &ProcessId,
        tid: u32,
        old: &HostStr,
        new: &HostStr,
    ) -> Vec<Finding> {
        let mut findings: Vec<Finding> = self
            .check(table, id)
            .into_iter()
            .filter(|f| NAME_RULES.contains(&f.kind.as_str()))
            .collect();
        for f in &mut findings {
            f.summary = format!(
                "renamed itself from \"{}\" to \"{}\" after it started: {}",
                old.as_str(),
                new.as_str(),
                f.summary
            );
            f.evidence.splice(
                0..0,
                [
                    ("old name".to_string(), old.to_string()),
                    ("new name".to_string(), new.to_string()),
                    ("renamed thread".to_string(), tid.to_string()),
                ],
            );
        }
        findings
    }
}

/// The rules a rename can trip (those on where the program lives cannot
/// change with a name).
const NAME_RULES: &[&str] = &[
    "kernel-thread-name",
    "miner-name",
    "near-miss-name",
    "name-mismatch",
    "daemon-user",
    "daemon-parent",
];

/// The program an exec ran, as `/proc/PID/exe` would name it: for a
/// script, its interpreter (the kernel put it first in the arguments, the
/// script's path after it); the exec's filename when it is an absolute
/// path; joined to the process's working directory when relative; and read
/// from `/proc/PID/exe` when the program was run through a file descriptor
/// (`execveat`, `fexecve`, `/proc/self/fd/N`), where the filename says
/// nothing of the file (a memfd, a deleted file). Falls back to the
/// filename when the process is gone.
pub fn exec_path(pid: u32, filename: &HostStr, argv: &[HostStr]) -> HostStr {
    if let Some(interpreter) = script_interpreter(filename, argv) {
        return interpreter.clone();
    }
    let name = filename.as_str();
    if name.starts_with("/dev/fd/") || (name.starts_with("/proc/") && name.contains("/fd/")) {
        return proc::read_exe(pid).unwrap_or_else(|| filename.clone());
    }
    if name.starts_with('/') {
        return filename.clone();
    }
    match proc::read_link(&format!("/proc/{pid}/cwd")) {
        Ok(cwd) => {
            let rel = name.strip_prefix("./").unwrap_or(name);
            let cwd = cwd.as_str().trim_end_matches('/');
            HostStr::from_text(&format!("{cwd}/{rel}"))
        }
        Err(_) => filename.clone(),
    }
}

/// The interpreter of a script exec: binfmt_script makes the arguments
/// `interpreter [arg] filename ...`.
fn script_interpreter<'a>(filename: &HostStr, argv: &'a [HostStr]) -> Option<&'a HostStr> {
    let first = argv.first()?;
    let script_follows = argv.iter().skip(1).take(2).any(|a| a == filename);
    (first != filename && first.starts_with('/') && script_follows).then_some(first)
}

/// Renames a task in the table's copy of its process: the process's own
/// name when the task is the leader, else the thread's entry.
pub fn apply_rename(p: &mut Process, tid: u32, new: &HostStr) {
    if tid == p.pid {
        p.comm = new.clone();
        return;
    }
    p.threads.retain(|t| t.tid != tid);
    if *new != p.comm {
        p.threads.push(ThreadName {
            tid,
            comm: new.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_change_the_process_or_its_thread_list() {
        let mut p = Process {
            pid: 10,
            comm: "bash".into(),
            ..Default::default()
        };
        apply_rename(&mut p, 11, &"xmrig".into());
        assert_eq!(p.threads.len(), 1);
        apply_rename(&mut p, 11, &"bash".into());
        assert!(
            p.threads.is_empty(),
            "a thread named like its process is not listed"
        );
        apply_rename(&mut p, 10, &"kworker/0:2".into());
        assert_eq!(p.comm.as_str(), "kworker/0:2");
    }

    #[test]
    fn absolute_filenames_are_kept_and_relative_ones_joined_to_the_cwd() {
        let me = std::process::id();
        let args = |a: &[&str]| a.iter().map(|&s| HostStr::from(s)).collect::<Vec<_>>();
        assert_eq!(
            exec_path(me, &"/usr/bin/true".into(), &args(&["true"])).as_str(),
            "/usr/bin/true"
        );
        // A script runs its interpreter.
        let shim = args(&["/usr/bin/env", "bash", "/home/u/.pyenv/shims/python3", "-V"]);
        assert_eq!(
            exec_path(me, &"/home/u/.pyenv/shims/python3".into(), &shim).as_str(),
            "/usr/bin/env"
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            exec_path(me, &"./x".into(), &[]).as_str(),
            format!("{}/x", cwd.display())
        );
        // A process that is gone keeps its filename.
        assert_eq!(
            exec_path(u32::MAX, &"/dev/fd/3".into(), &[]).as_str(),
            "/dev/fd/3"
        );
    }
}
