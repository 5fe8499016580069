//! The echo itself: what comes back, in what order, and when.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::{
    TestServer, assert_echoes, assert_nothing_arrives, numbered_lines, read_n, read_to_eof_at_most,
    write_in_background,
};
use echod::{Config, Framing};

#[test]
fn echoes_a_line_byte_for_byte() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    assert_echoes(&mut client, b"hello, echod\r\n");
    // Any byte is data, UTF-8 or not, including a bare CR, a bare LF and NUL.
    assert_echoes(&mut client, b"\x00\xff\xfe bare \n and \r inside\r\n");
}

#[test]
fn echoes_empty_lines() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    assert_echoes(&mut client, b"\r\n");
    assert_echoes(&mut client, b"\r\n\r\n\r\n");
}

#[test]
fn echoes_several_lines_in_one_write() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    assert_echoes(&mut client, b"one\r\ntwo\r\nthree\r\n");
}

#[test]
fn holds_an_unfinished_line_until_its_terminator() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    client.write_all(b"complete\r\nhalf a li").expect("write");
    assert_eq!(read_n(&mut client, 10), b"complete\r\n");
    assert_nothing_arrives(&mut client, Duration::from_millis(300));
    client.write_all(b"ne\r\n").expect("write");
    assert_eq!(read_n(&mut client, 13), b"half a line\r\n");
}

#[test]
fn cr_and_lf_in_separate_writes_still_end_a_line() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    client.write_all(b"split\r").expect("write");
    assert_nothing_arrives(&mut client, Duration::from_millis(200));
    client.write_all(b"\nnext\r\n").expect("write");
    assert_eq!(read_n(&mut client, 13), b"split\r\nnext\r\n");
}

#[test]
fn bare_lf_does_not_end_a_crlf_line() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    client.write_all(b"not\nyet").expect("write");
    assert_nothing_arrives(&mut client, Duration::from_millis(200));
    client.write_all(b"\r\n").expect("write");
    assert_eq!(read_n(&mut client, 9), b"not\nyet\r\n");
}

#[test]
fn lf_framing_ends_lines_at_lf() {
    let server = TestServer::start(Config {
        framing: Framing::Lf,
        ..Config::default()
    });
    let mut client = server.connect();
    assert_echoes(&mut client, b"plain nc line\n");
    assert_echoes(&mut client, b"crlf still fine\r\n\n");
    client.write_all(b"half").expect("write");
    assert_nothing_arrives(&mut client, Duration::from_millis(200));
}

#[test]
fn raw_framing_echoes_every_byte_at_once() {
    let server = TestServer::start(Config {
        framing: Framing::Raw,
        ..Config::default()
    });
    let mut client = server.connect();
    assert_echoes(&mut client, b"no terminator");
    assert_echoes(&mut client, b"x");
}

#[test]
fn pipelined_burst_comes_back_complete_and_in_order() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    let lines = numbered_lines(20_000, "burst");
    let writer = write_in_background(&client, lines.clone(), false);
    let echoed = read_n(&mut client, lines.len());
    writer.join().expect("writer thread");
    assert!(echoed == lines, "burst echo differs from what was sent");
}

#[test]
fn client_holding_half_a_line_does_not_stall_others() {
    let server = TestServer::start_default();
    let mut holder = server.connect();
    holder.write_all(b"this line never ends").expect("write");
    for i in 0..20 {
        let mut other = server.connect();
        assert_echoes(&mut other, format!("other client {i}\r\n").as_bytes());
    }
    assert_nothing_arrives(&mut holder, Duration::from_millis(100));
}

#[test]
fn half_close_delivers_every_echo_owed_then_closes() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    // Megabytes, far over max-pending-bytes, so reading pauses and resumes
    // many times before the FIN is even read.
    let lines = numbered_lines(60_000, "half-close");
    assert!(lines.len() > 3 << 20);
    let writer = write_in_background(&client, lines.clone(), true);
    let echoed = read_to_eof_at_most(&mut client, lines.len());
    writer.join().expect("writer thread");
    assert!(
        echoed == lines,
        "echo before EOF differs from what was sent"
    );
}

#[test]
fn unfinished_line_at_eof_is_not_echoed() {
    let server = TestServer::start_default();
    let mut client = server.connect();
    client.write_all(b"whole\r\nunfinished").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_to_eof_at_most(&mut client, 1024), b"whole\r\n");
}

#[test]
fn serves_a_thousand_clients_at_once() {
    // Two descriptors per connection in this process: client and server side.
    rlimit::increase_nofile_limit(4096).expect("raise open-file limit");
    let server = TestServer::start_default();
    let mut clients: Vec<_> = (0..1000).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("client {i}\r\n").as_bytes())
            .expect("write");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let expected = format!("client {i}\r\n");
        assert_eq!(read_n(client, expected.len()), expected.as_bytes());
    }
    drop(clients);
    let summary = server.stop();
    assert_eq!((summary.accepted, summary.peak_connections), (1000, 1000));
    assert_eq!(summary.lines, 1000);
}
