//! The words the loop and a connection speak: what the loop tells it
//! (`Readiness`, and `ReadUntil`, what a short read proves), the connection's
//! `State`s, why it finished (`Finish`) and closed (`CloseReason`), what a
//! call asks of the loop (`Step`), and `Waiting`, what its interest is
//! derived from.
//!
//! Read it beside `connection.rs`, whose `transition` is the only place a
//! `State` changes. The `Display` text of each is what the log shows.

use std::fmt;
use std::io;

use mio::Interest;

/// The readiness a newly accepted connection is registered for: reading
/// only. An echo is written as soon as its line is read, and `WRITABLE` is
/// asked for only when a write leaves output behind. If input is already
/// queued, epoll reports it on registration.
pub const FIRST_INTEREST: Interest = Interest::READABLE;

/// What a short read proves, which decides when a burst of reads may stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUntil {
    /// A short read proves the receive buffer drained: `epoll(7)` says so for
    /// stream sockets, and any byte arriving later raises a new edge. The
    /// read that would only say `WouldBlock` is saved.
    ShortRead,
    /// A short read proves nothing; only `WouldBlock` (or EOF) ends the
    /// burst. So it is when the peer's FIN is known to be queued (its edge
    /// came with this event, and no later edge will announce it), and
    /// whenever the connection reads on its own initiative with no event to
    /// say what is there.
    WouldBlock,
}

/// What a connection has been told about its socket by one poll event, or
/// by the server serving it without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The socket may have input (or EOF, or an error) to read.
    pub readable: bool,
    /// The socket may accept output.
    pub writable: bool,
    /// How far reading must go before it may stop.
    pub read_until: ReadUntil,
}

impl Readiness {
    /// A connection served again because it spent its read budget: input may
    /// still be queued, and whether the peer closed meanwhile is not known.
    pub const SERVE_AGAIN: Readiness = Readiness {
        readable: true,
        writable: false,
        read_until: ReadUntil::WouldBlock,
    };

    /// What one poll event's flags tell a connection. An error or hang-up
    /// is reported as both readable and writable, so that whichever
    /// operation the connection tries next meets the error and closes it.
    /// A FIN's edge (`read_closed`, EPOLLRDHUP) is the last event it will
    /// raise, so reading must then go on to the read that returns 0.
    pub fn of_event(
        readable: bool,
        writable: bool,
        read_closed: bool,
        write_closed: bool,
        error: bool,
    ) -> Readiness {
        Readiness {
            readable: readable || read_closed || error,
            writable: writable || write_closed || error,
            read_until: if read_closed {
                ReadUntil::WouldBlock
            } else {
                ReadUntil::ShortRead
            },
        }
    }

    /// Only a write to try: the server's own initiative at shutdown, when the
    /// socket may well be writable and no event would say so.
    pub const WRITE: Readiness = Readiness {
        readable: false,
        writable: true,
        read_until: ReadUntil::ShortRead,
    };
}

/// The state and whether output is owed: all a connection's interest is
/// derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The connection's state.
    pub state: State,
    /// Whether echoes are owed.
    pub has_output: bool,
}

impl Waiting {
    /// An open connection with nothing left over, where every usual event
    /// begins (`Connection::on_usual`).
    pub const FRESH: Waiting = Waiting {
        state: State::Open,
        has_output: false,
    };

    /// The readiness a connection in this position waits for, or `None` if
    /// it waits for nothing (it has finished).
    #[inline]
    pub fn interest(self) -> Option<Interest> {
        match (self.state, self.has_output) {
            (State::Open, false) => Some(Interest::READABLE),
            (State::Open, true) => Some(Interest::READABLE | Interest::WRITABLE),
            // Not READABLE: input left unread would only bring events we must
            // ignore. Reading resumes on our own initiative after a flush.
            (State::Paused, _) => Some(Interest::WRITABLE),
            (State::Draining(_), true) => Some(Interest::WRITABLE),
            (State::Draining(_), false) => None,
            (State::Lingering(_), _) => Some(Interest::READABLE),
            // Nothing is echoed before the header is read, so nothing is owed.
            (State::AwaitingHeader, _) => Some(Interest::READABLE),
        }
    }
}

