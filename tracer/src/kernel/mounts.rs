//! Attaches the mount programs (`tracer-ebpf/src/mounts.rs`): preferably
//! to `tp_btf/cap_capable` (the CAP_SYS_ADMIN check `mount` and
//! `move_mount` start with), which costs other system calls nothing;
//! where the kernel lacks it (before 6.14) or refuses it, to the
//! `syscalls:sys_{enter,exit}_{mount,move_mount}` tracepoints, which put
//! every system call of the host on the kernel's slower traced path (about
//! 100 ns each, measured on the reference machine).
//!
//! The syscall tracepoints are found through tracefs. When it is not mounted at
//! `/sys/kernel/tracing`, a short-lived thread mounts it in a private mount
//! namespace of its own (the host's mounts are untouched) to read the
//! tracepoints' ids and formats and attach; the attachments outlive it.
//! Where each argument sits in the tracepoint record comes from the
//! `format` files; the path from a task to its mount namespace from BTF.
use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, MapData},
    programs::{BtfTracePoint, TracePoint},
    Ebpf,
};
use tracer_common::{
    MOUNT_FIELD_FROM_PATH, MOUNT_FIELD_FSTYPE, MOUNT_FIELD_MNT_NS_INUM, MOUNT_FIELD_NR_MOUNT,
    MOUNT_FIELD_NR_MOVE_MOUNT, MOUNT_FIELD_NSPROXY_MNT_NS, MOUNT_FIELD_READY,
    MOUNT_FIELD_REGS_ARG1, MOUNT_FIELD_REGS_ARG2, MOUNT_FIELD_REGS_ARG3, MOUNT_FIELD_REGS_ARG4,
    MOUNT_FIELD_REGS_NR, MOUNT_FIELD_RET, MOUNT_FIELD_SOURCE, MOUNT_FIELD_TARGET,
    MOUNT_FIELD_TASK_NSPROXY, MOUNT_FIELD_TO_DFD, MOUNT_FIELD_TO_PATH,
};

use super::{root_cause, HookChoice, Kernel};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Attaches the mount hooks and records the choice in `kernel.hooks`:
/// never fatal, a kernel or host without them is said in the hook line.
pub fn attach(kernel: &mut Kernel) {
    let capable = attach_capable(kernel);
    if capable.is_ok() {
        kernel.hooks.push(HookChoice {
            event: "mount",
            hook: "tp_btf/cap_capable (CAP_SYS_ADMIN in mount, move_mount)".into(),
            reason: "mounts the kernel allows, with the caller and its mount namespace (open_tree and fsmount mounts attach through move_mount); other system calls cost nothing".into(),
        });
        return;
    }
    let refused = capable.err().map(|e| root_cause(&e)).unwrap_or_default();
    let choice = match attach_all(kernel) {
        Ok(privately) => HookChoice {
            event: "mount",
            hook: "tracepoint/syscalls/sys_{enter,exit}_{mount,move_mount}".into(),
            reason: format!(
                "tp_btf/cap_capable refused ({refused}); successful mounts with the caller and its mount namespace (open_tree and fsmount mounts attach through move_mount), at a cost to every system call{}",
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
                "tp_btf/cap_capable refused ({refused}) and syscall tracepoints unavailable ({}): mounts over /proc/PID are NOT watched",
                root_cause(&e)
            ),
        },
    };
    kernel.hooks.push(choice);
}

/// Offsets every mount program needs: the caller's mount namespace, and
/// (x86-64) the saved registers holding the system call and its arguments.
fn common_fields(kernel: &Kernel) -> Result<Vec<(u32, u32)>> {
    let btf = kernel.kernel_btf.as_ref().context(super::BTF_RELEASED)?;
    let field = |st: &str, f: &str| btf.field_offset(st, f);
    let mut fields = vec![
        (MOUNT_FIELD_TASK_NSPROXY, field("task_struct", "nsproxy")?),
        (MOUNT_FIELD_NSPROXY_MNT_NS, field("nsproxy", "mnt_ns")?),
        (
            MOUNT_FIELD_MNT_NS_INUM,
            field("mnt_namespace", "ns")? + field("ns_common", "inum")?,
        ),
    ];
    if cfg!(target_arch = "x86_64") {
        fields.extend([
            (MOUNT_FIELD_REGS_NR, field("pt_regs", "orig_ax")?),
            (MOUNT_FIELD_REGS_ARG1, field("pt_regs", "di")?),
            (MOUNT_FIELD_REGS_ARG2, field("pt_regs", "si")?),
            (MOUNT_FIELD_REGS_ARG3, field("pt_regs", "dx")?),
            (MOUNT_FIELD_REGS_ARG4, field("pt_regs", "r10")?),
            (MOUNT_FIELD_NR_MOUNT, libc::SYS_mount as u32),
            (MOUNT_FIELD_NR_MOVE_MOUNT, libc::SYS_move_mount as u32),
        ]);
    }
    Ok(fields)
}

fn set_fields(ebpf: &mut Ebpf, fields: &[(u32, u32)]) -> Result<()> {
    let mut map: Array<&mut MapData, u32> = ebpf
        .map_mut("MOUNT_FIELD_OFFSETS")
        .context("mount map missing from object")?
        .try_into()?;
    for &(index, value) in fields {
        map.set(index, value, 0)?;
    }
    Ok(())
}

/// The preferred hook: the capability check (x86-64 only: the arguments
/// are read from the saved registers).
fn attach_capable(kernel: &mut Kernel) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        anyhow::bail!("reading system call arguments from registers is x86-64 only here");
    }
    let mut fields = common_fields(kernel)?;
    fields.push((MOUNT_FIELD_READY, 1));
    let Kernel { ebpf, btf, .. } = kernel;
    let btf = btf.as_ref().context(super::BTF_RELEASED)?;
    set_fields(ebpf, &fields)?;
    let p: &mut BtfTracePoint = ebpf
        .program_mut("mount_capable")
        .context("mount_capable missing from object")?
        .try_into()?;
    p.load("cap_capable", btf)?;
    p.attach()?;
    Ok(())
}

/// The fallback: the syscall tracepoints. Returns whether tracefs had to
/// be mounted privately.
fn attach_all(kernel: &mut Kernel) -> Result<bool> {
    let common = common_fields(kernel)?;
    let mounted_here = crate::mountinfo::own_mount_points_of_type("tracefs")
        .is_ok_and(|dirs| dirs.iter().any(|d| d == TRACEFS));
    let ebpf = &mut kernel.ebpf;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<bool> {
            if !mounted_here {
                crate::mountinfo::mount_privately("tracefs", TRACEFS)
                    .context("mounting tracefs privately")?;
            }
            let enter_mount = format_of("sys_enter_mount")?;
            let enter_move = format_of("sys_enter_move_mount")?;
            let exit_mount = format_of("sys_exit_mount")?;
            let mut fields = common.clone();
            fields.extend([
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
                (MOUNT_FIELD_READY, 1),
            ]);
            set_fields(ebpf, &fields)?;
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
