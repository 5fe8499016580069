//! The store of one connection's leftovers: the storage and its three
//! indexes (see the layout in `buffer.rs`), how it grows, compacts and
//! shrinks. `Buffer` holds one only while something is left over.

use std::collections::TryReserveError;

use super::READ_CHUNK_BYTES;

/// A connection reading behind its leftovers gets room of at least this
/// much; below it the buffer is compacted or grown first, so that reads are
/// never so small that their system calls dominate.
const MIN_READ_BYTES: usize = 2 * 1024;

/// Leftovers this short, with no output pending, are kept in an allocation
/// of exactly their size, so that many clients holding half a line cost
/// bytes rather than a grown buffer each.
const SHRINK_UNFINISHED_BYTES: usize = 512;

/// The store of leftovers. See the module docs for the layout.
#[derive(Debug, Default)]
pub(super) struct Leftovers {
    /// The storage; `len()` is its usable size and every byte is initialised,
    /// so reads never need to zero anything. Empty whenever the buffer is
    /// released with nothing left over (an idle connection's state).
    storage: Vec<u8>,
    /// First byte not yet written back. Invariant: `head <= lines_end`.
    head: usize,
    /// End of the last complete line. Invariant: `lines_end <= tail`.
    lines_end: usize,
    /// End of the bytes received. Invariant: `tail <= storage.len()`.
    tail: usize,
}

impl Leftovers {
    /// Complete lines waiting to be written back.
    #[inline]
    pub fn pending(&self) -> &[u8] {
        &self.storage[self.head..self.lines_end]
    }

    /// Number of bytes waiting to be written back.
    #[inline]
    pub fn pending_len(&self) -> usize {
        self.lines_end - self.head
    }

    /// Bytes of the line still being received, from its first byte.
    #[inline]
    pub fn unfinished(&self) -> &[u8] {
        &self.storage[self.lines_end..self.tail]
    }

    /// True when nothing is owed and nothing is half-received.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Bytes of storage held, whether in use or not: exactly what was
    /// allocated, so that the memory budget counts what the process holds.
    pub fn capacity(&self) -> usize {
        self.storage.capacity()
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
    #[inline]
    pub fn keep(&mut self, owed: &[u8], unfinished: &[u8]) -> Result<usize, TryReserveError> {
        debug_assert!(self.is_empty(), "leftovers kept over leftovers");
        let held = owed.len() + unfinished.len();
        if held == 0 {
            return Ok(0);
        }
        self.start_over();
        let mut grown = 0;
        if self.storage.len() < held {
            // Exactly the size needed: a connection holding half a line costs
            // that half line. A later read behind it grows the storage.
            grown = held - self.storage.capacity().min(held);
            self.storage = zeroed(held)?;
        }
        self.storage[..owed.len()].copy_from_slice(owed);
        self.storage[owed.len()..held].copy_from_slice(unfinished);
        self.lines_end = owed.len();
        self.tail = held;
        Ok(grown)
    }

    /// Makes room behind the leftovers for a read (see `spare`),
    /// compacting or growing (up to `max_capacity`) as needed.
    ///
    /// # Errors
    ///
    /// Growing failed; the buffer holds what it held.
    #[inline]
    pub fn make_spare(&mut self, max_capacity: usize) -> Result<(), TryReserveError> {
        if self.storage.len() - self.tail < MIN_READ_BYTES {
            self.make_room(max_capacity)?;
        }
        Ok(())
    }

    /// The room behind the leftovers, up to `READ_CHUNK_BYTES`: what
    /// `make_spare` made. Empty when its `max_capacity` left no room for the
    /// bytes already held: the limits keep that from happening, but the
    /// memory budget can (the caller then stops reading until it has room).
    #[inline]
    pub fn spare(&mut self) -> &mut [u8] {
        let end = self.storage.len().min(self.tail + READ_CHUNK_BYTES);
        &mut self.storage[self.tail..end]
    }

    /// Records that a read put `n` bytes into the slice `spare` returned.
    #[inline]
    pub fn filled(&mut self, n: usize) {
        self.tail += n;
        debug_assert!(self.tail <= self.storage.len());
    }

    /// Marks the first `n` bytes of the unfinished line as complete lines.
    #[inline]
    pub fn complete(&mut self, n: usize) {
        self.lines_end += n;
        debug_assert!(self.lines_end <= self.tail);
    }

    /// Records that a write sent the first `n` bytes of the pending output.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.head += n;
        debug_assert!(self.head <= self.lines_end);
        if self.head == self.tail {
            // Nothing left: start over at the front, which costs no copy.
            self.start_over();
        }
    }

