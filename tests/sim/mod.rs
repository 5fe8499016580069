//! A deterministic simulation of one connection's world: the socket, the
//! peer behind it and the event loop in front of it, all driven by a stream
//! of decisions. From a seed (or from a fuzzer's bytes) it plays out one
//! scenario and checks the connection's promises at every step.
//!
//! Read first: `Socket` and `SimStream`, the kernel's side of one socket;
//! then `World`, the event loop around the connection, and `run`, which
//! plays a random phase and then a settling phase; then `World::after_call`
//! and `World::close`, where the properties are checked.
//!
//! The simulated kernel keeps the readiness contract that `connection.rs`
//! relies on, and nothing more:
//!
//! - readiness is edge-triggered: an event is raised when bytes or the FIN
//!   arrive while READABLE is registered, when send space opens from zero
//!   while WRITABLE is registered, and for a reset whatever is registered;
//!   edges raised before the loop next polls arrive as one event;
//! - re-registering with a new interest reports the readiness already there
//!   (`EPOLL_CTL_MOD` polls the socket);
//! - a read returns what has arrived up to the size asked. A read is cut
//!   short only where more input arrives just after it, which raises a new
//!   edge; a short write leaves the send buffer full. So a short read or
//!   write proves what `epoll(7)` says it proves;
//! - the peer's FIN follows its last byte, and reads return 0 from then on.
//!
//! Within that contract everything is arbitrary: how input arrives and how
//! the peer reads, `Interrupted` on any call, input arriving and send space
//! opening while the connection is in the middle of a call, spurious events
//! with any flags, a reset at any moment, a server shutdown at any moment,
//! the clock jumping.
//!
//! The properties, checked after every call the event loop makes:
//!
//! - the bytes written are exactly the complete lines of the bytes read, in
//!   order, up to the first over-long line (a prefix of them if the
//!   connection was reset or timed out);
//! - no call spins: it meets `WouldBlock` at most twice more often than it
//!   makes progress, and returns `Step::Again` only after a full read
//!   budget;
//! - the buffer stays within `Limits::max_buffer_bytes`, the bytes owed
//!   within the high-water mark plus one read and one line, and a paused
//!   connection whose output has drained is never left paused;
//! - every close has the reason the scenario calls for, and a connection
//!   closed in order has delivered every echo it owed first;
//! - once the world settles (all input and the FIN delivered, the peer
//!   reading everything) the connection finishes: it never waits for an
//!   event that cannot come.
//!
//! This file is shared: `tests/simulation.rs` runs it from seeds, and the
//! fuzz targets under `fuzz/` include it with `#[path]`, so it depends on
//! nothing but `echod`, `mio` and `std`.
#![allow(dead_code, unused_imports)] // Each includer uses a different subset.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::rc::Rc;

use echod::Framing;
use echod::buffer::{READ_CHUNK_BYTES, ReadBuffer};
use echod::connection::{
    CloseReason, Connection, Finish, LINGER_MS, Limits, Readiness, State, Step, Stream,
    TURN_READ_BUDGET_BYTES,
};
use mio::Interest;

mod decide;
mod reference;

pub use decide::{Bytes, Decide, SplitMix64, chance};
pub use reference::{check_framing, reference};

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

/// Stream operations one call may make before the simulation calls it a
/// spin. Far above what an honest call can need: a read budget read one
/// byte at a time, a write after each read, and the injected interrupts.
const MAX_OPS_PER_CALL: usize = 1_000_000;

/// Injected `Interrupted` errors in a row, at most, so that a connection that
/// retries them (as it must) always gets through.
const MAX_INTERRUPTS_IN_A_ROW: u32 = 3;

/// Rounds the settling phase may take before the connection is declared
/// stuck. Each round delivers everything and polls once; a connection
/// needs about one round per read budget of input.
const MAX_SETTLE_ROUNDS: usize = 10_000;

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

/// How often each fault is injected, in thousandths, for one scenario.
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
    /// An event carries flags that nothing raised.
    pub spurious: u64,
    /// The peer resets the connection (per step of the random phase).
    pub reset: u64,
    /// The server begins its shutdown (per step of the random phase).
    pub shutdown: u64,
}

