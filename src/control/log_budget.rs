//! The log's budget: what remote peers may make echod write, and the
//! warnings that a flood would repeat.
//!
//! The budget for peer lines is the one piece of the control plane that is
//! not a loop's: it is the process's, like the log it protects. A close line, an
//! over-long-line warning or a rejection is written only while fewer than
//! `PEER_LINES_PER_SECOND` have been written in the current second of the
//! wall clock (the second the log's timestamps show), whichever loop writes
//! it; the rest are counted, and the count is logged once the second is
//! over (`report_held_back_lines`). With `--workers`, one budget serves all
//! the workers, so the log's rate does not grow with their number. Lines
//! about echod itself (listening, shutdown, the stats line, the summary)
//! never go through it.
//!
//! `Throttled` is the other half: one warning (max-connections reached, an
//! accept failing) logged at most once per `WARN_INTERVAL`, with a count of
//! the ones in between.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, log, log_enabled};

use crate::summary::counted;

/// A repeated warning is logged at most once per this interval; the ones in
/// between are counted and reported with the next.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Log lines caused by remote peers (closes, over-long lines, rejections,
/// failed accepts) written per second of the wall clock, in all, whatever
/// the number of workers; the rest are counted, and the count is logged
/// once the second is over. 100 a second keeps a flood of connections to
/// about 10 KiB of log a second (some 860 MiB a day at worst), while a
/// daemon serving a few clients a second still logs every one of them.
/// Not applied where `debug` is on: whoever asked for a line per event
/// gets every line.
pub const PEER_LINES_PER_SECOND: u64 = 100;

/// The process's budget of peer lines for the current second of the wall
/// clock; see the module docs. Behind `PEER_LINES`.
#[derive(Debug)]
struct PeerLines {
    /// The second of the wall clock, counted from the Unix epoch, that
    /// `written` counts in.
    second: u64,
    /// Peer lines written in `second`; never more than
    /// `PEER_LINES_PER_SECOND`.
    written: u64,
    /// Peer lines counted instead of written since the last report; all in
    /// `second` or a second before it.
    held_back: u64,
    /// The most severe level among the `held_back` lines, and the level of
    /// their report: a count of held-back warnings still shows under `-q`.
    /// `Trace` while nothing is held back.
    held_back_level: Level,
}

/// The one budget of peer lines, shared by every event loop of the
/// process, because the log they fill is one.
static PEER_LINES: Mutex<PeerLines> = Mutex::new(PeerLines::new());

/// The target of the held-back report: `echod::server`, where the lines it
/// counts (closes, over-long lines, rejections) are written.
const PEER_LINES_TARGET: &str = "echod::server";

/// A warning that may fire thousands of times a second.
#[derive(Debug, Default)]
pub(super) struct Throttled {
    /// When it was last logged; `None` before the first occurrence.
    last_logged: Option<Instant>,
    /// Occurrences since then that were counted instead of logged.
    suppressed: u64,
}

/// Whether a line at `level` under `target`, caused by a remote peer (a
/// close, an over-long line, a rejection, a failed accept), may be written
/// now; the caller writes it only then.
///
/// `false`, at no cost, if `level` is off for `target`: the line would not
/// appear anyway. `true`, without counting, if `debug` is on for `target`:
/// whoever asked for a line per event gets every one. Otherwise, `true`
/// while this second of the wall clock has had fewer than
/// `PEER_LINES_PER_SECOND` peer lines; past that, the line is counted for
/// the held-back report and `false` is returned. A count from an earlier
/// second is reported first.
#[inline]
pub fn admit_peer_line(level: Level, target: &str) -> bool {
    // Below the log's level, as at `--log-level warn` for every close
    // line: one comparison, where the call would cost a dozen.
    if level > log::max_level() {
        return false;
    }
    admit_enabled_peer_line(level, target)
}

/// `admit_peer_line` at a level the log may show.
fn admit_enabled_peer_line(level: Level, target: &str) -> bool {
    if !log_enabled!(target: target, level) {
        return false;
    }
    if log_enabled!(target: target, Level::Debug) {
        return true;
    }
    let second = wall_second(SystemTime::now());
    // A poisoned lock means a loop panicked while holding it, between two
    // additions; the counts are still whole numbers, so go on with them.
    let mut lines = PEER_LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let report = lines.report(second, false);
    let admitted = lines.admit(second, level);
    // Logged once the lock is released: the logger may take a while, and
    // the other workers wait for the lock.
    drop(lines);
    log_held_back(report);
    admitted
}

