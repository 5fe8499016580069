//! Fuzz target: the metrics endpoint's request-head parser,
//! `echod::metrics::http::parse`, on any bytes, with the properties the
//! endpoint relies on:
//!
//! - it never panics, and never asks for more past `HEAD_LIMIT_BYTES`
//!   (`Head::Partial` only below it), so a scraper's head stays bounded;
//! - once a head is complete within the limit, bytes after it change
//!   nothing (the endpoint answers the head and drops the rest);
//! - every answer's response is a whole HTTP/1.1 response whose
//!   `Content-Length` is its body's.

use echod::metrics::http::{self, Answer, HEAD_LIMIT_BYTES, Head};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let head = http::parse(data);
        if data.len() >= HEAD_LIMIT_BYTES {
            assert_ne!(head, Head::Partial, "a head at the limit must be answered");
        }
        let Head::Complete(answer) = head else {
            return;
        };
        if answer != Answer::HeadTooLarge && data.len() < HEAD_LIMIT_BYTES {
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(http::parse(&longer), head, "bytes after a head changed its answer");
        }
        let response = http::response(answer, "body\n");
        let text = String::from_utf8(response).expect("responses are ASCII");
        let (head_text, body) = text.split_once("\r\n\r\n").expect("a response head ends");
        assert!(head_text.starts_with("HTTP/1.1 "), "{head_text}");
        let length = head_text
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|n| n.parse::<usize>().ok())
            .expect("a Content-Length");
        assert_eq!(length, body.len());
    });
}
