//! `echod probe` against a real daemon, and against listeners that fail it
//! in each way it reports: refused, timeout, closed, mismatch.
//!
//! The probe runs as the real binary, as a health check would run it; the
//! misbehaving peers are plain std listeners on ephemeral loopback ports,
//! served from a thread that does one thing and ends.
//!
//! The IPv6 test needs `::1`; where it cannot be bound, the root
//! `build.rs` sets `no_ipv6_loopback` and the test is ignored with that
//! reason (under `CI=true` it runs anyway, and fails).

mod common;
mod process;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::DEADLINE;
use process::Daemon;

/// Exit status of a failed probe.
const EXIT_PROBE_FAILED: i32 = 1;
/// Exit status for a bad command line.
const EXIT_USAGE: i32 = 64;

/// Runs `echod probe` with `args` and returns its exit code, standard
/// output and standard error.
#[track_caller]
fn run_probe(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["probe"];
    all.extend_from_slice(args);
    let mut probe = Daemon::spawn(&all);
    let code = probe.wait_exit().code();
    let stdout = probe.full_log().join("\n");
    let stderr = probe.stderr().trim_end().to_owned();
    (code, stdout, stderr)
}

/// Asserts a successful probe of `addr` and returns its output line.
#[track_caller]
fn assert_probe_ok(target: &str, addr: SocketAddr) -> String {
    let (code, stdout, stderr) = run_probe(&[target]);
    assert_eq!(code, Some(0), "probe {target} failed: {stderr}");
    assert_eq!(stderr, "", "a passing probe writes nothing to stderr");
    assert!(
        stdout.starts_with(&format!("ok: {addr} echoed 30 bytes in "))
            && stdout.contains(" ms (connect ")
            && stdout.ends_with(" ms)"),
        "unexpected output: {stdout:?}"
    );
    stdout
}

/// A listener whose one connection is handled by `serve` on a thread of
/// its own. The thread is left to end by itself: it returns once its one
/// client is done, and if the client never came, the test has failed.
fn misbehaving_peer(serve: fn(std::net::TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = listener.local_addr().expect("listener address");
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            stream
                .set_read_timeout(Some(DEADLINE))
                .expect("set read timeout");
            serve(stream);
        }
    });
    addr
}

/// Reads the probe's line, so that closing afterwards sends FIN, not a
/// reset for unread data.
fn read_line(stream: &std::net::TcpStream) -> String {
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

#[test]
fn probe_passes_against_the_daemon_in_every_framing() {
    for framing in ["crlf", "lf", "raw"] {
        let (mut daemon, addr) = Daemon::start(&["--framing", framing, "--stats-interval", "0.1"]);
        assert_probe_ok(&addr.to_string(), addr);
        // The daemon's counters saw an ordinary client that finished
        // cleanly, not a health check (raw framing counts no lines).
        daemon.wait_for_stats(&["0 open", "closed: 1 peer finished,", "0 error; 0 probes"]);
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait_exit().code(), Some(0), "{framing}");
        let stopped = daemon.wait_for_log("stopped: ");
        assert!(
            stopped.contains("stopped: 1 connection served")
                && stopped.contains(" 30 bytes echoed"),
            "{framing}: {stopped}"
        );
    }
}

#[test]
fn probe_resolves_host_names_and_tries_each_address() {
    // "localhost" may resolve to ::1 first, where nothing listens on this
    // port: the probe then moves on to 127.0.0.1 within its deadline.
    let (mut daemon, addr) = Daemon::start(&[]);
    assert_probe_ok(&format!("localhost:{}", addr.port()), addr);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
#[cfg_attr(no_ipv6_loopback, ignore = "this host cannot bind [::1]")]
fn probe_reaches_an_ipv6_daemon() {
    let mut daemon = Daemon::spawn(&["-l", "[::1]:0"]);
    let addr = daemon.listening_addr();
    assert!(addr.is_ipv6());
    assert_probe_ok(&addr.to_string(), addr);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn probe_reports_a_refused_connection() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        listener.local_addr().expect("listener address")
    }; // Closed here: nothing listens on the port any more.
    let (code, stdout, stderr) = run_probe(&[&addr.to_string()]);
    assert_eq!(code, Some(EXIT_PROBE_FAILED));
    assert_eq!(stdout, "");
    assert_eq!(stderr, format!("echod probe: {addr}: connection refused"));
}

#[test]
fn probe_times_out_when_nothing_comes_back() {
    // Never accepted: the kernel completes the handshake from the backlog,
    // takes the line, and nothing ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let addr = listener.local_addr().expect("listener address");
    let started = Instant::now();
    let (code, _, stderr) = run_probe(&[&addr.to_string(), "--timeout", "300"]);
    let elapsed = started.elapsed();
    assert_eq!(code, Some(EXIT_PROBE_FAILED));
    assert_eq!(
        stderr,
        format!("echod probe: {addr}: timeout: no echo within 300.000 ms (reading)")
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "gave up after {elapsed:?}, before its timeout"
    );
    drop(listener);
}

#[test]
fn probe_reports_a_close_before_the_echo() {
    let addr = misbehaving_peer(|stream| {
        read_line(&stream);
    });
    let (code, _, stderr) = run_probe(&[&addr.to_string()]);
    assert_eq!(code, Some(EXIT_PROBE_FAILED));
    assert_eq!(
        stderr,
        format!("echod probe: {addr}: closed: connection closed after 0 of 30 echoed bytes")
    );
}

#[test]
fn probe_reports_an_echo_that_differs() {
    let addr = misbehaving_peer(|mut stream| {
        let line = read_line(&stream);
        // Same length and prefix, different nonce: only a byte-exact check
        // catches it.
        let wrong = format!("echod-probe {}\r\n", "0".repeat(16));
        assert_eq!(line.len(), wrong.len(), "the probe line has a fixed length");
        let _ = stream.write_all(wrong.as_bytes());
        let _ = read_line(&stream); // Until the probe closes.
    });
    let (code, _, stderr) = run_probe(&[&addr.to_string()]);
    assert_eq!(code, Some(EXIT_PROBE_FAILED));
    assert!(
        stderr.starts_with(&format!(
            "echod probe: {addr}: mismatch: sent \"echod-probe "
        )) && stderr.contains("received \"echod-probe 0"),
        "{stderr}"
    );
}

#[test]
fn probe_rejects_a_bad_command_line() {
    for args in [&["nohost"][..], &["--timeout", "0"], &["a:1", "b:2"]] {
        let (code, stdout, stderr) = run_probe(args);
        assert_eq!(code, Some(EXIT_USAGE), "{args:?}: {stderr}");
        assert_eq!(stdout, "");
        assert!(stderr.starts_with("echod: "), "{args:?}: {stderr}");
    }
}
