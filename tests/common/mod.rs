//! Shared helpers for the integration tests, one copy of each: a real
//! server on an ephemeral loopback port (`TestServer`, in this process), and
//! the blocking clients every test uses against it or against the `echod`
//! binary (`tests/process` runs that and uses the clients from here).
//!
//! Every client fails fast instead of hanging: reads and writes time out
//! after `DEADLINE`, and every loop gives up by a deadline or a byte count.
//! What a helper asserts is in its name (`assert_*`); the others return what
//! they saw for the test to judge.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod scrape;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use echod::control::{Control, Worker};
use echod::{Config, Listen, Server, ShutdownHandle, Summary};

/// Longest any single wait in these tests may take before it fails: a
/// client's read or write, a wait for a log line, an exit or a count.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Most bytes a test reads or writes in one bulk phase, so the data volume
/// is bounded whatever the kernel's buffers hold.
pub const MAX_BULK_BYTES: usize = 64 << 20;

/// How often a published count is read while waiting for it to change.
const COUNT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A server running on its own thread, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: ShutdownHandle,
    handle: Option<thread::JoinHandle<io::Result<Summary>>>,
    /// With `start_reporting`, where the server publishes its totals, open
    /// connections included, once a second (as a worker does for the
    /// coordinating thread); `None` otherwise.
    report: Option<Arc<Mutex<Summary>>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with a port chosen by the OS, so tests
    /// can run in parallel. The shutdown timeout is short so that a test
    /// that leaves a stalled client behind still ends promptly.
    pub fn start(config: Config) -> TestServer {
        let server = Server::bind(test_config(config)).expect("bind test server");
        TestServer::run(server, None)
    }

    /// Starts a server with the default configuration.
    pub fn start_default() -> TestServer {
        TestServer::start(Config::default())
    }

    /// Like `start`, but the server publishes its live totals for
    /// `wait_for_report`: it runs as worker 1 of 1, which differs from a
    /// single loop only in that publishing (and a "worker 1: " prefix on
    /// log lines nobody reads here). A counter such as
    /// `Summary::paused_connections` is observable in no other way while an
    /// in-process server runs.
    pub fn start_reporting(config: Config) -> TestServer {
        let config = test_config(config);
        let listeners = echod::listener::bind_all(&config.listen, false).expect("bind test server");
        let report = Arc::new(Mutex::new(Summary::default()));
        let worker = Worker {
            number: 1,
            report: Arc::clone(&report),
        };
        let server = Server::with_control(config, listeners, Control::for_worker(worker))
            .expect("set up test server");
        TestServer::run(server, Some(report))
    }

    fn run(server: Server, report: Option<Arc<Mutex<Summary>>>) -> TestServer {
        let addr = server.local_addrs()[0];
        let shutdown = server.shutdown_handle();
        let handle = Some(thread::spawn(move || server.run()));
        TestServer {
            addr,
            shutdown,
            handle,
            report,
        }
    }

    /// A blocking client whose reads and writes fail after `DEADLINE`.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Waits until the server publishes totals for which `wanted` holds,
    /// and returns them; fails after `DEADLINE`, showing the last totals.
    /// The server publishes once a second, so this may take that long.
    /// Needs a server from `start_reporting`.
    #[track_caller]
    pub fn wait_for_report(&self, what: &str, wanted: impl Fn(&Summary) -> bool) -> Summary {
        let report = self
            .report
            .as_ref()
            .expect("wait_for_report needs TestServer::start_reporting");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let summary = *report.lock().expect("the server thread does not panic");
            if wanted(&summary) {
                return summary;
            }
            assert!(
                Instant::now() < deadline,
                "no report with {what} within {DEADLINE:?}; last: {summary:?}"
            );
            // Polls a published counter; nothing else announces a change.
            thread::sleep(COUNT_POLL_INTERVAL);
        }
    }

    /// Stops the server gracefully and returns its totals.
    pub fn stop(mut self) -> Summary {
        self.shutdown.trigger();
        let handle = self.handle.take().expect("server is running");
        handle
            .join()
            .expect("server thread panicked")
            .expect("server returned an error")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        self.shutdown.trigger();
        let outcome = handle.join();
        if !thread::panicking() {
            outcome
                .expect("server thread panicked")
                .expect("server returned an error");
        }
    }
}

