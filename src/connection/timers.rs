//! When a connection must give up waiting: its deadline under the idle,
//! send and line timeouts and the linger time, computed from three
//! timestamps the I/O steps keep, never from a timer of its own. The loop's
//! deadline queue (`connections/deadlines.rs`) asks for it after each call
//! that may have moved it; the memory budget asks how long a connection has
//! stalled.

use super::{Connection, Stream};
use crate::state::{CloseReason, State};

/// How long a connection that we finished on our side (its line was too
/// long, or the server is stopping) waits, after sending its FIN, for the
/// peer to close in turn. Two seconds is many round trips even across a
/// continent, and short enough that a shutdown is not held up by a peer
/// that never closes.
pub const LINGER_MS: u64 = 2_000;

/// How long a connection accepted under `--proxy-protocol` may take to
/// send its whole PROXY header. A balancer sends it with its first segment,
/// so five seconds is generous for any network and bounds what a
/// connection that sends nothing (or half a header) can hold: HAProxy's
/// own `timeout client` default for this wait is the same order.
pub const PROXY_HEADER_TIMEOUT_MS: u64 = 5_000;

/// How long a connection may wait for each thing, in milliseconds; 0 for
/// forever. Taken from `Config` once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// No bytes moving either way (`--idle-timeout`).
    pub idle_ms: u64,
    /// Echoes owed, and not one byte of them taken (`--send-timeout`).
    pub send_ms: u64,
    /// A line begun and not finished (`--line-timeout`).
    pub line_ms: u64,
}

impl Timeouts {
    /// The shortest timeout that is on: no deadline can become due sooner
    /// than this after it starts to run. `None` if all are off.
    pub fn shortest_ms(&self) -> Option<u64> {
        [self.idle_ms, self.send_ms, self.line_ms]
            .into_iter()
            .filter(|&ms| ms > 0)
            .min()
    }
}

impl<S: Stream> Connection<S> {
    /// The connection's earliest deadline, and the reason it closes with
    /// when that passes: `LINGER_MS` after our FIN for a lingering
    /// connection (whatever the timeouts); otherwise the soonest of the
    /// idle, send and line timeouts that are on and apply. `None` if nothing
    /// it waits for has a deadline.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<(u64, CloseReason)> {
        if self.state == State::AwaitingHeader {
            // Peeks move no bytes, so `last_active_ms` is still the accept.
            // A shorter idle timeout is kept to as for any connection.
            let header_ms = self.last_active_ms + PROXY_HEADER_TIMEOUT_MS;
            let idle_ms = self.last_active_ms.saturating_add(timeouts.idle_ms);
            return Some(if timeouts.idle_ms > 0 && idle_ms < header_ms {
                (idle_ms, CloseReason::IdleTimeout)
            } else {
                (header_ms, CloseReason::ProxyHeaderTimeout)
            });
        }
        if let State::Lingering(finish) = self.state {
            // The peer has had our FIN for a while; its close reason is the
            // one that made us stop, not the wait.
            return Some((self.last_active_ms + LINGER_MS, finish.into()));
        }
        let on = |timeout_ms: u64, applies: bool, since_ms: u64| {
            (timeout_ms > 0 && applies).then_some(since_ms.saturating_add(timeout_ms))
        };
        let candidates = [
            (
                on(
                    timeouts.send_ms,
                    self.buffer.pending_len() > 0,
                    self.owing_since_ms,
                ),
                CloseReason::SendTimeout,
            ),
            (
                on(
                    timeouts.line_ms,
                    !self.buffer.unfinished().is_empty(),
                    self.line_since_ms,
                ),
                CloseReason::LineTimeout,
            ),
            (
                on(timeouts.idle_ms, true, self.last_active_ms),
                CloseReason::IdleTimeout,
            ),
        ];
        candidates
            .into_iter()
            .filter_map(|(due, reason)| Some((due?, reason)))
            .min_by_key(|(due, _)| *due)
    }

    /// Since when the connection has been quiet, if it is idle between
    /// lines: open, owing nothing, no line begun; `None` otherwise.
    pub fn quiet_since_ms(&self) -> Option<u64> {
        (self.state == State::Open && self.buffer.is_empty()).then_some(self.last_active_ms)
    }

    /// Since when the connection has held buffer storage without the peer
    /// making progress: the oldest of its owed echoes not taken, or the
    /// start of its unfinished line. `None` if it holds nothing.
    pub fn stalled_since_ms(&self) -> Option<u64> {
        if self.buffer.pending_len() > 0 {
            Some(self.owing_since_ms)
        } else if !self.buffer.unfinished().is_empty() {
            Some(self.line_since_ms)
        } else {
            None
        }
    }
}
