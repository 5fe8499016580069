//! The scan of a short window that starts at a line's first byte: the usual
//! read of a ping-pong client, one or a few lines of up to 64 bytes, found
//! in one pass without a search.
//!
//! The general scan (`Framing::scan`) calls `memchr` once per line and then
//! checks the byte before each LF. For a window of 64 bytes at most, it is
//! cheaper to classify every byte at once: four 16-byte compares against LF
//! and against CR give one bit per byte in two 64-bit masks, and a line ends
//! wherever an LF's bit has a CR's bit just before it. The complete bytes
//! run to the highest such end and the lines are how many there are.
//!
//! It applies only where the answer cannot need the line limit: the window
//! is shorter than `max_line_bytes`, so no line in it, complete or not, can
//! be too long (`Framing::scan` checks this before calling it).

use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};

/// The longest window this scan takes: one bit per byte in a `u64`.
pub(super) const MAX_BYTES: usize = 64;

/// The shortest: one whole 16-byte compare.
pub(super) const MIN_BYTES: usize = 16;

/// The complete bytes and lines of `window`, which starts at a line's first
/// byte and is `MIN_BYTES..=MAX_BYTES` long; in CRLF framing when
/// `needs_cr`, LF framing otherwise.
#[inline(always)]
pub(super) fn scan(window: &[u8], needs_cr: bool) -> (usize, usize) {
    let (lf, cr) = masks(window);
    // A line ends at an LF whose byte before is a CR. The window starts at a
    // line's first byte, so its first LF has no CR before it in the window
    // (bit 0 of `cr << 1` is clear), just as the general scan requires.
    let ends = if needs_cr { lf & (cr << 1) } else { lf };
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

/// One bit per byte of `window`: where the LFs are, and where the CRs are.
#[inline(always)]
fn masks(window: &[u8]) -> (u64, u64) {
    let len = window.len();
    debug_assert!((MIN_BYTES..=MAX_BYTES).contains(&len));
    // Always four compares, the last ones overlapping the ones before them
    // in a shorter window rather than reading past it: the bytes seen twice
    // set the same bits. No loop, no branch.
    let last = len - MIN_BYTES;
    let (mut lf, mut cr) = (0u64, 0u64);
    for start in [0, MIN_BYTES.min(last), (2 * MIN_BYTES).min(last), last] {
        let (lf_bits, cr_bits) = compare(&window[start..start + MIN_BYTES]);
        lf |= lf_bits << start;
        cr |= cr_bits << start;
    }
    (lf, cr)
}

/// The LF bits and the CR bits of 16 bytes.
#[inline(always)]
fn compare(chunk: &[u8]) -> (u64, u64) {
    debug_assert_eq!(chunk.len(), MIN_BYTES);
    #[allow(unsafe_code)]
    // SAFETY: SSE2 is part of every x86_64 target, and the load reads the
    // 16 bytes of `chunk` (unaligned loads are allowed).
    let (lf, cr) = unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        (
            _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\n' as i8))),
            _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\r' as i8))),
        )
    };
    // `movemask` sets the low 16 bits of an `i32`: as `u32`, no sign.
    (u64::from(lf as u32), u64::from(cr as u32))
}

/// Lines in a window that holds more than one: out of line, so that the
/// usual single line does not pay for the count.
#[cold]
#[inline(never)]
fn count(ends: u64) -> usize {
    ends.count_ones() as usize
}