/// Logs how many peer lines were held back, if any, once the second they
/// were counted in is over; with `force`, at once (a loop that stops
/// reports what it held back before its last line). Each loop calls this
/// from its once-a-second housekeeping, so that the count of a burst's
/// last second is logged even if no peer line follows.
pub fn report_held_back_lines(force: bool) {
    let second = wall_second(SystemTime::now());
    let report = PEER_LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .report(second, force);
    log_held_back(report);
}

fn log_held_back(report: Option<(u64, Level)>) {
    if let Some((held_back, level)) = report {
        log!(
            target: PEER_LINES_TARGET,
            level,
            "{} about connections held back in the last second \
             (at most {PEER_LINES_PER_SECOND} a second are logged)",
            counted(held_back, "line")
        );
    }
}

/// Whole seconds from the Unix epoch to `time`, as the log's timestamps
/// count them; 0 for a clock set before 1970.
fn wall_second(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl PeerLines {
    const fn new() -> PeerLines {
        PeerLines {
            second: 0,
            written: 0,
            held_back: 0,
            held_back_level: Level::Trace,
        }
    }

    /// Counts one peer line at `level` in `second`: `true` if it is within
    /// the second's budget and is to be written, `false` if it is held
    /// back. A clock stepped backwards starts a new budget, as any change
    /// of second does: at most one extra second's worth per step.
    fn admit(&mut self, second: u64, level: Level) -> bool {
        if second != self.second {
            self.second = second;
            self.written = 0;
        }
        if self.written < PEER_LINES_PER_SECOND {
            self.written += 1;
            return true;
        }
        self.held_back += 1;
        // `Level` orders the most severe first: `Error < Warn`.
        self.held_back_level = self.held_back_level.min(level);
        false
    }

    /// The count held back and its level, taken (so reported once), if
    /// any and the second it was counted in is no longer `second`; with
    /// `force`, whatever the second.
    fn report(&mut self, second: u64, force: bool) -> Option<(u64, Level)> {
        if self.held_back == 0 || (second == self.second && !force) {
            return None;
        }
        let level = std::mem::replace(&mut self.held_back_level, Level::Trace);
        Some((std::mem::take(&mut self.held_back), level))
    }
}

impl Throttled {
    /// Counts one occurrence. Returns `Some(n)` if it should be logged now,
    /// `n` being how many were held back since the last one logged.
    pub(super) fn hit(&mut self, now: Instant) -> Option<u64> {
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

    /// Returns the count held back, if any, once the interval has passed.
    pub(super) fn overdue(&mut self, now: Instant) -> Option<u64> {
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
    fn peer_lines_are_budgeted_per_second_and_the_rest_counted() {
        let mut lines = PeerLines::new();
        let second = 1_700_000_000;
        for i in 0..PEER_LINES_PER_SECOND {
            assert!(lines.admit(second, Level::Info), "line {i}");
        }
        assert!(!lines.admit(second, Level::Info));
        assert!(!lines.admit(second, Level::Warn));
        // Not reported while the second lasts, unless forced.
        assert_eq!(lines.report(second, false), None);
        // The next second reports the count, at its most severe level,
        // once, and has a budget of its own.
        assert_eq!(lines.report(second + 1, false), Some((2, Level::Warn)));
        assert_eq!(lines.report(second + 1, false), None);
        assert!(lines.admit(second + 1, Level::Info));
        // A clock stepped back starts a budget too.
        assert!(lines.admit(second - 5, Level::Info));
        assert_eq!(lines.written, 1);
        // Forced (at exit): reported within the second.
        for _ in 0..PEER_LINES_PER_SECOND {
            lines.admit(second - 5, Level::Info);
        }
        assert_eq!(lines.report(second - 5, false), None);
        assert_eq!(lines.report(second - 5, true), Some((1, Level::Info)));
    }

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
