//! `echo-bench`: a verifying load generator for line echo servers.
//!
//! It opens connections, sends lines on them (closed loop with a pipeline
//! depth, or open loop at a fixed rate), checks every echoed byte against
//! what was sent, and reports lines per second, bytes per second each way,
//! and latency percentiles from an HdrHistogram. See `--help`, and
//! `docs/BENCHMARKS.md` for how the published figures were taken.
//!
//! With `--churn K` each connection instead echoes K lines and closes, and a
//! new one takes its place; with `--bulk-conns` a bulk group of connections
//! runs beside the measured one and is reported apart (a noisy neighbour).
//!
//! Modules, in reading order: `args` (the command line), `lines` (what is
//! sent and how echoes are checked), `client` (one thread's event loop),
//! `churn` (the same for short-lived connections), `report` (progress and
//! the summary).

mod args;
mod churn;
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

/// The threads of one group of connections: the measured group, or the
/// bulk group beside it.
struct Group {
    options: Arc<Options>,
    progress: Arc<Progress>,
    handles: Vec<thread::JoinHandle<io::Result<Report>>>,
}

impl Group {
    /// Waits for the group's threads and merges their reports.
    fn join(self) -> Result<Report, String> {
        let mut reports = Vec::new();
        for handle in self.handles {
            match handle.join() {
                Ok(Ok(report)) => reports.push(report),
                Ok(Err(err)) => return Err(format!("event loop failed: {err}")),
                Err(_) => return Err("a load thread panicked".into()),
            }
        }
        Report::merge(reports).ok_or_else(|| "no load thread ran".to_string())
    }
}

/// What the threads of every group share: a barrier so that all start the
/// load together, the load's start, and the reporter's channel.
struct Start {
    barrier: Arc<Barrier>,
    load_start: Arc<OnceLock<Instant>>,
    milestones: mpsc::Sender<Milestone>,
}

/// Starts a group's threads: `first_id` numbers its first connection, and
/// `nice`, if given, is set on each of its threads.
fn spawn_group(
    options: Options,
    first_id: u64,
    name: &str,
    nice: Option<i32>,
    start: &Start,
) -> Result<Group, String> {
    let options = Arc::new(options);
    let progress = Arc::new(Progress::default());
    let mut handles = Vec::new();
    for t in 0..options.threads {
        let ids: Vec<u64> = (t..options.conns)
            .step_by(options.threads)
            .map(|id| first_id + id as u64)
            .collect();
        let (options, progress, barrier) = (
            Arc::clone(&options),
            Arc::clone(&progress),
            Arc::clone(&start.barrier),
        );
        let (load_start, milestones) = (Arc::clone(&start.load_start), start.milestones.clone());
        let handle = thread::Builder::new()
            .name(format!("{name}-{t}"))
            .spawn(move || {
                let niced = nice.map_or(Ok(()), set_nice);
                let result = match niced {
                    Err(err) => {
                        // Reach the barrier all the same, so that no other
                        // thread waits for this one forever.
                        barrier.wait();
                        Err(err)
                    }
                    Ok(()) if options.churn.is_some() => {
                        churn::run(options, t, barrier, progress, &load_start, &milestones)
                    }
                    Ok(()) => {
                        client::run(options, ids, barrier, progress, &load_start, &milestones)
                    }
                };
                let _ = milestones.send(Milestone::Done);
                result
            })
            .map_err(|err| format!("cannot start a load thread: {err}"))?;
        handles.push(handle);
    }
    Ok(Group {
        options,
        progress,
        handles,
    })
}

/// Sets the calling thread's nice value: on Linux each thread has its own.
fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid and setpriority take and return plain integers; a
    // thread id names the calling thread alone.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The process's CPU time so far, user and system, all threads.
fn process_cpu() -> Option<std::time::Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given,
    // which points at one, and reports failure by its return value.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it filled the struct.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

