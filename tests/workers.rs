//! `--workers N`: several event loops on one port (`SO_REUSEPORT`), each
//! serving the connections the kernel gives it; one SIGTERM stops them all;
//! the totals add up.
//!
//! The real binary runs on an ephemeral loopback port; every wait is bounded.

mod common;
mod process;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use common::{connect, read_to_eof};
use process::Daemon;

/// Connections in the test: enough that the kernel's hash of their source
/// ports puts some on each of two workers (all on one has probability
/// 2^-199), few enough to stay well inside every descriptor limit.
const CLIENTS: usize = 200;

/// The number just before `suffix` in `line`, as in "… 42 connections served".
#[track_caller]
fn number_before(line: &str, suffix: &str) -> u64 {
    let end = line
        .find(suffix)
        .unwrap_or_else(|| panic!("no {suffix:?} in {line:?}"));
    let start = line[..end].rfind(' ').map_or(0, |i| i + 1);
    line[start..end]
        .parse()
        .unwrap_or_else(|err| panic!("no number before {suffix:?} in {line:?}: {err}"))
}

#[test]
fn two_workers_serve_every_connection_and_stop_on_sigterm() {
    let (mut daemon, addr) = Daemon::start(&["--workers", "2", "--stats-interval", "0.2"]);
    daemon.wait_for_log("worker 2: listening on");

    // All open at once, each with its own line in flight.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    let lines: Vec<String> = (0..CLIENTS).map(|i| format!("client {i:03}\r\n")).collect();
    for (client, line) in clients.iter_mut().zip(&lines) {
        client.write_all(line.as_bytes()).expect("send a line");
    }
    for (client, line) in clients.iter_mut().zip(&lines) {
        let mut echo = vec![0; line.len()];
        client.read_exact(&mut echo).expect("read the echo");
        assert_eq!(String::from_utf8_lossy(&echo), *line);
    }
    // The coordinator's stats line adds up what the workers publish once a
    // second.
    let stats = daemon.wait_for_stats(&[&format!("{CLIENTS} open")]);
    assert!(stats.contains(&format!("{CLIENTS} accepted")), "{stats}");

    // Half finish on their own; the other half are open at the SIGTERM.
    let (finishing, staying) = clients.split_at_mut(CLIENTS / 2);
    for client in finishing.iter_mut() {
        client.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_to_eof(client), b"");
    }
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log("SIGTERM received: stopping 2 workers");
    for client in staying.iter_mut() {
        assert_eq!(read_to_eof(client), b"", "nothing more was owed");
    }
    drop(clients);
    assert_eq!(daemon.wait_exit().code(), Some(0));

    let log = daemon.full_log().to_vec();
    let served: Vec<u64> = ["worker 1: stopped: ", "worker 2: stopped: "]
        .iter()
        .map(|needle| {
            let line = log
                .iter()
                .find(|line| line.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} line:\n{}", log.join("\n")));
            number_before(line, " connections served")
        })
        .collect();
    assert!(
        served.iter().all(|&n| n > 0),
        "one worker served nothing: {served:?}"
    );
    assert_eq!(served.iter().sum::<u64>(), CLIENTS as u64, "{served:?}");
    let bytes: usize = lines.iter().map(String::len).sum();
    let total = log
        .iter()
        .find(|line| line.contains("all 2 workers stopped: "))
        .unwrap_or_else(|| panic!("no total line:\n{}", log.join("\n")));
    assert!(
        total.contains(&format!(
            "{CLIENTS} lines received, {bytes} bytes echoed, 0 rejected"
        )),
        "{total}"
    );
    assert_eq!(number_before(total, " connections served"), CLIENTS as u64);
}

#[test]
fn max_connections_is_shared_among_workers() {
    let mut daemon = Daemon::spawn(&[
        "-l",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--max-connections",
        "10",
    ]);
    daemon.wait_for_log("2 workers: max-connections 5 each, 10 in all");
    daemon.wait_for_log("worker 1: echod ");
    let line = daemon.wait_for_log("worker 2: echod ");
    assert!(line.contains("max-connections 5"), "{line}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}
