//! The command line of `echo-bench`: what to load, how hard, and for how long.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use echod_kit::args::{UsageError, positive, seconds, string};

/// Default target: echod's default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:12321";
/// Default measured time when neither `--duration` nor `--lines-per-conn` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// A line owed longer than this is counted as a timeout and its connection closed.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest run accepted: a benchmark, not a service.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Longest line accepted, terminator included.
const MAX_LINE_BYTES: usize = 1 << 20;

pub const USAGE: &str = "\
Usage: echo-bench [OPTIONS]

A load generator for line echo servers. It opens CONNS connections, keeps
PIPELINE lines in flight on each (or sends at a fixed RATE), checks that every
byte comes back in order, and reports throughput and latency percentiles.
A run always ends by itself: after --duration (default 10 s) or once each
connection has echoed --lines-per-conn lines.

Options:
  -a, --addr ADDR            Server address (default: 127.0.0.1:12321). Must be
                             loopback unless --allow-remote is given
  -c, --conns N              Connections (default: 1)
  -P, --pipeline P           Lines in flight per connection; 1 is ping-pong
                             (default: 1). Ignored with --rate
  -s, --line-bytes S         Bytes per line, terminator included (default: 64)
      --framing MODE         crlf, lf or raw, as the server frames lines
                             (default: crlf)
  -d, --duration SECS        Measure for SECS after the warm-up (default: 10)
  -n, --lines-per-conn N     Instead of a duration: each connection echoes N
                             lines, then the run ends
  -w, --warmup SECS          Load without measuring first (default: 0)
  -r, --rate LINES_PER_SEC   Open loop: send at this total rate, spread over
                             the connections; latency is measured from when
                             each line was due, so a stalled server cannot hide
                             its stalls (no coordinated omission)
  -t, --threads N            Event-loop threads (default: 1)
      --timeout SECS         A line not echoed within SECS, or a connection not
                             established within SECS, is an error (default: 10)
      --json                 Print the result as one JSON line instead of text
  -q, --quiet                No progress lines on stderr
      --allow-remote         Allow a target that is not a loopback address
  -h, --help                 Print this help
  -V, --version              Print the version

Connections beyond 16,000 to an IPv4 loopback target are spread over source
addresses 127.0.0.1, 127.0.0.2, ... so that ephemeral ports do not run out.

The header line naming the run goes to stderr at the start and begins the
summary on stdout, except when both are on one terminal: then it is printed
once. Progress lines end with the phase they measured: (connecting),
(warm-up), (draining), or nothing while measuring.

Exit status: 0 if every line came back intact, 1 if any error was counted
(mismatch, early close, timeout, failed connect; a target that refuses every
connection is reported as such, on stderr as well), 2 for a bad command line
or a run that cannot start.
";

/// How the server splits input into lines; decides the terminator appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Crlf,
    Lf,
    Raw,
}

impl Framing {
    /// The bytes that end each generated line.
    pub fn terminator(self) -> &'static [u8] {
        match self {
            Framing::Crlf => b"\r\n",
            Framing::Lf | Framing::Raw => b"\n",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Framing::Crlf => "crlf",
            Framing::Lf => "lf",
            Framing::Raw => "raw",
        }
    }
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Measure for this long after the warm-up.
    Duration(Duration),
    /// Each connection echoes this many lines.
    LinesPerConn(u64),
}

/// A parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub conns: usize,
    pub pipeline: usize,
    pub line_bytes: usize,
    pub framing: Framing,
    pub length: Length,
    pub warmup: Duration,
    pub rate: Option<f64>,
    pub threads: usize,
    pub timeout: Duration,
    pub json: bool,
    pub quiet: bool,
}

pub enum Command {
    Run(Options),
    Help,
    Version,
}