/// `config` on 127.0.0.1, port 0, with a short shutdown timeout.
fn test_config(config: Config) -> Config {
    Config {
        listen: Listen::Addresses(vec![([127, 0, 0, 1], 0).into()]),
        shutdown_timeout: Duration::from_secs(2),
        ..config
    }
}

/// Connects a client whose reads and writes fail after `DEADLINE` instead of
/// hanging the test.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    set_timeouts(&stream);
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

/// A client with a fixed receive buffer of about `receive_buffer_bytes`
/// (the kernel doubles the figure it is given), for tests in which a client
/// stops reading.
///
/// A stalled client left with a small *autotuned* receive buffer drops
/// loopback's 64 KiB segments, and the sender's retransmission timer then
/// backs off for many seconds: a TCP stall that has nothing to do with echod.
/// Setting `SO_RCVBUF` before connecting turns autotuning off, and the window
/// the client advertises then never promises more than it can hold.
#[track_caller]
pub fn connect_with_receive_buffer(addr: SocketAddr, receive_buffer_bytes: usize) -> TcpStream {
    connect_configured(addr, |socket| {
        socket
            .set_recv_buffer_size(receive_buffer_bytes)
            .expect("SO_RCVBUF");
    })
}

/// A client with small fixed socket buffers (8 KiB each way, as the kernel
/// counts them) and an Ethernet-sized MSS, for tests with stalled readers.
/// With loopback's 64 KiB MSS, echod's send buffer autotunes to megabytes
/// for each client; with 1460 bytes it stays near 100 KiB, as it would on a
/// real network, so that stalling a thousand clients moves megabytes, not
/// gigabytes, and a stalled client makes echod owe it output (and pause)
/// after a few hundred kilobytes.
#[track_caller]
pub fn connect_small_buffers(addr: SocketAddr) -> TcpStream {
    connect_configured(addr, |socket| {
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
        socket.set_tcp_mss(1460).expect("TCP_MAXSEG");
    })
}

/// A blocking client whose socket options are set by `configure` before the
/// handshake (where the window scale and the MSS are chosen), with the same
/// timeouts as `connect`.
#[track_caller]
/// A client whose end is on `from` (another loopback address, such as
/// 127.0.0.2), with the usual timeouts.
pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    connect_configured(addr, |socket| {
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .unwrap_or_else(|err| panic!("bind the client to {from}: {err}"));
    })
}

fn connect_configured(addr: SocketAddr, configure: impl FnOnce(&socket2::Socket)) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    configure(&socket);
    socket
        .connect(&addr.into())
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    let stream = TcpStream::from(socket);
    set_timeouts(&stream);
    stream
}

fn set_timeouts(stream: &TcpStream) {
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(DEADLINE))
        .expect("set write timeout");
}

/// Reads exactly `n` bytes, failing the test on timeout, EOF or error.
#[track_caller]
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut received = vec![0; n];
    if let Err(err) = stream.read_exact(&mut received) {
        panic!("expected {n} bytes: {err}");
    }
    received
}

/// Sends `line` and checks that exactly it comes back.
#[track_caller]
pub fn assert_echoes(stream: &mut TcpStream, line: &[u8]) {
    stream.write_all(line).expect("send a line");
    let mut echo = vec![0; line.len()];
    stream
        .read_exact(&mut echo)
        .unwrap_or_else(|err| panic!("no echo of {:?}: {err}", String::from_utf8_lossy(line)));
    assert_eq!(
        String::from_utf8_lossy(&echo),
        String::from_utf8_lossy(line),
        "the echo differs from the line sent"
    );
}

