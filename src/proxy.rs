//! The PROXY protocol header (HAProxy's `send-proxy` and `send-proxy-v2`):
//! what a buffer of a connection's first bytes says, parsed with `ppp`.
//!
//! This module does no I/O and keeps no state. It answers one question about
//! the bytes read so far: is a header still arriving, is it complete (how long
//! it is and which client it names), or can it never be a valid header. The
//! limits are checked here, so a caller that buffers at most
//! `MAX_HEADER_BYTES` can never be made to hold more.
//!
//! Not wired into the event loop yet: no connection reads a header.

use std::net::{IpAddr, SocketAddr};

use ppp::{HeaderResult, v1, v2};

/// The longest v1 header, CR LF included (the specification's own bound:
/// `PROXY TCP6` with two full IPv6 addresses and two ports).
pub const MAX_V1_HEADER_BYTES: usize = 107;

/// The longest v2 header accepted, the 16-byte preamble included. HAProxy
/// sends far less without TLVs (28 bytes for IPv4, 52 for IPv6); 536 leaves
/// room for a few TLVs and bounds the buffer. A longer header is malformed.
pub const MAX_HEADER_BYTES: usize = 536;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not yet a whole header, and still within the limits: read more.
    Incomplete,
    /// A whole header of `header_bytes` bytes; the bytes after it are the
    /// client's first input.
    Complete {
        /// The header's length, terminator or payload included.
        header_bytes: usize,
        /// The client the header names, or `None` for a v2 `LOCAL` header
        /// or a v1 `PROXY UNKNOWN` (the connection's own address stands).
        client: Option<SocketAddr>,
    },
    /// Never a valid header: wrong bytes, or over its limit.
    Malformed,
}

/// Reads the header at the start of `input`.
///
/// `ppp` is asked only once the header's own framing says it is whole (v1:
/// its CR LF; v2: the length in its preamble), because on a partial header
/// its verdict depends on where the bytes stop. Before that, the input is
/// checked against the two signatures and the limits here.
pub fn parse(input: &[u8]) -> Parsed {
    if is_prefix_either_way(input, V2_SIGNATURE) {
        return parse_v2(input);
    }
    if is_prefix_either_way(input, V1_SIGNATURE) {
        return parse_v1(input);
    }
    Parsed::Malformed
}

/// The first bytes of every v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The first bytes of every v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// A v2 header's preamble: the signature, version and command, family and
/// protocol, and the two-byte length of what follows.
const V2_PREAMBLE_BYTES: usize = 16;

fn parse_v1(input: &[u8]) -> Parsed {
    let searched = &input[..input.len().min(MAX_V1_HEADER_BYTES)];
    let Some(cr) = memchr::memmem::find(searched, b"\r\n") else {
        return if input.len() >= MAX_V1_HEADER_BYTES {
            Parsed::Malformed
        } else {
            Parsed::Incomplete
        };
    };
    match HeaderResult::parse(&input[..cr + 2]) {
        HeaderResult::V1(Ok(header)) => complete(header.header.len(), v1_client(&header)),
        _ => Parsed::Malformed,
    }
}

fn parse_v2(input: &[u8]) -> Parsed {
    if input.len() < V2_PREAMBLE_BYTES {
        return Parsed::Incomplete;
    }
    let payload_bytes = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let header_bytes = V2_PREAMBLE_BYTES + payload_bytes;
    if header_bytes > MAX_HEADER_BYTES {
        return Parsed::Malformed;
    }
    if input.len() < header_bytes {
        return Parsed::Incomplete;
    }
    match HeaderResult::parse(&input[..header_bytes]) {
        HeaderResult::V2(Ok(header)) => complete(header.len(), v2_client(&header)),
        _ => Parsed::Malformed,
    }
}

/// Whether the shorter of `input` and `signature` begins the other.
fn is_prefix_either_way(input: &[u8], signature: &[u8]) -> bool {
    let n = input.len().min(signature.len());
    input[..n] == signature[..n]
}

/// A complete header, unless it is longer than this module accepts.
fn complete(header_bytes: usize, client: Option<SocketAddr>) -> Parsed {
    if header_bytes > MAX_HEADER_BYTES {
        return Parsed::Malformed;
    }
    Parsed::Complete {
        header_bytes,
        client,
    }
}

