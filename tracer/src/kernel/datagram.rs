//! The outbound UDP hook (see `tracer-ebpf/src/datagram.rs`): the cgroup
//! socket-address programs on the cgroup v2 root where the kernel takes
//! them, else fentry, else kprobes on the kernel's UDP functions.
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};

use super::{root_cause, HookChoice, Kernel};

/// The cgroup programs and the kernel functions of the fallback.
const CGROUP_PROGRAMS: &[&str] = &[
    "dgram_connect4",
    "dgram_connect6",
    "dgram_sendmsg4",
    "dgram_sendmsg6",
];
const FENTRY_PROGRAMS: &[(&str, &str)] = &[
    ("dgram_send4_fentry", "udp_sendmsg"),
    ("dgram_send6_fentry", "udpv6_sendmsg"),
    ("dgram_connect4_fentry", "__ip4_datagram_connect"),
    ("dgram_connect6_fentry", "__ip6_datagram_connect"),
];
const KPROBES: &[(&str, &str)] = &[
    ("dgram_send_kprobe", "udp_sendmsg"),
    ("dgram_send_kprobe", "udpv6_sendmsg"),
    ("dgram_connect_kprobe", "__ip4_datagram_connect"),
    ("dgram_connect_kprobe", "__ip6_datagram_connect"),
];

/// Attaches the best UDP hook this kernel takes; without any, watch goes
/// on and its start line (and `status`) says datagrams are not seen.
pub fn attach(kernel: &mut Kernel) -> HookChoice {
    let cgroup = match attach_cgroup(kernel) {
        Ok(root) => {
            return HookChoice {
                event: "udp",
                hook: "cgroup/connect4,connect6,sendmsg4,sendmsg6".into(),
                reason: format!(
                "on the cgroup v2 root {root}: every process's UDP connect and send to an address"
            ),
            }
        }
        Err(e) => root_cause(&e),
    };
    let fentry =
        match attach_functions(kernel, FENTRY_PROGRAMS, fentry) {
            Ok(()) => return HookChoice {
                event: "udp",
                hook:
                    "fentry/udp_sendmsg,udpv6_sendmsg,__ip4_datagram_connect,__ip6_datagram_connect"
                        .into(),
                reason: format!("cgroup hooks refused ({cgroup})"),
            },
            Err(e) => root_cause(&e),
        };
    match attach_functions(kernel, KPROBES, kprobe) {
        Ok(()) => HookChoice {
            event: "udp",
            hook: "kprobe/udp_sendmsg,udpv6_sendmsg,__ip4_datagram_connect,__ip6_datagram_connect"
                .into(),
            reason: format!("cgroup hooks refused ({cgroup}), fentry refused ({fentry})"),
        },
        Err(kprobe) => HookChoice {
            event: "udp",
            hook: "none".into(),
            reason: format!(
                "UDP datagrams are NOT seen: cgroup hooks refused ({cgroup}), fentry refused ({fentry}), kprobes refused ({})",
                root_cause(&kprobe)
            ),
        },
    }
}

/// The four cgroup programs on the cgroup v2 root, all or none. Returns
/// where the root is mounted (or that tracer mounted it privately).
fn attach_cgroup(kernel: &mut Kernel) -> Result<String> {
    let (root, where_) = cgroup_root()?;
    let mut attached = Vec::new();
    for name in CGROUP_PROGRAMS {
        let result = (|| -> Result<()> {
            let p: &mut CgroupSockAddr = kernel
                .ebpf
                .program_mut(name)
                .context("program missing from object")?
                .try_into()?;
            p.load()?;
            // A cgroup link (Linux 5.7+, which aya uses) always runs beside
            // the cgroup's other programs and takes no flags: "Single" is
            // aya's name for no flags, not for exclusive here.
            let link = p.attach(&root, CgroupAttachMode::Single)?;
            attached.push((*name, link));
            Ok(())
        })();
        if let Err(e) = result {
            for (name, link) in attached {
                if let Some(p) = kernel.ebpf.program_mut(name) {
                    let p: Result<&mut CgroupSockAddr, _> = p.try_into();
                    if let Ok(p) = p {
                        let _ = p.detach(link);
                    }
                }
            }
            return Err(e.context(format!("loading or attaching {name}")));
        }
    }
    Ok(where_)
}

/// An open descriptor of the cgroup v2 root: where tracer's mount
/// namespace has it, else mounted in a private mount namespace of a
/// short-lived thread (the host's mounts are not touched).
fn cgroup_root() -> Result<(OwnedFd, String)> {
    use rustix::fs::{open, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if let Some(dir) = crate::mountinfo::own_mount_points_of_type("cgroup2")
        .ok()
        .and_then(|dirs| dirs.into_iter().next())
    {
        let fd = open(dir.as_str(), flags, Mode::empty())
            .with_context(|| format!("opening the cgroup v2 root {dir}"))?;
        return Ok((fd, dir));
    }
    std::thread::spawn(move || -> Result<OwnedFd> {
        const DIR: &str = "/sys/fs/cgroup";
        crate::mountinfo::mount_privately("cgroup2", DIR)
            .context("no cgroup v2 mount, and mounting one privately failed")?;
        Ok(open(DIR, flags, Mode::empty())?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the cgroup mount thread panicked"))?
    .map(|fd| {
        (
            fd,
            "(mounted privately: the host has no cgroup v2 mount)".into(),
        )
    })
}

fn fentry(kernel: &mut Kernel, prog: &str, function: &str) -> Result<()> {
    kernel.fentry(prog, function)
}

fn kprobe(kernel: &mut Kernel, prog: &str, function: &str) -> Result<()> {
    kernel.kprobe(prog, function)
}

/// Every function of `table` through `attach_one`, all or none (a
/// program half attached would see IPv4 and not IPv6).
fn attach_functions(
    kernel: &mut Kernel,
    table: &[(&str, &str)],
    attach_one: fn(&mut Kernel, &str, &str) -> Result<()>,
) -> Result<()> {
    for (prog, function) in table {
        attach_one(kernel, prog, function).with_context(|| format!("{prog} on {function}"))?;
    }
    Ok(())
}

impl Kernel {
    /// Datagrams the kernel has counted for a process and destination but
    /// not yet sent in a record (those since its last record, less than a
    /// second ago): for the summary's totals. 0 when it has none.
    pub fn datagrams_pending(&self, pid: u32, addr: std::net::IpAddr, port: u16) -> u32 {
        use aya::maps::{HashMap, MapData};
        use tracer_common::{DatagramKey, DatagramSeen};
        let Some(map) = self.ebpf.map("DGRAM_SEEN") else {
            return 0;
        };
        let Ok(seen) = HashMap::<&MapData, DatagramKey, DatagramSeen>::try_from(map) else {
            return 0;
        };
        // An IPv6 socket sending to IPv4 is keyed by the mapped address.
        let keys: Vec<(u16, [u8; 16])> = match addr {
            std::net::IpAddr::V4(v4) => {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&v4.octets());
                vec![(2, bytes), (10, v4.to_ipv6_mapped().octets())]
            }
            std::net::IpAddr::V6(v6) => vec![(10, v6.octets())],
        };
        keys.into_iter()
            .filter_map(|(family, daddr)| {
                let key = DatagramKey {
                    tgid: pid,
                    family,
                    dport: port,
                    daddr,
                };
                seen.get(&key, 0).ok().map(|v| v.pending)
            })
            .sum()
    }
}
