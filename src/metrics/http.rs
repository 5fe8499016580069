//! The little HTTP the metrics endpoint speaks: what a request head asks
//! for, and the bytes of the one response each scraper gets.
//!
//! `parse` reads a request head with `httparse` and decides, from the head
//! alone, what to answer: the metrics (in one of two formats), 404, 405 or
//! 400. It does no I/O and keeps nothing, so it can be fed any bytes (the
//! fuzz target `http_head` does). Bodies are never read: a `GET` has none
//! that matters, and any bytes after the head are discarded by the
//! endpoint's linger.

use std::fmt::Write as _;

/// Longest request head accepted, request line and headers with their
/// terminators, in bytes. A head still unfinished at this size is answered
/// 431 and the connection closed: a scraper's head is a few hundred bytes
/// (Prometheus sends about 300), and 8 KiB is the limit most HTTP servers
/// use (nginx's `large_client_header_buffers` line size, Apache's
/// `LimitRequestLine`).
pub const HEAD_LIMIT_BYTES: usize = 8 * 1024;

/// Most headers a head may have; more is a malformed request (400).
/// `httparse` needs room for each header up front; 64 is far more than any
/// scraper sends.
const MAX_HEADERS: usize = 64;

/// The `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The only path served.
pub const METRICS_PATH: &str = "/metrics";

/// What a request head, so far, asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The head has not ended yet: read more.
    Partial,
    /// The head is complete (or can never be): answer this.
    Complete(Answer),
}

/// What the endpoint answers a request head with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `GET /metrics`: the metrics, in this format.
    Metrics(Format),
    /// Any path but `/metrics`: 404.
    NotFound,
    /// `/metrics` with another method than `GET`: 405.
    MethodNotAllowed,
    /// Not an HTTP/1.x request head: 400.
    BadRequest,
    /// No end of the head within `HEAD_LIMIT_BYTES`: 431.
    HeadTooLarge,
}

/// How the metrics are written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: the default.
    Prometheus,
    /// OpenMetrics text 1.0.0, when the `Accept` header names it.
    OpenMetrics,
}

