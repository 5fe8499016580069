//! What a stream of lines does: every echo arrives, in order, whether the
//! client reads fast, slowly or after its FIN, and a client that never
//! reads cannot make the server hold unbounded input for it.
//!
//! The volumes are chosen against the kernel's buffers: the slow-reader
//! and half-close checks send more than a loopback connection's buffers
//! hold, so that the server's writes must meet a full socket; `pipeline`
//! keeps less in flight than they hold, so that it judges order and
//! completeness alone, not what a server does with a full socket.

use std::fs;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{
    self, Ending, Exchange, Stopped, count_until_quiet, difference, numbered_lines,
};
use crate::{Options, Outcome};

/// Lines in flight in `pipeline`, sent before their echoes are read.
const PIPELINE_LINES: usize = 5_000;
/// Most bytes `pipeline` has sent and not yet had back: 2,000 of its
/// 16-byte lines, well inside a loopback socket's buffers.
const PIPELINE_WINDOW_BYTES: usize = 32 * 1024;
/// What the slow-reader and half-close checks send: more than the server's
/// send buffer (4 MiB at most by default) and the client's small receive
/// buffer hold together.
const OVERFLOW_BYTES: usize = 8 * 1024 * 1024;
/// The slow reader's receive buffer: small, so the server's socket fills.
const SMALL_RECEIVE_BYTES: usize = 16 * 1024;
/// How long the slow reader waits before it reads at all.
const READER_STALL: Duration = Duration::from_millis(500);
/// What a server may hold for a client that does not read, beyond the
/// kernel's buffers, before `backpressure` calls it unbounded.
const HOLD_BOUND_BYTES: u64 = 64 * 1024 * 1024;

/// `pipeline`: 5,000 numbered lines, up to 2,000 in flight at once, come
/// back complete and in order.
pub fn pipeline(options: &Options) -> Outcome {
    let payload = numbered_lines("pipe", PIPELINE_LINES, 16, options.framing.terminator());
    exchange(options, None, |started| Exchange {
        payload: Arc::new(payload),
        window: Some(PIPELINE_WINDOW_BYTES),
        stall: Duration::ZERO,
        pause: Duration::ZERO,
        finish: false,
        deadline: started + Duration::from_secs(10),
    })
    .map_or_else(
        |outcome| outcome,
        |(exchanged, payload, started)| {
            if exchanged.received == *payload {
                Outcome::pass(format!(
                    "{PIPELINE_LINES} lines ({} bytes), up to {} KiB in flight, back in order in {} ms",
                    payload.len(),
                    PIPELINE_WINDOW_BYTES / 1024,
                    started.elapsed().as_millis()
                ))
            } else {
                Outcome::fail(difference(&payload, &exchanged.received, exchanged.ending))
            }
        },
    )
}

/// `slow-reader-complete`: 8 MiB of lines to a client with a 16 KiB
/// receive buffer that waits half a second before reading and then reads
/// in small steps; every byte must arrive.
pub fn slow_reader_complete(options: &Options) -> Outcome {
    match overflow(options, false) {
        Err(outcome) => outcome,
        Ok((exchanged, payload)) if exchanged.received == *payload => Outcome::pass(format!(
            "{} MiB echoed to a reader that stalled {} ms and read slowly: every byte, in order",
            payload.len() >> 20,
            READER_STALL.as_millis()
        )),
        Ok((exchanged, payload)) => {
            Outcome::fail(difference(&payload, &exchanged.received, exchanged.ending))
        }
    }
}

/// `half-close-flush`: as `slow-reader-complete`, with the client's FIN
/// sent right after its last line: every echo owed when the FIN arrived
/// must still come, before the server's own FIN. The same transfer
/// without a FIN runs first as the control: a server that loses echoes
/// without any FIN fails `slow-reader-complete`, and this check is skipped.
pub fn half_close_flush(options: &Options) -> Outcome {
    match overflow(options, false) {
        Err(outcome) => return outcome,
        Ok((exchanged, payload)) if exchanged.received != *payload => {
            return Outcome::skip(format!(
                "inconclusive: echoes are lost even without a FIN ({}; slow-reader-complete judges that)",
                difference(&payload, &exchanged.received, exchanged.ending)
            ));
        }
        Ok(_) => {}
    }
    match overflow(options, true) {
        Err(outcome) => outcome,
        Ok((exchanged, payload)) if exchanged.received == *payload => {
            let close = match exchanged.closed_after {
                Some(Ending::Eof) => "then the server's FIN",
                Some(Ending::Error(_)) => "then a reset",
                _ => "and the connection stayed open",
            };
            Outcome::pass(format!(
                "FIN after {} MiB of lines: every echo arrived, {close}",
                payload.len() >> 20
            ))
        }
        Ok((exchanged, payload)) => Outcome::fail(format!(
            "FIN after {} MiB of lines (which arrive whole without a FIN): {}",
            payload.len() >> 20,
            difference(&payload, &exchanged.received, exchanged.ending)
        )),
    }
}

