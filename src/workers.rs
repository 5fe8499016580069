//! Running the daemon: where its listening sockets come from, and how many
//! event loops serve them.
//!
//! With `--workers 1` (the default) this is the classic daemon: the main
//! thread runs one `Server`, which handles signals, stats and systemd
//! notification itself. Nothing in this module stands between it and its
//! sockets.
//!
//! With `--workers N`, echod scales the way nginx does, shared-nothing: N
//! threads, each running its own `Server` (its own `Poll`, connections,
//! buffer pool and listening sockets), and no state shared between them
//! but a `Summary` each publishes once a second. Each worker binds its own
//! socket on every address with `SO_REUSEPORT`, so the kernel spreads new
//! connections among the workers by a hash of the connection's addresses;
//! a connection stays on the worker that accepted it. The main thread
//! becomes the coordinator: it takes the signals and forwards a shutdown to
//! every worker, adds up their summaries for SIGUSR1, the stats line and
//! systemd's STATUS, and returns the final totals once all have stopped.
//!
//! Under socket activation there is one inherited socket per address, and
//! nothing to bind: each worker polls its own duplicate of every inherited
//! socket. The kernel then wakes every worker for a new connection and the
//! first to call `accept` takes it; the others find `WouldBlock`, which
//! the loop takes in its stride. So the connections go to whichever worker
//! is free first, not by hash.
//!
//! `max-connections` is the process's limit: each worker gets an equal
//! share (at least 1). Since the kernel's spread is not exactly even, a
//! worker may reject connections while another still has room.
//!
//! `main` calls `run` and maps its `RunError` to an exit status.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::config::{Config, Listen};
use crate::listener;
use crate::server::{self, Server, ShutdownHandle, StartError, Worker};
use crate::summary::{Interval, Summary};
use crate::systemd::Notifier;

/// The coordinator's tokens: signals, and a worker that has returned.
const SIGNALS: Token = Token(0);
const WORKER_DONE: Token = Token(1);

/// How often the coordinator refreshes systemd's STATUS: as often as the
/// workers publish their totals.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Why the daemon stopped with an error.
#[derive(Debug)]
pub enum RunError {
    /// It could not start: a listener or the event loop could not be set up.
    Start(StartError),
    /// An event loop failed while running.
    Loop(io::Error),
}

/// Sets up the listeners and serves until a shutdown completes; returns
/// the totals (added up over the workers).
///
/// `inherited` holds the sockets passed by socket activation, if any; then
/// `config.listen` is ignored and nothing is bound.
///
/// # Errors
///
/// `RunError::Start` before anything is served; `RunError::Loop` if an
/// event loop fails (with several workers, the others are then stopped).
pub fn run(config: Config, inherited: Option<Vec<StdTcpListener>>) -> Result<Summary, RunError> {
    if let Some(inherited) = &inherited {
        info!(
            "socket activation: serving {} listening sockets passed by systemd",
            inherited.len()
        );
    }
    if config.workers > 1 {
        return run_workers(config, inherited);
    }
    let server = match inherited {
        Some(inherited) => {
            let listeners = inherited
                .into_iter()
                .map(listener::adopt)
                .collect::<io::Result<Vec<_>>>()
                .map_err(|err| RunError::Start(StartError::Setup(err)))?;
            Server::with_listeners(config, listeners)
        }
        None => Server::bind(config),
    }
    .map_err(RunError::Start)?;
    server.run().map_err(RunError::Loop)
}

