//! The list of checks: each a stable id, the one property it tests, and the
//! function that tests it. The ids never change meaning; a new property
//! gets a new id.
//!
//! - [`lines`]: what one line does (`echo`, `split-terminator`,
//!   `binary-bytes`, `partial-line-held`, `bare-lf-is-data`, `long-line`).
//! - [`streams`]: what a stream of lines does (`pipeline`,
//!   `slow-reader-complete`, `half-close-flush`, `backpressure`).
//! - [`isolation`]: what other clients do to one (`non-reader-isolation`,
//!   `concurrency`, `flooder-fairness`, `slowloris-isolation`).

pub mod isolation;
pub mod lines;
pub mod streams;

use std::time::Duration;

use crate::{Options, Outcome};

/// How long a well-behaved client may wait for an echo while another
/// client misbehaves. A server whose loop is blocked misses it by seconds;
/// a correct one on a loaded machine answers in milliseconds.
pub const ISOLATION_BOUND: Duration = Duration::from_secs(1);

/// How long a check waits to see that nothing comes back.
pub const QUIET: Duration = Duration::from_millis(300);

/// A named check.
#[derive(Debug)]
pub struct Check {
    /// The stable id, as `--only` takes it.
    pub id: &'static str,
    /// What a pass proves, in one line.
    pub proves: &'static str,
    /// Runs the check against `options.target`.
    pub run: fn(&Options) -> Outcome,
}

/// Every check, in the order a run takes them: single lines first, so that
/// a basic fault shows before the load checks, and the checks that leave a
/// stalled client behind last but one. `long-line` is last: a server that
/// falls over at a long line takes no other verdict with it.
pub const CHECKS: &[Check] = &[
    Check {
        id: "echo",
        proves: "a line comes back byte for byte",
        run: lines::echo,
    },
    Check {
        id: "split-terminator",
        proves: "a terminator split across writes still ends the line",
        run: lines::split_terminator,
    },
    Check {
        id: "binary-bytes",
        proves: "every byte value but the terminator's is data, echoed unchanged",
        run: lines::binary_bytes,
    },
    Check {
        id: "partial-line-held",
        proves: "nothing of a line comes back before its terminator",
        run: lines::partial_line_held,
    },
    Check {
        id: "bare-lf-is-data",
        proves: "under CRLF framing a bare LF does not end a line",
        run: lines::bare_lf_is_data,
    },
    Check {
        id: "pipeline",
        proves: "thousands of lines in flight come back complete and in order",
        run: streams::pipeline,
    },
    Check {
        id: "slow-reader-complete",
        proves: "a reader slower than the server gets every byte, none dropped",
        run: streams::slow_reader_complete,
    },
    Check {
        id: "half-close-flush",
        proves: "after the client's FIN every owed echo arrives before the server's FIN",
        run: streams::half_close_flush,
    },
    Check {
        id: "concurrency",
        proves: "1,000 clients at once are each echoed",
        run: isolation::concurrency,
    },
    Check {
        id: "flooder-fairness",
        proves: "a client pipelining flat out does not starve a ping-pong client",
        run: isolation::flooder_fairness,
    },
    Check {
        id: "slowloris-isolation",
        proves: "clients trickling a byte at a time do not delay others",
        run: isolation::slowloris_isolation,
    },
    Check {
        id: "non-reader-isolation",
        proves: "a client that sends and never reads does not delay another's echo",
        run: isolation::non_reader_isolation,
    },
    Check {
        id: "backpressure",
        proves: "a client that never reads cannot make the server hold unbounded input",
        run: streams::backpressure,
    },
    Check {
        id: "long-line",
        proves: "a line past the limit is not echoed, and the server stays up",
        run: lines::long_line,
    },
];

/// The check named `id`, if there is one.
pub fn by_id(id: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|check| check.id == id)
}
