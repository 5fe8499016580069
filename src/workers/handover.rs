//! An upgrade in place with `--workers`: how the workers' parts become one
//! handover (`merge`, in the program that hands over), and how one handover
//! is shared out among the loops of the program that takes over (`split`).
//!
//! The form is the same as a single loop's, so either program may run any
//! number of loops: what one worker or one loop handed over, any number of
//! loops can take. The new program usually runs as many loops as the old
//! one (it is re-executed with the same arguments), but a program file that
//! is a wrapper, or another build, may ask for more or fewer.
//!
//! Listening sockets are never closed, bound again or added: a closed
//! listener would drop the connections in its accept queue, the very loss
//! an upgrade must not cause. So with as many loops as before, each takes
//! one socket per address as each worker had; with fewer, a loop takes
//! several (all are polled, none is lost); with more, the extra loops poll
//! a duplicate of a socket another loop has, as under socket activation,
//! and whichever loop is free first accepts.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use mio::net::TcpListener;

use crate::connection::next_connection_id;
use crate::handover::Handover;
use crate::summary::Summary;
use crate::{listener, server};

/// One handover from every worker's part: all their listeners and
/// connections, their totals added up, and the process's next connection id
/// (the workers are waiting, so it no longer moves).
pub(super) fn merge(parts: Vec<Handover>) -> Handover {
    let mut totals = Summary::default();
    let mut merged = Handover::default();
    for part in parts {
        let mut summary = Summary::default();
        summary.restore_counters(&part.counters);
        totals += summary;
        merged.listeners.extend(part.listeners);
        merged.metrics_listeners.extend(part.metrics_listeners);
        merged.connections.extend(part.connections);
    }
    merged.counters = totals.counters();
    merged.next_connection_id = next_connection_id();
    merged
}

/// What one loop of the program that takes over is given: its listening
/// sockets and its share of the handover (its connections; the totals go
/// to the first loop alone, so that the sum over the loops is the total).
pub(super) struct Share {
    /// Its listening sockets, ready for a loop.
    pub(super) listeners: Vec<TcpListener>,
    /// Its connections and (for the first) the totals. Its `listeners` and
    /// `metrics_listeners` are empty: the sockets are in `listeners`, and
    /// the metrics endpoint is the caller's.
    pub(super) handover: Handover,
}

/// Shares `handover` out among `n_loops` loops. The listening sockets are
/// taken from the handover once each; connection `k` goes to loop
/// `k % n_loops`, so each loop gets as many as the others, give or take
/// one.
///
/// # Errors
///
/// A listening socket cannot be taken or duplicated.
pub(super) fn split(handover: Handover, n_loops: usize) -> io::Result<Vec<Share>> {
    let listeners = server::take_listeners(&handover.listeners)?;
    // The sockets on each address, in the order they were handed over.
    let mut by_address: Vec<(SocketAddr, Vec<TcpListener>)> = Vec::new();
    for (listener, record) in listeners.into_iter().zip(&handover.listeners) {
        match by_address.iter_mut().find(|(a, _)| *a == record.address) {
            Some((_, sockets)) => sockets.push(listener),
            None => by_address.push((record.address, vec![listener])),
        }
    }
    let mut shares: Vec<Share> = (0..n_loops)
        .map(|_| Share {
            listeners: Vec::new(),
            handover: Handover::default(),
        })
        .collect();
    for (_, sockets) in by_address {
        let n_sockets = sockets.len();
        // Duplicates first, while every socket is still at hand: a loop
        // beyond the sockets on this address polls a copy of one.
        for (i, share) in shares.iter_mut().enumerate().skip(n_sockets) {
            let copy = sockets[i % n_sockets].as_fd().try_clone_to_owned()?;
            share
                .listeners
                .push(listener::adopt(std::net::TcpListener::from(copy))?);
        }
        for (i, socket) in sockets.into_iter().enumerate() {
            shares[i % n_loops].listeners.push(socket);
        }
    }
    for (k, connection) in handover.connections.into_iter().enumerate() {
        shares[k % n_loops].handover.connections.push(connection);
    }
    // The process's peak is the sum of the loops' peaks; each loop's starts
    // at the connections it takes (`Server::take_over`), so the first
    // carries the rest of it.
    let elsewhere: usize = shares
        .iter()
        .skip(1)
        .map(|share| share.handover.connections.len())
        .sum();
    let mut counters = handover.counters;
    for (name, value) in &mut counters {
        if name == "peak_connections" {
            *value = value.saturating_sub(elsewhere as u64);
        }
    }
    if let Some(first) = shares.first_mut() {
        first.handover.counters = counters;
        first.handover.next_connection_id = handover.next_connection_id;
    }
    Ok(shares)
}
