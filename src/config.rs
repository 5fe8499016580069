//! Everything the command line can say, its defaults, and how it is parsed.
//!
//! `Config` is plain data; `parse_args` turns arguments into a `Command` or a
//! `UsageError` naming the problem. Nothing here touches a socket. The
//! defaults below are repeated in `--help` and in the README's options table.

use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use log::LevelFilter;

use crate::connection::Limits;
use crate::framing::Framing;
use crate::server::MAX_LISTENERS;

/// Port for the default addresses. Unassigned by IANA, easy to type.
pub const DEFAULT_PORT: u16 = 12321;

/// Longest line, terminator included, in bytes. A client that sends a longer
/// line has every complete line before it echoed, then is disconnected with a
/// warning. 64 KiB holds any line a person or a health check would send, and
/// bounds what a client can make echod hold without ever ending a line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Echoes owed to one client, in bytes, at which echod stops reading from it
/// (backpressure); it reads again once the client has taken half of them. A
/// client that stops reading is paused and loses nothing; it is disconnected
/// only if `idle-timeout` is set and nothing moves for that long.
/// 1 MiB keeps a bulk sender busy through a loopback round trip while bounding
/// a stalled reader's cost; with `max-line-bytes` it bounds a connection's
/// buffer (see `Limits::max_buffer_bytes`).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 1024 * 1024;

/// How long echod delivers owed echoes after SIGINT or SIGTERM before it
/// closes what is left and exits. Five seconds is inside the grace period of
/// every common supervisor before SIGKILL (`docker stop` 10 s, Kubernetes
/// 30 s, systemd 90 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Descriptors kept out of `max-connections` when it is derived from the
/// open-file limit, besides one per listener: the poll instance, its waker,
/// the signal pipe, standard streams and the log relay, with room to spare.
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// Where `echod probe` connects when no address is given: the first of the
/// default listening addresses.
pub const DEFAULT_PROBE_ADDRESS: &str = "127.0.0.1:12321";

/// How long `echod probe` may take in all (resolving, connecting, sending,
/// and reading the echo) before it reports a timeout. One second is the
/// default probe timeout of Kubernetes, and more than a thousand times a
/// loopback round trip: a daemon that takes longer is not healthy.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest `--timeout` `echod probe` accepts, in milliseconds (one hour).
const MAX_PROBE_TIMEOUT_MS: u64 = 3_600_000;

/// Shortest `--stats-interval` accepted: one line a tenth of a second is
/// already more than anyone reads, and a shorter one would be a flood.
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);

/// Most `--workers` accepted: far more event loops than cores only adds
/// threads that compete for the same cores.
pub const MAX_WORKERS: usize = 256;

/// Largest accepted value for the byte limits, so buffer sizes stay far from
/// overflow on any platform.
const MAX_LIMIT_BYTES: usize = 1 << 30;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// 127.0.0.1 and ::1 on this port. If the host has no IPv6, echod warns
    /// and serves IPv4 alone.
    Default {
        /// The port; 0 lets the OS choose one.
        port: u16,
    },
    /// Exactly these addresses; any that cannot be bound is an error.
    Addresses(Vec<SocketAddr>),
}

/// The daemon's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening addresses.
    pub listen: Listen,
    /// How the input is divided into lines.
    pub framing: Framing,
    /// Longest line, terminator included.
    pub max_line_bytes: usize,
    /// Echoes owed to one client at which reading from it pauses.
    pub max_pending_bytes: usize,
    /// Connections served at once; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// Close a connection after this long with no bytes moving; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// How long to deliver owed echoes after a shutdown request.
    pub shutdown_timeout: Duration,
    /// Log a one-line summary this often; `None`: never.
    pub stats_interval: Option<Duration>,
    /// Event loops, each on its own thread with its own listening sockets;
    /// 1 is the classic single loop.
    pub workers: usize,
    /// Log level; `None` defers to `RUST_LOG`, then to `info`.
    pub log_level: Option<LevelFilter>,
    /// Whether `--listen` or `--port` was given, which socket activation
    /// forbids (the inherited sockets decide where echod listens).
    pub listen_given: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: Listen::Default { port: DEFAULT_PORT },
            framing: Framing::Crlf,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_connections: None,
            idle_timeout: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            stats_interval: None,
            workers: 1,
            log_level: None,
            listen_given: false,
        }
    }
}

