//! The control plane: what an event loop hears from outside its sockets,
//! and what it tells the world besides echoes.
//!
//! In: the signals an operator sends (see `request_for` for the table),
//! through a self-pipe the loop polls, and `ShutdownHandle::trigger`,
//! through a waker. Both become a `Request`; the loop decides what a
//! request means for what it runs. Out: systemd's READY, STATUS and
//! STOPPING (`Type=notify`), the `--stats-interval` line when it is due, a
//! worker's totals for its coordinator, and the log lines that remote peers
//! cause, within a budget (`admit_peer_line`).
//!
//! The budget for peer lines is the one piece of state here that is not a
//! loop's: it is the process's, like the log it protects. A close line, an
//! over-long-line warning or a rejection is written only while fewer than
//! `PEER_LINES_PER_SECOND` have been written in the current second of the
//! wall clock (the second the log's timestamps show), whichever loop writes
//! it; the rest are counted, and the count is logged once the second is
//! over (`report_held_back_lines`). With `--workers`, one budget serves all
//! the workers, so the log's rate does not grow with their number. Lines
//! about echod itself (listening, shutdown, the stats line, the summary)
//! never go through it.
//!
//! Two loops stand on this module and neither copies any of it: `Server`
//! (the single loop, or one worker of several) and the coordinator of
//! `--workers` in `workers.rs`, which serves no connection but answers to
//! the operator for all the workers. Read `Request` and `Control` first.
//!
//! Whether a loop takes the process's signals and talks to systemd is
//! process wiring, chosen by whoever starts the loop (`Wiring`), not a
//! setting: `main` wires the daemon's loop; a server embedded in another
//! program or a test (`Server::bind`) takes neither.
//!
//! This module keeps no connection and makes no decision about one. It
//! registers one source, the signal pipe, with the registry its loop hands
//! it (`Control::attach`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, info, log, log_enabled, warn};
use mio::{Interest, Registry, Token, Waker};
use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::summary::{Interval, Summary, counted};
use crate::systemd::Notifier;

/// A repeated warning is logged at most once per this interval; the ones in
/// between are counted and reported with the next.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Log lines caused by remote peers (closes, over-long lines, rejections,
/// failed accepts) written per second of the wall clock, in all, whatever
/// the number of workers; the rest are counted, and the count is logged
/// once the second is over. 100 a second keeps a flood of connections to
/// about 10 KiB of log a second (some 860 MiB a day at worst), while a
/// daemon serving a few clients a second still logs every one of them.
/// Not applied where `debug` is on: whoever asked for a line per event
/// gets every line.
pub const PEER_LINES_PER_SECOND: u64 = 100;

/// The signals echod takes, so that none of them ends it without a word;
/// `request_for` says what each one asks. SIGHUP, SIGUSR2 and SIGALRM kill
/// a process that does not take them, which is how closing the terminal
/// of `echod &` or a stray `kill -ALRM` used to stop echod silently.
pub const SIGNALS: [i32; 7] = [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM];

/// What the world outside a loop's sockets asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop: the first request starts a graceful shutdown, any later one
    /// stops at once. `why` opens the loop's log line ("SIGTERM received").
    Shutdown {
        /// What asked, as the log names it.
        why: &'static str,
    },
    /// Log the totals so far (SIGUSR1).
    Summary,
}

/// What a loop does once it has handled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a loop told to stop must stop"]
pub enum Flow {
    /// Go on turning.
    Continue,
    /// Return now, whatever is still open.
    Stop,
}

/// What a signal means to echod: a request for the loop, or nothing at
/// all, which `Control::signals` logs and drops so that no loop needs to
/// know such signals exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// A request for the loop.
    Ask(Request),
    /// Taken only so that its default action does not kill echod.
    Ignore {
        /// What arrived, as the log names it ("SIGHUP received").
        why: &'static str,
        /// Why it changes nothing, for the operator who sent it.
        because: &'static str,
    },
}