/// One scenario: limits, the peer's input and how it behaves.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The connection's limits.
    pub limits: Limits,
    /// Everything the peer will send.
    pub input: Vec<u8>,
    /// Whether the peer half-closes after its input; if not, the run ends
    /// with a server shutdown and the linger timeout.
    pub peer_fin: bool,
    /// The idle timeout, 0 for none.
    pub idle_ms: u64,
    /// Bytes the send buffer can take at the start.
    pub send_space: usize,
    /// Largest arrival of one step.
    pub arrive_max: usize,
    /// Largest peer read of one step.
    pub drain_max: usize,
    /// Steps in the random phase.
    pub steps: usize,
    /// Fault rates.
    pub faults: Faults,
}

impl Scenario {
    /// Draws a scenario: mostly small limits and inputs, which reach every
    /// state in few steps; one in five large, to reach the read budget,
    /// buffer growth and real-sized limits.
    pub fn generate(decide: &mut impl Decide) -> Scenario {
        let framing = [Framing::Crlf, Framing::Lf, Framing::Raw][decide.pick(3) as usize];
        let large = decide.pick(5) == 4;
        let (max_line_bytes, max_pending_bytes, input_len) = if large {
            (
                2 + decide.pick(70_000) as usize,
                1 + decide.pick(200_000) as usize,
                decide.pick(300_000) as usize,
            )
        } else {
            (
                2 + decide.pick(62) as usize,
                1 + decide.pick(48) as usize,
                decide.pick(600) as usize,
            )
        };
        let limits = Limits::new(framing, max_line_bytes, max_pending_bytes);
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
            spurious: rate(300),
            reset: if chance(decide, 150) {
                1 + decide.pick(20)
            } else {
                0
            },
            shutdown: if chance(decide, 200) {
                1 + decide.pick(30)
            } else {
                0
            },
        };
        Scenario {
            limits,
            input,
            peer_fin: !chance(decide, 150),
            idle_ms: if chance(decide, 150) {
                500 + decide.pick(5000)
            } else {
                0
            },
            send_space: [0, 1 + decide.pick(64) as usize, 1 << 20][decide.pick(3) as usize],
            arrive_max,
            drain_max,
            steps: decide.pick(if large { 3000 } else { 400 }) as usize,
            faults,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} framing, max_line_bytes {}, max_pending_bytes {}, {} input bytes, peer fin {}, \
             idle {} ms, {} steps, arrivals up to {}, peer reads up to {}, {:?}",
            self.limits.framing,
            self.limits.max_line_bytes,
            self.limits.max_pending_bytes,
            self.input.len(),
            self.peer_fin,
            self.idle_ms,
            self.steps,
            self.arrive_max,
            self.drain_max,
            self.faults
        )
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
// The kernel's side of the socket
// ---------------------------------------------------------------------------

/// What one call into the connection did to the socket.
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
}

/// Counters over a run, to show which paths a batch of runs exercised.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    /// Runs, by how the connection closed.
    pub closes: BTreeMap<&'static str, u64>,
    /// Runs in which the connection paused at least once.
    pub paused: u64,
    /// Runs in which a paused connection resumed reading.
    pub resumed: u64,
    /// Runs in which the connection asked to be served again.
    pub served_again: u64,
    /// Runs in which the connection lingered after its FIN.
    pub lingered: u64,
    /// Injected faults, summed over runs.
    pub interrupts: u64,
    /// Spurious events delivered, summed over runs.
    pub spurious_events: u64,
    /// Reads cut short, summed over runs.
    pub cut_reads: u64,
    /// Writes cut short, summed over runs.
    pub cut_writes: u64,
    /// Calls into the connection, summed over runs.
    pub calls: u64,
    /// Input bytes, summed over runs.
    pub input_bytes: u64,
}

impl Coverage {
    /// Adds another batch's counters.
    pub fn add(&mut self, other: &Coverage) {
        for (reason, n) in &other.closes {
            *self.closes.entry(reason).or_default() += n;
        }
        self.paused += other.paused;
        self.resumed += other.resumed;
        self.served_again += other.served_again;
        self.lingered += other.lingered;
        self.interrupts += other.interrupts;
        self.spurious_events += other.spurious_events;
        self.cut_reads += other.cut_reads;
        self.cut_writes += other.cut_writes;
        self.calls += other.calls;
        self.input_bytes += other.input_bytes;
    }
}

