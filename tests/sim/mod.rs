//! A deterministic simulation of one event loop's world: a simulated
//! kernel (sockets, epoll's ready list, a listening socket), up to eight
//! peers behind it (or a flood of connect-and-close probes), and the loop
//! in front of it, all driven by a stream of decisions. From a seed (or
//! from a fuzzer's bytes) it plays out one scenario and checks echod's
//! promises at every step.
//!
//! It runs the server's own code. The connections live in echod's
//! `Connections`, the very type `server.rs` drives, and each turn is the
//! server's own turn, `echod::server::turn::turn`: its order (begin the
//! turn, dispatch each event, serve the leftovers, relieve memory, accept
//! again, housekeeping when due, the end of a shutdown) and its deadlines,
//! driven by the simulated clock. The simulation supplies only what these
//! are generic over: a `Stream` (`SimStream`), a `Registrar`
//! (`SimRegistrar`), a `Listener` (`SimListener`), and the steps of the
//! turn (`impl Steps for World`), each of which makes the server's call
//! into `Connections` (`accept_pending`, `drive`, `serve_again`,
//! `relieve_memory`, `begin_shutdown`, `expire`, `close_all`) and checks
//! what it did. No server constant is restated here: the linger, the sweep
//! interval, the budgets and the readiness of a served-again connection
//! are echod's, and the interest a connection registers is whatever it
//! reports.
//!
//! Read first: `Kernel` and `SimStream`, the kernel's side of the sockets;
//! then `World::turn` and `impl Steps for World`, the loop; then
//! `World::after_call`, `World::serve_phase`, `World::check_accept` and
//! `World::closed`, where the properties are checked.
//!
//! The simulated kernel keeps the readiness contract that `connection.rs`
//! and `connections.rs` rely on, and nothing more:
//!
//! - readiness is edge-triggered: an edge is raised when bytes or the FIN
//!   arrive while READABLE is registered, when send space opens from zero
//!   while WRITABLE is registered, and for a reset whatever is registered;
//!   a socket's edges raised before the loop next polls arrive as one event,
//!   and events come in the order the sockets first became ready;
//! - registering, and re-registering with a new interest, report the
//!   readiness already there (`EPOLL_CTL_ADD` and `EPOLL_CTL_MOD` poll the
//!   socket);
//! - a read returns what has arrived up to the size asked. A read is cut
//!   short only where more input arrives just after it, which raises a new
//!   edge; a short write leaves the send buffer full. So a short read or
//!   write proves what `epoll(7)` says it proves;
//! - the peer's FIN follows its last byte, and reads return 0 from then on;
//! - a connection raises an edge on the listener; closing a socket removes
//!   it from the epoll set and its pending event with it.
//!
//! Within that contract everything is arbitrary: when each peer connects,
//! how its input arrives and how it reads, `Interrupted` on any call, input
//! arriving and send space opening while a connection is in the middle of a
//! call, spurious events with any flags (also for keys no connection holds),
//! a reset at any moment, `accept` failing, registration failing, a server
//! shutdown at any moment (with a deadline), the clock jumping.
//!
//! The properties, checked after every call the loop makes:
//!
//! - per connection, the bytes written are exactly the complete lines of
//!   the bytes read, in order, up to the first over-long line (a prefix of
//!   them if the connection was reset, timed out or cut off at the
//!   shutdown deadline);
//! - no call spins: it meets `WouldBlock` at most twice more often than it
//!   makes progress; no call reads more than `TURN_READ_BUDGET_BYTES` plus
//!   one read (every read is charged, whatever it found), and a connection
//!   is listed to be served again only after a full budget;
//! - the buffer stays within `Limits::max_buffer_bytes`, the bytes owed
//!   within the high-water mark plus one read and one line, and a paused
//!   connection whose output has drained is never left paused;
//! - what is registered for a socket is always what its connection reports
//!   it waits for, and a re-registration always changes it;
//! - fairness: the connections listed to be served again are served in the
//!   next turn, after that turn's events, in the order they were listed,
//!   and nothing else is served then; at the end of every turn, a connection
//!   with input waiting has an event coming or is listed to be served again;
//!   a key is listed once, and one whose event this turn already spent a new
//!   budget is left to the next turn (one turn, one budget:
//!   `Coverage::left_to_next_turn` counts them);
//! - accepting: at most `ACCEPT_BUDGET` attempts per `accept_pending`, and
//!   one `accept_pending` per listener per turn (on its event, or else
//!   because the budget ran out last turn);
//!   `AcceptEnd::BudgetSpent` exactly when the budget was used up, and then
//!   the next turn accepts again, so a queued connection never waits for an
//!   edge that will not come; a connection is rejected exactly when
//!   `max_connections` are open;
//! - every close has the reason the scenario calls for, and a connection
//!   closed in order has delivered every echo it owed first;
//! - once the world settles (every peer connected, all input and the FIN
//!   delivered, every peer reading everything) every connection finishes:
//!   none waits for an event that cannot come.
//!
//! This file is shared: `tests/simulation.rs` runs it from seeds, and the
//! fuzz targets under `fuzz/` include it with `#[path]`, so it depends on
//! nothing but `echod`, `echod-kit` (its seeded generator), `mio` and `std`.
#![allow(dead_code, unused_imports)] // Each includer uses a different subset.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;

use echod::Framing;
use echod::buffer::READ_CHUNK_BYTES;
use echod::connection::{
    CloseReason, Finish, LINGER_MS, Limits, Readiness, State, Stream, TURN_READ_BUDGET_BYTES,
    Timeouts,
};
use echod::connections::EVICT_STALLED_MS;
use echod::connections::{
    ACCEPT_BUDGET, Accept, AcceptEnd, Closed, Connections, DISPLACE_QUIET_MS, EXPIRY_SWEEP_MS,
    Listener, Registrar,
};
use echod::control::{Flow, Request};
use echod::server::turn::{
    self, Event as TurnEvent, HOUSEKEEPING_INTERVAL_MS, Outside, Steps, TurnState,
};
use mio::Interest;

mod decide;
mod reference;

pub use decide::{Bytes, Decide, SplitMix64, chance};
pub use reference::{check_framing, reference};

/// Stream operations one call may make before the simulation calls it a
/// spin. Far above what an honest call can need: a read budget read one
/// byte at a time, a write after each read, and the injected interrupts.
const MAX_OPS_PER_CALL: usize = 1_000_000;

/// Injected `Interrupted` errors in a row, at most, so that a connection that
/// retries them (as it must) always gets through.
const MAX_INTERRUPTS_IN_A_ROW: u32 = 3;

/// Rounds the settling phase may take before the world is declared stuck.
/// Each round delivers everything and runs one turn; a connection needs
/// about one turn per read budget of input.
const MAX_SETTLE_ROUNDS: usize = 20_000;

/// Most peers of an ordinary scenario.
const MAX_PEERS: u64 = 8;

/// The port of peer 0's address; peer `i` connects from `PEER_PORT + i`, so
/// that an accepted connection's address names its peer.
const PEER_PORT: u16 = 10_000;

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

/// How often each fault strikes one peer's socket, in thousandths.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// A read or write returns `Interrupted`.
    pub interrupt: u64,
    /// Input arrives just before a read, while the connection is in a call.
    pub arrive_in_call: u64,
    /// The peer reads echoes just before a write, while in a call.
    pub drain_in_call: u64,
    /// A read is cut short, the rest arriving just after it.
    pub cut_read: u64,
    /// A write is cut short, the send buffer filling at that point.
    pub cut_write: u64,
    /// The peer resets the connection (per step of the random phase).
    pub reset: u64,
    /// The peer's host vanishes and the kernel's keepalive probes give up:
    /// every operation fails with `ETIMEDOUT` (per step of the random
    /// phase). Keepalive itself is the kernel's; this is all of it that
    /// echod sees.
    pub keepalive: u64,
}

/// How often each fault strikes the loop, in thousandths.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopFaults {
    /// A poll carries an event with flags that nothing raised (per turn).
    pub spurious: u64,
    /// `accept` fails (`Interrupted` or `ECONNABORTED`), per call.
    pub accept_error: u64,
    /// `register` or `reregister` fails, per call.
    pub register_error: u64,
    /// The server begins its shutdown (per step of the random phase).
    pub shutdown: u64,
}

/// One peer: what it sends and how it behaves.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Everything the peer will send.
    pub input: Vec<u8>,
    /// Whether the peer half-closes after its input; if not, its connection
    /// ends with a server shutdown and the linger timeout (or the deadline).
    pub peer_fin: bool,
    /// Bytes the send buffer can take at the start.
    pub send_space: usize,
    /// Largest arrival of one step.
    pub arrive_max: usize,
    /// Largest peer read of one step.
    pub drain_max: usize,
    /// Fault rates on this peer's socket.
    pub faults: Faults,
}

/// One scenario: the limits, the peers and how the world around them
/// behaves.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Every connection's limits.
    pub limits: Limits,
    /// The idle timeout, 0 for none.
    pub idle_ms: u64,
    /// The send timeout, 0 for none.
    pub send_ms: u64,
    /// The line timeout, 0 for none.
    pub line_ms: u64,
    /// The memory budget, `usize::MAX` for none.
    pub memory_limit: usize,
    /// Most connections from one address, `usize::MAX` for none.
    pub max_per_address: usize,
    /// Peer `i` connects from address `127.0.0.(1 + i % addresses)`.
    pub addresses: usize,
    /// Connections open at once, at most; more are rejected.
    pub max_connections: usize,
    /// How long a shutdown may take before every connection is closed.
    pub shutdown_timeout_ms: u64,
    /// The peers, in the order they connect.
    pub peers: Vec<Peer>,
    /// Health checks that connect after the peers, in bursts, and close at
    /// once without sending anything: a flood that spends the accept budget.
    pub probes: usize,
    /// Steps in the random phase.
    pub steps: usize,
    /// Fault rates of the loop.
    pub faults: LoopFaults,
}

impl Scenario {
    /// Draws a scenario: one to eight peers, mostly with small limits and
    /// inputs, which reach every state in few steps; one peer in five
    /// large, to reach the read budget, buffer growth and real-sized
    /// limits. One scenario in twenty adds a flood of probes (connect and
    /// close at once), enough to spend the accept budget.
    pub fn generate(decide: &mut impl Decide) -> Scenario {
        let framing = [Framing::Crlf, Framing::Lf, Framing::Raw][decide.pick(3) as usize];
        let large = decide.pick(5) == 4;
        let (max_line_bytes, max_pending_bytes) = if large {
            (
                2 + decide.pick(70_000) as usize,
                1 + decide.pick(200_000) as usize,
            )
        } else {
            (2 + decide.pick(62) as usize, 1 + decide.pick(48) as usize)
        };
        let limits = Limits::new(framing, max_line_bytes, max_pending_bytes);
        let n_peers = 1 + decide.pick(MAX_PEERS) as usize;
        let peers: Vec<Peer> = (0..n_peers)
            .map(|_| {
                let large_peer = large && decide.pick(2) == 0;
                Peer::generate(decide, large_peer)
            })
            .collect();
        let flood = chance(decide, 50);
        let probes = if flood {
            ACCEPT_BUDGET + decide.pick(2 * ACCEPT_BUDGET as u64) as usize
        } else {
            0
        };
        let max_connections = if chance(decide, 150) || flood {
            1 + decide.pick(n_peers as u64 + 1) as usize
        } else {
            usize::MAX
        };
        let mut rate = |max: u64| {
            if chance(decide, 500) {
                decide.pick(max + 1)
            } else {
                0
            }
        };
        let faults = LoopFaults {
            spurious: rate(600),
            accept_error: rate(300),
            register_error: rate(20),
            shutdown: if chance(decide, 200) {
                1 + decide.pick(30)
            } else {
                0
            },
        };
        let steps_per_peer = decide.pick(if large { 1500 } else { 300 }) as usize;
        // The defences on in a good share of scenarios, at values small
        // enough to fire within a run: timeouts of a fraction of a second
        // to a few seconds (the clock jumps up to 1.5 s a step), a budget
        // of a few reads, a per-address limit of one to three.
        let mut timeout = |per_mille: u64| {
            if chance(decide, per_mille) {
                200 + decide.pick(3000)
            } else {
                0
            }
        };
        let (idle_ms, send_ms, line_ms) = (timeout(250), timeout(300), timeout(300));
        let memory_limit = if chance(decide, 400) {
            decide.pick(if large { 400_000 } else { 40_000 }) as usize
        } else {
            usize::MAX
        };
        let max_per_address = if chance(decide, 200) {
            1 + decide.pick(3) as usize
        } else {
            usize::MAX
        };
        let addresses = 1 + decide.pick(n_peers as u64) as usize;
        Scenario {
            limits,
            idle_ms,
            send_ms,
            line_ms,
            memory_limit,
            max_per_address,
            addresses,
            max_connections,
            shutdown_timeout_ms: if chance(decide, 300) {
                decide.pick(3 * LINGER_MS)
            } else {
                u64::MAX / 2
            },
            steps: 20 + steps_per_peer * n_peers.min(4),
            peers,
            probes,
            faults,
        }
    }
}