impl Config {
    /// The per-connection limits this configuration sets.
    pub fn limits(&self) -> Limits {
        Limits {
            framing: self.framing,
            max_line_bytes: self.max_line_bytes,
            max_pending_bytes: self.max_pending_bytes,
            // Half: far enough below the mark that a paused reader is not
            // paused again by the next read.
            resume_pending_bytes: self.max_pending_bytes / 2,
        }
    }
}

impl Listen {
    /// The addresses to bind, in order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match self {
            Listen::Default { port } => vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, *port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, *port)),
            ],
            Listen::Addresses(addresses) => addresses.clone(),
        }
    }
}

/// What `echod probe` checks, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeArgs {
    /// `HOST:PORT`, `IP:PORT` or `[IPv6]:PORT`; a host name is resolved when
    /// the probe runs.
    pub address: String,
    /// Deadline for the whole probe.
    pub timeout: Duration,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the daemon.
    Run(Config),
    /// Check that an echo daemon answers (`echod probe`), then exit.
    Probe(ProbeArgs),
    /// Print `USAGE` and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// A command line that cannot be run, with a one-line explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

/// The `--help` text.
pub const USAGE: &str = "\
echod: a TCP line echo daemon. Every complete line a client sends comes back
to it byte for byte; one thread serves thousands of clients, and --workers
runs one such thread per core.

Usage: echod [OPTIONS]
       echod probe [ADDR] [--timeout MS]

Options:
  -l, --listen ADDR            Listen on ADDR (IP:PORT, e.g. 0.0.0.0:12321 or
                               [::]:7). Repeatable; replaces the default
                               addresses [default: 127.0.0.1:12321, [::1]:12321]
  -p, --port PORT              Port for the default addresses; 0 lets the OS
                               choose [default: 12321]
      --framing MODE           crlf: lines end at CR LF; lf: at LF;
                               raw: no lines, every byte echoed [default: crlf]
      --max-line-bytes SIZE    Longest line, terminator included; a longer line
                               closes the connection [default: 64KiB]
      --max-pending-bytes SIZE Echoes owed to one client at which echod stops
                               reading from it until it catches up [default: 1MiB]
      --max-connections N      Clients served at once; more are accepted and
                               closed [default: open-file limit - 32]
      --idle-timeout SECS      Close connections with no traffic for SECS;
                               0 disables [default: 0]
      --shutdown-timeout SECS  After SIGINT/SIGTERM, time allowed to deliver
                               owed echoes [default: 5]
      --workers N              Event loops, one thread each, sharing the
                               listening addresses (SO_REUSEPORT); the kernel
                               spreads connections among them [default: 1]
      --stats-interval SECS    Log a one-line summary (connections, rates,
                               closes by reason) every SECS; 0 disables
                               [default: 0]
      --log-level LEVEL        off, error, warn, info, debug or trace
                               [default: $RUST_LOG, else info]
  -q, --quiet                  Log warnings and errors only (--log-level warn)
  -h, --help                   Print this help and exit
  -V, --version                Print the version and exit

Probe: echod probe connects to ADDR (HOST:PORT, IP:PORT or [IPv6]:PORT)
[default: 127.0.0.1:12321], sends a line with a random nonce and checks that
the same bytes come back within --timeout MS milliseconds [default: 1000]. It
prints the round-trip time and exits 0, or prints why it failed (refused,
timeout, closed, mismatch) to standard error and exits 1.

SIZE is a number of bytes, optionally with K, KiB, M or MiB (powers of 1024).
SECS may have a fraction (0.5). Logs go to standard output.

systemd: with socket activation (LISTEN_PID and LISTEN_FDS set), echod
serves the sockets it inherits and binds nothing; --listen and --port are
then refused. With NOTIFY_SOCKET set, it sends READY=1, STATUS= and
STOPPING=1 (Type=notify).

Signals: SIGINT or SIGTERM stops accepting, delivers owed echoes and exits;
a second one exits at once. SIGUSR1 logs a summary.

Exit status: 0 after a shutdown, 64 for a bad command line, 71 if echod
cannot start (a listening socket, the event loop or logging cannot be set
up), 70 if the event loop fails while running. echod probe: 0 if the echo
came back, 1 if not, 64 for a bad command line.
";

