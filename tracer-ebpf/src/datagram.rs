//! Outbound UDP: `connect()` of a UDP socket and datagrams sent to an
//! address, IPv4 and IPv6, in the sending task's context.
//!
//! Preferred: the cgroup socket-address hooks on the cgroup v2 root
//! (`connect4`/`connect6`, `sendmsg4`/`sendmsg6`), which need neither
//! kprobes nor trampolines; they always allow the call (return 1) and never
//! touch the address. Where the kernel refuses them (older kernels keep the
//! current task's helpers from cgroup programs), fentry or kprobes on
//! `udp_sendmsg`, `udpv6_sendmsg`, `__ip4_datagram_connect` and
//! `__ip6_datagram_connect` read the same facts.
//!
//! A beacon every 200 ms must not become five records a second: one LRU
//! map keyed by process and destination lets one record a second through
//! and counts the rest into it.
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns,
    },
    macros::{cgroup_sock_addr, fentry, kprobe, map},
    maps::LruHashMap,
    programs::{FEntryContext, ProbeContext, SockAddrContext},
};
use tracer_common::{
    DatagramEvent, DatagramKey, DatagramSeen, EventKind, DGRAM_CONNECT, DGRAM_HOOK_CGROUP,
    DGRAM_HOOK_FENTRY, DGRAM_HOOK_KPROBE, DGRAM_SEND, DGRAM_THROTTLE_NS,
};

use crate::{maps, task::read_at};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_UDPLITE: u32 = 136;

/// Last record per process and destination.
#[map]
static DGRAM_SEEN: LruHashMap<DatagramKey, DatagramSeen> = LruHashMap::with_max_entries(16384, 0);

#[cgroup_sock_addr(connect4)]
pub fn dgram_connect4(ctx: SockAddrContext) -> i32 {
    unsafe { from_sock_addr::<false>(ctx.sock_addr, DGRAM_CONNECT) };
    1
}

#[cgroup_sock_addr(connect6)]
pub fn dgram_connect6(ctx: SockAddrContext) -> i32 {
    unsafe { from_sock_addr::<true>(ctx.sock_addr, DGRAM_CONNECT) };
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn dgram_sendmsg4(ctx: SockAddrContext) -> i32 {
    unsafe { from_sock_addr::<false>(ctx.sock_addr, DGRAM_SEND) };
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn dgram_sendmsg6(ctx: SockAddrContext) -> i32 {
    unsafe { from_sock_addr::<true>(ctx.sock_addr, DGRAM_SEND) };
    1
}

/// `V6`: the program is attached as connect6/sendmsg6. The verifier
/// refuses any read of `user_ip6` in an IPv4 program (and of `user_ip4`
/// in an IPv6 one), reachable or not, so each kind gets its own copy.
#[inline(always)]
unsafe fn from_sock_addr<const V6: bool>(sa: *mut bpf_sock_addr, call: u16) {
    let sa = &*sa;
    if sa.type_ != SOCK_DGRAM || (sa.protocol != IPPROTO_UDP && sa.protocol != IPPROTO_UDPLITE) {
        return;
    }
    let mut key = DatagramKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        // `user_port` holds the port in network order in its low 16 bits.
        dport: u16::from_be(sa.user_port as u16),
        ..DatagramKey::default()
    };
    if !V6 && sa.user_family == AF_INET as u32 {
        key.family = AF_INET;
        key.daddr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else if V6 && sa.user_family == AF_INET6 as u32 {
        key.family = AF_INET6;
        // The context allows only 4-byte loads of the address words.
        let words = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        for (i, w) in words.iter().enumerate() {
            key.daddr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    } else {
        return;
    }
    record(&key, call, DGRAM_HOOK_CGROUP);
}

#[fentry(function = "udp_sendmsg")]
pub fn dgram_send4_fentry(ctx: FEntryContext) -> i32 {
    unsafe { from_msghdr(ctx.arg(0), ctx.arg(1), DGRAM_HOOK_FENTRY) }
}

#[fentry(function = "udpv6_sendmsg")]
pub fn dgram_send6_fentry(ctx: FEntryContext) -> i32 {
    unsafe { from_msghdr(ctx.arg(0), ctx.arg(1), DGRAM_HOOK_FENTRY) }
}

#[fentry(function = "__ip4_datagram_connect")]
pub fn dgram_connect4_fentry(ctx: FEntryContext) -> i32 {
    unsafe { from_sockaddr(ctx.arg(0), ctx.arg(1), DGRAM_CONNECT, DGRAM_HOOK_FENTRY) }
}

#[fentry(function = "__ip6_datagram_connect")]
pub fn dgram_connect6_fentry(ctx: FEntryContext) -> i32 {
    unsafe { from_sockaddr(ctx.arg(0), ctx.arg(1), DGRAM_CONNECT, DGRAM_HOOK_FENTRY) }
}

#[kprobe]
pub fn dgram_send_kprobe(ctx: ProbeContext) -> i32 {
    let (Some(sk), Some(msg)) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1)) else {
        return 0;
    };
    unsafe { from_msghdr(sk, msg, DGRAM_HOOK_KPROBE) }
}

#[kprobe]
pub fn dgram_connect_kprobe(ctx: ProbeContext) -> i32 {
    let (Some(sk), Some(addr)) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1)) else {
        return 0;
    };
    unsafe { from_sockaddr(sk, addr, DGRAM_CONNECT, DGRAM_HOOK_KPROBE) }
}