impl Peer {
    /// Draws one peer: its input, its half-close, its socket's sizes and
    /// faults. `large` peers send up to 300 KB, in arrivals up to 70 KB.
    fn generate(decide: &mut impl Decide, large: bool) -> Peer {
        let input_len = decide.pick(if large { 300_000 } else { 600 }) as usize;
        let input = if decide.pick(2) == 0 {
            bytes_near_terminators(decide, input_len)
        } else {
            lines_of_any_length(decide, input_len)
        };
        let sizes = [4, 64, 2048, 70_000];
        let arrive_max = sizes[decide.pick(4) as usize];
        let drain_max = sizes[decide.pick(4) as usize];
        let mut rate = |max: u64| {
            if chance(decide, 500) {
                decide.pick(max + 1)
            } else {
                0
            }
        };
        let faults = Faults {
            interrupt: rate(300),
            arrive_in_call: rate(300),
            drain_in_call: rate(300),
            cut_read: rate(300),
            cut_write: rate(300),
            reset: if chance(decide, 150) {
                1 + decide.pick(20)
            } else {
                0
            },
            keepalive: if chance(decide, 60) {
                1 + decide.pick(20)
            } else {
                0
            },
        };
        Peer {
            input,
            peer_fin: !chance(decide, 150),
            send_space: [0, 1 + decide.pick(64) as usize, 1 << 20][decide.pick(3) as usize],
            arrive_max,
            drain_max,
            faults,
        }
    }

    /// A health check: connects, sends nothing, closes.
    fn probe() -> Peer {
        Peer {
            input: Vec::new(),
            peer_fin: true,
            send_space: 1 << 20,
            arrive_max: 1,
            drain_max: 1,
            faults: Faults::default(),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} framing, max_line_bytes {}, max_pending_bytes {}, idle {} ms, send {} ms, line \
             {} ms, memory {}, per address {} of {} addresses, max_connections {}, shutdown \
             timeout {} ms, {} steps, {:?}; {} peers and {} probes",
            self.limits.framing,
            self.limits.max_line_bytes,
            self.limits.max_pending_bytes,
            self.idle_ms,
            self.send_ms,
            self.line_ms,
            self.memory_limit,
            self.max_per_address,
            self.addresses,
            self.max_connections,
            self.shutdown_timeout_ms,
            self.steps,
            self.faults,
            self.peers.len(),
            self.probes,
        )?;
        for (id, peer) in self.peers.iter().enumerate() {
            write!(
                f,
                "\n    peer {id}: {} input bytes, fin {}, send space {}, arrivals up to {}, reads \
                 up to {}, {:?}",
                peer.input.len(),
                peer.peer_fin,
                peer.send_space,
                peer.arrive_max,
                peer.drain_max,
                peer.faults
            )?;
        }
        Ok(())
    }
}

/// Bytes rich in CR, LF and their near misses.
fn bytes_near_terminators(decide: &mut impl Decide, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| match decide.pick(12) {
            0..=2 => b'a',
            3..=6 => b'\r',
            7..=10 => b'\n',
            _ => decide.pick(256) as u8,
        })
        .collect()
}

/// Lines of very different lengths, each ending in CR LF, LF, a bare CR or
/// nothing (so that it runs into the next).
fn lines_of_any_length(decide: &mut impl Decide, len: usize) -> Vec<u8> {
    let mut input = Vec::with_capacity(len);
    while input.len() < len {
        let line_len = match decide.pick(4) {
            0 => decide.pick(8),
            1 => decide.pick(200),
            2 => decide.pick(20_000),
            _ => decide.pick(100_000),
        } as usize;
        let fill = b'a' + decide.pick(26) as u8;
        input.extend(std::iter::repeat_n(fill, line_len.min(len - input.len())));
        let terminator: &[u8] = [&b"\r\n"[..], b"\n", b"\r", b""][decide.pick(4) as usize];
        input.extend_from_slice(terminator);
        if decide.exhausted() && line_len == 0 && terminator.is_empty() {
            // A spent source would add nothing forever; pad and stop.
            input.resize(len, b'a');
        }
    }
    input.truncate(len);
    input
}

// ---------------------------------------------------------------------------
// The kernel's side of the sockets
// ---------------------------------------------------------------------------

/// The edges the simulated kernel has raised for one socket: what a poll
/// event's flags would carry.
#[derive(Debug, Default, Clone, Copy)]
pub struct Edges {
    /// Input (or the FIN, or an error) arrived while READABLE was registered.
    pub readable: bool,
    /// Send space opened while WRITABLE was registered.
    pub writable: bool,
    /// The FIN is there (EPOLLRDHUP), or the connection was reset.
    pub read_closed: bool,
}

impl Edges {
    fn any(self) -> bool {
        self.readable || self.writable || self.read_closed
    }

    fn merge(&mut self, other: Edges) {
        self.readable |= other.readable;
        self.writable |= other.writable;
        self.read_closed |= other.read_closed;
    }
}

/// What one call into a connection did to its socket (summed over the
/// calls of one serve-again phase, if it was listed more than once).
#[derive(Debug, Default, Clone, Copy)]
struct CallStats {
    /// Stream operations made.
    ops: usize,
    /// Operations that moved bytes, read the EOF, met the reset or sent FIN.
    progress: usize,
    /// Operations that returned `WouldBlock`.
    futile: usize,
    /// Bytes read.
    read_bytes: usize,
    /// Bytes of the latest read, and of the largest.
    last_read: usize,
    max_read: usize,
}

/// Where a peer's connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected yet.
    Unconnected,
    /// In the listener's backlog.
    Queued,
    /// Accepted: in `Connections` under this key.
    Open { key: usize },
    /// Over, for this reason (a close reason's name, or how it never got in).
    Done(&'static str),
}

/// Paths one connection went through, for `Coverage`.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    paused: bool,
    resumed: bool,
    served_again: bool,
    lingered: bool,
    starved: bool,
}

/// What a connection had done when the server began its shutdown.
#[derive(Debug, Clone, Copy)]
struct ShutdownMark {
    /// Input bytes read by then; only their lines can be echoed.
    read_pos: usize,
    /// Whether the peer's EOF had been read by then.
    eof_read: bool,
}

/// The model's account of one connection's leftovers, kept from the bytes
/// read and written alone, after every call.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    /// Bytes of `input` scanned (up to what was read, or what was read when
    /// the shutdown began).
    scanned: usize,
    /// Where the line being received begins: every byte before it is part
    /// of a complete line, or of the over-long line.
    line_start: usize,
    /// An over-long line was found at `line_start`.
    too_long: bool,
    /// Echoes owed (complete lines read, less what was written).
    owed: usize,
    /// Bytes of the unfinished line, while the connection still echoes.
    unfinished: usize,
    /// Bytes written when last looked at.
    written: usize,
    /// Since when echoes have been owed without any being taken.
    owing_since_ms: u64,
    /// When the first byte of the unfinished line was read.
    line_since_ms: u64,
}

impl Held {
    /// Scans `input[self.scanned..to]` as `reference` would.
    fn scan(&mut self, framing: Framing, input: &[u8], to: usize, max_line_bytes: usize) {
        if framing == Framing::Raw {
            self.scanned = to.max(self.scanned);
            self.line_start = self.scanned;
            return;
        }
        while self.scanned < to && !self.too_long {
            let idx = self.scanned;
            let line = &input[self.line_start..=idx];
            let ended = match framing {
                Framing::Lf => input[idx] == b'\n',
                _ => line.ends_with(b"\r\n"),
            };
            if (ended && line.len() > max_line_bytes) || (!ended && line.len() >= max_line_bytes) {
                self.too_long = true;
                break;
            }
            self.scanned += 1;
            if ended {
                self.line_start = self.scanned;
            }
        }
    }
}

/// The kernel's view of one socket and of the peer behind it.
struct Socket {
    /// The peer's plan: its input, half-close, sizes and faults.
    plan: Peer,
    phase: Phase,
    /// `input[..arrived]` has reached the receive buffer.
    arrived: usize,
    /// `input[..read_pos]` has been read by the connection.
    read_pos: usize,
    /// The peer's FIN is queued behind all its input.
    fin_arrived: bool,
    /// A read has returned 0.
    eof_read: bool,
    /// The peer reset the connection (or its keepalive gave up); every
    /// operation fails from now on, with `reset_kind`.
    reset: bool,
    reset_kind: io::ErrorKind,
    /// Bytes the send buffer can take now.
    send_space: usize,
    /// Everything written, in order.
    written: Vec<u8>,
    /// `shutdown_write` succeeded.
    fin_sent: bool,
    /// The interest registered, and under which key; `None` while not in
    /// the epoll set.
    registered: Option<(usize, Interest)>,
    /// Edges raised since the loop last polled; the socket is on the ready
    /// list exactly while one is set.
    edges: Edges,
    /// The server closed the socket (dropped its stream).
    dropped: bool,
    /// A registration call on this socket was made to fail.
    register_failed: bool,
    /// When bytes last moved in a way the idle timer counts (before our FIN:
    /// reads, including the EOF, and writes; then the FIN itself).
    last_activity_ms: u64,
    interrupts_in_a_row: u32,
    call: CallStats,
    shutdown: Option<ShutdownMark>,
    /// The model's own account of what the connection holds and since when,
    /// for the send and line timeouts and eviction.
    model: Held,
    /// The first broken rule met inside a stream call.
    violation: Option<String>,
    saw: Seen,
}

/// The simulated kernel: every socket, epoll's ready list, the listener's
/// backlog, the clock, and the source of every decision.
pub struct Kernel<D> {
    decide: D,
    now_ms: u64,
    trace: bool,
    sockets: Vec<Socket>,
    /// Sockets with an event to report, in the order they became ready
    /// (epoll's ready list).
    ready: Vec<usize>,
    /// Connections the listener has queued, oldest first.
    backlog: VecDeque<usize>,
    /// A connection arrived since the loop last polled.
    listener_edge: bool,
    /// The listener is open (until the server begins its shutdown).
    listening: bool,
    /// Peers connect from this many addresses (see `Scenario::addresses`).
    addresses: usize,
    faults: LoopFaults,
    /// `accept` calls, and the failures injected, in this `accept_pending`.
    accept_calls: usize,
    accept_faults: usize,
    /// During a serve-again phase: the sockets operated on, in the order of
    /// each one's first operation.
    serve_log: Option<Vec<usize>>,
    coverage: Coverage,
}

impl<D: Decide> Kernel<D> {
    fn chance(&mut self, per_mille: u64) -> bool {
        chance(&mut self.decide, per_mille)
    }

    fn size(&mut self, max: usize) -> usize {
        1 + self.decide.pick(max as u64) as usize
    }

    fn violate(&mut self, id: usize, what: String) {
        self.sockets[id].violation.get_or_insert(what);
    }

