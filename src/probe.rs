//! `echod probe`: a health check that needs nothing but the echod binary.
//!
//! It connects to an echo daemon, sends one line holding a random nonce,
//! and checks that exactly those bytes come back, all within one deadline.
//! A container `HEALTHCHECK` or a CI step that waits for readiness can run
//! it where no `nc` exists, and its exit status says all they need.
//!
//! The line ends with CR LF, so it is one line under every framing (`lf`
//! ends it at the LF, `raw` echoes it as it comes). The nonce makes the
//! check byte-exact: an echo cached, replayed or crossed with another
//! client's cannot pass.
//!
//! Its command line is here too: `cli` hands whatever follows `echod probe`
//! to `parse_args`, which gives `ProbeArgs` or asks for this module's own
//! `USAGE`.
//!
//! This module does blocking I/O with timeouts on one socket; it is not
//! part of the daemon, and it neither logs nor prints: `main` prints the
//! `Success` or the `ProbeError`.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

use crate::args::{UsageError, number, string};

/// Where `echod probe` connects when no address is given: the first of the
/// default listening addresses.
pub const DEFAULT_PROBE_ADDRESS: &str = "127.0.0.1:12321";

/// How long `echod probe` may take in all (resolving, connecting, sending,
/// and reading the echo) before it reports a timeout. One second is the
/// default probe timeout of Kubernetes, and more than a thousand times a
/// loopback round trip: a daemon that takes longer is not healthy.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest `--timeout` `echod probe` accepts, in milliseconds (one hour).
pub const MAX_PROBE_TIMEOUT_MS: u64 = 3_600_000;

/// Bytes of an echo shown in a mismatch report; enough to see what came
/// back instead, short enough for one line.
const SHOWN_BYTES: usize = 48;

/// What `echod probe` checks, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeArgs {
    /// `HOST:PORT`, `IP:PORT` or `[IPv6]:PORT`; a host name is resolved when
    /// the probe runs.
    pub address: String,
    /// Deadline for the whole probe: 1 ms to `MAX_PROBE_TIMEOUT_MS`.
    pub timeout: Duration,
}

/// What the arguments after `echod probe` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCommand {
    /// Run the probe.
    Run(ProbeArgs),
    /// Print `USAGE` and exit.
    Help,
}

/// The `echod probe --help` text.
pub const USAGE: &str = "\
echod probe: check that an echo daemon answers. It connects to ADDR, sends a
line with a random nonce and checks that the same bytes come back, all within
one deadline; a container HEALTHCHECK or a readiness check needs nothing else.

Usage: echod probe [ADDR] [--timeout MS]

Arguments:
  ADDR                         HOST:PORT, IP:PORT or [IPv6]:PORT
                               [default: 127.0.0.1:12321]

Options:
      --timeout MS             Deadline in milliseconds for the whole probe
                               (resolving, connecting, sending, reading the
                               echo), 1 to 3600000 [default: 1000]
  -h, --help                   Print this help and exit

It prints the round-trip time to standard output and exits 0, or prints why
it failed (refused, timeout, closed, mismatch) to standard error and exits 1.

Exit status: 0 if the echo came back, 1 if not, 64 for a bad command line.
";

/// A probe that passed.
#[derive(Debug, Clone)]
pub struct Success {
    /// The address that answered.
    pub peer: SocketAddr,
    /// How long the TCP handshake took.
    pub connect: Duration,
    /// From sending the line to receiving its last echoed byte.
    pub round_trip: Duration,
    /// Length of the line sent and echoed, terminator included.
    pub bytes: usize,
}

