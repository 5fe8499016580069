//! The event loop: one `Poll`, the listeners, and every connection in a
//! `Slab`, on one thread.
//!
//! Read first: `run`, top to bottom; it is one turn of the loop. Then
//! `accept_pending`, `drive` and `close`. How a `Server` is built (its
//! poll, its listeners' tokens, `StartError`) is in `server/setup.rs`. The
//! per-connection logic is in `connection.rs`; this module owns the `Poll`
//! and makes every call on its `Registry` but one: `Control::attach`
//! registers the signal pipe at the token given to it here.
//!
//! What the loop hears from outside its sockets (signals, shutdown handles)
//! and says besides echoes (the stats line, systemd, a worker's totals,
//! rate-limited warnings) is `control.rs`'s; this file decides only what a
//! `Request` means for the connections.
//!
//! A connection's token is its slab key, so dispatch is a lookup with no map
//! and no offset. The few reserved tokens sit at the top of the range, which
//! a slab key can never reach.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buffer::Pool;
use crate::connection::{CloseReason, Connection, Finish, Limits, Readiness, State, Step};
use crate::control::{Control, Flow, Request, ShutdownHandle, ShutdownRequests};
use crate::socket::Socket;
use crate::summary::{Closes, Summary};

mod setup;

pub use setup::StartError;
pub(crate) use setup::derived_max_connections;

/// The log target of every line the loop writes, `echod::server`, also
/// for the lines written in `setup` or by its `Control`: operators filter on
/// it.
const LOG_TARGET: &str = module_path!();

