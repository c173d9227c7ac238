//! `--timings`: where a command's time goes (BTF, program loads, each
//! view), printed on stderr when it ends. Off, a span costs one relaxed
//! atomic load.
use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

static ON: AtomicBool = AtomicBool::new(false);
static SPANS: Mutex<Vec<(Cow<'static, str>, Duration, Duration)>> = Mutex::new(Vec::new());
static START: Mutex<Option<Instant>> = Mutex::new(None);

/// Turns recording on; the process's start is the origin.
pub fn enable() {
    *START.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    ON.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Records from now until dropped, as `name`.
pub struct Span {
    name: Cow<'static, str>,
    started: Option<Instant>,
}

pub fn span(name: &'static str) -> Span {
    Span {
        name: Cow::Borrowed(name),
        started: enabled().then(Instant::now),
    }
}

/// A span named `what` and `whose`, such as one program's verification;
/// the name is only formatted when recording is on.
pub fn span_of(what: &'static str, whose: &str) -> Span {
    let started = enabled().then(Instant::now);
    Span {
        name: match started {
            Some(_) => Cow::Owned(format!("{what}{whose}")),
            None => Cow::Borrowed(what),
        },
        started,
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(started) = self.started else {
            return;
        };
        let origin = START
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(started);
        SPANS.lock().unwrap_or_else(|e| e.into_inner()).push((
            std::mem::take(&mut self.name),
            started.saturating_duration_since(origin),
            started.elapsed(),
        ));
    }
}

/// Records a point in time (a span of no length), such as the moment a
/// command's first record is out.
pub fn mark(name: &'static str) {
    drop(span(name));
}

/// The recorded spans, in start order, one line each: start offset and
/// duration in ms (spans on other threads overlap the rest).
pub fn report() -> String {
    let mut spans = SPANS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    spans.sort_by_key(|s| s.1);
    let total = START
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|s| s.elapsed())
        .unwrap_or_default();
    let mut out = format!(
        "timings: {:.1} ms in all (start + duration, ms)\n",
        ms(total)
    );
    for (name, at, took) in spans {
        out.push_str(&format!("  {:>7.1} +{:>7.1}  {name}\n", ms(at), ms(took)));
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
