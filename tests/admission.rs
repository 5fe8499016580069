//! Admission under pressure, on the real binary: at `--max-connections`, a
//! newcomer takes the slot of the connection quiet the longest, so clients
//! that hold slots and do nothing cannot lock out the ones that come to
//! echo; clients in mid-conversation keep theirs; and
//! `--max-connections-per-ip` bounds what one address may hold.

mod common;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, assert_echoes, connect, connect_from};
use process::Daemon;

const STATS: [&str; 2] = ["--stats-interval", "0.2"];
const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Tries to have `line` echoed on a new connection from `from`: `true` if
/// it was, `false` if echod closed the connection at once.
fn try_echo(from: IpAddr, addr: std::net::SocketAddr, line: &[u8]) -> bool {
    let mut client = connect_from(from, addr);
    if client.write_all(line).is_err() {
        return false;
    }
    let mut echo = vec![0; line.len()];
    match client.read_exact(&mut echo) {
        Ok(()) => {
            assert_eq!(echo, line);
            true
        }
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(err) => panic!("read: {err}"),
    }
}

/// True once echod has closed `stream` (end of file or a reset), within
/// `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(err) if err.kind() == ErrorKind::ConnectionReset => true,
        Ok(_) => panic!("a silent client got bytes"),
        Err(_) => false,
    }
}

#[test]
fn slots_held_by_silent_clients_go_to_a_newcomer() {
    let (mut daemon, addr) = Daemon::start(&["--max-connections", "3", STATS[0], STATS[1]]);
    let mut silent: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    daemon.wait_for_stats(&["3 open"]);
    // Served once the silent ones have been quiet for half a second: the first
    // try that succeeds must come within two.
    let started = Instant::now();
    let mut tries = 0;
    while !try_echo(ELSEWHERE, addr, b"let me in\r\n") {
        tries += 1;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refused {tries} times"
        );
        thread::sleep(Duration::from_millis(50));
    }
    daemon.wait_for_stats(&["1 displaced"]);
    let closed = silent
        .iter_mut()
        .map(|client| closed_within(client, Duration::from_millis(500)))
        .filter(|&closed| closed)
        .count();
    assert_eq!(closed, 1, "exactly one silent client gave up its slot");
}

#[test]
fn clients_in_mid_conversation_keep_their_slots() {
    let (mut daemon, addr) = Daemon::start(&["--max-connections", "2", STATS[0], STATS[1]]);
    let mut busy: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    let until = Instant::now() + Duration::from_secs(2);
    let mut refused = 0;
    while Instant::now() < until {
        for client in &mut busy {
            assert_echoes(client, b"still talking\r\n");
        }
        if !try_echo(ELSEWHERE, addr, b"newcomer\r\n") {
            refused += 1;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(refused > 0, "the newcomer was never refused");
    let stats = daemon.wait_for_stats(&["0 displaced"]);
    assert!(stats.contains("2 open"), "{stats}");
}

#[test]
fn one_address_holds_at_most_max_connections_per_ip() {
    let (mut daemon, addr) = Daemon::start(&["--max-connections-per-ip", "2", STATS[0], STATS[1]]);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut first = connect_from(local, addr);
    let mut second = connect_from(local, addr);
    assert_echoes(&mut first, b"one\r\n");
    assert_echoes(&mut second, b"two\r\n");
    assert!(
        !try_echo(local, addr, b"three\r\n"),
        "a third from 127.0.0.1 was served"
    );
    // Another address is not counted against this one.
    assert!(try_echo(ELSEWHERE, addr, b"elsewhere\r\n"));
    // A slot freed is a slot to be had again.
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    while !try_echo(local, addr, b"again\r\n") {
        assert!(Instant::now() < deadline, "the freed slot never came back");
        thread::sleep(Duration::from_millis(20));
    }
    let stats = daemon.wait_for_stats(&["rejected"]);
    assert!(!stats.contains(" 0 rejected"), "{stats}");
}