/// Process wiring: what a loop attaches to besides its sockets. Not a
/// setting, because it depends on who runs the loop, not on how: a signal
/// has one disposition per process, so only the process's own loop may
/// take it, and only a loop systemd started has anyone to notify.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    /// Take the signals in `SIGNALS`: SIGINT, SIGTERM and SIGQUIT
    /// (shutdown), SIGUSR1 (summary), SIGHUP, SIGUSR2 and SIGALRM (logged
    /// and ignored).
    pub signals: bool,
    /// Send `sd_notify` messages; they go nowhere unless `NOTIFY_SOCKET`
    /// is set (see `systemd`).
    pub service_manager: bool,
}

impl Wiring {
    /// The daemon's wiring, which `main` uses: signals and systemd.
    pub const DAEMON: Wiring = Wiring {
        signals: true,
        service_manager: true,
    };
    /// A loop embedded in another program, or a test: neither.
    pub const EMBEDDED: Wiring = Wiring {
        signals: false,
        service_manager: false,
    };
}

/// What makes a server one of several `--workers`: its number, for the log,
/// and where it publishes its totals for the coordinator to add up.
#[derive(Debug, Clone)]
pub struct Worker {
    /// 1 to N, as the log shows it.
    pub number: usize,
    /// Overwritten with this worker's `Summary` from every housekeeping run
    /// (once a second) and at exit.
    pub report: Arc<Mutex<Summary>>,
}

/// Stops a running server from another thread, as SIGTERM would.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    /// Requests made through every handle of this server; it only grows.
    requested: Arc<AtomicUsize>,
    /// Wakes the server's poll, which then reads `requested`.
    waker: Arc<Waker>,
}

/// The server's end of its shutdown handles: how many requests were made,
/// and how many the loop has taken.
#[derive(Debug)]
pub struct ShutdownRequests {
    /// Shared with every `ShutdownHandle`; counts `trigger` calls.
    requested: Arc<AtomicUsize>,
    /// How many of `requested` have become a `Request`; never more than
    /// `requested` held when last read.
    taken: usize,
    /// The waker registered with the server's poll.
    waker: Arc<Waker>,
}

/// One loop's control plane. Each part is optional, so the same type
/// serves the daemon's loop, an embedded server, a worker, and the workers'
/// coordinator.
pub struct Control {
    /// Prefix of the loop's lifecycle log lines: empty, or "worker N: ".
    label: String,
    /// The log target of the lines written here: the module of the loop
    /// they speak for (`echod::server`, `echod::workers`), which is where an
    /// operator filtering the log looks for them. Set by `attach`.
    target: &'static str,
    /// The signals in `SIGNALS`, queued in a self-pipe; `Some` only if
    /// wired for signals, and registered with the loop's poll by `attach`.
    signals: Option<Signals>,
    /// `Some` only if wired to the service manager.
    notifier: Option<Notifier>,
    /// `Some` if `--stats-interval` is set and this loop reports to the
    /// operator (a worker does not: its coordinator adds up the workers).
    stats: Option<Cadence>,
    /// `Some` if this loop is a worker: where its totals go.
    worker: Option<Worker>,
    /// Connections closed at once because `max-connections` was reached.
    rejections: Throttled,
    /// `accept` failures for want of descriptors.
    accept_failures: Throttled,
}

/// When the next `--stats-interval` line is due, and what the last one said.
#[derive(Debug)]
struct Cadence {
    /// Time between lines; never zero (`--stats-interval 0` means no lines).
    interval: Duration,
    /// When the next line is due: one interval after the last was due, so
    /// that a late turn does not make the lines drift.
    next: Instant,
    /// The summary the previous line reported (or zeros, at start), and
    /// when it was taken: rates are measured from there.
    before: (Summary, Instant),
}

/// The process's budget of peer lines for the current second of the wall
/// clock; see the module docs. Behind `PEER_LINES`.
#[derive(Debug)]
struct PeerLines {
    /// The second of the wall clock, counted from the Unix epoch, that
    /// `written` counts in.
    second: u64,
    /// Peer lines written in `second`; never more than
    /// `PEER_LINES_PER_SECOND`.
    written: u64,
    /// Peer lines counted instead of written since the last report; all in
    /// `second` or a second before it.
    held_back: u64,
    /// The most severe level among the `held_back` lines, and the level of
    /// their report: a count of held-back warnings still shows under `-q`.
    /// `Trace` while nothing is held back.
    held_back_level: Level,
}

