//! The deadline queue: when to look at a connection's timeouts and linger.
//!
//! A connection has an entry while a timeout may run for it (and one more
//! while it lingers). The idle timeout runs always; the send and line
//! timeouts only while the connection holds leftovers (echoes owed, a line
//! begun), which it can start to do only in a call whose outcome the loop
//! applies (`Connections::apply`): a call that leaves something over
//! changes the storage held. So under the default timeouts an idle
//! connection has no entry and costs the queue nothing, and the hot path
//! (a line echoed whole, nothing kept) never touches it.
//!
//! An entry is a time at which a deadline *may* have come; `expire` works
//! out the true one only then, so timestamps updated on every read and write
//! cost nothing here, and the cost of a housekeeping tick follows the
//! deadlines that come up, not the connections open. An entry due at `D`,
//! pushed at `T`, also stands for every timer that starts after `T`: none
//! can be due before `T` plus the shortest timeout, which is at least `D`.

use super::deadline_queue::Entry;
use super::{Closed, Connections};
use crate::connection::{Connection, State, Stream};

/// How often `expire` must be called for `idle-timeout` and `LINGER_MS` to
/// be kept to within this much: the loop's housekeeping interval.
pub const EXPIRY_SWEEP_MS: u64 = 1_000;

/// Stale entries the deadline queue may hold beyond twice the open
/// connections before they are swept out (see `drop_stale_deadlines`).
const STALE_DEADLINES_SLACK: usize = 64;

impl<S: Stream> Connections<S> {
    /// Closes every connection whose deadline has passed (see
    /// `Connection::deadline`), with that deadline's reason.
    ///
    /// No connection is looked at before an entry of its own comes due, so
    /// the cost is a queue operation per entry due, not a sweep of every
    /// connection. An entry is a time at which a deadline *may* have come:
    /// when it comes up, the connection's true deadline is worked out; past,
    /// it closes; still to come, the entry goes back for the earlier of that
    /// deadline and the shortest timeout from now, the soonest any deadline
    /// that starts to run later could be due. Updating timestamps on every
    /// read and write thus costs the hot path nothing here.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Closed<S>> {
        let mut closed = Vec::new();
        while let Some((due_ms, key, id)) = self.deadlines.peek() {
            if due_ms > now_ms {
                break;
            }
            self.deadlines.pop();
            let Some(connection) = self.slab.get(key).filter(|c| c.id() == id) else {
                continue; // Stale: that connection has closed.
            };
            let lingering = matches!(connection.state(), State::Lingering(_));
            match connection.deadline(&self.timeouts) {
                Some((at_ms, reason)) if at_ms <= now_ms => {
                    closed.push(self.close(key, reason));
                }
                next => {
                    let recheck_ms = self.shortest_timeout_ms.map(|ms| now_ms.saturating_add(ms));
                    // A lingering connection's own entry (see `apply`)
                    // follows its linger deadline alone.
                    let again_ms = match (next, recheck_ms) {
                        (Some((at_ms, _)), Some(recheck_ms)) if !lingering => at_ms.min(recheck_ms),
                        (Some((at_ms, _)), _) => at_ms,
                        // Nothing runs and nothing can start before the
                        // connection next holds leftovers, which arms it
                        // again.
                        (None, _) if !self.needs_entry(connection) => {
                            self.slab[key].disarm();
                            continue;
                        }
                        (None, Some(recheck_ms)) => recheck_ms,
                        (None, None) => continue,
                    };
                    // In place of the entry popped: the queue does not grow.
                    self.deadlines.push((again_ms, key, id));
                }
            }
        }
        // Give back what a wave of closes left: their entries are stale.
        self.drop_stale_deadlines();
        closed
    }

    /// Whether a timeout may run for `connection`, so that it needs an
    /// entry: the idle timeout always does, the send and line timeouts
    /// while it holds leftovers.
    fn needs_entry(&self, connection: &Connection<S>) -> bool {
        let timeouts = &self.timeouts;
        connection.state() == State::AwaitingHeader
            || timeouts.idle_ms > 0
            || ((timeouts.send_ms > 0 || timeouts.line_ms > 0) && connection.holds_leftovers())
    }

    /// Gives connection `key` an entry in the queue if a timeout may run for
    /// it and it has none. Nothing can come due sooner than the shortest
    /// timeout from now.
    pub(super) fn arm(&mut self, key: usize, now_ms: u64) {
        let connection = &self.slab[key];
        // The header's wait runs whatever the timeouts: its entry is due
        // when it is (or sooner, under a shorter idle timeout).
        if connection.state() == State::AwaitingHeader {
            if let Some((due_ms, _)) = connection.deadline(&self.timeouts) {
                let id = connection.id();
                if self.slab[key].arm() {
                    self.push_deadline((due_ms, key, id));
                }
            }
            return;
        }
        let Some(shortest_ms) = self.shortest_timeout_ms else {
            return;
        };
        if !self.needs_entry(connection) {
            return;
        }
        let id = connection.id();
        if self.slab[key].arm() {
            self.push_deadline((now_ms.saturating_add(shortest_ms), key, id));
        }
    }

    /// Adds an entry for a connection, one it did not have: the queue
    /// grows only here, so that is where stale entries are swept first.
    pub(super) fn push_deadline(&mut self, entry: Entry) {
        self.drop_stale_deadlines();
        self.deadlines.push(entry);
    }

    /// A closed connection's entries stay in the deadline queue until they
    /// come up, so that a close costs no search. Once stale entries
    /// outnumber the live ones, drop them all in one pass (linear, and
    /// needed only after as many closes as there are entries, so constant
    /// per close), and give back the memory: clients that churn cannot make
    /// the queue grow past twice the open connections. Called before the
    /// queue grows (`push_deadline`) and after each sweep (`expire`).
    fn drop_stale_deadlines(&mut self) {
        let live = 2 * self.slab.len() + STALE_DEADLINES_SLACK;
        if self.deadlines.len() <= live {
            return;
        }
        let slab = &self.slab;
        self.deadlines.retain(live, |&(_, key, id)| {
            slab.get(key)
                .is_some_and(|connection| connection.id() == id)
        });
    }
}