/// Runs the benchmark and prints its summary; `Ok(false)` if errors were
/// counted.
fn run(options: Options) -> Result<bool, String> {
    let bulk_options = options.bulk_group();
    let bulk_conns = bulk_options.as_ref().map_or(0, |b| b.conns);
    let needed = (options.conns + bulk_conns) as u64 + SPARE_DESCRIPTORS;
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|err| format!("cannot raise the open-file limit: {err}"))?;
    if limit < needed {
        return Err(format!(
            "{} connections need {needed} open files, but the limit is {limit} \
             (raise the hard limit, e.g. `ulimit -Hn`, as root)",
            options.conns + bulk_conns
        ));
    }

    let threads = options.threads + bulk_options.as_ref().map_or(0, |b| b.threads);
    let (milestones_tx, milestones) = mpsc::channel();
    let start = Start {
        barrier: Arc::new(Barrier::new(threads)),
        load_start: Arc::new(OnceLock::new()),
        milestones: milestones_tx,
    };
    let nice = options.bulk.map(|b| b.nice).filter(|&n| n != 0);
    let conns = options.conns as u64;
    let measured = spawn_group(options, 0, "echo-bench", None, &start)?;
    let bulk = match bulk_options {
        Some(bulk) => Some(spawn_group(bulk, conns, "echo-bench-bulk", nice, &start)?),
        None => None,
    };
    let Start {
        load_start,
        milestones: milestones_tx,
        ..
    } = start;
    drop(milestones_tx);

    let options = Arc::clone(&measured.options);
    let header_printed = !options.quiet;
    if header_printed {
        eprintln!("{}", report::header(&options));
    }
    let counters = Counters {
        measured: Arc::clone(&measured.progress),
        bulk: bulk.as_ref().map(|b| Arc::clone(&b.progress)),
    };
    report_progress(&options, threads, &counters, &load_start, &milestones);

    let mut summary = measured.join()?;
    let bulk = match bulk {
        Some(group) => {
            let bulk_options = Arc::clone(&group.options);
            Some((bulk_options, group.join()?))
        }
        None => None,
    };
    summary.client_cpu = process_cpu();
    let text = if options.json {
        let mut json = summary.json(&options);
        if let Some((bulk_options, bulk)) = &bulk {
            // Inside the object, after every field of the measured group.
            json.pop();
            json.push_str(",\"bulk\":");
            json.push_str(&bulk.json(bulk_options));
            json.push('}');
        }
        json + "\n"
    } else {
        let with_header = report::summary_repeats_header(
            header_printed,
            io::stdout().is_terminal(),
            io::stderr().is_terminal(),
        );
        let mut text = summary.text(&options, with_header);
        if let Some((bulk_options, bulk)) = &bulk {
            let nice = options.bulk.map_or(0, |b| b.nice);
            text.push_str(&format!("bulk group, at nice {nice}:\n"));
            text.push_str(&bulk.text(bulk_options, true));
        }
        text
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
    let bulk_errors = bulk.as_ref().map_or(0, |(_, b)| b.errors.total());
    Ok(summary.errors.total() + bulk_errors == 0)
}

/// The counters the progress lines are read from.
struct Counters {
    measured: Arc<Progress>,
    bulk: Option<Arc<Progress>>,
}

/// Prints a progress line on stderr each second until every thread is
/// done. Each line covers the interval since the one before and is
/// labelled with the phase that interval measured: intervals are cut at
/// the phase boundaries (`Timeline::next_tick`), and the first starts when
/// the load does, so no line mixes two phases.
fn report_progress(
    options: &Options,
    threads: usize,
    counters: &Counters,
    load_start: &OnceLock<Instant>,
    milestones: &mpsc::Receiver<Milestone>,
) {
    let progress = &counters.measured;
    // Churn counts cycles, the other loads lines.
    let count = |p: &Progress| match options.churn {
        Some(_) => p.cycles.load(Ordering::Relaxed),
        None => p.lines.load(Ordering::Relaxed),
    };
    let bulk_lines = || {
        counters
            .bulk
            .as_ref()
            .map_or(0, |b| b.lines.load(Ordering::Relaxed))
    };
    let mut bulk_at_start = 0;
    let started = Instant::now();
    let mut timeline = Timeline::new(options);
    let mut interval_start = started;
    let mut lines_at_start = 0;
    let mut next = timeline.next_tick(started);
    let mut running = threads;
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
                    lines_at_start = count(progress);
                    bulk_at_start = bulk_lines();
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
        let lines = count(progress);
        let bulk = bulk_lines();
        let seconds = now.duration_since(interval_start).as_secs_f64();
        let rate = (lines - lines_at_start) as f64 / seconds;
        let bulk_rate = (bulk - bulk_at_start) as f64 / seconds;
        bulk_at_start = bulk;
        let phase = timeline.phase_of(interval_start, now);
        (interval_start, lines_at_start) = (now, lines);
        // From the tick as scheduled, not as woken, so lines do not drift.
        next = timeline.next_tick(next);
        if options.quiet {
            continue;
        }
        let mut line = report::progress_line(
            now.duration_since(started),
            rate,
            if options.churn.is_some() {
                "cycles/s"
            } else {
                "lines/s"
            },
            progress.conns_up.load(Ordering::Relaxed),
            options.conns,
            progress.errors.load(Ordering::Relaxed),
            phase,
        );
        if counters.bulk.is_some() {
            line.push_str(&format!(
                "  bulk {} lines/s",
                report::thousands(bulk_rate.round() as u64)
            ));
        }
        eprintln!("{line}");
    }
}