    /// Raises `edges` on socket `id` if it is in the epoll set, and puts it
    /// on the ready list if it was not there.
    fn raise(&mut self, id: usize, edges: Edges) {
        let s = &mut self.sockets[id];
        if s.registered.is_none() || !edges.any() {
            return;
        }
        if !s.edges.any() {
            self.ready.push(id);
        }
        s.edges.merge(edges);
    }

    fn raise_readable(&mut self, id: usize) {
        if self.sockets[id]
            .registered
            .is_some_and(|(_, interest)| interest.is_readable())
        {
            self.raise(
                id,
                Edges {
                    readable: true,
                    ..Edges::default()
                },
            );
        }
    }

    /// A peer connects: it joins the backlog and raises the listener's edge.
    fn connect(&mut self, id: usize) {
        let s = &mut self.sockets[id];
        if s.phase != Phase::Unconnected {
            return;
        }
        if !self.listening {
            s.phase = Phase::Done("refused");
            return;
        }
        s.phase = Phase::Queued;
        self.backlog.push_back(id);
        self.listener_edge = true;
    }

    /// The next `n` input bytes of peer `id` arrive (fewer if fewer are left).
    fn arrive(&mut self, id: usize, n: usize) {
        let s = &mut self.sockets[id];
        let n = n.min(s.plan.input.len() - s.arrived);
        if n > 0 {
            s.arrived += n;
            self.raise_readable(id);
        }
    }

    /// Peer `id`'s FIN arrives, if its input has all arrived.
    fn fin(&mut self, id: usize) {
        let s = &mut self.sockets[id];
        if s.arrived == s.plan.input.len() && !s.fin_arrived {
            s.fin_arrived = true;
            self.raise_readable(id);
        }
    }

    /// Peer `id` reads `n` bytes of echoes, making room in the send buffer.
    fn drain(&mut self, id: usize, n: usize) {
        let s = &mut self.sockets[id];
        let opened = s.send_space == 0 && n > 0;
        s.send_space = s.send_space.saturating_add(n);
        if opened
            && s.registered
                .is_some_and(|(_, interest)| interest.is_writable())
        {
            self.raise(
                id,
                Edges {
                    writable: true,
                    ..Edges::default()
                },
            );
        }
    }

    /// Peer `id` resets its connection: errors are reported whatever the
    /// registered interest.
    fn reset(&mut self, id: usize, kind: io::ErrorKind) {
        self.sockets[id].reset = true;
        self.sockets[id].reset_kind = kind;
        self.raise(
            id,
            Edges {
                readable: true,
                writable: true,
                read_closed: true,
            },
        );
    }

    /// The readiness there is now for what socket `id` has registered (what
    /// `EPOLL_CTL_ADD` and `EPOLL_CTL_MOD` report at once).
    fn ready_now(&self, id: usize) -> Edges {
        let s = &self.sockets[id];
        let Some((_, interest)) = s.registered else {
            return Edges::default();
        };
        let readable =
            interest.is_readable() && (s.arrived > s.read_pos || (s.fin_arrived && !s.eof_read));
        let writable = interest.is_writable() && s.send_space > 0;
        Edges {
            readable: readable || s.reset,
            writable: writable || s.reset,
            read_closed: (readable && s.fin_arrived) || s.reset,
        }
    }

    /// Takes the ready list: one event per socket, in order, with its key.
    fn harvest(&mut self) -> Vec<(usize, Edges)> {
        let ready = std::mem::take(&mut self.ready);
        ready
            .into_iter()
            .filter_map(|id| {
                let s = &mut self.sockets[id];
                let mut edges = std::mem::take(&mut s.edges);
                // epoll reports the state at harvest: RDHUP if the FIN is there.
                edges.read_closed |= edges.readable && s.fin_arrived;
                Some((s.registered?.0, edges))
            })
            .collect()
    }

    /// Injects `Interrupted` on socket `id`, never more than a few times in
    /// a row.
    fn interrupt(&mut self, id: usize) -> bool {
        let rate = self.sockets[id].plan.faults.interrupt;
        if self.sockets[id].interrupts_in_a_row < MAX_INTERRUPTS_IN_A_ROW && self.chance(rate) {
            self.sockets[id].interrupts_in_a_row += 1;
            self.coverage.interrupts += 1;
            return true;
        }
        self.sockets[id].interrupts_in_a_row = 0;
        false
    }

    /// Counts a stream operation. A call that never returns cannot be
    /// checked afterwards, so a spin is stopped here, by a panic.
    fn count_op(&mut self, id: usize) {
        let s = &mut self.sockets[id];
        s.call.ops += 1;
        assert!(
            s.call.ops <= MAX_OPS_PER_CALL,
            "spins: more than {MAX_OPS_PER_CALL} stream operations in one call"
        );
        if s.dropped {
            s.violation
                .get_or_insert("an operation on a closed socket".into());
        }
        if let Some(log) = self.serve_log.as_mut() {
            if !log.contains(&id) {
                log.push(id);
            }
        }
    }

    /// Whether a registration call fails now; if so, it is recorded against
    /// socket `id`, so that the close it causes is expected.
    fn register_fails(&mut self, id: usize) -> bool {
        let fails = self.chance(self.faults.register_error);
        if fails {
            self.sockets[id].register_failed = true;
            self.coverage.register_errors += 1;
        }
        fails
    }
}

/// The stream a connection holds: socket `.1` of the shared kernel.
pub struct SimStream<D>(Rc<RefCell<Kernel<D>>>, usize);

impl<D: Decide> Read for SimStream<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let id = self.1;
        let mut guard = self.0.borrow_mut();
        let k = &mut *guard;
        k.count_op(id);
        if buf.is_empty() {
            // The kernel would answer 0, which reads as the peer's EOF.
            k.violate(
                id,
                "read into an empty buffer (its 0 would look like EOF)".into(),
            );
        }
        if k.sockets[id].reset {
            k.sockets[id].call.progress += 1;
            return Err(k.sockets[id].reset_kind.into());
        }
        if k.interrupt(id) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if k.chance(k.sockets[id].plan.faults.arrive_in_call) {
            let n = k.size(k.sockets[id].plan.arrive_max);
            k.arrive(id, n);
        }
        let now_ms = k.now_ms;
        let s = &mut k.sockets[id];
        let available = s.arrived - s.read_pos;
        if available == 0 {
            if s.fin_arrived {
                s.call.progress += 1;
                s.eof_read = true;
                if !s.fin_sent {
                    s.last_activity_ms = now_ms;
                }
                return Ok(0);
            }
            s.call.futile += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = buf.len().min(available);
        // Cut only while the FIN is still to come: once it is queued, every
        // byte before it has arrived and a read takes all it asks for.
        let (fin_arrived, cut_rate) = (s.fin_arrived, s.plan.faults.cut_read);
        if n > 1 && !fin_arrived && k.chance(cut_rate) {
            n = k.size(n - 1);
            k.coverage.cut_reads += 1;
            // The rest arrives just after this read: a new edge.
            k.raise_readable(id);
        }
        let s = &mut k.sockets[id];
        let start = s.read_pos;
        buf[..n].copy_from_slice(&s.plan.input[start..start + n]);
        s.read_pos += n;
        s.call.read_bytes += n;
        s.call.last_read = n;
        s.call.max_read = s.call.max_read.max(n);
        s.call.progress += 1;
        if !s.fin_sent {
            s.last_activity_ms = now_ms;
        }
        Ok(n)
    }
}

