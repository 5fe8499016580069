//! The command line: what to attack, for how long, with how many clients,
//! and the bounds that decide whether the run passed.
//!
//! Every run is bounded: `--duration` is required and capped, and the target
//! must be a loopback address.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use echod_kit::args::{UsageError, number, seconds};

/// Longest run accepted, so that a typo cannot start an unbounded soak.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Most well-behaved connections: with the abusers and the churn bursts,
/// this stays inside the 28,000-odd ephemeral ports of one source address.
const MAX_CONNS: usize = 10_000;

/// What the run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the clients run, before the final drain and checks.
    pub duration: Duration,
    /// Well-behaved connections, open for the whole run.
    pub conns: usize,
    /// Lines each well-behaved connection sends per second.
    pub rate: f64,
    /// Abusive clients running at once, each cycling through the abuses.
    pub abusers: usize,
    /// Connections in each churn burst.
    pub churn: usize,
    /// How long echod is kept out of descriptors (0: never).
    pub exhaust: Duration,
    /// An echod already running, instead of one started here.
    pub addr: Option<SocketAddr>,
    /// Its process id, for sampling and the exhaustion period.
    pub pid: Option<u32>,
    /// The echod executable to start.
    pub echod: PathBuf,
    /// `--max-connections` for the echod started here.
    pub max_connections: usize,
    /// `--max-line-bytes` of the target, which the over-long lines exceed.
    pub max_line_bytes: usize,
    /// The run fails if the well-behaved clients' p99 latency exceeds this.
    pub p99_limit: Duration,
    /// The run fails if echod's RSS ends more than this above its baseline.
    pub rss_slack_bytes: usize,
    /// Seed for every random choice, printed so that a run can be repeated.
    pub seed: u64,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the soak.
    Run(Options),
    /// Print `USAGE` and exit.
    Help,
}

/// The `--help` text.
pub const USAGE: &str = "\
echo-chaos: a bounded chaos soak of echod. Well-behaved clients check every
echoed byte and their latency, while abusive ones misbehave around them; echod's
memory, descriptors and CPU are sampled every second.

Usage: echo-chaos --duration SECS [OPTIONS]

Options:
      --duration SECS        How long to run, at most 3600 (required)
      --conns N              Well-behaved connections [default: 500]
      --rate N               Lines per second per well-behaved connection
                             [default: 10]
      --abusers N            Abusive clients at once [default: 64]
      --churn N              Connections per churn burst, every 2 s
                             [default: 500]
      --exhaust SECS         How long echod is kept out of descriptors,
                             mid-run; 0 disables [default: duration / 5, at most 5]
      --addr ADDR            Attack an echod already running on this loopback
                             address instead of starting one
      --pid PID              With --addr: its process id, for sampling and
                             the descriptor exhaustion
      --echod PATH           The echod to start [default: next to this program]
      --max-connections N    For the echod started here
                             [default: conns + abusers + 100]
      --max-line-bytes SIZE  The target's line limit, in bytes [default: 65536]
      --p99-limit-ms MS      Fail if the well-behaved p99 latency is higher
                             [default: 200]
      --rss-slack-mib MIB    Fail if echod's RSS ends more than this above its
                             baseline [default: 16]
      --seed N               Seed for every random choice [default: from the clock]
  -h, --help                 Print this help and exit

Exit status: 0 if every check passed, 1 if one failed, 2 for a bad command
line, 3 if the run could not be set up.
";

