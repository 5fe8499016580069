//! The event loop: one `Poll`, the listeners, and every connection in a
//! `Slab`, on one thread.
//!
//! Read first: `run`, top to bottom; it is one turn of the loop. Then
//! `accept_pending`, `drive` and `close`. The per-connection logic is in
//! `connection.rs`; this file owns everything that touches the `Poll` or its
//! `Registry`, and nothing else does.
//!
//! A connection's token is its slab key, so dispatch is a lookup with no map
//! and no offset. The few reserved tokens sit at the top of the range, which
//! a slab key can never reach.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::buffer::ReadBuffer;
use crate::config::{Config, RESERVED_DESCRIPTORS};
use crate::connection::{
    CloseReason, Connection, FIRST_INTEREST, Finish, Limits, Readiness, State, Step,
};
use crate::listener::{self, BindError, MAX_LISTENERS};
use crate::socket::Socket;
use crate::summary::{Closes, Interval, Summary, Throttled};
use crate::systemd::Notifier;

/// Fired by `ShutdownHandle::trigger`, from any thread.
const WAKER: Token = Token(usize::MAX);
/// SIGINT, SIGTERM and SIGUSR1, delivered through a self-pipe.
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENERS.start + i`. Slab keys count up from 0
/// and never get near these.
const LISTENERS: Range<usize> = usize::MAX - 2 - MAX_LISTENERS..usize::MAX - 2;

/// Events taken from the kernel per `poll` call. More events per call mean
/// fewer calls under load; the rest wait for the next call, not lost.
const EVENTS_CAPACITY: usize = 1024;

/// Connections accepted from one listener per turn, so that a connect flood
/// cannot starve the clients already connected.
const ACCEPT_BUDGET: usize = 128;

/// How often housekeeping runs: idle and linger sweeps, warnings held back by
/// rate limiting.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// After `accept` fails for want of descriptors, wait this long before trying
/// again (unless a connection closes first and frees one).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A server that could not start.
#[derive(Debug)]
pub enum StartError {
    /// A listening socket could not be set up.
    Listen(BindError),
    /// The poll instance, its waker or the signal handlers could not be set up.
    Setup(io::Error),
}

/// What makes a server one of several `--workers`: its number, for the log,
/// and where it publishes its totals for the thread that adds them up.
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
pub struct ShutdownHandle(Arc<Waker>);

impl ShutdownHandle {
    /// Asks the server to stop: the first call is a graceful shutdown, a
    /// second one stops it at once.
    pub fn trigger(&self) {
        // The waker is an eventfd owned by the server; writing to it fails
        // only if the server's poll instance is already gone, which is the
        // outcome the caller wanted.
        let _ = self.0.wake();
    }
}

/// The echo server. `bind` it, then `run` it.
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    local_addrs: Vec<SocketAddr>,
    connections: Slab<Connection<Socket>>,
    limits: Limits,
    max_connections: usize,
    idle_timeout: Option<Duration>,
    shutdown_timeout: Duration,
    /// Where every read by a connection with nothing left over lands.
    read_buffer: ReadBuffer,
    waker: Arc<Waker>,
    signals: Option<Signals>,
    /// Origin of the millisecond clock connections use.
    started: Instant,
    /// The time at the start of this turn; one clock read per turn.
    now: Instant,
    /// `now` as milliseconds since `started`: the clock connections use,
    /// converted once per turn rather than once per event.
    now_ms: u64,
    /// Connections that spent their read budget: served next turn without an
    /// event, because the kernel reports no edge for input already there.
    again: Vec<usize>,
    /// Likewise for a listener that spent its accept budget.
    accept_again: bool,
    /// Set while `accept` is failing for want of descriptors.
    accept_paused_until: Option<Instant>,
    next_housekeeping: Instant,
    /// Set once a shutdown has been requested.
    shutdown_deadline: Option<Instant>,
    /// `--stats-interval`, and when the next line is due.
    stats_interval: Option<Duration>,
    next_stats: Option<Instant>,
    /// The summary the previous stats line reported, and when it was taken:
    /// rates are measured from there.
    stats_before: (Summary, Instant),
    /// Totals; lines and bytes of connections still open are added on demand.
    totals: Summary,
    rejections: Throttled,
    accept_failures: Throttled,
    /// Tells systemd (`Type=notify`) when echod is ready, how many
    /// connections it has, and when it stops; `None` unless configured.
    notifier: Option<Notifier>,
    /// Set when this server is one of several workers.
    worker: Option<Worker>,
    /// Prefix of the lifecycle log lines: empty, or "worker N: ".
    label: String,
}

impl Server {
    /// Binds the listeners and sets up the poll instance.
    ///
    /// # Errors
    ///
    /// `StartError::Listen` if an address cannot be bound (in use, not
    /// permitted); `StartError::Setup` if the system refuses a poll instance,
    /// waker or signal handler.
    pub fn bind(config: Config) -> Result<Server, StartError> {
        let listeners = listener::bind_all(&config.listen, false).map_err(StartError::Listen)?;
        Server::with_listeners(config, listeners)
    }

    /// Sets up the poll instance around listening sockets made elsewhere
    /// (inherited through socket activation, or bound for a worker);
    /// `config.listen` is not used.
    ///
    /// # Errors
    ///
    /// `StartError::Setup` if the system refuses a poll instance, waker or
    /// signal handler, or a listener cannot be registered.
    pub fn with_listeners(
        config: Config,
        listeners: Vec<TcpListener>,
    ) -> Result<Server, StartError> {
        Server::new(config, listeners, None)
    }

    /// Like `with_listeners`, for one of several workers: the lifecycle log
    /// lines name the worker, and the totals are published to
    /// `worker.report`. Signals, stats and systemd notification are the
    /// coordinating thread's business, whatever `config` says.
    ///
    /// # Errors
    ///
    /// As `with_listeners`.
    pub fn for_worker(
        config: Config,
        listeners: Vec<TcpListener>,
        worker: Worker,
    ) -> Result<Server, StartError> {
        let config = Config {
            handle_signals: false,
            notify_service_manager: false,
            stats_interval: None,
            ..config
        };
        Server::new(config, listeners, Some(worker))
    }

    fn new(
        config: Config,
        mut listeners: Vec<TcpListener>,
        worker: Option<Worker>,
    ) -> Result<Server, StartError> {
        if listeners.len() > MAX_LISTENERS {
            return Err(StartError::Setup(io::Error::other(format!(
                "{} listening sockets: at most {MAX_LISTENERS} are served",
                listeners.len()
            ))));
        }
        let label = worker
            .as_ref()
            .map_or_else(String::new, |worker| format!("worker {}: ", worker.number));
        let poll = Poll::new().map_err(StartError::Setup)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Setup)?);
        let mut local_addrs = Vec::new();
        for (i, listener) in listeners.iter_mut().take(MAX_LISTENERS).enumerate() {
            poll.registry()
                .register(listener, Token(LISTENERS.start + i), Interest::READABLE)
                .map_err(StartError::Setup)?;
            let address = listener.local_addr().map_err(StartError::Setup)?;
            info!("{label}listening on {address}");
            local_addrs.push(address);
        }
        let signals = if config.handle_signals {
            let mut signals =
                Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(StartError::Setup)?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)
                .map_err(StartError::Setup)?;
            Some(signals)
        } else {
            None
        };
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| derived_max_connections(listeners.len()));
        info!(
            "{label}echod {}: framing {}, max-line-bytes {}, max-pending-bytes {}, max-connections {}",
            env!("CARGO_PKG_VERSION"),
            config.framing,
            config.max_line_bytes,
            config.max_pending_bytes,
            max_connections
        );
        let now = Instant::now();
        Ok(Server {
            poll,
            listeners,
            local_addrs,
            connections: Slab::new(),
            limits: config.limits(),
            max_connections,
            idle_timeout: config.idle_timeout,
            shutdown_timeout: config.shutdown_timeout,
            read_buffer: ReadBuffer::default(),
            waker,
            signals,
            started: now,
            now,
            now_ms: 0,
            again: Vec::new(),
            accept_again: false,
            accept_paused_until: None,
            next_housekeeping: now + HOUSEKEEPING_INTERVAL,
            shutdown_deadline: None,
            stats_interval: config.stats_interval,
            next_stats: config.stats_interval.map(|interval| now + interval),
            stats_before: (Summary::default(), now),
            totals: Summary::default(),
            rejections: Throttled::default(),
            accept_failures: Throttled::default(),
            notifier: config.notify_service_manager.then(Notifier::default),
            worker,
            label,
        })
    }

    /// The addresses the listeners are bound to, with the ports the OS chose.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A handle that stops `run` from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.waker))
    }

    /// Runs the event loop until a shutdown completes, and returns the totals.
    ///
    /// Each turn: wait for events (or a deadline); handle each event; serve
    /// the connections and listeners that spent their budget last turn; run
    /// housekeeping when due; and, once shutting down, stop when every
    /// connection is done or the shutdown timeout expires.
    ///
    /// # Errors
    ///
    /// Only server-fatal errors: the poll instance failed. A failure on one
    /// connection closes that connection and nothing else.
    pub fn run(mut self) -> io::Result<Summary> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut serve_again = Vec::new();
        // The listeners were listening since `bind`: connections made since
        // then wait in their backlogs for the first turn.
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.ready(&status(&self.totals, self.connections.len()));
        }
        loop {
            if let Err(err) = self.poll.poll(&mut events, self.poll_timeout()) {
                // A signal interrupted the wait; no socket changed state.
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            self.now = Instant::now();
            self.now_ms = millis_since(self.started, self.now);
            // Taken before the events so that what this turn adds waits for
            // the next one: a busy client gets one budget per turn, not two.
            std::mem::swap(&mut self.again, &mut serve_again);
            let accept_again = std::mem::take(&mut self.accept_again);

            for event in events.iter() {
                let stop_now = match event.token() {
                    WAKER => self.begin_shutdown("shutdown requested"),
                    SIGNALS => self.handle_signals(),
                    Token(t) if LISTENERS.contains(&t) => {
                        self.accept_pending(t - LISTENERS.start);
                        false
                    }
                    Token(key) => {
                        self.drive(key, readiness(event));
                        false
                    }
                };
                if stop_now {
                    return Ok(self.finish_run());
                }
            }
            for key in serve_again.drain(..) {
                self.drive(key, Readiness::SERVE_AGAIN);
            }
            if self
                .accept_paused_until
                .is_some_and(|until| self.now >= until)
            {
                self.accept_paused_until = None;
                self.accept_all();
            } else if accept_again {
                self.accept_all();
            }
            if self.now >= self.next_housekeeping {
                self.housekeeping();
            }
            if self.next_stats.is_some_and(|due| self.now >= due) {
                self.log_stats();
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.connections.is_empty() {
                    return Ok(self.finish_run());
                }
                if self.now >= deadline {
                    self.close_at_shutdown_deadline();
                    return Ok(self.finish_run());
                }
            }
        }
    }

    /// How long `poll` may wait: not at all if work was left over, otherwise
    /// until the nearest deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() || self.accept_again {
            return Some(Duration::ZERO);
        }
        let deadline = [
            self.accept_paused_until,
            self.shutdown_deadline,
            self.next_stats,
        ]
        .into_iter()
        .flatten()
        .fold(self.next_housekeeping, Instant::min);
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Accepts queued connections on listener `index` until `WouldBlock`.
    /// The listener is edge-triggered: one event may stand for many queued
    /// connections, and none of them will be announced again.
    fn accept_pending(&mut self, index: usize) {
        if self.accept_paused_until.is_some() {
            // Out of descriptors: the retry timer or the next close resumes.
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listeners.get(index) else {
                return; // Closed by a shutdown earlier in this turn.
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if out_of_descriptors(&err) => {
                    // The connection stays queued in the kernel. Retrying at
                    // once would fail the same way and spin, so pause.
                    self.accept_paused_until = Some(self.now + ACCEPT_RETRY_DELAY);
                    if let Some(suppressed) = self.accept_failures.hit(self.now) {
                        warn!(
                            "accept failed: {err}; pausing new connections until descriptors free up \
                             ({suppressed} more failures since the last warning)"
                        );
                    }
                    return;
                }
                Err(err) => {
                    // ECONNABORTED and the like: that one connection failed
                    // before we took it, the listener is fine.
                    debug!("accept failed: {err}");
                    continue;
                }
            };
            if self.connections.len() >= self.max_connections {
                // Accepting and closing at once tells the client plainly; a
                // connection left in the backlog would just hang.
                self.totals.rejected += 1;
                if let Some(suppressed) = self.rejections.hit(self.now) {
                    warn!(
                        "max-connections ({}) reached: closed a new connection from {peer} \
                         ({suppressed} more rejected since the last warning)",
                        self.max_connections
                    );
                }
                continue;
            }
            let entry = self.connections.vacant_entry();
            let key = entry.key();
            if let Err(err) = self
                .poll
                .registry()
                .register(&mut stream, Token(key), FIRST_INTEREST)
            {
                warn!("conn from {peer}: cannot register: {err}");
                continue;
            }
            entry.insert(Connection::new(Socket::new(stream), peer, self.now_ms));
            self.totals.accepted += 1;
            self.totals.peak_connections = self.totals.peak_connections.max(self.connections.len());
            // At debug: a health check that connects and closes would
            // otherwise put a line a check into the info log. The close line
            // names the peer of every connection that did anything.
            debug!("conn {key}: accepted from {peer}");
        }
        // Budget spent; more may be queued, and no new edge will say so.
        self.accept_again = true;
    }

    fn accept_all(&mut self) {
        for index in 0..self.listeners.len() {
            self.accept_pending(index);
        }
    }

    /// Hands a readiness event to connection `key` and applies what it asks
    /// for next.
    fn drive(&mut self, key: usize, ready: Readiness) {
        // No connection: the event outlived it (the socket was closed while
        // the event was queued). Harmless, like any spurious event.
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let before = (connection.interest(), connection.state());
        let step = connection.on_ready(ready, &self.limits, &mut self.read_buffer, self.now_ms);
        // The usual outcome, a line echoed in full: the connection waits in
        // the same state for the same readiness, so there is nothing to apply.
        if matches!(step, Step::Wait)
            && connection.state() == before.1
            && connection.interest() == before.0
        {
            return;
        }
        self.apply(key, before, step);
    }

    /// Applies a connection's `Step`, re-registering only if the interest it
    /// derives from its state changed (most events change nothing, so most
    /// cost no `epoll_ctl`).
    fn apply(&mut self, key: usize, before: (Option<Interest>, State), step: Step) {
        let (interest_before, state_before) = before;
        // The line limit may have been hit in this call whatever the step:
        // the connection may be draining, lingering or already finished.
        let connection = &self.connections[key];
        let too_long = matches!(step, Step::Close(CloseReason::LineTooLong))
            || connection.state().finish() == Some(Finish::LineTooLong);
        if too_long && state_before.finish() != Some(Finish::LineTooLong) {
            warn!(
                "conn {key}: line longer than max-line-bytes ({}) from {}; closing after the lines before it",
                self.limits.max_line_bytes,
                connection.peer()
            );
        }
        match step {
            Step::Close(reason) => return self.close(key, reason),
            Step::Again => self.again.push(key),
            Step::Wait => {}
        }
        let connection = &mut self.connections[key];
        let interest = connection.interest();
        if interest == interest_before {
            return;
        }
        // `None` would mean "finished", which comes back as `Step::Close`.
        let Some(interest) = interest else {
            return;
        };
        if let Err(err) =
            self.poll
                .registry()
                .reregister(connection.stream_mut(), Token(key), interest)
        {
            self.close(key, CloseReason::Io(err));
        }
    }

    /// Closes connection `key` and logs why.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let connection = self.connections.remove(key);
        self.totals.lines += connection.lines();
        self.totals.bytes += connection.bytes_echoed();
        let received_nothing = !connection.received_any();
        self.totals.closes.record(&reason, received_nothing);
        if Closes::is_probe(&reason, received_nothing) {
            debug!(
                "conn {key}: closed without sending anything ({reason}); peer {}",
                connection.peer()
            );
        } else {
            info!(
                "conn {key}: closed ({reason}); {} lines, {} bytes echoed; peer {}",
                connection.lines(),
                connection.bytes_echoed(),
                connection.peer()
            );
        }
        // Dropping the stream closes the socket, which also removes it from
        // the epoll set; an explicit deregister would cost an `epoll_ctl`.
        drop(connection);
        // A descriptor just came free: if accepting had paused for want of
        // one, resume now rather than at the retry timer.
        if self.accept_paused_until.take().is_some() {
            self.accept_again = true;
        }
    }

    /// The shutdown timeout has expired: closes every connection still open,
    /// whatever it was waiting for.
    fn close_at_shutdown_deadline(&mut self) {
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::ShutdownTimeout);
        }
    }

    /// Once a second: close idle and lingering connections that have waited
    /// too long, and report warnings that rate limiting held back.
    fn housekeeping(&mut self) {
        self.next_housekeeping = self.now + HOUSEKEEPING_INTERVAL;
        if let Some(suppressed) = self.rejections.overdue(self.now) {
            warn!(
                "max-connections ({}): {suppressed} more connections rejected",
                self.max_connections
            );
        }
        if let Some(suppressed) = self.accept_failures.overdue(self.now) {
            warn!("accept: {suppressed} more failures for want of descriptors");
        }
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.status(&status(&self.totals, self.connections.len()));
        }
        self.report();
        let now_ms = self.now_ms;
        let idle_ms = self
            .idle_timeout
            .map_or(0, |timeout| timeout.as_millis() as u64);
        // A sweep of every connection: a few nanoseconds each, once a second.
        let expired: Vec<(usize, CloseReason)> = self
            .connections
            .iter()
            .filter_map(|(key, connection)| Some((key, connection.expired(now_ms, idle_ms)?)))
            .collect();
        for (key, reason) in expired {
            self.close(key, reason);
        }
    }

    /// Reads the signals that arrived. Returns true if the server must stop
    /// at once.
    fn handle_signals(&mut self) -> bool {
        let Some(signals) = self.signals.as_mut() else {
            return false;
        };
        let arrived: Vec<i32> = signals.pending().collect();
        for signal in arrived {
            let stop_now = match signal {
                SIGINT => self.begin_shutdown("SIGINT received"),
                SIGTERM => self.begin_shutdown("SIGTERM received"),
                SIGUSR1 => {
                    info!("summary: {}", self.summary());
                    false
                }
                _ => false,
            };
            if stop_now {
                return true;
            }
        }
        false
    }

    /// Starts a graceful shutdown: listeners close, every connection stops
    /// reading and delivers what it owes. Returns true if a shutdown was
    /// already under way, in which case the server stops at once.
    fn begin_shutdown(&mut self, why: &str) -> bool {
        if self.shutdown_deadline.is_some() {
            warn!(
                "{}{why} again: exiting now, {} connections still open",
                self.label,
                self.connections.len()
            );
            return true;
        }
        info!(
            "{}{why}: no longer accepting; delivering owed echoes to {} connections (up to {:?})",
            self.label,
            self.connections.len(),
            self.shutdown_timeout
        );
        self.shutdown_deadline = Some(self.now + self.shutdown_timeout);
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.stopping(&format!(
                "stopping: delivering owed echoes to {} connections",
                self.connections.len()
            ));
        }
        self.listeners.clear();
        self.accept_again = false;
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let now_ms = self.now_ms;
        for key in keys {
            let connection = &mut self.connections[key];
            let before = (connection.interest(), connection.state());
            let step = connection.begin_shutdown(&self.limits, &mut self.read_buffer, now_ms);
            self.apply(key, before, step);
        }
        false
    }

    /// Logs the `--stats-interval` line: the counters now, and the rates
    /// since the previous line.
    fn log_stats(&mut self) {
        let Some(interval) = self.stats_interval else {
            return;
        };
        // From the time due, not from now, so that a late turn does not make
        // the lines drift; after a stall longer than the interval, from now.
        let due = self.next_stats.unwrap_or(self.now) + interval;
        self.next_stats = Some(if due > self.now {
            due
        } else {
            self.now + interval
        });
        let now = self.summary();
        let (before, taken) = &self.stats_before;
        let line = Interval {
            before,
            now: &now,
            elapsed: self.now.saturating_duration_since(*taken),
        };
        info!("stats: {line}");
        self.stats_before = (now, self.now);
    }

    /// Totals so far, open connections included.
    fn summary(&self) -> Summary {
        let mut summary = self.totals;
        for (_, connection) in &self.connections {
            summary.lines += connection.lines();
            summary.bytes += connection.bytes_echoed();
            if connection.state() == State::Paused {
                summary.paused_connections += 1;
            }
        }
        summary.open_connections = self.connections.len();
        summary
    }

    /// Publishes the totals for the coordinating thread, if this server is
    /// a worker. Once a second, so the lock is never contended for long.
    fn report(&self) {
        if let Some(worker) = &self.worker {
            let summary = self.summary();
            // A poisoned lock means the coordinating thread panicked; the
            // totals then have no reader, and serving goes on.
            if let Ok(mut report) = worker.report.lock() {
                *report = summary;
            }
        }
    }

    fn finish_run(self) -> Summary {
        self.report();
        let summary = self.summary();
        info!("{}stopped: {summary}", self.label);
        summary
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .field("connections", &self.connections.len())
            .field("limits", &self.limits)
            .field("max_connections", &self.max_connections)
            .field("shutting_down", &self.shutdown_deadline.is_some())
            .finish_non_exhaustive()
    }
}

/// The STATUS line systemd shows for the service (`systemctl status`).
fn status(totals: &Summary, open_connections: usize) -> String {
    format!(
        "{open_connections} connections open, {} served, {} rejected",
        totals.accepted, totals.rejected
    )
}

/// What one poll event tells a connection.
fn readiness(event: &Event) -> Readiness {
    Readiness::of_event(
        event.is_readable(),
        event.is_writable(),
        event.is_read_closed(),
        event.is_write_closed(),
        event.is_error(),
    )
}

/// EMFILE, ENFILE and friends: the process or the system is out of
/// descriptors or socket memory. Nothing is wrong with the listener.
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The default for `max-connections`: the open-file limit, less the
/// descriptors echod needs for itself.
pub(crate) fn derived_max_connections(n_listeners: usize) -> usize {
    let soft = rlimit::Resource::NOFILE.get_soft().unwrap_or(1024);
    soft.saturating_sub(RESERVED_DESCRIPTORS + n_listeners as u64)
        .clamp(1, usize::MAX as u64) as usize
}

fn millis_since(start: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(start).as_millis() as u64
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Listen(err) => write!(f, "{err}"),
            StartError::Setup(err) => write!(f, "cannot set up the event loop: {err}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Listen(err) => Some(err),
            StartError::Setup(err) => Some(err),
        }
    }
}