/// `backpressure`: a client that writes and never reads has its writes
/// stopped once the server holds a bounded amount. The bound is the
/// kernel's buffers for the connection (from `/proc/sys/net/ipv4/tcp_rmem`
/// and `tcp_wmem`) plus 64 MiB. A server that takes more than that is then
/// read from: it fails if it held the echoes (unbounded memory), and
/// passes if it had discarded them, a loss `slow-reader-complete` judges.
pub fn backpressure(options: &Options) -> Outcome {
    let bound = HOLD_BOUND_BYTES + kernel_buffer_bytes() + SMALL_RECEIVE_BYTES as u64;
    let cap = bound + 8 * 1024 * 1024;
    let mut stream = match client::connect_small_receive(options.target, SMALL_RECEIVE_BYTES) {
        Ok(stream) => stream,
        Err(err) => return Outcome::fail(format!("connect failed: {err}")),
    };
    let chunk = numbered_lines("never read", 1024, 64, options.framing.terminator());
    let (sent, stopped) =
        client::send_until_stuck(&mut stream, &chunk, cap, Duration::from_secs(1));
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    match stopped {
        Stopped::Stuck if sent <= bound => {
            return Outcome::pass(format!(
                "writes stopped after {:.1} MiB, within the bound of {:.0} MiB",
                mib(sent),
                mib(bound)
            ));
        }
        Stopped::Error(kind) if sent <= bound => {
            return Outcome::pass(format!(
                "the server closed the connection after {:.1} MiB ({kind})",
                mib(sent)
            ));
        }
        _ => {}
    }
    let held = count_until_quiet(
        &mut stream,
        Duration::from_secs(1),
        Instant::now() + Duration::from_secs(20),
    );
    if held > bound {
        Outcome::fail(format!(
            "took {:.0} MiB from a client that never read, and held {:.0} MiB of echoes for it (bound {:.0} MiB)",
            mib(sent),
            mib(held),
            mib(bound)
        ))
    } else {
        Outcome::pass(format!(
            "took {:.0} MiB without reading, but held only {:.1} MiB: it discarded echoes (slow-reader-complete judges that)",
            mib(sent),
            mib(held)
        ))
    }
}

/// The `OVERFLOW_BYTES` transfer to a slow reader, with a FIN after the
/// last line if `finish`.
fn overflow(options: &Options, finish: bool) -> Result<(client::Exchanged, Arc<Vec<u8>>), Outcome> {
    let lines = OVERFLOW_BYTES / 64;
    let payload = numbered_lines("slow", lines, 64, options.framing.terminator());
    exchange(options, Some(SMALL_RECEIVE_BYTES), |started| Exchange {
        payload: Arc::new(payload),
        window: None,
        stall: READER_STALL,
        pause: Duration::from_millis(1),
        finish,
        deadline: started + Duration::from_secs(20),
    })
    .map(|(exchanged, payload, _)| (exchanged, payload))
}

type Exchanged = (client::Exchanged, Arc<Vec<u8>>, Instant);

/// Connects (with a small receive buffer if asked) and runs the exchange
/// `make` builds; a failed connect is the check's fail.
fn exchange(
    options: &Options,
    receive_buffer_bytes: Option<usize>,
    make: impl FnOnce(Instant) -> Exchange,
) -> Result<Exchanged, Outcome> {
    let connected = match receive_buffer_bytes {
        Some(bytes) => client::connect_small_receive(options.target, bytes),
        None => client::connect(options.target),
    };
    let mut stream = connected.map_err(|err| Outcome::fail(format!("connect failed: {err}")))?;
    let started = Instant::now();
    let exchange = make(started);
    let payload = Arc::clone(&exchange.payload);
    let exchanged = exchange
        .run(&mut stream)
        .map_err(|err| Outcome::fail(format!("socket error: {err}")))?;
    let _ = stream.flush();
    Ok((exchanged, payload, started))
}

/// The most the kernel may buffer for the non-reading client's connection,
/// as configured: the server's largest receive buffer and both ends'
/// largest send buffers (the client's receive buffer is fixed small).
/// Falls back to 32 MiB a buffer if `/proc` cannot be read.
fn kernel_buffer_bytes() -> u64 {
    let max = |name: &str| {
        fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|text| text.split_whitespace().nth(2)?.parse::<u64>().ok())
            .unwrap_or(32 * 1024 * 1024)
    };
    max("tcp_rmem") + 2 * max("tcp_wmem")
}
