//! echo-check: named conformance and robustness checks against a TCP line
//! echo server it did not start and knows nothing about, the way h2spec
//! checks HTTP/2 servers.
//!
//! Each check tests one property and fails only for a fault in that
//! property. Two rules make that hold:
//!
//! - **Judge the byte stream, not its timing.** TCP may split or merge
//!   echoes however it likes, so every check but one compares the bytes
//!   that came back with the bytes owed, whatever pieces they came in. The
//!   one exception is `partial-line-held`, whose property *is* timing:
//!   nothing of a line comes back before its terminator.
//! - **A control before a verdict that another fault could fake.** Where a
//!   second fault would produce the same evidence, the check first runs a
//!   control that shows whether that fault is present, and if it is, the
//!   check is skipped and says which check judges it. `half-close-flush`
//!   first checks that echoes survive without a FIN; `bare-lf-is-data` and
//!   `long-line` only judge a server that holds unfinished lines;
//!   `backpressure` fails a server only for *holding* unbounded echoes, not
//!   for discarding them (which `slow-reader-complete` judges).
//!
//! Read in this order: [`checks`] (the list of ids and what each proves),
//! then its modules, then [`client`] (every wait has a deadline).
//!
//! The bounds are generous on purpose: a server with a fault misses them by
//! seconds (a blocked loop) or by tens of megabytes (unbounded buffering),
//! and a correct server on a loaded two-core machine meets them easily.

#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod checks;
pub mod client;
pub mod report;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use checks::{CHECKS, Check};

/// How the server under test ends a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A line ends at CR LF; a bare CR or a bare LF is data.
    Crlf,
    /// A line ends at LF.
    Lf,
}

impl Framing {
    /// The bytes that end a line.
    pub fn terminator(self) -> &'static [u8] {
        match self {
            Framing::Crlf => b"\r\n",
            Framing::Lf => b"\n",
        }
    }

    /// The name `--framing` takes.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Crlf => "crlf",
            Framing::Lf => "lf",
        }
    }
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server under test.
    pub target: SocketAddr,
    /// How the server ends a line.
    pub framing: Framing,
    /// The longest line the server accepts, terminator included, if it has
    /// a limit and the caller knows it; without it `long-line` is skipped.
    pub max_line_bytes: Option<usize>,
    /// The ids to run; `None` runs every check.
    pub only: Option<Vec<&'static str>>,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server has the property.
    Pass,
    /// The server lacks the property; the detail is the evidence.
    Fail,
    /// The check could not judge (not applicable, or another fault hides
    /// the evidence); the detail says why.
    Skip,
}

impl Verdict {
    /// `pass`, `fail` or `skip`, as the table and the JSON print it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
        }
    }
}

/// A verdict with its one line of evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// What was sent and what was seen, in one line.
    pub detail: String,
}

impl Outcome {
    /// A pass with its evidence.
    pub fn pass(detail: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::Pass,
            detail: detail.into(),
        }
    }
    /// A fail with its evidence.
    pub fn fail(detail: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::Fail,
            detail: detail.into(),
        }
    }
    /// A skip with its reason.
    pub fn skip(detail: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::Skip,
            detail: detail.into(),
        }
    }
}

/// One check's result in a run.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check's stable id.
    pub id: &'static str,
    /// What passing it proves.
    pub proves: &'static str,
    /// The verdict and its evidence.
    pub outcome: Outcome,
    /// How long the check took.
    pub elapsed: Duration,
}

/// Every check run, in order.
#[derive(Debug, Clone)]
pub struct Report {
    /// The server under test.
    pub target: SocketAddr,
    /// The results, in the order of [`CHECKS`].
    pub results: Vec<CheckResult>,
}

impl Report {
    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.count(Verdict::Fail)
    }
    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.count(Verdict::Pass)
    }
    /// The ids of the checks that failed.
    pub fn failed_ids(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|result| result.outcome.verdict == Verdict::Fail)
            .map(|result| result.id)
            .collect()
    }
    fn count(&self, verdict: Verdict) -> usize {
        self.results
            .iter()
            .filter(|result| result.outcome.verdict == verdict)
            .count()
    }
}

/// Runs the chosen checks one after another, each on connections of its
/// own, and reports every verdict. A check that fails does not stop the
/// run: each check closes its connections before the next begins.
pub fn run(options: &Options) -> Report {
    raise_open_files_limit();
    let results = CHECKS
        .iter()
        .filter(|check| {
            options
                .only
                .as_ref()
                .is_none_or(|only| only.contains(&check.id))
        })
        .map(|check| {
            let started = Instant::now();
            let outcome = (check.run)(options);
            CheckResult {
                id: check.id,
                proves: check.proves,
                outcome,
                elapsed: started.elapsed(),
            }
        })
        .collect();
    Report {
        target: options.target,
        results,
    }
}

/// `concurrency` opens 1,000 connections and `slowloris-isolation` a few
/// hundred, more than the usual soft limit of 1,024 descriptors allows once
/// the server shares the process (as in the tests). The hard limit is the
/// most an unprivileged process may ask for; failing to raise it leaves the
/// soft limit, and the checks report what they could not open.
fn raise_open_files_limit() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}