/// Fired by `ShutdownHandle::trigger`, from any thread.
const WAKER: Token = Token(usize::MAX);
/// SIGINT, SIGTERM and SIGUSR1, delivered through a self-pipe.
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENERS.start + i`. Slab keys count up from 0
/// and never get near these.
const LISTENERS: Range<usize> = usize::MAX - 2 - MAX_LISTENERS..usize::MAX - 2;

/// Most listening addresses echod accepts on its command line.
pub const MAX_LISTENERS: usize = 64;

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

/// How long a connection that we closed on our side (its line was too long,
/// or the server is stopping) waits for the peer to close in turn.
const LINGER: Duration = Duration::from_secs(2);

/// The echo server. `bind` it, then `run` it.
pub struct Server {
    /// The one poll instance: every socket below is registered with it.
    poll: Poll,
    /// Listener `i` is registered at token `LISTENERS.start + i`. Emptied,
    /// which closes every listening socket, when a shutdown begins; never
    /// refilled.
    listeners: Vec<TcpListener>,
    /// The address listener `i` was bound to; kept after a shutdown.
    local_addrs: Vec<SocketAddr>,
    /// Every open connection, at the key its token names. A connection is
    /// here exactly while its socket is open and registered.
    connections: Slab<Connection<Socket>>,
    /// Per-connection limits from the configuration; fixed for the run.
    limits: Limits,
    /// `connections.len()` never exceeds it: a connection beyond it is
    /// accepted and closed at once.
    max_connections: usize,
    /// A connection with no bytes moving for this long is closed; `None`:
    /// never.
    idle_timeout: Option<Duration>,
    /// How long a graceful shutdown may take before the connections left
    /// are cut off.
    shutdown_timeout: Duration,
    /// Spare buffers lent to connections while they have data in flight.
    pool: Pool,
    /// The loop's end of its `ShutdownHandle`s; the waker is registered at
    /// `WAKER`.
    shutdowns: ShutdownRequests,
    /// Signals, systemd, the stats line, a worker's published totals and
    /// rate-limited warnings; its signal pipe, if any, is registered at
    /// `SIGNALS`.
    control: Control,
    /// Origin of the millisecond clock connections use.
    started: Instant,
    /// The time at the start of this turn; one clock read per turn.
    now: Instant,
    /// `now` as milliseconds since `started`: the clock connections use,
    /// converted once per turn rather than once per event.
    now_ms: u64,
    /// Keys of connections that spent their read budget this turn: served
    /// next turn without an event, because the kernel reports no edge for
    /// input already there. A key whose connection has closed since is
    /// skipped; one reused since costs the new connection a read that finds
    /// `WouldBlock`.
    again: Vec<usize>,
    /// Set when a listener spent its accept budget this turn, or a close
    /// ended a pause: every listener is served next turn, and `poll` does
    /// not wait. Harmless once a shutdown has closed the listeners.
    accept_again: bool,
    /// Set while `accept` is failing for want of descriptors: no listener
    /// is served until then, or until a close frees a descriptor (which
    /// clears it).
    accept_paused_until: Option<Instant>,
    /// When housekeeping runs next: `HOUSEKEEPING_INTERVAL` after it last
    /// ran.
    next_housekeeping: Instant,
    /// Set once a shutdown has been requested, and never unset: the run
    /// ends when the last connection closes, or at this instant (or at once,
    /// on a second request).
    shutdown_deadline: Option<Instant>,
    /// Accepts and rejections, and the lines, bytes and close reasons of
    /// the connections closed so far; `summary` adds the open connections.
    totals: Summary,
}

impl Server {
    /// The addresses the listeners are bound to, with the ports the OS chose.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A handle that stops `run` from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdowns.handle()
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
        self.control.ready(&self.summary());
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
                let flow = match event.token() {
                    WAKER => {
                        let requests = self.shutdowns.take();
                        self.handle_requests(requests)
                    }
                    SIGNALS => {
                        let requests = self.control.signals();
                        self.handle_requests(requests)
                    }
                    Token(t) if LISTENERS.contains(&t) => {
                        self.accept_pending(t - LISTENERS.start);
                        Flow::Continue
                    }
                    Token(key) => {
                        self.drive(key, readiness(event));
                        Flow::Continue
                    }
                };
                if flow == Flow::Stop {
                    return Ok(self.finish_run());
                }
            }
            for key in serve_again.drain(..) {
                // Read until `WouldBlock`: whether the peer closed meanwhile
                // is no longer known, so a short read proves nothing.
                let ready = Readiness {
                    readable: true,
                    writable: false,
                    read_closed: true,
                };
                self.drive(key, ready);
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
            if self.control.stats_due(self.now) {
                let summary = self.summary();
                self.control.log_stats(self.now, summary);
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
            self.control.next_stats(),
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
                    self.control.accept_failed(self.now, &err);
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
                self.control.rejected(self.now, peer, self.max_connections);
                continue;
            }
            let entry = self.connections.vacant_entry();
            let key = entry.key();
            // Registered for reading only: an echo is written as soon as its
            // line is read, and WRITABLE is asked for only when a write
            // leaves output behind. If input is already queued, epoll reports
            // it on registration.
            if let Err(err) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE)
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
        let step = connection.on_ready(ready, &self.limits, &mut self.pool, self.now_ms);
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
        let mut connection = self.connections.remove(key);
        connection.release_buffer(&mut self.pool);
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
        self.control
            .overdue_warnings(self.now, self.max_connections);
        self.control.status(&Summary {
            open_connections: self.connections.len(),
            ..self.totals
        });
        self.control.publish(|| self.summary());
        let now_ms = self.now_ms;
        let idle_ms = self
            .idle_timeout
            .map_or(0, |timeout| timeout.as_millis() as u64);
        let linger_ms = LINGER.as_millis() as u64;
        // A sweep of every connection: a few nanoseconds each, once a second.
        let expired: Vec<(usize, CloseReason)> = self
            .connections
            .iter()
            .filter_map(|(key, connection)| {
                Some((key, connection.expired(now_ms, idle_ms, linger_ms)?))
            })
            .collect();
        for (key, reason) in expired {
            self.close(key, reason);
        }
    }

    /// Acts on requests from outside the loop, in order, and stops at the
    /// first that means "stop now".
    fn handle_requests(&mut self, requests: impl IntoIterator<Item = Request>) -> Flow {
        for request in requests {
            let flow = match request {
                Request::Shutdown { why } => self.begin_shutdown(why),
                Request::Summary => {
                    info!("summary: {}", self.summary());
                    Flow::Continue
                }
            };
            if flow == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Starts a graceful shutdown: listeners close, every connection stops
    /// reading and delivers what it owes. If a shutdown was already under
    /// way, the server stops at once instead.
    fn begin_shutdown(&mut self, why: &str) -> Flow {
        if self.shutdown_deadline.is_some() {
            warn!(
                "{}{why} again: exiting now, {} connections still open",
                self.control.label(),
                self.connections.len()
            );
            return Flow::Stop;
        }
        info!(
            "{}{why}: no longer accepting; delivering owed echoes to {} connections (up to {:?})",
            self.control.label(),
            self.connections.len(),
            self.shutdown_timeout
        );
        self.shutdown_deadline = Some(self.now + self.shutdown_timeout);
        self.control.stopping(self.connections.len());
        self.listeners.clear();
        self.accept_again = false;
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let now_ms = self.now_ms;
        for key in keys {
            let connection = &mut self.connections[key];
            let before = (connection.interest(), connection.state());
            let step = connection.begin_shutdown(&self.limits, &mut self.pool, now_ms);
            self.apply(key, before, step);
        }
        Flow::Continue
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

    /// The run is over: publishes and logs the totals, and returns them.
    fn finish_run(self) -> Summary {
        let summary = self.summary();
        self.control.publish(|| summary);
        info!("{}stopped: {summary}", self.control.label());
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

/// What one poll event tells a connection. An error or hang-up is reported
/// as both readable and writable, so that whichever operation the connection
/// tries next meets the error and closes it.
fn readiness(event: &Event) -> Readiness {
    Readiness {
        readable: event.is_readable() || event.is_read_closed() || event.is_error(),
        writable: event.is_writable() || event.is_write_closed() || event.is_error(),
        read_closed: event.is_read_closed(),
    }
}

/// EMFILE, ENFILE and friends: the process or the system is out of
/// descriptors or socket memory. Nothing is wrong with the listener.
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn millis_since(start: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(start).as_millis() as u64
}
