//! The main thread's part with `--workers N`: it serves no connection, but
//! answers to the operator for all the workers. It takes the signals and
//! forwards a shutdown to every worker, adds up what they publish for
//! SIGUSR1, the stats line and systemd's STATUS, and joins them at the end.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Poll, Token, Waker};

use super::RunError;
use crate::control::{Control, Request, ShutdownHandle};
use crate::summary::Summary;

/// The coordinator's tokens: signals, and a worker that has returned.
const SIGNALS: Token = Token(0);
const WORKER_DONE: Token = Token(1);

/// How often the coordinator refreshes systemd's STATUS: as often as the
/// workers publish their totals.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The main thread's part with several workers.
pub(super) struct Coordinator {
    /// Polls the signal pipe and `done`, and nothing else.
    poll: Poll,
    /// Signals, the stats line and systemd, as for a single loop; its
    /// signal pipe, if any, is registered at `SIGNALS`.
    control: Control,
    /// Woken by each worker thread as it returns; registered at
    /// `WORKER_DONE`.
    pub(super) done: Arc<Waker>,
    /// Workers whose loop has returned; at most `threads.len()`.
    pub(super) returned: Arc<AtomicUsize>,
    /// Worker `i`'s shutdown handle, at index `i - 1`.
    pub(super) shutdowns: Vec<ShutdownHandle>,
    /// Where worker `i` publishes its totals, at index `i - 1`.
    pub(super) reports: Vec<Arc<Mutex<Summary>>>,
    /// Every worker thread started, until `join_all` waits for them.
    pub(super) threads: Vec<JoinHandle<io::Result<Summary>>>,
    /// Set once the workers have been asked to stop, and never unset.
    stopping: bool,
}

impl Coordinator {
    pub(super) fn new(mut control: Control) -> io::Result<Coordinator> {
        let poll = Poll::new()?;
        let done = Arc::new(Waker::new(poll.registry(), WORKER_DONE)?);
        control.attach(poll.registry(), SIGNALS, module_path!())?;
        Ok(Coordinator {
            poll,
            control,
            done,
            returned: Arc::new(AtomicUsize::new(0)),
            shutdowns: Vec::new(),
            reports: Vec::new(),
            threads: Vec::new(),
            stopping: false,
        })
    }

    /// Waits for signals, worker exits and timers until every worker has
    /// returned; then adds up their totals.
    pub(super) fn run(mut self) -> Result<Summary, RunError> {
        let mut events = Events::with_capacity(16);
        let mut next_status = Instant::now() + STATUS_INTERVAL;
        self.control.ready(&Summary::default());
        loop {
            let deadline = self
                .control
                .next_stats()
                .map_or(next_status, |due| due.min(next_status));
            let timeout = deadline.saturating_duration_since(Instant::now());
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    // Without its poll instance the coordinator cannot hear
                    // signals; stop the workers rather than run unattended.
                    error!("coordinator: poll failed: {err}; stopping every worker");
                    // Twice: at once, since no second signal could be heard.
                    self.stop_all();
                    self.stop_all();
                    let _ = self.join_all();
                    return Err(RunError::Loop(err));
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == SIGNALS {
                    let requests = self.control.signals();
                    self.handle_requests(requests);
                }
            }
            let finished = self.returned.load(Ordering::SeqCst);
            if finished == self.threads.len() {
                return self.join_all();
            }
            if finished > 0 && !self.stopping {
                // A worker returned without being asked: its loop failed
                // (it has logged why). Serving on with fewer workers would
                // hide that; stop the rest, and exit with the failure.
                error!("a worker stopped unexpectedly; stopping the others");
                self.stopping = true;
                self.stop_all();
            }
            if now >= next_status {
                next_status = now + STATUS_INTERVAL;
                let total = self.total();
                self.control.status(&total);
            }
            if self.control.stats_due(now) {
                let total = self.total();
                self.control.log_stats(now, total);
            }
        }
    }

    /// Acts on requests from signals: a shutdown goes to every worker (each
    /// takes a second one as "stop at once"); a summary is the workers'
    /// totals as they last published them.
    fn handle_requests(&mut self, requests: Vec<Request>) {
        for request in requests {
            let why = match request {
                Request::Shutdown { why } => why,
                Request::Summary => {
                    info!("summary (as of the last second): {}", self.total());
                    continue;
                }
                Request::Upgrade => {
                    warn!(
                        "SIGUSR2 received: not upgrading: upgrading in place is not \
                         supported with --workers (restart with socket activation instead)"
                    );
                    continue;
                }
                Request::UpgradeChecked => continue,
            };
            if self.stopping {
                warn!("{why} again: stopping every worker at once");
            } else {
                info!("{why}: stopping {} workers", self.threads.len());
                let open = self.total().open_connections;
                self.control.stopping(open);
            }
            self.stopping = true;
            self.stop_all();
        }
    }

    /// Asks every worker to stop; a second call stops them at once.
    pub(super) fn stop_all(&self) {
        for shutdown in &self.shutdowns {
            shutdown.trigger();
        }
    }

    /// The workers' totals as they last published them.
    fn total(&self) -> Summary {
        let mut total = Summary::default();
        for report in &self.reports {
            if let Ok(report) = report.lock() {
                total += *report;
            }
        }
        total
    }

    /// Waits for every worker and adds up their totals. The first failure
    /// is the outcome, once all have returned.
    pub(super) fn join_all(self) -> Result<Summary, RunError> {
        let n_workers = self.threads.len();
        let mut total = Summary::default();
        let mut failure = None;
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(summary)) => total += summary,
                Ok(Err(err)) => {
                    failure.get_or_insert(err);
                }
                Err(_) => {
                    failure.get_or_insert(io::Error::other("a worker thread panicked"));
                }
            }
        }
        if let Some(err) = failure {
            return Err(RunError::Loop(err));
        }
        info!("all {n_workers} workers stopped: {total}");
        Ok(total)
    }
}
