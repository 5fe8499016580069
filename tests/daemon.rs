//! The `echod` binary as an operator meets it: its command line, exit
//! statuses, signals, and what it does when its environment fails it (a log
//! reader that goes away, running out of descriptors).
//!
//! Each test runs the real binary as a child process on an ephemeral
//! loopback port; `process` has the harness. Every wait is bounded, and a
//! child left running by a failed test is killed.

mod common;
mod process;

use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use echod::cli::USAGE;
use echod::probe;
use echod::summary::counted;

use common::{DEADLINE, assert_echoes, assert_receives, connect, read_to_eof};
use process::{Daemon, Exhausted, StdoutReader, push_until_paused};

/// Exit status for a bad command line (see `--help`).
const EXIT_USAGE: i32 = 64;
/// Exit status when a listening socket cannot be set up.
const EXIT_CANNOT_START: i32 = 71;

#[test]
fn help_prints_usage_and_exits_0() {
    let long_options = [
        "--listen",
        "--port",
        "--framing",
        "--max-line-bytes",
        "--max-pending-bytes",
        "--read-budget",
        "--max-connections",
        "--idle-timeout",
        "--shutdown-timeout",
        "--stats-interval",
        "--workers",
        "--max-connections-per-ip",
        "--max-memory",
        "--send-timeout",
        "--line-timeout",
        "--tcp-keepalive",
        "--metrics-listen",
        "--allow",
        "--deny",
        "--proxy-protocol",
        "--proxy-from",
        "--log-level",
        "--quiet",
        "--help",
        "--version",
    ];
    for flag in ["--help", "-h"] {
        let mut daemon = Daemon::spawn(&[flag]);
        assert_eq!(daemon.wait_exit().code(), Some(0), "{flag}");
        let stdout = daemon.full_log().join("\n");
        assert!(stdout.contains("Usage: echod"), "{flag}: {stdout}");
        for option in long_options {
            assert!(USAGE.contains(option), "USAGE no longer names {option}");
            assert!(stdout.contains(option), "{flag} does not name {option}");
        }
        assert_eq!(stdout, USAGE.trim_end(), "{flag} prints USAGE");
        assert_eq!(daemon.stderr(), "", "{flag} writes nothing to stderr");
    }
}

#[test]
fn probe_help_prints_the_probes_own_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let mut daemon = Daemon::spawn(&["probe", flag]);
        assert_eq!(daemon.wait_exit().code(), Some(0), "probe {flag}");
        let stdout = daemon.full_log().join("\n");
        assert_eq!(
            stdout,
            probe::USAGE.trim_end(),
            "probe {flag} prints probe::USAGE"
        );
        assert_eq!(daemon.stderr(), "", "probe {flag} writes nothing to stderr");
    }
}

#[test]
fn version_prints_version() {
    let mut daemon = Daemon::spawn(&["-V"]);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert_eq!(
        daemon.full_log(),
        [
            format!("echod {}", env!("CARGO_PKG_VERSION")),
            format!(
                "{}{}",
                echod::upgrade::FORMAT_LINE_PREFIX,
                echod::handover::FORMAT_VERSION
            ),
        ],
        "the second line names the handover format an upgrade checks for"
    );
    assert_eq!(daemon.stderr(), "");
}

#[test]
fn bad_option_exits_64_with_one_line_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "'--bogus'"),
        (&["--port", "70000"], "invalid --port '70000'"),
        (&["-p", "http"], "invalid --port 'http'"),
        (&["--framing", "cr"], "invalid --framing 'cr'"),
        (
            &["--max-line-bytes", "12Q"],
            "invalid --max-line-bytes '12Q'",
        ),
        (
            &["--max-pending-bytes", "2G"],
            "invalid --max-pending-bytes '2G'",
        ),
    ];
    for (args, problem) in cases {
        let mut daemon = Daemon::spawn(args);
        let status = daemon.wait_exit();
        let stderr = daemon.stderr().to_owned();
        assert_eq!(status.code(), Some(EXIT_USAGE), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("echod: ") && first.contains(problem),
            "{args:?}: first line of stderr is {first:?}, want 'echod: ' and {problem:?}"
        );
        assert_eq!(daemon.full_log(), [] as [String; 0], "{args:?}: stdout");
    }
}

// Issue 11: out-of-range numbers said "expected a whole number" or
// "expected seconds", and the same --listen twice failed as "Address
// already in use" with exit status 71.
#[test]
fn regression_11_bad_values_say_the_range_and_duplicates_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--port", "70000"],
            "invalid --port '70000': must be between 0 and 65535",
        ),
        (
            &["--idle-timeout", "99999999999999999999"],
            "invalid --idle-timeout '99999999999999999999': too large: at most 31536000 seconds (a year)",
        ),
        (
            &["-l", "127.0.0.1:1", "--listen", "127.0.0.1:1"],
            "--listen 127.0.0.1:1 is given twice (by '127.0.0.1:1'): give each address once",
        ),
    ];
    for (args, problem) in cases {
        let mut daemon = Daemon::spawn(args);
        let status = daemon.wait_exit();
        let stderr = daemon.stderr().to_owned();
        assert_eq!(status.code(), Some(EXIT_USAGE), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert_eq!(first, format!("echod: {problem}"), "{args:?}");
    }
}