fn v1_client(header: &v1::Header<'_>) -> Option<SocketAddr> {
    match header.addresses {
        v1::Addresses::Tcp4(ip) => Some(SocketAddr::new(
            IpAddr::V4(ip.source_address),
            ip.source_port,
        )),
        v1::Addresses::Tcp6(ip) => Some(SocketAddr::new(
            IpAddr::V6(ip.source_address),
            ip.source_port,
        )),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(header: &v2::Header<'_>) -> Option<SocketAddr> {
    // A LOCAL header is the balancer speaking for itself (a health check):
    // whatever addresses it carries, the connection's own address stands.
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(ip) => Some(SocketAddr::new(
            IpAddr::V4(ip.source_address),
            ip.source_port,
        )),
        v2::Addresses::IPv6(ip) => Some(SocketAddr::new(
            IpAddr::V6(ip.source_address),
            ip.source_port,
        )),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header by hand: `command` 0x20 (LOCAL) or 0x21 (PROXY), TCP over
    /// IPv4, and `extra` bytes of payload past the addresses.
    fn v2_ipv4(command: u8, source: [u8; 4], port: u16, extra: usize) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(command);
        bytes.push(0x11);
        bytes.extend_from_slice(&u16::try_from(12 + extra).expect("small").to_be_bytes());
        bytes.extend_from_slice(&source);
        bytes.extend_from_slice(&[127, 0, 0, 1]);
        bytes.extend_from_slice(&port.to_be_bytes());
        bytes.extend_from_slice(&12321u16.to_be_bytes());
        if extra > 0 {
            // One NOOP TLV filling the rest.
            bytes.push(0x04);
            bytes.extend_from_slice(&u16::try_from(extra - 3).expect("small").to_be_bytes());
            bytes.resize(bytes.len() + extra - 3, 0);
        }
        bytes
    }

    fn client(text: &str) -> Option<SocketAddr> {
        Some(text.parse().expect("a socket address"))
    }

    #[test]
    fn v1_tcp4_names_its_source_and_leaves_the_first_line() {
        let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12321\r\n";
        let mut input = header.to_vec();
        input.extend_from_slice(b"hello\r\n");
        assert_eq!(
            parse(&input),
            Parsed::Complete {
                header_bytes: header.len(),
                client: client("192.0.2.7:40000")
            }
        );
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let header = b"PROXY TCP6 2001:db8::7 ::1 40000 12321\r\n";
        assert_eq!(
            parse(header),
            Parsed::Complete {
                header_bytes: header.len(),
                client: client("[2001:db8::7]:40000")
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete {
                header_bytes: 15,
                client: None
            }
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12321\r\n".to_vec();
        let v2 = v2_ipv4(0x21, [192, 0, 2, 7], 40000, 0);
        for header in [v1, v2] {
            for end in 1..header.len() {
                assert_eq!(parse(&header[..end]), Parsed::Incomplete, "{end} bytes");
            }
        }
    }

    #[test]
    fn v2_proxy_names_its_source_and_local_keeps_the_connection_address() {
        let proxy = v2_ipv4(0x21, [192, 0, 2, 7], 40000, 0);
        assert_eq!(
            parse(&proxy),
            Parsed::Complete {
                header_bytes: 28,
                client: client("192.0.2.7:40000")
            }
        );
        let local = v2_ipv4(0x20, [192, 0, 2, 7], 40000, 0);
        assert_eq!(
            parse(&local),
            Parsed::Complete {
                header_bytes: 28,
                client: None
            }
        );
    }

    #[test]
    fn v2_at_the_limit_is_accepted_and_one_byte_over_is_malformed() {
        let at_limit = v2_ipv4(0x21, [192, 0, 2, 7], 40000, MAX_HEADER_BYTES - 28);
        assert_eq!(at_limit.len(), MAX_HEADER_BYTES);
        assert!(matches!(
            parse(&at_limit),
            Parsed::Complete {
                header_bytes: MAX_HEADER_BYTES,
                ..
            }
        ));
        let over = v2_ipv4(0x21, [192, 0, 2, 7], 40000, MAX_HEADER_BYTES - 27);
        assert_eq!(parse(&over), Parsed::Malformed);
        // Its first MAX_HEADER_BYTES bytes prove it already.
        assert_eq!(parse(&over[..MAX_HEADER_BYTES]), Parsed::Malformed);
    }

    #[test]
    fn not_a_header_is_malformed() {
        assert_eq!(parse(b"hello\r\n"), Parsed::Malformed);
        assert_eq!(parse(b"h"), Parsed::Malformed);
        assert_eq!(parse(b"\r\n\r\nX"), Parsed::Malformed);
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), Parsed::Malformed);
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat();
        assert_eq!(parse(&endless), Parsed::Malformed);
    }

    #[test]
    fn the_fuzz_seeds_are_what_their_names_say() {
        let seeds = [
            (
                &include_bytes!("../fuzz/seeds/proxy_header/v1")[..],
                client("192.0.2.7:40000"),
            ),
            (
                &include_bytes!("../fuzz/seeds/proxy_header/v1_unknown")[..],
                None,
            ),
            (
                &include_bytes!("../fuzz/seeds/proxy_header/v2")[..],
                client("192.0.2.7:40000"),
            ),
            (
                &include_bytes!("../fuzz/seeds/proxy_header/v2_local")[..],
                None,
            ),
        ];
        for (seed, expected) in seeds {
            match parse(seed) {
                Parsed::Complete {
                    header_bytes,
                    client,
                } => {
                    assert_eq!(client, expected);
                    let rest = &seed[header_bytes..];
                    assert!(rest.is_empty() || rest == b"hello\r\n", "{rest:?}");
                }
                other => panic!("a seed is not a header: {other:?}"),
            }
        }
    }
}
