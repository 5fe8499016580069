//! What one line does: it comes back whole and unchanged, however its bytes
//! were written, and not before it has ended.
//!
//! Every check here but `partial-line-held` judges only the bytes that come
//! back, so a server that echoes bytes as they arrive passes them: the
//! timing of echoes is `partial-line-held`'s property alone.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::QUIET;
use crate::client::{self, Ending, collect_for, difference, read_up_to};
use crate::{Framing, Options, Outcome};

/// How long an echo of one line may take.
const ECHO_DEADLINE: Duration = Duration::from_secs(3);
/// The pause between the two writes of `split-terminator`: long enough
/// for the first write to leave as a segment of its own (the sockets have
/// no Nagle delay), so that the server reads the two halves apart.
const SPLIT_PAUSE: Duration = Duration::from_millis(100);

/// `echo`: one line comes back byte for byte.
pub fn echo(options: &Options) -> Outcome {
    let line = line(b"echo-check says hello", options.framing);
    with_connection(options, |stream| {
        let started = Instant::now();
        stream.write_all(&line)?;
        let (received, ending) = read_up_to(stream, line.len(), started + ECHO_DEADLINE);
        Ok(judge_echo(&line, &received, ending, started))
    })
}

/// `split-terminator`: a terminator split across two writes (CR, then LF;
/// under LF framing the body, then the LF) still ends the line.
pub fn split_terminator(options: &Options) -> Outcome {
    let line = line(b"split terminator", options.framing);
    let (first, second) = line.split_at(line.len() - 1);
    with_connection(options, |stream| {
        stream.write_all(first)?;
        thread::sleep(SPLIT_PAUSE);
        let started = Instant::now();
        stream.write_all(second)?;
        let (received, ending) = read_up_to(stream, line.len(), started + ECHO_DEADLINE);
        Ok(judge_echo(&line, &received, ending, started))
    })
}

/// `binary-bytes`: a line of every byte value except CR and LF, NUL and
/// 0xFF included, forwards and then backwards, comes back unchanged. CR and
/// LF are left out under both framings so that the line is a line however
/// the server treats a bare CR or LF (`bare-lf-is-data` judges that).
pub fn binary_bytes(options: &Options) -> Outcome {
    let values: Vec<u8> = (0..=255u8).filter(|b| *b != b'\r' && *b != b'\n').collect();
    let mut body = values.clone();
    body.extend(values.iter().rev());
    let line = line(&body, options.framing);
    with_connection(options, |stream| {
        let started = Instant::now();
        stream.write_all(&line)?;
        let (received, ending) = read_up_to(stream, line.len(), started + ECHO_DEADLINE);
        Ok(judge_echo(&line, &received, ending, started))
    })
}

/// `partial-line-held`: nothing of an unfinished line comes back in
/// `QUIET`, and the whole line does once its terminator is sent.
pub fn partial_line_held(options: &Options) -> Outcome {
    let body = b"held until its terminator";
    let line = line(body, options.framing);
    with_connection(options, |stream| {
        stream.write_all(body)?;
        let (early, _) = collect_for(stream, QUIET);
        if !early.is_empty() {
            return Ok(Outcome::fail(format!(
                "{} bytes came back within {} ms of an unfinished line of {} bytes",
                early.len(),
                QUIET.as_millis(),
                body.len()
            )));
        }
        let started = Instant::now();
        stream.write_all(options.framing.terminator())?;
        let (received, ending) = read_up_to(stream, line.len(), started + ECHO_DEADLINE);
        if received == line {
            Ok(Outcome::pass(format!(
                "nothing for {} ms, then the {}-byte line once ended",
                QUIET.as_millis(),
                line.len()
            )))
        } else {
            Ok(Outcome::fail(format!(
                "nothing early, but once ended: {}",
                difference(&line, &received, ending)
            )))
        }
    })
}

/// `bare-lf-is-data` (CRLF framing only): `before\nafter` is held whole
/// until its CR LF, then echoed as one line. The evidence of the fault is
/// an echo that stops exactly at the bare LF while the bytes after it are
/// held; a server that echoes everything early proves nothing here (that is
/// `partial-line-held`'s fault), and the check is skipped.
pub fn bare_lf_is_data(options: &Options) -> Outcome {
    if options.framing == Framing::Lf {
        return Outcome::skip("under --framing lf a bare LF ends a line");
    }
    let unfinished = b"before\nafter";
    with_connection(options, |stream| {
        stream.write_all(unfinished)?;
        let (early, _) = collect_for(stream, QUIET);
        if early == b"before\n" {
            return Ok(Outcome::fail(
                "`before\\nafter` without CR LF: `before\\n` came back, so the bare LF ended a line",
            ));
        }
        if !early.is_empty() {
            return Ok(Outcome::skip(format!(
                "inconclusive: {} bytes of an unfinished line came back (partial-line-held judges that)",
                early.len()
            )));
        }
        let started = Instant::now();
        stream.write_all(b"\r\n")?;
        let expected = b"before\nafter\r\n";
        let (received, ending) = read_up_to(stream, expected.len(), started + ECHO_DEADLINE);
        if received == expected {
            Ok(Outcome::pass(
                "`before\\nafter` held, then echoed as one line at its CR LF",
            ))
        } else {
            Ok(Outcome::fail(format!(
                "after the CR LF: {}",
                difference(expected, &received, ending)
            )))
        }
    })
}

