//! A connection handed from one program to the next across an upgrade:
//! what it must carry to go on exactly where it was (its id, state,
//! counters, the ages of its timers, and its leftovers byte for byte), and
//! the checks that what arrives is a state it could have been in. The form
//! it travels in is `src/handover.rs`'s.

use std::sync::atomic::Ordering;

use super::{Connection, Limits, NEXT_CONNECTION_ID, Stream};
use crate::buffer::{Buffer, READ_CHUNK_BYTES};
use crate::handover::{ConnectionRecord, HandoverError};
use crate::state::State;

impl<S: Stream> Connection<S> {
    /// What this connection hands over, with `fd`, its socket's descriptor.
    /// Its timestamps become ages at `now_ms`, since the next program's
    /// clock is its own.
    pub fn hand_over(&self, fd: i32, now_ms: u64) -> ConnectionRecord {
        let age = |since_ms: u64| now_ms.saturating_sub(since_ms);
        ConnectionRecord {
            fd,
            id: self.id,
            // The form knows the wait for a header as a flag on an open
            // connection: nothing of the header has been consumed, so the
            // next program peeks at it afresh.
            state: match self.state {
                State::AwaitingHeader => State::Open,
                state => state,
            },
            peer: self.peer,
            lines: self.lines,
            received_any: self.received_any,
            awaiting_header: self.state == State::AwaitingHeader,
            bytes_echoed: self.bytes_echoed,
            active_age_ms: age(self.last_active_ms),
            owing_age_ms: age(self.owing_since_ms),
            line_age_ms: age(self.line_since_ms),
            pending: self.buffer.pending().to_vec(),
            unfinished: self.buffer.unfinished().to_vec(),
        }
    }

    /// The connection `record` describes, carried on over `stream` at
    /// `now_ms`. Ids drawn after it are greater than its own, so that ids
    /// stay unique. An age greater than `now_ms` counts from the clock's
    /// start: the loop that takes over starts its clock far enough back.
    ///
    /// # Errors
    ///
    /// The record describes a state no connection under `limits` can be
    /// in (leftovers past the limits, an unfinished line kept by a
    /// connection that stopped reading, a wait for a PROXY header when
    /// `reads_headers` is false), or its leftovers cannot be allocated.
    pub fn take_over(
        stream: S,
        record: &ConnectionRecord,
        limits: &Limits,
        reads_headers: bool,
        now_ms: u64,
    ) -> Result<Connection<S>, HandoverError> {
        // A read may take the owed output past the pause mark by one read;
        // a line at the limit closes.
        if record.pending.len() > limits.max_pending_bytes + READ_CHUNK_BYTES {
            return Err(HandoverError::Invalid("pending output past the limits"));
        }
        // Only a loop that reads PROXY headers has connections waiting for
        // one.
        if record.awaiting_header && !reads_headers {
            return Err(HandoverError::Invalid(
                "waiting for a PROXY header (--proxy-protocol is off)",
            ));
        }
        if record.awaiting_header
            && (record.state != State::Open
                || !record.pending.is_empty()
                || !record.unfinished.is_empty())
        {
            return Err(HandoverError::Invalid(
                "leftovers while waiting for a PROXY header",
            ));
        }
        if record.unfinished.len() >= limits.max_line_bytes {
            return Err(HandoverError::Invalid("unfinished line past the limit"));
        }
        let reading = matches!(record.state, State::Open | State::Paused);
        if !reading && !record.unfinished.is_empty() {
            return Err(HandoverError::Invalid(
                "unfinished line after reading stopped",
            ));
        }
        if matches!(record.state, State::Lingering(_)) && !record.pending.is_empty() {
            return Err(HandoverError::Invalid("echoes owed after the FIN"));
        }
        let mut buffer = Buffer::default();
        buffer
            .keep(&record.pending, &record.unfinished)
            .map_err(|_| HandoverError::Invalid("leftovers (out of memory)"))?;
        NEXT_CONNECTION_ID.fetch_max(record.id.saturating_add(1), Ordering::Relaxed);
        let since = |age_ms: u64| now_ms.saturating_sub(age_ms);
        Ok(Connection {
            id: record.id,
            stream,
            buffer,
            state: if record.awaiting_header {
                State::AwaitingHeader
            } else {
                record.state
            },
            peer: record.peer,
            lines: record.lines,
            received_any: record.received_any,
            listed_again: false,
            starving: false,
            armed: false,
            bytes_echoed: record.bytes_echoed,
            last_active_ms: since(record.active_age_ms),
            owing_since_ms: since(record.owing_age_ms),
            line_since_ms: since(record.line_age_ms),
        })
    }
}

/// Makes the ids this process draws from now on greater than `next - 1`,
/// as the program that handed over would have drawn them.
pub fn continue_ids_from(next: u64) {
    NEXT_CONNECTION_ID.fetch_max(next, Ordering::Relaxed);
}

/// The id the next accepted connection will get.
pub fn next_connection_id() -> u64 {
    NEXT_CONNECTION_ID.load(Ordering::Relaxed)
}
