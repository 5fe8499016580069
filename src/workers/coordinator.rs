//! The main thread's part with `--workers N`: it serves no connection, but
//! answers to the operator for all the workers. It takes the signals and
//! forwards a shutdown to every worker, adds up what they publish for
//! SIGUSR1, the stats line and systemd's STATUS, and joins them at the end.
//!
//! SIGUSR2 upgrades in place as with one loop (`upgrade.rs`), with the
//! coordinator in the single loop's place: it checks the new program, then
//! orders every worker to hand over its part between two of its events
//! (`upgrade::HandOverOrder`). Each worker sends its listeners, connections
//! and totals, with its descriptors kept open across `execve`, and waits;
//! the coordinator merges the parts (`workers/handover.rs`) and
//! re-executes the program, which ends every thread at once. If any step
//! fails, the coordinator drops its ends of the orders, and every worker
//! serves on as before: none closed or deregistered anything.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Poll, Token, Waker};

use super::RunError;
use crate::control::{Control, Request, ShutdownHandle};
use crate::summary::{Summary, counted};
use crate::upgrade::{self, Check, HAND_OVER_TIMEOUT, HandOverOrder, UpgradeError};

/// The coordinator's tokens: signals, and its waker (mio allows one per
/// poll instance), woken when a worker has returned or the check of a new
/// program has answered.
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
    /// Woken by each worker thread as it returns, and by the thread
    /// checking a new program once it has answered; registered at
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
    /// The check of the new program, while an upgrade waits for it.
    upgrade: Option<Check>,
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
            upgrade: None,
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
            if self.upgrade.as_mut().is_some_and(Check::answered) {
                self.finish_upgrade();
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
                    self.begin_upgrade();
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

    /// SIGUSR2: starts checking the program file, unless an upgrade is
    /// under way or the workers are stopping. They serve on meanwhile.
    fn begin_upgrade(&mut self) {
        let refuse = |why: &str| warn!("SIGUSR2 received: not upgrading: {why}");
        if self.stopping {
            return refuse("a shutdown is under way");
        }
        if self.upgrade.is_some() {
            return refuse("an upgrade is already under way");
        }
        let Some(program) = upgrade::program() else {
            return refuse("this process was not started as a program that can be run again");
        };
        let done = Arc::clone(&self.done);
        match Check::start(program, move || {
            let _ = done.wake();
        }) {
            Ok(check) => {
                info!(
                    "SIGUSR2 received: upgrading in place: checking {}",
                    program.path.display()
                );
                self.upgrade = Some(check);
            }
            Err(err) => refuse(&err.to_string()),
        }
    }

    /// The check has answered: re-executes the new program with every
    /// worker's listeners and connections, or logs why not while every
    /// worker serves on. Returns only if the upgrade did not happen.
    fn finish_upgrade(&mut self) {
        let Some(mut check) = self.upgrade.take() else {
            return;
        };
        let outcome: Result<(), UpgradeError> = check.outcome().and_then(|()| {
            if self.stopping {
                return Err(UpgradeError::Unsupported("a shutdown began meanwhile"));
            }
            let program =
                upgrade::program().ok_or(UpgradeError::Unsupported("no program to run again"))?;
            Err(self.re_execute(program, check.started))
        });
        if let Err(err) = outcome {
            warn!("upgrade failed: {err}; serving on with every connection and listener");
            let total = self.total();
            self.control.ready(&total);
        }
    }

    /// Gathers every worker's part and re-executes `program` with them.
    /// Returns only if that failed; the workers then serve on, since the
    /// ends of their orders are dropped on return.
    fn re_execute(&mut self, program: &upgrade::Program, since: Instant) -> UpgradeError {
        let mut parts = Vec::with_capacity(self.shutdowns.len());
        let mut resumes = Vec::with_capacity(self.shutdowns.len());
        let mut answers = Vec::with_capacity(self.shutdowns.len());
        for worker in &self.shutdowns {
            let (part, answer) = mpsc::channel();
            let (resume_tx, resume) = mpsc::channel();
            worker.order_hand_over(HandOverOrder { part, resume });
            resumes.push(resume_tx);
            answers.push(answer);
        }
        let deadline = Instant::now() + HAND_OVER_TIMEOUT;
        for (i, answer) in answers.iter().enumerate() {
            match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(part)) => parts.push(part),
                Ok(Err(err)) => return err,
                Err(_) => return UpgradeError::WorkerTimedOut { number: i + 1 },
            }
        }
        let handover = super::handover::merge(parts);
        info!(
            "upgrading: re-executing {} with {} from {} (checked in {:?})",
            program.path.display(),
            handover.contents(),
            counted(self.shutdowns.len(), "worker"),
            since.elapsed()
        );
        self.control.reloading();
        // Every descriptor the handover names was kept open by its worker.
        let err = upgrade::exec(program, &handover, &[]);
        drop(resumes);
        err
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
