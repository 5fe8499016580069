//! A scraper for echod's metrics endpoint, for `tests/metrics.rs` and
//! `tests/prometheus.rs`: one HTTP/1.1 request per connection, read to the
//! end (echod closes after each response), and the Prometheus text format
//! read into a map from series (name and labels, as written) to value.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{DEADLINE, connect, read_to_eof_at_most};

/// Most bytes a response may have: far more than the few KiB of metrics.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// An HTTP response as a scraper sees it.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header lines, each as sent ("Name: value").
    pub headers: Vec<String>,
    /// Everything after the head.
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `request` as it is and reads the response to the end.
#[track_caller]
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send the request");
    let bytes = read_to_eof_at_most(&mut stream, MAX_RESPONSE_BYTES);
    parse_response(&bytes)
}

/// `GET /metrics` once, without failing the test: `None` if the
/// connection was refused, closed or reset before a whole response came.
pub fn try_get_metrics(addr: SocketAddr) -> Option<Response> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    stream.set_write_timeout(Some(DEADLINE)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
    let mut bytes = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.contains("\r\n\r\n").then(|| parse_response(&bytes))
}

/// `GET /metrics`, answered.
#[track_caller]
pub fn get_metrics(addr: SocketAddr) -> Response {
    exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: echod\r\nUser-Agent: test\r\n\r\n",
    )
}

/// Scrapes and reads the series, checking the status and the content type.
#[track_caller]
pub fn scrape(addr: SocketAddr) -> Series {
    let response = get_metrics(addr);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Series::parse(&response.body)
}

/// Scrapes until `wanted` holds of the series, for at most `DEADLINE`;
/// returns the series that satisfied it.
#[track_caller]
pub fn scrape_until(addr: SocketAddr, what: &str, wanted: impl Fn(&Series) -> bool) -> Series {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let series = scrape(addr);
        if wanted(&series) {
            return series;
        }
        assert!(
            Instant::now() < deadline,
            "no scrape within {DEADLINE:?} showed {what}; last:\n{}",
            series.text
        );
        std::thread::sleep(Duration::from_millis(20)); // A polling interval, not synchronisation.
    }
}

/// The series of one scrape.
#[derive(Debug, Clone)]
pub struct Series {
    /// `name{labels}` (as written) to value.
    pub values: BTreeMap<String, f64>,
    /// The body, for messages.
    pub text: String,
}

impl Series {
    /// Reads the sample lines of the text format (comments skipped).
    #[track_caller]
    pub fn parse(text: &str) -> Series {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line has a value: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|err| panic!("a number in {line:?}: {err}"));
            values.insert(series.to_owned(), value);
        }
        Series {
            values,
            text: text.to_owned(),
        }
    }

    /// The value of `series` (`name` or `name{label="value"}`), which must
    /// be present.
    #[track_caller]
    pub fn get(&self, series: &str) -> f64 {
        *self
            .values
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    /// The value of `series` as a whole number.
    #[track_caller]
    pub fn count(&self, series: &str) -> u64 {
        let value = self.get(series);
        assert!(value >= 0.0 && value.fract() == 0.0, "{series} is {value}");
        value as u64
    }
}

#[track_caller]
fn parse_response(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    Response {
        status,
        headers: lines.map(str::to_owned).collect(),
        body: body.to_owned(),
    }
}
