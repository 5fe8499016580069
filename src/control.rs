//! The control plane: what an event loop hears from outside its sockets,
//! and what it tells the world besides echoes.
//!
//! In: the signals an operator sends (see `meaning` for the table),
//! through a self-pipe the loop polls, and `ShutdownHandle::trigger`,
//! through a waker. Both become a `Request`; the loop decides what a
//! request means for what it runs. Out: systemd's READY, STATUS and
//! STOPPING (`Type=notify`), the `--stats-interval` line when it is due, a
//! worker's totals for its coordinator, and the log lines that remote peers
//! cause, within a budget (`log_budget`, a room of its own; the stats
//! line's beat is `cadence`'s). The handle that
//! stops a loop from another thread is `shutdown`, a room of its own too.
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{Level, info, warn};
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::summary::{Summary, counted};
use crate::systemd::Notifier;

mod cadence;
mod log_budget;
mod shutdown;

pub use log_budget::{
    PEER_LINES_PER_SECOND, WARN_INTERVAL, admit_peer_line, report_held_back_lines,
};

pub use shutdown::{ShutdownHandle, ShutdownRequests};

use cadence::Cadence;
use log_budget::Throttled;

/// The signals echod takes, so that none of them ends it without a word;
/// `meaning` says what each one asks. SIGHUP, SIGUSR2 and SIGALRM kill
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
    /// Upgrade in place (SIGUSR2): check the program file as it is on disk
    /// now, then re-execute it with every socket (`upgrade.rs`).
    Upgrade,
    /// The check an `Upgrade` started has an answer: go on with the
    /// upgrade, or log why not.
    UpgradeChecked,
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
    /// (shutdown), SIGUSR1 (summary), SIGUSR2 (upgrade), SIGHUP and
    /// SIGALRM (logged and ignored).
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
    /// signal that asks for nothing (SIGHUP, SIGALRM) is logged
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

    /// RELOADING=1: an upgrade in place is about to re-execute the program;
    /// the new program's READY=1 (or this one's, if it failed) ends it.
    pub fn reloading(&mut self) {
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.reloading();
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

/// What a signal means; `None` for one echod did not subscribe to.
///
/// | Signal | Meaning |
/// |---|---|
/// | SIGINT, SIGTERM | shutdown: graceful, or at once if one is under way |
/// | SIGQUIT | the same: nginx stops gracefully on it, and after a `Ctrl-C` a `Ctrl-\` (the terminal's SIGQUIT) is a second request, so it stops at once |
/// | SIGUSR1 | log the summary |
/// | SIGHUP | ignored: no configuration to reload, and the terminal of `echod &` closing must not stop it |
/// | SIGUSR2 | upgrade in place: re-execute the program file with every socket |
/// | SIGALRM | ignored: nothing to do, but its default would kill echod |
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
        SIGUSR2 => Some(Meaning::Ask(Request::Upgrade)),
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
    use mio::{Poll, Waker};

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
        assert_eq!(meaning(SIGUSR2), Some(Meaning::Ask(Request::Upgrade)));
        for (signal, name) in [(SIGHUP, "SIGHUP"), (SIGALRM, "SIGALRM")] {
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