/// What the bytes received so far, `head`, ask for. A head is complete at
/// its blank line; bytes after it are ignored. Past `HEAD_LIMIT_BYTES`
/// without its end, the answer is `HeadTooLarge`, whatever the bytes are.
pub fn parse(head: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let within = &head[..head.len().min(HEAD_LIMIT_BYTES)];
    match request.parse(within) {
        Ok(httparse::Status::Complete(_)) => Head::Complete(answer(&request)),
        Ok(httparse::Status::Partial) if head.len() >= HEAD_LIMIT_BYTES => {
            Head::Complete(Answer::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Complete(Answer::BadRequest),
    }
}

/// The whole response to `answer`: status line, headers and `body`, which
/// is used only for `Answer::Metrics`. Every response says
/// `Connection: close`: one request per connection.
pub fn response(answer: Answer, body: &str) -> Vec<u8> {
    let (status, content_type, body) = match answer {
        Answer::Metrics(Format::Prometheus) => ("200 OK", PROMETHEUS_CONTENT_TYPE, body),
        Answer::Metrics(Format::OpenMetrics) => ("200 OK", OPENMETRICS_CONTENT_TYPE, body),
        Answer::NotFound => (
            "404 Not Found",
            TEXT,
            "not found: the metrics are at /metrics\n",
        ),
        Answer::MethodNotAllowed => (
            "405 Method Not Allowed",
            TEXT,
            "method not allowed: use GET\n",
        ),
        Answer::BadRequest => ("400 Bad Request", TEXT, "bad request\n"),
        Answer::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            TEXT,
            "request head too large\n",
        ),
    };
    let mut head = String::with_capacity(160);
    // Writing to a String cannot fail.
    let _ = write!(
        head,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if answer == Answer::MethodNotAllowed {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// The `Content-Type` of the error bodies.
const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to a complete, well-formed head: the path decides first (a
/// query string is ignored), then the method, then the `Accept` header.
fn answer(request: &httparse::Request<'_, '_>) -> Answer {
    let path = request.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    if path != METRICS_PATH {
        return Answer::NotFound;
    }
    if request.method != Some("GET") {
        return Answer::MethodNotAllowed;
    }
    let openmetrics = request.headers.iter().any(|header| {
        header.name.eq_ignore_ascii_case("accept")
            && contains_ignore_ascii_case(header.value, b"application/openmetrics-text")
    });
    Answer::Metrics(if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    })
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(head: &[u8], expected: Head) {
        assert_eq!(parse(head), expected, "{:?}", String::from_utf8_lossy(head));
    }

    #[test]
    fn heads_and_their_answers() {
        use Answer::*;
        use Format::*;
        use Head::Complete;
        check(b"", Head::Partial);
        check(b"GET /metrics HTTP/1.1\r\n", Head::Partial);
        check(b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Head::Partial);
        check(
            b"GET /metrics HTTP/1.1\r\n\r\n",
            Complete(Metrics(Prometheus)),
        );
        check(
            b"GET /metrics HTTP/1.0\r\n\r\n",
            Complete(Metrics(Prometheus)),
        );
        check(
            b"GET /metrics?x=1 HTTP/1.1\r\n\r\n",
            Complete(Metrics(Prometheus)),
        );
        check(
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
            Complete(Metrics(OpenMetrics)),
        );
        check(
            b"GET /metrics HTTP/1.1\r\naccept: Application/OpenMetrics-Text\r\n\r\n",
            Complete(Metrics(OpenMetrics)),
        );
        check(
            b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n\r\n",
            Complete(Metrics(Prometheus)),
        );
        check(b"GET / HTTP/1.1\r\n\r\n", Complete(NotFound));
        check(b"GET /metricsx HTTP/1.1\r\n\r\n", Complete(NotFound));
        check(
            b"POST /metrics HTTP/1.1\r\n\r\n",
            Complete(MethodNotAllowed),
        );
        check(
            b"HEAD /metrics HTTP/1.1\r\n\r\n",
            Complete(MethodNotAllowed),
        );
        check(b"hello\r\n\r\n", Complete(BadRequest));
        check(b"GET /metrics HTTP/2.0\r\n\r\n", Complete(BadRequest));
        check(
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            Complete(BadRequest),
        );
    }

    #[test]
    fn a_head_without_an_end_is_too_large_at_the_limit() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
        head.resize(HEAD_LIMIT_BYTES - 1, b'y');
        assert_eq!(parse(&head), Head::Partial);
        head.push(b'a');
        check(&head, Head::Complete(Answer::HeadTooLarge));
        head.extend_from_slice(b"\r\n\r\n");
        check(&head, Head::Complete(Answer::HeadTooLarge));
    }

    proptest::proptest! {
        /// What the endpoint relies on, for any bytes: nothing is asked for
        /// past the limit, and once a head is complete within it, what
        /// follows changes nothing (the fuzz target `http_head` checks the
        /// same on AFL++'s inputs).
        #[test]
        fn a_complete_head_is_answered_whatever_follows(
            seed in 0..4usize,
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let seeds: [&[u8]; 4] = [
                b"GET /metrics HTTP/1.1\r\n",
                b"GET /metrics HTTP/1.1\r\n\r\n",
                b"POST / HTTP/1.0\r\nA: b\r\n",
                b"",
            ];
            let mut head = seeds[seed].to_vec();
            head.extend_from_slice(&noise);
            let answer = parse(&head);
            if head.len() >= HEAD_LIMIT_BYTES {
                proptest::prop_assert_ne!(answer, Head::Partial);
            }
            if let Head::Complete(answer) = answer {
                let mut longer = head.clone();
                longer.extend_from_slice(&tail);
                proptest::prop_assert_eq!(parse(&longer), Head::Complete(answer));
            }
        }
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let response = response(Answer::Metrics(Format::Prometheus), "a 1\n");
        let text = String::from_utf8(response).expect("ASCII");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let text = String::from_utf8(super::response(Answer::MethodNotAllowed, "")).expect("ASCII");
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
    }
}