impl<D: Decide> Write for SimStream<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let id = self.1;
        let mut guard = self.0.borrow_mut();
        let k = &mut *guard;
        k.count_op(id);
        if k.sockets[id].fin_sent {
            k.violate(id, "write after shutdown_write".into());
        }
        if buf.is_empty() {
            k.violate(id, "write of nothing".into());
        }
        if k.sockets[id].reset {
            k.sockets[id].call.progress += 1;
            return Err(k.sockets[id].reset_kind.into());
        }
        if k.interrupt(id) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if k.chance(k.sockets[id].plan.faults.drain_in_call) {
            let n = k.size(k.sockets[id].plan.drain_max);
            k.drain(id, n);
        }
        if k.sockets[id].send_space == 0 {
            k.sockets[id].call.futile += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = buf.len().min(k.sockets[id].send_space);
        if n > 1 && k.chance(k.sockets[id].plan.faults.cut_write) {
            // The send buffer fills at an arbitrary point.
            n = k.size(n - 1);
            k.sockets[id].send_space = 0;
            k.coverage.cut_writes += 1;
        } else {
            k.sockets[id].send_space -= n;
        }
        let now_ms = k.now_ms;
        let s = &mut k.sockets[id];
        s.written.extend_from_slice(&buf[..n]);
        s.call.progress += 1;
        s.last_activity_ms = now_ms;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: Decide> Stream for SimStream<D> {
    fn shutdown_write(&self) -> io::Result<()> {
        let id = self.1;
        let mut guard = self.0.borrow_mut();
        let k = &mut *guard;
        k.count_op(id);
        let now_ms = k.now_ms;
        let s = &mut k.sockets[id];
        s.call.progress += 1;
        if s.fin_sent {
            s.violation.get_or_insert("shutdown_write twice".into());
        }
        if s.reset {
            return Err(io::ErrorKind::NotConnected.into());
        }
        s.fin_sent = true;
        s.last_activity_ms = now_ms;
        Ok(())
    }
}

impl<D> Drop for SimStream<D> {
    /// The server closed the socket: it leaves the epoll set, and its
    /// pending event with it.
    fn drop(&mut self) {
        let id = self.1;
        let mut k = self.0.borrow_mut();
        k.ready.retain(|&ready| ready != id);
        let s = &mut k.sockets[id];
        s.dropped = true;
        s.registered = None;
        s.edges = Edges::default();
    }
}

/// The registration half of the simulated epoll.
pub struct SimRegistrar<D>(Rc<RefCell<Kernel<D>>>);

impl<D: Decide> Registrar<SimStream<D>> for SimRegistrar<D> {
    fn register(
        &self,
        stream: &mut SimStream<D>,
        key: usize,
        interest: Interest,
    ) -> io::Result<()> {
        let id = stream.1;
        let mut k = self.0.borrow_mut();
        if k.sockets[id].registered.is_some() {
            k.violate(id, "registered twice".into());
        }
        let taken = k
            .sockets
            .iter()
            .any(|s| s.registered.is_some_and(|(other, _)| other == key));
        if taken {
            k.violate(id, format!("registered under key {key}, which is in use"));
        }
        if k.register_fails(id) {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        k.sockets[id].registered = Some((key, interest));
        let ready = k.ready_now(id);
        k.raise(id, ready);
        Ok(())
    }

    fn deregister(&self, stream: &mut SimStream<D>) -> io::Result<()> {
        let id = stream.1;
        let mut k = self.0.borrow_mut();
        if k.sockets[id].registered.take().is_none() {
            k.violate(id, "deregistered, but not registered".into());
        }
        Ok(())
    }

    fn reregister(
        &self,
        stream: &mut SimStream<D>,
        key: usize,
        interest: Interest,
    ) -> io::Result<()> {
        let id = stream.1;
        let mut k = self.0.borrow_mut();
        match k.sockets[id].registered {
            Some((registered_key, _)) if registered_key != key => {
                k.violate(
                    id,
                    format!("re-registered under key {key}, not {registered_key}"),
                );
            }
            Some((_, registered)) if registered == interest => {
                k.violate(
                    id,
                    format!("re-registered for {interest:?}, the interest it had: a wasted call"),
                );
            }
            Some(_) => {}
            None => k.violate(id, "re-registered without being registered".into()),
        }
        if k.register_fails(id) {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        k.sockets[id].registered = Some((key, interest));
        let ready = k.ready_now(id);
        k.raise(id, ready);
        Ok(())
    }
}

/// The simulated listening socket.
pub struct SimListener<D>(Rc<RefCell<Kernel<D>>>);

impl<D: Decide> Listener<SimStream<D>> for SimListener<D> {
    fn accept(&self) -> io::Result<(SimStream<D>, SocketAddr)> {
        let mut k = self.0.borrow_mut();
        k.accept_calls += 1;
        let rate = k.faults.accept_error;
        if k.chance(rate) {
            k.accept_faults += 1;
            k.coverage.accept_errors += 1;
            let kind = if k.decide.pick(2) == 0 {
                io::ErrorKind::Interrupted
            } else {
                io::ErrorKind::ConnectionAborted
            };
            return Err(kind.into());
        }
        let Some(id) = k.backlog.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let port = PEER_PORT + u16::try_from(id).expect("fewer peers than ports");
        let host = 1 + u8::try_from(id % k.addresses).expect("few addresses");
        Ok((
            SimStream(Rc::clone(&self.0), id),
            SocketAddr::from(([127, 0, 0, host], port)),
        ))
    }
}

// ---------------------------------------------------------------------------
// Coverage
// ---------------------------------------------------------------------------

/// Counters over runs, to show which paths a batch of runs exercised.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    /// Runs.
    pub runs: u64,
    /// Connections, by how they closed.
    pub closes: BTreeMap<&'static str, u64>,
    /// Connections that paused at least once.
    pub paused: u64,
    /// Connections that resumed reading after a pause.
    pub resumed: u64,
    /// Connections listed to be served again at least once.
    pub served_again: u64,
    /// Connections that lingered after their FIN.
    pub lingered: u64,
    /// Runs with two or more connections open at once.
    pub several_connections: u64,
    /// Most connections open at once in any run.
    pub most_open: u64,
    /// Connections listed to be served again whose event in that turn spent
    /// a new budget, so that serving them again was left to the next turn.
    pub left_to_next_turn: u64,
    /// Calls to `accept_pending` that spent the accept budget.
    pub accept_budget_spent: u64,
    /// Connections rejected at `max_connections`.
    pub rejected: u64,
    /// Connections closed at once by the shutdown, being idle.
    pub closed_idle_at_shutdown: u64,
    /// Connections closed at `max_connections` to give their slot to a
    /// newcomer, having been quiet for `DISPLACE_QUIET_MS`.
    pub displaced: u64,
    /// Connections closed because they could not be registered.
    pub unregistered: u64,
    /// Connections still queued when the listener closed at shutdown.
    pub refused: u64,
    /// Injected `Interrupted`, summed over runs.
    pub interrupts: u64,
    /// Spurious events delivered, summed over runs.
    pub spurious_events: u64,
    /// Spurious events for keys no connection held.
    pub stale_events: u64,
    /// Reads cut short, summed over runs.
    pub cut_reads: u64,
    /// Writes cut short, summed over runs.
    pub cut_writes: u64,
    /// Injected `accept` failures.
    pub accept_errors: u64,
    /// Injected registration failures.
    pub register_errors: u64,
    /// Turns of the loop, summed over runs.
    pub turns: u64,
    /// Calls into connections (events, serve-again, shutdown), summed.
    pub calls: u64,
    /// Input bytes, summed over runs.
    pub input_bytes: u64,
    /// Connections that stopped reading for want of memory at least once.
    pub starved: u64,
    /// Calls after which the buffers held more than the budget (the one
    /// read a connection with nothing left over may keep past it).
    pub over_budget: u64,
    /// Connections that closed because the keepalive probes gave up.
    pub keepalive_timeouts: u64,
}

impl Coverage {
    /// Adds another batch's counters.
    pub fn add(&mut self, other: &Coverage) {
        for (reason, n) in &other.closes {
            *self.closes.entry(reason).or_default() += n;
        }
        self.runs += other.runs;
        self.paused += other.paused;
        self.resumed += other.resumed;
        self.served_again += other.served_again;
        self.lingered += other.lingered;
        self.several_connections += other.several_connections;
        self.most_open = self.most_open.max(other.most_open);
        self.left_to_next_turn += other.left_to_next_turn;
        self.accept_budget_spent += other.accept_budget_spent;
        self.rejected += other.rejected;
        self.closed_idle_at_shutdown += other.closed_idle_at_shutdown;
        self.displaced += other.displaced;
        self.unregistered += other.unregistered;
        self.refused += other.refused;
        self.interrupts += other.interrupts;
        self.spurious_events += other.spurious_events;
        self.stale_events += other.stale_events;
        self.cut_reads += other.cut_reads;
        self.cut_writes += other.cut_writes;
        self.accept_errors += other.accept_errors;
        self.register_errors += other.register_errors;
        self.turns += other.turns;
        self.calls += other.calls;
        self.input_bytes += other.input_bytes;
        self.starved += other.starved;
        self.over_budget += other.over_budget;
        self.keepalive_timeouts += other.keepalive_timeouts;
    }
}

// ---------------------------------------------------------------------------
// The event loop
// ---------------------------------------------------------------------------

/// How a close came about: a `Step::Close` from a call (or a failed
/// re-registration), the sweep, or the shutdown deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Step,
    Expiry,
    Deadline,
    /// Closed to give its slot to a newcomer at `max_connections`.
    Displaced,
    /// Evicted by `relieve_memory`.
    Evicted,
}

/// What a poll returned, besides the sockets' events.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// Readiness for the connection under `key` (or for no connection).
    Connection { key: usize, edges: Edges },
    /// The listener has connections queued.
    Listener,
    /// `ShutdownHandle::trigger` fired the waker.
    Wake,
}

/// The simulated kernel and the event loop around echod's `Connections`,
/// driven the way `server.rs` drives them.
pub struct World<D> {
    limits: Limits,
    /// Peers `0..peers` are the scenario's peers; the rest are probes.
    peers: usize,
    idle_ms: u64,
    send_ms: u64,
    line_ms: u64,
    memory_limit: usize,
    max_per_address: usize,
    addresses: usize,
    max_connections: usize,
    shutdown_timeout_ms: u64,
    steps: usize,
    kernel: Rc<RefCell<Kernel<D>>>,
    registrar: SimRegistrar<D>,
    listener: SimListener<D>,
    connections: Connections<SimStream<D>>,
    /// Socket ids by connection key, while open.
    keys: BTreeMap<usize, usize>,
    /// The loop's own flags and deadlines, as the server keeps them.
    turn_state: TurnState,
    /// What `serve_again` must serve this turn: the list as it began.
    listed: Vec<usize>,
    /// Calls to `accept_pending` in this turn.
    accepts_this_turn: usize,
    /// The turn returned `Flow::Stop`: the server would have returned.
    stopped: bool,
    /// The waker fired and the loop has not polled since.
    wake_pending: bool,
    turn: u64,
    coverage: Coverage,
}

/// A broken property, with what is needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The scenario, in words.
    pub scenario: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  scenario: {}", self.message, self.scenario)
    }
}

/// Plays one scenario drawn from `decide` and checks every property.
/// `trace` prints each step to standard error, for replaying a failure.
///
/// # Errors
///
/// The first property broken.
pub fn run<D: Decide>(mut decide: D, trace: bool) -> Result<Coverage, Failure> {
    let scenario = Scenario::generate(&mut decide);
    let description = scenario.to_string();
    if trace {
        eprintln!("scenario: {description}");
    }
    let mut world = World::new(scenario, decide, trace);
    let outcome = world.random_phase().and_then(|()| world.settle());
    match outcome {
        Ok(()) => Ok(world.coverage()),
        Err(message) => Err(Failure {
            message: format!("turn {}: {message}", world.turn),
            scenario: description,
        }),
    }
}

impl<D: Decide> World<D> {
    /// A loop with no connections yet; peer 0 has connected and waits in
    /// the backlog.
    pub fn new(scenario: Scenario, decide: D, trace: bool) -> World<D> {
        let peers = scenario.peers.len();
        let probes = std::iter::repeat_with(Peer::probe).take(scenario.probes);
        let sockets = scenario
            .peers
            .into_iter()
            .chain(probes)
            .map(|plan| Socket {
                send_space: plan.send_space,
                plan,
                phase: Phase::Unconnected,
                arrived: 0,
                read_pos: 0,
                fin_arrived: false,
                eof_read: false,
                reset: false,
                reset_kind: io::ErrorKind::ConnectionReset,
                written: Vec::new(),
                fin_sent: false,
                registered: None,
                edges: Edges::default(),
                dropped: false,
                register_failed: false,
                last_activity_ms: 0,
                interrupts_in_a_row: 0,
                call: CallStats::default(),
                shutdown: None,
                model: Held::default(),
                violation: None,
                saw: Seen::default(),
            })
            .collect::<Vec<_>>();
        let coverage = Coverage {
            runs: 1,
            input_bytes: sockets.iter().map(|s| s.plan.input.len() as u64).sum(),
            ..Coverage::default()
        };
        let kernel = Rc::new(RefCell::new(Kernel {
            decide,
            now_ms: 0,
            trace,
            sockets,
            ready: Vec::new(),
            backlog: VecDeque::new(),
            listener_edge: false,
            listening: true,
            addresses: scenario.addresses,
            faults: scenario.faults,
            accept_calls: 0,
            accept_faults: 0,
            serve_log: None,
            coverage,
        }));
        kernel.borrow_mut().connect(0);
        World {
            limits: scenario.limits,
            peers,
            idle_ms: scenario.idle_ms,
            send_ms: scenario.send_ms,
            line_ms: scenario.line_ms,
            memory_limit: scenario.memory_limit,
            max_per_address: scenario.max_per_address,
            addresses: scenario.addresses,
            max_connections: scenario.max_connections,
            shutdown_timeout_ms: scenario.shutdown_timeout_ms,
            steps: scenario.steps,
            registrar: SimRegistrar(Rc::clone(&kernel)),
            listener: SimListener(Rc::clone(&kernel)),
            kernel,
            connections: Connections::new(
                scenario.limits,
                Timeouts {
                    idle_ms: scenario.idle_ms,
                    send_ms: scenario.send_ms,
                    line_ms: scenario.line_ms,
                },
                scenario.memory_limit,
                scenario.max_per_address,
            ),
            keys: BTreeMap::new(),
            turn_state: TurnState::new(scenario.shutdown_timeout_ms),
            listed: Vec::new(),
            accepts_this_turn: 0,
            stopped: false,
            wake_pending: false,
            turn: 0,
            coverage: Coverage::default(),
        }
    }

    /// Everything written to peer `id`.
    pub fn written(&self, id: usize) -> Vec<u8> {
        self.kernel.borrow().sockets[id].written.clone()
    }

