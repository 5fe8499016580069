//! Shutdown through `ShutdownHandle`: the first trigger drains gracefully,
//! a second one stops the server at once, however soon after the first it
//! comes.
//!
//! A real server on an ephemeral loopback port; every wait is bounded.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{DEADLINE, assert_echoes, connect};
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
    // The echo proves the server holds the connection. From here the
    // client neither reads nor closes, which holds a graceful drain open:
    // the server waits for the client to close after its FIN.
    let mut client = connect(addr);
    assert_echoes(&mut client, b"hold the drain open\r\n");

    shutdown.trigger();
    shutdown.trigger();
    let summary = outcome
        .recv_timeout(DEADLINE)
        .expect("no stop within the client timeout: the second trigger was not taken")
        .expect("the server's loop failed");
    drop(client);
    summary
}
