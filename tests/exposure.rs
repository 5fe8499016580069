//! What makes echod safe to expose, on the real binary: the log's size is
//! echod's, not its peers' (a budget of lines caused by peers per second,
//! with a count of the rest), `--max-connections` shared out exactly among
//! workers, and an address some other process answers on refused at start
//! whatever `--workers` is.
//!
//! Each test runs echod as a child on an ephemeral loopback port; every
//! wait is bounded, and a child left running by a failed test is killed.

mod common;
mod process;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{DEADLINE, assert_echoes, connect};
use echod::control::PEER_LINES_PER_SECOND;
use process::Daemon;

/// Connect, echo one line, close: as fast as one client can, which is
/// thousands a second, so that the budget is spent many times over.
const CYCLES: usize = 3_000;

/// Exit status when echod cannot start (see `--help`).
const EXIT_CANNOT_START: i32 = 71;
/// Exit status for a bad command line.
const EXIT_USAGE: i32 = 64;

/// The number a held-back report opens with ("2,900 lines about
/// connections held back …"), or `None` if `line` is no such report.
fn held_back(line: &str) -> Option<u64> {
    let (before, _) = line.split_once(" about connections held back")?;
    let count = before.rsplit_once("] ")?.1.split(' ').next()?;
    Some(
        count
            .replace(',', "")
            .parse()
            .unwrap_or_else(|err| panic!("no count in {line:?}: {err}")),
    )
}

#[test]
fn connect_echo_close_cycles_keep_the_log_to_about_100_lines_a_second() {
    let (mut daemon, addr) = Daemon::start(&[]);
    let started = Instant::now();
    for i in 0..CYCLES {
        let mut client = connect(addr);
        assert_echoes(&mut client, format!("cycle {i}\r\n").as_bytes());
        assert!(started.elapsed() < 6 * DEADLINE, "{i} cycles took too long");
    }
    let elapsed = started.elapsed();
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let log = daemon.full_log().to_vec();

    // Lines per second of the log's own timestamps
    // ("2024-05-01T12:34:56.789Z …": the first 19 characters name the
    // second), lifecycle lines included.
    let mut per_second: BTreeMap<&str, usize> = BTreeMap::new();
    for line in &log {
        *per_second
            .entry(line.get(..19).unwrap_or(line))
            .or_default() += 1;
    }
    let busiest = per_second.values().copied().max().unwrap_or(0);
    eprintln!(
        "{CYCLES} cycles in {elapsed:.2?}: {} log lines over {} seconds, at most {busiest} in one",
        log.len(),
        per_second.len()
    );
    // The budget, the held-back report, and a few lifecycle lines; a line
    // admitted at the very end of a second may be stamped with the next.
    let most = PEER_LINES_PER_SECOND as usize + 10;
    assert!(
        busiest <= most,
        "{busiest} lines in one second, more than {most}: {per_second:?}"
    );

    // Every connection is accounted for: its close line was written, or
    // counted in a report.
    let closed = log
        .iter()
        .filter(|line| line.contains(": closed ("))
        .count() as u64;
    let held: u64 = log.iter().filter_map(|line| held_back(line)).sum();
    assert!(
        held > 0,
        "nothing was held back: {CYCLES} cycles in {elapsed:?} never spent the budget"
    );
    assert_eq!(
        closed + held,
        CYCLES as u64,
        "{closed} close lines written and {held} held back"
    );
    let stopped = log
        .iter()
        .find(|line| line.contains("stopped: "))
        .expect("a stopped line");
    assert!(
        stopped.contains(&format!("{CYCLES} connections served")),
        "{stopped}"
    );
}

#[test]
fn max_connections_is_shared_out_exactly_among_workers() {
    let cases = [
        (
            "7",
            "4",
            "4 workers: max-connections 2 for 3 workers and 1 for 1, 7 in all",
            &[2, 2, 2, 1][..],
        ),
        (
            "1000",
            "3",
            "3 workers: max-connections 334 for 1 worker and 333 for 2, 1000 in all",
            &[334, 333, 333][..],
        ),
    ];
    for (max, workers, line, shares) in cases {
        let mut daemon = Daemon::spawn(&[
            "-l",
            "127.0.0.1:0",
            "--workers",
            workers,
            "--max-connections",
            max,
        ]);
        daemon.wait_for_log(line);
        for (i, share) in shares.iter().enumerate() {
            let worker = daemon.wait_for_log(&format!("worker {}: echod ", i + 1));
            assert!(
                worker.contains(&format!("max-connections {share}")),
                "{worker}"
            );
        }
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait_exit().code(), Some(0));
    }
    // Fewer than one a worker: a command-line error.
    let mut daemon = Daemon::spawn(&[
        "-l",
        "127.0.0.1:0",
        "--workers",
        "4",
        "--max-connections",
        "3",
    ]);
    assert_eq!(daemon.wait_exit().code(), Some(EXIT_USAGE));
    let stderr = daemon.stderr().to_owned();
    assert!(
        stderr.contains("--max-connections 3 is fewer than --workers 4"),
        "{stderr}"
    );
}

#[test]
fn an_address_another_process_answers_on_is_refused_whatever_the_workers() {
    for first_workers in ["1", "2"] {
        let (mut first, addr) = Daemon::start(&["--workers", first_workers]);
        if first_workers == "2" {
            first.wait_for_log("worker 2: listening on");
        }
        let address = addr.to_string();
        for second_workers in ["1", "2", "3"] {
            let mut second = Daemon::spawn(&["-l", &address, "--workers", second_workers]);
            let status = second.wait_exit();
            let stderr = second.stderr().to_owned();
            assert_eq!(
                status.code(),
                Some(EXIT_CANNOT_START),
                "a second echod --workers {second_workers} beside one with {first_workers} \
                 started: {stderr}"
            );
            assert!(
                stderr.contains(&format!("cannot listen on {address}: ")),
                "{stderr}"
            );
            if second_workers != "1" {
                // Refused by the probe, whatever the bind would have done.
                assert!(
                    stderr.contains("another process already accepts connections there"),
                    "{stderr}"
                );
            }
        }
        // The first went on serving, and took the probes as clients that
        // sent nothing.
        let mut client = connect(addr);
        assert_echoes(&mut client, b"still mine\r\n");
        drop(client);
        first.signal(libc::SIGTERM);
        assert_eq!(first.wait_exit().code(), Some(0));
    }
}
