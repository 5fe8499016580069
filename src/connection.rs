//! One client: its socket, its leftovers, and the small state machine that
//! decides what the connection does next and which readiness it waits for.
//!
//! Read first: the *Spurious events* and *Draining readiness* sections of
//! mio's `Poll` docs. Everything below assumes them: an event is a hint, not
//! a promise, so `WouldBlock` is the normal end of every read and write loop;
//! and readiness is edge-triggered, so once the connection stops reading or
//! writing before the kernel says "no more", nobody will remind it.
//!
//! This module never touches the `Poll` or its `Registry`. After every call
//! `Connections::apply` asks `Connection::interest` what the connection
//! wants next and applies the change; the interest is derived from the
//! state, never stored.
//!
//! The states, and the readiness each waits for:
//!
//! | state       | meaning                                              | interest           |
//! |-------------|------------------------------------------------------|--------------------|
//! | `AwaitingHeader` | `--proxy-protocol`: peeking at the PROXY header | read              |
//! | `Open`      | reading and echoing                                  | read (+ write while output is pending) |
//! | `Paused`    | output reached `max_pending_bytes`; reading waits    | write              |
//! | `Draining`  | no more input will be echoed; delivering what is owed | write             |
//! | `Lingering` | our FIN is sent; discarding input until the peer closes | read            |
//!
//! Its parts, each a file of `src/connection/`: `machine.rs` the state
//! table (`advance` and `transition`), `steps.rs` the reads, echoes and
//! flushes a call does, `header.rs` the PROXY header a connection may
//! begin with, `timers.rs` the deadlines that follow from them,
//! `handover.rs` what it carries across an upgrade, `ready.rs` what one
//! event does (the usual one inline, any other through the state machine).

mod handover;
mod header;
mod machine;
mod ready;
mod steps;
mod timers;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use mio::Interest;

use crate::buffer::{Buffer, READ_CHUNK_BYTES, ReadBuffer};
use crate::framing::Framing;
pub use crate::state::{
    CloseReason, FIRST_INTEREST, Finish, ReadUntil, Readiness, State, Step, Waiting,
};
pub use handover::{continue_ids_from, next_connection_id};
pub use ready::Usual;
pub use timers::{LINGER_MS, PROXY_HEADER_TIMEOUT_MS, Timeouts};

use machine::Next;
use steps::{Input, read_retrying};

/// Bytes one connection may read in one turn of the event loop before the
/// others get theirs, unless `--read-budget` says otherwise (redis caps its
/// reads per event for the same reason). A connection that still has input
/// after this is served again next turn.
pub const TURN_READ_BUDGET_BYTES: usize = 4 * READ_CHUNK_BYTES;

/// A byte stream the connection can drive: a `Socket` in the server, a
/// simulated or scripted one in tests.
pub trait Stream: Read + Write {
    /// Shuts down the sending half (sends FIN after any queued data).
    fn shutdown_write(&self) -> io::Result<()>;

    /// Copies the input queued so far into `buf` without consuming it
    /// (`MSG_PEEK`), as `read` would: 0 is EOF, `WouldBlock` nothing
    /// queued. Only a connection waiting for its PROXY header peeks; a
    /// stream that never carries one need not support it.
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let _ = buf;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this stream cannot peek",
        ))
    }
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
    /// Bytes one connection may read in one turn of the event loop before
    /// the others get theirs (`--read-budget`).
    pub read_budget_bytes: usize,
}

impl Limits {
    /// Limits with the resume mark at half the high-water mark: far enough
    /// below it that a reader paused and resumed is not paused again by the
    /// very next read.
    pub fn new(framing: Framing, max_line_bytes: usize, max_pending_bytes: usize) -> Limits {
        Limits {
            framing,
            max_line_bytes,
            max_pending_bytes,
            resume_pending_bytes: max_pending_bytes / 2,
            read_budget_bytes: TURN_READ_BUDGET_BYTES,
        }
    }