/// The kernel's view of one socket and of the peer behind it, shared by the
/// world and the stream the connection holds.
struct Socket<D> {
    decide: D,
    faults: Faults,
    /// Everything the peer will send.
    input: Vec<u8>,
    /// `input[..arrived]` has reached the receive buffer.
    arrived: usize,
    /// `input[..read_pos]` has been read by the connection.
    read_pos: usize,
    /// The peer's FIN is queued behind all its input.
    fin_arrived: bool,
    /// A read has returned 0.
    eof_read: bool,
    /// The peer reset the connection; every operation fails from now on.
    reset: bool,
    /// Bytes the send buffer can take now.
    send_space: usize,
    /// Everything written, in order.
    written: Vec<u8>,
    /// `shutdown_write` succeeded.
    fin_sent: bool,
    /// The interest registered with the simulated poll.
    registered: Option<Interest>,
    /// Edges raised since the loop last polled.
    edges: Edges,
    /// The clock, in milliseconds.
    now_ms: u64,
    /// When bytes last moved in a way the idle timer counts (before our FIN:
    /// reads, including the EOF, and writes; then the FIN itself).
    last_activity_ms: u64,
    /// Largest arrival, and largest peer read, of one step.
    arrive_max: usize,
    drain_max: usize,
    interrupts_in_a_row: u32,
    call: CallStats,
    coverage: Coverage,
    /// The first broken rule met inside a stream call.
    violation: Option<String>,
    trace: bool,
}

impl<D: Decide> Socket<D> {
    fn chance(&mut self, per_mille: u64) -> bool {
        chance(&mut self.decide, per_mille)
    }

    /// Counts a stream operation. A call that never returns cannot be
    /// checked afterwards, so a spin is stopped here, by a panic.
    fn count_op(&mut self) {
        self.call.ops += 1;
        assert!(
            self.call.ops <= MAX_OPS_PER_CALL,
            "spins: more than {MAX_OPS_PER_CALL} stream operations in one call"
        );
    }

    fn violate(&mut self, what: String) {
        self.violation.get_or_insert(what);
    }

    /// The next `n` input bytes arrive (fewer if fewer are left).
    fn arrive(&mut self, n: usize) {
        let n = n.min(self.input.len() - self.arrived);
        if n > 0 {
            self.arrived += n;
            self.raise_readable();
        }
    }

    /// The peer's FIN arrives, if its input has all arrived.
    fn fin(&mut self) {
        if self.arrived == self.input.len() && !self.fin_arrived {
            self.fin_arrived = true;
            self.raise_readable();
        }
    }

    /// The peer reads `n` bytes of echoes, making room in the send buffer.
    fn drain(&mut self, n: usize) {
        let opened = self.send_space == 0 && n > 0;
        self.send_space = self.send_space.saturating_add(n);
        if opened && self.registered.is_some_and(Interest::is_writable) {
            self.edges.writable = true;
        }
    }

    fn raise_readable(&mut self) {
        if self.registered.is_some_and(Interest::is_readable) {
            self.edges.readable = true;
        }
    }

    /// The readiness there is now, for what is registered (what
    /// `EPOLL_CTL_MOD` would report at once).
    fn ready_now(&self) -> Edges {
        let readable = self.registered.is_some_and(Interest::is_readable)
            && (self.arrived > self.read_pos || self.fin_arrived);
        let writable = self.registered.is_some_and(Interest::is_writable) && self.send_space > 0;
        Edges {
            readable: readable || self.reset,
            writable: writable || self.reset,
            read_closed: (readable && self.fin_arrived) || self.reset,
        }
    }

    /// Injects `Interrupted`, never more than a few times in a row.
    fn interrupt(&mut self) -> bool {
        if self.interrupts_in_a_row < MAX_INTERRUPTS_IN_A_ROW && self.chance(self.faults.interrupt)
        {
            self.interrupts_in_a_row += 1;
            self.coverage.interrupts += 1;
            return true;
        }
        self.interrupts_in_a_row = 0;
        false
    }

    fn size(&mut self, max: usize) -> usize {
        1 + self.decide.pick(max as u64) as usize
    }
}

/// The stream the connection holds: a handle on the shared `Socket`.
struct SimStream<D>(Rc<RefCell<Socket<D>>>);

