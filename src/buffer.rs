//! Where received bytes live: one read buffer for the whole server, and a
//! small store of leftovers per connection.
//!
//! Most reads need no per-connection storage at all. In ping-pong, and in
//! most bulk transfers, a read ends at a line's end and the socket takes the
//! whole echo at once, so the bytes go from the kernel into the server's
//! `ReadBuffer` and straight back out of it. A connection keeps bytes only
//! when something is left over:
//!
//! - the *unfinished line*: the bytes after the last terminator, waiting for
//!   the rest of their line;
//! - the *pending output*: echoes the socket did not take, waiting for it
//!   to become writable.
//!
//! Those leftovers are copied into the connection's `Buffer`, and only they:
//! an echoed byte is never copied on its way from the read to the write. A
//! connection that already holds leftovers reads into its own `Buffer`,
//! behind them, since its new bytes belong after the old ones:
//!
//! ```text
//!   written      pending output     unfinished line     spare
//! [ ......... | ################## | ~~~~~~~~~~~~~~~~ | _______ ]
//! 0          head             lines_end            tail       storage.len()
//! ```
//!
//! The pending output is always a prefix of what was received, which is why
//! one `Buffer` holds both. A `Buffer` with nothing left over frees its
//! storage, so an idle connection owns none.
//!
//! The store itself (`Leftovers`: the storage, its indexes, how it grows,
//! compacts and shrinks) is `src/buffer/leftovers.rs`. This module does no
//! I/O; `Connection` does the reads and writes. The
//! functions called on every event are marked `#[inline]`: their bodies are
//! a few instructions, fewer than a call's prologue and epilogue (see
//! docs/BENCHMARKS.md for the count).

use std::collections::TryReserveError;

mod leftovers;

use leftovers::Leftovers;

/// The most one read asks for. A larger read would let the output run further
/// past `max_pending_bytes` before reading pauses; a smaller one costs more
/// system calls per byte in bulk transfers.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The server's one buffer for reads: every read by a connection with
/// nothing left over lands here, and its complete lines are echoed from
/// here. It is borrowed for one read at a time, so nothing in it outlives
/// the call that read it.
///
/// Since every read of the loop's connections is handed it, it also counts
/// the bytes they read, wherever each read landed: one addition per read,
/// where the read's result is handled, and none per line (the metrics
/// endpoint reports the count as `echod_bytes_received_total`).
#[derive(Debug)]
pub struct ReadBuffer {
    /// `READ_CHUNK_BYTES` bytes, initialised once, so reads never zero
    /// anything.
    bytes: Box<[u8]>,
    /// Bytes the loop's connections have read since it started, into this
    /// buffer or their own.
    received_bytes: u64,
}

impl Default for ReadBuffer {
    fn default() -> ReadBuffer {
        ReadBuffer {
            bytes: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            received_bytes: 0,
        }
    }
}

impl ReadBuffer {
    /// Room for one read, `READ_CHUNK_BYTES` long.
    #[inline]
    pub fn room(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Counts `n` bytes a connection of the loop has just read.
    #[inline]
    pub fn count_received(&mut self, n: usize) {
        self.received_bytes += n as u64;
    }

    /// Bytes the loop's connections have read since it started.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }
}

/// One connection's leftovers, or nothing: an idle connection's `Buffer`
/// is one null pointer. The store and its indexes live in one small
/// allocation of their own (`Leftovers`), made when something is first left
/// over and freed with the storage by `release`, so a connection that holds
/// nothing costs 8 bytes here rather than 48.
#[derive(Debug, Default)]
pub struct Buffer {
    /// `None` whenever nothing is left over and `release` has run. A
    /// one-element array behind a thin pointer, because `Vec` can allocate
    /// it fallibly (`try_reserve_exact`) and `Box::new` cannot.
    held: Option<Box<[Leftovers; 1]>>,
}

impl Buffer {
    #[inline]
    fn leftovers(&self) -> Option<&Leftovers> {
        self.held.as_deref().map(|[leftovers]| leftovers)
    }

    #[inline]
    fn leftovers_mut(&mut self) -> Option<&mut Leftovers> {
        self.held.as_deref_mut().map(|[leftovers]| leftovers)
    }

    /// The store, allocated if there is none yet.
    fn leftovers_or_new(&mut self) -> Result<&mut Leftovers, TryReserveError> {
        if self.held.is_none() {
            let mut one = Vec::new();
            one.try_reserve_exact(1)?;
            one.push(Leftovers::default());
            // A boxed slice of length one is always a `[Leftovers; 1]`.
            self.held = Box::<[Leftovers; 1]>::try_from(one.into_boxed_slice()).ok();
        }
        match self.held.as_deref_mut() {
            Some([leftovers]) => Ok(leftovers),
            None => unreachable!("the store was made above"),
        }
    }

