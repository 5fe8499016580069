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

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use args::{Command, Length, Options, USAGE};
use client::Progress;
use report::Report;

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
    let (done_tx, done_rx) = mpsc::channel();
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
        let (load_start, done_tx) = (Arc::clone(&load_start), done_tx.clone());
        let handle = thread::Builder::new()
            .name(format!("echo-bench-{t}"))
            .spawn(move || {
                let result = client::run(options, ids, barrier, progress, &load_start);
                let _ = done_tx.send(());
                result
            })
            .map_err(|err| format!("cannot start a load thread: {err}"))?;
        handles.push(handle);
    }
    drop(done_tx);

    if !options.quiet {
        eprintln!(
            "echo-bench {}: {}",
            options.addr,
            report::describe(&options)
        );
    }
    report_progress(&options, &progress, &load_start, &done_rx);

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
        summary.text(&options)
    };
    let _ = io::stdout().write_all(text.as_bytes());
    Ok(summary.errors.total() == 0)
}

/// Prints one progress line a second on stderr until every thread is done.
fn report_progress(
    options: &Options,
    progress: &Progress,
    load_start: &OnceLock<Instant>,
    done: &mpsc::Receiver<()>,
) {
    let started = Instant::now();
    let mut next = started + Duration::from_secs(1);
    let mut last_lines = 0;
    let mut last_time = started;
    let mut running = options.threads;
    while running > 0 {
        match done.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                running -= 1;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        next += Duration::from_secs(1);
        let lines = progress.lines.load(Ordering::Relaxed);
        let rate = (lines - last_lines) as f64 / now.duration_since(last_time).as_secs_f64();
        (last_lines, last_time) = (lines, now);
        if options.quiet {
            continue;
        }
        let phase = match load_start.get() {
            None => " (connecting)",
            Some(start) => {
                let elapsed = now.duration_since(*start);
                match options.length {
                    _ if elapsed < options.warmup => " (warm-up)",
                    Length::Duration(d) if elapsed >= options.warmup + d => " (draining)",
                    _ => "",
                }
            }
        };
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
