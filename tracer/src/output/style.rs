//! What human output looks like beyond its words: colour for severity,
//! only on a terminal and never when NO_COLOR asks otherwise; wall-clock
//! timestamps for kernel events.
use std::{
    ffi::OsStr,
    time::{Duration, SystemTime},
};

use crate::model::Severity;

/// Whether to colour output going to a terminal (`is_terminal`), given
/// `NO_COLOR` and `TERM` (<https://no-color.org>: set and not empty means
/// no colour).
pub fn colour_wanted(is_terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// `colour_wanted` for this process's environment.
pub fn colour_for(is_terminal: bool) -> bool {
    colour_wanted(
        is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

/// The severity word, in its colour when `colour` is on.
pub fn severity(s: Severity, upper: bool, colour: bool) -> String {
    let word = if upper {
        s.to_string().to_uppercase()
    } else {
        s.to_string()
    };
    if !colour {
        return word;
    }
    let code = match s {
        Severity::Low => "36",        // cyan
        Severity::Medium => "33",     // yellow
        Severity::High => "31",       // red
        Severity::Critical => "1;31", // bold red
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// A kernel event's time (CLOCK_BOOTTIME ns) on the wall clock, as RFC 3339
/// UTC with milliseconds.
pub fn event_time(ktime_ns: u64) -> String {
    let age = Duration::from_nanos(crate::proc::boottime_ns().saturating_sub(ktime_ns));
    humantime::format_rfc3339_millis(SystemTime::now() - age).to_string()
}

/// Now, as `event_time` writes it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        let xterm = Some(OsStr::new("xterm-256color"));
        assert!(colour_wanted(true, None, xterm));
        assert!(colour_wanted(true, Some(OsStr::new("")), xterm));
        assert!(!colour_wanted(false, None, xterm), "a pipe got colour");
        assert!(!colour_wanted(true, set, xterm), "NO_COLOR ignored");
        assert!(!colour_wanted(true, None, Some(OsStr::new("dumb"))));
    }

    #[test]
    fn severities_are_coloured_only_when_asked() {
        assert_eq!(severity(Severity::High, true, false), "HIGH");
        assert_eq!(severity(Severity::Low, false, false), "low");
        assert_eq!(
            severity(Severity::Critical, false, true),
            "\x1b[1;31mcritical\x1b[0m"
        );
    }

    #[test]
    fn event_times_are_utc_rfc3339_and_in_the_past() {
        let boot_now = crate::proc::boottime_ns();
        let t = event_time(boot_now - 2_000_000_000);
        assert!(
            t.ends_with('Z') && t.len() == "2026-01-01T00:00:00.000Z".len(),
            "{t}"
        );
        assert!(t < now(), "{t} is not before {}", now());
    }
}
