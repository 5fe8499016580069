//! Counters an operator reads: the shutdown and SIGUSR1 summary, and warnings
//! that are rate-limited so that a flood cannot flood the log too.

use std::fmt;
use std::time::{Duration, Instant};

/// A repeated warning is logged at most once per this interval; the ones in
/// between are counted and reported with the next.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What the server has done since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Most connections open at once.
    pub peak_connections: usize,
    /// Connections open when the summary was taken.
    pub open_connections: usize,
    /// Complete lines received (and echoed, unless their connection failed).
    pub lines: u64,
    /// Bytes written back to clients.
    pub bytes: u64,
    /// Connections closed at once because `max-connections` was reached.
    pub rejected: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections served (peak {} at once, {} open), {} lines and {} bytes echoed, {} rejected",
            self.accepted,
            self.peak_connections,
            self.open_connections,
            self.lines,
            self.bytes,
            self.rejected
        )
    }
}

/// A warning that may fire thousands of times a second.
#[derive(Debug, Default)]
pub struct Throttled {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// Counts one occurrence. Returns `Some(n)` if it should be logged now,
    /// `n` being how many were held back since the last one logged.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last_logged {
            Some(at) if now.saturating_duration_since(at) < WARN_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Returns the count held back, if any, once the interval has passed, so
    /// the last burst of a flood is reported too.
    pub fn overdue(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_logged
            .is_some_and(|at| now.saturating_duration_since(at) >= WARN_INTERVAL);
        if self.suppressed == 0 || !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_logs_first_then_counts() {
        let start = Instant::now();
        let mut warning = Throttled::default();
        assert_eq!(warning.hit(start), Some(0));
        assert_eq!(warning.hit(start + Duration::from_secs(1)), None);
        assert_eq!(warning.hit(start + Duration::from_secs(2)), None);
        assert_eq!(warning.overdue(start + Duration::from_secs(5)), None);
        assert_eq!(warning.overdue(start + WARN_INTERVAL), Some(2));
        assert_eq!(warning.overdue(start + 3 * WARN_INTERVAL), None);
        assert_eq!(warning.hit(start + 3 * WARN_INTERVAL), Some(0));
    }
}
