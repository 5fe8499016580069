//! The Prometheus endpoint (`--metrics-listen`) on the real binary: every
//! series there, counts exact after a known workload, the HTTP answers to
//! what is not a scrape, and the bounds on scrapers (head size and time,
//! how many at once, a scraper that does not read, abuse of the port)
//! costing the echo clients nothing they notice.
//!
//! Every daemon listens on ephemeral loopback ports; every wait is bounded
//! by `DEADLINE` or a count.

mod common;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::scrape::{Series, exchange, scrape, scrape_until, try_get_metrics};
use common::{DEADLINE, assert_echoes, connect, read_to_eof};
use process::Daemon;

/// The endpoint's limit on scrapers connected at once (`metrics::MAX_SCRAPERS`).
const MAX_SCRAPERS: usize = echod::metrics::MAX_SCRAPERS;

/// A head's deadline (`metrics::SCRAPE_TIMEOUT_MS`).
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(echod::metrics::SCRAPE_TIMEOUT_MS);

/// One echo client's session: `lines` lines of `line_bytes` bytes each
/// (terminator included), every echo checked, then a clean close. Returns
/// the bytes sent (and echoed).
#[track_caller]
fn session(addr: SocketAddr, lines: usize, line_bytes: usize) -> u64 {
    let mut stream = connect(addr);
    let line = format!("{}\r\n", "x".repeat(line_bytes - 2));
    for _ in 0..lines {
        assert_echoes(&mut stream, line.as_bytes());
    }
    stream
        .shutdown(Shutdown::Write)
        .expect("shut the write half");
    // echod closes once it has seen the end and delivered everything: the
    // close is counted before this returns.
    assert!(read_to_eof(&mut stream).is_empty());
    (lines * line_bytes) as u64
}

