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
/// Bytes per line of the bulk group when `--bulk-line-bytes` is not given:
/// a page, the size of a bulk transfer's writes.
const DEFAULT_BULK_LINE_BYTES: usize = 4096;
/// Lines in flight per bulk connection when `--bulk-pipeline` is not given:
/// 256 KiB of 4 KiB lines, more than a loopback socket buffers, so the bulk
/// group always has bytes waiting at the server.
const DEFAULT_BULK_PIPELINE: usize = 64;

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

Connection churn (a balancer's health checks, short-lived clients):
      --churn K              Each connection echoes K lines, closes, and a new
                             one takes its place, keeping CONNS cycles in
                             flight. Reports cycles/s and connect and
                             whole-cycle latency. With --rate, the rate is of
                             new connections per second (open loop, latency
                             from when each was due) and CONNS caps the cycles
                             in flight
      --cycles N             With --churn, instead of a duration: the run ends
                             after N cycles in all

A bulk group beside the measured one (a noisy neighbour), reported apart:
      --bulk-conns N         Also run N bulk connections (default: 0, none);
                             the run must be timed (--duration)
      --bulk-line-bytes S    Bytes per bulk line (default: 4096)
      --bulk-pipeline P      Bulk lines in flight per connection (default: 64)
      --bulk-threads N       The bulk group's event-loop threads (default: 1)
      --bulk-nice N          Run the bulk threads at nice N, 0 to 19, so that
                             on a shared CPU they yield to the measured group
                             (default: 0)

Connections beyond 16,000 to an IPv4 loopback target are spread over source
addresses 127.0.0.1, 127.0.0.2, ... so that ephemeral ports do not run out;
with --churn, every IPv4 loopback cycle takes the next of 127.0.0.1 to
127.0.0.32 in turn, so that connections in TIME_WAIT do not exhaust them.

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
    /// With `--churn`: this many connection cycles in all.
    Cycles(u64),
}

/// The bulk group of a mixed run (`--bulk-conns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bulk {
    pub conns: usize,
    pub line_bytes: usize,
    pub pipeline: usize,
    pub threads: usize,
    /// The bulk threads' nice value.
    pub nice: i32,
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
    /// `--churn K`: each connection echoes K lines and closes.
    pub churn: Option<u64>,
    /// `--bulk-conns`: a bulk group runs beside this one.
    pub bulk: Option<Bulk>,
}