/// Why a probe failed. `Display` gives the one-line reason.
#[derive(Debug)]
pub enum ProbeError {
    /// The host name did not resolve to any address.
    Resolve {
        /// The address as given.
        address: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// Nothing listens there: the connection was refused.
    Refused {
        /// The address refused.
        peer: SocketAddr,
    },
    /// The deadline passed before the probe finished.
    Timeout {
        /// The address, once one was being connected to.
        peer: Option<SocketAddr>,
        /// What the probe was doing: connecting, sending or reading.
        stage: &'static str,
        /// Bytes of the echo received by then.
        received: usize,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The peer closed the connection before the whole echo arrived.
    Closed {
        /// The peer.
        peer: SocketAddr,
        /// Bytes of the echo received before the close.
        received: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// Bytes came back that are not the ones sent.
    Mismatch {
        /// The peer.
        peer: SocketAddr,
        /// The line sent.
        sent: Vec<u8>,
        /// What came back, up to the first difference and a little beyond.
        received: Vec<u8>,
    },
    /// Any other socket error.
    Io {
        /// The peer, if the probe got that far.
        peer: Option<SocketAddr>,
        /// What failed.
        source: io::Error,
    },
}

/// Parses the arguments that follow `echod probe`.
///
/// # Errors
///
/// A `UsageError` naming the first option or value that is wrong.
pub fn parse_args(args: &[OsString]) -> Result<ProbeCommand, UsageError> {
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
            Short('h') | Long("help") => return Ok(ProbeCommand::Help),
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
    Ok(ProbeCommand::Run(probe))
}

/// Runs the probe `args` describes.
///
/// # Errors
///
/// A `ProbeError` saying what went wrong first. Every address the host
/// name resolves to is tried in turn until one connects, within the one
/// deadline; the error is then the last address's.
pub fn probe(args: &ProbeArgs) -> Result<Success, ProbeError> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    // `to_socket_addrs` blocks in the resolver without a timeout; an IP
    // address, the usual case, is parsed without asking it.
    let peers: Vec<SocketAddr> = match args.address.parse::<SocketAddr>() {
        Ok(address) => vec![address],
        Err(_) => args
            .address
            .to_socket_addrs()
            .map_err(|source| ProbeError::Resolve {
                address: args.address.clone(),
                source,
            })?
            .collect(),
    };
    let timeout = |peer, stage, received| ProbeError::Timeout {
        peer,
        stage,
        received,
        timeout: args.timeout,
    };

    let mut last_error = ProbeError::Resolve {
        address: args.address.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
    };
    let mut connected = None;
    for peer in peers {
        let Some(left) = remaining(deadline) else {
            return Err(timeout(Some(peer), "connecting", 0));
        };
        let connect_started = Instant::now();
        match TcpStream::connect_timeout(&peer, left) {
            Ok(stream) => {
                connected = Some((stream, peer, connect_started.elapsed()));
                break;
            }
            Err(err) if is_timeout(&err) => return Err(timeout(Some(peer), "connecting", 0)),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                last_error = ProbeError::Refused { peer };
            }
            Err(source) => {
                last_error = ProbeError::Io {
                    peer: Some(peer),
                    source,
                }
            }
        }
    }
    let Some((mut stream, peer, connect)) = connected else {
        return Err(last_error);
    };
    let io_error = |source| ProbeError::Io {
        peer: Some(peer),
        source,
    };
    stream.set_nodelay(true).map_err(io_error)?;

    let line = nonce_line();
    let sent_at = Instant::now();
    let left = remaining(deadline).ok_or_else(|| timeout(Some(peer), "sending", 0))?;
    stream.set_write_timeout(Some(left)).map_err(io_error)?;
    match stream.write_all(&line) {
        Ok(()) => {}
        Err(err) if is_timeout(&err) => return Err(timeout(Some(peer), "sending", 0)),
        Err(err) => return Err(io_error(err)),
    }

    let mut echo = vec![0; line.len()];
    let mut received = 0;
    while received < line.len() {
        let left = remaining(deadline).ok_or_else(|| timeout(Some(peer), "reading", received))?;
        stream.set_read_timeout(Some(left)).map_err(io_error)?;
        let n = match stream.read(&mut echo[received..]) {
            Ok(0) => {
                return Err(ProbeError::Closed {
                    peer,
                    received,
                    expected: line.len(),
                });
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if is_timeout(&err) => {
                return Err(timeout(Some(peer), "reading", received));
            }
            Err(err) => return Err(io_error(err)),
        };
        // Checked as bytes arrive, so a wrong echo fails at once rather
        // than at the deadline.
        if echo[received..received + n] != line[received..received + n] {
            let shown = (received + n).min(SHOWN_BYTES);
            return Err(ProbeError::Mismatch {
                peer,
                sent: line,
                received: echo[..shown].to_vec(),
            });
        }
        received += n;
    }
    Ok(Success {
        peer,
        connect,
        round_trip: sent_at.elapsed(),
        bytes: line.len(),
    })
    // Dropping the stream sends FIN with nothing unread on either side, so
    // the daemon logs an ordinary close ("peer finished").
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

/// The probe line: a fixed prefix, 16 hex digits of nonce, CR LF.
///
/// The nonce needs to be unpredictable to a stale or crossed echo, not to
/// an attacker. std's `RandomState` is seeded from the operating system's
/// random source once per process, so hashing the time and pid with it
/// gives that without a random-number crate.
fn nonce_line() -> Vec<u8> {
    let mut hasher = RandomState::new().build_hasher();
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    format!("echod-probe {:016x}\r\n", hasher.finish()).into_bytes()
}

/// Time left before `deadline`, or `None` once it has passed (a zero
/// timeout means "no timeout" to the socket calls, so it must not reach
/// them).
fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// A socket timeout: `connect_timeout` reports `TimedOut`; reads and
/// writes with a timeout report `WouldBlock` (EAGAIN) on Unix.
fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Milliseconds with three decimals, the unit a round trip is read in.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ms", self.0.as_secs_f64() * 1000.0)
    }
}

impl fmt::Display for Success {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} echoed {} bytes in {} (connect {})",
            self.peer,
            self.bytes,
            Millis(self.round_trip),
            Millis(self.connect)
        )
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Resolve { address, source } => {
                write!(f, "{address}: cannot resolve: {source}")
            }
            ProbeError::Refused { peer } => write!(f, "{peer}: connection refused"),
            ProbeError::Timeout {
                peer,
                stage,
                received,
                timeout,
            } => {
                if let Some(peer) = peer {
                    write!(f, "{peer}: ")?;
                }
                write!(f, "timeout: no echo within {} ({stage}", Millis(*timeout))?;
                if *received > 0 {
                    write!(f, ", {received} bytes of the echo received")?;
                }
                f.write_str(")")
            }
            ProbeError::Closed {
                peer,
                received,
                expected,
            } => write!(
                f,
                "{peer}: closed: connection closed after {received} of {expected} echoed bytes"
            ),
            ProbeError::Mismatch {
                peer,
                sent,
                received,
            } => write!(
                f,
                "{peer}: mismatch: sent {:?}, received {:?}",
                String::from_utf8_lossy(sent),
                String::from_utf8_lossy(received)
            ),
            ProbeError::Io {
                peer: Some(peer),
                source,
            } => write!(f, "{peer}: {source}"),
            ProbeError::Io { peer: None, source } => write!(f, "{source}"),
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProbeError::Resolve { source, .. } | ProbeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_probe(args: &[&str]) -> Result<ProbeArgs, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse_args(&args) {
            Ok(ProbeCommand::Run(probe)) => Ok(probe),
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
    }

    #[test]
    fn help_is_the_probes_own_and_states_its_defaults() {
        for flag in ["--help", "-h"] {
            let args = [OsString::from("[::1]:9"), OsString::from(flag)];
            assert_eq!(parse_args(&args), Ok(ProbeCommand::Help), "{flag}");
        }
        assert!(USAGE.contains("Usage: echod probe [ADDR] [--timeout MS]"));
        assert!(
            !USAGE.contains("--listen"),
            "the daemon's options are not the probe's"
        );
        let timeout_ms = DEFAULT_PROBE_TIMEOUT.as_millis();
        for stated in [
            format!("[default: {DEFAULT_PROBE_ADDRESS}]"),
            format!("[default: {timeout_ms}]"),
            format!("1 to {MAX_PROBE_TIMEOUT_MS}"),
        ] {
            assert!(USAGE.contains(&stated), "USAGE does not say {stated}");
        }
    }

    #[test]
    fn nonce_lines_are_one_crlf_line_and_differ() {
        let (a, b) = (nonce_line(), nonce_line());
        assert_ne!(a, b, "two probes sent the same nonce");
        for line in [a, b] {
            assert!(line.starts_with(b"echod-probe ") && line.ends_with(b"\r\n"));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(line.len(), "echod-probe ".len() + 16 + 2);
        }
    }

    #[test]
    fn reasons_read_as_one_line() {
        let peer: SocketAddr = "127.0.0.1:7".parse().expect("an address");
        let cases = [
            (
                ProbeError::Refused { peer },
                "127.0.0.1:7: connection refused",
            ),
            (
                ProbeError::Timeout {
                    peer: Some(peer),
                    stage: "reading",
                    received: 3,
                    timeout: Duration::from_millis(250),
                },
                "127.0.0.1:7: timeout: no echo within 250.000 ms (reading, 3 bytes of the echo received)",
            ),
            (
                ProbeError::Closed {
                    peer,
                    received: 0,
                    expected: 30,
                },
                "127.0.0.1:7: closed: connection closed after 0 of 30 echoed bytes",
            ),
        ];
        for (err, expected) in cases {
            assert_eq!(err.to_string(), expected);
        }
    }
}