/// The one budget of peer lines, shared by every event loop of the
/// process, because the log they fill is one.
static PEER_LINES: Mutex<PeerLines> = Mutex::new(PeerLines::new());

/// The target of the held-back report: `echod::server`, where the lines it
/// counts (closes, over-long lines, rejections) are written.
const PEER_LINES_TARGET: &str = "echod::server";

/// A warning that may fire thousands of times a second.
#[derive(Debug, Default)]
struct Throttled {
    /// When it was last logged; `None` before the first occurrence.
    last_logged: Option<Instant>,
    /// Occurrences since then that were counted instead of logged.
    suppressed: u64,
}

impl ShutdownHandle {
    /// Asks the server to stop: the first call is a graceful shutdown, a
    /// second one stops it at once, however close together the two are.
    pub fn trigger(&self) {
        // Counted before the wake-up, because the wake-up alone cannot
        // count: mio's waker is an eventfd, and wake-ups made before the loop
        // polls arrive as one event. The event says "look"; the count says
        // how many requests there were.
        self.requested.fetch_add(1, Ordering::SeqCst);
        // Writing to the eventfd fails only if the server's poll instance
        // is already gone, which is the outcome the caller wanted.
        let _ = self.waker.wake();
    }
}

impl ShutdownRequests {
    /// The requests made through handles that wake `waker`, which the loop
    /// has registered at a token of its own.
    pub fn new(waker: Waker) -> ShutdownRequests {
        ShutdownRequests {
            requested: Arc::new(AtomicUsize::new(0)),
            taken: 0,
            waker: Arc::new(waker),
        }
    }

    /// A handle that any thread may trigger.
    pub fn handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::clone(&self.requested),
            waker: Arc::clone(&self.waker),
        }
    }

    /// On the waker's event: one `Request::Shutdown` for each `trigger`
    /// since the last call. None at all is normal: the loop may already
    /// have taken a request whose wake-up arrives now.
    pub fn take(&mut self) -> std::iter::RepeatN<Request> {
        let requested = self.requested.load(Ordering::SeqCst);
        let new = requested.wrapping_sub(self.taken);
        self.taken = requested;
        std::iter::repeat_n(
            Request::Shutdown {
                why: "shutdown requested",
            },
            new,
        )
    }
}

impl Control {
    /// The control plane of a loop that answers to the operator: the
    /// single loop, or the workers' coordinator. `wiring` says whether it
    /// takes signals and notifies systemd; `stats_interval` is the
    /// `--stats-interval` setting, whose cadence starts now.
    ///
    /// # Errors
    ///
    /// If the signal handlers cannot be installed.
    pub fn new(wiring: Wiring, stats_interval: Option<Duration>) -> io::Result<Control> {
        let signals = if wiring.signals {
            Some(Signals::new(SIGNALS)?)
        } else {
            None
        };
        let now = Instant::now();
        Ok(Control {
            signals,
            notifier: wiring.service_manager.then(Notifier::default),
            stats: stats_interval.map(|interval| Cadence::new(interval, now)),
            ..Control::quiet(String::new(), None)
        })
    }

    /// The control plane of worker `worker.number`: its log lines say
    /// which worker, and its totals go to `worker.report`. Signals, stats
    /// and systemd are the coordinator's business.
    pub fn for_worker(worker: Worker) -> Control {
        Control::quiet(format!("worker {}: ", worker.number), Some(worker))
    }

    fn quiet(label: String, worker: Option<Worker>) -> Control {
        Control {
            label,
            target: module_path!(),
            signals: None,
            notifier: None,
            stats: None,
            worker,
            rejections: Throttled::default(),
            accept_failures: Throttled::default(),
        }
    }

    /// Attaches this control plane to a loop: registers the signal pipe,
    /// if any, with the loop's `registry` at `token`, and writes the lines
    /// below under `target`, the loop's module (`module_path!()`).
    ///
    /// # Errors
    ///
    /// If the signal pipe cannot be registered.
    pub fn attach(
        &mut self,
        registry: &Registry,
        token: Token,
        target: &'static str,
    ) -> io::Result<()> {
        self.target = target;
        if let Some(signals) = self.signals.as_mut() {
            registry.register(signals, token, Interest::READABLE)?;
        }
        Ok(())
    }

