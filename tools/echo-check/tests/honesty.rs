//! echo-check is honest in both directions: a correct server passes every
//! check, and a server with one planted fault fails exactly the check
//! named for that fault. Each test runs every check, so "and no other" is
//! measured, not assumed.
//!
//! The runs take turns (`SERIAL`): each loads the machine on purpose, and
//! two at once on two cores would be judging the machine, not the server.

mod servers;

use std::sync::Mutex;

use echo_check::{Framing, Options, Report, Verdict};
use servers::{Fault, MAX_LINE_BYTES, TestServer};

static SERIAL: Mutex<()> = Mutex::new(());

/// Every check against a fresh server with `fault`.
fn run(fault: Fault) -> Report {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let server = TestServer::start(fault);
    echo_check::run(&Options {
        target: server.addr,
        framing: Framing::Crlf,
        max_line_bytes: Some(MAX_LINE_BYTES),
        only: None,
    })
}

/// The failed ids are exactly `expected`, with every verdict in the message.
#[track_caller]
fn assert_fails_exactly(report: &Report, expected: &[&str]) {
    let verdicts: String = report
        .results
        .iter()
        .map(|result| {
            format!(
                "\n  {} {} ({:.1} s): {}",
                result.id,
                result.outcome.verdict.name(),
                result.elapsed.as_secs_f64(),
                result.outcome.detail
            )
        })
        .collect();
    assert_eq!(report.failed_ids(), expected, "{verdicts}");
    assert_eq!(report.results.len(), echo_check::CHECKS.len(), "{verdicts}");
}

fn skipped(report: &Report) -> Vec<&'static str> {
    report
        .results
        .iter()
        .filter(|result| result.outcome.verdict == Verdict::Skip)
        .map(|result| result.id)
        .collect()
}

#[test]
fn correct_server_passes_every_check() {
    let report = run(Fault::None);
    assert_fails_exactly(&report, &[]);
    assert_eq!(skipped(&report), Vec::<&str>::new());
}

#[test]
fn echoing_bytes_as_they_arrive_fails_partial_line_held_only() {
    let report = run(Fault::EchoAsArrives);
    assert_fails_exactly(&report, &["partial-line-held"]);
    // With no lines at all, a bare LF and a line's length mean nothing.
    assert_eq!(skipped(&report), ["bare-lf-is-data", "long-line"]);
}

#[test]
fn ending_lines_at_a_bare_lf_fails_bare_lf_is_data_only() {
    assert_fails_exactly(&run(Fault::BareLf), &["bare-lf-is-data"]);
}

#[test]
fn blocking_the_loop_on_a_slow_write_fails_non_reader_isolation_only() {
    assert_fails_exactly(&run(Fault::BlockingWrite), &["non-reader-isolation"]);
}

#[test]
fn dropping_what_the_socket_does_not_take_fails_slow_reader_complete_only() {
    let report = run(Fault::DropUnsent);
    assert_fails_exactly(&report, &["slow-reader-complete"]);
    // Its control run loses echoes without any FIN.
    assert_eq!(skipped(&report), ["half-close-flush"]);
}

#[test]
fn never_stopping_reading_fails_backpressure_only() {
    assert_fails_exactly(&run(Fault::Unbounded), &["backpressure"]);
}

#[test]
fn closing_at_the_clients_fin_with_echoes_owed_fails_half_close_flush_only() {
    assert_fails_exactly(&run(Fault::CloseAtFin), &["half-close-flush"]);
}

#[test]
fn reading_one_client_until_it_pauses_fails_flooder_fairness_only() {
    assert_fails_exactly(&run(Fault::Unfair), &["flooder-fairness"]);
}