/// What the server should do with the connection after a call.
#[derive(Debug)]
pub enum Step {
    /// Wait for the readiness `interest()` names.
    Wait,
    /// The connection used its read budget with input possibly left; serve
    /// it again next turn (the kernel will not report that input again).
    Again,
    /// The memory budget left no room to read more: serve it again once
    /// memory is freed (the kernel will not report the input again).
    Starve,
    /// Close the connection and drop it.
    Close(CloseReason),
    /// The PROXY header has been read and consumed, and the connection's
    /// peer is now the client it names (when `named_client`): the loop
    /// decides whether that client is admitted, then serves the input after
    /// the header, which no edge will announce.
    HeaderRead {
        /// Whether the header named a client; a v2 `LOCAL` header or a v1
        /// `UNKNOWN` one names none, and the balancer's address stands.
        named_client: bool,
    },
}

/// The connection's state. Changes only through `Connection::transition`.
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
    /// Under `--proxy-protocol`, before anything else: waiting for the
    /// PROXY header, which is peeked at and never echoed. Becomes `Open`
    /// once the loop admits the client it names. Last, so that `Open` keeps
    /// the discriminant 0 the hot path tests for.
    AwaitingHeader,
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
    /// Echoes were owed and the peer took none of them for `send-timeout`.
    SendTimeout,
    /// A line was begun and not finished within `line-timeout`.
    LineTimeout,
    /// The memory budget (`max-memory`) was spent, and this connection held
    /// the most of it without its client making progress.
    Evicted,
    /// The allocator refused the connection's buffer more memory.
    OutOfMemory,
    /// `max-connections` were open and this one, quiet the longest, gave
    /// its slot to a new client.
    Displaced,
    /// The server shut down; every echo owed was delivered.
    ServerShutdown,
    /// The server's shutdown timeout expired before the connection finished
    /// (echoes still owed, or no close from the peer after our FIN).
    ShutdownTimeout,
    /// Under `--proxy-protocol`: the first bytes can never be a PROXY
    /// header (wrong bytes, over its bound, or cut short by the peer's FIN).
    ProxyHeaderMalformed,
    /// Under `--proxy-protocol`: no complete PROXY header within
    /// `PROXY_HEADER_TIMEOUT_MS` of the accept.
    ProxyHeaderTimeout,
    /// Under `--proxy-protocol`: the client the header names is not
    /// admitted by `--allow`/`--deny` (without the PROXY protocol such a
    /// client is refused at accept, and is never a connection to close).
    Denied,
    /// Under `--proxy-protocol`: the client the header names already has
    /// `max-connections-per-ip` open (refused at accept without it).
    TooManyFromAddress,
    /// A socket error; the connection cannot continue.
    Io(io::Error),
}

impl State {
    /// Why the connection stopped echoing, once it has.
    pub fn finish(self) -> Option<Finish> {
        match self {
            State::AwaitingHeader | State::Open | State::Paused => None,
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
            State::AwaitingHeader => f.write_str("awaiting PROXY header"),
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
            CloseReason::SendTimeout => f.write_str("send timeout"),
            CloseReason::LineTimeout => f.write_str("line timeout"),
            CloseReason::Evicted => f.write_str("evicted for memory"),
            CloseReason::OutOfMemory => f.write_str("out of memory"),
            CloseReason::Displaced => f.write_str("displaced by a new client"),
            CloseReason::ServerShutdown => f.write_str("server shutdown"),
            CloseReason::ShutdownTimeout => f.write_str("shutdown timeout"),
            CloseReason::ProxyHeaderMalformed => f.write_str("malformed PROXY header"),
            CloseReason::ProxyHeaderTimeout => f.write_str("no PROXY header in time"),
            CloseReason::Denied => f.write_str("denied by --allow/--deny"),
            CloseReason::TooManyFromAddress => f.write_str("max-connections-per-ip reached"),
            CloseReason::Io(err) => write!(f, "{err}"),
        }
    }
}
