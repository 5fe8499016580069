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
//! The metrics endpoint (`--metrics-listen`, `metrics.rs`) is served here
//! too, at tokens of its own; the loop's side of it, with the totals it
//! reports, is `server/reporting.rs`.
//!
//! A connection's token is its slab key, so dispatch is a lookup with no map
//! and no offset. The few reserved tokens sit at the top of the range, which
//! a slab key can never reach.
//!
//! A slab key is reused as soon as its connection closes, so the log does
//! not name connections by key but by their connection id
//! (`Connection::id`), never reused while the process runs.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Poll, Token};

use crate::allocator;
use crate::connection::{CloseReason, Readiness};
use crate::connections::{Accept, AcceptEnd, Connections};
use crate::control::{Control, Flow, Request, ShutdownHandle, ShutdownRequests};
use crate::listener::MAX_LISTENERS;
use crate::metrics::{self, Endpoint};
use crate::socket::Socket;
use crate::summary::{Summary, counted};
use clock::Clock;

mod clock;
mod reporting;
mod setup;
pub mod turn;
mod upgrade;

pub use setup::StartError;
pub(crate) use setup::derived_max_connections;
use turn::{Event, Outside, Steps, TurnState};
pub use upgrade::take_listeners;

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
/// The metrics endpoint's listeners and scrapers (`metrics::TOKENS`),
/// just below the listeners'.
const METRICS: Range<usize> = LISTENERS.start - metrics::TOKENS..LISTENERS.start;

/// Events taken from the kernel per `poll` call. More events per call mean
/// fewer calls under load; the rest wait for the next call, not lost.
const EVENTS_CAPACITY: usize = 1024;

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
    /// The millisecond clock the loop and its connections use, read once
    /// a turn.
    clock: Clock,
    /// The loop's own flags and deadlines (accepting again, the accept
    /// pause, housekeeping, the shutdown), and the turn's time on `clock`:
    /// see `turn.rs`.
    turn: TurnState,
    /// Accepts and rejections, and the lines, bytes and close reasons of
    /// the connections closed so far; `summary` adds the open connections.
    totals: Summary,
    /// The metrics endpoint, if `--metrics-listen` gave it addresses: its
    /// sockets are registered at `METRICS`. Dropped, closing them, when a
    /// shutdown begins.
    metrics: Option<Endpoint>,
    /// The check of the new program, while an upgrade (SIGUSR2) waits for
    /// it: see `server/upgrade.rs`.
    upgrade: Option<crate::upgrade::Check>,
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
            let now_ms = self.clock.now_ms();
            // Connections first: nearly every event is one's, and every
            // reserved token is at or above `METRICS.start`, so one
            // comparison tells.
            let events = events.iter().map(|event| match event.token() {
                Token(key) if key < METRICS.start => Event::Connection {
                    key,
                    ready: readiness(event),
                },
                WAKER => Event::Outside(Outside::Waker),
                SIGNALS => Event::Outside(Outside::Signals),
                Token(t) if LISTENERS.contains(&t) => Event::Listener(t - LISTENERS.start),
                // The endpoint's range (the one token left, between the
                // listeners and the signals, is never registered).
                Token(t) => Event::Metrics(t - METRICS.start),
            });
            match turn::turn(&mut self, now_ms, events) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return Ok(self.finish_run()),
                Err(never) => match never {},
            }
        }
    }

    /// How long `poll` may wait: not at all if work was left over, otherwise
    /// until the nearest deadline, counted from the time of the turn just
    /// run rather than from a new reading of the clock (nginx's timers use
    /// its cached time the same way): a deadline may be met late by the
    /// length of one turn, and a turn costs one clock reading, not two.
    fn poll_timeout(&self) -> Option<Duration> {
        let scrapers_queued = self
            .metrics
            .as_ref()
            .is_some_and(Endpoint::wants_another_turn);
        if self.connections.want_another_turn() || self.turn.accept_again() || scrapers_queued {
            return Some(Duration::ZERO);
        }
        let loop_wait = Duration::from_millis(
            self.turn
                .next_deadline_ms()
                .saturating_sub(self.turn.now_ms()),
        );
        // The stats line's schedule is kept in `Instant`s (see `clock_work`).
        Some(match self.control.next_stats() {
            Some(due) => loop_wait.min(due.saturating_duration_since(Instant::now())),
            None => loop_wait,
        })
    }
}

/// The server's steps of a turn (`turn.rs` has their order): each calls
/// into `Connections` and turns what comes back into totals and log lines.
impl Steps for Server {
    type Fault = Infallible;

    fn turn_state(&mut self) -> &mut TurnState {
        &mut self.turn
    }

    fn begin_turn(&mut self) -> Result<(), Infallible> {
        self.connections.begin_turn();
        Ok(())
    }

    fn requests(&mut self, from: Outside) -> Result<Vec<Request>, Infallible> {
        Ok(match from {
            Outside::Waker => {
                let mut requests: Vec<Request> = self.shutdowns.take().collect();
                // For a worker, the coordinator's check answered and it
                // orders this loop to hand over (`finish_upgrade`).
                if self.upgrade_answered() || self.shutdowns.hand_over_ordered() {
                    requests.push(Request::UpgradeChecked);
                }
                requests
            }
            Outside::Signals => self.control.signals(),
        })
    }

