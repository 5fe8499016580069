//! Admission at `max_connections`: which quiet connection gives its slot
//! to a newcomer, how connections are counted by address for
//! `max_connections_per_ip`, and, under the PROXY protocol, the verdict on
//! the client a header names (`admit`).

use std::net::{IpAddr, SocketAddr};

use super::{ACCEPT_BUDGET, Closed, Connections, Registrar};
use crate::connection::{CloseReason, Readiness, Stream};

/// A connection quiet for this long (open, owing nothing, no line begun,
/// no byte moved) gives its slot to a newcomer at `max_connections`. Half a
/// second is far longer than the gap between an echo and a client's next
/// line, so a client in mid-conversation is not the one displaced, and
/// short enough that a newcomer locked out by idle slots is served within a
/// second.
pub const DISPLACE_QUIET_MS: u64 = 500;

/// What the per-address limit counts by: an IPv4 address, or the /64 an
/// IPv6 address is in (one host or site usually holds a whole /64, so a
/// limit per address would be no limit at all). IPv4-mapped IPv6
/// addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AddressKey {
    V4(u32),
    V6(u64),
}

impl AddressKey {
    pub(super) fn of(peer: SocketAddr) -> AddressKey {
        match peer.ip() {
            IpAddr::V4(ip) => AddressKey::V4(ip.to_bits()),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => AddressKey::V4(ip.to_bits()),
                None => AddressKey::V6((ip.to_bits() >> 64) as u64),
            },
        }
    }
}

impl<S: Stream> Connections<S> {
    /// Whether `address` already has `max_per_address` connections open.
    #[inline]
    pub(super) fn over_address_limit(&self, address: AddressKey) -> bool {
        self.max_per_address != usize::MAX
            && self.per_address.get(&address).copied().unwrap_or(0) >= self.max_per_address
    }

    /// The verdict on connection `key`, whose PROXY header has just been
    /// read: the access rules and the per-address limit judge the client
    /// it names, as they judge a peer at accept without the protocol. A
    /// refused client is closed without a byte of its input read; an
    /// admitted one is counted by address and served at once, because the
    /// input after its header is queued already and no edge will announce
    /// it (`connection/header.rs`).
    ///
    /// A header that names no client (a v2 `LOCAL` one, a balancer's
    /// health check) is the balancer speaking for itself, and
    /// `--proxy-from` has already admitted it: the rules meant for clients
    /// are not applied to it, and it is counted under its own address.
    pub(super) fn admit(
        &mut self,
        registrar: &impl Registrar<S>,
        key: usize,
        named_client: bool,
        now_ms: u64,
    ) -> Option<Closed<S>> {
        let peer = self.slab[key].peer();
        let address = AddressKey::of(peer);
        if named_client {
            if !self.access.admits_all() && !self.access.admits(peer.ip()) {
                return Some(self.close(key, CloseReason::Denied));
            }
            if self.over_address_limit(address) {
                return Some(self.close(key, CloseReason::TooManyFromAddress));
            }
        }
        if self.max_per_address != usize::MAX {
            *self.per_address.entry(address).or_insert(0) += 1;
        }
        self.slab[key].admit();
        self.drive(registrar, key, Readiness::SERVE_AGAIN, now_ms)
    }

    /// Up to `ACCEPT_BUDGET` connections quiet for `DISPLACE_QUIET_MS` or
    /// more, as `(quiet since, key, id)`, the quietest last.
    pub(super) fn quietest(&self, now_ms: u64) -> Vec<(u64, usize, u64)> {
        let mut quiet: Vec<(u64, usize, u64)> = self
            .slab
            .iter()
            .filter_map(|(key, connection)| {
                let since_ms = connection.quiet_since_ms()?;
                (now_ms.saturating_sub(since_ms) >= DISPLACE_QUIET_MS).then_some((
                    since_ms,
                    key,
                    connection.id(),
                ))
            })
            .collect();
        // A full sort only of the few that are needed: the rest stay.
        if quiet.len() > ACCEPT_BUDGET {
            quiet.select_nth_unstable(ACCEPT_BUDGET);
            quiet.truncate(ACCEPT_BUDGET);
        }
        quiet.sort_unstable_by(|a, b| b.cmp(a));
        quiet
    }

    /// Closes the quietest candidate that is still open and still quiet.
    pub(super) fn displace(
        &mut self,
        registrar: &impl Registrar<S>,
        candidates: &mut Vec<(u64, usize, u64)>,
        now_ms: u64,
    ) -> Option<Closed<S>> {
        while let Some((_, key, id)) = candidates.pop() {
            let still_quiet = self.slab.get(key).is_some_and(|connection| {
                connection.id() == id
                    && connection.quiet_since_ms().is_some_and(|since_ms| {
                        now_ms.saturating_sub(since_ms) >= DISPLACE_QUIET_MS
                    })
            });
            if still_quiet {
                let mut closed = self.close(key, CloseReason::Displaced);
                // Its socket stays open until the loop has logged the close,
                // and its key goes to the newcomer now, so deregister it:
                // nothing the kernel reports for it later can reach the
                // newcomer. Its events already in this turn's batch still
                // can, as can all of them if deregistering fails (it stays
                // registered until it is dropped, this turn). That is
                // harmless: an event is a hint, it never closes a connection
                // (only syscall results do), and the newcomer reads, finds
                // `WouldBlock` or its own bytes, and waits, as for any
                // spurious event.
                let _ = registrar.deregister(closed.connection.stream_mut());
                return Some(closed);
            }
        }
        None
    }
}
