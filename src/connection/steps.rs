//! The work one call of a connection does: read, scan for complete lines,
//! echo them, keep what is left over, flush. Each step finds things out
//! and reports them as a `ReadOutcome`; deciding what they mean is the
//! state machine's (`machine.rs`). Every read and write loops until
//! `WouldBlock` or a proven short read: readiness is edge-triggered, so
//! stopping early without saying so would leave input nobody announces.

use std::io::{self, Read, Write};

use super::{Connection, Limits, Stream};
use crate::buffer::ReadBuffer;
use crate::state::ReadUntil;

/// What the state table decides on: something one step of work found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    /// A read returned 0: the peer will send nothing more.
    PeerEof,
    /// The unfinished line reached `max_line_bytes` without ending.
    LineTooLong,
    /// The output owed reached `max_pending_bytes`.
    OutputFull,
    /// A paused connection's output fell to `resume_pending_bytes`.
    OutputLow,
    /// A draining connection has delivered everything it owed.
    NothingOwed,
    /// The server began shutting down.
    Shutdown,
    /// The server began shutting down, and this connection is idle: it owes
    /// nothing, holds no unfinished line, and a read found nothing queued.
    ShutdownIdle,
    /// A whole PROXY header was read and consumed (`header.rs`).
    HeaderRead {
        /// Whether it named a client, now the connection's peer.
        named_client: bool,
    },
    /// The first bytes can never be a PROXY header.
    HeaderMalformed,
    /// The loop admitted the client the PROXY header named.
    Admitted,
}

/// How one read went.
#[derive(Debug)]
pub(super) enum ReadOutcome {
    /// `WouldBlock`: nothing more to read until the next edge.
    Blocked,
    /// A short read, which proves the input drained (`ReadUntil::ShortRead`).
    Drained,
    /// Bytes read, and there may be more.
    More,
    /// The read found something the state table must decide on.
    Found(Input),
    /// No read was made: the memory budget leaves the buffer no room.
    Starved,
}

impl<S: Stream> Connection<S> {
    /// Reads once and echoes every line the read completed.
    ///
    /// With nothing left over, the read lands in the server's `ReadBuffer`
    /// (`echo_fresh`); with leftovers, in the connection's own buffer,
    /// behind them (`echo_behind`).
    pub(super) fn read_and_echo(
        &mut self,
        until: ReadUntil,
        budget: &mut usize,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
        memory_room: &mut usize,
    ) -> io::Result<ReadOutcome> {
        if self.buffer.is_empty() {
            self.echo_fresh(until, budget, limits, read_buffer, now_ms, memory_room)
        } else {
            self.echo_behind(until, budget, limits, read_buffer, now_ms, memory_room)
        }
    }

    /// Reads once into the server's `ReadBuffer`, writes its complete lines
    /// from there, and keeps only what the write left and the unfinished
    /// line. The connection must hold no leftovers.
    ///
    /// Always inlined: it is most of the work of nearly every event, and
    /// `Connection::on_usual` calls it directly for the usual one.
    #[inline(always)]
    pub(super) fn echo_fresh(
        &mut self,
        until: ReadUntil,
        budget: &mut usize,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
        memory_room: &mut usize,
    ) -> io::Result<ReadOutcome> {
        debug_assert!(self.buffer.is_empty(), "a fresh read over leftovers");
        let room = read_buffer.room();
        let asked = room.len();
        let Some(n) = read_retrying(&mut self.stream, room)? else {
            return Ok(ReadOutcome::Blocked);
        };
        // The peer finished, with nothing left over: nothing to scan, echo
        // or keep (every churning client's last read).
        let (too_long, owed) = if n == 0 {
            (false, 0)
        } else {
            self.echo_read(room, n, limits, now_ms, memory_room)?
        };
        Ok(self.after_read(
            n,
            asked,
            too_long,
            owed,
            until,
            budget,
            limits,
            read_buffer,
            now_ms,
        ))
    }