    /// Prefix for the loop's lifecycle log lines: empty, or "worker N: ".
    pub fn label(&self) -> &str {
        &self.label
    }

    /// On the signal pipe's event: the requests the signals that arrived
    /// make, in order. Empty if there were none (a spurious event). A
    /// signal that asks for nothing (SIGHUP, SIGUSR2, SIGALRM) is logged
    /// here, with why it changes nothing, and makes no request.
    pub fn signals(&mut self) -> Vec<Request> {
        let Some(signals) = self.signals.as_mut() else {
            return Vec::new();
        };
        let mut requests = Vec::new();
        for signal in signals.pending() {
            match meaning(signal) {
                Some(Meaning::Ask(request)) => requests.push(request),
                Some(Meaning::Ignore { why, because }) => {
                    info!(target: self.target, "{}{why}: ignored ({because})", self.label);
                }
                None => {}
            }
        }
        requests
    }

    /// READY=1 with a first STATUS: the loop is listening and about to
    /// serve.
    pub fn ready(&mut self, summary: &Summary) {
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.ready(&status(summary));
        }
    }

    /// STATUS, if it changed; the loop calls this about once a second.
    pub fn status(&mut self, summary: &Summary) {
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.status(&status(summary));
        }
    }

    /// STOPPING=1: a graceful shutdown has begun, with owed echoes to
    /// deliver to `open_connections` connections.
    pub fn stopping(&mut self, open_connections: usize) {
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.stopping(&format!(
                "stopping: delivering owed echoes to {}",
                counted(open_connections, "connection")
            ));
        }
    }

    /// When the next stats line is due, for the loop's poll timeout.
    pub fn next_stats(&self) -> Option<Instant> {
        self.stats.as_ref().map(|cadence| cadence.next)
    }

    /// Whether a stats line is due at `now`. The loop then takes a
    /// summary and passes it to `log_stats`, so that no summary is taken
    /// for nothing.
    pub fn stats_due(&self, now: Instant) -> bool {
        self.next_stats().is_some_and(|due| now >= due)
    }

    /// Logs the stats line: `summary`, taken at `now`, and the rates since
    /// the previous line.
    pub fn log_stats(&mut self, now: Instant, summary: Summary) {
        if let Some(cadence) = self.stats.as_mut() {
            let line = cadence.line(now, summary);
            info!(target: self.target, "stats: {line}");
        }
    }

    /// Publishes the loop's totals for the coordinator, if it is a worker;
    /// `summary` is called only then. Once a second and at exit, so the
    /// lock is never contended for long.
    pub fn publish(&self, summary: impl FnOnce() -> Summary) {
        if let Some(worker) = &self.worker {
            let summary = summary();
            // A poisoned lock means the coordinating thread panicked; the
            // totals then have no reader, and serving goes on.
            if let Ok(mut report) = worker.report.lock() {
                *report = summary;
            }
        }
    }

    /// A connection from `peer` was closed at once: `max_connections`
    /// were open.
    pub fn rejected(&mut self, now: Instant, peer: SocketAddr, max_connections: usize) {
        let Some(suppressed) = self.rejections.hit(now) else {
            return;
        };
        if admit_peer_line(Level::Warn, self.target) {
            warn!(
                target: self.target,
                "max-connections ({max_connections}) reached: closed a new connection from {peer} \
                 ({suppressed} more rejected since the last warning)"
            );
        }
    }

    /// `accept` failed with `err` for want of descriptors, and accepting
    /// pauses.
    pub fn accept_failed(&mut self, now: Instant, err: &io::Error) {
        let Some(suppressed) = self.accept_failures.hit(now) else {
            return;
        };
        if admit_peer_line(Level::Warn, self.target) {
            warn!(
                target: self.target,
                "accept failed: {err}; pausing new connections until descriptors free up \
                 ({} more since the last warning)",
                counted(suppressed, "failure")
            );
        }
    }

    /// Reports the warnings held back once their interval has passed, so
    /// that the last burst of a flood is reported too, and the peer lines
    /// held back in the last second (`report_held_back_lines`). Once a
    /// second. These
    /// counts are not peer lines (at most one of each per `WARN_INTERVAL`),
    /// so the peer-line budget does not hold them back.
    pub fn overdue_warnings(&mut self, now: Instant, max_connections: usize) {
        // The peer-line count of the second just over, if no peer line
        // since has reported it.
        report_held_back_lines(false);
        if let Some(suppressed) = self.rejections.overdue(now) {
            warn!(
                target: self.target,
                "max-connections ({max_connections}): {} more rejected",
                counted(suppressed, "connection")
            );
        }
        if let Some(suppressed) = self.accept_failures.overdue(now) {
            warn!(
                target: self.target,
                "accept: {} more for want of descriptors",
                counted(suppressed, "failure")
            );
        }
    }
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("label", &self.label)
            .field("signals", &self.signals.is_some())
            .field("notifier", &self.notifier)
            .field("stats", &self.stats)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl Cadence {
    fn new(interval: Duration, start: Instant) -> Cadence {
        Cadence {
            interval,
            next: start + interval,
            before: (Summary::default(), start),
        }
    }

    /// The line for `summary`, taken at `now`, and the next due time.
    fn line(&mut self, now: Instant, summary: Summary) -> String {
        // From the time due, not from now, so that a late turn does not make
        // the lines drift; after a stall longer than the interval, from now.
        let due = self.next + self.interval;
        self.next = if due > now { due } else { now + self.interval };
        let (before, taken) = &self.before;
        let line = Interval {
            before,
            now: &summary,
            elapsed: now.saturating_duration_since(*taken),
        }
        .to_string();
        self.before = (summary, now);
        line
    }
}

