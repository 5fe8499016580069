//! The event loop: one `Poll`, the listeners, and every connection in a
//! `Slab`, on one thread.
//!
//! Read first: `run`, top to bottom; it is one turn of the loop. Then
//! `accept_pending` and `record_close`. How a `Server` is built (its poll,
//! its listeners' tokens, `StartError`) is in `server/setup.rs`. Driving
//! the connections from readiness (the slab, serve-again, applying each
//! `Step`) is `connections.rs`, which the loop hands its `Registry`; the
//! per-connection logic is in `connection.rs`. This module owns the `Poll`:
//! nothing else registers with it but `Connections`, through the registry
//! lent to each call, and `Control::attach`, which registers the signal
//! pipe at the token given to it here.
//!
//! What the loop hears from outside its sockets (signals, shutdown handles)
//! and says besides echoes (the stats line, systemd, a worker's totals,
//! rate-limited warnings) is `control.rs`'s; this file decides only what a
//! `Request` means for the connections.
//!
//! A connection's token is its slab key, so dispatch is a lookup with no map
//! and no offset. The few reserved tokens sit at the top of the range, which
//! a slab key can never reach.
//!
//! A slab key is reused as soon as its connection closes, so the log does
//! not name connections by key but by their connection id
//! (`Connection::id`), never reused while the process runs.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use log::{Level, debug, info, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Poll, Token};

use crate::allocator;
use crate::connection::{CloseReason, Readiness, State};
use crate::connections::{Accept, AcceptEnd, Closed, Connections, EXPIRY_SWEEP_MS};
use crate::control::{
    self, Control, Flow, Request, ShutdownHandle, ShutdownRequests, admit_peer_line,
};
use crate::listener::MAX_LISTENERS;
use crate::socket::Socket;
use crate::summary::{Closes, ConnectionCounts, Summary, counted};

mod setup;

pub use setup::StartError;
pub(crate) use setup::derived_max_connections;

/// The log target of every line the loop writes, `echod::server`, also
/// for the lines written in `setup` or by its `Control`: operators filter on
/// it.
const LOG_TARGET: &str = module_path!();

