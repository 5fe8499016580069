//! `echo-bench` against echod and against servers that misbehave on
//! purpose: a load generator that cannot tell a corrupted or missing echo
//! from a good one would make every figure it prints worthless.

// echod's own test helpers (an in-process server on 127.0.0.1:0), shared
// rather than copied: one copy of each helper.
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::TestServer;
use echod_kit::process::{self, Signal};

/// Longest a run of the load generator may take before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

/// Runs echo-bench with `args` and returns its output, killing it if it
/// outlives `RUN_DEADLINE`.
fn echo_bench(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_echo-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo-bench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_DEADLINE) {
        Ok(output) => output.expect("collect echo-bench output"),
        Err(_) => {
            // Do not leave a runaway load generator behind.
            let _ = process::signal(pid, Signal::KILL);
            panic!("echo-bench did not finish within {RUN_DEADLINE:?}");
        }
    }
}

/// The value of `"key":NUMBER` in echo-bench's JSON line.
fn json_number(json: &str, key: &str) -> f64 {
    let needle = format!("\"{key}\":");
    let start = json
        .find(&needle)
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + needle.len();
    let rest = &json[start..];
    let end = rest
        .find(|c: char| c != '.' && c != '-' && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is a number in {json}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A server on 127.0.0.1:0 that handles each connection with `serve` on
/// its own thread, for as long as the test runs.
fn fake_server(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
    let addr = listener.local_addr().expect("fake server address");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

#[test]
fn every_line_of_a_fixed_count_run_is_echoed_and_counted() {
    let server = TestServer::start_default();
    let addr = server.addr.to_string();
    let output = echo_bench(&[
        "-a", &addr, "-c", "20", "-P", "4", "-n", "500", "--json", "-q",
    ]);
    let json = stdout(&output);
    assert!(output.status.success(), "{json}\n{:?}", output.stderr);
    assert_eq!(json_number(&json, "lines"), 20.0 * 500.0);
    assert_eq!(json_number(&json, "bytes_received"), 20.0 * 500.0 * 64.0);
    assert_eq!(json_number(&json, "total"), 0.0);
    assert!(json_number(&json, "p50") > 0.0);
    let summary = server.stop();
    assert_eq!(summary.lines, 10_000, "the server saw every line once");
}

#[test]
fn a_timed_run_reports_progress_and_percentiles_with_units() {
    let server = TestServer::start_default();
    let addr = server.addr.to_string();
    let output = echo_bench(&["-a", &addr, "-c", "3", "-d", "1.2", "--framing", "crlf"]);
    let text = stdout(&output);
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}\n{progress}");
    assert!(
        progress.contains("lines/s") && progress.contains("3/3 connections up"),
        "{progress}"
    );
    let latency = text
        .lines()
        .find(|l| l.contains("latency"))
        .expect("latency line");
    for label in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(latency.contains(label), "{latency}");
    }
    assert!(
        latency.contains("µs") || latency.contains("ms"),
        "{latency}"
    );
    assert!(text.contains("errors      none"), "{text}");
}

#[test]
fn open_loop_sends_at_the_requested_rate() {
    let server = TestServer::start_default();
    let addr = server.addr.to_string();
    // 10 connections at 200 lines/s each for 1 s: 2,000 lines give or take
    // the lines in flight at the end of the window.
    let output = echo_bench(&[
        "-a", &addr, "-c", "10", "-r", "2000", "-d", "1", "--json", "-q",
    ]);
    let json = stdout(&output);
    assert!(output.status.success(), "{json}");
    let lines = json_number(&json, "lines");
    assert!(
        (1_900.0..=2_010.0).contains(&lines),
        "{lines} lines in {json}"
    );
}

#[test]
fn a_corrupted_byte_is_a_mismatch_and_fails_the_run() {
    let addr = fake_server(|mut stream| {
        let mut buf = [0; 4096];
        let mut total = 0;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            // Flip one byte of the third line.
            if (128..192).contains(&total) {
                buf[0] ^= 0x20;
            }
            total += n;
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let output = echo_bench(&["-a", &addr.to_string(), "-n", "5", "--json", "-q"]);
    let json = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(json_number(&json, "mismatch"), 1.0);
    assert_eq!(
        json_number(&json, "lines"),
        2.0,
        "lines before the bad one count"
    );
}

#[test]
fn a_server_that_closes_early_or_never_answers_fails_the_run() {
    let closes = fake_server(|mut stream| {
        let mut buf = [0; 64];
        let _ = stream.read_exact(&mut buf);
        let _ = stream.write_all(&buf[..10]);
    });
    let output = echo_bench(&[
        "-a",
        &closes.to_string(),
        "-c",
        "2",
        "-n",
        "3",
        "--json",
        "-q",
    ]);
    let json = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(json_number(&json, "early_close"), 2.0, "{json}");

    let silent = fake_server(|mut stream| {
        let mut buf = [0; 64];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    let output = echo_bench(&[
        "-a",
        &silent.to_string(),
        "-n",
        "3",
        "--timeout",
        "0.3",
        "--json",
        "-q",
    ]);
    let json = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(json_number(&json, "timeout"), 1.0, "{json}");
}

#[test]
fn a_refused_connection_is_an_error() {
    // Bind and drop: nothing listens on this port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port");
    let output = echo_bench(&[
        "-a",
        &addr.to_string(),
        "-c",
        "3",
        "-n",
        "1",
        "--json",
        "-q",
    ]);
    let json = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(json_number(&json, "connect"), 3.0, "{json}");
}

#[test]
fn a_refused_port_is_reported_as_a_failure_not_as_a_connect_time() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port");
    let output = echo_bench(&["-a", &addr.to_string(), "-c", "3", "-n", "1"]);
    let text = stdout(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{text}\n{stderr}");
    assert!(
        text.contains("connect     failed: none of 3 connections came up"),
        "{text}"
    );
    assert!(
        !text.contains("up in"),
        "no connect time for nothing: {text}"
    );
    assert!(text.contains("errors      3 (3 connect"), "{text}");
    let said = format!("echo-bench: no connection to {addr} came up");
    assert!(
        stderr.contains(&said) && stderr.contains("refused"),
        "{stderr}"
    );
}

#[test]
fn progress_lines_are_labelled_with_the_phase_they_measured() {
    let server = TestServer::start_default();
    let addr = server.addr.to_string();
    let output = echo_bench(&["-a", &addr, "-w", "0.5", "-d", "1.5"]);
    let text = stdout(&output);
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}\n{progress}");
    let labels: Vec<&str> = progress
        .lines()
        .filter(|line| line.contains("lines/s"))
        .map(|line| line.rsplit_once("errors").map_or("", |(_, label)| label))
        .collect();
    // The warm-up ends 0.5 s into the load and the measurement a second and
    // a half later: a warm-up line, then a measured (unlabelled) one. The
    // drain lasts far less than a second, so no line is labelled with it.
    let first_measured = labels.iter().position(|label| label.is_empty());
    assert_eq!(labels.first(), Some(&" (warm-up)"), "{progress}");
    assert!(first_measured.is_some(), "{progress}");
    assert!(
        labels[first_measured.unwrap_or(0)..]
            .iter()
            .all(|label| label.is_empty()),
        "{progress}"
    );
    // The progress went elsewhere than a terminal, so the summary names its
    // run itself.
    assert!(text.starts_with("echo-bench 127.0.0.1:"), "{text}");
}

#[test]
fn remote_targets_and_unbounded_runs_are_refused() {
    let output = echo_bench(&["-a", "192.0.2.1:12321", "-n", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-remote"));
    let output = echo_bench(&["--duration", "0"]);
    assert_eq!(output.status.code(), Some(2));
}

/// The JSON object after `"key":` in echo-bench's JSON line, braces included.
fn json_object<'a>(json: &'a str, key: &str) -> &'a str {
    let needle = format!("\"{key}\":{{");
    let start = json
        .find(&needle)
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + needle.len()
        - 1;
    let mut depth = 0;
    for (i, c) in json[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return &json[start..=start + i];
        }
    }
    panic!("{key} is not closed in {json}")
}

#[test]
fn churn_opens_a_connection_per_cycle_and_verifies_every_echo() {
    let server = TestServer::start_default();
    let addr = server.addr.to_string();
    let output = echo_bench(&[
        "-a", &addr, "--churn", "3", "-P", "2", "--cycles", "300", "-c", "8", "-t", "2", "--json",
        "-q",
    ]);
    let json = stdout(&output);
    assert!(output.status.success(), "{json}");
    assert_eq!(json_number(&json, "cycles"), 300.0, "{json}");
    assert_eq!(json_number(&json, "connected"), 300.0, "{json}");
    assert_eq!(json_number(&json, "lines"), 900.0, "{json}");
    assert_eq!(json_number(&json, "bytes_received"), 900.0 * 64.0);
    assert_eq!(json_number(&json, "total"), 0.0);
    let cycle = json_object(&json, "cycle_latency_ns");
    let connect = json_object(&json, "connect_latency_ns");
    assert!(
        json_number(cycle, "p50") > json_number(connect, "p50"),
        "a cycle outlasts its connect: {json}"
    );
    let summary = server.stop();
    assert_eq!(summary.accepted, 300, "one connection per cycle");
    assert_eq!(summary.lines, 900, "the server saw every line once");
}

#[test]
fn churn_in_open_loop_opens_connections_at_the_requested_rate() {
    let server = TestServer::start_default();
    let addr = server.addr.to_string();
    // 400 connections a second for 1 s, at most 8 in flight.
    let output = echo_bench(&[
        "-a", &addr, "--churn", "1", "-r", "400", "-c", "8", "-d", "1", "--json", "-q",
    ]);
    let json = stdout(&output);
    assert!(output.status.success(), "{json}");
    let cycles = json_number(&json, "cycles");
    assert!(
        (380.0..=402.0).contains(&cycles),
        "{cycles} cycles in {json}"
    );
    let text = stdout(&echo_bench(&[
        "-a", &addr, "--churn", "1", "-c", "2", "-d", "0.3",
    ]));
    for label in ["cycles/s", "connect ", "cycle ", "client CPU"] {
        assert!(text.contains(label), "{label} in {text}");
    }
}

#[test]
fn churn_counts_a_corrupted_echo_and_a_missing_fin_as_errors() {
    // Echoes the first line with a byte flipped.
    let corrupts = fake_server(|mut stream| {
        let mut buf = [0; 64];
        if stream.read_exact(&mut buf).is_ok() {
            buf[3] ^= 0x20;
            let _ = stream.write_all(&buf);
        }
    });
    let output = echo_bench(&[
        "-a",
        &corrupts.to_string(),
        "--churn",
        "1",
        "--cycles",
        "3",
        "--json",
        "-q",
    ]);
    let json = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(json_number(&json, "mismatch"), 3.0, "{json}");
    assert_eq!(json_number(&json, "cycles"), 0.0, "{json}");

    // Echoes, but never closes after the client's FIN.
    let lingers = fake_server(|mut stream| {
        let mut buf = [0; 64];
        if stream.read_exact(&mut buf).is_ok() && stream.write_all(&buf).is_ok() {
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            thread::sleep(Duration::from_secs(5));
        }
    });
    let output = echo_bench(&[
        "-a",
        &lingers.to_string(),
        "--churn",
        "1",
        "--cycles",
        "1",
        "--timeout",
        "0.3",
        "--json",
        "-q",
    ]);
    let json = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(json_number(&json, "timeout"), 1.0, "{json}");
}

#[test]
fn a_bulk_group_runs_beside_the_measured_one_and_is_reported_apart() {
    let server = TestServer::start_default();
    let addr = server.addr.to_string();
    let output = echo_bench(&[
        "-a",
        &addr,
        "-c",
        "3",
        "-d",
        "1",
        "--bulk-conns",
        "2",
        "--bulk-line-bytes",
        "1024",
        "--bulk-pipeline",
        "8",
        "--bulk-nice",
        "10",
        "--json",
        "-q",
    ]);
    let json = stdout(&output);
    assert!(output.status.success(), "{json}");
    let bulk = json_object(&json, "bulk");
    assert_eq!(json_number(bulk, "conns"), 2.0, "{bulk}");
    assert_eq!(json_number(bulk, "line_bytes"), 1024.0, "{bulk}");
    assert!(json_number(bulk, "lines") > 0.0, "{bulk}");
    assert_eq!(json_number(bulk, "total"), 0.0, "{bulk}");
    // The measured group's fields come first, and are its own.
    assert_eq!(json_number(&json, "conns"), 3.0);
    assert_eq!(json_number(&json, "line_bytes"), 64.0);
    assert!(json_number(&json, "lines") > 0.0);
    let text = stdout(&echo_bench(&[
        "-a",
        &addr,
        "-c",
        "2",
        "-d",
        "0.3",
        "--bulk-conns",
        "1",
    ]));
    assert!(text.contains("bulk group, at nice 0:"), "{text}");
    assert_eq!(text.matches("lines/s").count(), 2, "{text}");
}
