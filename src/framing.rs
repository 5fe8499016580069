//! Line framing: where a line ends, and when a line is too long.
//!
//! This module is pure: it looks at bytes already received and answers how
//! many of them form complete lines. It does no I/O, allocates nothing and
//! keeps no state between calls; the caller remembers how far it has scanned
//! (see `Buffer`), so every byte is examined once however a line is split
//! across reads.
//!
//! Three framings are recognised:
//!
//! - `crlf` (the default): a line ends at the two bytes `\r\n`. A bare `\n`
//!   or a bare `\r` is ordinary data. For example `a\nb\r\n` is *one* line,
//!   and `\r\n` alone is an empty line.
//! - `lf`: a line ends at `\n`, whatever comes before it, so `a\r\nb\n` is
//!   two lines, `a\r\n` and `b\n`.
//! - `raw`: there are no lines; every byte is complete as soon as it arrives
//!   (RFC 862 echo).
//!
//! A line's length counts its terminator. A line may be at most
//! `max_line_bytes` long; `Scan::too_long` reports the first line that is
//! longer, or that has reached the limit without its terminator (which would
//! take it over).

use std::fmt;

use memchr::memchr;

#[cfg(target_arch = "x86_64")]
mod short;

/// How the input is divided into lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Lines end at CR LF (`\r\n`); a lone CR or LF is data.
    Crlf,
    /// Lines end at LF (`\n`).
    Lf,
    /// No lines: every byte is echoed as soon as it is read.
    Raw,
}

/// What one call to `Framing::scan` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// How many bytes, from the start of the window, form complete lines and
    /// may be echoed. Always at a line boundary.
    pub complete_bytes: usize,
    /// How many lines those bytes hold (always 0 with `Framing::Raw`).
    pub lines: usize,
    /// Set when the line after the complete ones is longer than the limit, or
    /// can only end up longer than it. Nothing of that line is complete.
    pub too_long: bool,
}

impl Framing {
    /// Scans the `n` bytes a read put at the start of `room` (a connection
    /// with nothing left over, so they start a line), as
    /// `scan(&room[..n], 0, max_line_bytes)` does. The bytes of `room` after
    /// the read may be looked at, never counted: a short read is scanned in
    /// one fixed-size pass (`short.rs`).
    #[inline(always)]
    pub fn scan_read(self, room: &[u8], n: usize, max_line_bytes: usize) -> Scan {
        debug_assert!(n <= room.len());
        #[cfg(target_arch = "x86_64")]
        if self != Framing::Raw && n <= short::MAX_BYTES && n < max_line_bytes {
            if let Some(block) = room.first_chunk::<{ short::MAX_BYTES }>() {
                let (complete_bytes, lines) = short::scan(block, n, self == Framing::Crlf);
                return Scan {
                    complete_bytes,
                    lines,
                    too_long: false,
                };
            }
        }
        self.scan(&room[..n], 0, max_line_bytes)
    }

