//! Connections for `tracer hidden` to see through: a loopback connection
//! held by the test, tools and a preload library that hide it, and a storm
//! of short-lived connections.
use std::{
    collections::VecDeque,
    io::Read,
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{hidden::Hider, Scratch};

/// A loopback listener and one established connection to it, all held by
/// this test process until dropped.
pub struct Connection {
    pub listener: TcpListener,
    pub client: TcpStream,
    pub server: TcpStream,
}

impl Connection {
    pub fn open() -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        Connection {
            listener,
            client,
            server,
        }
    }

    /// The listener's port: every line of the three sockets carries it.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// The client socket's inode, from its fd link.
    pub fn client_inode(&self) -> u64 {
        socket_inode(&self.client)
    }
}

/// The inode of one of this process's sockets.
pub fn socket_inode(socket: &impl AsRawFd) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).unwrap();
    let link = link.to_string_lossy();
    link.strip_prefix("socket:[")
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("not a socket link: {link}"))
}

/// An `ss` or `netstat` that runs the real one and drops every line
/// mentioning one port, in a directory to put first in PATH.
pub struct FakeTool {
    pub dir: Scratch,
    pub program: PathBuf,
}

impl FakeTool {
    pub fn hiding_port(name: &str, port: u16) -> FakeTool {
        let dir = Scratch::new(&format!("fake-{name}"));
        let script =
            format!("#!/bin/sh\n/usr/bin/{name} \"$@\" | grep -v -E ':{port}( |$)'\nexit 0\n");
        let program = dir.write(name, &script, 0o755);
        FakeTool { dir, program }
    }

    /// PATH with the fake first.
    pub fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// A user-space connection hider in miniature: hooks libc's fopen and
/// fopen64 and, for `/proc/net/tcp` and `tcp6`, returns the file without
/// the lines whose local or remote port is the hex port in `HIDE_FILE`.
const NET_HIDER_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char needle[16];

static int is_target(const char *path) {
    return path && (strcmp(path, "/proc/net/tcp") == 0 || strcmp(path, "/proc/net/tcp6") == 0);
}

static FILE *filtered(FILE *real) {
    if (!needle[0]) {
        /* The port is the file's last line (a PID may come before it). */
        FILE *f = fopen(HIDE_FILE, "re");
        char port[32] = {0}, line[32];
        if (f) {
            while (fgets(line, sizeof line, f)) strcpy(port, line);
            fclose(f);
        }
        port[strcspn(port, "\n")] = 0;
        snprintf(needle, sizeof needle, ":%s ", port);
    }
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap), line[512];
    while (fgets(line, sizeof line, real)) {
        if (strstr(line, needle)) continue;
        size_t n = strlen(line);
        if (len + n >= cap) out = realloc(out, cap *= 2);
        memcpy(out + len, line, n);
        len += n;
    }
    fclose(real);
    return fmemopen(out, len ? len : 1, "r");
}

FILE *fopen(const char *path, const char *mode) {
    static FILE *(*real)(const char *, const char *);
    if (!real) real = dlsym(RTLD_NEXT, "fopen");
    FILE *f = real(path, mode);
    return f && is_target(path) ? filtered(f) : f;
}

FILE *fopen64(const char *path, const char *mode) {
    static FILE *(*real)(const char *, const char *);
    if (!real) real = dlsym(RTLD_NEXT, "fopen64");
    FILE *f = real(path, mode);
    return f && is_target(path) ? filtered(f) : f;
}
"#;

/// A preload library that hides connections on `port` from libc readers
/// of `/proc/net/tcp{,6}` (activate it with `Hider::activate_script`).
pub fn net_hider(port: u16) -> Hider {
    Hider::compile("net-hider", NET_HIDER_C, &format!("{port:04X}"))
}

/// One preload library that hides both a process (from readdir of /proc)
/// and the connections on `port` (from libc readers of /proc/net/tcp).
pub fn process_and_connection_hider(pid: u32, port: u16) -> Hider {
    let source = format!("{}\n{NET_HIDER_C}", crate::hidden::HIDER_C);
    Hider::compile("both-hider", &source, &format!("{pid}\n{port:04X}"))
}

/// A process that holds a connection to `port` (bash's /dev/tcp, then
/// exec'd into `sleep`, which keeps the descriptor as fd 3).
pub fn connection_holder(port: u16) -> crate::Planted {
    crate::Planted::spawn(std::process::Command::new("bash").args([
        "-c",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && exec sleep 600"),
    ]))
}

/// Loopback connections opened and closed at a steady rate by a
/// background thread (each open for a quarter of a second), until stopped.
pub struct ConnectionChurn {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicU64>,
    since: Instant,
    worker: Option<JoinHandle<()>>,
    pub port: u16,
}

impl ConnectionChurn {
    pub fn start(per_second: u64) -> ConnectionChurn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs_f64(1.0 / per_second as f64);
        let worker = {
            let (stop, made) = (stop.clone(), made.clone());
            std::thread::spawn(move || {
                // Each connection stays open for HOLD, so at any moment
                // dozens are open and some are closing while tracer looks.
                const HOLD: Duration = Duration::from_millis(250);
                let mut open: VecDeque<(Instant, TcpStream, TcpStream)> = VecDeque::new();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(client) = TcpStream::connect(("127.0.0.1", port)) {
                        if let Ok((server, _)) = listener.accept() {
                            open.push_back((Instant::now(), client, server));
                            made.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    while open.front().is_some_and(|(at, _, _)| at.elapsed() >= HOLD) {
                        // Client first (it goes to TIME-WAIT), then the server.
                        let (_, client, mut server) = open.pop_front().unwrap();
                        drop(client);
                        let _ = server.read(&mut [0u8; 1]);
                    }
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        };
        ConnectionChurn {
            stop,
            made,
            since: Instant::now(),
            worker: Some(worker),
            port,
        }
    }

    /// Stops; returns connections made and the rate achieved.
    pub fn stop(mut self) -> (u64, f64) {
        self.halt();
        let n = self.made.load(Ordering::Relaxed);
        (n, n as f64 / self.since.elapsed().as_secs_f64())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for ConnectionChurn {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Whether a finding is about a connection.
pub fn is_connection_finding(f: &Value) -> bool {
    f["connection"].is_object()
}

/// The connection finding about the socket with `inode`, if any.
pub fn connection_finding(findings: &[Value], inode: u64) -> Option<Value> {
    findings
        .iter()
        .find(|f| f["connection"]["inode"].as_u64() == Some(inode))
        .cloned()
}
