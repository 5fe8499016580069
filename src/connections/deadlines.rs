//! The deadline queue: when to look at a connection's timeouts and linger.
//!
//! Every open connection has an entry while any timeout is on (and one more
//! while it lingers). An entry is a time at which a deadline *may* have
//! come; `expire` works out the true one only then, so timestamps updated on
//! every read and write cost nothing here, and the cost of a housekeeping
//! tick follows the deadlines that come up, not the connections open.

use std::cmp::Reverse;

use super::{Closed, Connections};
use crate::connection::{State, Stream};

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
    /// the cost is a heap operation per entry due, not a sweep of every
    /// connection. An entry is a time at which a deadline *may* have come:
    /// when it comes up, the connection's true deadline is worked out; past,
    /// it closes; still to come, the entry goes back for the earlier of that
    /// deadline and the shortest timeout from now, the soonest any deadline
    /// that starts to run later could be due. Updating timestamps on every
    /// read and write thus costs the hot path nothing here.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Closed<S>> {
        let mut closed = Vec::new();
        while let Some(&Reverse((due_ms, key, id))) = self.deadlines.peek() {
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
                    let recheck_ms = self
                        .timeouts
                        .shortest_ms()
                        .map(|ms| now_ms.saturating_add(ms));
                    // A lingering connection's own entry (see `apply`)
                    // follows its linger deadline alone.
                    let again_ms = match (next, recheck_ms) {
                        (Some((at_ms, _)), Some(recheck_ms)) if !lingering => at_ms.min(recheck_ms),
                        (Some((at_ms, _)), _) => at_ms,
                        (None, Some(recheck_ms)) => recheck_ms,
                        (None, None) => continue,
                    };
                    self.deadlines.push(Reverse((again_ms, key, id)));
                }
            }
        }
        closed
    }

    /// A closed connection's entries stay in the deadline queue until they
    /// come up, so that a close costs no search. Once stale entries
    /// outnumber the live ones, drop them all in one pass (linear, and
    /// needed only after as many closes as there are entries, so constant
    /// per close), and give back the memory: clients that churn cannot make
    /// the queue grow past twice the open connections.
    pub(super) fn drop_stale_deadlines(&mut self) {
        let live = 2 * self.slab.len() + STALE_DEADLINES_SLACK;
        if self.deadlines.len() <= live {
            return;
        }
        let slab = &self.slab;
        self.deadlines.retain(|&Reverse((_, key, id))| {
            slab.get(key)
                .is_some_and(|connection| connection.id() == id)
        });
        if self.deadlines.capacity() > 2 * live {
            self.deadlines.shrink_to(live);
        }
    }
}
