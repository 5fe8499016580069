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
//! This module does blocking I/O with timeouts on one socket; it is not
//! part of the daemon, and it neither logs nor prints: `main` prints the
//! `Success` or the `ProbeError`.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

use crate::config::ProbeArgs;

/// Bytes of an echo shown in a mismatch report; enough to see what came
/// back instead, short enough for one line.
const SHOWN_BYTES: usize = 48;

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
