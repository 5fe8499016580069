//! The memory budget: how much buffer storage the connections hold between
//! them, who waits for room, and who is evicted when there is none.
//!
//! Every buffer's capacity is counted after each call that may change it
//! (`account`). A connection that would grow past the budget stops reading
//! (`Step::Starve`) and is listed as starving; `begin_turn` serves the
//! starving again once there is room for a read.

use super::{Closed, Connections};
use crate::buffer::READ_CHUNK_BYTES;
use crate::connection::{CloseReason, Connection, Stream};

/// A connection whose client has made no progress for this long while it
/// holds buffer storage may be evicted when the memory budget is spent
/// (`relieve_memory`). Two seconds is many round trips: a client that
/// reads its echoes, however slowly, takes some within it.
pub const EVICT_STALLED_MS: u64 = 2_000;

/// Least time between two rounds of evictions.
const RELIEF_INTERVAL_MS: u64 = 100;

/// Buffer memory freed since the peak after which the allocator is asked to
/// return it to the system (see `allocator::give_back`).
const TRIM_AFTER_BYTES: usize = 8 << 20;

impl<S: Stream> Connections<S> {
    /// What the budget still allows.
    pub(super) fn memory_room(&self) -> usize {
        self.memory_limit.saturating_sub(self.memory_used)
    }

    /// Counts connection `key`'s storage now that a call changed it from
    /// `held` bytes.
    #[inline]
    pub(super) fn account(&mut self, key: usize, held: usize) {
        let now = self.slab.get(key).map_or(0, Connection::buffer_capacity);
        if now != held {
            self.memory_used = self.memory_used + now - held;
            self.memory_peak = self.memory_peak.max(self.memory_used);
        }
    }

    /// When connections are starving and the budget has no room, evicts
    /// those that hold the most while their clients make no progress
    /// (nothing of their echoes taken, or their unfinished line not moving,
    /// for `EVICT_STALLED_MS`), largest first, until an eighth of the budget
    /// is free: redis's client eviction. Clients that read their echoes keep
    /// being served, and a connection with nothing left over needs no
    /// budget at all. At most once every `RELIEF_INTERVAL_MS`.
    pub fn relieve_memory(&mut self, now_ms: u64) -> Vec<Closed<S>> {
        if self.starving.is_empty()
            || self.memory_room() >= READ_CHUNK_BYTES
            || now_ms < self.next_relief_ms
        {
            return Vec::new();
        }
        self.next_relief_ms = now_ms + RELIEF_INTERVAL_MS;
        let mut holders: Vec<(usize, usize)> = self
            .slab
            .iter()
            .filter(|(_, connection)| {
                connection
                    .stalled_since_ms()
                    .is_some_and(|since_ms| now_ms.saturating_sub(since_ms) >= EVICT_STALLED_MS)
            })
            .map(|(key, connection)| (connection.buffer_capacity(), key))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let enough = self.memory_limit - self.memory_limit / 8;
        let mut closed = Vec::new();
        for (_, key) in holders {
            if self.memory_used <= enough {
                break;
            }
            closed.push(self.close(key, CloseReason::Evicted));
        }
        closed
    }

    /// True once the connections hold `TRIM_AFTER_BYTES` less than they
    /// did at their peak since the last true: time to ask the allocator to
    /// give the difference back to the system.
    pub fn take_trim_hint(&mut self) -> bool {
        if self.memory_peak - self.memory_used < TRIM_AFTER_BYTES {
            return false;
        }
        self.memory_peak = self.memory_used;
        true
    }
}
