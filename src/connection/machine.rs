//! The state machine of one connection: `advance` does the work the state
//! allows and feeds what it finds to `transition`, the only place the state
//! changes. The work itself (reading, echoing, flushing) is in `steps.rs`;
//! what the states mean and which readiness each waits for is in
//! `connection.rs`.
//!
//! The work of a call (`flush`, `read_and_echo`, `read_and_discard`) finds
//! things out; only `transition` changes the state, in one table:
//!
//! | state                  | input         | next state              | and then                         |
//! |------------------------|---------------|-------------------------|----------------------------------|
//! | `AwaitingHeader`       | `HeaderRead`  | unchanged               | the loop decides on the client (`Step::HeaderRead`) |
//! | `AwaitingHeader`       | `Admitted`    | `Open`                  | the loop reads until `WouldBlock` |
//! | `AwaitingHeader`       | `HeaderMalformed` | closed              | `CloseReason::ProxyHeaderMalformed` |
//! | `AwaitingHeader`       | `PeerEof`     | closed                  | `CloseReason::PeerFinished` (a probe) |
//! | `Open`                 | `PeerEof`     | `Draining(PeerFinished)` | unfinished line dropped         |
//! | `Open`                 | `LineTooLong` | `Draining(LineTooLong)` | the long line dropped            |
//! | `Open`                 | `OutputFull`  | `Paused`                |                                  |
//! | `Paused`               | `OutputLow`   | `Open`                  | read until `WouldBlock`          |
//! | `Open`, `Paused`       | `Shutdown`    | `Draining(ServerShutdown)` | unfinished line dropped       |
//! | `Open`, idle           | `ShutdownIdle` | closed                 | nothing owed, nothing queued     |
//! | `Draining(PeerFinished)` | `NothingOwed` | closed                | `CloseReason::PeerFinished`      |
//! | `Draining(other)`      | `NothingOwed` | `Lingering(other)`      | FIN sent; read until `WouldBlock` |
//! | `Lingering(finish)`    | `PeerEof`     | closed                  | the reason that made us finish   |
//! | `Draining`, `Lingering` | `Shutdown`   | unchanged               | already finishing                |

use std::io;

use log::trace;

use super::steps::{Input, ReadOutcome};
use super::{Connection, Limits, Stream};
use crate::buffer::ReadBuffer;
use crate::state::{CloseReason, Finish, ReadUntil, Readiness, State, Step};

/// Where a call stands between two reads: what it may still read, how much
/// of its read budget is left, and how far its buffer may still grow.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    /// `None`: nothing (more) to read in this call.
    pub(super) reading: Option<ReadUntil>,
    /// Bytes it may still read (`Limits::read_budget_bytes` at first).
    pub(super) budget: usize,
    /// Bytes its buffer may still grow by.
    pub(super) memory_room: usize,
}

/// What the state machine does after a transition.
#[derive(Debug)]
pub(super) enum Next {
    /// Carry on as before.
    Continue,
    /// Read until `WouldBlock`: input may be queued that no edge will
    /// announce, because the connection was not reading when it arrived.
    ReadAll,
    /// Return this step to the server.
    Return(Step),
}

impl<S: Stream> Connection<S> {
    /// The state machine proper: do the work the state allows, feed what it
    /// finds to `transition`, until there is nothing left to do this call.
    /// Socket errors propagate with `?` and close the connection.
    pub(super) fn advance(
        &mut self,
        ready: Readiness,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
        memory_room: usize,
    ) -> io::Result<Step> {
        // Output first: the peer has waited longest for it, and draining it
        // may lift a pause. A writable event with nothing pending is spurious.
        if ready.writable {
            self.flush(now_ms)?;
        }
        let call = Call {
            reading: ready.readable.then_some(ready.read_until),
            // Every byte read counts, whatever the read found.
            budget: limits.read_budget_bytes,
            memory_room,
        };
        self.go_on(call, None, limits, read_buffer, now_ms)
    }

