//! Counters an operator reads: the shutdown and SIGUSR1 summary, the
//! periodic `--stats-interval` line, and the counts on a connection's close
//! line (`ConnectionCounts`).
//!
//! Everything here is plain arithmetic on counters; the loop decides when
//! to take a `Summary`, and `control` when to log it. Every count a log
//! line shows goes through `counted`, so that it reads "1 line" and
//! "2 lines", never "1 lines".

use std::fmt;
use std::ops::AddAssign;
use std::time::Duration;

use crate::framing::Framing;

mod closes;

pub use closes::Closes;

/// What the server has done since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Most connections open at once.
    pub peak_connections: usize,
    /// Connections open when the summary was taken.
    pub open_connections: usize,
    /// Complete lines received: each is echoed unless its connection failed
    /// or was cut off first, so this may exceed the lines `bytes` holds.
    pub lines: u64,
    /// Bytes written back to clients.
    pub bytes: u64,
    /// Bytes read from clients, counted once per read.
    pub bytes_received: u64,
    /// Connections closed at once because `max-connections` was reached,
    /// their address had `max-connections-per-ip` open, or the access
    /// rules denied it.
    pub rejected: u64,
    /// Of `rejected`, those refused by `max-connections-per-ip`.
    pub rejected_per_ip: u64,
    /// Of `rejected`, the connections the access rules (`--allow`,
    /// `--deny`) refused: the rejections with reason `denied`.
    pub denied: u64,
    /// Of `rejected`, under `--proxy-protocol`, the connections from an
    /// address that is not a `--proxy-from` source.
    pub rejected_untrusted: u64,
    /// Connections paused (their client is not reading its echoes) when the
    /// summary was taken.
    pub paused_connections: usize,
    /// Buffer storage the connections held when the summary was taken, in
    /// bytes, as the memory budget counts it.
    pub buffer_bytes: usize,
    /// The memory budget over that storage, in bytes; `None`: no budget.
    pub buffer_budget_bytes: Option<usize>,
    /// Connections closed so far, by reason.
    pub closes: Closes,
}

/// What one `--stats-interval` line reports: the counters now, and the
/// rates since the previous line.
#[derive(Debug, Clone, Copy)]
pub struct Interval<'a> {
    /// The summary taken for the previous line (or at start).
    pub before: &'a Summary,
    /// The summary taken now.
    pub now: &'a Summary,
    /// Time between the two.
    pub elapsed: Duration,
}

/// What one connection did, as its close line reports it:
/// `3 lines received, 120 bytes echoed`.
///
/// Lines are counted as they arrive and bytes as they are written, so the
/// two can differ: a connection cut off by the shutdown timeout has
/// received lines whose echoes it never delivered, and says how many bytes
/// were owed; one that sent bytes but never ended a line says so too,
/// rather than a bare "0 lines".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// How input was divided: with `Framing::Raw` there are no lines to
    /// count, and only bytes are shown.
    pub framing: Framing,
    /// Complete lines received.
    pub lines_received: u64,
    /// Bytes written back to the client.
    pub bytes_echoed: u64,
    /// Echoes still owed when the connection closed: never delivered.
    pub bytes_owed: u64,
    /// Whether the client sent any byte at all.
    pub received_any: bool,
}

/// `n` and `noun`, with an `s` unless `n` is 1: `1 line`, `0 lines`,
/// `2 lines`. Every noun echod counts in its log makes its plural that way.
pub fn counted(n: impl Into<Count>, noun: &'static str) -> Counted {
    Counted {
        n: n.into().0,
        noun,
    }
}

/// A count for `counted`: any unsigned integer the counters use.
#[derive(Debug, Clone, Copy)]
pub struct Count(u64);

/// A number and what it counts, displayed with the right plural; made by
/// `counted`.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    n: u64,
    noun: &'static str,
}

