//! Running the daemon: where its listening sockets come from, and how many
//! event loops serve them.
//!
//! With `--workers 1` (the default) this is the classic daemon: the main
//! thread runs one `Server`, whose control plane (`control`) takes the
//! signals, logs the stats line and notifies systemd as `Wiring` says.
//! Nothing in this module stands between it and its sockets.
//!
//! With `--workers N`, echod scales the way nginx does, shared-nothing: N
//! threads, each running its own `Server` (its own `Poll`, connections,
//! read buffer and listening sockets), and no state shared between them
//! but a `Summary` each publishes once a second. Each worker binds its own
//! socket on every address with `SO_REUSEPORT`, so the kernel spreads new
//! connections among the workers by a hash of the connection's addresses;
//! a connection stays on the worker that accepted it. The main thread
//! becomes the coordinator: it takes the signals and forwards a shutdown to
//! every worker, adds up their summaries for SIGUSR1, the stats line and
//! systemd's STATUS, and returns the final totals once all have stopped.
//! It stands on the same control plane as a single loop; only what a
//! request means differs (forward it to the workers, rather than act on
//! connections).
//!
//! Under socket activation there is one inherited socket per address, and
//! nothing to bind: each worker polls its own duplicate of every inherited
//! socket. The kernel then wakes every worker for a new connection and the
//! first to call `accept` takes it; the others find `WouldBlock`, which
//! the loop takes in its stride. So the connections go to whichever worker
//! is free first, not by hash.
//!
//! `max-memory` is the process's budget, shared out the same way.
//!
//! `max-connections` is the process's limit, shared out exactly
//! (`shares`): 1,000 over 3 workers is 334 + 333 + 333, 7 over 4 is
//! 2 + 2 + 2 + 1. An explicit `--max-connections` below `--workers` is a
//! command-line error, since a worker with no share would reject every
//! connection the kernel gave it; the default, derived from the open-file
//! limit, is raised to one per worker if it is lower. Since the kernel's
//! spread is not exactly even, a worker may reject connections while
//! another still has room.
//!
//! Before the first worker binds with `SO_REUSEPORT`, each address is
//! probed (`listener::refuse_if_answered`): `SO_REUSEPORT` would let echod
//! join a port another process already serves, where a single loop's bind
//! fails with "address in use".
//!
//! The metrics endpoint (`--metrics-listen`), if any, is bound here once
//! and served by one loop: the single loop, exact to the moment of each
//! scrape; or worker 1, which reports the sums of what every worker last
//! published (at most a second old).
//!
//! The coordinator is `workers/coordinator.rs`.
//!
//! `main` calls `run` with the daemon's `Wiring` and maps its `RunError` to
//! an exit status.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;

use log::info;
use mio::net::TcpListener;

use crate::config::{Config, Listen};
use crate::control::{Control, Wiring, Worker};
use crate::handover::Handover;
use crate::listener;
use crate::metrics::{Endpoint, Source};
use crate::server::{self, Server, StartError};
use crate::summary::{Summary, counted};

mod coordinator;
mod handover;

use coordinator::Coordinator;

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
/// `config.listen` is ignored and nothing is bound. `wiring` says whether
/// the loop that answers to the operator (the single loop, or the workers'
/// coordinator) takes the process's signals and notifies systemd.
///
/// # Errors
///
/// `RunError::Start` before anything is served; `RunError::Loop` if an
/// event loop fails (with several workers, the others are then stopped).
pub fn run(
    config: Config,
    inherited: Option<Vec<StdTcpListener>>,
    wiring: Wiring,
) -> Result<Summary, RunError> {
    run_from(config, inherited, None, wiring)
}