/// `long-line`: with `--max-line-bytes N`, a line of exactly N bytes
/// (terminator included) is echoed, and one of N bytes before its
/// terminator is not: the server closes the connection or discards the
/// line, and a new connection is still echoed. Skipped without
/// `--max-line-bytes`, since the limit of a server it knows nothing about
/// cannot be guessed, and for a server that echoes unfinished lines, for
/// which a line's length means nothing (`partial-line-held` judges that).
pub fn long_line(options: &Options) -> Outcome {
    let Some(limit) = options.max_line_bytes else {
        return Outcome::skip("no --max-line-bytes given: the server's limit is unknown");
    };
    let terminator = options.framing.terminator();
    if limit < terminator.len() + 1 {
        return Outcome::skip(format!(
            "--max-line-bytes {limit} leaves no room for a line"
        ));
    }
    let at_limit = line(&vec![b'y'; limit - terminator.len()], options.framing);
    let within = with_connection(options, |stream| {
        let started = Instant::now();
        stream.write_all(&at_limit)?;
        let deadline = started + ECHO_DEADLINE + transfer_time(at_limit.len());
        let (received, ending) = read_up_to(stream, at_limit.len(), deadline);
        Ok(judge_echo(&at_limit, &received, ending, started))
    });
    if within.verdict != crate::Verdict::Pass {
        return Outcome::fail(format!(
            "a line of exactly {limit} bytes: {}",
            within.detail
        ));
    }
    let over = with_connection(options, |stream| {
        // The write of a too-long body may fail part way: a server that
        // closes at its limit resets a client that keeps sending.
        let _ = stream.write_all(&vec![b'z'; limit]);
        let (early, _) = collect_for(stream, QUIET);
        if !early.is_empty() {
            return Ok(Outcome::skip(format!(
                "inconclusive: {} bytes of an unfinished line came back (partial-line-held judges that)",
                early.len()
            )));
        }
        let _ = stream.write_all(terminator);
        let (echoed, ending) = collect_for(stream, Duration::from_secs(2) + transfer_time(limit));
        Ok(match (echoed.len(), ending) {
            (0, Ending::Eof | Ending::Error(_)) => Outcome::pass(format!(
                "{limit} bytes echoed at the limit; {} past it: none echoed, connection closed",
                limit + terminator.len()
            )),
            (0, _) => Outcome::pass(format!(
                "{limit} bytes echoed at the limit; {} past it: none echoed, connection kept",
                limit + terminator.len()
            )),
            (n, _) => Outcome::fail(format!(
                "a line of {} bytes, past the limit of {limit}: {n} bytes came back",
                limit + terminator.len()
            )),
        })
    });
    if over.verdict != crate::Verdict::Pass {
        return over;
    }
    let alive = echo(options);
    if alive.verdict != crate::Verdict::Pass {
        return Outcome::fail(format!(
            "after the long line, a new client: {}",
            alive.detail
        ));
    }
    over
}

/// `body` followed by the framing's terminator.
fn line(body: &[u8], framing: Framing) -> Vec<u8> {
    let mut line = body.to_vec();
    line.extend_from_slice(framing.terminator());
    line
}

/// The verdict on one expected echo.
fn judge_echo(line: &[u8], received: &[u8], ending: Ending, started: Instant) -> Outcome {
    if received == line {
        Outcome::pass(format!(
            "{} bytes sent, the same {} came back in {:.1} ms",
            line.len(),
            received.len(),
            started.elapsed().as_secs_f64() * 1e3
        ))
    } else {
        Outcome::fail(difference(line, received, ending))
    }
}

/// Extra time for `bytes` to cross, at a pessimistic 10 MB/s.
fn transfer_time(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / 10e6)
}

/// Runs `check` on a new connection; a failed connect or write is a fail
/// with the error as evidence.
pub(crate) fn with_connection(
    options: &Options,
    check: impl FnOnce(&mut TcpStream) -> std::io::Result<Outcome>,
) -> Outcome {
    match client::connect(options.target) {
        Ok(mut stream) => {
            check(&mut stream).unwrap_or_else(|err| Outcome::fail(format!("socket error: {err}")))
        }
        Err(err) => Outcome::fail(format!("connect failed: {err}")),
    }
}
