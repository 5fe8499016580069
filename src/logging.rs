//! Logging for the binary: the logger the `log` macros call hands each line
//! to a relay thread, which formats it and writes it to standard output; the
//! event loop never waits for either.
//!
//! Standard output can fail a daemon in two ways, and neither may stop it:
//!
//! - its reader goes away (`echod | head -1`): writes fail with `EPIPE`
//!   (std ignores `SIGPIPE` before `main`, so no signal kills echod first),
//!   and `println!` would panic on that;
//! - its reader stalls: writes block, and a blocked write in the event loop
//!   would stall every client with it.
//!
//! So the logger the macros call (`Handoff`) filters a record, renders its
//! message, and passes it to the relay over a bounded queue without waiting;
//! if the queue is full the line is dropped and counted, and the count is
//! logged when the relay catches up. The relay (`Relay`) formats each line
//! and writes it with plain `write` calls on its own handle to standard
//! output, whose errors it sees and handles: once a write fails (the reader
//! is gone) it stops writing, and echod goes on serving. A stalled reader
//! blocks only the relay.
//!
//! A line reads `2024-05-01T12:34:56.789Z INFO  [echod::server] message`:
//! the time in UTC with milliseconds, the level padded to five characters,
//! the target in brackets, the message: the format `simple_logger` prints
//! with UTC timestamps. `simple_logger` still decides which records pass
//! (`--log-level`, `RUST_LOG`, mio's module level); it cannot write them
//! itself, because its `println!` panics when standard output fails.
//! UTC only: a local offset cannot be read safely once threads exist.
//!
//! `RUST_LOG` is read here, not by `simple_logger` (which takes a bare level
//! and silently ignores anything else). It takes the directives of
//! `env_logger` that name a level: `debug`, `echod=debug`,
//! `warn,echod::server=trace`; a directive that cannot be read is ignored,
//! and one warning line in the log names it. `--log-level` (and `-q`)
//! replace `RUST_LOG` altogether.
//!
//! The library itself only calls `log` macros; this module is used by
//! `main`, which is the only place a logger is installed.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};
use simple_logger::SimpleLogger;

/// Lines queued for the relay before new ones are dropped. A burst of
/// connection logs fits; a stalled reader cannot make echod hold more.
const QUEUE_LINES: usize = 16 * 1024;

/// Longest message passed on; a longer one is cut, so that the queue holds
/// at most `QUEUE_LINES` times this many bytes of messages.
const MAX_MESSAGE_BYTES: usize = 4096;

/// How long `log::logger().flush()` waits for the relay to write what is
/// queued (the final summary, say) before the process exits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The level of every target no directive names, unless `RUST_LOG` or
/// `--log-level` says otherwise.
const DEFAULT_LEVEL: LevelFilter = LevelFilter::Info;

/// Installs the logger: `level` if given, else `RUST_LOG`, else `info`.
///
/// `simple_logger` decides which records pass (the level, `RUST_LOG`'s
/// per-target levels, and mio's module level); this module formats and
/// writes them. Directives of `RUST_LOG` that cannot be read are named in
/// one warning, the first line of the log.
///
/// # Errors
///
/// If the relay's thread cannot be started, or a logger is already
/// installed.
pub fn init(level: Option<LevelFilter>) -> io::Result<()> {
    let directives = match level {
        Some(level) => Directives {
            level: Some(level),
            ..Directives::default()
        },
        None => Directives::parse(&std::env::var("RUST_LOG").unwrap_or_default()),
    };
    let filter = directives.filter();
    let max_level = filter.max_level();
    // A duplicate of descriptor 1, owned by the relay. Failing (out of
    // descriptors) leaves nowhere to write: lines are then discarded.
    let output = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(File::from);

    let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let relay = Relay {
        receiver,
        output,
        dropped: Arc::clone(&dropped),
        line: String::new(),
    };
    if let Some(warning) = directives.warning() {
        // Past the filter on purpose: the filter is what went wrong, and it
        // may well hide warnings.
        let _ = sender.try_send(Message::Line {
            time: SystemTime::now(),
            level: Level::Warn,
            target: module_path!().to_owned(),
            text: warning,
        });
    }
    thread::Builder::new()
        .name("echod-log".into())
        .spawn(move || relay.run())?;

    let handoff = Handoff {
        filter,
        sender,
        dropped,
    };
    log::set_boxed_logger(Box::new(handoff)).map_err(io::Error::other)?;
    log::set_max_level(max_level);
    Ok(())
}

