//! A UDP beacon: `udp_beacon MODE HOST PORT COUNT INTERVAL_MS` sends COUNT
//! one-byte datagrams to HOST:PORT (a name is resolved the way a client
//! would: /etc/hosts first), INTERVAL_MS apart, then sleeps until killed.
//! MODE is `connect` (connect(2) then send), `sendto` or `sendmsg` (both to
//! an address on an unconnected socket). Errors from sending (no listener:
//! ICMP port unreachable) are ignored, as a beacon would.
use std::{
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    os::fd::AsRawFd,
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, host, port, count, interval] = &args[..] else {
        panic!("usage: udp_beacon connect|sendto|sendmsg HOST PORT COUNT INTERVAL_MS");
    };
    let port: u16 = port.parse().expect("port");
    let count: u32 = count.parse().expect("count");
    let interval = Duration::from_millis(interval.parse().expect("interval"));
    let to: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()
        .expect("resolve")
        .next()
        .expect("an address");
    let socket = UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }).expect("bind");
    if mode == "connect" {
        socket.connect(to).expect("connect");
    }
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(interval);
        }
        let _ = match mode.as_str() {
            "connect" => socket.send(b"x").map(|_| ()),
            "sendto" => socket.send_to(b"x", to).map(|_| ()),
            "sendmsg" => send_msg(&socket, to),
            other => panic!("unknown mode {other}"),
        };
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// sendmsg(2) with the destination in `msg_name`.
fn send_msg(socket: &UdpSocket, to: SocketAddr) -> std::io::Result<()> {
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: every pointer refers to a live local for the call's length.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = len as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: msg is fully initialised above.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
