//! Every open connection, and the rules for driving them from readiness:
//! the slab, the serve-again list, the shared read buffer, and how a
//! connection's `Step` becomes a registration change or a close.
//!
//! Read this after `server.rs`, whose loop calls it, and before
//! `connection.rs`, which it calls. It is generic over the stream and over
//! a `Registrar`, the only part of the poll instance it needs, so that the
//! simulation in `tests/sim` runs this very code on a simulated kernel.
//!
//! It logs nothing on a close: a `Closed` goes back to the caller, which
//! keeps the totals and writes the close line.
//!
//! The serve-again list, which makes a busy client wait its turn, is
//! `again`. Three defences live in rooms of their own beside it, each an
//! `impl` of `Connections`: `deadlines` (the timeouts and linger, from a queue),
//! `memory` (the memory budget and eviction) and `admission` (who gives up
//! a slot at `max_connections`, and the per-address count). The accept
//! loop that admission guards is `accept`.

use std::collections::HashMap;
use std::io;

use log::warn;
use mio::Interest;
use slab::Slab;

use crate::access::Access;
use crate::buffer::ReadBuffer;
use crate::connection::{
    CloseReason, Connection, Finish, Limits, Readiness, State, Step, Stream, Timeouts, Usual,
    Waiting,
};

mod accept;
mod admission;
mod again;
mod deadline_queue;
mod deadlines;
mod handover;
mod memory;

pub use accept::{ACCEPT_BUDGET, Accept, AcceptEnd, Listener};
pub use admission::DISPLACE_QUIET_MS;
pub use deadlines::EXPIRY_SWEEP_MS;
pub use memory::EVICT_STALLED_MS;

use admission::AddressKey;
use deadline_queue::DeadlineQueue;

/// What the connections need of the poll instance: to register a stream
/// under its key, and to change what it is registered for. `socket.rs`
/// implements it over mio's `Registry`; the simulation over its own kernel.
/// A stream is deregistered by dropping it (closing a socket removes it
/// from the epoll set); `deregister` is for a key reused before then.
pub trait Registrar<S> {
    /// Registers `stream` under token `key` for `interest`.
    ///
    /// # Errors
    ///
    /// The system refused (out of memory, or the descriptor is bad).
    fn register(&self, stream: &mut S, key: usize, interest: Interest) -> io::Result<()>;

    /// Changes what `stream`, registered under `key`, waits for. Like
    /// `EPOLL_CTL_MOD`, it reports at once any readiness already there.
    ///
    /// # Errors
    ///
    /// As `register`.
    fn reregister(&self, stream: &mut S, key: usize, interest: Interest) -> io::Result<()>;

    /// Removes `stream` from the poll instance before it is dropped: only
    /// where its key is given to another stream at once (a displaced
    /// connection), so that no event the kernel reports later for the old
    /// one reaches the new. Events of the old one already in the batch
    /// being dispatched can still reach the new one; that is harmless,
    /// because an event is only a hint: it never closes a connection (only
    /// what a read, write or registration returns does), and the newcomer
    /// tolerates a spurious one like any other.
    ///
    /// # Errors
    ///
    /// As `register`.
    fn deregister(&self, stream: &mut S) -> io::Result<()>;
}

/// A connection that has been closed: removed from the slab, its socket
/// still open until the value is dropped.
#[derive(Debug)]
pub struct Closed<S> {
    /// Its key (and token) while it was open; the slab may reuse it at once.
    pub key: usize,
    /// The connection, with its counters.
    pub connection: Connection<S>,
    /// Why it was closed.
    pub reason: CloseReason,
}