impl<D: Decide> Read for SimStream<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut guard = self.0.borrow_mut();
        let s = &mut *guard;
        s.count_op();
        if buf.is_empty() {
            // The kernel would answer 0, which reads as the peer's EOF.
            s.violate("read into an empty buffer (its 0 would look like EOF)".into());
        }
        if s.reset {
            s.call.progress += 1;
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if s.interrupt() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if s.chance(s.faults.arrive_in_call) {
            let n = s.size(s.arrive_max);
            s.arrive(n);
        }
        let available = s.arrived - s.read_pos;
        if available == 0 {
            if s.fin_arrived {
                s.call.progress += 1;
                s.eof_read = true;
                if !s.fin_sent {
                    s.last_activity_ms = s.now_ms;
                }
                return Ok(0);
            }
            s.call.futile += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = buf.len().min(available);
        // Cut only while the FIN is still to come: once it is queued, every
        // byte before it has arrived and a read takes all it asks for.
        if n > 1 && !s.fin_arrived && s.chance(s.faults.cut_read) {
            n = s.size(n - 1);
            s.coverage.cut_reads += 1;
            // The rest arrives just after this read: a new edge.
            s.raise_readable();
        }
        let start = s.read_pos;
        buf[..n].copy_from_slice(&s.input[start..start + n]);
        s.read_pos += n;
        s.call.read_bytes += n;
        s.call.progress += 1;
        if !s.fin_sent {
            s.last_activity_ms = s.now_ms;
        }
        Ok(n)
    }
}

impl<D: Decide> Write for SimStream<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self.0.borrow_mut();
        let s = &mut *guard;
        s.count_op();
        if s.fin_sent {
            s.violate("write after shutdown_write".into());
        }
        if buf.is_empty() {
            s.violate("write of nothing".into());
        }
        if s.reset {
            s.call.progress += 1;
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if s.interrupt() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if s.chance(s.faults.drain_in_call) {
            let n = s.size(s.drain_max);
            s.drain(n);
        }
        if s.send_space == 0 {
            s.call.futile += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = buf.len().min(s.send_space);
        if n > 1 && s.chance(s.faults.cut_write) {
            // The send buffer fills at an arbitrary point.
            n = s.size(n - 1);
            s.send_space = 0;
            s.coverage.cut_writes += 1;
        } else {
            s.send_space -= n;
        }
        s.written.extend_from_slice(&buf[..n]);
        s.call.progress += 1;
        s.last_activity_ms = s.now_ms;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: Decide> Stream for SimStream<D> {
    fn shutdown_write(&self) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        s.count_op();
        s.call.progress += 1;
        if s.fin_sent {
            s.violate("shutdown_write twice".into());
        }
        if s.reset {
            return Err(io::ErrorKind::NotConnected.into());
        }
        s.fin_sent = true;
        s.last_activity_ms = s.now_ms;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The event loop
// ---------------------------------------------------------------------------

/// What the connection had done when the server began its shutdown.
#[derive(Debug, Clone, Copy)]
struct ShutdownMark {
    /// Input bytes read by then; only their lines can be echoed.
    read_pos: usize,
    /// Whether the peer's EOF had been read by then.
    eof_read: bool,
}

/// How a close came about: a `Step::Close` from a call, or housekeeping
/// finding the connection expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Step,
    Expiry,
}

/// One connection, its simulated socket, and the event loop around them,
/// driven the way `server.rs` drives a connection: events to `on_ready`,
/// `Step::Again` served next turn, re-registration when the interest
/// changes, housekeeping once a second, `begin_shutdown` on a shutdown.
pub struct World<D> {
    limits: Limits,
    peer_fin: bool,
    idle_ms: u64,
    steps: usize,
    socket: Rc<RefCell<Socket<D>>>,
    connection: Connection<SimStream<D>>,
    read_buffer: ReadBuffer,
    /// Entries on the serve-again list (the server can list a connection
    /// twice in one turn, and so may this).
    again: usize,
    next_housekeeping_ms: u64,
    shutdown: Option<ShutdownMark>,
    /// The close reason, once closed.
    closed: Option<&'static str>,
    saw: Seen,
}

/// Paths one run went through, for `Coverage`.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    paused: bool,
    resumed: bool,
    served_again: bool,
    lingered: bool,
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
/// The first property the connection broke.
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
            message,
            scenario: description,
        }),
    }
}