/// `run`, carrying on from `handover` if the program before this one left
/// one (an upgrade in place, `upgrade.rs`): then its listeners and
/// connections are served, and neither `inherited` nor `config.listen`.
///
/// # Errors
///
/// As `run`; also `RunError::Start` if the handover cannot be taken, or is
/// given with several workers, which cannot be upgraded in place.
pub fn run_from(
    config: Config,
    inherited: Option<Vec<StdTcpListener>>,
    handover: Option<Handover>,
    wiring: Wiring,
) -> Result<Summary, RunError> {
    if let Some(handover) = handover {
        return take_over(config, handover, wiring);
    }
    if let Some(inherited) = &inherited {
        info!(
            "socket activation: serving {} passed by systemd",
            counted(inherited.len(), "listening socket")
        );
    }
    if config.workers > 1 {
        let listener_sets = worker_listeners(&config, inherited.as_deref(), config.workers)?;
        drop(inherited); // Each worker has its own duplicates.
        return run_workers(config, listener_sets, None, None, wiring);
    }
    let listeners = match inherited {
        Some(inherited) => inherited
            .into_iter()
            .map(listener::adopt)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|err| RunError::Start(StartError::Setup(err)))?,
        None => listener::bind_all(&config.listen, false)
            .map_err(|err| RunError::Start(StartError::Listen(err)))?,
    };
    let control = Control::new(wiring, config.stats_interval)
        .map_err(|err| RunError::Start(StartError::Setup(err)))?;
    let metrics = bind_metrics(&config, Source::Own)?;
    let mut server = Server::with_control(config, listeners, control).map_err(RunError::Start)?;
    if let Some(endpoint) = metrics {
        server = server.serve_metrics(endpoint).map_err(RunError::Start)?;
    }
    server.run().map_err(RunError::Loop)
}

/// Carries on from the handover the program before this one left, with
/// `config.workers` loops whatever the number that handed over (see
/// `workers/handover.rs`). The metrics endpoint's sockets are carried over
/// too, unless the program before this one served none.
fn take_over(config: Config, mut handover: Handover, wiring: Wiring) -> Result<Summary, RunError> {
    let setup = |err| RunError::Start(StartError::Setup(err));
    let metrics_records = std::mem::take(&mut handover.metrics_listeners);
    let metrics = if metrics_records.is_empty() {
        None
    } else {
        let listeners = server::take_listeners(&metrics_records).map_err(setup)?;
        let addresses = metrics_records.iter().map(|r| r.address).collect();
        Some((listeners, addresses))
    };
    if config.workers > 1 {
        let (listener_sets, carried) = handover::split(handover, config.workers)
            .map_err(setup)?
            .into_iter()
            .map(|share| (share.listeners, share.handover))
            .unzip();
        return run_workers(config, listener_sets, Some(carried), metrics, wiring);
    }
    let listeners = server::take_listeners(&handover.listeners).map_err(setup)?;
    let control = Control::new(wiring, config.stats_interval).map_err(setup)?;
    let metrics = match metrics {
        Some((listeners, addresses)) => {
            Some(Endpoint::from_listeners(listeners, addresses, Source::Own))
        }
        None => bind_metrics(&config, Source::Own)?,
    };
    let mut server =
        Server::take_over(config, listeners, handover, control).map_err(RunError::Start)?;
    if let Some(endpoint) = metrics {
        server = server.serve_metrics(endpoint).map_err(RunError::Start)?;
    }
    server.run().map_err(RunError::Loop)
}

