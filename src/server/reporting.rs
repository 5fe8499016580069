//! What the loop reports of itself: each close, counted in its totals and
//! told in its close line (`record_close`); each new connection refused,
//! counted and told in its own line (`record_refusal`); the totals (the summary that
//! the SIGUSR1 line, the stats line, a worker's published totals and a
//! scrape all start from); and the metrics endpoint that serves them
//! (`--metrics-listen`, `metrics.rs`).
//!
//! The endpoint's hooks in `server.rs` are one line each: its tokens' events
//! come here through `Steps::metrics`, its accept leftovers through
//! `serve_again`, its deadlines through housekeeping. With no endpoint each
//! costs one test of an `Option` per turn, and nothing per line.

use std::time::Instant;

use log::{Level, debug, info, warn};

use super::{LOG_TARGET, METRICS, Server, StartError};
use crate::connection::{CloseReason, State};
use crate::connections::{Accept, Closed, Connections};
use crate::control::{self, Control, admit_peer_line};
use crate::metrics::Endpoint;
use crate::socket::Socket;
use crate::summary::{Closes, ConnectionCounts, Summary};

impl Server {
    /// Serves `endpoint` from this loop: registers its listeners at the
    /// tokens reserved for it (`METRICS`).
    ///
    /// # Errors
    ///
    /// `StartError::Setup` if a listener cannot be registered.
    pub fn serve_metrics(mut self, mut endpoint: Endpoint) -> Result<Server, StartError> {
        endpoint
            .attach(self.poll.registry(), METRICS.start)
            .map_err(StartError::Setup)?;
        for address in endpoint.local_addrs() {
            info!(target: LOG_TARGET, "{}metrics at http://{address}/metrics", self.control.label());
        }
        self.metrics = Some(endpoint);
        Ok(self)
    }

    /// The addresses the metrics endpoint is bound to; none without one.
    pub fn metrics_addrs(&self) -> &[std::net::SocketAddr] {
        self.metrics.as_ref().map_or(&[], Endpoint::local_addrs)
    }

    /// Totals so far, open connections included.
    pub(super) fn summary(&self) -> Summary {
        summary_of(&self.totals, &self.connections)
    }

    /// Hands the event of the endpoint's token `index` to it; a response
    /// due now reports the totals as they are at this point of the turn.
    pub(super) fn scrape(&mut self, index: usize) {
        if let Some(endpoint) = &mut self.metrics {
            let (totals, connections) = (&self.totals, &self.connections);
            endpoint.on_event(self.poll.registry(), index, self.turn.now_ms(), || {
                summary_of(totals, connections)
            });
        }
    }

    /// Accepts the scrapers a metrics listener left queued last turn.
    pub(super) fn accept_scrapers_again(&mut self) {
        if let Some(endpoint) = &mut self.metrics {
            endpoint.serve_again(self.poll.registry(), self.turn.now_ms());
        }
    }

    /// Closes the scrapers too slow for their deadline.
    pub(super) fn expire_scrapers(&mut self) {
        if let Some(endpoint) = &mut self.metrics {
            endpoint.expire(self.turn.now_ms());
        }
    }
}

/// The loop's totals so far: those of the closed connections, `totals`,
/// with the open ones' counts and the loop's own counters added. It visits
/// every open connection, so it is taken when asked for (a scrape, a
/// summary, once a second for a worker), never per event.
fn summary_of(totals: &Summary, connections: &Connections<Socket>) -> Summary {
    let mut summary = *totals;
    for (_, connection) in connections.iter() {
        summary.lines += connection.lines();
        summary.bytes += connection.bytes_echoed();
        if connection.state() == State::Paused {
            summary.paused_connections += 1;
        }
    }
    summary.open_connections = connections.len();
    summary.bytes_received = connections.received_bytes();
    summary.buffer_bytes = connections.memory_used();
    summary.buffer_budget_bytes = connections.memory_limit();
    summary
}

impl Server {
    /// Counts a closed connection in the totals and logs why it closed:
    /// at `info` within the peer-line budget (`control::admit_peer_line`),
    /// since a peer decides how often connections close; a probe's close
    /// at `debug`, where nothing is held back. The record is read where it
    /// lies, not moved (a connection is over a hundred bytes); its socket
    /// closes when the caller drops it, which also removes it from the epoll
    /// set (an explicit deregister would cost an `epoll_ctl`).
    pub(super) fn record_close(&mut self, closed: &Closed<Socket>) {
        let Closed {
            connection, reason, ..
        } = closed;
        let id = connection.id();
        self.totals.lines += connection.lines();
        self.totals.bytes += connection.bytes_echoed();
        let received_nothing = !connection.received_any();
        self.totals.closes.record(reason, received_nothing);
        if Closes::is_probe(reason, received_nothing) {
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
    }

    /// Records each close, and says how many there were. Inlined, so that
    /// the calls of every turn that close nothing (nearly all) cost a test.
    #[inline]
    pub(super) fn record_closes(&mut self, closed: Vec<Closed<Socket>>) -> usize {
        if closed.capacity() == 0 {
            // A list that never allocated owns nothing, so there is nothing
            // to drop: skipping its (out of line) drop saves a call a turn.
            std::mem::forget(closed);
            return 0;
        }
        self.record_each(closed)
    }

    fn record_each(&mut self, closed: Vec<Closed<Socket>>) -> usize {
        for closed in &closed {
            self.record_close(closed);
        }
        closed.len()
    }

    /// The run is over: publishes and logs the totals, and returns them.
    /// The count of peer lines held back is logged first, whatever the
    /// second, so that the log adds up before its last line.
    pub(super) fn finish_run(self) -> Summary {
        let summary = self.summary();
        self.control.publish(|| summary);
        control::report_held_back_lines(true);
        info!("{}stopped: {summary}", self.control.label());
        summary
    }
}

/// Counts and logs a new connection `accept_pending` closed at once, under
/// the loop's log target as every accept line is. Out of line: refusals
/// are rare, and the accept of every other connection does not carry them.
#[cold]
pub(super) fn record_refusal(
    attempt: Accept,
    totals: &mut Summary,
    control: &mut Control,
    max_connections: usize,
) {
    match attempt {
        // Not a refusal: counted and told in line, by the accept's caller.
        Accept::Accepted { .. } => {}
        Accept::Rejected { peer } => {
            totals.rejected += 1;
            control.rejected(Instant::now(), peer, max_connections);
        }
        Accept::Untrusted { peer } => {
            totals.rejected += 1;
            totals.rejected_untrusted += 1;
            if admit_peer_line(Level::Info, LOG_TARGET) {
                info!(
                    target: LOG_TARGET,
                    "not a --proxy-from source: closed a new connection from {peer} unread"
                );
            }
        }
        Accept::Denied { peer } => {
            totals.rejected += 1;
            totals.denied += 1;
            if admit_peer_line(Level::Info, LOG_TARGET) {
                info!(
                    target: LOG_TARGET,
                    "denied by --allow/--deny: closed a new connection from {peer}"
                );
            }
        }
        Accept::TooManyFromAddress { peer } => {
            totals.rejected += 1;
            totals.rejected_per_ip += 1;
            debug!(
                target: LOG_TARGET,
                "max-connections-per-ip reached: closed a new connection from {peer}"
            );
        }
        Accept::Unregistered { peer, err } => {
            if admit_peer_line(Level::Warn, LOG_TARGET) {
                warn!(target: LOG_TARGET, "conn from {peer}: cannot register: {err}");
            }
        }
    }
}
