//! A miner that hides behind a zombie: its main thread exits (the raw
//! `exit` system call ends one thread, not the process) while a worker thread named
//! `xmrig` keeps running. `ps` then shows the process `<defunct>`, and
//! `/proc/PID/exe` and `cmdline` are empty; only the live thread tells.
//! Prints `ready` once the leader is about to exit.
use std::io::Write;

fn main() {
    std::thread::Builder::new()
        .name("xmrig".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        })
        .expect("spawn the worker");
    println!("ready");
    let _ = std::io::stdout().flush();
    // SAFETY: SYS_exit ends the calling (main) thread only, without
    // unwinding (pthread_exit would unwind through Rust's main and abort);
    // the worker keeps the process alive, which is the point.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("SYS_exit returned");
}