/// Parses the arguments, program name first.
///
/// # Errors
///
/// A `UsageError` naming the first option or value that is wrong.
pub fn parse_args<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut duration = None;
    let mut options = Options {
        duration: Duration::ZERO,
        conns: 500,
        rate: 10.0,
        abusers: 64,
        churn: 500,
        exhaust: Duration::MAX,
        addr: None,
        pid: None,
        echod: PathBuf::new(),
        max_connections: 0,
        max_line_bytes: 64 * 1024,
        p99_limit: Duration::from_millis(200),
        rss_slack_bytes: 16 << 20,
        seed: 0,
    };
    let mut echod = None;
    let mut max_connections = None;
    let mut seed = None;
    let mut parser = lexopt::Parser::from_iter(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("duration") => duration = Some(seconds(parser.value()?, "--duration")?),
            Long("conns") => options.conns = number(parser.value()?, "--conns")?,
            Long("rate") => options.rate = number(parser.value()?, "--rate")?,
            Long("abusers") => options.abusers = number(parser.value()?, "--abusers")?,
            Long("churn") => options.churn = number(parser.value()?, "--churn")?,
            Long("exhaust") => options.exhaust = seconds(parser.value()?, "--exhaust")?,
            Long("addr") => options.addr = Some(number(parser.value()?, "--addr")?),
            Long("pid") => options.pid = Some(number(parser.value()?, "--pid")?),
            Long("echod") => echod = Some(PathBuf::from(parser.value()?)),
            Long("max-connections") => {
                max_connections = Some(number(parser.value()?, "--max-connections")?);
            }
            Long("max-line-bytes") => {
                options.max_line_bytes = number(parser.value()?, "--max-line-bytes")?;
            }
            Long("p99-limit-ms") => {
                options.p99_limit =
                    Duration::from_millis(number(parser.value()?, "--p99-limit-ms")?);
            }
            Long("rss-slack-mib") => {
                options.rss_slack_bytes =
                    number::<usize>(parser.value()?, "--rss-slack-mib")? << 20;
            }
            Long("seed") => seed = Some(number(parser.value()?, "--seed")?),
            Short('h') | Long("help") => return Ok(Command::Help),
            _ => return Err(arg.unexpected().into()),
        }
    }

    let Some(duration) = duration else {
        return Err(UsageError(
            "--duration is required: the soak never runs unbounded".into(),
        ));
    };
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(UsageError(format!(
            "invalid --duration: must be more than 0 and at most {} seconds",
            MAX_DURATION.as_secs()
        )));
    }
    options.duration = duration;
    if options.conns == 0 || options.conns > MAX_CONNS {
        return Err(UsageError(format!(
            "invalid --conns: must be 1 to {MAX_CONNS}"
        )));
    }
    if !(options.rate > 0.0 && options.rate <= 1000.0) {
        return Err(UsageError(
            "invalid --rate: must be more than 0 and at most 1000".into(),
        ));
    }
    if options.max_line_bytes < 2 {
        return Err(UsageError("invalid --max-line-bytes: at least 2".into()));
    }
    if let Some(addr) = options.addr {
        if !addr.ip().is_loopback() {
            return Err(UsageError(format!(
                "refusing to attack {addr}: only loopback addresses are allowed"
            )));
        }
    } else if options.pid.is_some() {
        return Err(UsageError("--pid goes with --addr".into()));
    }
    if options.exhaust == Duration::MAX {
        options.exhaust = (duration / 5).min(Duration::from_secs(5));
    }
    options.max_connections = max_connections.unwrap_or(options.conns + options.abusers + 100);
    options.echod = match echod {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|err| UsageError(format!("cannot locate this program: {err}")))?
            .with_file_name("echod"),
    };
    options.seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    });
    Ok(Command::Run(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(std::iter::once("echo-chaos").chain(args.iter().copied()))
    }

    #[test]
    fn refuses_to_run_unbounded_or_off_loopback() {
        let refused = [
            (&[][..], "--duration is required"),
            (&["--duration", "0"], "invalid --duration"),
            (&["--duration", "3601"], "invalid --duration"),
            (
                &["--duration", "5", "--addr", "192.0.2.1:7"],
                "only loopback",
            ),
            (&["--duration", "5", "--pid", "1"], "--pid goes with --addr"),
            (&["--duration", "5", "--conns", "0"], "invalid --conns"),
        ];
        for (args, problem) in refused {
            match parse(args) {
                Err(UsageError(message)) => {
                    assert!(message.contains(problem), "{args:?}: {message}")
                }
                Ok(command) => panic!("{args:?} accepted: {command:?}"),
            }
        }
    }

    #[test]
    fn derives_defaults_from_the_duration_and_the_clients() {
        let Ok(Command::Run(options)) =
            parse(&["--duration", "20", "--conns", "300", "--seed", "7"])
        else {
            panic!("a valid command line");
        };
        assert_eq!(options.exhaust, Duration::from_secs(4));
        assert_eq!(options.max_connections, 300 + 64 + 100);
        assert_eq!(options.seed, 7);
        let Ok(Command::Run(long)) = parse(&["--duration", "300"]) else {
            panic!("a valid command line");
        };
        assert_eq!(long.exhaust, Duration::from_secs(5));
    }
}
