//! The lines `echo-bench` sends, and how an echo is checked against them.
//!
//! Line `seq` of connection `conn` is a pure function of the two, so checking
//! an echo needs no copy of what was sent: the checker regenerates the line
//! and compares. A line is the sequence number as 8 hex digits, then a slice
//! of a repeating 64-character pattern starting at an offset drawn from
//! `(conn, seq)`, then the terminator. The body never contains `\r` or `\n`,
//! so the server sees exactly one line per generated line in every framing.

use crate::args::Framing;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8; 16] = b"0123456789abcdef";
/// Digits of the sequence number at the start of each line, when it fits.
const SEQ_DIGITS: usize = 8;

/// The line generator for one run: every connection's lines have the same
/// length and terminator.
#[derive(Debug, Clone)]
pub struct Lines {
    line_bytes: usize,
    body_bytes: usize,
    terminator: &'static [u8],
    /// `ALPHABET` repeated, long enough for any offset plus a body.
    pattern: Vec<u8>,
}

impl Lines {
    /// `line_bytes` includes the terminator and must exceed it (checked by
    /// the argument parser).
    pub fn new(framing: Framing, line_bytes: usize) -> Lines {
        let terminator = framing.terminator();
        let body_bytes = line_bytes.saturating_sub(terminator.len());
        let pattern = ALPHABET
            .iter()
            .copied()
            .cycle()
            .take(ALPHABET.len() + body_bytes)
            .collect();
        Lines {
            line_bytes,
            body_bytes,
            terminator,
            pattern,
        }
    }

    /// Bytes per line, terminator included.
    pub fn line_bytes(&self) -> usize {
        self.line_bytes
    }

    /// Appends line `seq` of connection `conn` to `out`.
    pub fn append(&self, conn: u64, seq: u64, out: &mut Vec<u8>) {
        let digits = SEQ_DIGITS.min(self.body_bytes);
        for i in (0..digits).rev() {
            out.push(HEX[((seq >> (4 * i)) & 0xf) as usize]);
        }
        let offset = (conn.wrapping_mul(31).wrapping_add(seq.wrapping_mul(7)) % 64) as usize;
        out.extend_from_slice(&self.pattern[offset..offset + self.body_bytes - digits]);
        out.extend_from_slice(self.terminator);
    }

    /// Writes line `seq` of connection `conn` into `scratch` (replacing its
    /// contents) and returns it.
    pub fn line<'a>(&self, conn: u64, seq: u64, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        scratch.clear();
        self.append(conn, seq, scratch);
        scratch
    }
}

/// Where a connection's incoming echo stands: which line it is inside and
/// how far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checker {
    /// Lines echoed completely.
    pub lines: u64,
    /// Bytes of line `lines` received so far.
    offset: usize,
}

/// The first echoed byte that differs from what was sent.
#[derive(Debug)]
pub struct Mismatch {
    pub line: u64,
    pub offset: usize,
    pub expected: u8,
    pub received: u8,
}

impl Checker {
    /// Checks `echo`, the next bytes received on connection `conn`, and calls
    /// `complete(seq)` for every line it finishes. `sent` is the number of
    /// lines sent so far: bytes beyond them are a mismatch too.
    pub fn check(
        &mut self,
        lines: &Lines,
        conn: u64,
        sent: u64,
        mut echo: &[u8],
        scratch: &mut Vec<u8>,
        mut complete: impl FnMut(u64),
    ) -> Result<(), Mismatch> {
        while !echo.is_empty() {
            if self.lines >= sent {
                return Err(Mismatch {
                    line: self.lines,
                    offset: self.offset,
                    expected: 0,
                    received: echo[0],
                });
            }
            let expected = &lines.line(conn, self.lines, scratch)[self.offset..];
            let n = expected.len().min(echo.len());
            if expected[..n] != echo[..n] {
                let at = (0..n).find(|&i| expected[i] != echo[i]).unwrap_or(0);
                return Err(Mismatch {
                    line: self.lines,
                    offset: self.offset + at,
                    expected: expected[at],
                    received: echo[at],
                });
            }
            echo = &echo[n..];
            self.offset += n;
            if self.offset == lines.line_bytes() {
                complete(self.lines);
                self.lines += 1;
                self.offset = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_requested_length_and_one_terminator() {
        for framing in [Framing::Crlf, Framing::Lf, Framing::Raw] {
            for size in [3, 8, 10, 64, 4096] {
                let lines = Lines::new(framing, size);
                let mut out = Vec::new();
                lines.append(7, 123_456, &mut out);
                assert_eq!(out.len(), size);
                assert!(out.ends_with(framing.terminator()));
                let body = &out[..size - framing.terminator().len()];
                assert!(!body.contains(&b'\n') && !body.contains(&b'\r'));
            }
        }
    }

    #[test]
    fn an_echo_checks_in_any_cut_and_counts_lines() {
        let lines = Lines::new(Framing::Crlf, 20);
        let mut sent = Vec::new();
        for seq in 0..5 {
            lines.append(3, seq, &mut sent);
        }
        for cut in 0..sent.len() {
            let mut checker = Checker::default();
            let mut done = Vec::new();
            let mut scratch = Vec::new();
            for part in [&sent[..cut], &sent[cut..]] {
                checker
                    .check(&lines, 3, 5, part, &mut scratch, |seq| done.push(seq))
                    .expect("echo matches");
            }
            assert_eq!(done, [0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn swapped_lines_extra_bytes_and_other_connections_are_caught() {
        let lines = Lines::new(Framing::Lf, 16);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        lines.append(1, 1, &mut a);
        lines.append(1, 0, &mut a);
        let mut scratch = Vec::new();
        let err = Checker::default()
            .check(&lines, 1, 2, &a, &mut scratch, |_| {})
            .expect_err("reordered lines are a mismatch");
        assert_eq!(err.line, 0);

        lines.append(2, 0, &mut b);
        assert!(
            Checker::default()
                .check(&lines, 1, 1, &b, &mut scratch, |_| {})
                .is_err(),
            "another connection's line is a mismatch"
        );

        let mut c = Vec::new();
        lines.append(1, 0, &mut c);
        c.push(b'x');
        let err = Checker::default()
            .check(&lines, 1, 1, &c, &mut scratch, |_| {})
            .expect_err("a byte nobody sent is a mismatch");
        assert_eq!((err.line, err.offset), (1, 0));
    }
}