impl Summary {
    /// Connections a stop cut off rather than finished: those still open
    /// when the loop returned (a second shutdown request), and those closed
    /// when `shutdown-timeout` expired. Zero after a graceful stop in which
    /// every connection was done.
    pub fn cut_off(&self) -> u64 {
        self.open_connections as u64 + self.closes.shutdown_timeout
    }

    /// The totals that carry across an upgrade, by name, so that a program
    /// with a counter the other lacks starts that one at zero. What the
    /// open connections add, and what describes the moment (open, paused,
    /// buffer bytes), travels with the connections or is measured anew.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut copy = *self;
        let mut counters: Vec<(String, u64)> = copy
            .counter_fields()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), *value))
            .collect();
        counters.push(("peak_connections".into(), self.peak_connections as u64));
        counters
    }

    /// Takes the counters `counters` names (as `counters` wrote them); a
    /// name this program does not know is skipped.
    pub fn restore_counters(&mut self, counters: &[(String, u64)]) {
        let mut peak = self.peak_connections as u64;
        for (name, value) in counters {
            if name == "peak_connections" {
                peak = *value;
            }
            if let Some((_, field)) = self
                .counter_fields()
                .into_iter()
                .find(|(known, _)| known == name)
            {
                *field = *value;
            }
        }
        self.peak_connections = usize::try_from(peak).unwrap_or(usize::MAX);
    }

    /// Every counter that carries across an upgrade, with its name.
    fn counter_fields(&mut self) -> [(&'static str, &mut u64); 24] {
        let c = &mut self.closes;
        [
            ("accepted", &mut self.accepted),
            ("lines", &mut self.lines),
            ("bytes_sent", &mut self.bytes),
            ("bytes_received", &mut self.bytes_received),
            ("rejected", &mut self.rejected),
            ("rejected_per_ip", &mut self.rejected_per_ip),
            ("denied", &mut self.denied),
            ("closed_peer_finished", &mut c.peer_finished),
            ("closed_line_too_long", &mut c.line_too_long),
            ("closed_idle_timeout", &mut c.idle_timeout),
            ("closed_send_timeout", &mut c.send_timeout),
            ("closed_line_timeout", &mut c.line_timeout),
            ("closed_evicted", &mut c.evicted),
            ("closed_out_of_memory", &mut c.out_of_memory),
            ("closed_displaced", &mut c.displaced),
            ("closed_server_shutdown", &mut c.server_shutdown),
            ("closed_shutdown_timeout", &mut c.shutdown_timeout),
            ("closed_error", &mut c.error),
            ("closed_probes", &mut c.probes),
            ("rejected_untrusted", &mut self.rejected_untrusted),
            (
                "closed_proxy_header_malformed",
                &mut c.proxy_header_malformed,
            ),
            ("closed_proxy_header_timeout", &mut c.proxy_header_timeout),
            ("closed_denied", &mut c.denied),
            (
                "closed_max_connections_per_ip",
                &mut c.max_connections_per_ip,
            ),
        ]
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} served (peak {} at once, {} open), {} received, {} echoed, {}; {}",
            counted(self.accepted, "connection"),
            self.peak_connections,
            self.open_connections,
            counted(self.lines, "line"),
            counted(self.bytes, "byte"),
            Rejected(self),
            self.closes,
        )
    }
}

impl fmt::Display for ConnectionCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.framing != Framing::Raw {
            write!(f, "{} received", counted(self.lines_received, "line"))?;
            if self.lines_received == 0 && self.received_any {
                // Without this, a client that never ended its line (`nc`
                // without `-C`) reads as one that sent nothing.
                f.write_str(" (bytes arrived, but no complete line)")?;
            }
            f.write_str(", ")?;
        }
        write!(f, "{} echoed", counted(self.bytes_echoed, "byte"))?;
        if self.bytes_owed > 0 {
            write!(
                f,
                ", {} owed not delivered",
                counted(self.bytes_owed, "byte")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.n == 1 { "" } else { "s" };
        write!(f, "{} {}{plural}", self.n, self.noun)
    }
}