#[test]
fn every_series_is_reported() {
    let (_daemon, _addr, metrics) = Daemon::start_with_metrics(&[]);
    let series = scrape(metrics);
    for name in [
        "echod_connections_open",
        "echod_connections_accepted_total",
        "echod_connections_rejected_total{reason=\"max_connections\"}",
        "echod_connections_rejected_total{reason=\"max_connections_per_ip\"}",
        "echod_connections_rejected_total{reason=\"denied\"}",
        "echod_connections_closed_total{reason=\"peer_finished\"}",
        "echod_connections_closed_total{reason=\"line_too_long\"}",
        "echod_connections_closed_total{reason=\"idle_timeout\"}",
        "echod_connections_closed_total{reason=\"send_timeout\"}",
        "echod_connections_closed_total{reason=\"line_timeout\"}",
        "echod_connections_closed_total{reason=\"evicted\"}",
        "echod_connections_closed_total{reason=\"out_of_memory\"}",
        "echod_connections_closed_total{reason=\"displaced\"}",
        "echod_connections_closed_total{reason=\"server_shutdown\"}",
        "echod_connections_closed_total{reason=\"shutdown_timeout\"}",
        "echod_connections_closed_total{reason=\"error\"}",
        "echod_connections_closed_total{reason=\"probe\"}",
        "echod_lines_echoed_total",
        "echod_bytes_received_total",
        "echod_bytes_sent_total",
        "echod_readers_paused",
        "echod_buffer_bytes",
        "echod_buffer_budget_bytes",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        series.get(name);
    }
    let build = format!(
        "echod_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(series.get(&build), 1.0);
    assert_eq!(series.count("echod_buffer_budget_bytes"), 256 << 20);
    assert!(series.get("process_resident_memory_bytes") > 0.0);
    assert!(series.get("process_open_fds") >= 3.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs_f64();
    let started = series.get("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 60.0,
        "started {started}, now {now}"
    );

    // OpenMetrics on request, ending as its format says.
    let response = exchange(
        metrics,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(response.body.ends_with("# EOF\n"), "{}", response.body);
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn counts_are_exact_after_a_known_workload() {
    let (_daemon, addr, metrics) = Daemon::start_with_metrics(&[]);
    const FINISHED: usize = 7;
    const LINES: usize = 5;
    const LINE_BYTES: usize = 100;
    let mut bytes = 0;
    for _ in 0..FINISHED {
        bytes += session(addr, LINES, LINE_BYTES);
    }
    // Two more stay open, each after one line: open connections count too.
    let mut open: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for stream in &mut open {
        assert_echoes(stream, b"open\r\n");
        bytes += 6;
    }
    // A probe: connects and closes without a byte. Counted once echod has
    // closed its end, which the next scrape waits for.
    drop(connect(addr));
    let series = scrape_until(metrics, "the probe's close", |series| {
        series.count("echod_connections_closed_total{reason=\"probe\"}") == 1
    });
    let accepted = FINISHED as u64 + 2 + 1;
    assert_eq!(series.count("echod_connections_accepted_total"), accepted);
    assert_eq!(series.count("echod_connections_open"), 2);
    assert_eq!(
        series.count("echod_connections_closed_total{reason=\"peer_finished\"}"),
        FINISHED as u64
    );
    assert_eq!(
        series.count("echod_lines_echoed_total"),
        (FINISHED * LINES + 2) as u64
    );
    assert_eq!(series.count("echod_bytes_received_total"), bytes);
    assert_eq!(series.count("echod_bytes_sent_total"), bytes);
    assert_eq!(series.count("echod_readers_paused"), 0);
    assert_eq!(
        series.count("echod_connections_rejected_total{reason=\"max_connections\"}"),
        0
    );
    // Scrapes are not echo connections: a second scrape changes nothing.
    let again = scrape(metrics);
    for name in [
        "echod_connections_accepted_total",
        "echod_lines_echoed_total",
        "echod_bytes_received_total",
        "echod_bytes_sent_total",
    ] {
        assert_eq!(again.count(name), series.count(name), "{name}");
    }
}

#[test]
fn connections_the_access_rules_deny_are_counted_as_denied() {
    let (_daemon, addr, metrics) = Daemon::start_with_metrics(&["--deny", "127.0.0.1"]);
    for _ in 0..3 {
        let mut denied = connect(addr);
        assert!(read_to_eof(&mut denied).is_empty());
    }
    let series = scrape(metrics);
    assert_eq!(
        series.count("echod_connections_rejected_total{reason=\"denied\"}"),
        3
    );
    assert_eq!(
        series.count("echod_connections_rejected_total{reason=\"max_connections\"}"),
        0
    );
    assert_eq!(series.count("echod_connections_accepted_total"), 0);
}

#[test]
fn rejections_are_counted_by_the_limit_that_refused() {
    let (_daemon, addr, metrics) =
        Daemon::start_with_metrics(&["--max-connections", "2", "--max-connections-per-ip", "1"]);
    let mut first = connect(addr);
    assert_echoes(&mut first, b"one\r\n");
    // A second from the same address: refused by the per-address limit.
    let mut refused = connect(addr);
    assert!(read_to_eof(&mut refused).is_empty());
    let series = scrape(metrics);
    assert_eq!(
        series.count("echod_connections_rejected_total{reason=\"max_connections_per_ip\"}"),
        1
    );
    assert_eq!(
        series.count("echod_connections_rejected_total{reason=\"max_connections\"}"),
        0
    );
    assert_eq!(series.count("echod_connections_accepted_total"), 1);
}

#[test]
fn anything_but_get_metrics_is_answered_with_its_error() {
    let (_daemon, _addr, metrics) = Daemon::start_with_metrics(&[]);
    let cases: [(&[u8], u16); 6] = [
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /metric HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405),
        (b"hello there\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nbad header line\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let response = exchange(metrics, request);
        assert_eq!(
            response.status,
            status,
            "{:?}: {response:?}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(response.header("connection"), Some("close"));
    }
    let response = exchange(metrics, b"PUT /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(response.header("allow"), Some("GET"));
    // A scrape still works after all that.
    scrape(metrics);
}

#[test]
fn an_oversized_head_is_refused() {
    let (_daemon, _addr, metrics) = Daemon::start_with_metrics(&[]);
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    request.resize(echod::metrics::http::HEAD_LIMIT_BYTES + 1024, b'y');
    // Never ends its head: echod answers once it holds the limit, and
    // reads (and drops) the rest until the client closes.
    let response = exchange(metrics, &request);
    assert_eq!(response.status, 431, "{response:?}");
    scrape(metrics);
}

#[test]
fn a_head_that_does_not_arrive_in_time_is_cut_off() {
    let (_daemon, _addr, metrics) = Daemon::start_with_metrics(&[]);
    let mut slow = connect(metrics);
    slow.write_all(b"GET /metr").expect("half a request line");
    let began = Instant::now();
    // The deadline is checked once a second: closed within a second after it.
    let received = read_to_eof(&mut slow);
    let waited = began.elapsed();
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        waited >= SCRAPE_TIMEOUT - Duration::from_millis(500),
        "closed after {waited:?}, before the {SCRAPE_TIMEOUT:?} allowed"
    );
    scrape(metrics);
}

#[test]
fn scrapers_beyond_the_limit_are_refused_at_accept() {
    let (_daemon, addr, metrics) = Daemon::start_with_metrics(&[]);
    // Each holds a slot: connected, nothing sent. Connected one after the
    // other, they are accepted in that order, before the next one.
    let mut held: Vec<TcpStream> = (0..MAX_SCRAPERS).map(|_| connect(metrics)).collect();
    let mut refused = connect(metrics);
    assert!(
        read_to_eof(&mut refused).is_empty(),
        "one beyond the limit is closed at once"
    );
    // The echo port is another matter.
    let mut client = connect(addr);
    assert_echoes(&mut client, b"still echoing\r\n");
    // One slot freed: a scrape gets it (once echod has seen the close).
    held.pop();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut stream = connect(metrics);
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .expect("send a request");
        let mut first = [0; 12];
        match stream.read(&mut first) {
            Ok(12) if &first == b"HTTP/1.1 200" => break,
            Ok(0) => {}
            Ok(n) => panic!(
                "unexpected answer: {:?}",
                String::from_utf8_lossy(&first[..n])
            ),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
            Err(err) => panic!("scrape: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed within {DEADLINE:?}"
        );
    }
    drop(held);
}

#[test]
fn scrapers_that_never_read_do_not_stall_the_echoes() {
    let (_daemon, addr, metrics) = Daemon::start_with_metrics(&[]);
    // Every slot taken by a scraper that asks and never reads, with the
    // smallest receive buffer the kernel allows.
    let stalled: Vec<TcpStream> = (0..MAX_SCRAPERS)
        .map(|_| {
            let mut stream = common::connect_with_receive_buffer(metrics, 1);
            for _ in 0..64 {
                // Asks again and again: the rest is read and dropped after
                // the first answer, or waits in the kernel.
                if stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n\r\n")
                    .is_err()
                {
                    break;
                }
            }
            stream
        })
        .collect();
    let mut client = connect(addr);
    for i in 0..100 {
        assert_echoes(&mut client, format!("line {i}\r\n").as_bytes());
    }
    drop(stalled);
    // Once they are gone, scraping works again.
    let series = scrape_until(metrics, "100 lines", |series| {
        series.count("echod_lines_echoed_total") == 100
    });
    assert_eq!(series.count("echod_connections_open"), 1);
}

/// The abuse of `abuse_of_the_metrics_port_costs_the_echo_clients_nothing`.
struct Abuse {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Requests the flooders got answered (refusals not counted).
    answered: Arc<AtomicU64>,
}

impl Abuse {
    /// `slowloris` connections that each send a byte of a head now and
    /// then (reconnecting when closed), and `flooders` clients that connect,
    /// ask and read as fast as they can.
    fn start(metrics: SocketAddr, slowloris: usize, flooders: usize) -> Abuse {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        {
            let stop = Arc::clone(&stop);
            threads.push(thread::spawn(move || {
                let open = |_| {
                    let stream = TcpStream::connect(metrics).ok()?;
                    stream.set_write_timeout(Some(DEADLINE)).ok()?;
                    Some(stream)
                };
                let mut loris: Vec<Option<TcpStream>> = (0..slowloris).map(open).collect();
                let head = b"GET /metrics HTTP/1.1\r\nX-Slow: ";
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let byte = head.get(sent).copied().unwrap_or(b'z');
                    sent += 1;
                    for slot in loris.iter_mut() {
                        let ok = slot
                            .as_mut()
                            .is_some_and(|stream| stream.write_all(&[byte]).is_ok());
                        if !ok {
                            *slot = open(0);
                        }
                    }
                    // The slowloris's pace, not synchronisation.
                    thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        for _ in 0..flooders {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(metrics) else {
                        continue;
                    };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                    if stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").is_err() {
                        continue;
                    }
                    let mut response = Vec::new();
                    if stream.read_to_end(&mut response).is_ok() && !response.is_empty() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Abuse {
            stop,
            threads,
            answered,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("an abuser panicked");
        }
        self.answered.load(Ordering::Relaxed)
    }
}

#[test]
fn abuse_of_the_metrics_port_costs_the_echo_clients_nothing() {
    let (daemon, addr, metrics) = Daemon::start_with_metrics(&[]);
    let rss_before = daemon.rss_bytes();
    let abuse = Abuse::start(metrics, 50, 4);
    // Echo clients go on being served, each echo within the client's
    // timeout, for as long as the abuse lasts.
    let mut clients: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(3);
    let mut lines = 0u64;
    while Instant::now() < until {
        for client in &mut clients {
            let began = Instant::now();
            assert_echoes(client, b"echo under abuse\r\n");
            slowest = slowest.max(began.elapsed());
            lines += 1;
        }
    }
    let answered = abuse.stop();
    let rss_after = daemon.rss_bytes();
    eprintln!(
        "{lines} echoes, slowest {slowest:?}; {answered} flood requests answered; \
         RSS {rss_before} -> {rss_after} bytes"
    );
    assert!(
        rss_after < rss_before + (64 << 20),
        "RSS grew from {rss_before} to {rss_after} bytes"
    );
    // Once the abuse stops, a normal scrape is answered (the slowloris
    // slots free as their connections close, or at their deadline).
    let deadline = Instant::now() + DEADLINE;
    let series = loop {
        if let Some(response) = try_get_metrics(metrics) {
            if response.status == 200 {
                break Series::parse(&response.body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no scrape answered within {DEADLINE:?} after the abuse"
        );
    };
    assert_eq!(series.count("echod_lines_echoed_total"), lines);
}

#[test]
fn with_two_workers_a_scrape_reports_the_sums() {
    let (mut daemon, addr, metrics) = Daemon::start_with_metrics(&["--workers", "2"]);
    daemon.wait_for_log("worker 2: listening on");
    // Enough connections that both workers serve some (all on one has
    // probability 2^-99).
    const CLIENTS: usize = 100;
    let mut bytes = 0;
    for _ in 0..CLIENTS {
        bytes += session(addr, 2, 10);
    }
    // Each worker publishes once a second: the sums catch up within one.
    let series = scrape_until(metrics, "every connection", |series| {
        series.count("echod_connections_closed_total{reason=\"peer_finished\"}") == CLIENTS as u64
    });
    assert_eq!(
        series.count("echod_connections_accepted_total"),
        CLIENTS as u64
    );
    assert_eq!(series.count("echod_lines_echoed_total"), 2 * CLIENTS as u64);
    assert_eq!(series.count("echod_bytes_received_total"), bytes);
    assert_eq!(series.count("echod_bytes_sent_total"), bytes);
    assert_eq!(series.count("echod_connections_open"), 0);
    // The budget is the process's, in shares that add up to it.
    assert_eq!(series.count("echod_buffer_budget_bytes"), 256 << 20);
}
