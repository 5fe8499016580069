//! What an operator reads: the wording of the log lines, the connection ids
//! that tie one connection's lines together, `RUST_LOG`, and the SIGUSR1
//! summary, each checked on the real binary.
//!
//! Each test runs `echod` as a child process on an ephemeral loopback port
//! (`process` has the harness) and waits, with a deadline, for the lines it
//! expects. Regressions of issue 11 ("what a new user meets").

mod common;
mod process;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};

use common::{assert_echoes, connect, read_to_eof};
use process::{Daemon, StdoutReader};

/// Starts echod on an ephemeral loopback port with `RUST_LOG` set to
/// `rust_log` and `args` added; returns it with its address.
fn start_with_rust_log(rust_log: &str, args: &[&str]) -> (Daemon, SocketAddr) {
    let mut all = vec!["-l", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut command = Daemon::command(&all);
    command.env("RUST_LOG", rust_log);
    let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::Follow);
    let addr = daemon.listening_addr();
    (daemon, addr)
}

/// The connection id in a line such as `... conn 17: closed ...`.
#[track_caller]
fn connection_id(line: &str) -> u64 {
    let (_, rest) = line
        .split_once("] conn ")
        .unwrap_or_else(|| panic!("no connection id in {line:?}"));
    let (id, _) = rest
        .split_once(':')
        .unwrap_or_else(|| panic!("no ':' after the connection id in {line:?}"));
    id.parse()
        .unwrap_or_else(|err| panic!("connection id {id:?} in {line:?}: {err}"))
}

/// One client that sends `line`, half-closes, and reads to the end;
/// returns its address.
fn serve_one(addr: SocketAddr, line: &[u8]) -> SocketAddr {
    let mut client = connect(addr);
    let local = client.local_addr().expect("client address");
    client.write_all(line).expect("send");
    client.shutdown(Shutdown::Write).expect("half-close");
    read_to_eof(&mut client);
    local
}