    /// Scans `window` for complete lines.
    ///
    /// `window` starts at the first byte of a line that has not ended yet and
    /// runs to the last byte received. `scanned` is how many of its bytes an
    /// earlier call already searched for terminators; they are not searched
    /// again, which keeps a long line arriving a byte at a time O(n) rather
    /// than O(n²). A CR LF split between two reads is still found, because the
    /// search is for the LF and then looks back one byte for the CR.
    ///
    /// A line (terminator included) may be `max_line_bytes` long at most.
    /// An unfinished line of `max_line_bytes` or more is reported as too long
    /// at once: its terminator would take it over the limit.
    #[inline]
    pub fn scan(self, window: &[u8], scanned: usize, max_line_bytes: usize) -> Scan {
        debug_assert!(scanned <= window.len());
        let terminator_needs_cr = match self {
            Framing::Raw => {
                return Scan {
                    complete_bytes: window.len(),
                    lines: 0,
                    too_long: false,
                };
            }
            Framing::Lf => false,
            Framing::Crlf => true,
        };

        let mut line_start = 0;
        let mut lines = 0;
        let mut from = scanned;
        // A loop of one-shot searches rather than `memchr_iter`: most reads
        // end exactly at a line's end, and this way no search is started on
        // the empty rest (the iterator's setup and final miss cost more than
        // the search itself on a 64-byte line).
        while from < window.len() {
            let Some(offset) = memchr(b'\n', &window[from..]) else {
                break;
            };
            let lf_idx = from + offset;
            from = lf_idx + 1;
            // In CRLF mode the CR must belong to the same line: an LF that
            // opens a line has no CR before it, however the previous line ended.
            if terminator_needs_cr && (lf_idx == line_start || window[lf_idx - 1] != b'\r') {
                continue;
            }
            let line_end = lf_idx + 1;
            if line_end - line_start > max_line_bytes {
                return Scan {
                    complete_bytes: line_start,
                    lines,
                    too_long: true,
                };
            }
            line_start = line_end;
            lines += 1;
        }
        Scan {
            complete_bytes: line_start,
            lines,
            too_long: window.len() - line_start >= max_line_bytes,
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Framing::Crlf => "crlf",
            Framing::Lf => "lf",
            Framing::Raw => "raw",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` in one piece with the given limit and checks the echoed
    /// prefix, the line count and the too-long flag.
    #[track_caller]
    fn check(
        framing: Framing,
        input: &[u8],
        max: usize,
        echoed: &[u8],
        lines: usize,
        too_long: bool,
    ) {
        let scan = framing.scan(input, 0, max);
        let got = &input[..scan.complete_bytes];
        assert_eq!(
            (got, scan.lines, scan.too_long),
            (echoed, lines, too_long),
            "{framing} scan of {:?} (max {max})",
            String::from_utf8_lossy(input)
        );
    }

    const BIG: usize = 1 << 20;

    #[test]
    fn crlf_lines() {
        use Framing::Crlf;
        check(Crlf, b"", BIG, b"", 0, false);
        check(Crlf, b"\r", BIG, b"", 0, false);
        check(Crlf, b"\n", BIG, b"", 0, false);
        check(Crlf, b"\r\n", BIG, b"\r\n", 1, false);
        check(Crlf, b"\r\n\r\n", BIG, b"\r\n\r\n", 2, false);
        check(Crlf, b"hello\r\n", BIG, b"hello\r\n", 1, false);
        check(Crlf, b"a\r\nb\r\nc", BIG, b"a\r\nb\r\n", 2, false);
        check(Crlf, b"a\nb\r\n", BIG, b"a\nb\r\n", 1, false);
        check(Crlf, b"a\rb\r\n", BIG, b"a\rb\r\n", 1, false);
        check(Crlf, b"a\n\r", BIG, b"", 0, false);
        check(Crlf, b"a\r\r\n", BIG, b"a\r\r\n", 1, false);
        check(Crlf, b"\n\r\n", BIG, b"\n\r\n", 1, false);
        check(Crlf, b"a\r\n\n", BIG, b"a\r\n", 1, false);
    }

    #[test]
    fn lf_lines() {
        use Framing::Lf;
        check(Lf, b"", BIG, b"", 0, false);
        check(Lf, b"\r", BIG, b"", 0, false);
        check(Lf, b"\n", BIG, b"\n", 1, false);
        check(Lf, b"a\r\nb\n", BIG, b"a\r\nb\n", 2, false);
        check(Lf, b"a\nb", BIG, b"a\n", 1, false);
        check(Lf, b"\n\n\n", BIG, b"\n\n\n", 3, false);
    }

    #[test]
    fn raw_bytes() {
        use Framing::Raw;
        check(Raw, b"", 2, b"", 0, false);
        check(Raw, b"a", 2, b"a", 0, false);
        check(
            Raw,
            b"no terminator, longer than the limit",
            2,
            b"no terminator, longer than the limit",
            0,
            false,
        );
    }

    #[test]
    fn line_length_limits() {
        use Framing::{Crlf, Lf};
        // A complete line exactly at the limit is echoed; one byte over is not.
        check(Crlf, b"abc\r\n", 5, b"abc\r\n", 1, false);
        check(Crlf, b"abcd\r\n", 5, b"", 0, true);
        check(Lf, b"abcd\n", 5, b"abcd\n", 1, false);
        check(Lf, b"abcde\n", 5, b"", 0, true);
        // Lines before the long one are still complete.
        check(Crlf, b"ok\r\nabcd\r\n", 5, b"ok\r\n", 1, true);
        check(Crlf, b"ok\r\nabcd\r\nok\r\n", 5, b"ok\r\n", 1, true);
        // An unfinished line one byte short of the limit may still end in time
        // (in LF mode); at the limit it can only end over it.
        check(Lf, b"abcd", 5, b"", 0, false);
        check(Lf, b"abcde", 5, b"", 0, true);
        check(Crlf, b"abc\r", 5, b"", 0, false);
        check(Crlf, b"abcd\r", 5, b"", 0, true);
        // The smallest limit that admits an empty CRLF line.
        check(Crlf, b"\r\n\r\n", 2, b"\r\n\r\n", 2, false);
        check(Crlf, b"\r\na", 2, b"\r\n", 1, false);
        check(Crlf, b"\r\na\r", 2, b"\r\n", 1, true);
    }

    /// Feeds `input` in pieces of `cut` bytes the way `Buffer` does: the
    /// window starts at the unfinished line and `scanned` skips what earlier
    /// calls saw.
    fn scan_in_pieces(framing: Framing, input: &[u8], cut: usize) -> (usize, usize) {
        let (mut line_start, mut lines, mut received) = (0, 0, 0);
        while received < input.len() {
            let scanned = received - line_start;
            received = (received + cut).min(input.len());
            let scan = framing.scan(&input[line_start..received], scanned, BIG);
            line_start += scan.complete_bytes;
            lines += scan.lines;
        }
        (line_start, lines)
    }

    #[test]
    fn terminators_split_across_reads_are_found() {
        let input = b"a\r\n\r\nbb\r\r\n\nccc\r\n";
        for cut in 1..=input.len() {
            assert_eq!(
                scan_in_pieces(Framing::Crlf, input, cut),
                (input.len(), 4),
                "cut {cut}"
            );
        }
        // A lone LF after a CR that ended nothing is data, however it is cut.
        let input = b"x\r\n\ny\r\n";
        for cut in 1..=input.len() {
            assert_eq!(
                scan_in_pieces(Framing::Crlf, input, cut),
                (input.len(), 2),
                "cut {cut}"
            );
        }
    }

    /// The scan as the protocol states it, a byte at a time.
    fn reference(framing: Framing, window: &[u8], max: usize) -> Scan {
        let (mut line_start, mut lines) = (0, 0);
        for (i, &byte) in window.iter().enumerate() {
            let ends = byte == b'\n'
                && (framing == Framing::Lf || (i > line_start && window[i - 1] == b'\r'));
            if !ends {
                continue;
            }
            if i + 1 - line_start > max {
                return Scan {
                    complete_bytes: line_start,
                    lines,
                    too_long: true,
                };
            }
            line_start = i + 1;
            lines += 1;
        }
        Scan {
            complete_bytes: line_start,
            lines,
            too_long: window.len() - line_start >= max,
        }
    }

    /// Every window of up to 80 bytes drawn from `a`, CR and LF, by a small
    /// deterministic generator, scanned by the general scan and as a read
    /// (the short scan of `short.rs` up to 64 bytes), with limits on either
    /// side of the window's length.
    #[test]
    fn the_scan_agrees_with_the_protocol_byte_by_byte() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 81) as usize;
            // From a terminator every other byte to one in twenty, so that
            // long windows with a single LF are as common as busy ones.
            let spread = 3 + next() % 38;
            let window: Vec<u8> = (0..len)
                .map(|_| match next() % spread {
                    0 => b'\r',
                    1 => b'\n',
                    _ => b'a',
                })
                .collect();
            // The read as it lands in a read buffer, with stale bytes after
            // it that must not count.
            let mut room = window.clone();
            room.extend((len..96).map(|_| b"\r\na"[(next() % 3) as usize]));
            for framing in [Framing::Crlf, Framing::Lf] {
                for max in [len.max(1) - 1, len, len + 1, 4, BIG] {
                    let max = max.max(2);
                    let expected = reference(framing, &window, max);
                    assert_eq!(
                        framing.scan(&window, 0, max),
                        expected,
                        "{framing} scan of {window:?} (max {max})"
                    );
                    assert_eq!(
                        framing.scan_read(&room, len, max),
                        expected,
                        "{framing} scan of the read {window:?} in {room:?} (max {max})"
                    );
                }
            }
        }
    }
}
