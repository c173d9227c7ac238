//! Attaches the mount programs (`tracer-ebpf/src/mounts.rs`) to the
//! `syscalls:sys_{enter,exit}_{mount,move_mount}` tracepoints, which fire
//! only for those calls, so every other system call costs nothing more.
//!
//! Those tracepoints are found through tracefs. When it is not mounted at
//! `/sys/kernel/tracing`, a short-lived thread mounts it in a private mount
//! namespace of its own (the host's mounts are untouched) to read the
//! tracepoints' ids and formats and attach; the attachments outlive it.
//! Where each argument sits in the tracepoint record comes from the
//! `format` files; the path from a task to its mount namespace from BTF.
use anyhow::{anyhow, Context, Result};
use aya::{maps::Array, programs::TracePoint};
use tracer_common::{
    MOUNT_FIELD_FROM_PATH, MOUNT_FIELD_FSTYPE, MOUNT_FIELD_MNT_NS_INUM, MOUNT_FIELD_NSPROXY_MNT_NS,
    MOUNT_FIELD_READY, MOUNT_FIELD_RET, MOUNT_FIELD_SOURCE, MOUNT_FIELD_TARGET,
    MOUNT_FIELD_TASK_NSPROXY, MOUNT_FIELD_TO_DFD, MOUNT_FIELD_TO_PATH,
};

use super::{offsets, root_cause, HookChoice, Kernel};
use crate::views::{kernel_hooks, mounts};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Attaches the mount hooks and records the choice in `kernel.hooks`:
/// never fatal, a kernel or host without them is said in the hook line.
pub fn attach(kernel: &mut Kernel) {
    let choice = match attach_all(kernel) {
        Ok(privately) => HookChoice {
            event: "mount",
            hook: "tracepoint/syscalls/sys_{enter,exit}_{mount,move_mount}".into(),
            reason: format!(
                "successful mounts with the caller and its mount namespace (open_tree and fsmount mounts attach through move_mount){}",
                if privately {
                    "; tracefs was not mounted: mounted it in a private mount namespace to attach"
                } else {
                    ""
                }
            ),
        },
        Err(e) => HookChoice {
            event: "mount",
            hook: "none".into(),
            reason: format!(
                "syscall tracepoints unavailable ({}): mounts over /proc/PID are NOT watched",
                root_cause(&e)
            ),
        },
    };
    kernel.hooks.push(choice);
}

/// Returns whether tracefs had to be mounted privately.
fn attach_all(kernel: &mut Kernel) -> Result<bool> {
    let btf = offsets::load_vmlinux_btf()?;
    let task_nsproxy = offsets::field_offset(&btf, "task_struct", "nsproxy")?;
    let nsproxy_mnt_ns = offsets::field_offset(&btf, "nsproxy", "mnt_ns")?;
    let mnt_ns_inum = offsets::field_offset(&btf, "mnt_namespace", "ns")?
        + offsets::field_offset(&btf, "ns_common", "inum")?;
    drop(btf);
    let mounted_here = mounts::own_mount_points_of_type("tracefs")
        .is_ok_and(|dirs| dirs.iter().any(|d| d == TRACEFS));
    let ebpf = &mut kernel.ebpf;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<bool> {
            if !mounted_here {
                kernel_hooks::private_tracefs().context("mounting tracefs privately")?;
            }
            let enter_mount = format_of("sys_enter_mount")?;
            let enter_move = format_of("sys_enter_move_mount")?;
            let exit_mount = format_of("sys_exit_mount")?;
            let fields = [
                (MOUNT_FIELD_SOURCE, field_in(&enter_mount, "dev_name")?),
                (MOUNT_FIELD_TARGET, field_in(&enter_mount, "dir_name")?),
                (MOUNT_FIELD_FSTYPE, field_in(&enter_mount, "type")?),
                (
                    MOUNT_FIELD_FROM_PATH,
                    field_in(&enter_move, "from_pathname")?,
                ),
                (MOUNT_FIELD_TO_DFD, field_in(&enter_move, "to_dfd")?),
                (MOUNT_FIELD_TO_PATH, field_in(&enter_move, "to_pathname")?),
                (MOUNT_FIELD_RET, field_in(&exit_mount, "ret")?),
                (MOUNT_FIELD_TASK_NSPROXY, task_nsproxy),
                (MOUNT_FIELD_NSPROXY_MNT_NS, nsproxy_mnt_ns),
                (MOUNT_FIELD_MNT_NS_INUM, mnt_ns_inum),
                (MOUNT_FIELD_READY, 1),
            ];
            let mut map: Array<_, u32> = ebpf
                .map_mut("MOUNT_FIELD_OFFSETS")
                .context("mount map missing from object")?
                .try_into()?;
            for (index, value) in fields {
                map.set(index, value, 0)?;
            }
            for (prog, tracepoints) in [
                ("mount_enter", &["sys_enter_mount"][..]),
                ("move_mount_enter", &["sys_enter_move_mount"][..]),
                ("mount_exit", &["sys_exit_mount", "sys_exit_move_mount"][..]),
            ] {
                let p: &mut TracePoint = ebpf
                    .program_mut(prog)
                    .with_context(|| format!("{prog} missing from object"))?
                    .try_into()?;
                p.load()?;
                for tp in tracepoints {
                    p.attach("syscalls", tp)
                        .with_context(|| format!("attaching syscalls:{tp}"))?;
                }
            }
            Ok(!mounted_here)
        })
        .join()
        .map_err(|_| anyhow!("the tracefs thread panicked"))?
    })
}

fn format_of(event: &str) -> Result<String> {
    let path = format!("{TRACEFS}/events/syscalls/{event}/format");
    let bytes = crate::proc::read_file(&path).with_context(|| format!("reading {path}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The byte offset of `name` in a tracepoint `format` file
/// (`field:char * dir_name;\toffset:24;\tsize:8;...`).
fn field_in(format: &str, name: &str) -> Result<u32> {
    format
        .lines()
        .filter_map(|l| l.trim().strip_prefix("field:"))
        .find_map(|l| {
            let (decl, rest) = l.split_once(';')?;
            let declared = decl.rsplit([' ', '*']).next()?;
            (declared == name).then(|| {
                rest.trim()
                    .strip_prefix("offset:")?
                    .split(';')
                    .next()?
                    .parse()
                    .ok()
            })?
        })
        .ok_or_else(|| anyhow!("no field {name} in the tracepoint's format"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_name_with_their_offset() {
        let format = "name: sys_enter_mount\nID: 940\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:char * dev_name;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:char * dir_name;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:char * type;\toffset:32;\tsize:8;\tsigned:0;\n\
            \tfield:int to_dfd;\toffset:40;\tsize:8;\tsigned:0;\n";
        assert_eq!(field_in(format, "dir_name").unwrap(), 24);
        assert_eq!(field_in(format, "type").unwrap(), 32);
        assert_eq!(field_in(format, "to_dfd").unwrap(), 40);
        assert!(field_in(format, "name").is_err());
        assert!(field_in(format, "flags").is_err());
    }
}
