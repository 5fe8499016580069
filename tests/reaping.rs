//! Reaping, on the real binary: a connection that holds echod's memory or a
//! slot without ever moving is closed by default (`--send-timeout`,
//! `--line-timeout`, TCP keepalive), each with its own close reason, and a
//! client that is slow but moving is never cut.
//!
//! The timeouts are shortened to a second or so here; their defaults are
//! checked through `--help`. What echod closed, and why, is read from its
//! stats line (closes by reason), not from trace text.

mod common;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, assert_echoes, connect, connect_small_buffers};
use process::Daemon;

/// Stats often enough that a close shows within a fraction of a second.
const STATS: [&str; 2] = ["--stats-interval", "0.2"];

/// Reads until EOF or a reset, and returns how long that took; fails after
/// `DEADLINE`.
#[track_caller]
fn wait_for_close(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut chunk = [0; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return started.elapsed(),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    started.elapsed() < DEADLINE,
                    "echod did not close the connection within {DEADLINE:?}"
                );
            }
            Err(err) => panic!("read: {err}"),
        }
    }
}

/// Writes lines until the kernel takes no more (echod owes the rest and
/// has stopped reading), without reading a byte back.
fn fill_without_reading(stream: &mut TcpStream) -> usize {
    let line = [b"x".repeat(1022), b"\r\n".to_vec()].concat();
    stream.set_nonblocking(true).expect("non-blocking");
    let deadline = Instant::now() + DEADLINE;
    let mut sent = 0;
    let mut idle_rounds = 0;
    while idle_rounds < 50 {
        assert!(Instant::now() < deadline, "the kernel kept taking bytes");
        match stream.write(&line) {
            Ok(n) => {
                sent += n;
                idle_rounds = 0;
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                // Give echod a moment to read and pause; the loop ends once
                // nothing has been taken for a while.
                idle_rounds += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("write: {err}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    sent
}

#[test]
fn a_client_that_takes_none_of_its_echoes_is_closed_after_the_send_timeout() {
    let (mut daemon, addr) = Daemon::start(&[
        "--send-timeout",
        "1",
        "--max-pending-bytes",
        "64K",
        STATS[0],
        STATS[1],
    ]);
    let mut stalled = connect_small_buffers(addr);
    assert_echoes(&mut stalled, b"hello\r\n");
    let sent = fill_without_reading(&mut stalled);
    assert!(sent > 64 * 1024, "only {sent} bytes went out");
    daemon.wait_for_stats(&["1 send timeout"]);
    // Its socket is closed; what was owed is gone with it.
    wait_for_close(&mut stalled);
    // Others are served as ever.
    let mut other = connect(addr);
    assert_echoes(&mut other, b"still here\r\n");
}

#[test]
fn a_slow_reader_that_keeps_taking_echoes_is_not_cut() {
    let (mut daemon, addr) = Daemon::start(&[
        "--send-timeout",
        "2",
        "--max-pending-bytes",
        "64K",
        STATS[0],
        STATS[1],
    ]);
    let mut slow = connect_small_buffers(addr);
    let sent = fill_without_reading(&mut slow);
    // A client that keeps going, slowly, for two send timeouts: every 20 ms
    // one more line, and one read of at most 8 KiB (its small receive
    // buffer holds less). Progress is echod's write taking bytes, and the
    // kernel reports room to write only once a good part of its send buffer
    // has drained, so the client must take echoes steadily, not a trickle
    // (docs/PROTOCOL.md, *Timeouts*).
    let line = [b"y".repeat(1022), b"\r\n".to_vec()].concat();
    slow.set_nonblocking(true).expect("non-blocking");
    let mut got = 0;
    let until = Instant::now() + Duration::from_secs(4);
    let mut chunk = [0; 8 * 1024];
    while Instant::now() < until {
        match slow.write(&line) {
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => panic!("the slow client was cut: {err}"),
        }
        match slow.read(&mut chunk) {
            Ok(0) => panic!("the slow client was cut: end of file"),
            Ok(n) => got += n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => panic!("the slow client was cut: {err}"),
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        got > 0 && sent > 0,
        "read {got}, having pushed {sent} first"
    );
    let stats = daemon.wait_for_stats(&["0 send timeout"]);
    assert!(stats.contains("1 open"), "{stats}");
}

#[test]
fn a_line_fed_a_byte_at_a_time_is_closed_after_the_line_timeout() {
    let (mut daemon, addr) = Daemon::start(&["--line-timeout", "1", STATS[0], STATS[1]]);
    let mut slowloris = connect(addr);
    assert_echoes(&mut slowloris, b"a first line is fine\r\n");
    let started = Instant::now();
    slowloris.set_nonblocking(true).expect("non-blocking");
    let mut closed = false;
    while started.elapsed() < DEADLINE {
        match slowloris.write(b"x") {
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                ) =>
            {
                closed = true;
                break;
            }
            Err(err) => panic!("write: {err}"),
        }
        let mut byte = [0; 1];
        match slowloris.read(&mut byte) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(err) if err.kind() == ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Ok(_) => panic!("no line was finished, so nothing is echoed"),
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => panic!("read: {err}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(closed, "still open after {DEADLINE:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "closed after {took:?}, before the line timeout"
    );
    daemon.wait_for_stats(&["1 line timeout"]);
}

#[test]
fn lines_that_end_in_time_are_never_cut_by_the_line_timeout() {
    let (mut daemon, addr) = Daemon::start(&["--line-timeout", "1", STATS[0], STATS[1]]);
    let mut client = connect(addr);
    // A line every 300 ms for three line timeouts, each sent in two halves.
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < until {
        client
            .write_all(format!("line {n}").as_bytes())
            .expect("first half");
        thread::sleep(Duration::from_millis(150));
        client.write_all(b"\r\n").expect("second half");
        let mut echo = vec![0; format!("line {n}\r\n").len()];
        client.read_exact(&mut echo).expect("the echo");
        thread::sleep(Duration::from_millis(150));
        n += 1;
    }
    let stats = daemon.wait_for_stats(&["0 line timeout"]);
    assert!(stats.contains("1 open"), "{stats}");
}

/// The kernel's timer for the server side of a connection, from
/// /proc/net/tcp: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 probe.
fn server_socket_timer(server: SocketAddr, client: SocketAddr) -> u8 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let hex = |addr: SocketAddr| format!(":{:04X}", addr.port());
    for row in table.lines().skip(1) {
        let fields: Vec<&str> = row.split_whitespace().collect();
        // local_address, rem_address, st, tx:rx, tr:tm->when, ...
        if fields.len() > 5
            && fields[1].ends_with(&hex(server))
            && fields[2].ends_with(&hex(client))
        {
            let timer = fields[5].split(':').next().expect("tr:when");
            return u8::from_str_radix(timer, 16).expect("a hex timer");
        }
    }
    panic!("no socket {server} -> {client} in /proc/net/tcp");
}

#[test]
fn accepted_sockets_have_tcp_keepalive_by_default_and_not_with_0() {
    let (_daemon, addr) = Daemon::start(&[]);
    let mut client = connect(addr);
    assert_echoes(&mut client, b"ping\r\n");
    let client_addr = client.local_addr().expect("client address");
    assert_eq!(
        server_socket_timer(addr, client_addr),
        2,
        "keepalive timer armed"
    );

    let (_daemon, addr) = Daemon::start(&["--tcp-keepalive", "0"]);
    let mut client = connect(addr);
    assert_echoes(&mut client, b"ping\r\n");
    let client_addr = client.local_addr().expect("client address");
    assert_eq!(server_socket_timer(addr, client_addr), 0, "no timer");
}

#[test]
fn a_timeout_that_rounds_to_zero_is_a_usage_error() {
    for option in ["--idle-timeout", "--send-timeout", "--line-timeout"] {
        for value in ["1e-300", "0.0000001"] {
            // An address of its own, should the value be taken after all;
            // the wait for its exit is bounded.
            let mut daemon = Daemon::spawn(&["-l", "127.0.0.1:0", option, value]);
            let status = daemon.wait_exit();
            let stderr = daemon.stderr().to_owned();
            assert_eq!(status.code(), Some(64), "{option} {value}: {stderr}");
            assert!(
                stderr.contains("below a millisecond"),
                "{option} {value}: {stderr}"
            );
        }
    }
}

#[test]
fn help_states_the_reaping_defaults() {
    let output = Daemon::command(&["--help"]).output().expect("run echod");
    let help = String::from_utf8_lossy(&output.stdout);
    for option in ["--send-timeout", "--line-timeout", "--tcp-keepalive"] {
        let at = help
            .find(option)
            .unwrap_or_else(|| panic!("{option} in --help"));
        let entry = &help[at..];
        let entry = &entry[..entry.find("]").expect("a [default: ...]") + 1];
        assert!(entry.ends_with("[default: 60]"), "{option}: {entry}");
    }
}