/// `--workers N` for N above 1: binds every worker's sockets and sets up
/// every worker's loop before any starts, so that a failure to start leaves
/// nothing running; then coordinates them until all have stopped.
fn run_workers(
    config: Config,
    inherited: Option<Vec<StdTcpListener>>,
) -> Result<Summary, RunError> {
    let n_workers = config.workers;
    let listener_sets = worker_listeners(&config, inherited.as_deref(), n_workers)?;
    drop(inherited); // Each worker has its own duplicates.
    let n_listeners: usize = listener_sets.iter().map(Vec::len).sum();
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| server::derived_max_connections(n_listeners));
    let per_worker = (max_connections / n_workers).max(1);
    info!(
        "{n_workers} workers: max-connections {per_worker} each, {} in all",
        per_worker * n_workers
    );
    let worker_config = Config {
        max_connections: Some(per_worker),
        ..config.clone()
    };

    let mut coordinator =
        Coordinator::new(&config).map_err(|err| RunError::Start(StartError::Setup(err)))?;
    let mut servers = Vec::with_capacity(n_workers);
    for (i, listeners) in listener_sets.into_iter().enumerate() {
        let report = Arc::new(Mutex::new(Summary::default()));
        let worker = Worker {
            number: i + 1,
            report: Arc::clone(&report),
        };
        let server = Server::for_worker(worker_config.clone(), listeners, worker)
            .map_err(RunError::Start)?;
        coordinator.shutdowns.push(server.shutdown_handle());
        coordinator.reports.push(report);
        servers.push(server);
    }
    for (i, server) in servers.into_iter().enumerate() {
        let done = Arc::clone(&coordinator.done);
        let returned = Arc::clone(&coordinator.returned);
        let spawned = thread::Builder::new()
            .name(format!("echod-worker-{}", i + 1))
            .spawn(move || {
                let outcome = server.run();
                // Counted before the wake-up, so that the coordinator, once
                // woken, sees it (the thread itself ends a moment later,
                // which `JoinHandle::is_finished` would miss).
                returned.fetch_add(1, Ordering::SeqCst);
                // The coordinator's poll instance outlives every worker
                // (it joins them), so this wakes it unless it is gone.
                let _ = done.wake();
                outcome
            });
        match spawned {
            Ok(thread) => coordinator.threads.push(thread),
            Err(err) => {
                // Stop the workers already running before reporting.
                coordinator.stop_all();
                let _ = coordinator.join_all();
                return Err(RunError::Start(StartError::Setup(err)));
            }
        }
    }
    coordinator.run()
}

/// Each worker's listening sockets: duplicates of the inherited ones, or
/// its own sockets bound with `SO_REUSEPORT` on the addresses the first
/// worker was given (so that port 0 means one port for all).
fn worker_listeners(
    config: &Config,
    inherited: Option<&[StdTcpListener]>,
    n_workers: usize,
) -> Result<Vec<Vec<TcpListener>>, RunError> {
    let mut sets = Vec::with_capacity(n_workers);
    if let Some(inherited) = inherited {
        for _ in 0..n_workers {
            sets.push(adopt_all(inherited)?);
        }
        return Ok(sets);
    }
    let bind = |listen: &Listen| {
        listener::bind_all(listen, true).map_err(|err| RunError::Start(StartError::Listen(err)))
    };
    let first = bind(&config.listen)?;
    let addresses = first
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<SocketAddr>>>()
        .map_err(|err| RunError::Start(StartError::Setup(err)))?;
    sets.push(first);
    for _ in 1..n_workers {
        sets.push(bind(&Listen::Addresses(addresses.clone()))?);
    }
    Ok(sets)
}

/// Duplicates of `inherited`, ready for a loop (`listener::adopt`).
fn adopt_all(inherited: &[StdTcpListener]) -> Result<Vec<TcpListener>, RunError> {
    inherited
        .iter()
        .map(|socket| socket.try_clone().and_then(listener::adopt))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|err| RunError::Start(StartError::Setup(err)))
}

/// The main thread's part with several workers.
struct Coordinator {
    poll: Poll,
    signals: Option<Signals>,
    /// Woken by each worker thread as it returns.
    done: Arc<Waker>,
    /// Workers whose loop has returned.
    returned: Arc<AtomicUsize>,
    shutdowns: Vec<ShutdownHandle>,
    reports: Vec<Arc<Mutex<Summary>>>,
    threads: Vec<JoinHandle<io::Result<Summary>>>,
    notifier: Option<Notifier>,
    stats_interval: Option<Duration>,
}

