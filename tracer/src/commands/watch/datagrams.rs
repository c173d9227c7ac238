//! Outbound UDP in watch: which datagram records are shown. The kernel
//! lets at most one record a second through per process and destination,
//! with the count since the last; here each destination is shown (and
//! alerted, when it matches an indicator) once per process per minute, and
//! counted in between, so a beacon every 200 ms is one alert and a
//! counter, not 300 lines.
use std::{collections::HashMap, net::IpAddr};

use schemars::JsonSchema;
use serde::Serialize;

/// How long one destination stays quiet after it was shown.
pub const WINDOW_NS: u64 = 60 * 1_000_000_000;
/// Destinations remembered at most (a scanner sends to millions).
const KEPT: usize = 65_536;

/// One process and one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub pid: u32,
    pub addr: IpAddr,
    pub port: u16,
}

#[derive(Clone, Debug, Default)]
struct Tally {
    window_start_ns: u64,
    first_ns: u64,
    last_ns: u64,
    /// Datagrams in the current window, and since first seen.
    window: u64,
    total: u64,
    alerts: u64,
    comm: String,
}

/// What to do with one datagram record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Show it (and alert on a match): a new destination, or a new minute.
    /// `earlier` is the count of the minute before, when there was one.
    Show { earlier: Option<u64> },
    /// Counted into the minute already shown.
    Counted,
}

/// Every destination's counts, bounded.
#[derive(Default)]
pub struct DatagramLedger {
    tallies: HashMap<Destination, Tally>,
    /// Destinations forgotten to stay within `KEPT`.
    pub forgotten: u64,
}

/// One destination that raised an alert, for the summary.
#[derive(Serialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct BeaconOut {
    pub pid: u32,
    pub comm: String,
    pub daddr: String,
    pub dport: u16,
    /// Datagrams (and UDP connects) to it since first seen.
    pub datagrams: u64,
    pub first_ktime_ns: u64,
    pub last_ktime_ns: u64,
    pub alerts: u64,
}

impl DatagramLedger {
    /// Counts `count` datagrams to `dest` at `now_ns` and says whether
    /// this record is shown.
    pub fn note(&mut self, dest: Destination, comm: &str, now_ns: u64, count: u32) -> Verdict {
        if self.tallies.len() >= KEPT && !self.tallies.contains_key(&dest) {
            self.make_room(now_ns);
        }
        let count = u64::from(count.max(1));
        let tally = self.tallies.entry(dest).or_default();
        tally.total += count;
        tally.last_ns = now_ns;
        if tally.first_ns == 0 {
            tally.first_ns = now_ns;
            tally.window_start_ns = now_ns;
            tally.window = count;
            tally.comm = comm.to_string();
            return Verdict::Show { earlier: None };
        }
        if now_ns.saturating_sub(tally.window_start_ns) >= WINDOW_NS {
            let earlier = tally.window;
            tally.window_start_ns = now_ns;
            tally.window = count;
            return Verdict::Show {
                earlier: Some(earlier),
            };
        }
        tally.window += count;
        Verdict::Counted
    }

    /// The shown record of `dest` raised an alert.
    pub fn alerted(&mut self, dest: Destination) {
        if let Some(t) = self.tallies.get_mut(&dest) {
            t.alerts += 1;
        }
    }

    /// Datagrams to `dest` since first seen.
    pub fn total(&self, dest: &Destination) -> u64 {
        self.tallies.get(dest).map_or(0, |t| t.total)
    }

    /// Destinations that raised alerts, busiest first; `pending` adds
    /// what the kernel counted and has not sent yet.
    pub fn beacons(&self, pending: impl Fn(&Destination) -> u32) -> Vec<BeaconOut> {
        let mut out: Vec<BeaconOut> = self
            .tallies
            .iter()
            .filter(|(_, t)| t.alerts > 0)
            .map(|(d, t)| BeaconOut {
                pid: d.pid,
                comm: t.comm.clone(),
                daddr: d.addr.to_string(),
                dport: d.port,
                datagrams: t.total + u64::from(pending(d)),
                first_ktime_ns: t.first_ns,
                last_ktime_ns: t.last_ns,
                alerts: t.alerts,
            })
            .collect();
        out.sort_by(|a, b| b.datagrams.cmp(&a.datagrams).then(a.pid.cmp(&b.pid)));
        out
    }

    /// Forgets quiet destinations that never alerted, then, if still full,
    /// every one that never alerted (those that did stay for the summary).
    fn make_room(&mut self, now_ns: u64) {
        let before = self.tallies.len();
        self.tallies
            .retain(|_, t| t.alerts > 0 || now_ns.saturating_sub(t.last_ns) < WINDOW_NS);
        if self.tallies.len() >= KEPT {
            self.tallies.retain(|_, t| t.alerts > 0);
        }
        if self.tallies.len() >= KEPT {
            self.tallies.clear();
        }
        self.forgotten += (before - self.tallies.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn dest(pid: u32) -> Destination {
        Destination {
            pid,
            addr: "127.0.0.1".parse().unwrap(),
            port: 53,
        }
    }

    #[test]
    fn a_beacon_is_shown_once_a_minute_and_counted_in_between() {
        let mut l = DatagramLedger::default();
        let d = dest(7);
        assert_eq!(l.note(d, "x", S, 1), Verdict::Show { earlier: None });
        l.alerted(d);
        // The kernel's one record a second, each with the 5 datagrams of a 200 ms beacon.
        for second in 2..61 {
            assert_eq!(l.note(d, "x", second * S, 5), Verdict::Counted);
        }
        assert_eq!(l.total(&d), 1 + 59 * 5);
        assert_eq!(
            l.note(d, "x", 61 * S, 5),
            Verdict::Show {
                earlier: Some(1 + 59 * 5)
            }
        );
        let b = l.beacons(|_| 0);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].datagrams, b[0].alerts), (1 + 60 * 5, 1));
    }

    #[test]
    fn each_process_and_destination_is_its_own() {
        let mut l = DatagramLedger::default();
        assert!(matches!(l.note(dest(1), "a", S, 1), Verdict::Show { .. }));
        assert!(matches!(l.note(dest(2), "b", S, 1), Verdict::Show { .. }));
        let other_port = Destination {
            port: 54,
            ..dest(1)
        };
        assert!(matches!(
            l.note(other_port, "a", S, 1),
            Verdict::Show { .. }
        ));
        assert!(l.beacons(|_| 0).is_empty(), "nothing alerted");
    }

    #[test]
    fn the_ledger_stays_bounded_and_keeps_the_alerted() {
        let mut l = DatagramLedger::default();
        l.note(dest(0), "miner", S, 1);
        l.alerted(dest(0));
        for pid in 1..(KEPT as u32 + 10) {
            l.note(dest(pid), "scan", 2 * S, 1);
        }
        assert!(l.tallies.len() <= KEPT);
        assert!(l.forgotten > 0);
        assert_eq!(l.beacons(|_| 0)[0].pid, 0);
    }
}