impl From<u64> for Count {
    fn from(n: u64) -> Count {
        Count(n)
    }
}

impl From<usize> for Count {
    fn from(n: usize) -> Count {
        // usize is at most 64 bits on every platform Rust supports.
        Count(n as u64)
    }
}

/// Adds up the summaries of several event loops (`--workers`). Every field
/// is a plain sum (the budget, a sum of the shares); for `peak_connections`
/// that is an upper bound, since the loops need not have peaked at the
/// same moment.
impl AddAssign for Summary {
    fn add_assign(&mut self, other: Summary) {
        self.accepted += other.accepted;
        self.peak_connections += other.peak_connections;
        self.open_connections += other.open_connections;
        self.lines += other.lines;
        self.bytes += other.bytes;
        self.bytes_received += other.bytes_received;
        self.rejected += other.rejected;
        self.rejected_per_ip += other.rejected_per_ip;
        self.denied += other.denied;
        self.rejected_untrusted += other.rejected_untrusted;
        self.paused_connections += other.paused_connections;
        self.buffer_bytes += other.buffer_bytes;
        // Each worker holds a share of one budget, or none has one.
        self.buffer_budget_bytes = match (self.buffer_budget_bytes, other.buffer_budget_bytes) {
            (Some(mine), Some(theirs)) => Some(mine.saturating_add(theirs)),
            (mine, theirs) => mine.or(theirs),
        };
        self.closes += other.closes;
    }
}

impl fmt::Display for Interval<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (before, now) = (self.before, self.now);
        // Never zero: the server takes summaries at least a tick apart, but
        // a division by zero must not be one edit away.
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let lines_per_sec = now.lines.saturating_sub(before.lines) as f64 / secs;
        let bytes_per_sec = now.bytes.saturating_sub(before.bytes) as f64 / secs;
        write!(
            f,
            "{} open (peak {}), {} accepted, {}; {lines_per_sec:.1} lines/s, {} over {secs:.1} s; \
             {} paused; {}",
            now.open_connections,
            now.peak_connections,
            now.accepted,
            Rejected(now),
            PerSecond(bytes_per_sec),
            now.paused_connections,
            now.closes,
        )
    }
}

/// `5 rejected`, or `5 rejected (2 denied)` once the access rules have
/// refused any: the rejections, with those of reason `denied` apart, and
/// those from no `--proxy-from` source (`(1 untrusted)`) likewise.
struct Rejected<'a>(&'a Summary);

impl fmt::Display for Rejected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rejected", self.0.rejected)?;
        if self.0.denied > 0 {
            write!(f, " ({} denied)", self.0.denied)?;
        }
        if self.0.rejected_untrusted > 0 {
            write!(f, " ({} untrusted)", self.0.rejected_untrusted)?;
        }
        Ok(())
    }
}

/// A byte rate in the largest binary unit that keeps it at or above 1.
struct PerSecond(f64);

