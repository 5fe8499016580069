//! What echod asks of the allocator, so that the memory of a backlog goes
//! back to the system once it drains: one setting at start, and a trim
//! after a burst.
//!
//! This is process policy, not buffer logic: `main` applies it once, before
//! any other thread exists, and `buffer.rs` allocates as if it were not
//! there.

/// Allocations of at least this many bytes are mapped from the system on
/// their own and unmapped when freed; see `return_large_buffers_to_the_system`.
/// 128 KiB is glibc's initial value: every buffer grown to hold a backlog or
/// a long line soon passes it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SEPARATE_MAPPING_BYTES: libc::c_int = 128 * 1024;

/// Makes buffer storage of 128 KiB or more go back to the system as soon as
/// it is freed, so that echod's memory comes back down after a burst.
///
/// A connection's buffer grows past a read's size only to hold a backlog
/// for a client that is not reading, or a long line, and is freed once that
/// has drained. glibc maps such large allocations on their own, but the
/// first time one is freed it raises the threshold to the freed size (the
/// "dynamic mmap threshold" of `mallopt(3)`): from then on they come from
/// the heap, where memory freed below a live allocation stays resident.
/// After a burst of stalled readers, echod's RSS would stay near its peak
/// for as long as one later connection held a buffer. Setting the threshold
/// turns the adjustment off.
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

/// Asks the allocator to return the free memory it holds to the system.
///
/// Buffers below the mapping threshold come from the heap, where memory
/// freed below a live allocation cannot go back by shrinking the heap's
/// end: after a burst of stalled readers, tens of MiB would stay resident.
/// `malloc_trim(3)` releases the free pages inside the heap as well. It
/// walks the free lists, so the loop calls it only after a large drop in
/// the buffer memory it holds (`Connections::take_trim_hint`), at most once
/// a housekeeping tick.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim(3) takes an integer and works on the
        // allocator's own state, under the allocator's lock like any
        // allocation; it touches no memory of ours.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
