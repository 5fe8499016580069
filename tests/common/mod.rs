//! Shared helpers for the integration tests: a real server on an ephemeral
//! loopback port, and clients that fail fast instead of hanging.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use echod::{Config, Listen, Server, ShutdownHandle, Summary};

/// Longest any single client operation may wait before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running on its own thread, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: ShutdownHandle,
    handle: Option<thread::JoinHandle<io::Result<Summary>>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with a port chosen by the OS, so tests
    /// can run in parallel. The shutdown timeout is short so that a test
    /// that leaves a stalled client behind still ends promptly.
    pub fn start(config: Config) -> TestServer {
        let config = Config {
            listen: Listen::Addresses(vec![([127, 0, 0, 1], 0).into()]),
            shutdown_timeout: Duration::from_secs(2),
            ..config
        };
        let server = Server::bind(config).expect("bind test server");
        let addr = server.local_addrs()[0];
        let shutdown = server.shutdown_handle();
        let handle = Some(thread::spawn(move || server.run()));
        TestServer {
            addr,
            shutdown,
            handle,
        }
    }

    /// Starts a server with the default configuration.
    pub fn start_default() -> TestServer {
        TestServer::start(Config::default())
    }

    /// A blocking client whose reads and writes fail after `CLIENT_TIMEOUT`.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
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

/// Connects to `addr` with read and write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to test server");
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .expect("set write timeout");
    stream.set_nodelay(true).expect("set nodelay");
    stream
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

/// Writes `bytes` and reads back as many, which must be the same bytes.
#[track_caller]
pub fn round_trip(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("write to server");
    let echoed = read_n(stream, bytes.len());
    assert_eq!(
        String::from_utf8_lossy(&echoed),
        String::from_utf8_lossy(bytes),
        "echo differs from what was sent"
    );
}

/// Reads until EOF and returns everything read. Fails the test on a reset,
/// a timeout, or if more than `limit` bytes arrive.
#[track_caller]
pub fn read_to_eof(stream: &mut TcpStream, limit: usize) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => {
                received.extend_from_slice(&chunk[..n]);
                assert!(
                    received.len() <= limit,
                    "more than {limit} bytes before EOF"
                );
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
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
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Ok(0) => panic!("connection closed, expected it to wait"),
        Ok(_) => panic!("received {:?}, expected nothing yet", byte[0] as char),
        Err(err) => panic!("expected nothing, got {err}"),
    }
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("set read timeout");
}

/// Asserts that the server closes the connection (EOF or reset) before the
/// client timeout, after sending nothing more than `expected`.
#[track_caller]
pub fn assert_closed_after(stream: &mut TcpStream, expected: &[u8]) {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
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
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
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