    /// Echoes the complete lines of the `n` bytes a fresh read put at the
    /// start of `room` and keeps what is left over; says whether the
    /// unfinished line is too long, and how many bytes are owed.
    #[inline(always)]
    fn echo_read(
        &mut self,
        room: &[u8],
        n: usize,
        limits: &Limits,
        now_ms: u64,
        memory_room: &mut usize,
    ) -> io::Result<(bool, usize)> {
        let scan = limits.framing.scan_read(room, n, limits.max_line_bytes);
        let received = &room[..n];
        self.lines += scan.lines as u64;
        let (complete, unfinished) = received.split_at(scan.complete_bytes);
        // Echo without waiting for a writable event: the socket is almost
        // always writable, and asking first would cost an epoll_ctl and a
        // wake-up per line (redis's "write before sleep").
        let sent = self.send(complete, now_ms)?;
        let unfinished = if scan.too_long { &[][..] } else { unfinished };
        // The bytes are read already: they are kept whatever the budget
        // says, so a connection with nothing left over may go past it by one
        // read (see `Connections`). What they take is spent from the room,
        // so that a later read of this call cannot be granted it again.
        // Nothing kept, nothing spent: the usual case costs no arithmetic.
        let owed = &complete[sent..];
        let grown = self
            .buffer
            .keep(owed, unfinished)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        *memory_room = memory_room.saturating_sub(grown);
        // Nothing was left over before this read: echoes it leaves owed have
        // waited since now (the send timer starts), and a line it leaves
        // unfinished began now (the line timer starts).
        if !owed.is_empty() {
            self.owing_since_ms = now_ms;
        }
        if !unfinished.is_empty() {
            self.line_since_ms = now_ms;
        }
        // Nothing was owed before this read, so all that is owed now is what
        // the write left: no need to ask the buffer.
        Ok((scan.too_long, owed.len()))
    }

    /// Reads once into the connection's own buffer, behind its leftovers,
    /// and writes what is owed, including the lines the read completed.
    fn echo_behind(
        &mut self,
        until: ReadUntil,
        budget: &mut usize,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
        memory_room: &mut usize,
    ) -> io::Result<ReadOutcome> {
        // The buffer may grow by the room the budget left when the call
        // began, less what earlier reads of this call took of it.
        let held = self.buffer.capacity();
        let cap = limits
            .max_buffer_bytes()
            .min(held.saturating_add(*memory_room));
        self.buffer
            .make_spare(cap)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        *memory_room = memory_room.saturating_sub(self.buffer.capacity() - held);
        let room = self.buffer.spare();
        // Reading pauses before the owed output reaches the limits' cap and
        // the line limit closes before the unfinished line does, so only the
        // memory budget can leave no room. Reading into none would return 0,
        // which reads as EOF: stop instead.
        if room.is_empty() {
            return Ok(ReadOutcome::Starved);
        }
        let asked = room.len();
        let Some(n) = read_retrying(&mut self.stream, room)? else {
            return Ok(ReadOutcome::Blocked);
        };
        let scanned = self.buffer.unfinished().len();
        let owed_before = self.buffer.pending_len();
        self.buffer.filled(n);
        let scan = limits
            .framing
            .scan(self.buffer.unfinished(), scanned, limits.max_line_bytes);
        self.buffer.complete(scan.complete_bytes);
        self.lines += scan.lines as u64;
        // No line was unfinished before this read, or one ended in it: the
        // unfinished one, if any, began in this read.
        if scanned == 0 || scan.complete_bytes > 0 {
            self.line_since_ms = now_ms;
        }
        // Echoes owed where none were: the send timer starts now (the flush
        // below restarts it if the socket takes any).
        if owed_before == 0 && scan.complete_bytes > 0 {
            self.owing_since_ms = now_ms;
        }
        self.flush(now_ms)?;
        let owed = self.buffer.pending_len();
        Ok(self.after_read(
            n,
            asked,
            scan.too_long,
            owed,
            until,
            budget,
            limits,
            read_buffer,
            now_ms,
        ))
    }