/// Every open connection of one event loop.
#[derive(Debug)]
pub struct Connections<S> {
    /// The open connections; a connection's key is its token.
    slab: Slab<Connection<S>>,
    /// Connections that spent their read budget this turn, in the order they
    /// did: served next turn, without an event, because the kernel reports
    /// no new edge for input already there. A key is listed once (see
    /// `Connection::list_again`).
    again: Vec<usize>,
    /// The list `serve_again` works through this turn: what `again` held
    /// when the turn began. Empty between turns.
    again_now: Vec<usize>,
    /// Where every read by a connection with nothing left over lands.
    read_buffer: ReadBuffer,
    /// The limits every connection is driven with.
    limits: Limits,
    /// The timeouts every connection is held to.
    timeouts: Timeouts,
    /// `timeouts.shortest_ms()`, worked out once: every arming needs it,
    /// and asking each time costs a churn cycle 15 instructions more.
    shortest_timeout_ms: Option<u64>,
    /// When to look at a connection's deadlines next: `(due_ms, key, id)`,
    /// soonest first (see `expire`). A connection has an entry while a
    /// timeout may run for it (always under the idle timeout; under the send
    /// and line timeouts alone, while it holds leftovers), and one more
    /// while it lingers; an entry
    /// whose key now holds another connection (a different `id`), or none,
    /// is stale and dropped when it comes up.
    deadlines: DeadlineQueue,
    /// The memory budget: the most buffer storage the connections may hold
    /// between them, in bytes (`usize::MAX` when off).
    memory_limit: usize,
    /// Buffer storage the connections hold now, counted exactly from each
    /// buffer's capacity after every call that may change it. It can pass
    /// `memory_limit` only by reads kept by connections that had nothing
    /// left over (bytes read are kept, never dropped), one read each at
    /// most: `memory_used <= memory_limit + Σ min(capacity, READ_CHUNK_BYTES)`
    /// over the connections, so at most one 16 KiB read per connection
    /// holding storage (the proof is in `memory.rs`).
    memory_used: usize,
    /// Connections that stopped reading for want of memory
    /// (`Step::Starve`), in the order they did; each is listed once. They
    /// are served again once the budget has room for a read.
    starving: Vec<usize>,
    /// Before this, `relieve_memory` evicts no one: one round of evictions
    /// has its effect before the next is decided.
    next_relief_ms: u64,
    /// The most `memory_used` has been since the allocator was last asked to
    /// give memory back (`take_trim_hint`).
    memory_peak: usize,
    /// Most connections from one address (one /64 for IPv6); `usize::MAX`
    /// when off.
    max_per_address: usize,
    /// Open connections by address, kept only while `max_per_address` is
    /// on; an address with none has no entry.
    per_address: HashMap<AddressKey, usize>,
    /// Who may connect (`--allow`, `--deny`), asked at accept; admits all
    /// by default. Under the PROXY protocol, asked once the header names
    /// the client.
    access: Access,
    /// Under `--proxy-protocol`, the sources whose PROXY headers are
    /// believed (`--proxy-from`): every connection must come from one and
    /// begin with a header. `None` when the protocol is off.
    proxy_from: Option<Access>,
}

impl<S: Stream> Connections<S> {
    /// No connections yet; their buffers may hold `memory_limit` bytes
    /// between them, and one address may hold `max_per_address` of them
    /// (`usize::MAX` for either: no bound).
    pub fn new(
        limits: Limits,
        timeouts: Timeouts,
        memory_limit: usize,
        max_per_address: usize,
    ) -> Connections<S> {
        Connections {
            slab: Slab::new(),
            again: Vec::new(),
            again_now: Vec::new(),
            read_buffer: ReadBuffer::default(),
            limits,
            timeouts,
            shortest_timeout_ms: timeouts.shortest_ms(),
            deadlines: DeadlineQueue::default(),
            memory_limit,
            memory_used: 0,
            starving: Vec::new(),
            next_relief_ms: 0,
            memory_peak: 0,
            max_per_address,
            per_address: HashMap::new(),
            access: Access::default(),
            proxy_from: None,
        }
    }

    /// The same, admitting only the clients `access` admits.
    pub fn with_access(mut self, access: Access) -> Connections<S> {
        self.access = access;
        self
    }

    /// The same, under the PROXY protocol when `proxy_from` is given:
    /// every connection must come from a source it admits and begin with a
    /// PROXY header, and the access rules and the per-address limit judge
    /// the client the header names.
    pub fn with_proxy_from(mut self, proxy_from: Option<Access>) -> Connections<S> {
        self.proxy_from = proxy_from;
        self
    }

