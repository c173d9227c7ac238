//! A process with many threads of random names and whatever command line
//! it was given: `many_threads N ARGS...` starts N threads, each named
//! `w` and 8 random letters, prints `ready` and sleeps until killed. For
//! the bounded-output tests: a listing of it must stay readable.
use std::io::Write;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: many_threads N [ARGS...]");
    let mut seed: u64 = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let (started, ready) = std::sync::mpsc::channel();
    for _ in 0..n {
        let name: String = std::iter::once('w')
            .chain((0..8).map(|_| {
                // xorshift: random enough for names, no dependency.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (b'a' + (seed % 26) as u8) as char
            }))
            .collect();
        let started = started.clone();
        std::thread::Builder::new()
            .name(name)
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = started.send(());
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            })
            .expect("spawn a thread");
    }
    for _ in 0..n {
        ready.recv().expect("a thread started");
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