/// `--workers N` for N above 1, over `listener_sets` (one set per worker):
/// sets up every worker's loop before any starts, so that a failure to
/// start leaves nothing running; then coordinates them until all have
/// stopped. After an upgrade, `carried` holds each worker's share of the
/// handover and `metrics` the endpoint's sockets, if it had any.
fn run_workers(
    config: Config,
    listener_sets: Vec<Vec<TcpListener>>,
    carried: Option<Vec<Handover>>,
    metrics: Option<(Vec<TcpListener>, Vec<SocketAddr>)>,
    wiring: Wiring,
) -> Result<Summary, RunError> {
    let n_workers = config.workers;
    let n_listeners: usize = listener_sets.iter().map(Vec::len).sum();
    // The command line refuses fewer than one per worker; the derived
    // default is raised to that.
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| server::derived_max_connections(n_listeners).max(n_workers));
    let shares = shares(max_connections, n_workers);
    let (most, least) = (shares[0], shares[n_workers - 1]);
    if most == least {
        info!("{n_workers} workers: max-connections {most} each, {max_connections} in all");
    } else {
        let n_most = shares.iter().filter(|&&share| share == most).count();
        info!(
            "{n_workers} workers: max-connections {most} for {} and {least} for {}, \
             {max_connections} in all",
            counted(n_most, "worker"),
            n_workers - n_most
        );
    }

    let mut coordinator = Control::new(wiring, config.stats_interval)
        .and_then(Coordinator::new)
        .map_err(|err| RunError::Start(StartError::Setup(err)))?;
    // The memory budget is the process's too: each worker holds its share.
    let memory_shares = config
        .max_memory
        .map(|budget| self::shares(budget, n_workers));
    let reports: Vec<Arc<Mutex<Summary>>> = (0..n_workers).map(|_| Arc::default()).collect();
    let mut metrics = match metrics {
        Some((listeners, addresses)) => Some(Endpoint::from_listeners(
            listeners,
            addresses,
            Source::Published(reports.clone()),
        )),
        None => bind_metrics(&config, Source::Published(reports.clone()))?,
    };
    let mut carried = carried.map(Vec::into_iter);
    let mut servers = Vec::with_capacity(n_workers);
    for (i, (listeners, share)) in listener_sets.into_iter().zip(shares).enumerate() {
        let worker_config = Config {
            max_connections: Some(share),
            max_memory: memory_shares.as_ref().map(|memory| memory[i]),
            ..config.clone()
        };
        let report = Arc::clone(&reports[i]);
        let worker = Worker {
            number: i + 1,
            report: Arc::clone(&report),
        };
        let control = Control::for_worker(worker);
        let mut server = match carried.as_mut().and_then(Iterator::next) {
            Some(handover) => Server::take_over(worker_config, listeners, handover, control),
            None => Server::with_control(worker_config, listeners, control),
        }
        .map_err(RunError::Start)?;
        if let Some(endpoint) = metrics.take() {
            server = server.serve_metrics(endpoint).map_err(RunError::Start)?;
        }
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
    // Before the first bind: once worker 1 listens, the probe would find
    // it.
    listener::refuse_if_answered(&config.listen)
        .map_err(|err| RunError::Start(StartError::Listen(err)))?;
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

/// The metrics endpoint `config.metrics_listen` asks for, bound, if any.
fn bind_metrics(config: &Config, source: Source) -> Result<Option<Endpoint>, RunError> {
    if config.metrics_listen.is_empty() {
        return Ok(None);
    }
    Endpoint::bind(&config.metrics_listen, source)
        .map(Some)
        .map_err(|err| RunError::Start(StartError::Listen(err)))
}

/// `total` connections shared among `n_workers` so that the shares add up
/// to exactly `total`: each gets `total / n_workers`, and the first
/// `total % n_workers` one more. Largest first.
fn shares(total: usize, n_workers: usize) -> Vec<usize> {
    let (each, rest) = (total / n_workers, total % n_workers);
    (0..n_workers)
        .map(|i| each + usize::from(i < rest))
        .collect()
}

/// Duplicates of `inherited`, ready for a loop (`listener::adopt`).
fn adopt_all(inherited: &[StdTcpListener]) -> Result<Vec<TcpListener>, RunError> {
    inherited
        .iter()
        .map(|socket| socket.try_clone().and_then(listener::adopt))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|err| RunError::Start(StartError::Setup(err)))
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

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn max_connections_is_shared_out_exactly() {
        let cases: [(usize, usize, &[usize]); 5] = [
            (1000, 3, &[334, 333, 333]),
            (7, 4, &[2, 2, 2, 1]),
            (10, 2, &[5, 5]),
            (4, 4, &[1, 1, 1, 1]),
            (5, 4, &[2, 1, 1, 1]),
        ];
        for (total, n_workers, expected) in cases {
            let got = shares(total, n_workers);
            assert_eq!(got, expected, "{total} over {n_workers}");
            assert_eq!(got.iter().sum::<usize>(), total);
        }
    }
}