/// Whether a line at `level` under `target`, caused by a remote peer (a
/// close, an over-long line, a rejection, a failed accept), may be written
/// now; the caller writes it only then.
///
/// `false`, at no cost, if `level` is off for `target`: the line would not
/// appear anyway. `true`, without counting, if `debug` is on for `target`:
/// whoever asked for a line per event gets every one. Otherwise, `true`
/// while this second of the wall clock has had fewer than
/// `PEER_LINES_PER_SECOND` peer lines; past that, the line is counted for
/// the held-back report and `false` is returned. A count from an earlier
/// second is reported first.
pub fn admit_peer_line(level: Level, target: &str) -> bool {
    if !log_enabled!(target: target, level) {
        return false;
    }
    if log_enabled!(target: target, Level::Debug) {
        return true;
    }
    let second = wall_second(SystemTime::now());
    // A poisoned lock means a loop panicked while holding it, between two
    // additions; the counts are still whole numbers, so go on with them.
    let mut lines = PEER_LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let report = lines.report(second, false);
    let admitted = lines.admit(second, level);
    // Logged once the lock is released: the logger may take a while, and
    // the other workers wait for the lock.
    drop(lines);
    log_held_back(report);
    admitted
}

/// Logs how many peer lines were held back, if any, once the second they
/// were counted in is over; with `force`, at once (a loop that stops
/// reports what it held back before its last line). Each loop calls this
/// from its once-a-second housekeeping, so that the count of a burst's
/// last second is logged even if no peer line follows.
pub fn report_held_back_lines(force: bool) {
    let second = wall_second(SystemTime::now());
    let report = PEER_LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .report(second, force);
    log_held_back(report);
}

fn log_held_back(report: Option<(u64, Level)>) {
    if let Some((held_back, level)) = report {
        log!(
            target: PEER_LINES_TARGET,
            level,
            "{} about connections held back in the last second \
             (at most {PEER_LINES_PER_SECOND} a second are logged)",
            counted(held_back, "line")
        );
    }
}

