//! The reference model of framing, written for clarity rather than speed,
//! and the check of `Framing::scan` against it that the `framing` fuzz
//! target runs.

use echod::Framing;

use super::decide::{Decide, SplitMix64};

/// What a connection owes for some input, by a model written for clarity,
/// not speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// The echo is `input[..echo_len]`: every complete line before the first
    /// over-long one.
    pub echo_len: usize,
    /// Complete lines in the echo (0 in raw framing).
    pub lines: usize,
    /// A line reached `max_line_bytes` without ending, or ended longer.
    pub too_long: bool,
}

/// The reference model of framing: byte by byte, a line ends where its
/// framing says, and a line that reaches the limit unfinished (or ends over
/// it) is too long.
pub fn reference(framing: Framing, input: &[u8], max_line_bytes: usize) -> Reference {
    if framing == Framing::Raw {
        return Reference {
            echo_len: input.len(),
            lines: 0,
            too_long: false,
        };
    }
    let (mut line_start, mut lines) = (0, 0);
    for (idx, &byte) in input.iter().enumerate() {
        let line = &input[line_start..=idx];
        let ended = match framing {
            Framing::Lf => byte == b'\n',
            Framing::Crlf => line.ends_with(b"\r\n"),
            Framing::Raw => unreachable!("handled above"),
        };
        if (ended && line.len() > max_line_bytes) || (!ended && line.len() >= max_line_bytes) {
            return Reference {
                echo_len: line_start,
                lines,
                too_long: true,
            };
        }
        if ended {
            line_start = idx + 1;
            lines += 1;
        }
    }
    Reference {
        echo_len: line_start,
        lines,
        too_long: false,
    }
}

/// Checks `Framing::scan` against `reference` on one input, read whole and
/// read in pieces the way `Buffer` feeds it (the window starts at the
/// unfinished line; `scanned` skips what earlier calls searched).
///
/// Layout of `data`: byte 0 picks the framing, bytes 1-2 the line limit
/// (plus 2, big-endian), byte 3 seeds the read sizes (1 to 32 bytes), and
/// the rest is the stream. Shorter data checks nothing.
///
/// # Errors
///
/// The first disagreement with the model.
pub fn check_framing(data: &[u8]) -> Result<(), String> {
    let [mode, limit_hi, limit_lo, cut_seed, input @ ..] = data else {
        return Ok(());
    };
    let framing = [Framing::Crlf, Framing::Lf, Framing::Raw][usize::from(*mode) % 3];
    let max_line_bytes = 2 + usize::from(u16::from_be_bytes([*limit_hi, *limit_lo]));
    let expected = reference(framing, input, max_line_bytes);

    let whole = framing.scan(input, 0, max_line_bytes);
    let got = (whole.complete_bytes, whole.lines, whole.too_long);
    if got != (expected.echo_len, expected.lines, expected.too_long) {
        return Err(format!(
            "{framing} scan of {} bytes (max {max_line_bytes}) in one piece: got {got:?}, \
             expected {expected:?}",
            input.len()
        ));
    }

    let mut cuts = SplitMix64::new(u64::from(*cut_seed));
    let (mut line_start, mut lines, mut received, mut too_long) = (0, 0, 0, false);
    while received < input.len() && !too_long {
        let scanned = received - line_start;
        received = (received + 1 + cuts.pick(32) as usize).min(input.len());
        let scan = framing.scan(&input[line_start..received], scanned, max_line_bytes);
        if scan.complete_bytes > received - line_start {
            return Err(format!(
                "{framing} scan completed more bytes than it was given"
            ));
        }
        line_start += scan.complete_bytes;
        lines += scan.lines;
        too_long = scan.too_long;
    }
    let got = (line_start, lines, too_long);
    if got != (expected.echo_len, expected.lines, expected.too_long) {
        return Err(format!(
            "{framing} scan of {} bytes (max {max_line_bytes}) in pieces (seed {cut_seed}): got \
             {got:?}, expected {expected:?}",
            input.len()
        ));
    }
    Ok(())
}
