//! `--stats-interval`: the periodic summary line, and health-check
//! connections (connect, then close without a byte) kept out of the info
//! log but counted.
//!
//! Each test runs the real binary on an ephemeral loopback port with a short
//! interval and waits, with a deadline, for a stats line that shows what the
//! test did.

mod common;
mod process;

use std::io::Write;
use std::net::{Shutdown, TcpStream};

use common::{assert_echoes, connect, read_to_eof};
use process::{Daemon, push_until_paused};

/// Connects and closes without sending anything, as a TCP health check does.
fn connect_and_close(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.local_addr().expect("client address")
}

#[test]
fn stats_line_counts_connections_closes_and_probes() {
    let (mut daemon, addr) = Daemon::start(&[
        "--stats-interval",
        "0.2",
        "--log-level",
        "trace",
        "--max-line-bytes",
        "256",
        "--max-pending-bytes",
        "64KiB",
    ]);
    // One client that finishes normally.
    let mut finished = connect(addr);
    for i in 0..3 {
        assert_echoes(&mut finished, format!("line {i}\r\n").as_bytes());
    }
    finished.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut finished), b"");
    // One that sends a line over the limit.
    let mut too_long = connect(addr);
    too_long
        .write_all(format!("{}\r\n", "x".repeat(300)).as_bytes())
        .expect("send an over-long line");
    assert_eq!(read_to_eof(&mut too_long), b"");
    drop(too_long);
    // One health check.
    let probe = connect_and_close(addr);
    // One that stops reading its echoes, and stays paused.
    let mut paused = connect(addr);
    push_until_paused(&mut daemon, &mut paused, b"never read back\r\n");

    let line = daemon.wait_for_stats(&[
        "1 open",
        "4 accepted",
        "0 rejected",
        "1 paused",
        "closed: 1 peer finished, 1 line too long,",
        "0 error; 1 probe",
    ]);
    assert!(line.contains(" INFO "), "stats are logged at info: {line}");
    // Logged before the stats line that counted it.
    let needle = format!("peer {probe}");
    let probe_close = daemon
        .log_so_far()
        .iter()
        .find(|line| line.contains(&needle))
        .cloned()
        .unwrap_or_else(|| panic!("no close line for the probe from {probe}"));
    assert!(
        probe_close.contains(" DEBUG ") && probe_close.contains("closed without sending anything"),
        "{probe_close}"
    );

    daemon.signal(libc::SIGTERM);
    read_to_eof(&mut paused);
    drop(paused);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn probes_stay_out_of_the_info_log() {
    const PROBES: usize = 20;
    let (mut daemon, addr) = Daemon::start(&["--stats-interval", "0.2"]);
    let probes: Vec<_> = (0..PROBES).map(|_| connect_and_close(addr)).collect();
    // A real client after them, so that its close line, once seen, shows
    // that the probes' closes were handled before it.
    let mut client = connect(addr);
    assert_echoes(&mut client, b"a real client\r\n");
    let client_addr = client.local_addr().expect("client address");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut client), b"");
    daemon.wait_for_log(&format!(
        "closed (peer finished); 1 line received, 15 bytes echoed; peer {client_addr}"
    ));
    daemon.wait_for_stats(&[&format!("; {PROBES} probes"), "1 peer finished"]);

    let log = daemon.log_so_far().to_vec();
    for probe in probes {
        let needle = probe.to_string();
        assert!(
            !log.iter().any(|line| line.contains(&needle)),
            "a probe from {probe} reached the info log:\n{}",
            log.join("\n")
        );
    }
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}
