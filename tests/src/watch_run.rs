//! A running `tracer watch` for tests that need watch beside something
//! else (a DNS exchange, a kill-tree): its lines arrive on a channel (JSON
//! records checked against their schema); its stderr is kept; it is
//! stopped (SIGINT) on drop.
use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::tracer_bin;

/// How long a test waits for one record.
pub const RECORD_WAIT: Duration = Duration::from_secs(20);

pub struct WatchRun {
    child: Child,
    records: mpsc::Receiver<String>,
}

impl WatchRun {
    /// Starts `tracer watch --json ARGS` with `env`, and returns once its
    /// start record is out (its programs and sockets are in place).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> (WatchRun, Value) {
        let mut w = WatchRun::spawn(&[&["--json"], args].concat(), env);
        let start = w.wait_for("the start record", |v| v["type"] == "start");
        (w, start)
    }

    /// Starts `tracer watch ARGS` with `env` (human lines unless `--json`).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> WatchRun {
        let mut child = Command::new(tracer_bin())
            .arg("watch")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracer watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, records) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        WatchRun { child, records }
    }

    /// The next line, failing the test after [`RECORD_WAIT`].
    pub fn next_line(&mut self, what: &str) -> String {
        self.records
            .recv_timeout(RECORD_WAIT)
            .unwrap_or_else(|_| panic!("watch never showed {what}"))
    }

    /// The first record that satisfies `pred`, failing the test after
    /// [`RECORD_WAIT`].
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + RECORD_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.records.recv_timeout(left) else {
                break;
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("watch printed a line that is not JSON: {line}"));
            crate::schema::check(&v);
            if pred(&v) {
                return v;
            }
        }
        panic!("watch never showed {what}");
    }

    /// Stops watch (SIGINT) and returns its exit code and stderr.
    pub fn stop(mut self) -> (i32, String) {
        // SAFETY: kill(2) of the child we started, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let code = self.child.wait().map_or(-1, |s| s.code().unwrap_or(-1));
        (code, stderr)
    }
}

impl Drop for WatchRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of our child, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}
