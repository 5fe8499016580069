//! The scan of a short read: the usual read of a ping-pong client, one or a
//! few lines of up to 64 bytes, found in one pass without a search.
//!
//! The general scan (`Framing::scan`) calls `memchr` once per line and then
//! checks the byte before each LF. For a read of 64 bytes at most, it is
//! cheaper to classify every byte at once: four 16-byte compares against LF
//! and against CR give one bit per byte in two 64-bit masks, and a line ends
//! wherever an LF's bit has a CR's bit just before it. The complete bytes
//! run to the highest such end and the lines are how many there are.
//!
//! The compares always look at the first 64 bytes of the read buffer, the
//! read's and the stale ones after them, and the bits past the read are
//! dropped: fixed offsets, no cut to the read's length, no branch.
//!
//! It applies only where the answer cannot need the line limit: the read is
//! shorter than `max_line_bytes`, so no line in it, complete or not, can be
//! too long (`Framing::scan_read` checks this before calling it).

use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};

/// The longest read this scan takes: one bit per byte in a `u64`.
pub(super) const MAX_BYTES: usize = 64;

/// The complete bytes and lines of the first `n` bytes of `block`, which
/// start at a line's first byte; `n` is at most `MAX_BYTES`. In CRLF
/// framing when `needs_cr`, LF framing otherwise.
#[inline(always)]
pub(super) fn scan(block: &[u8; MAX_BYTES], n: usize, needs_cr: bool) -> (usize, usize) {
    debug_assert!(n <= MAX_BYTES);
    let (lf, cr) = masks(block);
    // A line ends at an LF whose byte before is a CR. The read starts at a
    // line's first byte, so its first LF has no CR before it in the read
    // (bit 0 of `cr << 1` is clear), just as the general scan requires.
    let ends = if needs_cr { lf & (cr << 1) } else { lf };
    // Only the read's own bytes count.
    let read = if n == MAX_BYTES {
        u64::MAX
    } else {
        (1 << n) - 1
    };
    let ends = ends & read;
    if ends == 0 {
        return (0, 0);
    }
    let complete = MAX_BYTES - ends.leading_zeros() as usize;
    // One line is the common case, and without the `popcnt` instruction in
    // the baseline target `count_ones` is a dozen instructions.
    let lines = if ends & (ends - 1) == 0 {
        1
    } else {
        count(ends)
    };
    (complete, lines)
}

/// One bit per byte of `block`: where the LFs are, and where the CRs are.
#[inline(always)]
fn masks(block: &[u8; MAX_BYTES]) -> (u64, u64) {
    let (mut lf, mut cr) = (0u64, 0u64);
    for (i, chunk) in block.chunks_exact(16).enumerate() {
        #[allow(unsafe_code)]
        // SAFETY: SSE2 is part of every x86_64 target, and the load reads
        // the 16 bytes of `chunk` (unaligned loads are allowed).
        let (lf_bits, cr_bits) = unsafe {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\n' as i8))),
                _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\r' as i8))),
            )
        };
        // `movemask` sets the low 16 bits of an `i32`: as `u32`, no sign.
        lf |= u64::from(lf_bits as u32) << (16 * i);
        cr |= u64::from(cr_bits as u32) << (16 * i);
    }
    (lf, cr)
}

/// Lines in a read that holds more than one: out of line, so that the
/// usual single line does not pay for the count.
#[cold]
#[inline(never)]
fn count(ends: u64) -> usize {
    ends.count_ones() as usize
}
