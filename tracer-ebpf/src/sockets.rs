//! Socket iterators: every IPv4, IPv6 and packet socket, as fixed
//! `SocketRecord`s written to the iterator's seq_file.
//!
//! - `iter/task_file` walks every open file of every process (threads that
//!   share the leader's file table are skipped by the kernel) and keeps the
//!   sockets, attributed to the holding tgid and fd. It never looks at
//!   /proc, so a process or descriptor hidden from /proc still shows.
//! - `iter/tcp` and `iter/udp` walk one network namespace's socket tables
//!   (the namespace of the task that creates the iterator), including
//!   sockets no file holds: TIME_WAIT, request sockets and orphans.
use aya_ebpf::{bindings::seq_file, helpers::generated::bpf_seq_write};
use tracer_common::{
    KernelOffsets, SocketOffsets, SocketRecord, SOCK_FROM_TASK_FILE, SOCK_FROM_TCP, SOCK_FROM_UDP,
};

use crate::{
    iter::{seq_of, IterMeta, IterTaskFileCtx},
    maps,
    task::{self, read_at, read_ptr},
};

/// Offsets of file, inode, socket, sock and packet_sock fields, filled in
/// by user space from BTF.
#[unsafe(no_mangle)]
static SOCKET_OFFSETS: SocketOffsets = SocketOffsets {
    ready: 0,
    packet_ready: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    inode_ino: 0,
    socket_type: 0,
    socket_sk: 0,
    socket_file: 0,
    sk_state: 0,
    sk_net: 0,
    net_ns_inum: 0,
    sk_uid: 0,
    sk_socket: 0,
    packet_ifindex: 0,
    packet_num: 0,
};

#[inline(always)]
fn socket_offsets() -> SocketOffsets {
    unsafe { core::ptr::read_volatile(&SOCKET_OFFSETS) }
}

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const AF_PACKET: u16 = 17;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const SOCK_STREAM: u16 = 1;
const SOCK_DGRAM: u16 = 2;
/// States in which `iter/tcp` hands over a bare `sock_common`
/// (`inet_timewait_sock`, `request_sock`): nothing past it may be read.
const TCP_TIME_WAIT: u16 = 6;
const TCP_NEW_SYN_RECV: u16 = 12;

/// `struct bpf_iter__tcp`.
#[repr(C)]
pub struct TcpCtx {
    meta: *const IterMeta,
    sk_common: *const u8,
    uid: u32,
}