// Issue 11: `--listen localhost:1234` was refused (IP only), while
// `echod probe localhost:12321` worked.
#[test]
fn regression_11_listen_takes_a_host_name() {
    let mut daemon = Daemon::spawn(&["--listen", "localhost:0"]);
    let addr = daemon.listening_addr();
    assert!(addr.ip().is_loopback(), "localhost resolved to {addr}");
    let mut client = connect(addr);
    assert_echoes(&mut client, b"by name\r\n");
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn a_gone_stderr_reader_does_not_change_the_exit_status() {
    // A supervisor's log reader may be gone: writing to standard error then
    // fails with EPIPE. The message is lost, but the exit status must still
    // say what went wrong (`eprintln!` would panic, and exit 101).
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a listener to occupy a port");
    let occupied = taken.local_addr().expect("occupied address").to_string();
    for (args, code) in [
        (&["--bogus"][..], EXIT_USAGE),
        (&["-l", occupied.as_str()][..], EXIT_CANNOT_START),
    ] {
        let (reader, writer) = std::io::pipe().expect("create a pipe");
        drop(reader);
        let mut command = Daemon::command(args);
        command.stdout(Stdio::null()).stderr(writer);
        let mut child = command.spawn().expect("start echod");
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("echod {args:?} did not exit within {DEADLINE:?}")
        });
        let status = status.expect("wait for echod");
        assert_eq!(status.code(), Some(code), "{args:?}");
    }
}

#[test]
fn bind_failure_exits_71() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a listener to occupy a port");
    let addr = taken.local_addr().expect("occupied address");
    let mut daemon = Daemon::spawn(&["-l", &addr.to_string()]);
    let status = daemon.wait_exit();
    let stderr = daemon.stderr().to_owned();
    assert_eq!(status.code(), Some(EXIT_CANNOT_START), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "stderr: {stderr}"
    );
}

// Issue 10: Ctrl-C with an idle client connected took 2 to 3 s, the linger
// after a FIN, swept once a second, although nothing was owed.
#[test]
fn sigterm_with_only_idle_clients_exits_without_lingering() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let mut idle: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    for client in &mut idle {
        assert_echoes(client, b"then nothing\r\n");
    }
    let stopped = Instant::now();
    daemon.signal(libc::SIGTERM);
    // The clients keep their sockets open: a lingering echod would wait
    // for them for its 2-second linger.
    let status = daemon.wait_exit();
    let took = stopped.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_millis(1500), "exit took {took:?}");
    for client in &mut idle {
        assert!(read_to_eof(client).is_empty(), "nothing more, then the end");
    }
}

#[test]
fn sigterm_delivers_owed_echoes_and_exits_0() {
    // Trace logs each state change, which shows when reading pauses; the
    // generous timeout keeps a slow machine from turning delivery into a cut.
    let (mut daemon, addr) = Daemon::start(&["--log-level", "trace", "--shutdown-timeout", "20"]);
    let mut client = connect(addr);
    let mut sent = Vec::new();
    for i in 0..3 {
        let line = format!("line {i}\r\n");
        assert_echoes(&mut client, line.as_bytes());
        sent.extend_from_slice(line.as_bytes());
    }
    let mut received = sent.clone();

    // Echoes are now owed: at least `max-pending-bytes` (1 MiB) of them,
    // with more input queued in the kernel that echod will never echo.
    sent.extend(push_until_paused(&mut daemon, &mut client, b"owed at the SIGTERM\r\n").sent);
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log("SIGTERM received");
    received.extend(read_to_eof(&mut client));
    drop(client);

    assert_eq!(daemon.wait_exit().code(), Some(0));
    let stopped = daemon.wait_for_log("stopped:");
    assert!(
        received.len() >= (1 << 20),
        "only {} bytes came back: the owed echoes were not delivered",
        received.len()
    );
    assert!(
        sent.starts_with(&received),
        "the echoes are not a prefix of what was sent ({} bytes received of {} sent)",
        received.len(),
        sent.len()
    );
    assert!(received.ends_with(b"\r\n"), "a partial line was echoed");
    // Exactly every complete line echod read came back: its own count
    // matches what the client received.
    let lines = received.windows(2).filter(|w| w == b"\r\n").count();
    assert!(
        stopped.contains(&format!(
            " {} received, {} echoed",
            counted(lines, "line"),
            counted(received.len(), "byte")
        )),
        "the client received {lines} lines, {} bytes; echod says: {stopped}",
        received.len()
    );
}

