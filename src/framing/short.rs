//! The scan of a short read: the usual read of a ping-pong client, one or a
//! few lines of up to 64 bytes, found in one pass without a search.
//!
//! The general scan (`Framing::scan`) calls `memchr` once per line and then
//! checks the byte before each LF. For a read of 64 bytes at most, it is
//! cheaper to classify every byte at once: four 16-byte compares against LF
//! give one bit per LF in a 64-bit mask. The usual read holds one, and one
//! look at the byte before it says whether it ends a line. A read with more
//! is given a CR mask too, and a line ends wherever an LF's bit has a CR's
//! bit just before it: the complete bytes run to the highest such end and
//! the lines are how many there are.
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
    // Only the read's own bytes count.
    let read = if n == MAX_BYTES {
        u64::MAX
    } else {
        (1 << n) - 1
    };
    let lf = bits(block, b'\n') & read;
    if lf == 0 {
        return (0, 0);
    }
    // The usual read holds one LF: in CRLF framing it ends a line if the
    // byte before it is a CR, which one look tells. (The read starts at a
    // line's first byte, so an LF at its start ends nothing.)
    if lf & (lf - 1) == 0 {
        let at = MAX_BYTES - 1 - lf.leading_zeros() as usize;
        return if !needs_cr || (at > 0 && block[at - 1] == b'\r') {
            (at + 1, 1)
        } else {
            (0, 0)
        };
    }
    several(block, lf, needs_cr)
}

/// `scan` for a read with more than one LF: a line ends at an LF whose
/// byte before is a CR (bit 0 of `cr << 1` is clear, so an LF at the read's
/// start ends nothing, just as the general scan requires). Out of line, so
/// that the usual single line does not carry it.
#[cold]
#[inline(never)]
fn several(block: &[u8; MAX_BYTES], lf: u64, needs_cr: bool) -> (usize, usize) {
    let ends = if needs_cr {
        lf & (bits(block, b'\r') << 1)
    } else {
        lf
    };
    if ends == 0 {
        return (0, 0);
    }
    (
        MAX_BYTES - ends.leading_zeros() as usize,
        ends.count_ones() as usize,
    )
}

/// One bit per byte of `block`, set where the byte is `byte`.
#[inline(always)]
fn bits(block: &[u8; MAX_BYTES], byte: u8) -> u64 {
    let mut bits = 0u64;
    for (i, chunk) in block.chunks_exact(16).enumerate() {
        #[allow(unsafe_code)]
        // SAFETY: SSE2 is part of every x86_64 target, and the load reads
        // the 16 bytes of `chunk` (unaligned loads are allowed).
        let found = unsafe {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
            _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(byte as i8)))
        };
        // `movemask` sets the low 16 bits of an `i32`: as `u32`, no sign.
        bits |= u64::from(found as u32) << (16 * i);
    }
    bits
}
