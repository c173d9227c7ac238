//! A running `tracer watch --json` for tests: its lines on a channel, each
//! checked against the schemas, stopped with SIGINT on drop.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::tracer_bin;

/// A running `tracer watch`, its stdout lines arriving on a channel.
/// Dropping it stops watch (SIGINT) unless it already exited.
pub struct Watch {
    pub child: std::process::Child,
    pub lines: mpsc::Receiver<String>,
}

/// How long a test waits for any one line from watch.
pub const LINE_WAIT: Duration = Duration::from_secs(20);

impl Watch {
    /// Starts `tracer watch --json` and returns once its programs are attached.
    pub fn start(extra: &[&str]) -> Watch {
        let watch = Watch::spawn(&[&["--json"], extra].concat());
        wait_for(&watch, "the start line", |v| v["type"] == "start");
        watch
    }

    /// Starts `tracer watch --json ARGS` with `env`, and returns once its
    /// start record is out, with that record.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> (Watch, Value) {
        let watch = Watch::spawn_with(&[&["--json"], args].concat(), env);
        let start = wait_for(&watch, "the start record", |v| v["type"] == "start");
        (watch, start)
    }

    /// Starts `tracer watch` with these arguments.
    pub fn spawn(args: &[&str]) -> Watch {
        Watch::spawn_with(args, &[])
    }

    /// Starts `tracer watch ARGS` with `env`; its stderr is kept for
    /// [`Watch::stop_collecting`].
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Watch {
        Watch::run(watch_command(args).envs(env.iter().copied()))
    }

    /// Runs `command`, which must end up as tracer watch itself (a wrapper
    /// execs it), with its lines on the channel.
    pub fn run(command: &mut Command) -> Watch {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracer watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    /// The next line, failing the test if none comes in time.
    pub fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(LINE_WAIT)
            .unwrap_or_else(|_| panic!("watch never showed {what}"))
    }

    /// Stops watch with SIGINT and returns its exit status.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap()
    }

    /// The first JSON record that satisfies `pred`.
    pub fn wait_for(&self, what: &str, pred: impl FnMut(&Value) -> bool) -> Value {
        wait_for(self, what, pred)
    }

    /// Stops watch with SIGINT; returns its exit code and what it printed
    /// on stderr.
    pub fn stop_collecting(mut self) -> (i32, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        let code = self.child.wait().map_or(-1, |s| s.code().unwrap_or(-1));
        (code, stderr)
    }

    /// Stops watch with SIGINT; returns its status and summary line.
    pub fn stop(self) -> (std::process::ExitStatus, Value) {
        self.stop_with(libc::SIGINT)
    }

    pub fn stop_with(mut self, signal: i32) -> (std::process::ExitStatus, Value) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let summary = wait_for(&self, "the summary line", |v| v["type"] == "summary");
        let status = self.child.wait().unwrap();
        (status, summary)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Only a child not yet reaped: its PID cannot have been recycled.
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

/// `tracer watch` with these arguments, its stdout piped, stderr dropped.
pub fn spawn_watch(args: &[&str]) -> std::process::Child {
    watch_command(args)
        .stderr(Stdio::null())
        .spawn()
        .expect("start tracer watch")
}

/// `tracer watch ARGS` with its stdout piped.
fn watch_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(tracer_bin());
    cmd.arg("watch").args(args).stdout(Stdio::piped());
    cmd
}

/// Waits for the first JSON event that satisfies `pred` (which sees every
/// record before it, checked against its schema).
pub fn wait_for(watch: &Watch, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LINE_WAIT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = watch.lines.recv_timeout(left) else {
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

/// The hook a `start` record names for `event` (`""` when none).
pub fn hook_of(start: &Value, event: &str) -> String {
    start["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["event"] == event)
        .and_then(|h| h["hook"].as_str())
        .unwrap_or_default()
        .to_string()
}
