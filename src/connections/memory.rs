//! The memory budget: how much buffer storage the connections hold between
//! them, who waits for room, and who is evicted when there is none.
//!
//! Every buffer's capacity is counted after each call that may change it
//! (`account`). A connection that would grow past the budget stops reading
//! (`Step::Starve`) and is listed as starving; `begin_turn` serves the
//! starving again once there is room for a read.
//!
//! **The bound.** At every moment, with `h(c) = min(capacity of c,
//! READ_CHUNK_BYTES)` summed over the open connections,
//!
//! ```text
//!   memory_used <= memory_limit + Σ h(c)   (<= memory_limit + 16 KiB per holder)
//! ```
//!
//! A call begins with the room the budget leaves (`memory_room`), and each
//! read of the call spends from it what it grew the buffer by
//! (`Connection::read_and_echo`). Storage changes only in these ways, and
//! each keeps the inequality:
//! - a read behind leftovers grows the buffer by at most the room left, so
//!   if `memory_used` was within the limit it stays within it, and with no
//!   room it does not grow;
//! - a read with nothing left over keeps what it left over, at most one
//!   read, in storage of at most `READ_CHUNK_BYTES`: the left side grows by
//!   what `h` of that connection grows by, or less;
//! - shrinking or freeing a buffer, or closing a connection, takes `c`
//!   bytes from the left and at most `c` from the right.
//!
//! `tests/sim` checks it after every call, with the budget small enough to
//! be full most of the time.

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
    pub fn memory_room(&self) -> usize {
        self.memory_limit.saturating_sub(self.memory_used)
    }

    /// True when the budget has room enough to serve the starving again:
    /// a read's worth, or an eighth of the budget where the budget is
    /// smaller than a few reads (what `relieve_memory` frees), so that a
    /// budget under 16 KiB cannot leave a connection starving for ever.
    pub fn room_to_feed(&self) -> bool {
        self.memory_room() >= READ_CHUNK_BYTES.min(self.memory_limit / 8).max(1)
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
        if self.starving.is_empty() || self.room_to_feed() || now_ms < self.next_relief_ms {
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

#[cfg(test)]
mod tests {
    //! The budget's bound at its edge, through `drive`: one connection, a
    //! client that takes none of its echoes, and several reads in one call.

    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;

    use mio::Interest;

    use super::*;
    use crate::connection::{Limits, Readiness, TURN_READ_BUDGET_BYTES, Timeouts};
    use crate::connections::{Listener, Registrar};
    use crate::framing::Framing;

    /// A client that has sent `input` (all of it queued at once) and reads
    /// nothing back.
    #[derive(Debug)]
    struct Stalled {
        input: VecDeque<u8>,
    }

    impl Read for Stalled {
        fn read(&mut self, room: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = room.len().min(self.input.len());
            for (slot, byte) in room.iter_mut().zip(self.input.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for Stalled {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Stalled {
        fn shutdown_write(&self) -> io::Result<()> {
            Ok(())
        }
    }

    struct NoPoll;

    impl Registrar<Stalled> for NoPoll {
        fn register(&self, _: &mut Stalled, _: usize, _: Interest) -> io::Result<()> {
            Ok(())
        }

        fn reregister(&self, _: &mut Stalled, _: usize, _: Interest) -> io::Result<()> {
            Ok(())
        }

        fn deregister(&self, _: &mut Stalled) -> io::Result<()> {
            Ok(())
        }
    }

    struct OneClient(RefCell<Option<Stalled>>);

    impl Listener<Stalled> for OneClient {
        fn accept(&self) -> io::Result<(Stalled, SocketAddr)> {
            let stream = self.0.borrow_mut().take();
            let peer = "127.0.0.1:1".parse().expect("an address");
            stream
                .map(|stream| (stream, peer))
                .ok_or_else(|| io::ErrorKind::WouldBlock.into())
        }
    }

    /// Connections with a budget of `memory_limit` bytes and one client
    /// that has sent a read budget's worth of short lines.
    fn one_stalled_client(memory_limit: usize) -> Connections<Stalled> {
        // Limits far above the budget, so that only the budget stops reading.
        let limits = Limits::new(Framing::Crlf, 1 << 20, 1 << 20);
        let mut connections =
            Connections::new(limits, Timeouts::default(), memory_limit, usize::MAX);
        let input = b"0123456789abcd\r\n".repeat(TURN_READ_BUDGET_BYTES / 16);
        let listener = OneClient(RefCell::new(Some(Stalled {
            input: input.into(),
        })));
        connections.accept_pending(&listener, &NoPoll, 1, 0, |_| {});
        assert_eq!(connections.len(), 1);
        connections
    }

    /// The call's first read lands in the read buffer and its echoes are
    /// kept (16 KiB); every later read is behind them, in the connection's
    /// own buffer, which may grow only by what is left of the room. The
    /// budget is met exactly, not passed: the room is spent as the reads
    /// use it, not granted again to each.
    #[test]
    fn several_reads_in_one_call_spend_the_room_once() {
        let limit = READ_CHUNK_BYTES + 20 * 1024;
        let mut connections = one_stalled_client(limit);
        let closed = connections.drive(&NoPoll, 0, Readiness::SERVE_AGAIN, 0);
        assert!(closed.is_none());
        // 16 KiB kept, grown to 32 KiB, then the last 4 KiB of room.
        assert_eq!(connections.memory_used, limit);
        assert_eq!(connections.slab[0].buffer_capacity(), limit);
        assert_eq!(connections.starving, [0]);
        // No room: another call adds nothing.
        connections.begin_turn();
        assert!(
            connections
                .drive(&NoPoll, 0, Readiness::SERVE_AGAIN, 1)
                .is_none()
        );
        assert_eq!(connections.memory_used, limit);
    }

    /// The most the budget can be passed by: the one read of a connection
    /// that had nothing left over, kept whole (docs/RELIABILITY.md). With no
    /// room at all, that read is kept and nothing more is read, in that call
    /// or the next.
    #[test]
    fn with_no_room_only_the_read_into_the_shared_buffer_is_kept() {
        let mut connections = one_stalled_client(0);
        let closed = connections.drive(&NoPoll, 0, Readiness::SERVE_AGAIN, 0);
        assert!(closed.is_none());
        assert_eq!(connections.memory_used, READ_CHUNK_BYTES);
        assert_eq!(connections.starving, [0]);
        connections.begin_turn();
        assert!(
            connections
                .drive(&NoPoll, 0, Readiness::SERVE_AGAIN, 1)
                .is_none()
        );
        assert_eq!(connections.memory_used, READ_CHUNK_BYTES);
    }
}