impl<D: Decide> World<D> {
    /// A freshly accepted connection, registered for READABLE.
    pub fn new(scenario: Scenario, decide: D, trace: bool) -> World<D> {
        let socket = Rc::new(RefCell::new(Socket {
            decide,
            faults: scenario.faults,
            input: scenario.input,
            arrived: 0,
            read_pos: 0,
            fin_arrived: false,
            eof_read: false,
            reset: false,
            send_space: scenario.send_space,
            written: Vec::new(),
            fin_sent: false,
            registered: None,
            edges: Edges::default(),
            now_ms: 0,
            last_activity_ms: 0,
            arrive_max: scenario.arrive_max,
            drain_max: scenario.drain_max,
            interrupts_in_a_row: 0,
            call: CallStats::default(),
            coverage: Coverage::default(),
            violation: None,
            trace,
        }));
        let peer = "127.0.0.1:1".parse().expect("a socket address");
        let connection = Connection::new(SimStream(Rc::clone(&socket)), peer, 0);
        {
            let mut s = socket.borrow_mut();
            s.registered = connection.interest();
            s.coverage.input_bytes = s.input.len() as u64;
        }
        World {
            limits: scenario.limits,
            peer_fin: scenario.peer_fin,
            idle_ms: scenario.idle_ms,
            steps: scenario.steps,
            socket,
            connection,
            read_buffer: ReadBuffer::default(),
            again: 0,
            next_housekeeping_ms: 1000,
            shutdown: None,
            closed: None,
            saw: Seen::default(),
        }
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Everything the connection has written.
    pub fn written(&self) -> Vec<u8> {
        self.socket.borrow().written.clone()
    }

    /// The reason the connection closed with, as the log shows it.
    pub fn close_reason(&self) -> Option<&'static str> {
        self.closed
    }

    /// The next `n` input bytes arrive.
    pub fn arrive(&mut self, n: usize) {
        self.note(|| format!("arrive {n}"));
        self.socket.borrow_mut().arrive(n);
    }

    /// The peer's FIN arrives, if all its input has.
    pub fn fin(&mut self) {
        self.note(|| "fin".into());
        self.socket.borrow_mut().fin();
    }

    /// The peer reads `n` bytes of echoes.
    pub fn drain(&mut self, n: usize) {
        self.note(|| format!("peer reads {n}"));
        self.socket.borrow_mut().drain(n);
    }

    /// The peer resets the connection: errors are reported whatever the
    /// registered interest.
    pub fn reset(&mut self) {
        self.note(|| "reset".into());
        let mut s = self.socket.borrow_mut();
        s.reset = true;
        s.edges = Edges {
            readable: true,
            writable: true,
            read_closed: true,
        };
    }

    /// The clock moves on `ms`; housekeeping runs if it is due.
    ///
    /// # Errors
    ///
    /// A broken property.
    pub fn advance(&mut self, ms: u64) -> Result<(), String> {
        let now_ms = {
            let mut s = self.socket.borrow_mut();
            s.now_ms += ms;
            s.now_ms
        };
        self.note(|| format!("clock +{ms} ms = {now_ms}"));
        if now_ms >= self.next_housekeeping_ms {
            self.next_housekeeping_ms = now_ms + 1000;
            self.housekeeping()?;
        }
        Ok(())
    }

    /// One turn of the loop: the edges raised since the last turn arrive
    /// as one event (with `spurious` flags added), then the connection is
    /// served again if it asked to be last turn.
    ///
    /// # Errors
    ///
    /// A broken property.
    pub fn poll(&mut self, spurious: Edges) -> Result<(), String> {
        if self.is_closed() {
            return Ok(());
        }
        let serve_again = std::mem::take(&mut self.again);
        let mut event = {
            let mut s = self.socket.borrow_mut();
            let mut event = std::mem::take(&mut s.edges);
            // epoll reports the state at harvest: RDHUP if the FIN is there.
            event.read_closed |= event.readable && s.fin_arrived;
            event
        };
        event.readable |= spurious.readable;
        event.writable |= spurious.writable;
        event.read_closed |= spurious.read_closed;
        if event.readable || event.writable || event.read_closed {
            self.drive(Readiness::of_event(
                event.readable,
                event.writable,
                event.read_closed,
                false,
                false,
            ))?;
        }
        for _ in 0..serve_again {
            if self.is_closed() {
                break;
            }
            self.drive(Readiness::SERVE_AGAIN)?;
        }
        Ok(())
    }