/// What `RUST_LOG` asks for: `LEVEL`, `TARGET=LEVEL`, or a comma-separated
/// list of them, as `env_logger` reads them. A `TARGET` covers the targets
/// that start with it (`echod` covers `echod::server`).
///
/// A bare `TARGET`, which `env_logger` reads as "everything from it", is
/// not taken: it would turn a misspelt level (`RUST_LOG=debgu`) into a
/// target that matches nothing, and silence again. Nor are `/regex`
/// message filters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Directives {
    /// A bare `LEVEL`: the level of every target no directive names; the
    /// last one given wins.
    level: Option<LevelFilter>,
    /// `TARGET=LEVEL`, at most one per target: a later directive for the
    /// same target replaces the earlier one.
    targets: Vec<(String, LevelFilter)>,
    /// Directives that could not be read, as they were written.
    ignored: Vec<String>,
}

/// The logger the macros call, on whatever thread they run.
struct Handoff {
    /// Which records pass; used only for its level filter.
    filter: SimpleLogger,
    /// The relay's queue, `QUEUE_LINES` long; never waited on.
    sender: SyncSender<Message>,
    /// Lines dropped because the queue was full, since the relay last
    /// reported a count.
    dropped: Arc<AtomicU64>,
}

/// What the relay is asked to do.
enum Message {
    /// Write one line.
    Line {
        /// When the record was logged, not when the relay got to it.
        time: SystemTime,
        level: Level,
        target: String,
        /// The rendered message, at most `MAX_MESSAGE_BYTES`.
        text: String,
    },
    /// Reply once every line queued before this one is written.
    Flush(SyncSender<()>),
}