/// Whole seconds from the Unix epoch to `time`, as the log's timestamps
/// count them; 0 for a clock set before 1970.
fn wall_second(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl PeerLines {
    const fn new() -> PeerLines {
        PeerLines {
            second: 0,
            written: 0,
            held_back: 0,
            held_back_level: Level::Trace,
        }
    }

    /// Counts one peer line at `level` in `second`: `true` if it is within
    /// the second's budget and is to be written, `false` if it is held
    /// back. A clock stepped backwards starts a new budget, as any change
    /// of second does: at most one extra second's worth per step.
    fn admit(&mut self, second: u64, level: Level) -> bool {
        if second != self.second {
            self.second = second;
            self.written = 0;
        }
        if self.written < PEER_LINES_PER_SECOND {
            self.written += 1;
            return true;
        }
        self.held_back += 1;
        // `Level` orders the most severe first: `Error < Warn`.
        self.held_back_level = self.held_back_level.min(level);
        false
    }

    /// The count held back and its level, taken (so reported once), if
    /// any and the second it was counted in is no longer `second`; with
    /// `force`, whatever the second.
    fn report(&mut self, second: u64, force: bool) -> Option<(u64, Level)> {
        if self.held_back == 0 || (second == self.second && !force) {
            return None;
        }
        let level = std::mem::replace(&mut self.held_back_level, Level::Trace);
        Some((std::mem::take(&mut self.held_back), level))
    }
}

impl Throttled {
    /// Counts one occurrence. Returns `Some(n)` if it should be logged now,
    /// `n` being how many were held back since the last one logged.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last_logged {
            Some(at) if now.saturating_duration_since(at) < WARN_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Returns the count held back, if any, once the interval has passed.
    fn overdue(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_logged
            .is_some_and(|at| now.saturating_duration_since(at) >= WARN_INTERVAL);
        if self.suppressed == 0 || !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// What a signal means; `None` for one echod did not subscribe to.
///
/// | Signal | Meaning |
/// |---|---|
/// | SIGINT, SIGTERM | shutdown: graceful, or at once if one is under way |
/// | SIGQUIT | the same: nginx stops gracefully on it, and after a `Ctrl-C` a `Ctrl-\` (the terminal's SIGQUIT) is a second request, so it stops at once |
/// | SIGUSR1 | log the summary |
/// | SIGHUP | ignored: no configuration to reload, and the terminal of `echod &` closing must not stop it |
/// | SIGUSR2, SIGALRM | ignored: nothing to do, but their default would kill echod |
fn meaning(signal: i32) -> Option<Meaning> {
    let shutdown = |why| Some(Meaning::Ask(Request::Shutdown { why }));
    let ignore = |why, because| Some(Meaning::Ignore { why, because });
    match signal {
        SIGINT => shutdown("SIGINT received"),
        SIGTERM => shutdown("SIGTERM received"),
        SIGQUIT => shutdown("SIGQUIT received"),
        SIGUSR1 => Some(Meaning::Ask(Request::Summary)),
        SIGHUP => ignore(
            "SIGHUP received",
            "echod has no configuration to reload; SIGTERM stops it",
        ),
        SIGUSR2 => ignore("SIGUSR2 received", "SIGUSR1 logs a summary"),
        SIGALRM => ignore("SIGALRM received", "echod sets no alarm"),
        _ => None,
    }
}

/// The STATUS line systemd shows for the service (`systemctl status`).
fn status(summary: &Summary) -> String {
    format!(
        "{} open, {} served, {} rejected",
        counted(summary.open_connections, "connection"),
        summary.accepted,
        summary.rejected
    )
}

#[cfg(test)]
mod tests {
    use mio::Poll;

    use super::*;

    #[test]
    fn two_triggers_before_the_loop_looks_are_two_requests() {
        let poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("waker");
        let mut requests = ShutdownRequests::new(waker);
        let handle = requests.handle();
        handle.trigger();
        handle.clone().trigger();
        let shutdown = Request::Shutdown {
            why: "shutdown requested",
        };
        assert_eq!(requests.take().collect::<Vec<_>>(), [shutdown, shutdown]);
        // The second wake-up's event, if it comes, finds nothing new.
        assert_eq!(requests.take().count(), 0);
        handle.trigger();
        assert_eq!(requests.take().collect::<Vec<_>>(), [shutdown]);
    }

    #[test]
    fn signals_become_requests() {
        let cases = [
            (SIGINT, "SIGINT received"),
            (SIGTERM, "SIGTERM received"),
            (SIGQUIT, "SIGQUIT received"),
        ];
        for (signal, why) in cases {
            let expected = Meaning::Ask(Request::Shutdown { why });
            assert_eq!(meaning(signal), Some(expected), "signal {signal}");
        }
        assert_eq!(meaning(SIGUSR1), Some(Meaning::Ask(Request::Summary)));
        for (signal, name) in [
            (SIGHUP, "SIGHUP"),
            (SIGUSR2, "SIGUSR2"),
            (SIGALRM, "SIGALRM"),
        ] {
            let meant = meaning(signal);
            assert!(
                matches!(meant, Some(Meaning::Ignore { why, .. }) if why == format!("{name} received")),
                "{name}: {meant:?}"
            );
        }
        // Every signal taken means something: none is taken for nothing.
        for signal in SIGNALS {
            assert!(meaning(signal).is_some(), "signal {signal}");
        }
        assert_eq!(meaning(signal_hook::consts::SIGWINCH), None);
    }

    #[test]
    fn peer_lines_are_budgeted_per_second_and_the_rest_counted() {
        let mut lines = PeerLines::new();
        let second = 1_700_000_000;
        for i in 0..PEER_LINES_PER_SECOND {
            assert!(lines.admit(second, Level::Info), "line {i}");
        }
        assert!(!lines.admit(second, Level::Info));
        assert!(!lines.admit(second, Level::Warn));
        // Not reported while the second lasts, unless forced.
        assert_eq!(lines.report(second, false), None);
        // The next second reports the count, at its most severe level,
        // once, and has a budget of its own.
        assert_eq!(lines.report(second + 1, false), Some((2, Level::Warn)));
        assert_eq!(lines.report(second + 1, false), None);
        assert!(lines.admit(second + 1, Level::Info));
        // A clock stepped back starts a budget too.
        assert!(lines.admit(second - 5, Level::Info));
        assert_eq!(lines.written, 1);
        // Forced (at exit): reported within the second.
        for _ in 0..PEER_LINES_PER_SECOND {
            lines.admit(second - 5, Level::Info);
        }
        assert_eq!(lines.report(second - 5, false), None);
        assert_eq!(lines.report(second - 5, true), Some((1, Level::Info)));
    }

    #[test]
    fn stats_lines_keep_their_cadence_unless_a_turn_stalls() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut cadence = Cadence::new(second, start);
        assert_eq!(cadence.next, start + second);
        // Late by a fraction: the next line is still due on the beat.
        cadence.line(start + second + second / 4, Summary::default());
        assert_eq!(cadence.next, start + 2 * second);
        // Late by more than an interval: counted from now instead.
        let stalled = start + 5 * second;
        cadence.line(stalled, Summary::default());
        assert_eq!(cadence.next, stalled + second);
        assert_eq!(cadence.before.1, stalled);
    }

    #[test]
    fn status_counts_open_served_and_rejected() {
        let summary = Summary {
            open_connections: 3,
            accepted: 10,
            rejected: 2,
            ..Summary::default()
        };
        assert_eq!(
            status(&summary),
            "3 connections open, 10 served, 2 rejected"
        );
        let one = Summary {
            open_connections: 1,
            ..summary
        };
        assert_eq!(status(&one), "1 connection open, 10 served, 2 rejected");
    }

    #[test]
    fn throttled_logs_first_then_counts() {
        let start = Instant::now();
        let mut warning = Throttled::default();
        assert_eq!(warning.hit(start), Some(0));
        assert_eq!(warning.hit(start + Duration::from_secs(1)), None);
        assert_eq!(warning.hit(start + Duration::from_secs(2)), None);
        assert_eq!(warning.overdue(start + Duration::from_secs(5)), None);
        assert_eq!(warning.overdue(start + WARN_INTERVAL), Some(2));
        assert_eq!(warning.overdue(start + 3 * WARN_INTERVAL), None);
        assert_eq!(warning.hit(start + 3 * WARN_INTERVAL), Some(0));
    }

    #[test]
    fn a_worker_publishes_and_takes_no_summary_otherwise() {
        let report = Arc::new(Mutex::new(Summary::default()));
        let worker = Control::for_worker(Worker {
            number: 2,
            report: Arc::clone(&report),
        });
        assert_eq!(worker.label(), "worker 2: ");
        let totals = Summary {
            accepted: 7,
            ..Summary::default()
        };
        worker.publish(|| totals);
        assert_eq!(*report.lock().expect("not poisoned"), totals);
        let single = Control::new(Wiring::EMBEDDED, None).expect("no signals to install");
        single.publish(|| unreachable!("only a worker takes a summary to publish"));
    }
}
