//! When the `--stats-interval` line is due, and the rates it reports: the
//! line keeps its beat (each one interval after the last was due, so a late
//! turn does not make the lines drift) and measures its rates from the
//! summary the previous line reported.

use std::time::{Duration, Instant};

use crate::summary::{Interval, Summary};

/// When the next `--stats-interval` line is due, and what the last one said.
#[derive(Debug)]
pub(super) struct Cadence {
    /// Time between lines; never zero (`--stats-interval 0` means no lines).
    interval: Duration,
    /// When the next line is due: one interval after the last was due, so
    /// that a late turn does not make the lines drift.
    pub(super) next: Instant,
    /// The summary the previous line reported (or zeros, at start), and
    /// when it was taken: rates are measured from there.
    before: (Summary, Instant),
}

impl Cadence {
    pub(super) fn new(interval: Duration, start: Instant) -> Cadence {
        Cadence {
            interval,
            next: start + interval,
            before: (Summary::default(), start),
        }
    }

    /// The line for `summary`, taken at `now`, and the next due time.
    pub(super) fn line(&mut self, now: Instant, summary: Summary) -> String {
        // From the time due, not from now, so that a late turn does not make
        // the lines drift; after a stall longer than the interval, from now.
        let due = self.next + self.interval;
        self.next = if due > now { due } else { now + self.interval };
        let (before, taken) = &self.before;
        let line = Interval {
            before,
            now: &summary,
            elapsed: now.saturating_duration_since(*taken),
        }
        .to_string();
        self.before = (summary, now);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_keep_their_cadence_unless_a_turn_stalls() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut cadence = Cadence::new(second, start);
        assert_eq!(cadence.next, start + second);
        // Late by a fraction: the next line is still due on the beat.
        cadence.line(start + second + second / 4, Summary::default());
        assert_eq!(cadence.next, start + 2 * second);
        // Late by more than an interval: counted from now instead.
        let stalled = start + 5 * second;
        cadence.line(stalled, Summary::default());
        assert_eq!(cadence.next, stalled + second);
        assert_eq!(cadence.before.1, stalled);
    }
}