/// Reads exactly `expected.len()` bytes, by `deadline`, and checks that
/// they are `expected`.
#[track_caller]
pub fn assert_receives(stream: &mut TcpStream, expected: &[u8], deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .expect("set read timeout");
    let mut received = vec![0; expected.len()];
    let outcome = stream.read_exact(&mut received);
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("restore the read timeout");
    if let Err(err) = outcome {
        panic!(
            "{:?} did not arrive by the deadline: {err}",
            String::from_utf8_lossy(expected)
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(expected)
    );
}

/// Reads until end of stream and returns everything read, at most
/// `MAX_BULK_BYTES`; see `read_to_eof_at_most`.
#[track_caller]
pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    read_to_eof_at_most(stream, MAX_BULK_BYTES)
}

/// Reads until end of stream and returns everything read. Fails the test on
/// a reset, on a read that times out, if more than `limit` bytes arrive, or
/// if the stream stays open past `DEADLINE`.
#[track_caller]
pub fn read_to_eof_at_most(stream: &mut TcpStream, limit: usize) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut received = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        assert!(
            Instant::now() < deadline,
            "no end of stream within {DEADLINE:?} ({} bytes read)",
            received.len()
        );
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => {
                received.extend_from_slice(&chunk[..n]);
                assert!(
                    received.len() <= limit,
                    "more than {limit} bytes before EOF"
                );
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("expected EOF after {} bytes, got {err}", received.len()),
        }
    }
}

/// Asserts that nothing arrives within `wait`. A bounded check of an absence,
/// not a synchronisation: it can only pass wrongly (if the server were slow),
/// never fail wrongly.
#[track_caller]
pub fn assert_nothing_arrives(stream: &mut TcpStream, wait: Duration) {
    stream
        .set_read_timeout(Some(wait))
        .expect("set read timeout");
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("connection closed, expected it to wait"),
        Ok(_) => panic!("received {:?}, expected nothing yet", byte[0] as char),
        Err(err) => panic!("expected nothing, got {err}"),
    }
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("set read timeout");
}

/// Asserts that the server closes the connection (EOF or reset) before
/// `DEADLINE`, after sending nothing more than `expected`.
#[track_caller]
pub fn assert_closed_after(stream: &mut TcpStream, expected: &[u8]) {
    let deadline = Instant::now() + DEADLINE;
    let mut received = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "server did not close the connection"
        );
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("server did not close the connection")
            }
            Err(_) => break, // A reset also closes it.
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(expected)
    );
}

/// `count` CRLF lines of varied length and content, numbered so that a
/// reordering or a loss is visible in a failed assertion.
pub fn numbered_lines(count: usize, prefix: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..count {
        let padding = "x".repeat(i % 97);
        bytes.extend_from_slice(format!("{prefix} {i} {padding}\r\n").as_bytes());
    }
    bytes
}

/// Writes `bytes` from another thread, so the caller can read concurrently
/// without either side's buffers filling up and deadlocking the test.
pub fn write_in_background(
    stream: &TcpStream,
    bytes: Vec<u8>,
    then_shutdown: bool,
) -> thread::JoinHandle<()> {
    let mut writer = stream.try_clone().expect("clone client stream");
    thread::spawn(move || {
        writer.write_all(&bytes).expect("write to server");
        if then_shutdown {
            writer
                .shutdown(std::net::Shutdown::Write)
                .expect("shut down write half");
        }
    })
}

/// Writes copies of `line` without reading until the kernel will take no
/// more for now, up to `cap` bytes, and returns the bytes it took. A write
/// that would block shows the buffers are full at that instant, not that
/// echod has paused; `process::push_until_paused` waits for that.
#[track_caller]
pub fn push_until_blocked(stream: &mut TcpStream, line: &[u8], cap: usize) -> Vec<u8> {
    stream.set_nonblocking(true).expect("non-blocking");
    let block = line.repeat(1024);
    let mut sent = Vec::new();
    while sent.len() < cap {
        let offset = sent.len() % block.len();
        match stream.write(&block[offset..]) {
            Ok(n) => sent.extend_from_slice(&block[offset..offset + n]),
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("write failed after {} bytes: {err}", sent.len()),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    sent
}