    /// How peer `id`'s connection ended (its close reason as the log shows
    /// it, or `rejected`, `unregistered`, `refused`), if it has.
    pub fn close_reason(&self, id: usize) -> Option<&'static str> {
        match self.kernel.borrow().sockets[id].phase {
            Phase::Done(how) => Some(how),
            _ => None,
        }
    }

    /// Peer `id` connects.
    pub fn connect(&mut self, id: usize) {
        self.note(|| format!("peer {id} connects"));
        self.kernel.borrow_mut().connect(id);
    }

    /// The next `n` input bytes of peer `id` arrive.
    pub fn arrive(&mut self, id: usize, n: usize) {
        self.note(|| format!("peer {id}: arrive {n}"));
        self.kernel.borrow_mut().arrive(id, n);
    }

    /// Peer `id`'s FIN arrives, if all its input has.
    pub fn fin(&mut self, id: usize) {
        self.note(|| format!("peer {id}: fin"));
        self.kernel.borrow_mut().fin(id);
    }

    /// Peer `id` reads `n` bytes of echoes.
    pub fn drain(&mut self, id: usize, n: usize) {
        self.note(|| format!("peer {id}: reads {n}"));
        self.kernel.borrow_mut().drain(id, n);
    }

    /// Peer `id` resets its connection.
    pub fn reset(&mut self, id: usize) {
        self.note(|| format!("peer {id}: reset"));
        self.kernel
            .borrow_mut()
            .reset(id, io::ErrorKind::ConnectionReset);
    }

    /// Peer `id`'s host vanishes, and the keepalive probes give up on it.
    pub fn vanish(&mut self, id: usize) {
        self.note(|| format!("peer {id}: vanished (keepalive gives up)"));
        self.kernel.borrow_mut().reset(id, io::ErrorKind::TimedOut);
    }

    /// The clock moves on `ms`.
    pub fn advance(&mut self, ms: u64) {
        let now_ms = {
            let mut k = self.kernel.borrow_mut();
            k.now_ms += ms;
            k.now_ms
        };
        self.note(|| format!("clock +{ms} ms = {now_ms}"));
    }

    /// `ShutdownHandle::trigger`: the next poll returns the waker's event.
    /// Only the first counts (a second would stop the server at once).
    pub fn request_shutdown(&mut self) {
        if !self.turn_state.shutting_down() && !self.wake_pending {
            self.note(|| "shutdown requested".into());
            self.wake_pending = true;
        }
    }

    /// The random phase: `steps` arbitrary happenings, with faults.
    ///
    /// # Errors
    ///
    /// A broken property.
    pub fn random_phase(&mut self) -> Result<(), String> {
        for _ in 0..self.steps {
            let (choice, peer, shutdown_rate) = {
                let mut k = self.kernel.borrow_mut();
                if k.decide.exhausted() {
                    break;
                }
                let choice = k.decide.pick(100);
                let peer = k.decide.pick(self.peers as u64) as usize;
                (choice, peer, k.faults.shutdown)
            };
            let (arrive_max, drain_max, reset_rate, keepalive_rate) = {
                let k = self.kernel.borrow();
                let plan = &k.sockets[peer].plan;
                (
                    plan.arrive_max,
                    plan.drain_max,
                    plan.faults.reset,
                    plan.faults.keepalive,
                )
            };
            match choice {
                0..=24 => {
                    let n = self.kernel.borrow_mut().size(arrive_max);
                    self.arrive(peer, n);
                }
                25..=28 => self.fin(peer),
                29..=48 => {
                    let n = self.kernel.borrow_mut().size(drain_max);
                    self.drain(peer, n);
                }
                49..=53 => match self.unconnected() {
                    Some(id) if id < self.peers => self.connect(id),
                    Some(first) => {
                        // A burst of probes, up to twice the accept budget.
                        let burst = 1 + self
                            .kernel
                            .borrow_mut()
                            .decide
                            .pick(2 * ACCEPT_BUDGET as u64);
                        let n_sockets = self.kernel.borrow().sockets.len();
                        for id in first..n_sockets.min(first + burst as usize) {
                            self.connect(id);
                        }
                    }
                    None => {}
                },
                54..=87 => self.turn()?,
                _ => {
                    let ms = self.kernel.borrow_mut().decide.pick(1500);
                    self.advance(ms);
                    self.turn()?;
                }
            }
            if self.kernel.borrow_mut().chance(reset_rate) && self.is_connected(peer) {
                self.reset(peer);
            } else if self.kernel.borrow_mut().chance(keepalive_rate) && self.is_connected(peer) {
                self.vanish(peer);
            }
            if self.kernel.borrow_mut().chance(shutdown_rate) {
                self.request_shutdown();
            }
        }
        Ok(())
    }

    /// The settling phase: no more faults; every peer connects; every round,
    /// all the input and the FIN arrive and every peer reads everything,
    /// then the loop turns. If any peer never sends its FIN, the server
    /// shuts down, and the linger timeout or the deadline ends it. Every
    /// connection must close; if the loop has no event to deliver, nothing
    /// to serve again and no timer to wait for, no event will ever come, and
    /// the world is stuck.
    ///
    /// # Errors
    ///
    /// A broken property, or a connection that does not finish.
    pub fn settle(&mut self) -> Result<(), String> {
        self.note(|| "settle".into());
        let n_peers = {
            let mut k = self.kernel.borrow_mut();
            k.faults = LoopFaults::default();
            for s in &mut k.sockets {
                s.plan.faults = Faults::default();
            }
            k.sockets.len()
        };
        for id in 0..n_peers {
            self.connect(id);
        }
        if (0..n_peers).any(|id| !self.kernel.borrow().sockets[id].plan.peer_fin) {
            self.request_shutdown();
        }
        for _ in 0..MAX_SETTLE_ROUNDS {
            let everyone_done = {
                let k = self.kernel.borrow();
                k.sockets.iter().all(|s| matches!(s.phase, Phase::Done(_)))
            };
            if everyone_done && self.connections.is_empty() {
                return Ok(());
            }
            for id in 0..n_peers {
                let (connected, rest, fin) = {
                    let k = self.kernel.borrow();
                    let s = &k.sockets[id];
                    let connected = matches!(s.phase, Phase::Queued | Phase::Open { .. });
                    (connected, s.plan.input.len() - s.arrived, s.plan.peer_fin)
                };
                if connected {
                    let mut k = self.kernel.borrow_mut();
                    k.arrive(id, rest);
                    if fin {
                        k.fin(id);
                    }
                    k.drain(id, 1 << 40);
                }
            }
            let event_due = {
                let k = self.kernel.borrow();
                !k.ready.is_empty() || k.listener_edge
            } || self.wake_pending
                || self.turn_state.accept_again()
                || self.connections.want_another_turn();
            if event_due {
                self.turn()?;
                continue;
            }
            // Quiet. What is left to wait for is a timer: a lingering
            // connection whose peer never closes, or the shutdown deadline.
            let lingering = self
                .connections
                .iter()
                .any(|(_, connection)| matches!(connection.state(), State::Lingering(_)));
            // Or a timeout, or an eviction that gives the starving room.
            let timer = self
                .keys
                .iter()
                .any(|(&key, &id)| self.model_deadline(key, id).is_some());
            let starving = !self.connections.starving().is_empty();
            if lingering
                || timer
                || starving
                || self.turn_state.shutting_down() && !self.connections.is_empty()
            {
                self.advance(EXPIRY_SWEEP_MS);
                self.turn()?;
                continue;
            }
            return Err(self.stuck("no event will come"));
        }
        Err(self.stuck(&format!("not finished after {MAX_SETTLE_ROUNDS} rounds")))
    }

    /// What this run exercised.
    pub fn coverage(&self) -> Coverage {
        let mut coverage = self.kernel.borrow().coverage.clone();
        coverage.add(&self.coverage);
        for s in &self.kernel.borrow().sockets {
            if let Phase::Done(how) = s.phase {
                *coverage.closes.entry(how).or_default() += 1;
            }
            coverage.paused += u64::from(s.saw.paused);
            coverage.resumed += u64::from(s.saw.resumed);
            coverage.served_again += u64::from(s.saw.served_again);
            coverage.lingered += u64::from(s.saw.lingered);
            coverage.starved += u64::from(s.saw.starved);
        }
        coverage
    }

    /// One turn of the loop: a poll (each socket's edges as one event, a
    /// spurious event perhaps, the listener's and the waker's events among
    /// them), then the server's own turn (`echod::server::turn::turn`) over
    /// those events at the simulated clock's time, with the simulation's
    /// steps below checking each call; then the end-of-turn checks.
    ///
    /// # Errors
    ///
    /// A broken property.
    pub fn turn(&mut self) -> Result<(), String> {
        if self.stopped {
            return Ok(());
        }
        self.turn += 1;
        self.coverage.turns += 1;
        let events = self.poll();
        self.note(|| format!("turn {}: {events:?}", self.turn));
        let now_ms = self.kernel.borrow().now_ms;
        let events = events.into_iter().map(|event| match event {
            Event::Wake => TurnEvent::Outside(Outside::Waker),
            Event::Listener => TurnEvent::Listener(0),
            Event::Connection { key, edges } => TurnEvent::Connection {
                key,
                ready: Readiness::of_event(
                    edges.readable,
                    edges.writable,
                    edges.read_closed,
                    false,
                    false,
                ),
            },
        });
        let events: Vec<TurnEvent> = events.collect();
        if turn::turn(self, now_ms, events)? == Flow::Stop {
            self.note(|| "the server returns".into());
            self.stopped = true;
        }
        self.end_of_turn()
    }

    /// Takes what a poll returns: the ready list, and the listener's and the
    /// waker's events at arbitrary places among it.
    fn poll(&mut self) -> Vec<Event> {
        let mut k = self.kernel.borrow_mut();
        let mut events: Vec<Event> = k
            .harvest()
            .into_iter()
            .map(|(key, edges)| Event::Connection { key, edges })
            .collect();
        let rate = k.faults.spurious;
        if k.chance(rate) {
            let flags = k.decide.pick(8);
            let edges = Edges {
                readable: flags & 1 != 0,
                writable: flags & 2 != 0,
                read_closed: flags & 4 != 0,
            };
            // Mostly for an open connection; now and then for a key none
            // holds (an event that outlived its connection).
            let open: Vec<usize> = self.keys.keys().copied().collect();
            let key = if open.is_empty() || k.decide.pick(4) == 0 {
                k.coverage.stale_events += 1;
                self.keys.keys().last().map_or(0, |last| last + 1) + k.decide.pick(3) as usize
            } else {
                k.coverage.spurious_events += 1;
                open[k.decide.pick(open.len() as u64) as usize]
            };
            match events.iter_mut().find_map(|event| match event {
                Event::Connection { key: held, edges } if *held == key => Some(edges),
                _ => None,
            }) {
                Some(held) => held.merge(edges),
                None => {
                    let at = k.decide.pick(events.len() as u64 + 1) as usize;
                    events.insert(at, Event::Connection { key, edges });
                }
            }
        }
        if std::mem::take(&mut k.listener_edge) {
            let at = k.decide.pick(events.len() as u64 + 1) as usize;
            events.insert(at, Event::Listener);
        }
        if std::mem::take(&mut self.wake_pending) {
            let at = k.decide.pick(events.len() as u64 + 1) as usize;
            events.insert(at, Event::Wake);
        }
        events
    }

    /// Resets the call counters of every open connection's socket.
    fn start_calls(&mut self) {
        let mut k = self.kernel.borrow_mut();
        for &id in self.keys.values() {
            k.sockets[id].call = CallStats::default();
        }
    }

    /// Hands an event to `Connections::drive` and checks the call.
    fn check_drive(&mut self, key: usize, ready: Readiness) -> Result<usize, String> {
        let id = self.keys.get(&key).copied();
        let before = self.connections.get(key).map(|c| c.state());
        self.note(|| format!("event {ready:?} for key {key} (peer {id:?}) in state {before:?}"));
        self.start_calls();
        self.coverage.calls += 1;
        let listed = self.connections.listed_again().len();
        let now_ms = self.kernel.borrow().now_ms;
        let closed = self.connections.drive(&self.registrar, key, ready, now_ms);
        let again = self.connections.listed_again()[listed..].to_vec();
        let Some(id) = id else {
            if closed.is_some() || !again.is_empty() {
                return Err(format!("an event for vacant key {key} did something"));
            }
            return Ok(0);
        };
        if again.iter().any(|&listed| listed != key) {
            return Err(format!(
                "an event for key {key} listed {again:?} to serve again"
            ));
        }
        let before = before.expect("a key in `keys` is open");
        let n_closed = usize::from(closed.is_some());
        self.after_call(id, key, before, 1, again.len(), closed)?;
        Ok(n_closed)
    }

    /// The serve-again phase: `Connections::serve_again`, which must serve
    /// exactly what was `listed` when the turn began, in order.
    fn serve_phase(&mut self, listed: &[usize]) -> Result<(), String> {
        if listed.is_empty() {
            let n_listed = self.connections.listed_again().len();
            let closed = self.call_serve_again();
            return match closed.is_empty() && self.connections.listed_again().len() == n_listed {
                true => Ok(()),
                false => Err("served a connection again that nobody listed".into()),
            };
        }
        self.note(|| format!("serve again {listed:?}"));
        self.start_calls();
        let mut unique: Vec<usize> = Vec::new();
        for &key in listed {
            if unique.contains(&key) {
                return Err(format!("key {key} was listed twice to be served again"));
            }
            // Listed anew by its event this turn: it has had this turn's
            // budget, and is served next turn instead.
            if self
                .connections
                .get(key)
                .is_some_and(|c| c.is_listed_again())
            {
                self.coverage.left_to_next_turn += 1;
                continue;
            }
            unique.push(key);
        }
        // The key may belong to a newer connection than the one that
        // listed it: serving that one is harmless, like a spurious event.
        let before: Vec<(usize, Option<(usize, State)>)> = unique
            .iter()
            .map(|&key| {
                let open = self.keys.get(&key).copied();
                (key, open.zip(self.connections.get(key).map(|c| c.state())))
            })
            .collect();
        self.kernel.borrow_mut().serve_log = Some(Vec::new());
        let n_listed = self.connections.listed_again().len();
        let closed = self.call_serve_again();
        let served = self
            .kernel
            .borrow_mut()
            .serve_log
            .take()
            .expect("set above");
        let again = self.connections.listed_again()[n_listed..].to_vec();
        let expected: Vec<usize> = before
            .iter()
            .filter_map(|(_, open)| open.map(|(id, _)| id))
            .collect();
        // Nothing but the listed is served, and in the order listed.
        let mut order = expected.iter();
        for id in &served {
            if !order.any(|expected| expected == id) {
                return Err(format!(
                    "served peers {served:?} again, but {expected:?} were listed, in that order"
                ));
            }
        }
        let mut closed: Vec<Option<Closed<SimStream<D>>>> = closed.into_iter().map(Some).collect();
        for (key, open) in before {
            let Some((id, state)) = open else { continue };
            self.coverage.calls += 1;
            // An open connection listed to be served again reads.
            // Unless the room it was fed for went to others' reads earlier in
            // the turn: it starves again without a read.
            let starved_again = self.connections.starving().contains(&key);
            if state == State::Open && !served.contains(&id) && !starved_again {
                return Err(format!(
                    "peer {id} (key {key}) was listed to be served again, but was not"
                ));
            }
            let times = listed.iter().filter(|&&listed| listed == key).count();
            let agains = again.iter().filter(|&&listed| listed == key).count();
            let closed = closed
                .iter_mut()
                .find(|c| c.as_ref().is_some_and(|c| c.key == key))
                .and_then(Option::take);
            self.after_call(id, key, state, times, agains, closed)?;
        }
        match closed.into_iter().flatten().next() {
            Some(stray) => Err(format!(
                "serving again closed key {}, not listed",
                stray.key
            )),
            None => Ok(()),
        }
    }

    fn call_serve_again(&mut self) -> Vec<Closed<SimStream<D>>> {
        let now_ms = self.kernel.borrow().now_ms;
        self.connections.serve_again(&self.registrar, now_ms)
    }

    /// Checks one call's conduct (or `calls` calls' in a serve-again phase,
    /// `agains` of which listed the connection to be served again) and
    /// what it left behind.
    fn after_call(
        &mut self,
        id: usize,
        key: usize,
        before: State,
        calls: usize,
        agains: usize,
        closed: Option<Closed<SimStream<D>>>,
    ) -> Result<(), String> {
        let call = {
            let mut k = self.kernel.borrow_mut();
            if let Some(violation) = k.sockets[id].violation.take() {
                return Err(format!("peer {id}: {violation}"));
            }
            k.sockets[id].call
        };
        self.note(|| format!("  peer {id}: {call:?}, closed {}", closed.is_some()));
        // A call may meet `WouldBlock` once reading and once writing, and a
        // write may find the buffer full once after each read; any more is
        // a loop that learns nothing.
        if call.futile > 2 * calls + call.progress {
            return Err(format!(
                "peer {id} spins: {} operations returned WouldBlock against {} that made \
                 progress",
                call.futile, call.progress
            ));
        }
        // The budget is checked after each read, so one read may take the
        // call past it, but no read may follow; every read is charged,
        // whatever it found (an over-long line, the peer's EOF).
        let over_budget = if calls == 1 {
            call.read_bytes - call.last_read >= TURN_READ_BUDGET_BYTES
        } else {
            call.read_bytes > calls * (TURN_READ_BUDGET_BYTES + call.max_read)
        };
        if call.read_bytes > 0 && over_budget {
            return Err(format!(
                "peer {id} read {} bytes in {calls} call(s), past the budget of {} per call \
                 plus one read",
                call.read_bytes, TURN_READ_BUDGET_BYTES
            ));
        }
        if agains > calls || call.read_bytes < agains * TURN_READ_BUDGET_BYTES {
            return Err(format!(
                "peer {id} listed {agains} time(s) to be served again after {calls} call(s) \
                 reading {} bytes, less than its budget",
                call.read_bytes
            ));
        }
        if agains > 0 {
            self.kernel.borrow_mut().sockets[id].saw.served_again = true;
        }
        self.check_memory()?;
        if let Some(closed) = closed {
            if closed.key != key {
                return Err(format!("closing key {key} closed key {}", closed.key));
            }
            return self.closed(closed, Via::Step);
        }
        let connection = self
            .connections
            .get(key)
            .ok_or_else(|| format!("key {key} vanished without a close"))?;
        let state = connection.state();
        {
            let mut k = self.kernel.borrow_mut();
            let saw = &mut k.sockets[id].saw;
            saw.paused |= state == State::Paused;
            saw.resumed |= before == State::Paused && state == State::Open;
            saw.lingered |= matches!(state, State::Lingering(_));
            saw.starved |= self.connections.starving().contains(&key);
        }
        self.update_model(id, state)?;
        self.check_bounds(id, key)?;
        self.check_registration(id, key)
    }

    /// The memory budget's bound (src/connections/memory.rs): the storage
    /// counted is exactly the storage held, and it passes the budget only
    /// by reads kept by connections that had nothing left over, one each.
    fn check_memory(&mut self) -> Result<(), String> {
        let (mut held, mut slack) = (0, 0);
        for (_, connection) in self.connections.iter() {
            held += connection.buffer_capacity();
            slack += connection.buffer_capacity().min(READ_CHUNK_BYTES);
        }
        let counted = self.connections.memory_used();
        if counted != held {
            return Err(format!(
                "the budget counts {counted} bytes of storage, the buffers hold {held}"
            ));
        }
        if self.memory_limit == usize::MAX {
            return Ok(());
        }
        if held > self.memory_limit.saturating_add(slack) {
            return Err(format!(
                "buffers hold {held} bytes, past the budget of {} plus one read per holder \
                 ({slack})",
                self.memory_limit
            ));
        }
        if held > self.memory_limit {
            self.coverage.over_budget += 1;
        }
        Ok(())
    }

    /// Brings the model's account of peer `id`'s leftovers up to date after
    /// a call, from the bytes read and written alone, and checks the
    /// connection agrees on what it owes. The clock does not move within a
    /// call, so "since when" is this call's time whenever something began
    /// (owing, a line) or moved (a write took echoes) in it.
    fn update_model(&mut self, id: usize, state: State) -> Result<(), String> {
        let limits = self.limits;
        let mut k = self.kernel.borrow_mut();
        let now_ms = k.now_ms;
        let s = &mut k.sockets[id];
        let stop = s.shutdown.map_or(s.read_pos, |mark| mark.read_pos);
        let mut model = s.model;
        let line_start = model.line_start;
        model.scan(limits.framing, &s.plan.input, stop, limits.max_line_bytes);
        let Some(owed) = model.line_start.checked_sub(s.written.len()) else {
            return Err(format!(
                "peer {id}: {} bytes written, more than the {} bytes of complete lines read",
                s.written.len(),
                model.line_start
            ));
        };
        let unfinished = match state {
            State::Open | State::Paused if !model.too_long => model.scanned - model.line_start,
            _ => 0,
        };
        if s.written.len() > model.written || (model.owed == 0 && owed > 0) {
            model.owing_since_ms = now_ms;
        }
        if unfinished > 0 && (model.unfinished == 0 || model.line_start != line_start) {
            model.line_since_ms = now_ms;
        }
        model.owed = owed;
        model.unfinished = unfinished;
        model.written = s.written.len();
        s.model = model;
        Ok(())
    }

    /// The model's earliest deadline for connection `key` (peer `id`), and
    /// the close reason it calls for: as `Connection::deadline` documents
    /// it, from the model's own clock readings.
    fn model_deadline(&self, key: usize, id: usize) -> Option<(u64, &'static str)> {
        let state = self.connections.get(key).expect("open").state();
        let k = self.kernel.borrow();
        let s = &k.sockets[id];
        if let State::Lingering(finish) = state {
            return Some((s.last_activity_ms + LINGER_MS, reason_name(&finish.into())));
        }
        let on = |timeout_ms: u64, applies: bool, since_ms: u64| {
            (timeout_ms > 0 && applies).then_some(since_ms + timeout_ms)
        };
        [
            (
                on(self.send_ms, s.model.owed > 0, s.model.owing_since_ms),
                "send timeout",
            ),
            (
                on(self.line_ms, s.model.unfinished > 0, s.model.line_since_ms),
                "line timeout",
            ),
            (on(self.idle_ms, true, s.last_activity_ms), "idle timeout"),
        ]
        .into_iter()
        .filter_map(|(due, reason)| Some((due?, reason)))
        .min_by_key(|&(due, _)| due)
    }

    /// Since when the model says peer `id`'s client has made no progress
    /// while its connection holds leftovers, if it holds any.
    fn model_stalled_since(&self, id: usize) -> Option<u64> {
        let model = self.kernel.borrow().sockets[id].model;
        if model.owed > 0 {
            Some(model.owing_since_ms)
        } else if model.unfinished > 0 {
            Some(model.line_since_ms)
        } else {
            None
        }
    }

    /// What is registered for the socket is what its connection waits for.
    fn check_registration(&self, id: usize, key: usize) -> Result<(), String> {
        let connection = self.connections.get(key).expect("open");
        let Some(interest) = connection.interest() else {
            return Err(format!(
                "peer {id} waits for nothing in state {} but did not close",
                connection.state()
            ));
        };
        let registered = self.kernel.borrow().sockets[id].registered;
        if registered != Some((key, interest)) {
            return Err(format!(
                "peer {id} (key {key}) waits for {interest:?} in state {}, but {registered:?} is \
                 registered",
                connection.state()
            ));
        }
        Ok(())
    }

    /// The buffer and pause invariants, between calls.
    fn check_bounds(&self, id: usize, key: usize) -> Result<(), String> {
        let limits = &self.limits;
        let connection = self.connections.get(key).expect("open");
        let capacity = connection.buffer_capacity();
        if capacity > limits.max_buffer_bytes() {
            return Err(format!(
                "peer {id}: buffer of {capacity} bytes, over its bound of {}",
                limits.max_buffer_bytes()
            ));
        }
        // docs/PROTOCOL.md: the owed bytes pass the mark by at most one
        // read and the unfinished line that read completed.
        let pending = connection.pending_bytes();
        let pending_bound = limits.max_pending_bytes + READ_CHUNK_BYTES + limits.max_line_bytes;
        if pending >= pending_bound {
            return Err(format!(
                "peer {id}: {pending} bytes owed, past the documented bound of {pending_bound}"
            ));
        }
        match connection.state() {
            State::Paused if pending <= limits.resume_pending_bytes => Err(format!(
                "peer {id}: paused with only {pending} bytes owed (resumes at {}): nothing will \
                 wake it",
                limits.resume_pending_bytes
            )),
            State::Draining(finish) if pending == 0 => Err(format!(
                "peer {id}: draining ({finish}) with nothing owed: it should have moved on"
            )),
            _ => Ok(()),
        }
    }

    /// `Connections::accept_pending`, and its budget and rejections: why it
    /// stopped, and how many it displaced.
    fn check_accept(&mut self) -> Result<(AcceptEnd, usize), String> {
        let (queued, now_ms) = {
            let mut k = self.kernel.borrow_mut();
            k.accept_calls = 0;
            k.accept_faults = 0;
            (k.backlog.len(), k.now_ms)
        };
        let mut told = Vec::new();
        let open_before = self.connections.len();
        // Who may give up a slot: open, owing nothing, no line begun, and
        // quiet by the model's own clock for `DISPLACE_QUIET_MS`.
        let quiet_before: Vec<usize> = self
            .keys
            .iter()
            .filter(|&(&key, &id)| {
                let connection = self.connections.get(key).expect("open");
                let last_ms = self.kernel.borrow().sockets[id].last_activity_ms;
                connection.quiet_since_ms().is_some()
                    && now_ms.saturating_sub(last_ms) >= DISPLACE_QUIET_MS
            })
            .map(|(&key, _)| key)
            .collect();
        let (end, displaced) = self.connections.accept_pending(
            &self.listener,
            &self.registrar,
            self.max_connections,
            now_ms,
            |accept| told.push(accept),
        );
        let (calls, faults, left) = {
            let k = self.kernel.borrow();
            (k.accept_calls, k.accept_faults, k.backlog.len())
        };
        self.note(|| format!("accept: {end:?} after {calls} calls, {told:?}"));
        if calls > ACCEPT_BUDGET {
            return Err(format!(
                "{calls} accept calls in one turn, past the budget of {ACCEPT_BUDGET}"
            ));
        }
        match &end {
            AcceptEnd::Empty if left > 0 => {
                return Err(format!("accepting stopped with {left} connections queued"));
            }
            AcceptEnd::Empty => {}
            AcceptEnd::BudgetSpent if calls < ACCEPT_BUDGET => {
                return Err(format!("budget spent after {calls} accept calls"));
            }
            AcceptEnd::BudgetSpent => self.coverage.accept_budget_spent += 1,
            AcceptEnd::OutOfDescriptors(err) => {
                return Err(format!("out of descriptors, which nobody injected: {err}"));
            }
        }
        if faults == 0 && told.len() != queued.min(ACCEPT_BUDGET) {
            return Err(format!(
                "took {} of {queued} queued connections with no accept failing",
                told.len()
            ));
        }
        for closed in &displaced {
            if !quiet_before.contains(&closed.key) {
                let id = self.keys[&closed.key];
                return Err(format!("peer {id} displaced, but it was not quiet"));
            }
        }
        let n_displaced = displaced.len();
        let displaced_ids: Vec<usize> = displaced.iter().map(|c| self.keys[&c.key]).collect();
        for closed in displaced {
            self.coverage.displaced += 1;
            self.closed(closed, Via::Displaced)?;
        }
        let mut spare_slots = n_displaced;
        let mut open = open_before;
        // Open connections by address as the call began, and those of each
        // address it displaced (which, being closed in the call, may or may
        // not count against a given attempt).
        let addresses = self.addresses;
        let address = move |id: usize| id % addresses;
        let (mut from_address, mut displaced_from) =
            (vec![0usize; self.addresses], vec![0usize; self.addresses]);
        for &id in self.keys.values() {
            from_address[address(id)] += 1;
        }
        for &id in &displaced_ids {
            from_address[address(id)] += 1;
            displaced_from[address(id)] += 1;
        }
        for accept in told {
            match accept {
                // The simulation sets no access rules.
                Accept::Denied { peer } => {
                    return Err(format!("{peer} denied with no access rules"));
                }
                // Nor the PROXY protocol.
                Accept::Untrusted { peer } => {
                    return Err(format!("{peer} untrusted with no PROXY protocol"));
                }
                Accept::Accepted { key, peer, .. } => {
                    let id = usize::from(peer.port() - PEER_PORT);
                    let from = address(id);
                    if from_address[from].saturating_sub(displaced_from[from])
                        >= self.max_per_address
                    {
                        return Err(format!(
                            "peer {id} accepted with {} open from its address, max {}",
                            from_address[from], self.max_per_address
                        ));
                    }
                    from_address[from] += 1;
                    if open >= self.max_connections {
                        // A quiet connection must have made room for it.
                        if spare_slots == 0 {
                            return Err(format!(
                                "peer {id} accepted with {open} open, max_connections {}",
                                self.max_connections
                            ));
                        }
                        spare_slots -= 1;
                        open -= 1;
                    }
                    open += 1;
                    self.keys.insert(key, id);
                    let violation = {
                        let mut k = self.kernel.borrow_mut();
                        k.sockets[id].phase = Phase::Open { key };
                        // The idle timer starts at the accept, and so do the
                        // model's others.
                        k.sockets[id].last_activity_ms = now_ms;
                        k.sockets[id].model = Held {
                            owing_since_ms: now_ms,
                            line_since_ms: now_ms,
                            ..Held::default()
                        };
                        k.sockets[id].violation.take()
                    };
                    if let Some(violation) = violation {
                        return Err(format!("peer {id}: {violation}"));
                    }
                    self.check_registration(id, key)?;
                }
                Accept::Rejected { peer } => {
                    let id = usize::from(peer.port() - PEER_PORT);
                    if open < self.max_connections {
                        return Err(format!(
                            "peer {id} rejected with only {open} open, max_connections {}",
                            self.max_connections
                        ));
                    }
                    // Only when no connection was quiet enough to give way.
                    if quiet_before.len() > n_displaced {
                        return Err(format!(
                            "peer {id} rejected while {} connections were quiet",
                            quiet_before.len() - n_displaced
                        ));
                    }
                    self.coverage.rejected += 1;
                    self.gone(id, "rejected")?;
                }
                Accept::TooManyFromAddress { peer } => {
                    let id = usize::from(peer.port() - PEER_PORT);
                    if from_address[address(id)] < self.max_per_address {
                        return Err(format!(
                            "peer {id} refused with {} open from its address, max {}",
                            from_address[address(id)],
                            self.max_per_address
                        ));
                    }
                    self.gone(id, "too many from one address")?;
                }
                Accept::Unregistered { peer, err } => {
                    let id = usize::from(peer.port() - PEER_PORT);
                    if !self.kernel.borrow().sockets[id].register_failed {
                        return Err(format!("peer {id} not registered: {err}, not injected"));
                    }
                    self.coverage.unregistered += 1;
                    self.gone(id, "unregistered")?;
                }
            }
        }
        let open = self.connections.len() as u64;
        self.coverage.most_open = self.coverage.most_open.max(open);
        if open >= 2 {
            self.coverage.several_connections = 1;
        }
        Ok((end, n_displaced))
    }

    /// Peer `id` never got a connection: its socket must be closed untouched.
    fn gone(&mut self, id: usize, how: &'static str) -> Result<(), String> {
        let mut k = self.kernel.borrow_mut();
        let s = &mut k.sockets[id];
        if !s.dropped || s.call.ops > 0 || !s.written.is_empty() {
            return Err(format!(
                "peer {id} {how}, but its socket was used or left open"
            ));
        }
        s.phase = Phase::Done(how);
        Ok(())
    }

    /// The waker's event: `Connections::begin_shutdown`, after closing the
    /// listener (connections still queued are refused).
    fn check_begin_shutdown(&mut self) -> Result<(), String> {
        let now_ms = {
            let mut k = self.kernel.borrow_mut();
            k.listening = false;
            k.listener_edge = false;
            for id in std::mem::take(&mut k.backlog) {
                k.sockets[id].phase = Phase::Done("refused");
                k.coverage.refused += 1;
            }
            for &id in self.keys.values() {
                let s = &mut k.sockets[id];
                s.shutdown = Some(ShutdownMark {
                    read_pos: s.read_pos,
                    eof_read: s.eof_read,
                });
            }
            k.now_ms
        };
        self.note(|| "server shutdown".into());
        self.start_calls();
        let before: Vec<(usize, usize, State)> = self
            .keys
            .iter()
            .map(|(&key, &id)| (key, id, self.connections.get(key).expect("open").state()))
            .collect();
        let listed = self.connections.listed_again().len();
        let mut closed: Vec<Option<Closed<SimStream<D>>>> = self
            .connections
            .begin_shutdown(&self.registrar, now_ms)
            .into_iter()
            .map(Some)
            .collect();
        // A connection that lingers at once reads what is queued, and may
        // spend its budget doing so.
        let again = self.connections.listed_again()[listed..].to_vec();
        for (key, id, state) in before {
            self.coverage.calls += 1;
            let closed = closed
                .iter_mut()
                .find(|c| c.as_ref().is_some_and(|c| c.key == key))
                .and_then(Option::take);
            let agains = again.iter().filter(|&&listed| listed == key).count();
            self.after_call(id, key, state, 1, agains, closed)?;
        }
        Ok(())
    }

    /// `Connections::expire`: the connections closed must be exactly those
    /// the model's own clock says have waited too long, each with the
    /// reason of its earliest deadline (the linger time runs from our FIN;
    /// the idle time from the last byte moved before it; the send time from
    /// when echoes began to be owed or were last taken; the line time from
    /// the unfinished line's first byte).
    fn sweep(&mut self) -> Result<(), String> {
        let now_ms = self.kernel.borrow().now_ms;
        let expected: BTreeMap<usize, Option<&'static str>> = self
            .keys
            .iter()
            .map(|(&key, &id)| {
                let due = self.model_deadline(key, id);
                (
                    key,
                    due.and_then(|(at_ms, reason)| (at_ms <= now_ms).then_some(reason)),
                )
            })
            .collect();
        let closed = self.connections.expire(now_ms);
        for (key, expected) in &expected {
            let got = closed
                .iter()
                .find(|c| c.key == *key)
                .map(|c| reason_name(&c.reason));
            if got != *expected {
                let id = self.keys[key];
                let quiet_ms = now_ms - self.kernel.borrow().sockets[id].last_activity_ms;
                let model = self.kernel.borrow().sockets[id].model;
                return Err(format!(
                    "peer {id}: expiry at {now_ms} ms, {quiet_ms} ms quiet, {model:?}: got \
                     {got:?}, expected {expected:?}"
                ));
            }
        }
        for closed in closed {
            self.closed(closed, Via::Expiry)?;
        }
        Ok(())
    }

    /// Fairness and liveness at the end of a turn: every open connection
    /// with input waiting has an event coming or is listed to be served
    /// again; queued connections will be accepted.
    fn end_of_turn(&mut self) -> Result<(), String> {
        let listed = self.connections.listed_again();
        let k = self.kernel.borrow();
        for (&key, &id) in &self.keys {
            let connection = self.connections.get(key).expect("open");
            let s = &k.sockets[id];
            let waiting = s.arrived > s.read_pos || (s.fin_arrived && !s.eof_read) || s.reset;
            let reads = matches!(connection.state(), State::Open | State::Lingering(_));
            let starving = self.connections.starving().contains(&key);
            if waiting && reads && !s.edges.any() && !listed.contains(&key) && !starving {
                return Err(format!(
                    "peer {id} (key {key}) has input waiting in state {}, but no event is coming \
                     and it is not listed to be served again",
                    connection.state()
                ));
            }
        }
        if !self.connections.starving().is_empty()
            && self.connections.room_to_feed()
            && !self.connections.want_another_turn()
        {
            return Err("connections starve with room to read, and the next poll will wait".into());
        }
        // Every deadline is kept within one housekeeping interval.
        let now_ms = k.now_ms;
        drop(k);
        for (&key, &id) in &self.keys {
            if let Some((due_ms, reason)) = self.model_deadline(key, id) {
                if due_ms + HOUSEKEEPING_INTERVAL_MS <= now_ms {
                    return Err(format!(
                        "peer {id} (key {key}) still open at {now_ms} ms, its {reason} due at \
                         {due_ms} ms"
                    ));
                }
            }
        }
        let k = self.kernel.borrow();
        if !k.backlog.is_empty()
            && k.listening
            && !k.listener_edge
            && !self.turn_state.accept_again()
        {
            return Err(format!(
                "{} connections queued, but no event is coming and no accept is due",
                k.backlog.len()
            ));
        }
        Ok(())
    }

    /// A connection closed with `closed.reason`; checks that it is the
    /// reason the scenario calls for and that what was written fits it.
    fn closed(&mut self, closed: Closed<SimStream<D>>, via: Via) -> Result<(), String> {
        let Closed {
            key,
            connection,
            reason,
        } = closed;
        let id = self
            .keys
            .remove(&key)
            .ok_or_else(|| format!("closed key {key}, which was not open"))?;
        let name = reason_name(&reason);
        self.note(|| format!("peer {id} (key {key}) closed: {reason}"));
        // The socket closes here, and leaves the epoll set.
        drop(connection);
        let mut k = self.kernel.borrow_mut();
        let s = &mut k.sockets[id];
        s.phase = Phase::Done(name);
        if !s.dropped {
            return Err(format!("peer {id}: closed, but its socket is still open"));
        }
        let stop = s.shutdown.map_or(s.read_pos, |mark| mark.read_pos);
        let owed = reference(
            self.limits.framing,
            &s.plan.input[..stop],
            self.limits.max_line_bytes,
        );
        let eof_first = s.shutdown.map_or(s.eof_read, |mark| mark.eof_read);
        let orderly = if owed.too_long {
            Some(Finish::LineTooLong)
        } else if eof_first {
            Some(Finish::PeerFinished)
        } else if s.shutdown.is_some() {
            Some(Finish::ServerShutdown)
        } else {
            None
        };
        let echo = &s.plan.input[..owed.echo_len];
        let written = &s.written[..];
        let finish = match reason {
            CloseReason::PeerFinished => Finish::PeerFinished,
            CloseReason::LineTooLong => Finish::LineTooLong,
            CloseReason::ServerShutdown => Finish::ServerShutdown,
            CloseReason::Io(err) => {
                let injected = match err.kind() {
                    io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected => s.reset,
                    io::ErrorKind::TimedOut => s.reset && s.reset_kind == io::ErrorKind::TimedOut,
                    io::ErrorKind::OutOfMemory => s.register_failed,
                    _ => false,
                };
                if !injected {
                    return Err(format!(
                        "peer {id}: closed on an error nobody injected: {err}"
                    ));
                }
                if err.kind() == io::ErrorKind::TimedOut {
                    self.coverage.keepalive_timeouts += 1;
                }
                return prefix_of(id, written, echo);
            }
            // The sweep checked the reason against the model's deadlines.
            CloseReason::IdleTimeout | CloseReason::SendTimeout | CloseReason::LineTimeout
                if via == Via::Expiry =>
            {
                return prefix_of(id, written, echo);
            }
            // `relieve_memory` checked that it was stalled.
            CloseReason::Evicted if via == Via::Evicted => return prefix_of(id, written, echo),
            // Quiet means owing nothing: every echo was delivered.
            CloseReason::Displaced if via == Via::Displaced => {
                return prefix_of(id, written, echo);
            }
            CloseReason::ShutdownTimeout if via == Via::Deadline => {
                return prefix_of(id, written, echo);
            }
            CloseReason::IdleTimeout
            | CloseReason::ShutdownTimeout
            | CloseReason::SendTimeout
            | CloseReason::LineTimeout
            | CloseReason::Evicted
            | CloseReason::OutOfMemory
            | CloseReason::Displaced => {
                return Err(format!("peer {id}: closed ({name}) via {via:?}"));
            }
            // The simulation runs without the PROXY protocol or access rules.
            CloseReason::ProxyHeaderMalformed
            | CloseReason::ProxyHeaderTimeout
            | CloseReason::Denied
            | CloseReason::TooManyFromAddress => {
                return Err(format!("peer {id}: closed ({name}) with no PROXY protocol"));
            }
        };
        if orderly != Some(finish) {
            return Err(format!(
                "peer {id}: closed ({name}), but the scenario calls for {orderly:?} (EOF read \
                 first: {eof_first}, shutdown: {}, line too long: {})",
                s.shutdown.is_some(),
                owed.too_long
            ));
        }
        if written != echo {
            return Err(format!(
                "peer {id}: closed ({name}) having written {} bytes, not the {} bytes of \
                 complete lines read; first difference at byte {}",
                written.len(),
                echo.len(),
                first_difference(written, echo)
            ));
        }
        match finish {
            // Every byte the peer sent was read: closing cannot lose echoes.
            Finish::PeerFinished if via == Via::Step && s.eof_read => Ok(()),
            // Our FIN went out after the last echo; we close once the peer
            // closes too, or once the linger time is up.
            Finish::LineTooLong | Finish::ServerShutdown
                if s.fin_sent && (via == Via::Expiry || s.eof_read) =>
            {
                Ok(())
            }
            // Idle at the shutdown: every echo delivered (checked above) and
            // nothing queued unread, so closing at once loses nothing.
            Finish::ServerShutdown
                if via == Via::Step
                    && !s.fin_sent
                    && s.read_pos == s.arrived
                    && !s.fin_arrived
                    && !s.reset =>
            {
                self.coverage.closed_idle_at_shutdown += 1;
                Ok(())
            }
            _ => Err(format!(
                "peer {id}: closed ({name}) via {via:?} with EOF read {}, FIN sent {}",
                s.eof_read, s.fin_sent
            )),
        }
    }

    /// The first peer not yet connected.
    fn unconnected(&self) -> Option<usize> {
        let k = self.kernel.borrow();
        k.sockets.iter().position(|s| s.phase == Phase::Unconnected)
    }

    fn is_connected(&self, id: usize) -> bool {
        let k = self.kernel.borrow();
        matches!(k.sockets[id].phase, Phase::Queued | Phase::Open { .. })
    }

    fn stuck(&self, why: &str) -> String {
        let k = self.kernel.borrow();
        let mut message = format!(
            "stuck ({why}): {} queued, {} open, listed again {:?}",
            k.backlog.len(),
            self.connections.len(),
            self.connections.listed_again()
        );
        for (&key, &id) in &self.keys {
            let connection = self.connections.get(key).expect("open");
            let s = &k.sockets[id];
            message.push_str(&format!(
                "\n    peer {id} (key {key}): state {}, {} bytes owed, {} arrived and unread, FIN \
                 arrived {}, registered {:?}, send space {}",
                connection.state(),
                connection.pending_bytes(),
                s.arrived - s.read_pos,
                s.fin_arrived,
                s.registered,
                s.send_space
            ));
        }
        message
    }

    fn note(&self, what: impl FnOnce() -> String) {
        let k = self.kernel.borrow();
        if k.trace {
            eprintln!("t={} {}", k.now_ms, what());
        }
    }
}