    fn summary_requested(&mut self) -> Result<(), Infallible> {
        info!("summary: {}", self.summary());
        Ok(())
    }

    fn upgrade_requested(&mut self) -> Result<(), Infallible> {
        self.begin_upgrade();
        Ok(())
    }

    fn upgrade_checked(&mut self) -> Result<(), Infallible> {
        self.finish_upgrade();
        Ok(())
    }

    /// Listeners close, every connection stops reading and delivers what it
    /// owes.
    fn begin_shutdown(&mut self, why: &str) -> Result<usize, Infallible> {
        info!(
            "{}{why}: no longer accepting; delivering owed echoes to {} (up to {:?})",
            self.control.label(),
            counted(self.connections.len(), "connection"),
            self.shutdown_timeout
        );
        self.control.stopping(self.connections.len());
        self.listeners.clear();
        self.metrics = None;
        let closed = self
            .connections
            .begin_shutdown(self.poll.registry(), self.turn.now_ms());
        Ok(self.record_closes(closed))
    }

    fn stop_now(&mut self, why: &str) -> Result<(), Infallible> {
        warn!(
            "{}{why} again: exiting now, {} still open",
            self.control.label(),
            counted(self.connections.len(), "connection")
        );
        Ok(())
    }

    fn listeners(&self) -> usize {
        self.listeners.len()
    }

    /// Accepts what listener `index` has queued, up to the accept budget
    /// (see `Connections::accept_pending`).
    fn accept(&mut self, index: usize) -> Result<(AcceptEnd, usize), Infallible> {
        let listener = &self.listeners[index];
        let max_connections = self.max_connections;
        let (totals, control) = (&mut self.totals, &mut self.control);
        let (end, displaced) = self.connections.accept_pending(
            listener,
            self.poll.registry(),
            max_connections,
            self.turn.now_ms(),
            |attempt| match attempt {
                // At debug: a health check that connects and closes would
                // otherwise put a line a check into the info log. The close
                // line names the peer of every connection that did anything.
                Accept::Accepted { id, peer, .. } => {
                    totals.accepted += 1;
                    debug!("conn {id}: accepted from {peer}");
                }
                // Out of line (`reporting.rs`): the accept of every
                // connection carries only the arm above.
                refused => reporting::record_refusal(refused, totals, control, max_connections),
            },
        );
        totals.peak_connections = totals.peak_connections.max(self.connections.len());
        if let AcceptEnd::OutOfDescriptors(err) = &end {
            self.control.accept_failed(Instant::now(), err);
        }
        Ok((end, self.record_closes(displaced)))
    }

    fn metrics(&mut self, index: usize) -> Result<(), Infallible> {
        self.scrape(index);
        Ok(())
    }

    fn drive(&mut self, key: usize, ready: Readiness) -> Result<usize, Infallible> {
        let registry = self.poll.registry();
        let now_ms = self.turn.now_ms();
        let closed = self.connections.drive(registry, key, ready, now_ms);
        Ok(match &closed {
            Some(closed) => {
                self.record_close(closed);
                1
            }
            None => 0,
        })
    }

    fn serve_again(&mut self) -> Result<usize, Infallible> {
        self.accept_scrapers_again();
        let closed = self
            .connections
            .serve_again(self.poll.registry(), self.turn.now_ms());
        Ok(self.record_closes(closed))
    }

    fn relieve_memory(&mut self) -> Result<usize, Infallible> {
        let evicted = self.connections.relieve_memory(self.turn.now_ms());
        Ok(self.record_closes(evicted))
    }

    /// Once a second: close the connections whose deadlines passed, give
    /// freed memory back, report warnings that rate limiting held back,
    /// systemd's status and a worker's totals.
    fn housekeeping(&mut self) -> Result<usize, Infallible> {
        self.control
            .overdue_warnings(Instant::now(), self.max_connections);
        self.control.status(&Summary {
            open_connections: self.connections.len(),
            ..self.totals
        });
        self.control.publish(|| self.summary());
        self.expire_scrapers();
        let closed = self.connections.expire(self.turn.now_ms());
        if self.connections.take_trim_hint() {
            allocator::give_back();
        }
        Ok(self.record_closes(closed))
    }

    fn clock_work(&mut self) -> Result<(), Infallible> {
        // The stats line's schedule is kept in `Instant`s: read one only
        // when there is a stats line at all.
        if self.control.next_stats().is_some() {
            let now = Instant::now();
            if self.control.stats_due(now) {
                let summary = self.summary();
                self.control.log_stats(now, summary);
            }
        }
        Ok(())
    }

    fn no_connections(&self) -> bool {
        self.connections.is_empty()
    }

    fn close_all(&mut self) -> Result<(), Infallible> {
        let closed = self.connections.close_all(|| CloseReason::ShutdownTimeout);
        self.record_closes(closed);
        Ok(())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .field("connections", &self.connections.len())
            .field("limits", self.connections.limits())
            .field("max_connections", &self.max_connections)
            .field("shutting_down", &self.turn.shutting_down())
            .finish_non_exhaustive()
    }
}

/// What one poll event tells a connection.
fn readiness(event: &mio::event::Event) -> Readiness {
    Readiness::of_event(
        event.is_readable(),
        event.is_writable(),
        event.is_read_closed(),
        event.is_write_closed(),
        event.is_error(),
    )
}
