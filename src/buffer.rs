//! A connection's bytes in flight, and the pool that lends out their storage.
//!
//! An echo is always a prefix of what was received, so a connection needs
//! only one buffer. Its front holds complete lines that are waiting to be
//! written back (the *pending output*); behind them comes the line still
//! being received (the *unfinished line*); behind that, spare room for the
//! next read:
//!
//! ```text
//!   written      pending output     unfinished line     spare
//! [ ......... | ################## | ~~~~~~~~~~~~~~~~ | _______ ]
//! 0          head             lines_end            tail       storage.len()
//! ```
//!
//! A line is never copied on its way from the read to the write: the bytes
//! the kernel put into the buffer are the bytes handed back to `write`.
//!
//! Storage is borrowed from a `Pool` when a read needs room and handed back
//! as soon as the connection owes nothing and holds no unfinished line, so an
//! idle connection owns no buffer at all. A connection that sits on a short
//! unfinished line keeps it in an allocation of exactly that size.
//!
//! This module does no I/O; `Connection` does the reads and writes. The
//! functions called on every event are marked `#[inline]`: their bodies are
//! a few instructions, fewer than a call's prologue and epilogue (see
//! docs/BENCHMARKS.md for the count). It also
//! owns the one allocator setting echod makes, so that the memory of a
//! backlog goes back to the system once it drains
//! (`return_large_buffers_to_the_system`).

/// Size of the buffers the pool hands out. A read asks for at most
/// `READ_CHUNK_BYTES`, so one pooled buffer takes a whole read; a buffer grows
/// past this only to hold a long line or a backlog of output.
pub const POOL_BUFFER_BYTES: usize = 16 * 1024;

/// The most one read asks for. A larger read would let the output run further
/// past `max_pending_bytes` before reading pauses; a smaller one costs more
/// system calls per byte in bulk transfers.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Reads go into room of at least this much; below it the buffer is compacted
/// or grown first, so that reads are never so small that their system calls
/// dominate.
const MIN_READ_BYTES: usize = 2 * 1024;

/// An unfinished line this short, with no output pending, is moved out of its
/// pooled buffer into an allocation of its own size, so that many clients
/// holding half a line cost bytes rather than a pooled buffer each.
const SHRINK_UNFINISHED_BYTES: usize = 512;

/// Spare buffers the pool keeps. Only connections with data in flight hold a
/// buffer, and one thread serves them one at a time, so a handful covers
/// steady traffic; more are freed rather than hoarded after a burst.
const POOL_MAX_FREE: usize = 64;

/// Allocations of at least this many bytes are mapped from the system on
/// their own and unmapped when freed; see `return_large_buffers_to_the_system`.
/// 128 KiB is glibc's initial value: every buffer grown past the pooled size
/// to hold a backlog or a long line soon passes it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SEPARATE_MAPPING_BYTES: libc::c_int = 128 * 1024;

/// Makes buffer storage of 128 KiB or more go back to the system as soon as
/// it is freed, so that echod's memory comes back down after a burst.
///
/// A buffer grows past `POOL_BUFFER_BYTES` only to hold a backlog for a
/// client that is not reading, or a long line, and is freed once that has
/// drained. glibc maps such large allocations on their own, but the first
/// time one is freed it raises the threshold to the freed size (the "dynamic
/// mmap threshold" of `mallopt(3)`): from then on they come from the heap,
/// where memory freed below a live allocation stays resident. After a burst
/// of stalled readers, echod's RSS would stay near its peak for as long as
/// one later connection held a buffer. Setting the threshold turns the
/// adjustment off.
///
/// Call it once, at start, before other threads exist. Returns false where
/// the C library is not glibc, or refuses.
pub fn return_large_buffers_to_the_system() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt(3) takes two integers and touches no memory of
        // ours; called before other threads start, it races with no
        // allocation.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, SEPARATE_MAPPING_BYTES) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// One connection's buffer. See the module docs for the layout.
#[derive(Debug, Default)]
pub struct Buffer {
    /// The storage; `len()` is its usable size and every byte is initialised,
    /// so reads never need to zero anything. Empty when the buffer holds no
    /// storage (the idle state).
    storage: Vec<u8>,
    /// First byte not yet written back. Invariant: `head <= lines_end`.
    head: usize,
    /// End of the last complete line. Invariant: `lines_end <= tail`.
    lines_end: usize,
    /// End of the bytes received. Invariant: `tail <= storage.len()`.
    tail: usize,
}

