//! One client: its socket, its buffer, and the small state machine that
//! decides what the connection does next and which readiness it waits for.
//!
//! Read first: the *Spurious events* and *Draining readiness* sections of
//! mio's `Poll` docs. Everything below assumes them: an event is a hint, not
//! a promise, so `WouldBlock` is the normal end of every read and write loop;
//! and readiness is edge-triggered, so once the connection stops reading or
//! writing before the kernel says "no more", nobody will remind it.
//!
//! This module never touches the `Poll` or its `Registry`. After every call
//! the server asks `Connection::interest` what the connection wants next and
//! applies the change; the interest is derived from the state, never stored.
//!
//! The states, and the readiness each waits for:
//!
//! | state       | meaning                                              | interest           |
//! |-------------|------------------------------------------------------|--------------------|
//! | `Open`      | reading and echoing                                  | read (+ write while output is pending) |
//! | `Paused`    | output reached `max_pending_bytes`; reading waits    | write              |
//! | `Draining`  | no more input will be echoed; delivering what is owed | write             |
//! | `Lingering` | our FIN is sent; discarding input until the peer closes | read            |

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use log::trace;
use mio::Interest;

use crate::buffer::{Buffer, Pool, READ_CHUNK_BYTES};
use crate::framing::Framing;

/// Bytes one connection may read in one turn of the event loop before the
/// others get theirs (redis caps its reads per event for the same reason).
/// A connection that still has input after this is served again next turn.
pub const TURN_READ_BUDGET_BYTES: usize = 4 * READ_CHUNK_BYTES;

/// A byte stream the connection can drive: a `Socket` in the server, a
/// simulated one in tests.
pub trait Stream: Read + Write {
    /// Shuts down the sending half (sends FIN after any queued data).
    fn shutdown_write(&self) -> io::Result<()>;
}

/// The per-connection limits, taken from `Config` once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How lines are delimited.
    pub framing: Framing,
    /// Longest line, terminator included.
    pub max_line_bytes: usize,
    /// Pending output at which reading pauses (the high-water mark).
    pub max_pending_bytes: usize,
    /// Pending output at or below which a paused connection reads again.
    pub resume_pending_bytes: usize,
}

impl Limits {
    /// The most storage one connection's buffer may grow to: the output it may
    /// owe, plus the longest unfinished line, plus one read that overshoots.
    pub fn max_buffer_bytes(&self) -> usize {
        self.max_pending_bytes + self.max_line_bytes + READ_CHUNK_BYTES
    }
}

/// What a connection has been told about its socket by one poll event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    /// The socket may have input (or EOF, or an error) to read.
    pub readable: bool,
    /// The socket may accept output.
    pub writable: bool,
    /// The peer has shut down its sending half (EPOLLRDHUP): reading must go
    /// on until the read that returns 0, whatever the read sizes say.
    pub read_closed: bool,
}

/// What the server should do with the connection after a call.
#[derive(Debug)]
pub enum Step {
    /// Wait for the readiness `interest()` names.
    Wait,
    /// The connection used its read budget with input possibly left; serve
    /// it again next turn (the kernel will not report that input again).
    Again,
    /// Close the connection and drop it.
    Close(CloseReason),
}

/// The connection's state. Changes only through `Connection::set_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading and echoing.
    Open,
    /// Output reached the high-water mark; reading resumes once it drains.
    Paused,
    /// No more input will be echoed; the echoes owed are being delivered.
    Draining(Finish),
    /// Everything owed is sent and so is our FIN; input is read and dropped
    /// until the peer closes, so that unread input cannot make the kernel
    /// answer with a reset that destroys echoes still in flight.
    Lingering(Finish),
}

/// Why a connection stopped echoing; becomes its `CloseReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The peer shut down its sending half.
    PeerFinished,
    /// A line grew longer than `max_line_bytes`.
    LineTooLong,
    /// The server is shutting down.
    ServerShutdown,
}