// Issue 11: every connection in a row was "conn 0" (the slab key, reused
// at once), so one connection's lines could not be told from the next's.
#[test]
fn regression_11_connection_ids_are_never_reused() {
    let (mut daemon, addr) = Daemon::start(&["--log-level", "debug"]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let peer = serve_one(addr, b"one line\r\n");
        let accepted = daemon.wait_for_log(&format!("accepted from {peer}"));
        let closed = daemon.wait_for_log(&format!("peer {peer}"));
        assert!(closed.contains(": closed (peer finished); "), "{closed}");
        let id = connection_id(&accepted);
        assert_eq!(connection_id(&closed), id, "{accepted}\n{closed}");
        ids.push(id);
    }
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids of connections served one after another: {ids:?}"
    );
    assert!(ids[0] >= 1, "ids count from 1: {ids:?}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

// Issue 11: "1 lines", "1 connections served", "1 probes".
#[test]
fn regression_11_counts_of_one_are_singular() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let peer = serve_one(addr, b"hello\r\n");
    let closed = daemon.wait_for_log(&format!("peer {peer}"));
    assert!(
        closed.ends_with(&format!(
            "closed (peer finished); 1 line received, 7 bytes echoed; peer {peer}"
        )),
        "{closed}"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let stopped = daemon.wait_for_log("stopped: ");
    assert!(
        stopped.contains("stopped: 1 connection served (peak 1 at once, 0 open), 1 line received, 7 bytes echoed, 0 rejected; closed: 1 peer finished,"),
        "{stopped}"
    );
    assert!(stopped.ends_with("; 0 probes"), "{stopped}");
}

// Issue 11: with plain `nc` (no CRLF) the close line said "0 lines, 0 bytes
// echoed", with no hint that bytes had arrived and were dropped.
#[test]
fn regression_11_an_unfinished_line_is_named_on_the_close_line() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let peer = serve_one(addr, b"no line end");
    let closed = daemon.wait_for_log(&format!("peer {peer}"));
    assert!(
        closed.contains(
            "closed (peer finished); 0 lines received (bytes arrived, but no complete line), \
             0 bytes echoed; peer "
        ),
        "{closed}"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

// Issue 11: SIGUSR1's summary lacked the closes by reason and the probes
// that the stats line has.
#[test]
fn regression_11_sigusr1_summary_counts_closes_and_probes() {
    let (mut daemon, addr) = Daemon::start(&["--log-level", "debug"]);
    let probe = TcpStream::connect(addr).expect("connect");
    let probe_addr = probe.local_addr().expect("probe address");
    drop(probe);
    daemon.wait_for_log(&format!(
        "closed without sending anything (peer finished); peer {probe_addr}"
    ));
    let mut client = connect(addr);
    assert_echoes(&mut client, b"still here\r\n");
    daemon.signal(libc::SIGUSR1);
    let summary = daemon.wait_for_log("summary: ");
    assert!(
        summary.contains(
            "summary: 2 connections served (peak 1 at once, 1 open), 1 line received, 12 bytes echoed, \
             0 rejected; closed: 0 peer finished, 0 line too long, 0 idle timeout, 0 send timeout, \
             0 line timeout, 0 evicted for memory, 0 out of memory, 0 displaced, 0 server shutdown, 0 shutdown timeout, \
             0 error; 1 probe"
        ),
        "{summary}"
    );
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

// Issue 11: `RUST_LOG=echod=debug` was silently taken as info.
#[test]
fn regression_11_rust_log_takes_target_levels() {
    for rust_log in ["echod=debug", "warn,echod=debug", "debug"] {
        let (mut daemon, addr) = start_with_rust_log(rust_log, &[]);
        let peer = serve_one(addr, b"x\r\n");
        let accepted = daemon.wait_for_log(&format!("accepted from {peer}"));
        assert!(
            accepted.contains(" DEBUG [echod::server] conn "),
            "{rust_log}: {accepted}"
        );
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait_exit().code(), Some(0), "{rust_log}");
        assert!(
            !daemon
                .full_log()
                .iter()
                .any(|line| line.contains("RUST_LOG")),
            "{rust_log}: warned about a valid RUST_LOG"
        );
    }
}

#[test]
fn regression_11_an_unreadable_rust_log_is_named_in_a_warning() {
    let (mut daemon, addr) = start_with_rust_log("loud,echod=debug", &[]);
    // The rest of RUST_LOG still applies.
    let peer = serve_one(addr, b"x\r\n");
    daemon.wait_for_log(&format!("accepted from {peer}"));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let warnings: Vec<&String> = daemon
        .full_log()
        .iter()
        .filter(|line| line.contains("RUST_LOG"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
    assert!(
        warnings[0].contains(" WARN  [echod::logging] RUST_LOG: ignoring 'loud': expected LEVEL"),
        "{}",
        warnings[0]
    );
}

#[test]
fn an_unreadable_rust_log_warns_even_when_it_hides_warnings() {
    // echod::server at info only for the "listening on" line the harness
    // waits for; echod::logging, where the warning goes, stays at error.
    let (mut daemon, _addr) = start_with_rust_log("error,bogus,echod::server=info", &[]);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let log = daemon.full_log();
    assert!(
        log.iter()
            .any(|line| line.contains("RUST_LOG: ignoring 'bogus'")),
        "{log:?}"
    );
}

// Issue 11: the trace lines named the peer and the warnings the slab key,
// so one connection's lines could not be followed by one id.
#[test]
fn regression_11_warnings_and_traces_carry_the_connection_id() {
    let (mut daemon, addr) = Daemon::start(&["--log-level", "trace", "--max-line-bytes", "16"]);
    let peer = serve_one(addr, format!("{}\r\n", "x".repeat(40)).as_bytes());
    let id = daemon.connection_id_of(peer);
    let warning = daemon.wait_for_log(&format!("conn {id}: line longer than max-line-bytes (16)"));
    assert!(warning.contains(" WARN  "), "{warning}");
    daemon.wait_for_log(&format!("conn {id}: closed (line too long)"));
    let log = daemon.log_so_far();
    assert!(
        log.iter()
            .any(|line| line.contains(&format!("conn {id}: open -> "))),
        "no state change traced under conn {id}:\n{}",
        log.join("\n")
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}