/// `struct bpf_iter__udp`.
#[repr(C)]
pub struct UdpCtx {
    meta: *const IterMeta,
    udp_sk: *const u8,
    uid: u32,
    bucket: i32,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub extern "C" fn socket_file_iter(ctx: *const IterTaskFileCtx) -> i32 {
    unsafe {
        let ctx = &*ctx;
        let seq = seq_of(ctx.meta);
        // The final call of an iteration has no task and no file.
        if ctx.task.is_null() || ctx.file.is_null() {
            return 0;
        }
        let so = socket_offsets();
        let off = maps::offsets();
        if so.ready == 0 || off.ready == 0 {
            return 0;
        }
        let inode = read_ptr(ctx.file, so.file_inode);
        if read_at::<u16>(inode, so.inode_mode) & S_IFMT != S_IFSOCK {
            return 0;
        }
        let socket = read_ptr(ctx.file, so.file_private_data);
        let sk = read_ptr(socket, so.socket_sk);
        if sk.is_null() {
            return 0;
        }
        let family: u16 = read_at(sk, off.sk_family);
        if family != AF_INET && family != AF_INET6 && family != AF_PACKET {
            return 0;
        }
        let mut rec = SocketRecord {
            tgid: task::tgid(&off, ctx.task),
            fd: ctx.fd,
            inode: read_at(inode, so.inode_ino),
            uid: read_at(sk, so.sk_uid),
            sock_type: read_at::<i16>(socket, so.socket_type) as u16,
            protocol: read_at(sk, off.sk_protocol),
            source: SOCK_FROM_TASK_FILE,
            ..Default::default()
        };
        fill_common(&off, &so, sk, family, &mut rec);
        if family == AF_PACKET && so.packet_ready != 0 {
            rec.packet_known = 1;
            rec.packet_proto = u16::from_be(read_at(sk, so.packet_num));
            rec.packet_ifindex = read_at::<i32>(sk, so.packet_ifindex) as u32;
        }
        write(seq, &rec);
    }
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn socket_tcp_iter(ctx: *const TcpCtx) -> i32 {
    unsafe {
        let ctx = &*ctx;
        let seq = seq_of(ctx.meta);
        let so = socket_offsets();
        let off = maps::offsets();
        if ctx.sk_common.is_null() || so.ready == 0 || off.ready == 0 {
            return 0;
        }
        let sk = ctx.sk_common;
        let family: u16 = read_at(sk, off.sk_family);
        if family != AF_INET && family != AF_INET6 {
            return 0;
        }
        let mut rec = SocketRecord {
            uid: ctx.uid,
            sock_type: SOCK_STREAM,
            protocol: IPPROTO_TCP,
            source: SOCK_FROM_TCP,
            ..Default::default()
        };
        fill_common(&off, &so, sk, family, &mut rec);
        if rec.state != TCP_TIME_WAIT && rec.state != TCP_NEW_SYN_RECV {
            rec.inode = held_inode(&so, sk);
        }
        write(seq, &rec);
    }
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/udp")]
pub extern "C" fn socket_udp_iter(ctx: *const UdpCtx) -> i32 {
    unsafe {
        let ctx = &*ctx;
        let seq = seq_of(ctx.meta);
        let so = socket_offsets();
        let off = maps::offsets();
        if ctx.udp_sk.is_null() || so.ready == 0 || off.ready == 0 {
            return 0;
        }
        // `struct udp_sock` starts with `struct sock`.
        let sk = ctx.udp_sk;
        let family: u16 = read_at(sk, off.sk_family);
        if family != AF_INET && family != AF_INET6 {
            return 0;
        }
        let mut rec = SocketRecord {
            uid: ctx.uid,
            sock_type: SOCK_DGRAM,
            protocol: IPPROTO_UDP,
            source: SOCK_FROM_UDP,
            ..Default::default()
        };
        fill_common(&off, &so, sk, family, &mut rec);
        rec.inode = held_inode(&so, sk);
        write(seq, &rec);
    }
    0
}

/// What every socket has in `sock_common`: state, namespace, ports and
/// addresses.
#[inline(always)]
unsafe fn fill_common(
    off: &KernelOffsets,
    so: &SocketOffsets,
    sk: *const u8,
    family: u16,
    rec: &mut SocketRecord,
) {
    rec.family = family;
    rec.state = read_at::<u8>(sk, so.sk_state) as u16;
    // `skc_net` is a `possible_net_t`, a struct holding one `struct net *`.
    rec.netns = read_at(read_ptr(sk, so.sk_net), so.net_ns_inum);
    if family == AF_PACKET {
        return;
    }
    rec.lport = read_at(sk, off.sk_num);
    rec.rport = u16::from_be(read_at(sk, off.sk_dport));
    if family == AF_INET {
        let l: [u8; 4] = read_at(sk, off.sk_rcv_saddr);
        let r: [u8; 4] = read_at(sk, off.sk_daddr);
        rec.laddr[..4].copy_from_slice(&l);
        rec.raddr[..4].copy_from_slice(&r);
    } else {
        rec.laddr = read_at(sk, off.sk_v6_rcv_saddr);
        rec.raddr = read_at(sk, off.sk_v6_daddr);
    }
}

/// The inode of the file that holds a full socket, or 0 (orphan).
#[inline(always)]
unsafe fn held_inode(so: &SocketOffsets, sk: *const u8) -> u64 {
    let socket = read_ptr(sk, so.sk_socket);
    let file = read_ptr(socket, so.socket_file);
    read_at(read_ptr(file, so.file_inode), so.inode_ino)
}

#[inline(always)]
unsafe fn write(seq: *mut seq_file, rec: &SocketRecord) {
    bpf_seq_write(
        seq,
        rec as *const SocketRecord as *const _,
        core::mem::size_of::<SocketRecord>() as u32,
    );
}
