//! The memory budget (`--max-memory`), on the real binary: clients that
//! push and never read cannot take more than the budget, the ones holding
//! the most without progress are evicted, and clients that read their
//! echoes are served throughout and lose nothing.

mod common;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, assert_echoes, connect, connect_small_buffers, write_in_background};
use process::Daemon;

/// Stalled clients in the flood.
const STALLED: usize = 12;

/// Writes 1 KiB lines without reading until the kernel takes nothing for
/// half a second (echod has stopped reading from this client), or until
/// echod closes the connection. Returns the bytes the kernel took.
fn push_without_reading(stream: &mut TcpStream) -> usize {
    let line = [b"x".repeat(1022), b"\r\n".to_vec()].concat();
    stream.set_nonblocking(true).expect("non-blocking");
    let deadline = Instant::now() + DEADLINE;
    let mut sent = 0;
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "the kernel kept taking bytes");
        match stream.write(&line) {
            Ok(n) => {
                sent += n;
                quiet = Instant::now();
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            // Evicted already.
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            Err(err) => panic!("write: {err}"),
        }
    }
    sent
}

#[test]
fn a_flood_of_clients_that_never_read_stays_within_the_budget_and_others_are_served() {
    let budget = 4 << 20;
    let (mut daemon, addr) = Daemon::start(&["--max-memory", "4M", "--stats-interval", "0.2"]);
    // Wait for the first stats line, so that the baseline is taken with
    // echod fully started.
    daemon.wait_for_stats(&["0 open"]);
    let rss_before = daemon.rss_bytes();

    let mut stalled: Vec<TcpStream> = (0..STALLED).map(|_| connect_small_buffers(addr)).collect();
    let mut pushed = 0;
    for client in &mut stalled {
        assert_echoes(client, b"first\r\n");
        pushed += push_without_reading(client);
    }
    // 12 clients able to owe 1 MiB each, against a budget of 4 MiB.
    assert!(pushed > 2 * budget, "only {pushed} bytes pushed");
    let rss_flooded = daemon.rss_bytes();

    // Meanwhile a client that reads its echoes is served at once.
    let mut fresh = connect(addr);
    for n in 0..20 {
        let started = Instant::now();
        assert_echoes(&mut fresh, format!("fresh {n}\r\n").as_bytes());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "echo {n} took {:?}",
            started.elapsed()
        );
    }

    // The ones that held the most without progress are evicted.
    let deadline = Instant::now() + DEADLINE;
    let (stats, evicted) = loop {
        let stats = daemon.wait_for_log("stats: ");
        let evicted: u64 = stats
            .split(" evicted for memory")
            .next()
            .and_then(|before| before.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("an eviction count");
        if evicted >= 1 {
            break (stats, evicted);
        }
        assert!(
            Instant::now() < deadline,
            "nobody evicted within {DEADLINE:?}: {stats}"
        );
    };
    assert!(stats.contains("evicted for memory"), "{stats}");

    // The budget bounds echod's memory: 4 MiB of buffers, plus one read kept
    // over it per client that had nothing left over, plus a constant.
    let bound = budget + STALLED * (16 << 10) + (4 << 20);
    let grew = rss_flooded.saturating_sub(rss_before);
    assert!(
        grew <= bound,
        "RSS grew {grew} bytes with the flood; bound {bound}"
    );
    eprintln!(
        "{pushed} bytes pushed by {STALLED} stalled clients: RSS {} KiB before, {} KiB flooded \
         (+{} KiB, bound {} KiB); {evicted} evicted",
        rss_before >> 10,
        rss_flooded >> 10,
        grew >> 10,
        bound >> 10
    );
}

#[test]
fn a_client_that_reads_its_echoes_loses_nothing_while_others_flood() {
    let (mut daemon, addr) = Daemon::start(&["--max-memory", "2M"]);
    let mut stalled: Vec<TcpStream> = (0..6).map(|_| connect_small_buffers(addr)).collect();
    for client in &mut stalled {
        push_without_reading(client);
    }
    // 4 MiB of lines sent while the echoes are read, then a half-close:
    // every echo must come back, then the end of the stream.
    let mut reader = connect(addr);
    let lines: Vec<u8> = (0..4096)
        .flat_map(|n| format!("{n:01020}\r\n").into_bytes())
        .collect();
    let writer = write_in_background(&reader, lines.clone(), true);
    let mut echoed = Vec::with_capacity(lines.len());
    let mut chunk = vec![0; 64 * 1024];
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "echoes still coming after {DEADLINE:?}"
        );
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => echoed.extend_from_slice(&chunk[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) => panic!("the reading client was cut: {err}"),
        }
    }
    writer.join().expect("the writer");
    assert_eq!(echoed.len(), lines.len());
    assert!(echoed == lines, "the echo differs from what was sent");
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit();
}