    /// Whether connections begin with a PROXY header.
    pub fn reads_proxy_headers(&self) -> bool {
        self.proxy_from.is_some()
    }

    /// The limits connections are driven with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The open connections, with their keys.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Connection<S>)> {
        self.slab.iter()
    }

    /// Connection `key`, if it is open.
    pub fn get(&self, key: usize) -> Option<&Connection<S>> {
        self.slab.get(key)
    }

    /// Buffer storage the connections hold now, as the memory budget counts
    /// it. The loop needs it only for its totals (and the other two not at
    /// all); the simulation in `tests/sim` checks the budget's bound with
    /// them.
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// The memory budget, in bytes; `None` when there is none.
    pub fn memory_limit(&self) -> Option<usize> {
        (self.memory_limit != usize::MAX).then_some(self.memory_limit)
    }

    /// Bytes the connections have read since the loop started.
    pub fn received_bytes(&self) -> u64 {
        self.read_buffer.received_bytes()
    }

    /// The connections waiting for memory, in the order they stopped.
    pub fn starving(&self) -> &[usize] {
        &self.starving
    }

    /// Hands readiness to connection `key` and applies what it asks for next.
    //
    // Always inlined into the loop's dispatch (and `serve_again`): it runs
    // once per event, and as a call of its own its prologue, epilogue and
    // argument passing cost about 9 instructions per echoed line
    // (callgrind). So is the usual event (`Connection::on_usual`); every
    // other event's state machine (`Connection::on_other`) stays a call.
    #[inline(always)]
    pub fn drive(
        &mut self,
        registrar: &impl Registrar<S>,
        key: usize,
        ready: Readiness,
        now_ms: u64,
    ) -> Option<Closed<S>> {
        // No connection: the event outlived it (the socket was closed while
        // the event was queued, or before it was served again). Harmless,
        // like any spurious event.
        let room = self.memory_room();
        let connection = self.slab.get_mut(key)?;
        let limits = &self.limits;
        let read_buffer = &mut self.read_buffer;
        let (step, waiting, held) =
            match connection.on_usual(ready, limits, read_buffer, now_ms, room) {
                // The usual event, a line echoed in full: the connection
                // waits as it did, holding no storage: nothing to apply.
                Usual::Echoed => return None,
                // Finished, holding nothing: nothing to account or apply
                // but the close (`apply` on `Step::Close` does no more).
                Usual::Finished => return Some(self.close(key, CloseReason::PeerFinished)),
                Usual::Then(step) => (step, Waiting::FRESH, 0),
                Usual::Not => {
                    let waiting = connection.waiting();
                    let held = connection.buffer_capacity();
                    let step = connection.on_other(ready, limits, read_buffer, now_ms, room);
                    (step, waiting, held)
                }
            };
        // The same outcome the other way: the connection waits in the same
        // state, with output pending or not as before, so for the same
        // readiness, holding the same storage: nothing to apply.
        if matches!(step, Step::Wait)
            && connection.waiting() == waiting
            && connection.buffer_capacity() == held
        {
            return None;
        }
        self.account(key, held);
        self.apply(
            registrar,
            key,
            (waiting.interest(), waiting.state),
            step,
            now_ms,
        )
    }

    /// Begins a graceful shutdown of every connection: each stops reading
    /// and delivers what it owes (see `Connection::begin_shutdown`).
    pub fn begin_shutdown(&mut self, registrar: &impl Registrar<S>, now_ms: u64) -> Vec<Closed<S>> {
        let keys: Vec<usize> = self.slab.iter().map(|(key, _)| key).collect();
        let mut closed = Vec::new();
        for key in keys {
            let connection = &mut self.slab[key];
            let before = (connection.interest(), connection.state());
            let held = connection.buffer_capacity();
            let step = connection.begin_shutdown(&self.limits, &mut self.read_buffer, now_ms);
            self.account(key, held);
            closed.extend(self.apply(registrar, key, before, step, now_ms));
        }
        closed
    }

    /// Closes every connection, whatever it was waiting for.
    pub fn close_all(&mut self, reason: impl Fn() -> CloseReason) -> Vec<Closed<S>> {
        let keys: Vec<usize> = self.slab.iter().map(|(key, _)| key).collect();
        keys.into_iter()
            .map(|key| self.close(key, reason()))
            .collect()
    }

    /// Applies a connection's `Step`, re-registering only if the interest it
    /// derives from its state changed (most events change nothing, so most
    /// cost no `epoll_ctl`).
    fn apply(
        &mut self,
        registrar: &impl Registrar<S>,
        key: usize,
        before: (Option<Interest>, State),
        step: Step,
        now_ms: u64,
    ) -> Option<Closed<S>> {
        let (interest_before, state_before) = before;
        // The line limit may have been hit in this call whatever the step:
        // the connection may be draining, lingering or already finished.
        let connection = &self.slab[key];
        let too_long = matches!(step, Step::Close(CloseReason::LineTooLong))
            || connection.state().finish() == Some(Finish::LineTooLong);
        if too_long
            && state_before.finish() != Some(Finish::LineTooLong)
            && crate::control::admit_peer_line(log::Level::Warn, "echod::server")
        {
            // Under the loop's log target, where this line has always been;
            // within the peer-line budget, since a peer decides how often.
            warn!(
                target: "echod::server",
                "conn {}: line longer than max-line-bytes ({}) from {}; closing after the lines before it",
                connection.id(),
                self.limits.max_line_bytes,
                connection.peer()
            );
        }
        // Lingering has a deadline of its own, shorter than any timeout and
        // on even when they are off: give it an entry of its own.
        if !matches!(state_before, State::Lingering(_)) {
            if let State::Lingering(_) = connection.state() {
                if let Some((due_ms, _)) = connection.deadline(&self.timeouts) {
                    self.push_deadline((due_ms, key, connection.id()));
                }
            }
        }
        match step {
            Step::Close(reason) => return Some(self.close(key, reason)),
            Step::HeaderRead { named_client } => {
                return self.admit(registrar, key, named_client, now_ms);
            }
            // A call that left something over may have started the send or
            // the line timer.
            _ => self.arm(key, now_ms),
        }
        match step {
            Step::Close(_) => {}
            Step::Starve => {
                if self.slab[key].starve() {
                    self.starving.push(key);
                }
            }
            Step::Again => {
                if self.slab[key].list_again() {
                    self.again.push(key);
                }
            }
            Step::Wait | Step::HeaderRead { .. } => {}
        }
        let connection = &mut self.slab[key];
        let interest = connection.interest();
        if interest == interest_before {
            return None;
        }
        // `None` means "finished", which always comes back as `Step::Close`.
        let interest = interest?;
        match registrar.reregister(connection.stream_mut(), key, interest) {
            Ok(()) => None,
            Err(err) => Some(self.close(key, CloseReason::Io(err))),
        }
    }

    /// Removes connection `key`; its socket closes when the `Closed` is
    /// dropped, which also removes it from the epoll set (an explicit
    /// deregister would cost an `epoll_ctl`).
    fn close(&mut self, key: usize, reason: CloseReason) -> Closed<S> {
        // Counted out while still in the slab, so that the connection (over
        // a hundred bytes) is moved once, straight into the record.
        let connection = &self.slab[key];
        self.memory_used -= connection.buffer_capacity();
        // One still waiting for its header was never counted by address.
        if self.max_per_address != usize::MAX && connection.state() != State::AwaitingHeader {
            let address = AddressKey::of(connection.peer());
            if let Some(open) = self.per_address.get_mut(&address) {
                *open -= 1;
                if *open == 0 {
                    self.per_address.remove(&address);
                }
            }
        }
        // Its deadline entries go stale; they are dropped when they come up,
        // or swept before the queue grows (`push_deadline`).
        Closed {
            key,
            connection: self.slab.remove(key),
            reason,
        }
    }
}
