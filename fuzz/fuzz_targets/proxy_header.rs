//! Fuzz target: the PROXY protocol header reader, `echod::proxy::parse`, on
//! any bytes, with the properties a connection awaiting its header relies on:
//!
//! - it never panics, and never asks for more once `MAX_HEADER_BYTES` are
//!   buffered (`Parsed::Incomplete` only below it), so the header buffer
//!   stays bounded;
//! - a complete header lies within the input and within the limit, and bytes
//!   after it change nothing (they are the client's first input);
//! - a malformed input stays malformed however it goes on.

use echod::proxy::{self, MAX_HEADER_BYTES, Parsed};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let parsed = proxy::parse(data);
        if data.len() >= MAX_HEADER_BYTES {
            assert_ne!(parsed, Parsed::Incomplete, "a buffer at the limit must be decided");
        }
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"hello\r\n");
        match parsed {
            Parsed::Incomplete => {}
            Parsed::Complete { header_bytes, .. } => {
                assert!(header_bytes <= data.len() && header_bytes <= MAX_HEADER_BYTES);
                assert_eq!(proxy::parse(&longer), parsed, "bytes after a header changed it");
            }
            Parsed::Malformed => {
                assert_eq!(proxy::parse(&longer), Parsed::Malformed, "malformed, then not");
            }
        }
    });
}