pub fn parse_args<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut addr = DEFAULT_ADDR.to_string();
    let mut conns = 1;
    let mut pipeline = 1;
    let mut line_bytes = 64;
    let mut framing = Framing::Crlf;
    let mut duration = None;
    let mut lines_per_conn = None;
    let mut warmup = Duration::ZERO;
    let mut rate = None;
    let mut threads = 1;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut json = false;
    let mut quiet = false;
    let mut allow_remote = false;

    let mut parser = lexopt::Parser::from_iter(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('a') | Long("addr") => addr = string(parser.value()?, "--addr")?,
            Short('c') | Long("conns") => conns = positive(parser.value()?, "--conns")?,
            Short('P') | Long("pipeline") => pipeline = positive(parser.value()?, "--pipeline")?,
            Short('s') | Long("line-bytes") => {
                line_bytes = positive(parser.value()?, "--line-bytes")?
            }
            Long("framing") => {
                framing = match string(parser.value()?, "--framing")?.as_str() {
                    "crlf" => Framing::Crlf,
                    "lf" => Framing::Lf,
                    "raw" => Framing::Raw,
                    other => {
                        return Err(UsageError(format!(
                            "invalid --framing '{other}': expected crlf, lf or raw"
                        )));
                    }
                }
            }
            Short('d') | Long("duration") => {
                duration = Some(seconds(parser.value()?, "--duration")?)
            }
            Short('n') | Long("lines-per-conn") => {
                lines_per_conn = Some(positive::<u64>(parser.value()?, "--lines-per-conn")?)
            }
            Short('w') | Long("warmup") => warmup = seconds(parser.value()?, "--warmup")?,
            Short('r') | Long("rate") => {
                let value = string(parser.value()?, "--rate")?;
                match value.parse::<f64>() {
                    Ok(r) if r.is_finite() && r > 0.0 => rate = Some(r),
                    _ => {
                        return Err(UsageError(format!(
                            "invalid --rate '{value}': expected lines per second above 0"
                        )));
                    }
                }
            }
            Short('t') | Long("threads") => threads = positive(parser.value()?, "--threads")?,
            Long("timeout") => timeout = seconds(parser.value()?, "--timeout")?,
            Long("json") => json = true,
            Short('q') | Long("quiet") => quiet = true,
            Long("allow-remote") => allow_remote = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected().into()),
        }
    }

    let addr: SocketAddr = addr.parse().map_err(|_| {
        UsageError(format!(
            "invalid --addr '{addr}': expected IP:PORT such as 127.0.0.1:12321 or [::1]:12321"
        ))
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(UsageError(format!(
            "--addr {addr} is not a loopback address; give --allow-remote to load it anyway"
        )));
    }
    let length = match (duration, lines_per_conn) {
        (Some(_), Some(_)) => {
            return Err(UsageError(
                "give --duration or --lines-per-conn, not both".into(),
            ));
        }
        (Some(d), None) if d.is_zero() || d > MAX_DURATION => {
            return Err(UsageError(format!(
                "invalid --duration: must be above 0 and at most {} s",
                MAX_DURATION.as_secs()
            )));
        }
        (Some(d), None) => Length::Duration(d),
        (None, Some(n)) => Length::LinesPerConn(n),
        (None, None) => Length::Duration(DEFAULT_DURATION),
    };
    if warmup > MAX_DURATION {
        return Err(UsageError("invalid --warmup: too long".into()));
    }
    if timeout.is_zero() {
        return Err(UsageError("invalid --timeout: must be above 0".into()));
    }
    if line_bytes <= framing.terminator().len() || line_bytes > MAX_LINE_BYTES {
        return Err(UsageError(format!(
            "invalid --line-bytes {line_bytes}: must be between {} and {MAX_LINE_BYTES}, terminator included",
            framing.terminator().len() + 1
        )));
    }
    if threads > conns {
        threads = conns;
    }
    Ok(Command::Run(Options {
        addr,
        conns,
        pipeline,
        line_bytes,
        framing,
        length,
        warmup,
        rate,
        threads,
        timeout,
        json,
        quiet,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let args = std::iter::once("echo-bench").chain(args.iter().copied());
        match parse_args(args) {
            Ok(Command::Run(options)) => Ok(options),
            Ok(_) => Err("help or version".into()),
            Err(err) => Err(err.0),
        }
    }

    #[test]
    fn defaults_are_a_bounded_loopback_run() {
        let options = parse(&[]).expect("defaults parse");
        assert_eq!(options.addr, DEFAULT_ADDR.parse().expect("valid"));
        assert_eq!(options.length, Length::Duration(DEFAULT_DURATION));
        assert_eq!(
            (options.conns, options.pipeline, options.line_bytes),
            (1, 1, 64)
        );
    }

    #[test]
    fn refuses_remote_targets_unless_allowed() {
        let err = parse(&["--addr", "192.0.2.1:7"]).expect_err("remote refused");
        assert!(err.contains("--allow-remote"), "{err}");
        assert!(parse(&["--addr", "192.0.2.1:7", "--allow-remote"]).is_ok());
        assert!(parse(&["--addr", "[::1]:7"]).is_ok());
    }

    #[test]
    fn refuses_unbounded_or_contradictory_lengths() {
        assert!(parse(&["--duration", "0"]).is_err());
        assert!(parse(&["--duration", "inf"]).is_err());
        assert!(parse(&["--duration", "1", "--lines-per-conn", "5"]).is_err());
        assert!(parse(&["--lines-per-conn", "0"]).is_err());
        assert_eq!(
            parse(&["-n", "5"]).expect("valid").length,
            Length::LinesPerConn(5)
        );
    }

    #[test]
    fn line_must_hold_more_than_its_terminator() {
        assert!(parse(&["--line-bytes", "2"]).is_err());
        assert!(parse(&["--line-bytes", "3"]).is_ok());
        assert!(parse(&["--line-bytes", "2", "--framing", "lf"]).is_ok());
    }
}