    /// Drops the unfinished line (the peer finished without ending it, or it
    /// grew too long to ever be echoed).
    pub fn discard_unfinished(&mut self) {
        self.tail = self.lines_end;
        self.consume(0);
    }

    /// Frees the storage if nothing is left over, or trades it for an
    /// allocation of exactly the right size if all it holds is a short
    /// unfinished line. Called whenever a connection goes back to waiting
    /// for readiness.
    #[inline]
    pub fn release(&mut self) {
        if self.is_empty() {
            if !self.storage.is_empty() {
                self.storage = Vec::new();
            }
            return;
        }
        let held = self.tail - self.head;
        if self.pending_len() == 0 && held <= SHRINK_UNFINISHED_BYTES && held < self.storage.len() {
            // Kept as they are if even this small allocation fails.
            if let Ok(mut small) = zeroed(held) {
                small.copy_from_slice(&self.storage[self.head..self.tail]);
                self.storage = small;
                self.lines_end -= self.head;
                self.tail -= self.head;
                self.head = 0;
            }
        }
    }

    /// Makes at least `MIN_READ_BYTES` of spare room if `max_capacity` allows.
    fn make_room(&mut self, max_capacity: usize) -> Result<(), TryReserveError> {
        let live = self.tail - self.head;
        // Moving the live bytes to the front pays for itself when it frees at
        // least as much as it copies. Compacting more eagerly (say, after
        // every write) is the classic way to spend O(n²) copying a backlog.
        if self.head >= live || self.storage.len() >= max_capacity {
            self.move_to_front();
            if self.storage.len() - self.tail >= MIN_READ_BYTES {
                return Ok(());
            }
        }
        let wanted = (self.tail + MIN_READ_BYTES).max(READ_CHUNK_BYTES);
        let new_len = wanted.next_power_of_two().min(max_capacity.max(self.tail));
        if new_len > self.storage.len() {
            // Exactly `new_len`, so that the capacity counted is the size
            // asked for. Zeroing only the new part; growth is rare and
            // doubles, so its cost is amortised over the bytes that needed it.
            self.storage
                .try_reserve_exact(new_len - self.storage.len())?;
            self.storage.resize(new_len, 0);
        }
        Ok(())
    }

    /// Moves the live bytes (`head..tail`) to the front of the storage and
    /// rebases the indexes: with `release`, which rebases them when it
    /// trades the storage for a smaller one, the only places they are
    /// reset.
    #[inline]
    fn move_to_front(&mut self) {
        if self.head > 0 {
            self.storage.copy_within(self.head..self.tail, 0);
            self.lines_end -= self.head;
            self.tail -= self.head;
            self.head = 0;
        }
    }

    /// With nothing live, moving to the front is only the index reset.
    #[inline]
    fn start_over(&mut self) {
        debug_assert!(self.is_empty());
        self.move_to_front();
    }
}

/// `len` zeroed bytes in an allocation of exactly that size, or the
/// allocator's refusal (instead of an abort).
pub(super) fn zeroed(len: usize) -> Result<Vec<u8>, TryReserveError> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len)?;
    bytes.resize(len, 0);
    Ok(bytes)
}