impl Buffer {
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

    /// Bytes of storage held, whether in use or not.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// Returns room for a read of up to `READ_CHUNK_BYTES`, taking storage
    /// from `pool`, compacting or growing (up to `max_capacity`) as needed.
    ///
    /// The returned slice may be empty only if `max_capacity` is too small for
    /// the bytes already held; callers bound what they hold (by pausing and by
    /// the line limit) well below it.
    #[inline]
    pub fn spare_mut(&mut self, pool: &mut Pool, max_capacity: usize) -> &mut [u8] {
        if self.storage.is_empty() {
            debug_assert!(self.is_empty());
            self.storage = pool.take();
        }
        if self.storage.len() - self.tail < MIN_READ_BYTES {
            self.make_room(pool, max_capacity);
        }
        let end = self.storage.len().min(self.tail + READ_CHUNK_BYTES);
        &mut self.storage[self.tail..end]
    }

    /// Records that a read put `n` bytes into the slice `spare_mut` returned.
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
        // Nothing left: start over at the front, which costs no copy.
        if self.head == self.tail {
            self.head = 0;
            self.lines_end = 0;
            self.tail = 0;
        }
    }

    /// Drops the unfinished line (the peer finished without ending it, or it
    /// grew too long to ever be echoed).
    pub fn discard_unfinished(&mut self) {
        self.tail = self.lines_end;
        self.consume(0);
    }

    /// Gives the storage back to `pool` if the buffer is empty, or trades it
    /// for a right-sized allocation if all it holds is a short unfinished line.
    /// Called whenever a connection goes back to waiting for readiness.
    #[inline]
    pub fn release(&mut self, pool: &mut Pool) {
        if self.storage.is_empty() {
            return;
        }
        if self.is_empty() {
            pool.give(std::mem::take(&mut self.storage));
            return;
        }
        let held = self.tail - self.head;
        if self.pending_len() == 0 && held <= SHRINK_UNFINISHED_BYTES && held < self.storage.len() {
            let small = self.storage[self.head..self.tail].to_vec();
            pool.give(std::mem::replace(&mut self.storage, small));
            self.head = 0;
            self.lines_end = 0;
            self.tail = held;
        }
    }

    /// Gives the storage back to `pool` whatever it holds (the connection is
    /// being dropped).
    pub fn release_all(&mut self, pool: &mut Pool) {
        self.head = 0;
        self.lines_end = 0;
        self.tail = 0;
        pool.give(std::mem::take(&mut self.storage));
    }

    /// Makes at least `MIN_READ_BYTES` of spare room if `max_capacity` allows.
    fn make_room(&mut self, pool: &mut Pool, max_capacity: usize) {
        let live = self.tail - self.head;
        // Moving the live bytes to the front pays for itself when it frees at
        // least as much as it copies. Compacting more eagerly (say, after
        // every write) is the classic way to spend O(n²) copying a backlog.
        if self.head >= live || self.storage.len() >= max_capacity {
            self.storage.copy_within(self.head..self.tail, 0);
            self.lines_end -= self.head;
            self.tail = live;
            self.head = 0;
            if self.storage.len() - self.tail >= MIN_READ_BYTES {
                return;
            }
        }
        let wanted = (self.tail + MIN_READ_BYTES).max(POOL_BUFFER_BYTES);
        let new_len = wanted.next_power_of_two().min(max_capacity.max(self.tail));
        if new_len <= self.storage.len() {
            return;
        }
        if self.storage.len() < POOL_BUFFER_BYTES && new_len == POOL_BUFFER_BYTES {
            // A shrunk unfinished line going back into a pooled buffer.
            let mut pooled = pool.take();
            pooled[..live].copy_from_slice(&self.storage[self.head..self.tail]);
            self.storage = pooled;
            self.lines_end -= self.head;
            self.tail = live;
            self.head = 0;
        } else {
            // Zeroing only the new part; growth is rare and doubles, so its
            // cost is amortised over the bytes that needed the room.
            self.storage.resize(new_len, 0);
        }
    }
}

/// Spare buffers of `POOL_BUFFER_BYTES`, so that a connection that reads,
/// echoes and goes idle again allocates nothing.
#[derive(Debug, Default)]
pub struct Pool {
    /// Free buffers; each has `len() == POOL_BUFFER_BYTES`.
    free: Vec<Vec<u8>>,
}