/// Parses the arguments, program name first (as `std::env::args_os` gives
/// them).
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

    let mut args = args.into_iter().map(Into::into);
    let _program = args.next();
    let args: Vec<OsString> = args.collect();
    if args.first().is_some_and(|first| first == "probe") {
        return parse_probe_args(&args[1..]);
    }
    let mut config = Config::default();
    let mut addresses = Vec::new();
    let mut port = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('l') | Long("listen") => {
                let value = string(parser.value()?, "--listen")?;
                let address = value.parse::<SocketAddr>().map_err(|_| {
                    UsageError(format!(
                        "invalid --listen address '{value}': expected IP:PORT such as 127.0.0.1:12321 or [::1]:12321"
                    ))
                })?;
                addresses.push(address);
            }
            Short('p') | Long("port") => port = Some(number::<u16>(parser.value()?, "--port")?),
            Long("framing") => {
                config.framing = match string(parser.value()?, "--framing")?.as_str() {
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
            Long("max-line-bytes") => {
                config.max_line_bytes = size(parser.value()?, "--max-line-bytes", 2)?;
            }
            Long("max-pending-bytes") => {
                config.max_pending_bytes = size(parser.value()?, "--max-pending-bytes", 1)?;
            }
            Long("max-connections") => {
                let n = number::<usize>(parser.value()?, "--max-connections")?;
                if n == 0 {
                    return Err(UsageError(
                        "invalid --max-connections '0': must be at least 1".into(),
                    ));
                }
                config.max_connections = Some(n);
            }
            Long("idle-timeout") => {
                let timeout = seconds(parser.value()?, "--idle-timeout")?;
                config.idle_timeout = (!timeout.is_zero()).then_some(timeout);
            }
            Long("shutdown-timeout") => {
                config.shutdown_timeout = seconds(parser.value()?, "--shutdown-timeout")?
            }
            Long("workers") => {
                let n = number::<usize>(parser.value()?, "--workers")?;
                if !(1..=MAX_WORKERS).contains(&n) {
                    return Err(UsageError(format!(
                        "invalid --workers '{n}': must be between 1 and {MAX_WORKERS}"
                    )));
                }
                config.workers = n;
            }
            Long("stats-interval") => {
                let interval = seconds(parser.value()?, "--stats-interval")?;
                if !interval.is_zero() && interval < MIN_STATS_INTERVAL {
                    return Err(UsageError(format!(
                        "invalid --stats-interval '{}': must be 0 or at least {}",
                        interval.as_secs_f64(),
                        MIN_STATS_INTERVAL.as_secs_f64()
                    )));
                }
                config.stats_interval = (!interval.is_zero()).then_some(interval);
            }
            Long("log-level") => {
                let value = string(parser.value()?, "--log-level")?;
                let level = value.parse::<LevelFilter>().map_err(|_| {
                    UsageError(format!(
                        "invalid --log-level '{value}': expected off, error, warn, info, debug or trace"
                    ))
                })?;
                config.log_level = Some(level);
            }
            Short('q') | Long("quiet") => config.log_level = Some(LevelFilter::Warn),
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected().into()),
        }
    }
    config.listen_given = !addresses.is_empty() || port.is_some();
    config.listen = match (addresses.is_empty(), port) {
        (true, port) => Listen::Default {
            port: port.unwrap_or(DEFAULT_PORT),
        },
        (false, None) if addresses.len() > MAX_LISTENERS => {
            return Err(UsageError(format!(
                "too many --listen addresses: at most {MAX_LISTENERS}"
            )));
        }
        (false, None) => Listen::Addresses(addresses),
        (false, Some(_)) => {
            return Err(UsageError(
                "--port sets the port of the default addresses; with --listen, give the port in ADDR".into(),
            ));
        }
    };
    Ok(Command::Run(config))
}