/// Why the server closed a connection.
#[derive(Debug)]
pub enum CloseReason {
    /// The peer shut down its sending half and every echo was delivered.
    PeerFinished,
    /// The peer sent a line longer than `max_line_bytes`; the lines before
    /// it were echoed.
    LineTooLong,
    /// No bytes moved either way for `idle-timeout`.
    IdleTimeout,
    /// The server shut down; every echo owed was delivered.
    ServerShutdown,
    /// The server's shutdown timeout expired before the connection finished
    /// (echoes still owed, or no close from the peer after our FIN).
    ShutdownTimeout,
    /// A socket error; the connection cannot continue.
    Io(io::Error),
}

/// One client connection.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    /// Received bytes: pending output, then the unfinished line.
    buffer: Buffer,
    state: State,
    /// The peer's address, for the log lines that open and close it.
    peer: SocketAddr,
    /// Complete lines received (each echoed unless the connection failed).
    lines: u64,
    /// Whether the peer has sent a byte; one that never did is a
    /// connect-then-close health check. A flag rather than a count keeps an
    /// idle connection's bookkeeping small: it fits in the struct's padding.
    received_any: bool,
    /// Bytes written back.
    bytes_echoed: u64,
    /// When bytes last moved either way, in server clock milliseconds.
    last_active_ms: u64,
}

impl<S: Stream> Connection<S> {
    /// A newly accepted connection; it holds no buffer until it reads.
    pub fn new(stream: S, peer: SocketAddr, now_ms: u64) -> Connection<S> {
        Connection {
            stream,
            buffer: Buffer::default(),
            state: State::Open,
            peer,
            lines: 0,
            received_any: false,
            bytes_echoed: 0,
            last_active_ms: now_ms,
        }
    }

    /// The readiness the connection waits for in its current state, or `None`
    /// if it waits for nothing (it has finished).
    pub fn interest(&self) -> Option<Interest> {
        let has_output = self.buffer.pending_len() > 0;
        match (self.state, has_output) {
            (State::Open, false) => Some(Interest::READABLE),
            (State::Open, true) => Some(Interest::READABLE | Interest::WRITABLE),
            // Not READABLE: input left unread would only bring events we must
            // ignore. Reading resumes on our own initiative after a flush.
            (State::Paused, _) => Some(Interest::WRITABLE),
            (State::Draining(_), true) => Some(Interest::WRITABLE),
            (State::Draining(_), false) => None,
            (State::Lingering(_), _) => Some(Interest::READABLE),
        }
    }

    /// Does whatever the readiness allows: writes owed output, reads and
    /// echoes input, and moves between states. Never blocks.
    pub fn on_ready(
        &mut self,
        ready: Readiness,
        limits: &Limits,
        pool: &mut Pool,
        now_ms: u64,
    ) -> Step {
        let step = match self.advance(ready, limits, pool, now_ms) {
            Ok(step) => step,
            Err(err) => Step::Close(CloseReason::Io(err)),
        };
        if !matches!(step, Step::Close(_)) {
            self.buffer.release(pool);
        }
        step
    }

    /// Stops reading because the server is shutting down: the unfinished line
    /// is dropped, the echoes owed are delivered, then the connection closes.
    pub fn begin_shutdown(&mut self, limits: &Limits, pool: &mut Pool, now_ms: u64) -> Step {
        match self.state {
            State::Open | State::Paused => {
                self.buffer.discard_unfinished();
                self.set_state(State::Draining(Finish::ServerShutdown));
                // Try the write now: the socket may well be writable, and if it
                // is, no event would come to say so.
                self.on_ready(
                    Readiness {
                        writable: true,
                        ..Readiness::default()
                    },
                    limits,
                    pool,
                    now_ms,
                )
            }
            State::Draining(_) | State::Lingering(_) => Step::Wait,
        }
    }

    /// The close reason for a connection that has been inactive since
    /// `last_active_ms`, if it has waited too long: `idle_ms` for an open
    /// connection (0: forever), `linger_ms` for one lingering after its FIN.
    pub fn expired(&self, now_ms: u64, idle_ms: u64, linger_ms: u64) -> Option<CloseReason> {
        let quiet_ms = now_ms.saturating_sub(self.last_active_ms);
        match self.state {
            // The peer has had our FIN for a while; its close reason is the
            // one that made us stop, not the wait.
            State::Lingering(finish) if quiet_ms >= linger_ms => Some(finish.into()),
            State::Lingering(_) => None,
            _ if idle_ms > 0 && quiet_ms >= idle_ms => Some(CloseReason::IdleTimeout),
            _ => None,
        }
    }