/// Fired by `ShutdownHandle::trigger`, from any thread.
const WAKER: Token = Token(usize::MAX);
/// The signals `control::SIGNALS` lists, delivered through a self-pipe.
const SIGNALS: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENERS.start + i`. Slab keys count up from 0
/// and never get near these.
const LISTENERS: Range<usize> = usize::MAX - 2 - MAX_LISTENERS..usize::MAX - 2;

/// Events taken from the kernel per `poll` call. More events per call mean
/// fewer calls under load; the rest wait for the next call, not lost.
const EVENTS_CAPACITY: usize = 1024;

/// How often housekeeping runs: idle and linger sweeps, warnings held back by
/// rate limiting, systemd's status and a worker's totals.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(EXPIRY_SWEEP_MS);

/// After `accept` fails for want of descriptors, wait this long before trying
/// again (unless a connection closes first and frees one).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

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
    /// Every open connection, at the key its token names, with the limits
    /// they are driven by. A connection is there exactly while its socket is
    /// open and registered.
    connections: Connections<Socket>,
    /// `connections.len()` never exceeds it: a newcomer beyond it first
    /// takes the slot of the connection quiet the longest (displacement,
    /// `Connections::accept_pending`); only if none is quiet enough is it
    /// accepted and closed at once.
    max_connections: usize,
    /// How long a graceful shutdown may take before the connections left
    /// are cut off.
    shutdown_timeout: Duration,
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
            self.connections.begin_turn();
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
                    // Every listener is accepted from after the events when
                    // one spent its budget last turn: one budget a turn.
                    Token(t) if LISTENERS.contains(&t) => {
                        if !accept_again {
                            self.accept_pending(t - LISTENERS.start);
                        }
                        Flow::Continue
                    }
                    Token(key) => {
                        let registry = self.poll.registry();
                        let ready = readiness(event);
                        if let Some(closed) =
                            self.connections.drive(registry, key, ready, self.now_ms)
                        {
                            self.record_close(closed);
                        }
                        Flow::Continue
                    }
                };
                if flow == Flow::Stop {
                    return Ok(self.finish_run());
                }
            }
            let closed = self
                .connections
                .serve_again(self.poll.registry(), self.now_ms);
            self.record_closes(closed);
            let evicted = self.connections.relieve_memory(self.now_ms);
            self.record_closes(evicted);
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
                    // Whatever each connection was still waiting for.
                    let closed = self.connections.close_all(|| CloseReason::ShutdownTimeout);
                    self.record_closes(closed);
                    return Ok(self.finish_run());
                }
            }
        }
    }

    /// How long `poll` may wait: not at all if work was left over, otherwise
    /// until the nearest deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.connections.want_another_turn() || self.accept_again {
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

    /// Accepts what listener `index` has queued, up to the accept budget
    /// (see `Connections::accept_pending`).
    fn accept_pending(&mut self, index: usize) {
        if self.accept_paused_until.is_some() {
            // Out of descriptors: the retry timer or the next close resumes.
            return;
        }
        let Some(listener) = self.listeners.get(index) else {
            return; // Closed by a shutdown earlier in this turn.
        };
        let (now, max_connections) = (self.now, self.max_connections);
        let (totals, control) = (&mut self.totals, &mut self.control);
        let (end, displaced) = self.connections.accept_pending(
            listener,
            self.poll.registry(),
            max_connections,
            self.now_ms,
            |attempt| match attempt {
                // At debug: a health check that connects and closes would
                // otherwise put a line a check into the info log. The close
                // line names the peer of every connection that did anything.
                Accept::Accepted { id, peer, .. } => {
                    totals.accepted += 1;
                    debug!("conn {id}: accepted from {peer}");
                }
                Accept::Rejected { peer } => {
                    totals.rejected += 1;
                    control.rejected(now, peer, max_connections);
                }
                Accept::TooManyFromAddress { peer } => {
                    totals.rejected += 1;
                    debug!("max-connections-per-ip reached: closed a new connection from {peer}");
                }
                Accept::Unregistered { peer, err } => {
                    if admit_peer_line(Level::Warn, LOG_TARGET) {
                        warn!("conn from {peer}: cannot register: {err}");
                    }
                }
            },
        );
        totals.peak_connections = totals.peak_connections.max(self.connections.len());
        self.record_closes(displaced);
        match end {
            AcceptEnd::Empty => {}
            AcceptEnd::BudgetSpent => self.accept_again = true,
            AcceptEnd::OutOfDescriptors(err) => {
                self.accept_paused_until = Some(self.now + ACCEPT_RETRY_DELAY);
                self.control.accept_failed(self.now, &err);
            }
        }
    }

    fn accept_all(&mut self) {
        for index in 0..self.listeners.len() {
            self.accept_pending(index);
        }
    }

    /// Counts a closed connection in the totals and logs why it closed:
    /// at `info` within the peer-line budget (`control::admit_peer_line`),
    /// since a peer decides how often connections close; a probe's close
    /// at `debug`, where nothing is held back.
    fn record_close(&mut self, closed: Closed<Socket>) {
        let Closed {
            connection, reason, ..
        } = closed;
        let id = connection.id();
        self.totals.lines += connection.lines();
        self.totals.bytes += connection.bytes_echoed();
        let received_nothing = !connection.received_any();
        self.totals.closes.record(&reason, received_nothing);
        if Closes::is_probe(&reason, received_nothing) {
            debug!(
                "conn {id}: closed without sending anything ({reason}); peer {}",
                connection.peer()
            );
        } else {
            // The allocator refusing memory is the operator's concern, not
            // only the client's: a warning, within the same budget.
            let level = if matches!(reason, CloseReason::OutOfMemory) {
                Level::Warn
            } else {
                Level::Info
            };
            if admit_peer_line(level, LOG_TARGET) {
                let counts = ConnectionCounts {
                    framing: self.connections.limits().framing,
                    lines_received: connection.lines(),
                    bytes_echoed: connection.bytes_echoed(),
                    bytes_owed: connection.pending_bytes() as u64,
                    received_any: connection.received_any(),
                };
                log::log!(
                    level,
                    "conn {id}: closed ({reason}); {counts}; peer {}",
                    connection.peer()
                );
            }
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

    fn record_closes(&mut self, closed: Vec<Closed<Socket>>) {
        for closed in closed {
            self.record_close(closed);
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
        let closed = self.connections.expire(self.now_ms);
        if self.connections.take_trim_hint() {
            allocator::give_back();
        }
        self.record_closes(closed);
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
                "{}{why} again: exiting now, {} still open",
                self.control.label(),
                counted(self.connections.len(), "connection")
            );
            return Flow::Stop;
        }
        info!(
            "{}{why}: no longer accepting; delivering owed echoes to {} (up to {:?})",
            self.control.label(),
            counted(self.connections.len(), "connection"),
            self.shutdown_timeout
        );
        self.shutdown_deadline = Some(self.now + self.shutdown_timeout);
        self.control.stopping(self.connections.len());
        self.listeners.clear();
        self.accept_again = false;
        let closed = self
            .connections
            .begin_shutdown(self.poll.registry(), self.now_ms);
        self.record_closes(closed);
        Flow::Continue
    }

    /// Totals so far, open connections included.
    fn summary(&self) -> Summary {
        let mut summary = self.totals;
        for (_, connection) in self.connections.iter() {
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
    /// The count of peer lines held back is logged first, whatever the
    /// second, so that the log adds up before its last line.
    fn finish_run(self) -> Summary {
        let summary = self.summary();
        self.control.publish(|| summary);
        control::report_held_back_lines(true);
        info!("{}stopped: {summary}", self.control.label());
        summary
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .field("connections", &self.connections.len())
            .field("limits", self.connections.limits())
            .field("max_connections", &self.max_connections)
            .field("shutting_down", &self.shutdown_deadline.is_some())
            .finish_non_exhaustive()
    }
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

fn millis_since(start: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(start).as_millis() as u64
}
