//! `echo-bench`: a verifying load generator for line echo servers.
//!
//! It opens connections, sends lines on them (closed loop with a pipeline
//! depth, or open loop at a fixed rate), checks every echoed byte against
//! what was sent, and reports lines per second, bytes per second each way,
//! and latency percentiles from an HdrHistogram. See `--help`, and
//! `docs/BENCHMARKS.md` for how the published figures were taken.
//!
//! Modules, in reading order: `args` (the command line), `lines` (what is
//! sent and how echoes are checked), `client` (one thread's event loop),
//! `report` (progress and the summary).

mod args;
mod client;
mod lines;
mod report;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::Instant;

use args::{Command, Options, USAGE};
use client::{Milestone, Progress};
use report::{Report, Timeline};

/// Exit status when a line was lost, corrupted or late, or a connection failed.
const EXIT_ERRORS: u8 = 1;
/// Exit status for a bad command line or a run that cannot start.
const EXIT_CANNOT_RUN: u8 = 2;
/// Descriptors needed besides one per connection: poll instances, standard
/// streams, with room to spare.
const SPARE_DESCRIPTORS: u64 = 64;

fn main() -> ExitCode {
    let options = match args::parse_args(std::env::args_os()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            let _ = write!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            let _ = writeln!(io::stdout(), "echo-bench {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("echo-bench: {err}\nTry 'echo-bench --help' for more information.");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    match run(options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_ERRORS),
        Err(err) => {
            eprintln!("echo-bench: {err}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

/// Runs the benchmark and prints its summary; `Ok(false)` if errors were
/// counted.
fn run(options: Options) -> Result<bool, String> {
    let needed = options.conns as u64 + SPARE_DESCRIPTORS;
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|err| format!("cannot raise the open-file limit: {err}"))?;
    if limit < needed {
        return Err(format!(
            "{} connections need {needed} open files, but the limit is {limit} \
             (raise the hard limit, e.g. `ulimit -Hn`, as root)",
            options.conns
        ));
    }

    let options = Arc::new(options);
    let progress = Arc::new(Progress::default());
    let barrier = Arc::new(Barrier::new(options.threads));
    let load_start: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let (milestones_tx, milestones) = mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..options.threads {
        let ids: Vec<u64> = (t..options.conns)
            .step_by(options.threads)
            .map(|id| id as u64)
            .collect();
        let (options, progress, barrier) = (
            Arc::clone(&options),
            Arc::clone(&progress),
            Arc::clone(&barrier),
        );
        let (load_start, milestones) = (Arc::clone(&load_start), milestones_tx.clone());
        let handle = thread::Builder::new()
            .name(format!("echo-bench-{t}"))
            .spawn(move || {
                let result = client::run(options, ids, barrier, progress, &load_start, &milestones);
                let _ = milestones.send(Milestone::Done);
                result
            })
            .map_err(|err| format!("cannot start a load thread: {err}"))?;
        handles.push(handle);
    }
    drop(milestones_tx);

    let header_printed = !options.quiet;
    if header_printed {
        eprintln!("{}", report::header(&options));
    }
    report_progress(&options, &progress, &load_start, &milestones);

    let mut reports = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(err)) => return Err(format!("event loop failed: {err}")),
            Err(_) => return Err("a load thread panicked".into()),
        }
    }
    let summary = Report::merge(reports).ok_or("no load thread ran")?;
    let text = if options.json {
        summary.json(&options) + "\n"
    } else {
        let with_header = report::summary_repeats_header(
            header_printed,
            io::stdout().is_terminal(),
            io::stderr().is_terminal(),
        );
        summary.text(&options, with_header)
    };
    let _ = io::stdout().write_all(text.as_bytes());
    if summary.connected == 0 {
        // Said on stderr as well, so that it is seen with --json or with
        // stdout redirected: nothing was measured at all.
        let first = summary.errors.examples.first().map_or("", String::as_str);
        eprintln!(
            "echo-bench: no connection to {} came up ({first})",
            options.addr
        );
    }
    Ok(summary.errors.total() == 0)
}

/// Prints a progress line on stderr each second until every thread is
/// done. Each line covers the interval since the one before and is
/// labelled with the phase that interval measured: intervals are cut at
/// the phase boundaries (`Timeline::next_tick`), and the first starts when
/// the load does, so no line mixes two phases.
fn report_progress(
    options: &Options,
    progress: &Progress,
    load_start: &OnceLock<Instant>,
    milestones: &mpsc::Receiver<Milestone>,
) {
    let started = Instant::now();
    let mut timeline = Timeline::new(options);
    let mut interval_start = started;
    let mut lines_at_start = 0;
    let mut next = timeline.next_tick(started);
    let mut running = options.threads;
    while running > 0 {
        match milestones.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Milestone::LoadStarted) => {
                if timeline.load_start.is_none()
                    && let Some(at) = load_start.get()
                {
                    // The connecting interval under way ends here unprinted:
                    // no line was sent in it. The load's intervals count
                    // from its start.
                    timeline.load_start = Some(*at);
                    interval_start = *at;
                    lines_at_start = progress.lines.load(Ordering::Relaxed);
                    next = timeline.next_tick(*at);
                }
                continue;
            }
            Ok(Milestone::Done) => {
                running -= 1;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let lines = progress.lines.load(Ordering::Relaxed);
        let seconds = now.duration_since(interval_start).as_secs_f64();
        let rate = (lines - lines_at_start) as f64 / seconds;
        let phase = timeline.phase_of(interval_start, now);
        (interval_start, lines_at_start) = (now, lines);
        // From the tick as scheduled, not as woken, so lines do not drift.
        next = timeline.next_tick(next);
        if options.quiet {
            continue;
        }
        eprintln!(
            "{}",
            report::progress_line(
                now.duration_since(started),
                rate,
                progress.conns_up.load(Ordering::Relaxed),
                options.conns,
                progress.errors.load(Ordering::Relaxed),
                phase
            )
        );
    }
}
