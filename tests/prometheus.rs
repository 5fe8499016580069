//! A real Prometheus scrapes echod: its own instance (Debian's
//! `prometheus`, 2.42), on a free loopback port, with a temporary storage
//! directory and a one-second scrape interval against echod's endpoint.
//! Through Prometheus's HTTP API, the target is `up` and a query returns
//! the connections the test made; `promtool check metrics` finds nothing
//! to say about a scrape.
//!
//! Needs `prometheus` and `promtool` on `PATH`; without them (and without
//! `CI=true`) the tests are ignored (`no_prometheus`, build.rs). A
//! Prometheus the package may have started as a service listens on its own
//! port (9090) and is never this test's.

mod common;
mod process;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::scrape::get_metrics;
use common::{assert_echoes, connect, read_to_eof};
use process::Daemon;

/// Longest wait for Prometheus: its start, its first scrapes, its answer.
/// It starts in about a second here; a loaded machine may take far longer.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);

/// A Prometheus server of this test's own, killed and its files removed
/// when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts one that scrapes `target` every second.
    fn start(target: SocketAddr) -> Prometheus {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("echod-prometheus-{}-{nanos}", std::process::id()));
        fs::create_dir_all(dir.join("data")).expect("create the storage directory");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: echod\n    static_configs:\n      - targets: ['{target}']\n"
        );
        fs::write(dir.join("prometheus.yml"), config).expect("write the configuration");
        // A port nobody else holds: the OS's choice, freed for Prometheus.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let log = fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, dir, addr }
    }

    /// The value of the one sample `query` returns, once it returns one
    /// for which `wanted` holds, by `PROMETHEUS_DEADLINE`.
    fn wait_for(&mut self, query: &str, wanted: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PROMETHEUS_DEADLINE;
        let mut last = String::new();
        loop {
            if let Some(body) = self.get(&format!("/api/v1/query?query={}", url_encode(query))) {
                if let Some(value) = sample_value(&body) {
                    if wanted(value) {
                        return value;
                    }
                }
                last = body;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{query}: no wanted answer within {PROMETHEUS_DEADLINE:?}; last: {last}\nlog:\n{}",
                self.log()
            );
            // A polling interval for a server that scrapes once a second.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The body of `GET path`, or `None` if Prometheus does not answer
    /// (yet). HTTP/1.0, so the body is neither chunked nor kept alive.
    fn get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The value of the first sample in a `/api/v1/query` answer:
/// `..."value":[1700000000.123,"3"]...`. A minimal reading of the one
/// shape the test asks for; `None` for an empty result.
fn sample_value(body: &str) -> Option<f64> {
    if !body.contains("\"status\":\"success\"") {
        return None;
    }
    let (_, rest) = body.split_once("\"value\":[")?;
    let (_, rest) = rest.split_once(",\"")?;
    let (value, _) = rest.split_once('"')?;
    value.parse().ok()
}

/// `query` as a URL query value: everything but unreserved characters
/// percent-encoded.
fn url_encode(query: &str) -> String {
    query
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[test]
#[cfg_attr(no_prometheus, ignore = "prometheus or promtool is not on PATH")]
fn prometheus_scrapes_echod_and_counts_its_connections() {
    let (_daemon, addr, metrics) = Daemon::start_with_metrics(&[]);
    const CLIENTS: u64 = 3;
    for i in 0..CLIENTS {
        let mut stream = connect(addr);
        assert_echoes(&mut stream, format!("client {i}\r\n").as_bytes());
        stream
            .shutdown(Shutdown::Write)
            .expect("shut the write half");
        assert!(read_to_eof(&mut stream).is_empty());
    }
    let mut prometheus = Prometheus::start(metrics);
    let up = prometheus.wait_for("up{job=\"echod\"}", |up| up == 1.0);
    assert_eq!(up, 1.0);
    let accepted = prometheus.wait_for("echod_connections_accepted_total", |n| n > 0.0);
    assert_eq!(accepted, CLIENTS as f64);
    let finished = prometheus.wait_for(
        "sum(echod_connections_closed_total{reason=\"peer_finished\"})",
        |n| n > 0.0,
    );
    assert_eq!(finished, CLIENTS as f64);
}

#[test]
#[cfg_attr(no_prometheus, ignore = "prometheus or promtool is not on PATH")]
fn promtool_finds_nothing_wrong_with_a_scrape() {
    let (_daemon, addr, metrics) = Daemon::start_with_metrics(&[]);
    let mut stream = connect(addr);
    assert_echoes(&mut stream, b"some traffic\r\n");
    let body = get_metrics(metrics).body;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    promtool
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(body.as_bytes())
        .expect("write the scrape to promtool");
    // promtool reads to the end of its input and exits; it needs no deadline
    // beyond the test's own, but one costs nothing.
    let deadline = Instant::now() + PROMETHEUS_DEADLINE;
    while promtool.try_wait().expect("wait for promtool").is_none() {
        assert!(Instant::now() < deadline, "promtool did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = promtool.wait_with_output().expect("promtool's output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool: {said}\non:\n{body}");
    assert!(said.trim().is_empty(), "promtool: {said}\non:\n{body}");
}