/// `udp_sendmsg(sk, msg, len)`: the destination is `msg->msg_name` (a
/// kernel copy of the caller's address), absent on a connected socket,
/// whose destination its connect already showed.
#[inline(always)]
unsafe fn from_msghdr(sk: *const u8, msg: *const u8, hook: u32) -> i32 {
    let off = maps::offsets();
    if off.ready == 0 || off.msghdr_name == 0 {
        return 0;
    }
    let name: u64 = read_at(msg, off.msghdr_name);
    if name == 0 {
        return 0;
    }
    from_sockaddr(sk, name as *const u8, DGRAM_SEND, hook)
}

/// A kernel `struct sockaddr_in` or `sockaddr_in6` (their layouts are the
/// system call ABI: family, port, then the address) for a UDP socket.
#[inline(always)]
unsafe fn from_sockaddr(sk: *const u8, addr: *const u8, call: u16, hook: u32) -> i32 {
    let off = maps::offsets();
    if off.ready == 0 || addr.is_null() {
        return 0;
    }
    let protocol = read_at::<u16>(sk, off.sk_protocol) as u32;
    if protocol != IPPROTO_UDP && protocol != IPPROTO_UDPLITE {
        return 0;
    }
    let family: u16 = read_at(addr, 0);
    let mut key = DatagramKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        family,
        dport: u16::from_be(read_at(addr, 2)),
        ..DatagramKey::default()
    };
    match family {
        AF_INET => {
            let a: [u8; 4] = read_at(addr, 4);
            key.daddr[..4].copy_from_slice(&a);
        }
        // sin6_flowinfo sits between the port and the address.
        AF_INET6 => key.daddr = read_at(addr, 8),
        _ => return 0,
    }
    record(&key, call, hook);
    0
}

/// One record for this process and destination a second at most; the
/// datagrams in between are counted into the next.
#[inline(always)]
unsafe fn record(key: &DatagramKey, call: u16, hook: u32) {
    let now = bpf_ktime_get_boot_ns();
    let count = match DGRAM_SEEN.get_ptr_mut(key) {
        Some(seen) => {
            if now.wrapping_sub((*seen).last_ns) < DGRAM_THROTTLE_NS {
                // Not atomic (the BPF target's core has no atomics): two
                // CPUs sending at once may count one datagram less.
                (*seen).pending = (*seen).pending.wrapping_add(1);
                return;
            }
            let count = (*seen).pending + 1;
            (*seen).pending = 0;
            (*seen).last_ns = now;
            count
        }
        None => {
            let seen = DatagramSeen {
                last_ns: now,
                pending: 0,
                _pad: 0,
            };
            let _ = DGRAM_SEEN.insert(key, &seen, 0);
            1
        }
    };
    let Some(mut entry) = maps::EVENTS.reserve::<DatagramEvent>(0) else {
        maps::count_lost(EventKind::Datagram as u32);
        return;
    };
    let ev = &mut *entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.kind = EventKind::Datagram as u32;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.pid = pid_tgid as u32;
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev.family = key.family;
    ev.dport = key.dport;
    ev.call = call;
    ev._pad = 0;
    ev.daddr = key.daddr;
    ev.count = count;
    ev.hook = hook;
    ev.ktime_ns = now;
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    // Alerts must not wait for the drain timer.
    entry.submit(aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64);
}