impl Pool {
    /// Takes a free buffer, or allocates a zeroed one.
    #[inline]
    pub fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0; POOL_BUFFER_BYTES])
    }

    /// Returns a buffer. Buffers of another size (grown, or shrunk to fit a
    /// short line) and buffers beyond `POOL_MAX_FREE` are freed instead.
    #[inline]
    pub fn give(&mut self, storage: Vec<u8>) {
        if storage.len() == POOL_BUFFER_BYTES && self.free.len() < POOL_MAX_FREE {
            self.free.push(storage);
        }
    }

    /// Number of free buffers held.
    pub fn free_buffers(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies `bytes` into the buffer as one read would.
    fn receive(buffer: &mut Buffer, pool: &mut Pool, bytes: &[u8]) {
        let spare = buffer.spare_mut(pool, 1 << 20);
        spare[..bytes.len()].copy_from_slice(bytes);
        buffer.filled(bytes.len());
    }

    #[test]
    fn idle_buffer_holds_no_storage() {
        let (mut buffer, mut pool) = (Buffer::default(), Pool::default());
        assert_eq!(buffer.capacity(), 0);
        receive(&mut buffer, &mut pool, b"ab\r\n");
        buffer.complete(4);
        assert_eq!(buffer.pending(), b"ab\r\n");
        buffer.consume(4);
        buffer.release(&mut pool);
        assert_eq!((buffer.capacity(), pool.free_buffers()), (0, 1));
        // The next read reuses the pooled buffer rather than allocating.
        receive(&mut buffer, &mut pool, b"x");
        assert_eq!(
            (buffer.capacity(), pool.free_buffers()),
            (POOL_BUFFER_BYTES, 0)
        );
    }

    #[test]
    fn short_unfinished_line_is_kept_in_a_small_allocation() {
        let (mut buffer, mut pool) = (Buffer::default(), Pool::default());
        receive(&mut buffer, &mut pool, b"done\r\nhalf");
        buffer.complete(6);
        buffer.consume(6);
        buffer.release(&mut pool);
        assert_eq!((buffer.capacity(), buffer.unfinished()), (4, &b"half"[..]));
        assert_eq!(pool.free_buffers(), 1);
        // More of the line arrives: it moves back into a pooled buffer intact.
        receive(&mut buffer, &mut pool, b" a line\r\n");
        assert_eq!(buffer.unfinished(), b"half a line\r\n");
        assert_eq!(buffer.capacity(), POOL_BUFFER_BYTES);
    }

    #[test]
    fn pending_output_keeps_its_storage() {
        let (mut buffer, mut pool) = (Buffer::default(), Pool::default());
        receive(&mut buffer, &mut pool, b"owed\r\n");
        buffer.complete(6);
        buffer.release(&mut pool);
        assert_eq!(
            (buffer.pending(), buffer.capacity()),
            (&b"owed\r\n"[..], POOL_BUFFER_BYTES)
        );
    }

    #[test]
    fn compaction_happens_only_when_it_frees_as_much_as_it_moves() {
        let (mut buffer, mut pool) = (Buffer::default(), Pool::default());
        let line = [b'x'; 1022]
            .iter()
            .chain(b"\r\n")
            .copied()
            .collect::<Vec<u8>>();
        // Fill 15 KiB of lines, write back 10 KiB of them.
        for _ in 0..15 {
            receive(&mut buffer, &mut pool, &line);
        }
        buffer.complete(15 * 1024);
        buffer.consume(10 * 1024);
        // 1 KiB spare is below MIN_READ_BYTES; 10 KiB written >= 5 KiB live, so
        // the live bytes move to the front instead of the buffer growing.
        let spare = buffer.spare_mut(&mut pool, 1 << 20).len();
        assert_eq!((buffer.capacity(), spare), (POOL_BUFFER_BYTES, 11 * 1024));
        assert_eq!(buffer.pending(), &line.repeat(5)[..]);
    }

    #[test]
    fn grows_for_a_backlog_up_to_the_cap() {
        let (mut buffer, mut pool) = (Buffer::default(), Pool::default());
        let chunk = vec![b'y'; 4096];
        for _ in 0..16 {
            receive(&mut buffer, &mut pool, &chunk);
        }
        assert_eq!(buffer.capacity(), 128 * 1024 / 2);
        let spare = buffer.spare_mut(&mut pool, 100 * 1024).len();
        assert_eq!(
            (buffer.capacity(), spare),
            (100 * 1024, 36 * 1024 - 20 * 1024)
        );
    }
}
