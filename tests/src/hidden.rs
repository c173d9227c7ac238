//! Conditions `tracer hidden` must see through: a libc hider loaded from
//! /etc/ld.so.preload, a lying `ps`, and a storm of short-lived processes.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::Scratch;

/// A user-space rootkit in miniature: hooks libc's readdir/readdir64 and
/// skips the /proc entry named in `HIDE_FILE`.
pub(crate) const HIDER_C: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int hidden(const char *name) {
    static char pid[32];
    static int loaded;
    if (!loaded) {
        FILE *f = fopen(HIDE_FILE, "re");
        if (f) {
            if (!fgets(pid, sizeof pid, f)) pid[0] = 0;
            fclose(f);
        }
        pid[strcspn(pid, "\n")] = 0;
        loaded = 1;
    }
    return pid[0] && strcmp(name, pid) == 0;
}

struct dirent *readdir(DIR *d) {
    static struct dirent *(*real)(DIR *);
    if (!real) real = dlsym(RTLD_NEXT, "readdir");
    struct dirent *e;
    while ((e = real(d)) && hidden(e->d_name)) {}
    return e;
}

struct dirent64 *readdir64(DIR *d) {
    static struct dirent64 *(*real)(DIR *);
    if (!real) real = dlsym(RTLD_NEXT, "readdir64");
    struct dirent64 *e;
    while ((e = real(d)) && hidden(e->d_name)) {}
    return e;
}
"#;

/// A compiled hider library that hides `pid` from every dynamically linked
/// program that loads it.
pub struct Hider {
    pub library: PathBuf,
    /// A directory whose `ld.so.preload` names the library, to lay over /etc.
    pub etc_upper: PathBuf,
    scratch: Scratch,
}

impl Hider {
    pub fn build(pid: u32) -> Hider {
        Hider::compile("hider", HIDER_C, &pid.to_string())
    }

    /// Compiles `source` (C) into a preload library; `HIDE_FILE` names a
    /// file holding `hide`, the value the library hides.
    pub fn compile(name: &str, source: &str, hide: &str) -> Hider {
        let scratch = Scratch::new(name);
        let source = scratch.write(&format!("{name}.c"), source, 0o644);
        let hide_file = scratch.write("hidden-value", &format!("{hide}\n"), 0o644);
        let library = scratch.path().join(format!("lib{name}.so"));
        let out = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&library)
            .arg(format!("-DHIDE_FILE=\"{}\"", hide_file.display()))
            .arg(&source)
            .arg("-ldl")
            .output()
            .expect("run gcc (the hider library is compiled at test time)");
        assert!(
            out.status.success(),
            "gcc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let etc_upper = scratch.path().join("etc-upper");
        std::fs::create_dir_all(&etc_upper).unwrap();
        std::fs::write(
            etc_upper.join("ld.so.preload"),
            format!("{}\n", library.display()),
        )
        .unwrap();
        Hider {
            library,
            etc_upper,
            scratch,
        }
    }

    /// Shell lines that make the hider active in the (private) mount
    /// namespace they run in: an overlay on /etc adds ld.so.preload, or a
    /// bind mount replaces the host's own.
    pub fn activate_script(&self) -> String {
        let preload = self.etc_upper.join("ld.so.preload");
        if Path::new("/etc/ld.so.preload").exists() {
            format!("mount --bind '{}' /etc/ld.so.preload", preload.display())
        } else {
            let work = self.scratch.path().join("etc-work");
            std::fs::create_dir_all(&work).unwrap();
            format!(
                "mount -t overlay overlay -o 'lowerdir=/etc,upperdir={},workdir={}' /etc",
                self.etc_upper.display(),
                work.display()
            )
        }
    }
}

/// A `ps` that hides one PID, in a directory to put first in PATH.
pub struct FakePs {
    pub dir: Scratch,
    pub program: PathBuf,
}

impl FakePs {
    pub fn hiding(pid: u32) -> FakePs {
        let dir = Scratch::new("fake-ps");
        let script = format!("#!/bin/sh\n/bin/ps \"$@\" | awk -v hide={pid} '$1 != hide'\n");
        let program = dir.write("ps", &script, 0o755);
        FakePs { dir, program }
    }

    /// PATH with the fake ps first.
    pub fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// Short-lived processes started and reaped at a steady rate by background
/// threads, until stopped.
pub struct Churn {
    stop: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
    since: Instant,
    workers: Vec<JoinHandle<()>>,
}

impl Churn {
    /// Starts about `per_second` processes a second: `true` directly, and
    /// through `sh -c` (a fork that execs, as shells and cron do).
    pub fn start(per_second: u64) -> Churn {
        const WORKERS: u64 = 4;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs_f64(WORKERS as f64 / per_second as f64);
        let workers = (0..WORKERS)
            .map(|w| {
                let (stop, started) = (stop.clone(), started.clone());
                std::thread::spawn(move || {
                    let mut next = Instant::now();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let direct = (n + w).is_multiple_of(2);
                        let mut command = if direct {
                            Command::new("/bin/true")
                        } else {
                            let mut sh = Command::new("/bin/sh");
                            sh.args(["-c", "/bin/true; exit 0"]);
                            sh
                        };
                        // A shell counts for two processes (itself and true).
                        let weight = if direct { 1 } else { 2 };
                        if command.status().is_ok() {
                            started.fetch_add(weight, Ordering::Relaxed);
                        }
                        n += 1;
                        next += interval * weight as u32;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                })
            })
            .collect();
        Churn {
            stop,
            started,
            since: Instant::now(),
            workers,
        }
    }

    /// Stops the workers; returns processes started and the rate achieved.
    pub fn stop(mut self) -> (u64, f64) {
        self.halt();
        let n = self.started.load(Ordering::Relaxed);
        (n, n as f64 / self.since.elapsed().as_secs_f64())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Findings about the machine itself rather than the test: where programs
/// of processes the test did not start live (a sandbox running its agent
/// from a memfd, a colleague's build in /tmp). Those are facts about the
/// host, not rules firing on ordinary programs; any other finding on a
/// machine nobody planted anything on is a false positive.
pub fn is_environment_finding(finding: &Value) -> bool {
    const LOCATION_KINDS: &[&str] = &["exe-memfd", "exe-deleted", "exe-in-temp", "exe-hidden-dir"];
    let kind = finding["kind"].as_str().unwrap_or_default();
    LOCATION_KINDS.contains(&kind)
        && (!started_by_this_test(finding) || runs_from_this_checkout(finding))
}

/// The process runs a program built in this checkout (the test binary
/// itself, when the checkout lives under /tmp as CI clones may).
fn runs_from_this_checkout(finding: &Value) -> bool {
    let root = crate::workspace_root();
    let root = root.canonicalize().unwrap_or(root);
    finding["process"]["exe"]
        .as_str()
        .is_some_and(|exe| exe.starts_with(&*root.to_string_lossy()))
}

/// The finding is about this test process or one of its descendants.
pub fn started_by_this_test(finding: &Value) -> bool {
    let me = u64::from(std::process::id());
    let is_me = |p: &Value| p["pid"].as_u64() == Some(me);
    is_me(&finding["process"])
        || finding["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(is_me))
}