impl Options {
    /// The options of the bulk group's threads: the same target, timing and
    /// framing, with the bulk group's shape, closed loop.
    pub fn bulk_group(&self) -> Option<Options> {
        let bulk = self.bulk?;
        Some(Options {
            conns: bulk.conns,
            pipeline: bulk.pipeline,
            line_bytes: bulk.line_bytes,
            rate: None,
            threads: bulk.threads.min(bulk.conns),
            churn: None,
            bulk: None,
            ..self.clone()
        })
    }
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
    let mut churn = None;
    let mut cycles = None;
    let mut bulk_conns = 0;
    let mut bulk_line_bytes = DEFAULT_BULK_LINE_BYTES;
    let mut bulk_pipeline = DEFAULT_BULK_PIPELINE;
    let mut bulk_threads = 1;
    let mut bulk_nice = 0;

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
            Long("churn") => churn = Some(positive::<u64>(parser.value()?, "--churn")?),
            Long("cycles") => cycles = Some(positive::<u64>(parser.value()?, "--cycles")?),
            Long("bulk-conns") => bulk_conns = positive(parser.value()?, "--bulk-conns")?,
            Long("bulk-line-bytes") => {
                bulk_line_bytes = positive(parser.value()?, "--bulk-line-bytes")?
            }
            Long("bulk-pipeline") => bulk_pipeline = positive(parser.value()?, "--bulk-pipeline")?,
            Long("bulk-threads") => bulk_threads = positive(parser.value()?, "--bulk-threads")?,
            Long("bulk-nice") => {
                bulk_nice = echod_kit::args::number::<i32>(parser.value()?, "--bulk-nice")?;
                if !(0..=19).contains(&bulk_nice) {
                    return Err(UsageError(format!(
                        "invalid --bulk-nice {bulk_nice}: must be 0 to 19"
                    )));
                }
            }
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
    if churn.is_some() && lines_per_conn.is_some() {
        return Err(UsageError(
            "--churn K sets the lines per connection: give --duration or --cycles, not --lines-per-conn"
                .into(),
        ));
    }
    if cycles.is_some() && churn.is_none() {
        return Err(UsageError(
            "--cycles counts churn cycles: give --churn too".into(),
        ));
    }
    let length = match (duration, lines_per_conn, cycles) {
        (Some(_), _, Some(_)) => {
            return Err(UsageError("give --duration or --cycles, not both".into()));
        }
        (None, None, Some(n)) => Length::Cycles(n),
        (Some(_), Some(_), _) => {
            return Err(UsageError(
                "give --duration or --lines-per-conn, not both".into(),
            ));
        }
        (Some(d), None, None) if d.is_zero() || d > MAX_DURATION => {
            return Err(UsageError(format!(
                "invalid --duration: must be above 0 and at most {} s",
                MAX_DURATION.as_secs()
            )));
        }
        (Some(d), None, None) => Length::Duration(d),
        (None, Some(n), _) => Length::LinesPerConn(n),
        (None, None, None) => Length::Duration(DEFAULT_DURATION),
    };
    let bulk = if bulk_conns == 0 {
        None
    } else {
        if !matches!(length, Length::Duration(_)) {
            return Err(UsageError(
                "--bulk-conns needs a timed run: give --duration, not --lines-per-conn or --cycles"
                    .into(),
            ));
        }
        if bulk_line_bytes <= framing.terminator().len() || bulk_line_bytes > MAX_LINE_BYTES {
            return Err(UsageError(format!(
                "invalid --bulk-line-bytes {bulk_line_bytes}: must be between {} and {MAX_LINE_BYTES}, terminator included",
                framing.terminator().len() + 1
            )));
        }
        Some(Bulk {
            conns: bulk_conns,
            line_bytes: bulk_line_bytes,
            pipeline: bulk_pipeline,
            threads: bulk_threads.min(bulk_conns),
            nice: bulk_nice,
        })
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
        churn,
        bulk,
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
    fn churn_counts_cycles_not_lines_per_connection() {
        let options = parse(&["--churn", "2", "--cycles", "100"]).expect("valid");
        assert_eq!(
            (options.churn, options.length),
            (Some(2), Length::Cycles(100))
        );
        assert!(parse(&["--churn", "1", "-n", "5"]).is_err());
        assert!(parse(&["--cycles", "5"]).is_err(), "cycles without churn");
        assert!(parse(&["--churn", "1", "--cycles", "5", "-d", "1"]).is_err());
        assert!(parse(&["--churn", "0"]).is_err());
        assert_eq!(
            parse(&["--churn", "1"]).expect("valid").length,
            Length::Duration(DEFAULT_DURATION)
        );
    }

    #[test]
    fn a_bulk_group_has_its_own_shape_and_needs_a_timed_run() {
        let options =
            parse(&["-c", "50", "--bulk-conns", "4", "--bulk-nice", "19"]).expect("valid");
        let bulk = options.bulk_group().expect("a bulk group");
        assert_eq!(
            (bulk.conns, bulk.line_bytes, bulk.pipeline, bulk.threads),
            (4, DEFAULT_BULK_LINE_BYTES, DEFAULT_BULK_PIPELINE, 1)
        );
        assert_eq!(options.bulk.map(|b| b.nice), Some(19));
        assert!(parse(&["-c", "50"]).expect("valid").bulk_group().is_none());
        assert!(parse(&["--bulk-conns", "4", "-n", "10"]).is_err());
        assert!(parse(&["--bulk-conns", "4", "--bulk-nice", "20"]).is_err());
        assert!(parse(&["--bulk-conns", "4", "--bulk-line-bytes", "2"]).is_err());
    }

    #[test]
    fn line_must_hold_more_than_its_terminator() {
        assert!(parse(&["--line-bytes", "2"]).is_err());
        assert!(parse(&["--line-bytes", "3"]).is_ok());
        assert!(parse(&["--line-bytes", "2", "--framing", "lf"]).is_ok());
    }
}