    /// Returns the buffer's storage to the pool; the connection is about to be
    /// dropped.
    pub fn release_buffer(&mut self, pool: &mut Pool) {
        self.buffer.release_all(pool);
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Complete lines received so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Whether the peer has sent anything (lingering input included).
    pub fn received_any(&self) -> bool {
        self.received_any
    }

    /// Bytes echoed so far.
    pub fn bytes_echoed(&self) -> u64 {
        self.bytes_echoed
    }

    /// Bytes owed to the peer.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.pending_len()
    }

    /// Bytes of buffer storage the connection holds.
    pub fn buffer_capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// The stream, for the server to register or deregister.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The state machine proper. Socket errors propagate with `?` and close
    /// the connection; everything else comes back as a `Step`.
    fn advance(
        &mut self,
        ready: Readiness,
        limits: &Limits,
        pool: &mut Pool,
        now_ms: u64,
    ) -> io::Result<Step> {
        // Output first: the peer has waited longest for it, and draining it
        // may lift a pause. A writable event with nothing pending is spurious.
        if ready.writable {
            self.flush(now_ms)?;
        }
        let mut readable = ready.readable;
        // Whether a short read may be taken as proof that the input is drained
        // (see below); not when the peer's FIN is known to be queued.
        let mut until_would_block = ready.read_closed;
        let mut budget = TURN_READ_BUDGET_BYTES;
        loop {
            match self.state {
                State::Open if readable => {}
                State::Open => return Ok(Step::Wait),
                // Reading stopped before `WouldBlock` when we paused, so the
                // kernel owes us no event for that input: resume on our own.
                // Nor do we know whether the peer closed meanwhile: no event
                // reports a FIN while we wait only for writability.
                State::Paused if self.buffer.pending_len() <= limits.resume_pending_bytes => {
                    self.set_state(State::Open);
                    readable = true;
                    until_would_block = true;
                    continue;
                }
                State::Paused => return Ok(Step::Wait),
                State::Draining(_) if self.buffer.pending_len() > 0 => return Ok(Step::Wait),
                State::Draining(finish) => return self.finish(finish, pool, now_ms),
                State::Lingering(finish) if readable => {
                    return self.discard_input(finish, ready.read_closed, pool);
                }
                State::Lingering(_) => return Ok(Step::Wait),
            }

            // Open, with input possibly waiting: read one chunk.
            let spare = self.buffer.spare_mut(pool, limits.max_buffer_bytes());
            let asked = spare.len();
            // Reading pauses before the owed output reaches the cap and the
            // line limit closes before the unfinished line does, so there is
            // always room. (Without room, `read` would return 0, read as EOF.)
            debug_assert!(asked > 0, "no room to read: the buffer bound is broken");
            let n = match self.stream.read(spare) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Wait),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.last_active_ms = now_ms;
            self.received_any |= n > 0;
            if n == 0 {
                // The peer finished sending. Its unfinished line, if any, was
                // never completed and is not echoed (docs/PROTOCOL.md).
                self.buffer.discard_unfinished();
                self.set_state(State::Draining(Finish::PeerFinished));
                continue;
            }
            let scanned = self.buffer.unfinished().len();
            self.buffer.filled(n);
            let scan =
                limits
                    .framing
                    .scan(self.buffer.unfinished(), scanned, limits.max_line_bytes);
            self.buffer.complete(scan.complete_bytes);
            self.lines += scan.lines as u64;

            // Echo without waiting for a writable event: the socket is almost
            // always writable, and asking first would cost an epoll_ctl and a
            // wake-up per line (redis's "write before sleep").
            self.flush(now_ms)?;

            if scan.too_long {
                self.buffer.discard_unfinished();
                self.set_state(State::Draining(Finish::LineTooLong));
            } else if self.buffer.pending_len() >= limits.max_pending_bytes {
                self.set_state(State::Paused);
            } else if n < asked && !until_would_block {
                // A short read on a stream socket proves its receive buffer
                // was drained (epoll(7), "for stream-oriented files ... you can
                // be sure of having exhausted the read I/O space"), so the
                // read that would only say `WouldBlock` is saved. Any byte
                // arriving later raises a new edge. If the peer has closed,
                // its FIN raised no new edge after this event, so keep
                // reading until the 0 that reports it.
                readable = false;
            } else {
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    return Ok(Step::Again);
                }
            }
        }
    }

    /// Writes pending output until it is all sent or the socket is full.
    fn flush(&mut self, now_ms: u64) -> io::Result<()> {
        while self.buffer.pending_len() > 0 {
            let pending = self.buffer.pending();
            match self.stream.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let short = n < pending.len();
                    self.buffer.consume(n);
                    self.bytes_echoed += n as u64;
                    self.last_active_ms = now_ms;
                    // A short write means the send buffer is full (epoll(7));
                    // another write would only return `WouldBlock`.
                    if short {
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Everything owed has been delivered. If the peer closed first, so do we;
    /// otherwise send our FIN and linger for the peer's.
    fn finish(&mut self, finish: Finish, pool: &mut Pool, now_ms: u64) -> io::Result<Step> {
        match finish {
            // Every byte the peer sent has been read (we saw its EOF), so
            // closing cannot cause a reset.
            Finish::PeerFinished => Ok(Step::Close(CloseReason::PeerFinished)),
            Finish::LineTooLong | Finish::ServerShutdown => {
                self.stream.shutdown_write()?;
                self.set_state(State::Lingering(finish));
                self.last_active_ms = now_ms;
                // The peer may have sent more than we read, and its FIN too,
                // while we waited only for writability: no edge will announce
                // what is already queued, so drain it now, to `WouldBlock`.
                self.discard_input(finish, true, pool)
            }
        }
    }

    /// Reads and drops input while lingering, until the peer's EOF (then
    /// close) or `WouldBlock` (then wait). With `until_would_block` unset a
    /// short read also ends it, as in `advance`.
    fn discard_input(
        &mut self,
        finish: Finish,
        until_would_block: bool,
        pool: &mut Pool,
    ) -> io::Result<Step> {
        let mut budget = TURN_READ_BUDGET_BYTES;
        loop {
            let spare = self.buffer.spare_mut(pool, READ_CHUNK_BYTES);
            let asked = spare.len();
            match self.stream.read(spare) {
                Ok(0) => return Ok(Step::Close(finish.into())),
                // Discarded input is not activity: the linger time runs from
                // our FIN, so a peer that keeps sending cannot hold the
                // connection open.
                Ok(n) => {
                    self.received_any |= n > 0;
                    if n < asked && !until_would_block {
                        return Ok(Step::Wait);
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        return Ok(Step::Again);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Wait),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// The only way the state changes, so every transition is traced.
    fn set_state(&mut self, state: State) {
        trace!("{}: {} -> {}", self.peer, self.state, state);
        self.state = state;
    }
}

impl State {
    /// Why the connection stopped echoing, once it has.
    pub fn finish(self) -> Option<Finish> {
        match self {
            State::Open | State::Paused => None,
            State::Draining(finish) | State::Lingering(finish) => Some(finish),
        }
    }
}

impl From<Finish> for CloseReason {
    fn from(finish: Finish) -> CloseReason {
        match finish {
            Finish::PeerFinished => CloseReason::PeerFinished,
            Finish::LineTooLong => CloseReason::LineTooLong,
            Finish::ServerShutdown => CloseReason::ServerShutdown,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Open => f.write_str("open"),
            State::Paused => f.write_str("paused"),
            State::Draining(finish) => write!(f, "draining ({finish})"),
            State::Lingering(finish) => write!(f, "lingering ({finish})"),
        }
    }
}

impl fmt::Display for Finish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Finish::PeerFinished => "peer finished",
            Finish::LineTooLong => "line too long",
            Finish::ServerShutdown => "server shutting down",
        })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerFinished => f.write_str("peer finished"),
            CloseReason::LineTooLong => f.write_str("line too long"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::ServerShutdown => f.write_str("server shutdown"),
            CloseReason::ShutdownTimeout => f.write_str("shutdown timeout"),
            CloseReason::Io(err) => write!(f, "{err}"),
        }
    }
}
