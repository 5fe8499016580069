//! What one event does to a connection: `on_ready`, in two halves. The
//! usual event (an open connection with nothing left over told it may read)
//! is done by `on_usual`, always inlined into the loop's dispatch; every
//! other event, and a usual one whose read finds more than whole lines to
//! decide on, goes through the state machine (`machine.rs`) out of line.

use std::io;

use super::machine::Call;
use super::steps::{Input, ReadOutcome};
use super::{Connection, Limits, Stream};
use crate::buffer::ReadBuffer;
use crate::state::{CloseReason, Finish, Readiness, State, Step};

/// What `Connection::on_usual` made of an event.
#[derive(Debug)]
pub enum Usual {
    /// It was the usual event and is done: the connection waits as before,
    /// for the same readiness, holding no storage, as `Waiting::FRESH`.
    Echoed,
    /// It was the usual event, and its read found the peer's FIN with
    /// nothing left over: the connection is finished and is to be closed,
    /// with `CloseReason::PeerFinished` (every churning client's last event).
    Finished,
    /// It was the usual event, and the call went on into the state machine
    /// from `Waiting::FRESH`, with this outcome.
    Then(Step),
    /// It was another event: nothing was done (`Connection::on_other`).
    Not,
}

impl<S: Stream> Connection<S> {
    /// Does whatever the readiness allows: writes owed output, reads and
    /// echoes input, and moves between states. Never blocks. Its buffer may
    /// grow by `memory_room` bytes at most (the loop's memory budget); with
    /// less room than a read needs, it stops reading and returns
    /// `Step::Starve`.
    pub fn on_ready(
        &mut self,
        ready: Readiness,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
        memory_room: usize,
    ) -> Step {
        match self.on_usual(ready, limits, read_buffer, now_ms, memory_room) {
            Usual::Echoed => Step::Wait,
            Usual::Finished => Step::Close(CloseReason::PeerFinished),
            Usual::Then(step) => step,
            Usual::Not => self.on_other(ready, limits, read_buffer, now_ms, memory_room),
        }
    }

    /// `on_ready` for the usual event, the one nearly every event is: an
    /// open connection with nothing left over is told it may read (input,
    /// or its peer's FIN). Its first read and echo are done here, always
    /// inlined into the loop, and the state machine is called only when the
    /// read finds more than a short read of whole lines to decide on.
    ///
    /// The send and line timers' starts are stamped where output comes to be
    /// owed and where a line begins (`steps.rs`), not here: a call that
    /// leaves nothing over, nearly every call, stamps nothing.
    #[inline(always)]
    pub fn on_usual(
        &mut self,
        ready: Readiness,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
        memory_room: usize,
    ) -> Usual {
        // Readable only: a writable event means output is owed, which a
        // connection with nothing left over never has, or an error.
        if !(ready.readable
            && !ready.writable
            && self.state == State::Open
            && self.buffer.is_empty())
        {
            return Usual::Not;
        }
        let until = ready.read_until;
        let mut call = Call {
            reading: Some(until),
            budget: limits.read_budget_bytes,
            memory_room,
        };
        let read = self.echo_fresh(
            until,
            &mut call.budget,
            limits,
            read_buffer,
            now_ms,
            &mut call.memory_room,
        );
        match read {
            // Drained, or nothing there: the state table's rows for these
            // wait in the same state (`advance`). Nothing kept, nothing owed:
            // the connection is as it was.
            Ok(ReadOutcome::Drained | ReadOutcome::Blocked) if self.buffer.is_empty() => {
                Usual::Echoed
            }
            // The peer's FIN, with nothing left over.
            Ok(ReadOutcome::Found(Input::PeerEof)) => {
                self.peer_finished();
                Usual::Finished
            }
            Ok(read) => Usual::Then(self.go_on_after(call, read, limits, read_buffer, now_ms)),
            Err(err) => Usual::Then(self.settle(Err(err))),
        }
    }

    /// The peer's FIN, read by the usual event with nothing left over: the
    /// table's rows `(Open, PeerEof)` and `(Draining(PeerFinished),
    /// NothingOwed)` in one. No line is unfinished to drop and no echo is
    /// owed to flush, and every byte the peer sent has been read, so closing
    /// now cannot cause a reset. Out of line, so that the line's usual event
    /// does not carry it.
    #[cold]
    fn peer_finished(&mut self) {
        debug_assert!(self.buffer.is_empty(), "a FIN's read kept bytes");
        self.enter(State::Draining(Finish::PeerFinished));
    }

    /// `on_ready` for any other event: out of line, the state machine
    /// (`advance`) from the start.
    #[inline(never)]
    pub fn on_other(
        &mut self,
        ready: Readiness,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
        memory_room: usize,
    ) -> Step {
        let result = self.advance(ready, limits, read_buffer, now_ms, memory_room);
        self.settle(result)
    }

    /// The rest of a call `on_ready` began with a fresh read that found more
    /// to decide on: out of line, so that the usual event does not carry it.
    #[inline(never)]
    fn go_on_after(
        &mut self,
        call: Call,
        read: ReadOutcome,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
    ) -> Step {
        let result = self.go_on(call, Some(read), limits, read_buffer, now_ms);
        self.settle(result)
    }

    /// What a call's outcome asks of the loop: a socket error closes the
    /// connection, a failed allocation closes it for want of memory, and
    /// storage nothing is left in goes back.
    fn settle(&mut self, result: io::Result<Step>) -> Step {
        match result {
            Ok(Step::Close(reason)) => Step::Close(reason),
            Ok(step) => {
                self.buffer.release();
                step
            }
            Err(err) if err.kind() == io::ErrorKind::OutOfMemory => {
                Step::Close(CloseReason::OutOfMemory)
            }
            Err(err) => Step::Close(CloseReason::Io(err)),
        }
    }
}