    /// The server begins its shutdown, as `Server::begin_shutdown` does for
    /// each connection. Only the first call counts.
    ///
    /// # Errors
    ///
    /// A broken property.
    pub fn begin_shutdown(&mut self) -> Result<(), String> {
        if self.is_closed() || self.shutdown.is_some() {
            return Ok(());
        }
        self.note(|| "server shutdown".into());
        {
            let s = self.socket.borrow();
            self.shutdown = Some(ShutdownMark {
                read_pos: s.read_pos,
                eof_read: s.eof_read,
            });
        }
        let before = self.connection.state();
        self.socket.borrow_mut().call = CallStats::default();
        let now_ms = self.socket.borrow().now_ms;
        let step = self
            .connection
            .begin_shutdown(&self.limits, &mut self.read_buffer, now_ms);
        self.after_call(before, step)
    }

    /// The random phase: `steps` arbitrary happenings, with faults.
    ///
    /// # Errors
    ///
    /// A broken property.
    pub fn random_phase(&mut self) -> Result<(), String> {
        for _ in 0..self.steps {
            if self.is_closed() || self.socket.borrow().decide.exhausted() {
                break;
            }
            let (choice, faults, arrive_max, drain_max) = {
                let mut s = self.socket.borrow_mut();
                (s.decide.pick(100), s.faults, s.arrive_max, s.drain_max)
            };
            match choice {
                0..=29 => {
                    let n = self.socket.borrow_mut().size(arrive_max);
                    self.arrive(n);
                }
                30..=34 => self.fin(),
                35..=59 => {
                    let n = self.socket.borrow_mut().size(drain_max);
                    self.drain(n);
                }
                60..=91 => {
                    let spurious = self.spurious(faults.spurious);
                    self.poll(spurious)?;
                }
                _ => {
                    let ms = self.socket.borrow_mut().decide.pick(1500);
                    self.advance(ms)?;
                }
            }
            if self.decide_chance(faults.reset) {
                self.reset();
            }
            if self.decide_chance(faults.shutdown) {
                self.begin_shutdown()?;
            }
        }
        Ok(())
    }

    /// The settling phase: no more faults; every round, all the input and
    /// the FIN arrive and the peer reads everything, then the loop polls.
    /// A peer that never sends its FIN is ended by a server shutdown and
    /// the linger timeout. The connection must close; if the loop has no
    /// event to deliver and nothing to serve again, no event will ever
    /// come, and the connection is stuck.
    ///
    /// # Errors
    ///
    /// A broken property, or a connection that does not finish.
    pub fn settle(&mut self) -> Result<(), String> {
        self.note(|| "settle".into());
        self.socket.borrow_mut().faults = Faults::default();
        if !self.peer_fin {
            self.begin_shutdown()?;
        }
        for _ in 0..MAX_SETTLE_ROUNDS {
            if self.is_closed() {
                return Ok(());
            }
            let rest = {
                let s = self.socket.borrow();
                s.input.len() - s.arrived
            };
            self.arrive(rest);
            if self.peer_fin {
                self.fin();
            }
            self.drain(1 << 40);
            let event_due = {
                let edges = self.socket.borrow().edges;
                edges.readable || edges.writable || self.again > 0
            };
            if event_due {
                self.poll(Edges::default())?;
                continue;
            }
            // Quiet. The only thing left to wait for is a lingering
            // connection's timer, when the peer never sends its FIN.
            if matches!(self.connection.state(), State::Lingering(_)) && !self.peer_fin {
                self.advance(LINGER_MS + 1000)?;
                continue;
            }
            return Err(self.stuck("no event will come"));
        }
        Err(self.stuck(&format!("not finished after {MAX_SETTLE_ROUNDS} rounds")))
    }

    /// What this run exercised.
    pub fn coverage(&self) -> Coverage {
        let mut coverage = self.socket.borrow().coverage.clone();
        if let Some(reason) = self.closed {
            coverage.closes.insert(reason, 1);
        }
        coverage.paused = u64::from(self.saw.paused);
        coverage.resumed = u64::from(self.saw.resumed);
        coverage.served_again = u64::from(self.saw.served_again);
        coverage.lingered = u64::from(self.saw.lingered);
        coverage
    }

    fn spurious(&mut self, rate: u64) -> Edges {
        let mut s = self.socket.borrow_mut();
        if !s.chance(rate) {
            return Edges::default();
        }
        let flags = s.decide.pick(8);
        s.coverage.spurious_events += 1;
        Edges {
            readable: flags & 1 != 0,
            writable: flags & 2 != 0,
            read_closed: flags & 4 != 0,
        }
    }