impl Log for Handoff {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut text = record.args().to_string();
        if text.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let line = Message::Line {
            time: SystemTime::now(),
            level: record.level(),
            target: record.target().to_owned(),
            text,
        };
        match self.sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The relay is gone (it never exits while the sender lives, so
            // this is only reachable during process exit): nothing to do.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let (ack, done) = mpsc::sync_channel(1);
        let mut request = Message::Flush(ack);
        // Not `send`: if standard output has stalled, the queue stays full
        // and a blocking send would hang the exit.
        loop {
            match self.sender.try_send(request) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    request = again;
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

impl Directives {
    /// Reads `spec`, a `RUST_LOG` value. Empty directives (`warn,,`, or an
    /// unset variable) are skipped.
    fn parse(spec: &str) -> Directives {
        let mut directives = Directives::default();
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let parsed = match directive.split_once('=') {
                None => directive.parse().ok().map(|level| (None, level)),
                Some((target, level)) => {
                    let target = target.trim();
                    let valid_target = !target.is_empty()
                        && target
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '-');
                    let level = level.trim().parse().ok();
                    level
                        .filter(|_| valid_target)
                        .map(|level| (Some(target), level))
                }
            };
            match parsed {
                Some((None, level)) => directives.level = Some(level),
                Some((Some(target), level)) => {
                    directives.targets.retain(|(t, _)| t != target);
                    directives.targets.push((target.to_owned(), level));
                }
                None => directives.ignored.push(directive.to_owned()),
            }
        }
        directives
    }

    /// The filter these directives make: their level (else `DEFAULT_LEVEL`)
    /// and their targets' levels, with mio at `warn` unless a directive
    /// names it.
    fn filter(&self) -> SimpleLogger {
        let mut filter = SimpleLogger::new().with_level(self.level.unwrap_or(DEFAULT_LEVEL));
        if !self.targets.iter().any(|(target, _)| target == "mio") {
            // mio logs through `log` too; its detail is not an operator's
            // concern unless asked for.
            filter = filter.with_module_level("mio", LevelFilter::Warn);
        }
        for (target, level) in &self.targets {
            filter = filter.with_module_level(target, *level);
        }
        filter
    }

    /// The warning that names the directives ignored, if any were.
    fn warning(&self) -> Option<String> {
        if self.ignored.is_empty() {
            return None;
        }
        let ignored: Vec<String> = self.ignored.iter().map(|d| format!("'{d}'")).collect();
        Some(format!(
            "RUST_LOG: ignoring {}: expected LEVEL or TARGET=LEVEL, comma-separated, \
             with LEVEL one of off, error, warn, info, debug, trace",
            ignored.join(", ")
        ))
    }
}

/// The relay thread's side.
struct Relay {
    receiver: Receiver<Message>,
    /// Standard output (a duplicate of descriptor 1); `None` once a write to
    /// it has failed, from then on lines are discarded.
    output: Option<File>,
    /// Shared with `Handoff`: lines it dropped, not yet reported.
    dropped: Arc<AtomicU64>,
    /// The line being written, kept to reuse its allocation.
    line: String,
}

impl Relay {
    fn run(mut self) {
        while let Ok(message) = self.receiver.recv() {
            match message {
                Message::Line {
                    time,
                    level,
                    target,
                    text,
                } => {
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        self.write_line(
                            SystemTime::now(),
                            Level::Warn,
                            module_path!(),
                            format_args!(
                                "{dropped} log lines dropped: standard output was not keeping up"
                            ),
                        );
                    }
                    self.write_line(time, level, &target, format_args!("{text}"));
                }
                Message::Flush(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    /// Formats one line and writes it to standard output, if that still
    /// works.
    fn write_line(
        &mut self,
        time: SystemTime,
        level: Level,
        target: &str,
        message: fmt::Arguments<'_>,
    ) {
        let Some(output) = self.output.as_mut() else {
            return;
        };
        self.line.clear();
        // Writing into a `String` cannot fail.
        let _ = writeln!(self.line, "{} {level:<5} [{target}] {message}", Utc(time));
        // One `write` per line, retried after a partial write or EINTR.
        if output.write_all(self.line.as_bytes()).is_err() {
            // The reader is gone (EPIPE) or the descriptor is broken: no
            // one can be told. echod goes on serving; its log goes nowhere.
            self.output = None;
        }
    }
}

/// A time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC, milliseconds truncated.
struct Utc(SystemTime);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A clock set before 1970 is wrong; the epoch says so plainly.
        let since_epoch = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since_epoch.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let second_of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            since_epoch.subsec_millis()
        )
    }
}

/// The date (year, month 1 to 12, day 1 to 31) `days` after 1970-01-01, in
/// the proleptic Gregorian calendar.
///
/// Howard Hinnant's `civil_from_days` ("chrono-Compatible Low-Level Date
/// Algorithms"): count from 0000-03-01, so that the leap day is the last
/// day of a year, in 400-year eras of 146,097 days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 is March, 11 is February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> String {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
        Utc(time).to_string()
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        // Expected values from `date -u -d @SECS +%Y-%m-%dT%H:%M:%S.%3NZ`.
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 500, "2000-02-29T00:00:00.500Z"),
            (1_700_000_000, 123, "2023-11-14T22:13:20.123Z"),
            (1_735_689_599, 999, "2024-12-31T23:59:59.999Z"),
            (4_102_444_800, 0, "2100-01-01T00:00:00.000Z"),
        ];
        for (secs, millis, expected) in cases {
            assert_eq!(at(secs, millis), expected, "{secs}.{millis:03}");
        }
        // Truncated, not rounded.
        let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(999_999_999);
        assert_eq!(Utc(time).to_string(), "1970-01-01T00:00:00.999Z");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // From 1970 to 2400: each day is the next date, months have their
        // lengths and February 29 exists exactly in leap years.
        let mut previous = civil_from_days(0);
        assert_eq!(previous, (1970, 1, 1));
        for days in 1..157_000 {
            let (year, month, day) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let leap = py % 4 == 0 && (py % 100 != 0 || py % 400 == 0);
            let month_length = match pm {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if pd < month_length {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((year, month, day), expected, "day {days}");
            previous = (year, month, day);
        }
    }

    #[test]
    fn rust_log_takes_levels_and_target_levels() {
        use LevelFilter::{Debug, Info, Trace, Warn};
        let parsed = |spec| {
            let d = Directives::parse(spec);
            let targets: Vec<(String, LevelFilter)> = d.targets;
            (d.level, targets, d.ignored)
        };
        // RUST_LOG, then the level, the target levels and the ignored
        // directives it gives.
        type Case<'a> = (
            &'a str,
            Option<LevelFilter>,
            &'a [(&'a str, LevelFilter)],
            &'a [&'a str],
        );
        let cases: &[Case<'_>] = &[
            ("", None, &[], &[]),
            ("debug", Some(Debug), &[], &[]),
            ("WARN", Some(Warn), &[], &[]),
            ("echod=debug", None, &[("echod", Debug)], &[]),
            ("warn,echod=debug", Some(Warn), &[("echod", Debug)], &[]),
            (
                " info , echod::server=trace,mio=debug ",
                Some(Info),
                &[("echod::server", Trace), ("mio", Debug)],
                &[],
            ),
            // A later directive for the same target wins.
            ("echod=trace,echod=warn", None, &[("echod", Warn)], &[]),
            ("loud", None, &[], &["loud"]),
            ("echod", None, &[], &["echod"]),
            (
                "echod=loud,=debug,debug",
                Some(Debug),
                &[],
                &["echod=loud", "=debug"],
            ),
            (
                "warn,echod=debug/conn",
                Some(Warn),
                &[],
                &["echod=debug/conn"],
            ),
        ];
        for &(spec, level, targets, ignored) in cases {
            let targets: Vec<(String, LevelFilter)> =
                targets.iter().map(|&(t, l)| (t.to_owned(), l)).collect();
            let ignored: Vec<String> = ignored.iter().map(|&d| d.to_owned()).collect();
            assert_eq!(parsed(spec), (level, targets, ignored), "RUST_LOG={spec:?}");
        }
        assert_eq!(Directives::parse("warn,echod=debug").warning(), None);
        let warning = Directives::parse("loud,echod=x")
            .warning()
            .expect("a warning");
        assert!(
            warning.starts_with("RUST_LOG: ignoring 'loud', 'echod=x': expected LEVEL"),
            "{warning}"
        );
    }

    #[test]
    fn rust_log_target_levels_filter_by_target() {
        let enabled = |spec, level, target| {
            Directives::parse(spec)
                .filter()
                .enabled(&Metadata::builder().level(level).target(target).build())
        };
        assert!(enabled("echod=debug", Level::Debug, "echod::server"));
        assert!(!enabled("echod=debug", Level::Debug, "other"));
        assert!(enabled("echod=debug", Level::Info, "other"));
        assert!(!enabled("echod=debug", Level::Trace, "echod::connection"));
        assert!(!enabled("warn,echod=debug", Level::Info, "other"));
        assert!(!enabled("trace", Level::Info, "mio::poll"));
        assert!(enabled("trace,mio=debug", Level::Debug, "mio::poll"));
        assert_eq!(
            Directives::parse("warn,echod::server=trace")
                .filter()
                .max_level(),
            LevelFilter::Trace
        );
    }

    #[test]
    fn mio_shows_warnings_at_most() {
        let (sender, _receiver) = mpsc::sync_channel(1);
        let handoff = |level| Handoff {
            filter: SimpleLogger::new()
                .with_level(level)
                .with_module_level("mio", LevelFilter::Warn),
            sender: sender.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let enabled = |logger: &Handoff, level, target| {
            logger.enabled(&Metadata::builder().level(level).target(target).build())
        };
        let trace = handoff(LevelFilter::Trace);
        assert!(enabled(&trace, Level::Trace, "echod::server"));
        assert!(enabled(&trace, Level::Warn, "mio::poll"));
        assert!(!enabled(&trace, Level::Info, "mio::poll"));
        assert!(!enabled(&trace, Level::Debug, "mio"));
        let error = handoff(LevelFilter::Error);
        assert!(!enabled(&error, Level::Warn, "echod::server"));
        assert!(enabled(&error, Level::Error, "mio::poll"));
    }
}
