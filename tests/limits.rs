//! Limits and misbehaving clients: long lines, stalled readers, resets,
//! connection limits, idle clients.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    DEADLINE, TestServer, assert_closed_after, assert_echoes, connect_small_buffers,
    numbered_lines, read_n, write_in_background,
};
use echod::Config;

fn with_max_line(max_line_bytes: usize) -> Config {
    Config {
        max_line_bytes,
        ..Config::default()
    }
}

#[test]
fn line_exactly_at_the_limit_is_echoed() {
    let server = TestServer::start(with_max_line(16));
    let mut client = server.connect();
    assert_echoes(&mut client, b"fourteen bytes\r\n");
}

#[test]
fn closes_connection_when_line_exceeds_limit_after_echoing_earlier_lines() {
    let server = TestServer::start(with_max_line(16));
    let mut client = server.connect();
    // The second line is 17 bytes with its terminator.
    client
        .write_all(b"ok\r\nsixteen bytes!!\r\nnever echoed\r\n")
        .expect("write");
    assert_closed_after(&mut client, b"ok\r\n");
}

#[test]
fn closes_connection_on_an_unterminated_line_at_the_limit() {
    let server = TestServer::start(with_max_line(16));
    let mut client = server.connect();
    client.write_all(b"first\r\n").expect("write");
    client.write_all(&[b'z'; 16]).expect("write");
    assert_closed_after(&mut client, b"first\r\n");
}

#[test]
fn over_long_line_closes_with_eof_even_with_input_unread() {
    // The client keeps sending after its line went over the limit; echod must
    // still end with a FIN after the echo, not a reset that could destroy it.
    let server = TestServer::start(with_max_line(1024));
    let mut client = server.connect();
    let mut bytes = b"kept\r\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'q', 256 * 1024));
    let writer = write_in_background(&client, bytes, false);
    assert_eq!(read_n(&mut client, 6), b"kept\r\n");
    let mut rest = [0; 16];
    assert_eq!(client.read(&mut rest).expect("EOF, not a reset"), 0);
    // The writer may see the connection end; either outcome is fine for it.
    let _ = writer.join();
}

#[test]
fn stalled_reader_is_paused_not_disconnected_and_others_are_unaffected() {
    // The server publishes its counters, so the test can see the pause
    // itself: a client's blocked writes alone would not show it (echod
    // might just not have read yet), nor would a complete echo.
    let server = TestServer::start_reporting(Config {
        max_pending_bytes: 64 * 1024,
        ..Config::default()
    });
    // Small fixed buffers, so that the kernel holds a few hundred kilobytes
    // of echoes at most and echod must hold the rest: megabytes are sent.
    let mut stalled = connect_small_buffers(server.addr);
    let lines = numbered_lines(50_000, "stalled");
    let sent = lines.len();
    assert!(
        sent > 2 << 20,
        "{sent} bytes are too few to fill the buffers"
    );
    let writer = write_in_background(&stalled, lines.clone(), false);
    server.wait_for_report("the stalled reader paused", |summary| {
        summary.paused_connections == 1
    });

    // Reading stays paused while this client does not read, and meanwhile
    // another client is served.
    let mut other = server.connect();
    for i in 0..50 {
        assert_echoes(&mut other, format!("unaffected {i}\r\n").as_bytes());
    }
    server.wait_for_report(
        "the other client counted, the reader still paused",
        |summary| {
            summary.accepted == 2
                && summary.open_connections == 2
                && summary.paused_connections == 1
        },
    );

    // Now the stalled client reads: everything comes back, nothing lost,
    // and the pause ends.
    let echoed = read_n(&mut stalled, sent);
    writer.join().expect("writer thread");
    assert!(
        echoed == lines,
        "echo after the stall differs from what was sent"
    );
    assert_echoes(&mut stalled, b"still open\r\n");
    server.wait_for_report("the pause over", |summary| {
        summary.paused_connections == 0 && summary.open_connections == 2
    });
}