/// The simulation's steps of the server's turn: each makes the same call
/// into `Connections` as the server's, and checks what it did.
impl<D: Decide> Steps for World<D> {
    type Fault = String;

    fn turn_state(&mut self) -> &mut TurnState {
        &mut self.turn_state
    }

    fn begin_turn(&mut self) -> Result<(), String> {
        self.listed = self.connections.listed_again().to_vec();
        // With room for a read, the starving are served with them, after.
        if self.connections.room_to_feed() {
            // Those still open: a key whose connection closed is dropped.
            // A key may be listed twice, once for a connection since closed:
            // served once.
            for &key in self.connections.starving() {
                if self.connections.get(key).is_some() && !self.listed.contains(&key) {
                    self.listed.push(key);
                }
            }
        }
        self.accepts_this_turn = 0;
        self.connections.begin_turn();
        Ok(())
    }

    fn requests(&mut self, from: Outside) -> Result<Vec<Request>, String> {
        match from {
            Outside::Waker => Ok(vec![Request::Shutdown {
                why: "shutdown requested",
            }]),
            Outside::Signals => Err("an event for a signal pipe the simulation has not".into()),
        }
    }

    fn summary_requested(&mut self) -> Result<(), String> {
        Err("a summary that nobody requested".into())
    }

    fn begin_shutdown(&mut self, _why: &str) -> Result<usize, String> {
        let open = self.connections.len();
        self.check_begin_shutdown()?;
        Ok(open - self.connections.len())
    }