    fn decide_chance(&mut self, per_mille: u64) -> bool {
        self.socket.borrow_mut().chance(per_mille)
    }

    /// Hands an event to the connection, as `Server::drive`.
    fn drive(&mut self, ready: Readiness) -> Result<(), String> {
        self.note(|| format!("event {ready:?} in state {}", self.connection.state()));
        let before = self.connection.state();
        let now_ms = {
            let mut s = self.socket.borrow_mut();
            s.call = CallStats::default();
            s.coverage.calls += 1;
            s.now_ms
        };
        let step = self
            .connection
            .on_ready(ready, &self.limits, &mut self.read_buffer, now_ms);
        self.after_call(before, step)
    }

    /// Checks one call's conduct and applies its step, as `Server::apply`.
    fn after_call(&mut self, before: State, step: Step) -> Result<(), String> {
        let call = {
            let mut s = self.socket.borrow_mut();
            if let Some(violation) = s.violation.take() {
                return Err(violation);
            }
            s.call
        };
        self.note(|| format!("  -> {step:?}, {call:?}, state {}", self.connection.state()));
        // A call may meet `WouldBlock` once reading and once writing, and a
        // write may find the buffer full once after each read; any more is
        // a loop that learns nothing.
        if call.futile > 2 + call.progress {
            return Err(format!(
                "spins: {} operations returned WouldBlock against {} that made progress",
                call.futile, call.progress
            ));
        }
        match step {
            Step::Close(reason) => return self.close(reason, Via::Step),
            Step::Again => {
                if call.read_bytes < TURN_READ_BUDGET_BYTES {
                    return Err(format!(
                        "asked to be served again after reading {} bytes, less than its budget",
                        call.read_bytes
                    ));
                }
                self.saw.served_again = true;
                self.again += 1;
            }
            Step::Wait => {}
        }
        let state = self.connection.state();
        self.saw.paused |= state == State::Paused;
        self.saw.resumed |= before == State::Paused && state == State::Open;
        self.saw.lingered |= matches!(state, State::Lingering(_));
        self.check_bounds()?;
        let Some(interest) = self.connection.interest() else {
            return Err(format!(
                "waits for nothing in state {state} but did not close"
            ));
        };
        let mut s = self.socket.borrow_mut();
        if s.registered != Some(interest) {
            s.registered = Some(interest);
            let ready = s.ready_now();
            s.edges.readable |= ready.readable;
            s.edges.writable |= ready.writable;
        }
        Ok(())
    }

    /// The buffer and pause invariants, between calls.
    fn check_bounds(&self) -> Result<(), String> {
        let limits = &self.limits;
        let capacity = self.connection.buffer_capacity();
        if capacity > limits.max_buffer_bytes() {
            return Err(format!(
                "buffer of {capacity} bytes, over its bound of {}",
                limits.max_buffer_bytes()
            ));
        }
        // docs/PROTOCOL.md: the owed bytes pass the mark by at most one
        // read and the unfinished line that read completed.
        let pending = self.connection.pending_bytes();
        let pending_bound = limits.max_pending_bytes + READ_CHUNK_BYTES + limits.max_line_bytes;
        if pending >= pending_bound {
            return Err(format!(
                "{pending} bytes owed, past the documented bound of {pending_bound}"
            ));
        }
        match self.connection.state() {
            State::Paused if pending <= limits.resume_pending_bytes => Err(format!(
                "paused with only {pending} bytes owed (resumes at {}): nothing will wake it",
                limits.resume_pending_bytes
            )),
            State::Draining(finish) if pending == 0 => Err(format!(
                "draining ({finish}) with nothing owed: it should have moved on"
            )),
            _ => Ok(()),
        }
    }