#[test]
fn reset_mid_stream_closes_only_that_client() {
    let server = TestServer::start_default();
    let mut other = server.connect();
    assert_echoes(&mut other, b"before\r\n");
    for _ in 0..20 {
        let resetter = server.connect();
        let socket = socket2::SockRef::from(&resetter);
        // SO_LINGER 0: close sends RST instead of FIN.
        socket.set_linger(Some(Duration::ZERO)).expect("set linger");
        (&resetter)
            .write_all(&numbered_lines(2000, "reset"))
            .expect("write");
        drop(resetter);
    }
    assert_echoes(&mut other, b"after\r\n");
    drop(other);
    let summary = server.stop();
    assert_eq!(summary.accepted, 21);
}

#[test]
fn connections_over_max_connections_are_closed_at_once() {
    let server = TestServer::start(Config {
        max_connections: Some(2),
        ..Config::default()
    });
    let mut first = server.connect();
    let mut second = server.connect();
    assert_echoes(&mut first, b"one\r\n");
    assert_echoes(&mut second, b"two\r\n");

    let mut third = server.connect();
    let _ = third.write_all(b"three\r\n");
    assert_closed_after(&mut third, b"");

    // A slot frees up: a new client is served again.
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "no client served after a slot freed up"
        );
        let mut retry = server.connect();
        if try_assert_echoes(&mut retry, b"four\r\n").is_ok() {
            break;
        }
    }
    drop((second, third));
    let summary = server.stop();
    assert!(summary.rejected >= 1, "rejections not counted: {summary}");
}

#[test]
fn idle_timeout_closes_quiet_connections_only() {
    let server = TestServer::start(Config {
        idle_timeout: Some(Duration::from_millis(500)),
        ..Config::default()
    });
    let mut quiet = server.connect();
    assert_echoes(&mut quiet, b"then silence\r\n");
    let started = Instant::now();
    assert_closed_after(&mut quiet, b"");
    // Housekeeping runs once a second, so the close comes between the
    // timeout and the timeout plus a second.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed after only {waited:?}"
    );
}

/// A round trip that reports failure instead of panicking.
fn try_assert_echoes(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    let mut echoed = vec![0; bytes.len()];
    stream.read_exact(&mut echoed)?;
    if echoed == bytes {
        Ok(())
    } else {
        Err(io::Error::other("echo differs"))
    }
}

#[test]
fn peer_that_keeps_sending_after_an_over_long_line_is_cut_off() {
    // After its FIN echod discards input for a bounded linger time (2 s, swept
    // once a second), however much keeps arriving, then closes; a client
    // still sending then sees its writes fail.
    let server = TestServer::start(with_max_line(64));
    let mut client = server.connect();
    client.write_all(&[b'w'; 100]).expect("write");
    assert_eq!(client.read(&mut [0; 1]).expect("EOF after the FIN"), 0);
    let started = Instant::now();
    let chunk = [b'k'; 16 * 1024];
    let failed = loop {
        if started.elapsed() > Duration::from_secs(8) {
            break false;
        }
        match client.write_all(&chunk) {
            Ok(()) => {}
            // Not a timeout: that would mean echod stopped reading instead.
            Err(err) => {
                assert!(
                    matches!(
                        err.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ),
                    "expected a reset, got {err}"
                );
                break true;
            }
        }
    };
    assert!(
        failed,
        "echod kept a lingering connection open for 8 s of input"
    );
}

/// `--read-budget` at its smallest, one read a turn: a client that pipelines
/// megabytes and then half-closes gets every byte back in order before the
/// close, and a ping-pong client beside it is answered all the while.
#[test]
fn the_smallest_read_budget_echoes_a_bulk_sender_whole_beside_a_ping_pong_client() {
    let server = TestServer::start(Config {
        read_budget_bytes: 1,
        ..Config::default()
    });
    let mut bulk = server.connect();
    let lines = numbered_lines(40_000, "bulk");
    assert!(lines.len() > 2 << 20, "{} bytes", lines.len());
    let writer = write_in_background(&bulk, lines.clone(), true);
    let mut small = server.connect();
    for i in 0..200 {
        assert_echoes(&mut small, format!("ping {i}\r\n").as_bytes());
    }
    assert_closed_after(&mut bulk, &lines);
    writer.join().expect("the bulk writer");
    assert_echoes(&mut small, b"still here\r\n");
}