    /// The most storage one connection's buffer may grow to: the output it may
    /// owe, plus the longest unfinished line, plus one read that overshoots.
    pub fn max_buffer_bytes(&self) -> usize {
        self.max_pending_bytes + self.max_line_bytes + READ_CHUNK_BYTES
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Connection<S> {
    /// The connection id every log line about it shows (`conn 17`): drawn
    /// from `NEXT_CONNECTION_ID` when accepted, so never reused while the
    /// process runs, unlike its slab key (docs/PROTOCOL.md, "Connection
    /// ids"); the deadline queue tells its entries apart by it too.
    id: u64,
    stream: S,
    /// What reads left over: pending output, then the unfinished line. Holds
    /// no storage while nothing is left over.
    buffer: Buffer,
    /// Changes only in `transition`.
    state: State,
    /// The peer's address, for the log lines that open and close it.
    peer: SocketAddr,
    /// Complete lines received (each echoed unless the connection failed).
    lines: u64,
    /// Whether the peer has sent a byte; one that never did is a
    /// connect-then-close health check. A flag rather than a count keeps an
    /// idle connection's bookkeeping small: it fits in the struct's padding.
    received_any: bool,
    /// Whether the connection is on the loop's serve-again list for the
    /// next turn, so that it is listed once however many of this turn's
    /// calls spend its budget: one turn, one budget. Like `received_any`,
    /// it fits in the struct's padding.
    listed_again: bool,
    /// Whether the connection is on the loop's list of those waiting for
    /// memory (`Step::Starve`), so that it is listed once. In the padding
    /// too.
    starving: bool,
    /// Whether the loop's deadline queue holds an entry for it (see
    /// `connections/deadlines.rs`), so that it is given one only when a
    /// timeout may start to run and it has none. In the padding too.
    armed: bool,
    /// Bytes written back.
    bytes_echoed: u64,
    /// When bytes last moved either way, in server clock milliseconds; for
    /// a lingering connection, when it sent its FIN.
    last_active_ms: u64,
    /// The last time a write took output, or output came to be owed when
    /// none was: while echoes are owed, since when they have waited without
    /// progress. Meaningless while nothing is owed.
    owing_since_ms: u64,
    /// When the unfinished line's first byte was read: stamped by the read
    /// that leaves a line unfinished after none was. Meaningless while no
    /// line is unfinished.
    line_since_ms: u64,
}

/// The id the next connection gets, in any event loop of this process,
/// like nginx's connection counter: ids are unique across workers. Relaxed
/// is enough: only uniqueness matters, not an order between threads.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

impl<S: Stream> Connection<S> {
    /// A newly accepted connection, with the next connection id; it holds
    /// no buffer until it reads.
    pub fn new(stream: S, peer: SocketAddr, now_ms: u64) -> Connection<S> {
        Connection {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            stream,
            buffer: Buffer::default(),
            state: State::Open,
            peer,
            lines: 0,
            received_any: false,
            listed_again: false,
            starving: false,
            armed: false,
            bytes_echoed: 0,
            last_active_ms: now_ms,
            owing_since_ms: now_ms,
            line_since_ms: now_ms,
        }
    }

    /// Makes a connection just accepted, and not yet read from, one that
    /// must begin with a PROXY header (`--proxy-protocol`): until the
    /// header is read, `peer` is the balancer's address, and nothing is
    /// echoed.
    pub fn await_header(&mut self) {
        debug_assert!(self.state == State::Open && !self.received_any);
        self.state = State::AwaitingHeader;
    }

    /// The loop admitted the client the PROXY header named: the connection
    /// reads and echoes from now on.
    pub fn admit(&mut self) {
        // The only row for `Admitted` moves the state and does no I/O, so
        // it cannot fail.
        let admitted = self.transition(Input::Admitted, self.last_active_ms);
        debug_assert!(matches!(admitted, Ok(Next::Continue)));
    }

    /// The readiness the connection waits for in its current state, or `None`
    /// if it waits for nothing (it has finished).
    pub fn interest(&self) -> Option<Interest> {
        self.waiting().interest()
    }

    /// What the connection's interest is derived from: two calls that return
    /// the same `Waiting` mean the same interest.
    #[inline]
    pub fn waiting(&self) -> Waiting {
        Waiting {
            state: self.state,
            has_output: self.buffer.pending_len() > 0,
        }
    }

    /// Stops reading because the server is shutting down: the unfinished line
    /// is dropped, the echoes owed are delivered, then the connection closes.
    /// An idle connection (owing nothing, no line begun, nothing queued)
    /// closes at once.
    pub fn begin_shutdown(
        &mut self,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
    ) -> Step {
        // Nothing was read from it yet, so nothing is owed: it closes as an
        // idle connection does.
        if self.state == State::AwaitingHeader {
            return Step::Close(CloseReason::ServerShutdown);
        }
        let input = if self.state == State::Open && self.buffer.is_empty() {
            // A read of one byte tells whether anything is queued (and
            // barely touches the call's read budget). That byte is dropped,
            // as any input after the shutdown is; the EOF, if that is what
            // it finds, is read again while lingering.
            match read_retrying(&mut self.stream, &mut read_buffer.room()[..1]) {
                Ok(None) => Input::ShutdownIdle,
                Ok(Some(n)) => {
                    self.received_any |= n > 0;
                    read_buffer.count_received(n);
                    Input::Shutdown
                }
                Err(err) => return Step::Close(CloseReason::Io(err)),
            }
        } else {
            Input::Shutdown
        };
        match self.transition(input, now_ms) {
            Ok(Next::Return(step)) => step,
            // Try the write now: the socket may well be writable, and if it
            // is, no event would come to say so.
            // No room is needed: nothing more is read into the buffer.
            Ok(_) => self.on_ready(Readiness::WRITE, limits, read_buffer, now_ms, 0),
            Err(err) => Step::Close(CloseReason::Io(err)),
        }
    }

    /// The connection id its log lines show.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Marks the connection as listed to be served again next turn; false
    /// if it already was.
    pub fn list_again(&mut self) -> bool {
        !std::mem::replace(&mut self.listed_again, true)
    }

    /// Takes the connection off the list for the next turn, as that turn
    /// begins.
    pub fn unlist_again(&mut self) {
        self.listed_again = false;
    }

    /// Marks the connection as waiting for memory; false if it already was.
    pub fn starve(&mut self) -> bool {
        !std::mem::replace(&mut self.starving, true)
    }

    /// Takes the connection off the list of those waiting for memory.
    pub fn fed(&mut self) {
        self.starving = false;
    }

    /// Marks the connection as having an entry in the deadline queue; false
    /// if it already had one.
    pub fn arm(&mut self) -> bool {
        !std::mem::replace(&mut self.armed, true)
    }

    /// Marks the connection as having no entry in the deadline queue.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Whether the connection holds leftovers: echoes owed or a line begun.
    pub fn holds_leftovers(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Whether the connection is listed to be served again next turn.
    pub fn is_listed_again(&self) -> bool {
        self.listed_again
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

    /// The stream, for the server to name its socket.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, for the server to register or deregister.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

#[cfg(test)]
mod tests {
    //! Each row of the state table, driven through a scripted stream.

    use std::collections::VecDeque;

    use super::*;

    /// What the next read returns.
    #[derive(Debug)]
    enum Chunk {
        /// These bytes, cut to the room given (the rest waits for the next read).
        Bytes(Vec<u8>),
        /// A signal interrupted the call.
        Interrupted,
        /// The peer's FIN: this read and every later one return 0.
        Eof,
        /// The peer reset the connection.
        Reset,
    }

    /// A socket that plays a script: reads return the chunks in order, then
    /// `WouldBlock`; writes take up to `write_room` bytes, then `WouldBlock`.
    #[derive(Debug, Default)]
    struct Script {
        reads: VecDeque<Chunk>,
        eof: bool,
        read_calls: usize,
        write_room: usize,
        written: Vec<u8>,
        fin_sent: std::cell::Cell<bool>,
    }

    impl Read for Script {
        fn read(&mut self, room: &mut [u8]) -> io::Result<usize> {
            self.read_calls += 1;
            if self.eof {
                return Ok(0);
            }
            match self.reads.pop_front() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(Chunk::Interrupted) => Err(io::ErrorKind::Interrupted.into()),
                Some(Chunk::Reset) => Err(io::ErrorKind::ConnectionReset.into()),
                Some(Chunk::Eof) => {
                    self.eof = true;
                    Ok(0)
                }
                Some(Chunk::Bytes(mut bytes)) => {
                    let n = bytes.len().min(room.len());
                    room[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.reads.push_front(Chunk::Bytes(bytes.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.write_room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(self.write_room);
            self.write_room -= n;
            self.written.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Script {
        fn shutdown_write(&self) -> io::Result<()> {
            self.fin_sent.set(true);
            Ok(())
        }
    }

    /// A connection, its limits and the server's read buffer.
    struct Harness {
        connection: Connection<Script>,
        limits: Limits,
        read_buffer: ReadBuffer,
    }

    const ROOMY: usize = usize::MAX;
    const READABLE: Readiness = Readiness {
        readable: true,
        writable: false,
        read_until: ReadUntil::ShortRead,
    };
    /// An event that carried the peer's FIN (EPOLLRDHUP).
    const READABLE_FIN: Readiness = Readiness {
        readable: true,
        writable: false,
        read_until: ReadUntil::WouldBlock,
    };

    fn bytes(b: &[u8]) -> Chunk {
        Chunk::Bytes(b.to_vec())
    }

    impl Harness {
        fn new(framing: Framing, max_line_bytes: usize, max_pending_bytes: usize) -> Harness {
            let peer = "127.0.0.1:1".parse().expect("a socket address");
            Harness {
                connection: Connection::new(Script::default(), peer, 0),
                limits: Limits::new(framing, max_line_bytes, max_pending_bytes),
                read_buffer: ReadBuffer::default(),
            }
        }

        fn crlf() -> Harness {
            Harness::new(Framing::Crlf, 64, 64)
        }

        fn script(&mut self) -> &mut Script {
            self.connection.stream_mut()
        }

        fn arrive(&mut self, chunks: impl IntoIterator<Item = Chunk>) -> &mut Harness {
            self.script().reads.extend(chunks);
            self
        }

        fn room(&mut self, n: usize) -> &mut Harness {
            self.script().write_room = n;
            self
        }

        fn ready(&mut self, ready: Readiness) -> Step {
            self.ready_at(ready, 0, usize::MAX)
        }

        /// `on_ready` at `now_ms`, its buffer allowed to grow by `room`.
        fn ready_at(&mut self, ready: Readiness, now_ms: u64, room: usize) -> Step {
            let Harness {
                connection,
                limits,
                read_buffer,
            } = self;
            connection.on_ready(ready, limits, read_buffer, now_ms, room)
        }

        fn shutdown(&mut self) -> Step {
            let Harness {
                connection,
                limits,
                read_buffer,
            } = self;
            connection.begin_shutdown(limits, read_buffer, 0)
        }

        fn written(&mut self) -> Vec<u8> {
            self.script().written.clone()
        }
    }

    #[track_caller]
    fn assert_close(step: Step, expected: &str) {
        match step {
            Step::Close(reason) => assert_eq!(reason.to_string(), expected),
            other => panic!("expected a close ({expected}), got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_wait(step: Step) {
        assert!(matches!(step, Step::Wait), "expected Wait, got {step:?}");
    }

    #[test]
    fn open_echoes_and_a_short_read_saves_the_read_that_would_block() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([bytes(b"ping\r\n")]);
        assert_wait(h.ready(READABLE));
        assert_eq!(h.written(), b"ping\r\n");
        // One read: 6 bytes of 16 KiB asked proves the socket drained.
        assert_eq!(h.script().read_calls, 1);
        // Echoed in full from the server's buffer: nothing kept.
        assert_eq!(h.connection.buffer_capacity(), 0);
        assert_eq!(h.connection.interest(), Some(Interest::READABLE));
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let mut h = Harness::crlf();
        h.room(ROOMY)
            .arrive([Chunk::Interrupted, bytes(b"a\r\n"), Chunk::Interrupted]);
        assert_wait(h.ready(READABLE_FIN));
        assert_eq!(h.written(), b"a\r\n");
    }

    #[test]
    fn open_peer_eof_drops_the_unfinished_line_then_closes() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([bytes(b"a\r\nhal"), Chunk::Eof]);
        // Without the FIN's edge, the short read ends the burst...
        assert_wait(h.ready(READABLE));
        assert_eq!(h.connection.buffer_capacity(), 3, "'hal' is kept");
        // ...and the next event reads the EOF.
        assert_close(h.ready(READABLE), "peer finished");
        assert_eq!(h.written(), b"a\r\n");
    }

    #[test]
    fn the_fins_edge_makes_reading_go_on_past_a_short_read() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([bytes(b"a\r\n"), Chunk::Eof]);
        assert_close(h.ready(READABLE_FIN), "peer finished");
        assert_eq!(h.script().read_calls, 2);
    }

    #[test]
    fn a_fin_with_nothing_left_over_closes_at_once_without_a_write() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([Chunk::Eof]);
        assert_close(h.ready(READABLE_FIN), "peer finished");
        // One read, the EOF; nothing written and no FIN of ours: the close
        // sends it, and every byte the peer sent was read.
        assert_eq!(h.script().read_calls, 1);
        assert_eq!(h.written(), b"");
        assert!(!h.script().fin_sent.get());
        assert_eq!(h.connection.state(), State::Draining(Finish::PeerFinished));
        assert_eq!(h.connection.buffer_capacity(), 0);
    }

    #[test]
    fn open_line_too_long_echoes_the_lines_before_it_then_lingers() {
        let mut h = Harness::new(Framing::Crlf, 8, 64);
        h.room(ROOMY).arrive([bytes(b"ok\r\n0123456789")]);
        assert_wait(h.ready(READABLE));
        assert_eq!(h.written(), b"ok\r\n");
        assert_eq!(h.connection.state(), State::Lingering(Finish::LineTooLong));
        assert!(h.script().fin_sent.get());
        assert_eq!(h.connection.buffer_capacity(), 0);
        // Lingering: input is read and dropped; the peer's close ends it,
        // with the reason that made us finish.
        h.arrive([bytes(b"more"), Chunk::Eof]);
        assert_close(h.ready(READABLE_FIN), "line too long");
        assert_eq!(h.written(), b"ok\r\n");
    }

    #[test]
    fn open_output_full_pauses() {
        let mut h = Harness::new(Framing::Crlf, 64, 4);
        h.room(0).arrive([bytes(b"abcd\r\n"), bytes(b"more\r\n")]);
        assert_wait(h.ready(READABLE));
        assert_eq!(h.connection.state(), State::Paused);
        assert_eq!(h.connection.pending_bytes(), 6);
        assert_eq!(h.connection.interest(), Some(Interest::WRITABLE));
        // Paused means not reading: "more" is still in the socket.
        assert_eq!(h.script().read_calls, 1);
        // A readable event (spurious, or an error's) reads nothing either.
        assert_wait(h.ready(READABLE));
        assert_eq!(h.script().read_calls, 1);
    }

    #[test]
    fn paused_output_low_resumes_and_reads_until_would_block() {
        let mut h = Harness::new(Framing::Crlf, 64, 4);
        h.room(0).arrive([bytes(b"abcd\r\n")]);
        assert_wait(h.ready(READABLE));
        assert_eq!(h.connection.state(), State::Paused);
        // Input that arrived while paused raised no event we listened for.
        h.arrive([bytes(b"x\r\n"), bytes(b"y\r\n")]);
        h.room(ROOMY);
        assert_wait(h.ready(Readiness::WRITE));
        assert_eq!(h.connection.state(), State::Open);
        // Both chunks read although the first read was short, then the
        // read that said `WouldBlock`.
        assert_eq!(h.written(), b"abcd\r\nx\r\ny\r\n");
        assert_eq!(h.script().read_calls, 4);
        assert_eq!(h.connection.buffer_capacity(), 0);
    }

    #[test]
    fn paused_stays_paused_above_the_resume_mark() {
        let mut h = Harness::new(Framing::Raw, 64, 8);
        h.room(0).arrive([bytes(b"0123456789")]);
        assert_wait(h.ready(READABLE));
        assert_eq!(h.connection.state(), State::Paused);
        // 10 owed, 5 taken: 5 left is above the mark of 4.
        h.room(5);
        assert_wait(h.ready(Readiness::WRITE));
        assert_eq!(h.connection.state(), State::Paused);
        h.room(1);
        assert_wait(h.ready(Readiness::WRITE));
        assert_eq!(h.connection.state(), State::Open);
    }

    #[test]
    fn shutdown_drops_the_unfinished_line_and_lingers_once_nothing_is_owed() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([bytes(b"half")]);
        assert_wait(h.ready(READABLE));
        assert_wait(h.shutdown());
        assert_eq!(
            h.connection.state(),
            State::Lingering(Finish::ServerShutdown)
        );
        assert!(h.script().fin_sent.get());
        assert_eq!(h.connection.buffer_capacity(), 0);
        assert_eq!(h.written(), b"");
    }

    #[test]
    fn shutdown_closes_an_idle_connection_at_once() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([bytes(b"a\r\n")]);
        assert_wait(h.ready(READABLE));
        // Owing nothing, no line begun, nothing queued: no FIN to linger on.
        assert_close(h.shutdown(), "server shutdown");
        assert!(
            !h.script().fin_sent.get(),
            "closed, not shut down and lingered"
        );
        assert_eq!(h.written(), b"a\r\n");
    }

    #[test]
    fn shutdown_with_input_queued_lingers_even_when_nothing_is_owed() {
        let mut h = Harness::crlf();
        h.arrive([bytes(b"sent just before the shutdown\r\n")]);
        assert_wait(h.shutdown());
        assert_eq!(
            h.connection.state(),
            State::Lingering(Finish::ServerShutdown)
        );
        assert!(h.script().fin_sent.get());
        assert_eq!(h.written(), b"", "input after the shutdown is not echoed");
    }

    #[test]
    fn shutdown_of_a_paused_connection_delivers_what_it_owes_first() {
        let mut h = Harness::new(Framing::Crlf, 64, 4);
        h.room(0).arrive([bytes(b"abcd\r\n")]);
        assert_wait(h.ready(READABLE));
        assert_wait(h.shutdown());
        assert_eq!(
            h.connection.state(),
            State::Draining(Finish::ServerShutdown)
        );
        assert!(!h.script().fin_sent.get());
        h.room(ROOMY).arrive([Chunk::Eof]);
        assert_close(h.ready(Readiness::WRITE), "server shutdown");
        assert_eq!(h.written(), b"abcd\r\n");
    }

    #[test]
    fn draining_after_the_peer_finished_closes_once_everything_is_delivered() {
        let mut h = Harness::crlf();
        h.room(0).arrive([bytes(b"a\r\n"), Chunk::Eof]);
        assert_wait(h.ready(READABLE_FIN));
        assert_eq!(h.connection.state(), State::Draining(Finish::PeerFinished));
        assert_eq!(h.connection.interest(), Some(Interest::WRITABLE));
        h.room(ROOMY);
        assert_close(h.ready(Readiness::WRITE), "peer finished");
        assert_eq!(h.written(), b"a\r\n");
        assert!(!h.script().fin_sent.get(), "the peer closed first");
    }

    #[test]
    fn shutdown_while_finishing_changes_nothing() {
        let mut h = Harness::new(Framing::Crlf, 4, 64);
        h.room(ROOMY).arrive([bytes(b"toolong")]);
        assert_wait(h.ready(READABLE));
        let state = h.connection.state();
        assert_eq!(state, State::Lingering(Finish::LineTooLong));
        assert_wait(h.shutdown());
        assert_eq!(h.connection.state(), state);
    }

    #[test]
    fn a_spent_read_budget_asks_to_be_served_again() {
        let mut h = Harness::new(Framing::Raw, 64, 1 << 20);
        let chunks = (0..5).map(|_| Chunk::Bytes(vec![b'x'; READ_CHUNK_BYTES]));
        h.room(ROOMY).arrive(chunks);
        assert!(matches!(h.ready(READABLE), Step::Again));
        assert_eq!(h.script().read_calls, 4);
        assert_wait(h.ready(Readiness::SERVE_AGAIN));
        assert_eq!(h.written().len(), 5 * READ_CHUNK_BYTES);
    }

    #[test]
    fn leftovers_are_kept_and_later_bytes_read_behind_them() {
        let mut h = Harness::crlf();
        // The socket takes 2 bytes of "ab\r\n": 2 owed, plus "c" unfinished.
        h.room(2).arrive([bytes(b"ab\r\nc")]);
        assert_wait(h.ready(READABLE));
        assert_eq!(h.connection.pending_bytes(), 2);
        assert_eq!(h.connection.buffer_capacity(), 3);
        h.room(ROOMY).arrive([bytes(b"d\r\n")]);
        assert_wait(h.ready(Readiness {
            writable: true,
            ..READABLE
        }));
        assert_eq!(h.written(), b"ab\r\ncd\r\n");
        assert_eq!(h.connection.buffer_capacity(), 0);
        assert_eq!(h.connection.lines(), 2);
    }

    #[test]
    fn a_socket_error_closes_the_connection() {
        let mut h = Harness::crlf();
        h.arrive([Chunk::Reset]);
        assert_close(h.ready(READABLE), "connection reset");
    }

    /// The deadline as (when, reason's log text).
    fn deadline(h: &Harness, timeouts: Timeouts) -> Option<(u64, String)> {
        h.connection
            .deadline(&timeouts)
            .map(|(due, reason)| (due, reason.to_string()))
    }

    const IDLE_1S: Timeouts = Timeouts {
        idle_ms: 1000,
        send_ms: 0,
        line_ms: 0,
    };
    const SEND_AND_LINE: Timeouts = Timeouts {
        idle_ms: 0,
        send_ms: 300,
        line_ms: 500,
    };

    #[test]
    fn the_idle_timer_runs_from_the_last_byte_moved() {
        let mut h = Harness::crlf();
        assert_eq!(deadline(&h, Timeouts::default()), None, "all off");
        assert_eq!(deadline(&h, IDLE_1S), Some((1000, "idle timeout".into())));
        h.room(ROOMY).arrive([bytes(b"a\r\n")]);
        assert_wait(h.ready_at(READABLE, 700, usize::MAX));
        assert_eq!(deadline(&h, IDLE_1S), Some((1700, "idle timeout".into())));
    }

    #[test]
    fn the_send_timer_runs_only_while_echoes_are_owed_and_restarts_on_progress() {
        let mut h = Harness::crlf();
        assert_eq!(deadline(&h, SEND_AND_LINE), None, "nothing owed");
        h.room(2).arrive([bytes(b"abcd\r\n")]);
        // 2 bytes taken at 100 ms, 4 still owed: the clock runs from then.
        assert_wait(h.ready_at(READABLE, 100, usize::MAX));
        assert_eq!(
            deadline(&h, SEND_AND_LINE),
            Some((400, "send timeout".into()))
        );
        h.room(1);
        assert_wait(h.ready_at(Readiness::WRITE, 350, usize::MAX));
        assert_eq!(
            deadline(&h, SEND_AND_LINE),
            Some((650, "send timeout".into()))
        );
        h.room(ROOMY);
        assert_wait(h.ready_at(Readiness::WRITE, 360, usize::MAX));
        assert_eq!(deadline(&h, SEND_AND_LINE), None, "all delivered");
    }

    #[test]
    fn the_line_timer_runs_from_a_lines_first_byte_to_its_end() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([bytes(b"ha")]);
        assert_wait(h.ready_at(READABLE, 100, usize::MAX));
        // More of the same line later does not restart it.
        h.arrive([bytes(b"lf")]);
        assert_wait(h.ready_at(READABLE, 400, usize::MAX));
        assert_eq!(
            deadline(&h, SEND_AND_LINE),
            Some((100 + 500, "line timeout".into()))
        );
        h.arrive([bytes(b"\r\n")]);
        assert_wait(h.ready_at(READABLE, 450, usize::MAX));
        assert_eq!(deadline(&h, SEND_AND_LINE), None, "the line ended");
        assert_eq!(h.written(), b"half\r\n");
    }

    #[test]
    fn a_lingering_connection_has_the_linger_deadline_whatever_the_timeouts() {
        let mut h = Harness::crlf();
        // Input queued at the shutdown: the connection lingers.
        h.arrive([bytes(b"late\r\n")]);
        assert_wait(h.shutdown());
        let expected = Some((LINGER_MS, "server shutdown".into()));
        assert_eq!(deadline(&h, Timeouts::default()), expected);
        assert_eq!(deadline(&h, IDLE_1S), expected);
    }

    #[test]
    fn with_no_memory_room_a_connection_with_leftovers_stops_reading_and_starves() {
        let mut h = Harness::crlf();
        // Half a line kept: later bytes belong behind it, in its own buffer.
        h.room(ROOMY).arrive([bytes(b"half")]);
        assert_wait(h.ready(READABLE));
        h.arrive([bytes(b" a line\r\n")]);
        let calls = h.script().read_calls;
        let step = h.ready_at(READABLE, 0, 0);
        assert!(matches!(step, Step::Starve), "{step:?}");
        // No read was made into no room (it would have looked like EOF).
        assert_eq!(h.script().read_calls, calls);
        assert_eq!(h.connection.state(), State::Open);
        // Served again with room, it reads and echoes what waited.
        assert_wait(h.ready_at(Readiness::SERVE_AGAIN, 0, usize::MAX));
        assert_eq!(h.written(), b"half a line\r\n");
    }

    #[test]
    fn a_connection_with_nothing_left_over_needs_no_memory_room() {
        let mut h = Harness::crlf();
        h.room(ROOMY).arrive([bytes(b"ping\r\n")]);
        assert_wait(h.ready_at(READABLE, 0, 0));
        assert_eq!(h.written(), b"ping\r\n");
    }

    /// Handed over mid-conversation (echoes owed, a line begun, timers
    /// running) and taken over on another stream, a connection goes on as if
    /// nothing happened: the same owed bytes go out, the line completes to
    /// the same echo, and its id, counters and deadlines are its own.
    #[test]
    fn a_connection_handed_over_goes_on_where_it_was() {
        let timeouts = Timeouts {
            idle_ms: 10_000,
            send_ms: 5_000,
            line_ms: 7_000,
        };
        let mut h = Harness::crlf();
        h.room(4).arrive([bytes(b"one\r\ntw")]);
        assert_wait(h.ready_at(READABLE, 100, ROOMY));
        assert_eq!(h.written(), b"one\r");
        let record = h.connection.hand_over(7, 400);
        assert_eq!(
            (
                record.fd,
                record.pending.as_slice(),
                record.unfinished.as_slice()
            ),
            (7, &b"\n"[..], &b"tw"[..])
        );
        let before = (
            h.connection.deadline(&timeouts),
            h.connection.state(),
            h.connection.id(),
        );

        // The next program's clock reads 1,000 where this one read 400.
        let mut next = Harness::crlf();
        let taken = Connection::take_over(Script::default(), &record, &next.limits, false, 1_000)
            .expect("a state it could be in");
        next.connection = taken;
        let shifted = before
            .0
            .map(|(at_ms, reason)| (at_ms + 600, reason.to_string()));
        assert_eq!(
            next.connection
                .deadline(&timeouts)
                .map(|(at_ms, reason)| (at_ms, reason.to_string())),
            shifted
        );
        assert_eq!(
            (next.connection.state(), next.connection.id()),
            (before.1, before.2)
        );
        assert_eq!(next.connection.lines(), 1);
        next.room(usize::MAX).arrive([bytes(b"o\r\n")]);
        assert_wait(next.ready_at(READABLE, 1_000, ROOMY));
        assert_eq!(next.written(), b"\ntwo\r\n");
        assert_eq!(next.connection.lines(), 2);
        assert_eq!(next.connection.bytes_echoed(), 4 + 6);
        // Ids drawn from now on come after it.
        assert!(Connection::new(Script::default(), record.peer, 0).id() > record.id);
    }

    #[test]
    fn a_state_no_connection_can_be_in_is_refused() {
        let mut h = Harness::crlf();
        h.room(0).arrive([bytes(b"half")]);
        assert_wait(h.ready(READABLE));
        let record = h.connection.hand_over(3, 0);
        let limits = h.limits;
        let refused = |record: &crate::handover::ConnectionRecord| {
            Connection::take_over(Script::default(), record, &limits, false, 0).map(|_| ())
        };
        assert_eq!(refused(&record), Ok(()));
        let mut draining = record.clone();
        draining.state = State::Draining(Finish::PeerFinished);
        assert!(
            refused(&draining).is_err(),
            "an unfinished line kept after reading stopped"
        );
        let mut long = record.clone();
        long.unfinished = vec![b'x'; limits.max_line_bytes];
        assert!(refused(&long).is_err(), "a line at the limit");
        let mut lingering = record;
        lingering.unfinished.clear();
        lingering.pending = b"owed\r\n".to_vec();
        lingering.state = State::Lingering(Finish::LineTooLong);
        assert!(refused(&lingering).is_err(), "echoes owed after the FIN");
    }
}
#[cfg(test)]
mod size {
    use std::mem::size_of;

    use super::Connection;
    use crate::buffer::Buffer;
    use crate::socket::Socket;

    /// What an idle connection costs the process is mostly this struct (its
    /// slab entry) and nothing else: no buffer, no deadline entry under the
    /// default timeouts. docs/BENCHMARKS.md measures the whole at 10,000
    /// connections; this keeps the struct from growing unnoticed.
    #[test]
    fn an_idle_connection_is_its_struct_of_112_bytes_with_a_buffer_of_one_pointer() {
        assert_eq!(size_of::<Buffer>(), 8);
        assert!(
            size_of::<Connection<Socket>>() <= 112,
            "{} bytes",
            size_of::<Connection<Socket>>()
        );
    }
}