    /// Complete lines waiting to be written back.
    #[inline]
    pub fn pending(&self) -> &[u8] {
        self.leftovers().map_or(&[], Leftovers::pending)
    }

    /// Number of bytes waiting to be written back.
    #[inline]
    pub fn pending_len(&self) -> usize {
        self.leftovers().map_or(0, Leftovers::pending_len)
    }

    /// Bytes of the line still being received, from its first byte.
    #[inline]
    pub fn unfinished(&self) -> &[u8] {
        self.leftovers().map_or(&[], Leftovers::unfinished)
    }

    /// True when nothing is owed and nothing is half-received.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.leftovers().is_none_or(Leftovers::is_empty)
    }

    /// Bytes of storage held for leftovers, whether in use or not: exactly
    /// what was allocated for them, so that the memory budget counts what
    /// the process holds for bytes. (The store's own 48 bytes, present only
    /// while something is left over, are a fixed cost per connection, like
    /// the `Connection` itself, bounded by `max-connections`.)
    #[inline]
    pub fn capacity(&self) -> usize {
        self.leftovers().map_or(0, Leftovers::capacity)
    }

    /// Keeps what one read into the `ReadBuffer` left over: `owed`, echoes
    /// the socket did not take, then `unfinished`, the start of a line. The
    /// buffer must be empty: a connection with leftovers reads into its own
    /// storage instead.
    ///
    /// Returns how many bytes of storage that added (0 when nothing was
    /// left over, or the storage held was large enough), for the memory
    /// budget.
    ///
    /// # Errors
    ///
    /// The allocation failed; nothing is kept.
    //
    // Always inlined: it is called on every read, and the common case (a
    // read that ended on a line's end, all of it sent) is the first test.
    // A second caller (taking a connection over after an upgrade) made the
    // compiler call it out of line: 470 user instructions per echoed line
    // rather than 432 (`cargo bench --bench e2e -- --only counts`).
    #[inline(always)]
    pub fn keep(&mut self, owed: &[u8], unfinished: &[u8]) -> Result<usize, TryReserveError> {
        debug_assert!(self.is_empty(), "leftovers kept over leftovers");
        if owed.is_empty() && unfinished.is_empty() {
            return Ok(0);
        }
        self.leftovers_or_new()?.keep(owed, unfinished)
    }

    /// Makes room behind the leftovers for a read (see `spare`),
    /// compacting or growing (up to `max_capacity`) as needed.
    ///
    /// # Errors
    ///
    /// Growing failed; the buffer holds what it held.
    #[inline]
    pub fn make_spare(&mut self, max_capacity: usize) -> Result<(), TryReserveError> {
        self.leftovers_or_new()?.make_spare(max_capacity)
    }

    /// The room behind the leftovers, up to `READ_CHUNK_BYTES`: what
    /// `make_spare` made. Empty when its `max_capacity` left no room for the
    /// bytes already held: the limits keep that from happening, but the
    /// memory budget can (the caller then stops reading until it has room).
    #[inline]
    pub fn spare(&mut self) -> &mut [u8] {
        match self.leftovers_mut() {
            Some(leftovers) => leftovers.spare(),
            None => &mut [],
        }
    }

    /// Records that a read put `n` bytes into the slice `spare` returned.
    #[inline]
    pub fn filled(&mut self, n: usize) {
        if let Some(leftovers) = self.leftovers_mut() {
            leftovers.filled(n);
        }
        debug_assert!(n == 0 || self.held.is_some());
    }

    /// Marks the first `n` bytes of the unfinished line as complete lines.
    #[inline]
    pub fn complete(&mut self, n: usize) {
        if let Some(leftovers) = self.leftovers_mut() {
            leftovers.complete(n);
        }
        debug_assert!(n == 0 || self.held.is_some());
    }