impl Coordinator {
    fn new(config: &Config) -> io::Result<Coordinator> {
        let poll = Poll::new()?;
        let done = Arc::new(Waker::new(poll.registry(), WORKER_DONE)?);
        let signals = if config.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        Ok(Coordinator {
            poll,
            signals,
            done,
            returned: Arc::new(AtomicUsize::new(0)),
            shutdowns: Vec::new(),
            reports: Vec::new(),
            threads: Vec::new(),
            notifier: config.notify_service_manager.then(Notifier::default),
            stats_interval: config.stats_interval,
        })
    }

    /// Waits for signals, worker exits and timers until every worker has
    /// returned; then adds up their totals.
    fn run(mut self) -> Result<Summary, RunError> {
        let mut events = Events::with_capacity(16);
        let started = Instant::now();
        let mut next_status = started + STATUS_INTERVAL;
        let mut next_stats = self.stats_interval.map(|interval| started + interval);
        let mut stats_before = (Summary::default(), started);
        let mut stopping = false;
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.ready(&status(&Summary::default()));
        }
        loop {
            let deadline = next_stats.map_or(next_status, |due| due.min(next_status));
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
                    self.handle_signals(&mut stopping);
                }
            }
            let finished = self.returned.load(Ordering::SeqCst);
            if finished == self.threads.len() {
                return self.join_all();
            }
            if finished > 0 && !stopping {
                // A worker returned without being asked: its loop failed
                // (it has logged why). Serving on with fewer workers would
                // hide that; stop the rest, and exit with the failure.
                error!("a worker stopped unexpectedly; stopping the others");
                stopping = true;
                self.stop_all();
            }
            if now >= next_status {
                next_status = now + STATUS_INTERVAL;
                let total = self.total();
                if let Some(notifier) = self.notifier.as_mut() {
                    notifier.status(&status(&total));
                }
            }
            if let (Some(interval), Some(due)) = (self.stats_interval, next_stats) {
                if now >= due {
                    next_stats = Some(if due + interval > now {
                        due + interval
                    } else {
                        now + interval
                    });
                    let total = self.total();
                    let line = Interval {
                        before: &stats_before.0,
                        now: &total,
                        elapsed: now.saturating_duration_since(stats_before.1),
                    };
                    info!("stats: {line}");
                    stats_before = (total, now);
                }
            }
        }
    }

    fn handle_signals(&mut self, stopping: &mut bool) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let arrived: Vec<i32> = signals.pending().collect();
        for signal in arrived {
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                SIGUSR1 => {
                    info!("summary (as of the last second): {}", self.total());
                    continue;
                }
                _ => continue,
            };
            if *stopping {
                // Each worker takes a second request as "stop at once".
                warn!("{name} received again: stopping every worker at once");
            } else {
                info!("{name} received: stopping {} workers", self.threads.len());
                let open = self.total().open_connections;
                if let Some(notifier) = self.notifier.as_mut() {
                    notifier.stopping(&format!(
                        "stopping: delivering owed echoes to {open} connections"
                    ));
                }
            }
            *stopping = true;
            self.stop_all();
        }
    }

    /// Asks every worker to stop; a second call stops them at once.
    fn stop_all(&self) {
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
    fn join_all(self) -> Result<Summary, RunError> {
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

/// The STATUS line systemd shows for the service.
fn status(total: &Summary) -> String {
    format!(
        "{} connections open, {} served, {} rejected",
        total.open_connections, total.accepted, total.rejected
    )
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Start(err) => write!(f, "{err}"),
            RunError::Loop(err) => write!(f, "event loop failed: {err}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Start(err) => Some(err),
            RunError::Loop(err) => Some(err),
        }
    }
}
