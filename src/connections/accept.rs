//! The accept loop: taking queued connections from a listener until its
//! backlog is empty or the turn's accept budget is spent, and what each
//! attempt came to. Who may take a slot (the per-address limit,
//! displacement at `max_connections`) is `admission.rs`'s.

use std::io;
use std::net::SocketAddr;

use super::admission::AddressKey;
use super::{Closed, Connections, Registrar};
use crate::connection::{Connection, FIRST_INTEREST, Stream};

/// Connections accepted from one listener per turn, so that a connect flood
/// cannot starve the clients already connected.
pub const ACCEPT_BUDGET: usize = 128;

/// A listening socket, as the accept loop sees it.
pub trait Listener<S> {
    /// Accepts one queued connection.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when none is queued; anything else as `accept(2)`.
    fn accept(&self) -> io::Result<(S, SocketAddr)>;
}

/// What one connection attempt came to in `accept_pending`.
#[derive(Debug)]
pub enum Accept {
    /// Accepted and registered under `key`.
    Accepted {
        /// The new connection's key.
        key: usize,
        /// Its connection id, which the log shows (`Connection::id`).
        id: u64,
        /// Its peer.
        peer: SocketAddr,
    },
    /// Accepted and closed at once: `max_connections` are open, and none
    /// has been quiet long enough to give its slot up.
    Rejected {
        /// Its peer.
        peer: SocketAddr,
    },
    /// Accepted and closed at once, without a byte read: under
    /// `--proxy-protocol`, its address is not a `--proxy-from` source, so
    /// no header it sends could be believed.
    Untrusted {
        /// Its peer.
        peer: SocketAddr,
    },
    /// Accepted and closed at once, without a byte read: the access rules
    /// (`--allow`, `--deny`) do not admit its address.
    Denied {
        /// Its peer.
        peer: SocketAddr,
    },
    /// Accepted and closed at once: its address (its /64, for IPv6)
    /// already has `max_connections_per_ip` open.
    TooManyFromAddress {
        /// Its peer.
        peer: SocketAddr,
    },
    /// Accepted, but it could not be registered, so it was closed.
    Unregistered {
        /// Its peer.
        peer: SocketAddr,
        /// Why.
        err: io::Error,
    },
}

/// Why `accept_pending` stopped.
#[derive(Debug)]
pub enum AcceptEnd {
    /// The backlog is empty (`WouldBlock`).
    Empty,
    /// `ACCEPT_BUDGET` connections were taken; more may be queued, and no new
    /// edge will say so: accept again next turn.
    BudgetSpent,
    /// The process or system is out of descriptors (or socket memory). The
    /// connection stays queued in the kernel; retrying at once would fail
    /// the same way.
    OutOfDescriptors(io::Error),
}

impl<S: Stream> Connections<S> {
    /// Accepts from `listener` until its backlog is empty or `ACCEPT_BUDGET`
    /// is spent. The listener is edge-triggered: one event may stand for
    /// many queued connections, and none of them will be announced again.
    /// Each attempt is reported to `tell`, in order.
    ///
    /// At `max_connections`, a newcomer takes the slot of the connection
    /// that has been quiet the longest (open, owing nothing, no line begun,
    /// nothing moved for `DISPLACE_QUIET_MS`): it is closed, and returned
    /// with the reason `Displaced`. Only when none is that quiet is the
    /// newcomer refused. So slots held by clients that do nothing cannot
    /// lock out the ones that come to echo (nginx reclaims idle keepalive
    /// connections the same way).
    pub fn accept_pending(
        &mut self,
        listener: &impl Listener<S>,
        registrar: &impl Registrar<S>,
        max_connections: usize,
        now_ms: u64,
        mut tell: impl FnMut(Accept),
    ) -> (AcceptEnd, Vec<Closed<S>>) {
        let mut displaced = Vec::new();
        // The quietest connections, quietest last, found once per call.
        let mut quietest: Option<Vec<(u64, usize, u64)>> = None;
        for _ in 0..ACCEPT_BUDGET {
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return (AcceptEnd::Empty, displaced);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if out_of_descriptors(&err) => {
                    return (AcceptEnd::OutOfDescriptors(err), displaced);
                }
                Err(err) => {
                    // ECONNABORTED and the like: that one connection failed
                    // before we took it, the listener is fine.
                    log::debug!("accept failed: {err}");
                    continue;
                }
            };
            // Accepting and closing at once tells the client plainly; a
            // connection left in the backlog would just hang. Dropped
            // unread: a refused client is told nothing else.
            let address = AddressKey::of(peer);
            match &self.proxy_from {
                // Behind a balancer, the peer is the balancer: the client,
                // whom the rules and the limit are for, is named by the
                // header (`admit`).
                Some(proxy_from) => {
                    if !proxy_from.admits(peer.ip()) {
                        tell(Accept::Untrusted { peer });
                        continue;
                    }
                }
                None => {
                    if !self.access.admits_all() && !self.access.admits(peer.ip()) {
                        tell(Accept::Denied { peer });
                        continue;
                    }
                    if self.over_address_limit(address) {
                        tell(Accept::TooManyFromAddress { peer });
                        continue;
                    }
                }
            }
            if self.slab.len() >= max_connections {
                let candidates = quietest.get_or_insert_with(|| self.quietest(now_ms));
                match self.displace(registrar, candidates, now_ms) {
                    Some(closed) => displaced.push(closed),
                    None => {
                        tell(Accept::Rejected { peer });
                        continue;
                    }
                }
            }
            let entry = self.slab.vacant_entry();
            let key = entry.key();
            if let Err(err) = registrar.register(&mut stream, key, FIRST_INTEREST) {
                tell(Accept::Unregistered { peer, err });
                continue;
            }
            // Built in one place whichever it is, and straight into the slab.
            let connection = entry.insert(Connection::new(stream, peer, now_ms));
            if self.proxy_from.is_some() {
                connection.await_header();
            }
            let id = connection.id();
            // Only the idle timeout runs for a connection holding nothing
            // (and the header's wait for one that awaits a header).
            self.arm(key, now_ms);
            if self.max_per_address != usize::MAX && self.proxy_from.is_none() {
                *self.per_address.entry(address).or_insert(0) += 1;
            }
            tell(Accept::Accepted { key, id, peer });
        }
        (AcceptEnd::BudgetSpent, displaced)
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