    fn stop_now(&mut self, why: &str) -> Result<(), String> {
        Err(format!("{why} a second time, which nobody did"))
    }

    fn listeners(&self) -> usize {
        usize::from(self.kernel.borrow().listening)
    }

    fn accept(&mut self, index: usize) -> Result<(AcceptEnd, usize), String> {
        self.accepts_this_turn += 1;
        if index != 0 || self.accepts_this_turn > 1 {
            return Err(format!(
                "accept call {} of this turn, on listener {index}: one listener, accepted \
                 from once a turn",
                self.accepts_this_turn
            ));
        }
        self.check_accept()
    }

    fn drive(&mut self, key: usize, ready: Readiness) -> Result<usize, String> {
        self.check_drive(key, ready)
    }

    fn serve_again(&mut self) -> Result<usize, String> {
        let listed = std::mem::take(&mut self.listed);
        let open = self.connections.len();
        self.serve_phase(&listed)?;
        Ok(open.saturating_sub(self.connections.len()))
    }

    /// Only a connection whose client the model says has made no progress
    /// for `EVICT_STALLED_MS`, while others starve with the budget spent,
    /// may be evicted.
    fn relieve_memory(&mut self) -> Result<usize, String> {
        let now_ms = self.kernel.borrow().now_ms;
        let spent = !self.connections.starving().is_empty() && !self.connections.room_to_feed();
        let evicted = self.connections.relieve_memory(now_ms);
        let n = evicted.len();
        for closed in evicted {
            let id = self.keys[&closed.key];
            let stalled_ms = self
                .model_stalled_since(id)
                .map(|since_ms| now_ms.saturating_sub(since_ms));
            if !spent || stalled_ms.is_none_or(|ms| ms < EVICT_STALLED_MS) {
                return Err(format!(
                    "peer {id} evicted, stalled for {stalled_ms:?} ms, budget spent with others \
                     starving: {spent}"
                ));
            }
            self.closed(closed, Via::Evicted)?;
        }
        Ok(n)
    }

