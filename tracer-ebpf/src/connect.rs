//! Outbound TCP connects, IPv4 and IPv6.
//!
//! Three hooks share one reader: `fentry/tcp_connect` where the kernel
//! allows BPF trampolines (the source port is known there), a kprobe on
//! `tcp_connect` where it has kprobes but no trampolines, and the stable
//! `sock:inet_sock_set_state` tracepoint otherwise (the move to SYN_SENT runs
//! in the connecting task's context, before the source port is chosen).
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns,
    },
    macros::{fentry, kprobe, raw_tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use tracer_common::{ConnectEvent, EventKind, HOOK_FENTRY, HOOK_KPROBE, HOOK_TRACEPOINT};

use crate::{maps, task::read_at};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const TCP_SYN_SENT: i32 = 2;

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn connect_state_raw_tp(ctx: RawTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let newstate: i32 = ctx.arg(2);
    if newstate != TCP_SYN_SENT {
        return 0;
    }
    unsafe { on_connect(sk, HOOK_TRACEPOINT) }
}

#[fentry(function = "tcp_connect")]
pub fn connect_fentry(ctx: FEntryContext) -> i32 {
    unsafe { on_connect(ctx.arg(0), HOOK_FENTRY) }
}

#[kprobe]
pub fn connect_kprobe(ctx: ProbeContext) -> i32 {
    let Some(sk) = ctx.arg::<*const u8>(0) else {
        return 0;
    };
    unsafe { on_connect(sk, HOOK_KPROBE) }
}

#[inline(always)]
unsafe fn on_connect(sk: *const u8, hook: u32) -> i32 {
    let off = maps::offsets();
    if off.ready == 0 {
        return 0;
    }
    if read_at::<u16>(sk, off.sk_protocol) != IPPROTO_TCP {
        return 0;
    }
    let family: u16 = read_at(sk, off.sk_family);
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let Some(mut entry) = maps::EVENTS.reserve::<ConnectEvent>(0) else {
        maps::count_lost(EventKind::Connect as u32);
        return 0;
    };
    let ev = &mut *entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.kind = EventKind::Connect as u32;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.pid = pid_tgid as u32;
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev.family = family;
    ev.sport = read_at(sk, off.sk_num);
    ev.dport = u16::from_be(read_at(sk, off.sk_dport));
    ev._pad = 0;
    ev.saddr = [0; 16];
    ev.daddr = [0; 16];
    if family == AF_INET {
        let s: [u8; 4] = read_at(sk, off.sk_rcv_saddr);
        let d: [u8; 4] = read_at(sk, off.sk_daddr);
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    } else {
        ev.saddr = read_at(sk, off.sk_v6_rcv_saddr);
        ev.daddr = read_at(sk, off.sk_v6_daddr);
    }
    ev.hook = hook;
    ev._pad2 = 0;
    ev.ktime_ns = bpf_ktime_get_boot_ns();
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    // Alerts must not wait for the drain timer: always wake the reader
    // (the adaptive default would not while batched records are queued).
    entry.submit(aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64);
    0
}