impl fmt::Display for PerSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut value = self.0;
        for unit in ["B/s", "KiB/s", "MiB/s"] {
            if value < 1024.0 {
                return write!(f, "{value:.1} {unit}");
            }
            value /= 1024.0;
        }
        write!(f, "{value:.1} GiB/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_reports_rates_since_the_previous_line() {
        let before = Summary {
            accepted: 10,
            lines: 1_000,
            bytes: 100_000,
            ..Summary::default()
        };
        let now = Summary {
            accepted: 14,
            peak_connections: 5,
            open_connections: 3,
            lines: 6_000,
            bytes: 100_000 + 20 * 1024 * 1024,
            rejected: 2,
            denied: 0,
            paused_connections: 1,
            closes: Closes {
                peer_finished: 7,
                probes: 4,
                ..Closes::default()
            },
            ..Summary::default()
        };
        let line = Interval {
            before: &before,
            now: &now,
            elapsed: Duration::from_secs(10),
        }
        .to_string();
        assert_eq!(
            line,
            "3 open (peak 5), 14 accepted, 2 rejected; 500.0 lines/s, 2.0 MiB/s over 10.0 s; \
             1 paused; closed: 7 peer finished, 0 line too long, 0 idle timeout, 0 send timeout, 0 line timeout, \
             0 evicted for memory, 0 out of memory, 0 displaced, 0 server shutdown, \
             0 shutdown timeout, 0 error; 4 probes"
        );
    }

    #[test]
    fn counts_take_a_plural_unless_one() {
        let cases = [
            (0, "line", "0 lines"),
            (1, "line", "1 line"),
            (2, "line", "2 lines"),
            (1, "listening socket", "1 listening socket"),
            (16_384, "byte", "16384 bytes"),
        ];
        for (n, noun, expected) in cases {
            assert_eq!(counted(n as u64, noun).to_string(), expected);
        }
        assert_eq!(counted(1_usize, "probe").to_string(), "1 probe");
    }

    #[test]
    fn summary_says_what_was_received_echoed_and_closed() {
        let summary = Summary {
            accepted: 1,
            peak_connections: 1,
            lines: 1,
            bytes: 1,
            closes: Closes {
                peer_finished: 1,
                probes: 1,
                ..Closes::default()
            },
            ..Summary::default()
        };
        assert_eq!(
            summary.to_string(),
            "1 connection served (peak 1 at once, 0 open), 1 line received, 1 byte echoed, \
             0 rejected; closed: 1 peer finished, 0 line too long, 0 idle timeout, \
             0 send timeout, 0 line timeout, 0 evicted for memory, 0 out of memory, \
             0 displaced, 0 server shutdown, 0 shutdown timeout, 0 error; \
             1 probe"
        );
    }

    #[test]
    fn close_counts_say_what_happened() {
        let counts = |framing, lines_received, bytes_echoed, bytes_owed, received_any| {
            ConnectionCounts {
                framing,
                lines_received,
                bytes_echoed,
                bytes_owed,
                received_any,
            }
            .to_string()
        };
        use Framing::{Crlf, Lf, Raw};
        let cases = [
            (
                counts(Crlf, 1, 15, 0, true),
                "1 line received, 15 bytes echoed",
            ),
            (
                counts(Lf, 2, 16, 0, true),
                "2 lines received, 16 bytes echoed",
            ),
            // `nc` without -C: bytes came, no line ended, nothing echoed.
            (
                counts(Crlf, 0, 0, 0, true),
                "0 lines received (bytes arrived, but no complete line), 0 bytes echoed",
            ),
            // Cut off by the shutdown timeout: the lines were received,
            // their echoes were not all delivered.
            (
                counts(Crlf, 20_000, 65_536, 1, true),
                "20000 lines received, 65536 bytes echoed, 1 byte owed not delivered",
            ),
            // Raw framing has no lines to count.
            (counts(Raw, 0, 1, 0, true), "1 byte echoed"),
            (
                counts(Raw, 0, 4, 6, true),
                "4 bytes echoed, 6 bytes owed not delivered",
            ),
        ];
        for (got, expected) in cases {
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn rates_pick_a_readable_unit() {
        let cases = [
            (0.0, "0.0 B/s"),
            (1023.0, "1023.0 B/s"),
            (1536.0, "1.5 KiB/s"),
            (3.0 * 1024.0 * 1024.0 * 1024.0, "3.0 GiB/s"),
        ];
        for (rate, expected) in cases {
            assert_eq!(PerSecond(rate).to_string(), expected);
        }
    }

    #[test]
    fn summaries_add_up() {
        let one = Summary {
            accepted: 2,
            lines: 5,
            closes: Closes {
                probes: 1,
                ..Closes::default()
            },
            ..Summary::default()
        };
        let mut total = one;
        total += one;
        assert_eq!(
            (total.accepted, total.lines, total.closes.probes),
            (4, 10, 2)
        );
    }
}