    fn housekeeping(&mut self) -> Result<usize, String> {
        let open = self.connections.len();
        self.sweep()?;
        Ok(open - self.connections.len())
    }

    fn clock_work(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// The simulation serves no metrics endpoint: no event is ever one of
    /// its tokens.
    fn metrics(&mut self, _index: usize) -> Result<(), String> {
        Ok(())
    }

    fn no_connections(&self) -> bool {
        self.connections.is_empty()
    }

    fn close_all(&mut self) -> Result<(), String> {
        self.note(|| "shutdown deadline".into());
        for closed in self.connections.close_all(|| CloseReason::ShutdownTimeout) {
            self.closed(closed, Via::Deadline)?;
        }
        Ok(())
    }
}

/// A close reason's name, as `CloseReason`'s `Display` shows it (errors
/// grouped under one name).
pub fn reason_name(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::PeerFinished => "peer finished",
        CloseReason::LineTooLong => "line too long",
        CloseReason::IdleTimeout => "idle timeout",
        CloseReason::SendTimeout => "send timeout",
        CloseReason::LineTimeout => "line timeout",
        CloseReason::Evicted => "evicted for memory",
        CloseReason::OutOfMemory => "out of memory",
        CloseReason::Displaced => "displaced",
        CloseReason::ServerShutdown => "server shutdown",
        CloseReason::ShutdownTimeout => "shutdown timeout",
        CloseReason::ProxyHeaderMalformed => "malformed PROXY header",
        CloseReason::ProxyHeaderTimeout => "no PROXY header in time",
        CloseReason::Denied => "denied",
        CloseReason::TooManyFromAddress => "max-connections-per-ip",
        CloseReason::Io(_) => "socket error",
    }
}

fn prefix_of(id: usize, written: &[u8], echo: &[u8]) -> Result<(), String> {
    if echo.starts_with(written) {
        return Ok(());
    }
    Err(format!(
        "peer {id}: wrote {} bytes that are not a prefix of the {} bytes of complete lines \
         read; first difference at byte {}",
        written.len(),
        echo.len(),
        first_difference(written, echo)
    ))
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}
