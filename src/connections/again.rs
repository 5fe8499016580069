//! The serve-again list: a connection that spent its read budget in a turn
//! may still have input queued, and the kernel will not announce it again
//! (readiness is edge-triggered), so the loop serves it once more in the
//! next turn, without an event: one turn, one budget, in the order the
//! budgets were spent. Connections waiting for memory join them once the
//! budget has room.

use super::{Closed, Connections, Registrar};
use crate::connection::{Connection, Readiness, Stream};

impl<S: Stream> Connections<S> {
    /// True if a connection spent its read budget and waits to be served
    /// again: the next poll must not wait.
    pub fn want_another_turn(&self) -> bool {
        !self.again.is_empty() || (!self.starving.is_empty() && self.room_to_feed())
    }

    /// The keys to be served again next turn, in the order they spent their
    /// read budget. The loop needs only `want_another_turn`; the simulation
    /// in `tests/sim` reads the list to check serve-again order and fairness.
    pub fn listed_again(&self) -> &[usize] {
        &self.again
    }

    /// Starts a turn: the connections listed to be served again so far are
    /// the ones `serve_again` serves in this turn, and any that spends its
    /// budget during the turn waits for the next one, so that a busy client
    /// gets one budget per turn, not two.
    pub fn begin_turn(&mut self) {
        debug_assert!(self.again_now.is_empty());
        std::mem::swap(&mut self.again, &mut self.again_now);
        // Free to be listed for the next turn again.
        for &key in &self.again_now {
            if let Some(connection) = self.slab.get_mut(key) {
                connection.unlist_again();
            }
        }
        // Room for a read again: the starving are served with the rest,
        // in the order they stopped; any the room runs out for stop again.
        if !self.starving.is_empty() && self.room_to_feed() {
            for key in self.starving.drain(..) {
                if let Some(connection) = self.slab.get_mut(key) {
                    connection.fed();
                    // One that also spent a read budget last turn is served
                    // once: one turn, one budget. A search, but only under
                    // memory pressure, over the few served again.
                    if !self.again_now.contains(&key) {
                        self.again_now.push(key);
                    }
                }
            }
        }
    }

    /// Serves the connections that spent their read budget last turn, in the
    /// order they spent it. One whose event this turn already spent a new
    /// budget is listed for the next turn instead: one turn, one budget.
    pub fn serve_again(&mut self, registrar: &impl Registrar<S>, now_ms: u64) -> Vec<Closed<S>> {
        let mut closed = Vec::new();
        // Nearly every turn: nobody spent a budget last turn.
        if self.again_now.is_empty() {
            return closed;
        }
        let mut again_now = std::mem::take(&mut self.again_now);
        for key in again_now.drain(..) {
            if self.slab.get(key).is_some_and(Connection::is_listed_again) {
                continue;
            }
            closed.extend(self.drive(registrar, key, Readiness::SERVE_AGAIN, now_ms));
        }
        // Handed back empty, so its allocation serves the next turn.
        self.again_now = again_now;
        closed
    }
}
