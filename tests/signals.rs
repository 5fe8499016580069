//! Every signal an operator commonly sends, on the real binary: what it
//! does, the line it logs, and the exit status it leads to.
//!
//! | Signal | Effect | Exit status |
//! |---|---|---|
//! | SIGINT, SIGTERM, SIGQUIT | graceful shutdown; a second one stops at once | 0 if every connection finished, 3 if any was cut off |
//! | SIGUSR1 | summary (tested in `daemon.rs`) | |
//! | SIGUSR2 | upgrade in place (tested in `upgrade.rs`) | |
//! | SIGHUP, SIGALRM | logged and ignored | |
//!
//! Each test runs echod as a child on an ephemeral loopback port; every
//! wait is bounded, and a child left running by a failed test is killed.

mod common;
mod process;

use std::time::{Duration, Instant};

use common::{assert_echoes, connect, read_to_eof};
use process::{Daemon, push_until_paused};

/// Exit status of a stop that cut connections off (see `--help`).
const EXIT_CUT_OFF: i32 = 3;

/// The signals echod logs and ignores, and the line each one logs.
const IGNORED: [(libc::c_int, &str); 2] = [
    (
        libc::SIGHUP,
        "SIGHUP received: ignored (echod has no configuration to reload",
    ),
    (
        libc::SIGALRM,
        "SIGALRM received: ignored (echod sets no alarm)",
    ),
];

#[test]
fn hup_and_alrm_are_logged_and_echod_keeps_serving() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let mut client = connect(addr);
    assert_echoes(&mut client, b"before the signals\r\n");
    for (signal, line) in IGNORED {
        daemon.signal(signal);
        daemon.wait_for_log(line);
        // The connection open across the signal, and a new one.
        assert_echoes(&mut client, format!("after signal {signal}\r\n").as_bytes());
        let mut fresh = connect(addr);
        assert_echoes(&mut fresh, b"a new client\r\n");
    }
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn the_workers_coordinator_logs_and_ignores_sighup_too() {
    let (mut daemon, addr) = Daemon::start(&["--workers", "2"]);
    daemon.wait_for_log("worker 2: listening on");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log(IGNORED[0].1);
    let mut client = connect(addr);
    assert_echoes(&mut client, b"after SIGHUP\r\n");
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn sigquit_stops_gracefully_like_sigterm() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let mut client = connect(addr);
    assert_echoes(&mut client, b"before SIGQUIT\r\n");
    daemon.signal(libc::SIGQUIT);
    daemon.wait_for_log("SIGQUIT received: no longer accepting");
    assert_eq!(read_to_eof(&mut client), b"", "nothing more was owed");
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    daemon.wait_for_log("stopped:");
}

#[test]
fn a_second_signal_of_another_kind_stops_at_once_and_exits_3() {
    let (mut daemon, addr) = Daemon::start(&["--log-level", "trace", "--shutdown-timeout", "30"]);
    // Never reads: its echoes stay owed and would hold echod for 30 s.
    let mut client = connect(addr);
    push_until_paused(&mut daemon, &mut client, b"never read back\r\n");

    let signalled = Instant::now();
    daemon.signal(libc::SIGINT);
    daemon.wait_for_log("SIGINT received: no longer accepting");
    // A Ctrl-\ after a Ctrl-C.
    daemon.signal(libc::SIGQUIT);
    daemon.wait_for_log("SIGQUIT received again: exiting now, 1 connection still open");
    assert_eq!(daemon.wait_exit().code(), Some(EXIT_CUT_OFF));
    let elapsed = signalled.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    daemon.wait_for_log("stopped:");
    daemon.wait_for_log("exit status 3: the stop cut off 1 connection");
    drop(client);
}

#[test]
fn connections_cut_at_the_shutdown_timeout_exit_3_and_a_clean_stop_exits_0() {
    // Cut: a client that never reads holds echoes past the timeout.
    let (mut daemon, addr) = Daemon::start(&["--log-level", "trace", "--shutdown-timeout", "0.3"]);
    let mut client = connect(addr);
    push_until_paused(&mut daemon, &mut client, b"never read back\r\n");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(EXIT_CUT_OFF));
    daemon.wait_for_log("closed (shutdown timeout)");
    daemon.wait_for_log("exit status 3: the stop cut off 1 connection");
    drop(client);

    // Clean: a client that reads its echoes and closes after the FIN.
    let (mut daemon, addr) = Daemon::start(&["--shutdown-timeout", "30"]);
    let mut client = connect(addr);
    assert_echoes(&mut client, b"read back in full\r\n");
    daemon.signal(libc::SIGTERM);
    assert_eq!(read_to_eof(&mut client), b"");
    drop(client);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let log = daemon.full_log();
    assert!(
        !log.iter().any(|line| line.contains("exit status")),
        "a clean stop logged an exit status:\n{}",
        log.join("\n")
    );
}