    /// The rest of `advance` from where `call` stands, beginning with the
    /// outcome of a read already made (`first`), if there was one: the way
    /// in for a call that `Connection::on_usual` began with a fresh read of
    /// its own.
    pub(super) fn go_on(
        &mut self,
        call: Call,
        mut first: Option<ReadOutcome>,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
    ) -> io::Result<Step> {
        let Call {
            mut reading,
            mut budget,
            mut memory_room,
        } = call;
        loop {
            let read = match first.take() {
                Some(read) => read,
                None => match (self.state, reading) {
                    // Spent, with input possibly left (the kernel will not
                    // report it again): served again next turn.
                    (State::Open | State::Lingering(_), Some(_)) if budget == 0 => {
                        return Ok(Step::Again);
                    }
                    (State::Open, Some(until)) => self.read_and_echo(
                        until,
                        &mut budget,
                        limits,
                        read_buffer,
                        now_ms,
                        &mut memory_room,
                    )?,
                    (State::Lingering(_), Some(until)) => {
                        self.read_and_discard(until, &mut budget, read_buffer)?
                    }
                    // Peeks only, so the read budget does not apply.
                    (State::AwaitingHeader, Some(until)) => self.read_header(until, read_buffer)?,
                    (State::AwaitingHeader | State::Open | State::Lingering(_), None) => {
                        return Ok(Step::Wait);
                    }
                    (State::Paused, _)
                        if self.buffer.pending_len() <= limits.resume_pending_bytes =>
                    {
                        ReadOutcome::Found(Input::OutputLow)
                    }
                    (State::Paused, _) => return Ok(Step::Wait),
                    (State::Draining(_), _) if self.buffer.pending_len() > 0 => {
                        return Ok(Step::Wait);
                    }
                    (State::Draining(_), _) => ReadOutcome::Found(Input::NothingOwed),
                },
            };
            match read {
                ReadOutcome::Blocked => return Ok(Step::Wait),
                // Input may be left unread, and the kernel will not report
                // it again: the loop serves the connection once it has room.
                ReadOutcome::Starved => return Ok(Step::Starve),
                // Nothing more to read in this call, and no transition
                // came of it: the state is still the one that read (open,
                // lingering or awaiting its header), which waits for the
                // next edge, as the `(_, None)` row above says. Returning
                // here rather than going round again saves a turn of the
                // loop on nearly every event.
                ReadOutcome::Drained => return Ok(Step::Wait),
                ReadOutcome::More => {}
                ReadOutcome::Found(input) => match self.transition(input, now_ms)? {
                    Next::Continue => {}
                    Next::ReadAll => reading = Some(ReadUntil::WouldBlock),
                    Next::Return(step) => return Ok(step),
                },
            }
        }
    }

    /// The state table (see the module docs): the only place the state
    /// changes.
    pub(super) fn transition(&mut self, input: Input, now_ms: u64) -> io::Result<Next> {
        let (next_state, next) = match (self.state, input) {
            // The state waits for the loop's verdict on the client, which
            // `Connection::admit` brings (or a close).
            (State::AwaitingHeader, Input::HeaderRead { named_client }) => {
                return Ok(Next::Return(Step::HeaderRead { named_client }));
            }
            (State::AwaitingHeader, Input::Admitted) => (State::Open, Next::Continue),
            (State::AwaitingHeader, Input::HeaderMalformed) => {
                return Ok(Next::Return(Step::Close(CloseReason::ProxyHeaderMalformed)));
            }
            // Nothing came at all: a balancer's connect-and-close check.
            (State::AwaitingHeader, Input::PeerEof) => {
                return Ok(Next::Return(Step::Close(CloseReason::PeerFinished)));
            }
            // An unfinished line the peer never ended is not echoed
            // (docs/PROTOCOL.md); an over-long one never can be.
            (State::Open, Input::PeerEof) => {
                self.buffer.discard_unfinished();
                (State::Draining(Finish::PeerFinished), Next::Continue)
            }
            (State::Open, Input::LineTooLong) => {
                self.buffer.discard_unfinished();
                (State::Draining(Finish::LineTooLong), Next::Continue)
            }
            (State::Open, Input::OutputFull) => (State::Paused, Next::Continue),
            // Reading stopped before `WouldBlock` when we paused, so the
            // kernel owes us no event for that input, nor for a FIN that
            // came while we waited only for writability: resume on our own.
            (State::Paused, Input::OutputLow) => (State::Open, Next::ReadAll),
            (State::Open | State::Paused, Input::Shutdown) => {
                self.buffer.discard_unfinished();
                (State::Draining(Finish::ServerShutdown), Next::Continue)
            }
            // Nothing owed, nothing unread: closing sends the FIN after the
            // last echo, and nothing is there to turn it into a reset, so
            // there is nothing to linger for (nginx closes its idle
            // keepalive connections at a graceful stop the same way).
            (State::Open, Input::ShutdownIdle) => {
                return Ok(Next::Return(Step::Close(CloseReason::ServerShutdown)));
            }
            // Every byte the peer sent has been read (we saw its EOF), so
            // closing cannot cause a reset.
            (State::Draining(Finish::PeerFinished), Input::NothingOwed) => {
                return Ok(Next::Return(Step::Close(CloseReason::PeerFinished)));
            }
            // The peer may have sent more than we read, and its FIN too,
            // while we waited only for writability: drain what is queued.
            (State::Draining(finish), Input::NothingOwed) => {
                self.stream.shutdown_write()?;
                self.last_active_ms = now_ms;
                (State::Lingering(finish), Next::ReadAll)
            }
            (State::Lingering(finish), Input::PeerEof) => {
                return Ok(Next::Return(Step::Close(finish.into())));
            }
            (State::Draining(_) | State::Lingering(_), Input::Shutdown) => {
                return Ok(Next::Return(Step::Wait));
            }
            // No work step finds these: a paused or draining connection does
            // not read, a lingering one does not echo. Waiting is safe: the
            // interest still follows from the state.
            (state, input) => {
                debug_assert!(false, "no transition for {input:?} in state {state}");
                return Ok(Next::Return(Step::Wait));
            }
        };
        self.enter(next_state);
        Ok(next)
    }

    /// Moves to `next`, with the state table's trace line: every change of
    /// state the table makes goes through here, its own rows
    /// (`transition`) and the FIN's shortcut (`peer_finished`) alike.
    #[inline]
    pub(super) fn enter(&mut self, next: State) {
        let before = std::mem::replace(&mut self.state, next);
        trace!("conn {}: {} -> {}", self.id, before, self.state);
    }
}