    /// Housekeeping: the connection's own expiry answer must match the
    /// model's (the linger time runs from our FIN; the idle time from the
    /// last byte moved before it).
    fn housekeeping(&mut self) -> Result<(), String> {
        if self.is_closed() {
            return Ok(());
        }
        let (now_ms, quiet_ms) = {
            let s = self.socket.borrow();
            (s.now_ms, s.now_ms - s.last_activity_ms)
        };
        let expected = match self.connection.state() {
            State::Lingering(finish) => {
                (quiet_ms >= LINGER_MS).then(|| reason_name(&finish.into()))
            }
            _ => (self.idle_ms > 0 && quiet_ms >= self.idle_ms).then_some("idle timeout"),
        };
        let got = self.connection.expired(now_ms, self.idle_ms);
        if got.as_ref().map(reason_name) != expected {
            return Err(format!(
                "expiry in state {} after {quiet_ms} ms quiet: got {:?}, expected {expected:?}",
                self.connection.state(),
                got.as_ref().map(reason_name)
            ));
        }
        match got {
            Some(reason) => self.close(reason, Via::Expiry),
            None => Ok(()),
        }
    }

    /// The connection closes with `reason`; checks that it is the reason
    /// the scenario calls for and that what was written fits it.
    fn close(&mut self, reason: CloseReason, via: Via) -> Result<(), String> {
        let name = reason_name(&reason);
        self.note(|| format!("closed: {reason}"));
        self.closed = Some(name);
        let s = self.socket.borrow();
        let stop = self.shutdown.map_or(s.read_pos, |mark| mark.read_pos);
        let owed = reference(
            self.limits.framing,
            &s.input[..stop],
            self.limits.max_line_bytes,
        );
        let eof_first = self.shutdown.map_or(s.eof_read, |mark| mark.eof_read);
        let orderly = if owed.too_long {
            Some(Finish::LineTooLong)
        } else if eof_first {
            Some(Finish::PeerFinished)
        } else if self.shutdown.is_some() {
            Some(Finish::ServerShutdown)
        } else {
            None
        };
        let echo = &s.input[..owed.echo_len];
        let written = &s.written[..];
        let finish = match reason {
            CloseReason::PeerFinished => Finish::PeerFinished,
            CloseReason::LineTooLong => Finish::LineTooLong,
            CloseReason::ServerShutdown => Finish::ServerShutdown,
            CloseReason::Io(err) => {
                let expected_kind = matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
                );
                if !s.reset || !expected_kind {
                    return Err(format!("closed on an error nobody injected: {err}"));
                }
                return prefix_of(written, echo);
            }
            CloseReason::IdleTimeout if via == Via::Expiry => return prefix_of(written, echo),
            CloseReason::IdleTimeout | CloseReason::ShutdownTimeout => {
                return Err(format!("closed ({name}) by the connection itself"));
            }
        };
        if orderly != Some(finish) {
            return Err(format!(
                "closed ({name}), but the scenario calls for {orderly:?} (EOF read first: \
                 {eof_first}, shutdown: {}, line too long: {})",
                self.shutdown.is_some(),
                owed.too_long
            ));
        }
        if written != echo {
            return Err(format!(
                "closed ({name}) having written {} bytes, not the {} bytes of complete lines \
                 read; first difference at byte {}",
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
            _ => Err(format!(
                "closed ({name}) via {via:?} with EOF read {}, FIN sent {}",
                s.eof_read, s.fin_sent
            )),
        }
    }

    fn stuck(&self, why: &str) -> String {
        let s = self.socket.borrow();
        format!(
            "stuck ({why}): state {}, {} bytes owed, {} arrived and unread, FIN arrived {}, \
             registered {:?}, send space {}",
            self.connection.state(),
            self.connection.pending_bytes(),
            s.arrived - s.read_pos,
            s.fin_arrived,
            s.registered,
            s.send_space
        )
    }

    fn note(&self, what: impl FnOnce() -> String) {
        if self.socket.borrow().trace {
            eprintln!("t={} {}", self.socket.borrow().now_ms, what());
        }
    }
}

/// A close reason's name, as `CloseReason`'s `Display` shows it (errors
/// grouped under one name).
pub fn reason_name(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::PeerFinished => "peer finished",
        CloseReason::LineTooLong => "line too long",
        CloseReason::IdleTimeout => "idle timeout",
        CloseReason::ServerShutdown => "server shutdown",
        CloseReason::ShutdownTimeout => "shutdown timeout",
        CloseReason::Io(_) => "socket error",
    }
}

fn prefix_of(written: &[u8], echo: &[u8]) -> Result<(), String> {
    if echo.starts_with(written) {
        return Ok(());
    }
    Err(format!(
        "wrote {} bytes that are not a prefix of the {} bytes of complete lines read; first \
         difference at byte {}",
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