/// Parses what follows `echod probe`.
fn parse_probe_args(args: &[OsString]) -> Result<Command, UsageError> {
    use lexopt::prelude::*;

    let mut probe = ProbeArgs {
        address: DEFAULT_PROBE_ADDRESS.to_owned(),
        timeout: DEFAULT_PROBE_TIMEOUT,
    };
    let mut address = None;
    let mut parser = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = parser.next()? {
        match arg {
            Long("timeout") => {
                let ms = number::<u64>(parser.value()?, "--timeout")?;
                if !(1..=MAX_PROBE_TIMEOUT_MS).contains(&ms) {
                    return Err(UsageError(format!(
                        "invalid --timeout '{ms}': must be between 1 and {MAX_PROBE_TIMEOUT_MS} milliseconds"
                    )));
                }
                probe.timeout = Duration::from_millis(ms);
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(value) if address.is_none() => {
                let value = string(value, "probe address")?;
                if !is_host_and_port(&value) {
                    return Err(UsageError(format!(
                        "invalid probe address '{value}': expected HOST:PORT, IP:PORT or [IPv6]:PORT"
                    )));
                }
                address = Some(value);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if let Some(address) = address {
        probe.address = address;
    }
    Ok(Command::Probe(probe))
}

/// Whether `value` is an IP socket address, or a non-empty host name, a
/// colon and a port number. Whether the host resolves is seen when the
/// probe runs.
fn is_host_and_port(value: &str) -> bool {
    if value.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match value.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(':')
                && !host.starts_with('[')
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

fn string(value: OsString, option: &str) -> Result<String, UsageError> {
    value.into_string().map_err(|value| {
        UsageError(format!(
            "invalid {option} '{}': not valid UTF-8",
            value.to_string_lossy()
        ))
    })
}

fn number<T: std::str::FromStr>(value: OsString, option: &str) -> Result<T, UsageError> {
    let value = string(value, option)?;
    value.parse().map_err(|_| {
        UsageError(format!(
            "invalid {option} '{value}': expected a whole number"
        ))
    })
}

/// Parses a byte size such as `65536`, `64K`, `64KiB` or `1M`, at least `min`.
fn size(value: OsString, option: &str, min: usize) -> Result<usize, UsageError> {
    let value = string(value, option)?;
    let invalid = |why: &str| UsageError(format!("invalid {option} '{value}': {why}"));
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(digits_end);
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid("expected bytes, optionally with K, KiB, M or MiB")),
    };
    let bytes = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| invalid("expected bytes, optionally with K, KiB, M or MiB"))?;
    if !(min..=MAX_LIMIT_BYTES).contains(&bytes) {
        return Err(invalid(&format!(
            "must be between {min} and {MAX_LIMIT_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// Parses seconds, possibly fractional, such as `5` or `0.25`.
fn seconds(value: OsString, option: &str) -> Result<Duration, UsageError> {
    let value = string(value, option)?;
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|duration| *duration <= Duration::from_secs(365 * 24 * 3600))
        .ok_or_else(|| {
            UsageError(format!(
                "invalid {option} '{value}': expected seconds, such as 5 or 0.5"
            ))
        })
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<lexopt::Error> for UsageError {
    fn from(err: lexopt::Error) -> UsageError {
        UsageError(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = std::iter::once("echod").chain(args.iter().copied());
        match parse_args(args) {
            Ok(Command::Run(config)) => Ok(config),
            Ok(other) => Err(format!("{other:?}")),
            Err(err) => Err(err.0),
        }
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).expect("no arguments is valid");
        assert_eq!(config.listen, Listen::Default { port: 12321 });
        assert_eq!(config.framing, Framing::Crlf);
        assert_eq!(config.max_line_bytes, 65536);
        assert_eq!(config.max_pending_bytes, 1 << 20);
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(config.stats_interval, None);
        assert_eq!(config.workers, 1);
    }

    #[test]
    fn options() {
        let config = parse(&[
            "-l",
            "127.0.0.1:0",
            "--listen=[::1]:7",
            "--framing",
            "lf",
            "--max-line-bytes",
            "4KiB",
            "--max-pending-bytes=2M",
            "--max-connections",
            "10",
            "--idle-timeout",
            "1.5",
            "--shutdown-timeout",
            "0",
            "--stats-interval",
            "2.5",
            "--workers",
            "3",
            "-q",
        ])
        .expect("valid options");
        assert_eq!(
            config.listen,
            Listen::Addresses(vec![
                "127.0.0.1:0".parse().unwrap(),
                "[::1]:7".parse().unwrap()
            ])
        );
        assert_eq!(config.framing, Framing::Lf);
        assert_eq!(
            (config.max_line_bytes, config.max_pending_bytes),
            (4096, 2 << 20)
        );
        assert_eq!(config.max_connections, Some(10));
        assert_eq!(config.idle_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(config.shutdown_timeout, Duration::ZERO);
        assert_eq!(config.stats_interval, Some(Duration::from_millis(2500)));
        assert_eq!(config.workers, 3);
        assert_eq!(config.log_level, Some(LevelFilter::Warn));
        assert_eq!(
            parse(&["-p", "0"]).unwrap().listen,
            Listen::Default { port: 0 }
        );
        assert_eq!(parse(&["--idle-timeout", "0"]).unwrap().idle_timeout, None);
        assert_eq!(
            parse(&["--stats-interval", "0"]).unwrap().stats_interval,
            None
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "invalid option '--bogus'"),
            (&["--port", "70000"], "invalid --port '70000'"),
            (
                &["--listen", "localhost"],
                "invalid --listen address 'localhost'",
            ),
            (&["--framing", "cr"], "invalid --framing 'cr'"),
            (&["--max-line-bytes", "1"], "must be between 2 and"),
            (
                &["--max-line-bytes", "12Q"],
                "invalid --max-line-bytes '12Q'",
            ),
            (&["--max-pending-bytes", "2G"], "must be between 1 and"),
            (&["--max-connections", "0"], "must be at least 1"),
            (&["--idle-timeout", "-1"], "invalid --idle-timeout '-1'"),
            (&["--log-level", "loud"], "invalid --log-level 'loud'"),
            (&["--stats-interval", "0.01"], "must be 0 or at least 0.1"),
            (
                &["--workers", "0"],
                "invalid --workers '0': must be between 1 and",
            ),
            (&["--port"], "missing argument for option '--port'"),
            (
                &["-l", "127.0.0.1:1", "-p", "2"],
                "--port sets the port of the default addresses",
            ),
            (&["stray"], "unexpected argument \"stray\""),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err(&format!("{args:?} should fail"));
            assert!(
                err.contains(expected),
                "{args:?}: got '{err}', want '{expected}'"
            );
        }
    }

    fn parse_probe(args: &[&str]) -> Result<ProbeArgs, String> {
        let args = ["echod", "probe"].into_iter().chain(args.iter().copied());
        match parse_args(args) {
            Ok(Command::Probe(probe)) => Ok(probe),
            Ok(other) => Err(format!("{other:?}")),
            Err(err) => Err(err.0),
        }
    }

    #[test]
    fn probe_arguments() {
        let default = parse_probe(&[]).expect("no arguments is valid");
        assert_eq!(default.address, "127.0.0.1:12321");
        assert_eq!(default.timeout, Duration::from_secs(1));
        for address in [
            "127.0.0.1:7",
            "[::1]:12321",
            "localhost:80",
            "echo.example:1",
        ] {
            let probe = parse_probe(&[address, "--timeout", "250"]).expect(address);
            assert_eq!(probe.address, address);
            assert_eq!(probe.timeout, Duration::from_millis(250));
        }
        let probe = parse_probe(&["--timeout=5", "[::1]:9"]).expect("options first");
        assert_eq!(
            (probe.address.as_str(), probe.timeout),
            ("[::1]:9", Duration::from_millis(5))
        );

        let cases: &[(&[&str], &str)] = &[
            (&["localhost"], "invalid probe address 'localhost'"),
            (&["::1:80"], "invalid probe address '::1:80'"),
            (&[":80"], "invalid probe address ':80'"),
            (&["host:http"], "invalid probe address 'host:http'"),
            (&["--timeout", "0"], "must be between 1 and"),
            (&["--timeout", "1.5"], "invalid --timeout '1.5'"),
            (&["a:1", "b:2"], "unexpected argument \"b:2\""),
            (&["--port", "1"], "invalid option '--port'"),
        ];
        for (args, expected) in cases {
            let err = parse_probe(args).expect_err(&format!("{args:?} should fail"));
            assert!(
                err.contains(expected),
                "{args:?}: got '{err}', want '{expected}'"
            );
        }
        // Only the first argument names the subcommand.
        assert!(parse(&["-q", "probe"]).is_err());
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(parse_args(["echod", "--help"]), Ok(Command::Help)));
        assert!(matches!(parse_args(["echod", "-V"]), Ok(Command::Version)));
    }
}