#[test]
fn sigint_works_like_sigterm() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let mut client = connect(addr);
    assert_echoes(&mut client, b"before SIGINT\r\n");
    daemon.signal(libc::SIGINT);
    daemon.wait_for_log("SIGINT received");
    assert_eq!(read_to_eof(&mut client), b"", "nothing more is owed");
    drop(client);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    daemon.wait_for_log("stopped:");
}

#[test]
fn second_signal_exits_at_once() {
    let (mut daemon, addr) = Daemon::start(&["--log-level", "trace", "--shutdown-timeout", "30"]);
    // Never reads: its echoes stay owed and would hold echod for 30 s.
    let mut client = connect(addr);
    push_until_paused(&mut daemon, &mut client, b"never read back\r\n");

    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);
    // Two signals sent back to back may arrive as one; wait for the first.
    daemon.wait_for_log("SIGTERM received: no longer accepting");
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log("SIGTERM received again: exiting now");
    // The connection was cut off: exit status 3, not 0 (see `--help`).
    assert_eq!(daemon.wait_exit().code(), Some(3));
    let elapsed = signalled.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    daemon.wait_for_log("stopped:");
    drop(client);
}

#[test]
fn shutdown_timeout_bounds_the_wait() {
    let (mut daemon, addr) = Daemon::start(&["--log-level", "trace", "--shutdown-timeout", "0.5"]);
    let mut client = connect(addr);
    push_until_paused(&mut daemon, &mut client, b"never read back\r\n");

    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);
    // The connection was cut off: exit status 3, not 0 (see `--help`).
    assert_eq!(daemon.wait_exit().code(), Some(3));
    let elapsed = signalled.elapsed();
    // At least the timeout: the owed echoes were waited for, not dropped.
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(5)).contains(&elapsed),
        "took {elapsed:?}"
    );
    // The close line says the echoes owed were never delivered, and the
    // `stopped:` summary counts the cut among the closes by reason.
    let closed = daemon.wait_for_log("closed (shutdown timeout)");
    assert!(
        closed.contains(" bytes owed not delivered; peer "),
        "{closed}"
    );
    let stopped = daemon.wait_for_log("stopped:");
    assert!(stopped.contains(", 1 shutdown timeout,"), "{stopped}");
    drop(client);
}

#[test]
fn sigusr1_logs_summary_and_keeps_serving() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let mut client = connect(addr);
    for i in 0..5 {
        assert_echoes(&mut client, format!("line {i}\r\n").as_bytes());
    }
    daemon.signal(libc::SIGUSR1);
    let summary = daemon.wait_for_log("summary:");
    assert!(
        summary.contains("1 open") && summary.contains("5 lines received, 40 bytes echoed"),
        "{summary}"
    );
    assert_echoes(&mut client, b"after SIGUSR1\r\n");
    let mut second = connect(addr);
    assert_echoes(&mut second, b"a new client\r\n");

    drop((client, second));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn keeps_serving_when_log_reader_goes_away() {
    let mut command = Daemon::command(&["-l", "127.0.0.1:0"]);
    let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::CloseAfterListening);
    let addr = daemon.listening_addr();
    // Each connection logs two lines, into a pipe nobody reads any more.
    for i in 0..50 {
        let mut client = connect(addr);
        assert_echoes(&mut client, format!("client {i}\r\n").as_bytes());
    }
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn recovers_from_descriptor_exhaustion() {
    let Exhausted {
        mut daemon,
        lines,
        mut clients,
        accepted,
    } = Exhausted::start(100);

    // Those accepted are served while the rest wait.
    let deadline = Instant::now() + DEADLINE;
    for (i, client) in clients.iter_mut().enumerate() {
        if accepted[i] {
            let client = client.as_mut().expect("every client is open");
            assert_receives(client, lines[i].as_bytes(), deadline);
        }
    }
    // Free their descriptors, but for one that shows it is still served.
    let kept = accepted.iter().position(|&a| a).expect("one was accepted");
    for (i, client) in clients.iter_mut().enumerate() {
        if accepted[i] && i != kept {
            *client = None;
        }
    }
    // Each waiting client is accepted as descriptors come free, and its line,
    // queued all along, is echoed then.
    let deadline = Instant::now() + DEADLINE;
    for (i, client) in clients.iter_mut().enumerate() {
        if !accepted[i] {
            let client = client.as_mut().expect("waiting clients are open");
            assert_receives(client, lines[i].as_bytes(), deadline);
        }
    }
    assert_echoes(
        clients[kept].as_mut().expect("kept open"),
        b"still here\r\n",
    );

    daemon.signal(libc::SIGTERM);
    for client in clients.iter_mut().flatten() {
        assert_eq!(read_to_eof(client), b"", "nothing more is owed");
    }
    drop(clients);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}
