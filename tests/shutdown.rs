//! Shutdown through `ShutdownHandle`: the first trigger drains gracefully,
//! a second one stops the server at once, however soon after the first it
//! comes.
//!
//! A real server on an ephemeral loopback port; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{DEADLINE, connect};
use echod::summary::Closes;
use echod::{Config, Listen, Server, Summary};

/// Far longer than the test waits for the server, so that a graceful drain
/// cannot end within the wait by reaching its deadline.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Rounds of the race below. The loop may wake between the two triggers,
/// and then they are two events and a merge cannot happen; in a round where
/// it does happen the server must still stop at once. On a 2-core machine
/// about two rounds in three merge.
const ROUNDS: usize = 10;

/// Two triggers made before the server's loop wakes reach it as one waker
/// event; they are still two requests. `workers.rs` forwards a second
/// SIGTERM to each worker this way.
#[test]
fn two_triggers_back_to_back_stop_at_once() {
    for round in 0..ROUNDS {
        let summary = run_until_two_triggers();
        // Stopped at once: the connection was left open, not drained and
        // closed.
        assert_eq!(
            (summary.open_connections, summary.closes),
            (1, Closes::default()),
            "round {round}: the server drained instead of stopping at once: {summary:?}"
        );
        assert_eq!((summary.accepted, summary.lines), (1, 1), "{summary:?}");
    }
}

/// Starts a server, holds one connection open on it, triggers its shutdown
/// handle twice back to back, and returns what `run` returned.
#[track_caller]
fn run_until_two_triggers() -> Summary {
    let server = Server::bind(Config {
        listen: Listen::Addresses(vec![([127, 0, 0, 1], 0).into()]),
        shutdown_timeout: SHUTDOWN_TIMEOUT,
        ..Config::default()
    })
    .expect("bind test server");
    let addr = server.local_addrs()[0];
    let shutdown = server.shutdown_handle();
    let (sender, outcome) = mpsc::channel();
    thread::spawn(move || {
        // The receiver is gone only if the test has already failed.
        let _ = sender.send(server.run());
    });
    // The echo proves the server holds the connection. Then half a line,
    // so that it is not idle (an idle connection closes at once at a
    // shutdown): from here the client neither reads nor closes, which holds
    // a graceful drain open while the server lingers after its FIN.
    // Sent together, so that by the time the echo is back the half line is
    // in the server's buffer, or at least queued for it: either way not idle.
    let mut client = connect(addr);
    client
        .write_all(b"hold the drain open\r\nand half a line")
        .expect("a line and a half");
    let mut echo = [0; 21];
    client.read_exact(&mut echo).expect("the echo");
    assert_eq!(&echo, b"hold the drain open\r\n");

    shutdown.trigger();
    shutdown.trigger();
    let summary = outcome
        .recv_timeout(DEADLINE)
        .expect("no stop within the client timeout: the second trigger was not taken")
        .expect("the server's loop failed");
    drop(client);
    summary
}