    /// What a read of `n` bytes out of `asked`, echoed, leaves for the state
    /// table, with `owed` bytes still owed; and the counts every read keeps.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn after_read(
        &mut self,
        n: usize,
        asked: usize,
        too_long: bool,
        owed: usize,
        until: ReadUntil,
        budget: &mut usize,
        limits: &Limits,
        read_buffer: &mut ReadBuffer,
        now_ms: u64,
    ) -> ReadOutcome {
        self.last_active_ms = now_ms;
        self.received_any |= n > 0;
        read_buffer.count_received(n);
        *budget = budget.saturating_sub(n);
        if n == 0 {
            ReadOutcome::Found(Input::PeerEof)
        } else if too_long {
            ReadOutcome::Found(Input::LineTooLong)
        } else if owed >= limits.max_pending_bytes {
            ReadOutcome::Found(Input::OutputFull)
        } else {
            read_outcome(n, asked, until)
        }
    }

    /// Reads once while lingering and drops what it read, into the server's
    /// `ReadBuffer`. Discarded input is not activity: the linger time runs
    /// from our FIN, so a peer that keeps sending cannot hold the connection
    /// open.
    pub(super) fn read_and_discard(
        &mut self,
        until: ReadUntil,
        budget: &mut usize,
        read_buffer: &mut ReadBuffer,
    ) -> io::Result<ReadOutcome> {
        let room = read_buffer.room();
        let asked = room.len();
        let Some(n) = read_retrying(&mut self.stream, room)? else {
            return Ok(ReadOutcome::Blocked);
        };
        self.received_any |= n > 0;
        read_buffer.count_received(n);
        *budget = budget.saturating_sub(n);
        Ok(if n == 0 {
            ReadOutcome::Found(Input::PeerEof)
        } else {
            read_outcome(n, asked, until)
        })
    }

    /// Writes the pending output until it is all sent or the socket is full.
    pub(super) fn flush(&mut self, now_ms: u64) -> io::Result<()> {
        if self.buffer.pending_len() > 0 {
            let sent = send(&mut self.stream, self.buffer.pending())?;
            self.buffer.consume(sent);
            self.note_sent(sent, now_ms);
        }
        Ok(())
    }

    /// Writes `bytes` until they are all sent or the socket is full, and
    /// returns how many were sent. Always inlined: it is the write of the
    /// usual event.
    #[inline(always)]
    fn send(&mut self, bytes: &[u8], now_ms: u64) -> io::Result<usize> {
        let sent = send(&mut self.stream, bytes)?;
        self.note_sent(sent, now_ms);
        Ok(sent)
    }

    fn note_sent(&mut self, sent: usize, now_ms: u64) {
        if sent > 0 {
            self.bytes_echoed += sent as u64;
            self.last_active_ms = now_ms;
            self.owing_since_ms = now_ms;
        }
    }
}

/// Reads once, retrying `Interrupted`; `None` for `WouldBlock`.
#[inline]
pub(super) fn read_retrying(stream: &mut impl Read, room: &mut [u8]) -> io::Result<Option<usize>> {
    retrying(|| stream.read(room))
}

/// Makes one read-like call (a read, a peek), again while a signal
/// interrupts it; `None` for `WouldBlock`.
#[inline]
pub(super) fn retrying(mut call: impl FnMut() -> io::Result<usize>) -> io::Result<Option<usize>> {
    loop {
        match call() {
            Ok(n) => return Ok(Some(n)),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Writes `bytes` until all are sent, a write comes back short, or the
/// socket says `WouldBlock`; returns how many were sent. Always inlined:
/// it is the write of the usual event.
#[inline(always)]
fn send(stream: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                sent += n;
                // A short write means the send buffer is full (epoll(7));
                // another write would only return `WouldBlock`.
                if sent < bytes.len() {
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(sent)
}

/// How a read of `n` bytes out of `asked` leaves the burst.
#[inline]
fn read_outcome(n: usize, asked: usize, until: ReadUntil) -> ReadOutcome {
    if n < asked && until == ReadUntil::ShortRead {
        ReadOutcome::Drained
    } else {
        ReadOutcome::More
    }
}