    /// Records that a write sent the first `n` bytes of the pending output.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        if let Some(leftovers) = self.leftovers_mut() {
            leftovers.consume(n);
        }
        debug_assert!(n == 0 || self.held.is_some());
    }

    /// Drops the unfinished line (the peer finished without ending it, or it
    /// grew too long to ever be echoed).
    pub fn discard_unfinished(&mut self) {
        if let Some(leftovers) = self.leftovers_mut() {
            leftovers.discard_unfinished();
        }
    }

    /// Frees the store and its storage if nothing is left over, or trades
    /// the storage for an allocation of exactly the right size if all it
    /// holds is a short unfinished line. Called whenever a connection goes
    /// back to waiting for readiness.
    #[inline]
    pub fn release(&mut self) {
        if let Some(leftovers) = self.leftovers_mut() {
            if leftovers.is_empty() {
                self.held = None;
            } else {
                leftovers.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::leftovers::zeroed;
    use super::*;

    /// Copies `bytes` into the buffer as a read behind the leftovers would.
    fn receive(buffer: &mut Buffer, bytes: &[u8]) {
        buffer.make_spare(1 << 20).expect("room");
        let spare = buffer.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        buffer.filled(bytes.len());
    }

    /// The room `make_spare` makes for a read, up to `max_capacity`.
    fn spare_len(buffer: &mut Buffer, max_capacity: usize) -> usize {
        buffer.make_spare(max_capacity).expect("room");
        buffer.spare().len()
    }

    #[test]
    fn nothing_left_over_holds_no_storage() {
        let mut buffer = Buffer::default();
        buffer.keep(b"", b"").expect("kept");
        assert_eq!(buffer.capacity(), 0);
        buffer.keep(b"ab\r\n", b"").expect("kept");
        assert_eq!(buffer.pending(), b"ab\r\n");
        buffer.consume(4);
        buffer.release();
        assert_eq!(buffer.capacity(), 0);
    }

    #[test]
    fn leftovers_are_kept_in_an_allocation_of_their_size() {
        let mut buffer = Buffer::default();
        buffer.keep(b"owed\r\n", b"half").expect("kept");
        assert_eq!(
            (buffer.pending(), buffer.unfinished(), buffer.capacity()),
            (&b"owed\r\n"[..], &b"half"[..], 10)
        );
        buffer.consume(6);
        buffer.release();
        assert_eq!((buffer.capacity(), buffer.unfinished()), (4, &b"half"[..]));
        // More of the line arrives behind it: the storage grows, the line
        // stays intact.
        receive(&mut buffer, b" a line\r\n");
        assert_eq!(buffer.unfinished(), b"half a line\r\n");
        assert_eq!(buffer.capacity(), READ_CHUNK_BYTES);
    }

    #[test]
    fn a_short_unfinished_line_is_shrunk_to_fit() {
        let mut buffer = Buffer::default();
        buffer.keep(b"", b"ab").expect("kept");
        receive(&mut buffer, b"\r\nhalf");
        buffer.complete(4);
        buffer.consume(4);
        buffer.release();
        assert_eq!((buffer.capacity(), buffer.unfinished()), (4, &b"half"[..]));
    }

    #[test]
    fn pending_output_keeps_its_storage() {
        let mut buffer = Buffer::default();
        buffer.keep(b"", b"x").expect("kept");
        receive(&mut buffer, b"\r\nowed\r\n");
        buffer.complete(9);
        buffer.release();
        assert_eq!(
            (buffer.pending(), buffer.capacity()),
            (&b"x\r\nowed\r\n"[..], READ_CHUNK_BYTES)
        );
    }

    #[test]
    fn compaction_happens_only_when_it_frees_as_much_as_it_moves() {
        let mut buffer = Buffer::default();
        let line = [b'x'; 1022]
            .iter()
            .chain(b"\r\n")
            .copied()
            .collect::<Vec<u8>>();
        buffer.keep(b"", b"y").expect("kept");
        buffer.discard_unfinished();
        // Fill 15 KiB of lines, write back 10 KiB of them.
        for _ in 0..15 {
            receive(&mut buffer, &line);
        }
        buffer.complete(15 * 1024);
        buffer.consume(10 * 1024);
        // 1 KiB spare is below MIN_READ_BYTES; 10 KiB written >= 5 KiB live, so
        // the live bytes move to the front instead of the buffer growing.
        let spare = spare_len(&mut buffer, 1 << 20);
        assert_eq!((buffer.capacity(), spare), (READ_CHUNK_BYTES, 11 * 1024));
        assert_eq!(buffer.pending(), &line.repeat(5)[..]);
    }

    #[test]
    fn grows_for_a_backlog_up_to_the_cap() {
        let mut buffer = Buffer::default();
        let chunk = vec![b'y'; 4096];
        for _ in 0..16 {
            receive(&mut buffer, &chunk);
        }
        assert_eq!(buffer.capacity(), 128 * 1024 / 2);
        let spare = spare_len(&mut buffer, 100 * 1024);
        assert_eq!(
            (buffer.capacity(), spare),
            (100 * 1024, 36 * 1024 - 20 * 1024)
        );
    }

    #[test]
    fn a_capped_buffer_compacts_rather_than_grows_and_offers_no_room_when_full() {
        let mut buffer = Buffer::default();
        buffer.keep(b"", &[b'z'; 100]).expect("kept");
        // Capped at what it holds: no room, and no allocation.
        assert_eq!(spare_len(&mut buffer, 100), 0);
        assert_eq!(buffer.capacity(), 100);
    }

    #[test]
    fn an_allocation_the_allocator_refuses_is_an_error_not_an_abort() {
        assert!(zeroed(usize::MAX / 2).is_err());
    }
}
