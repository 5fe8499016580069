//! The PROXY header a connection begins with under `--proxy-protocol`:
//! the step that reads it (`read_header`), for the state `AwaitingHeader`.
//!
//! The header is peeked at (`MSG_PEEK`), never read into a buffer, until
//! `proxy::parse` says it is whole; then exactly its bytes are read, and
//! whatever the client sent after it stays queued in the kernel for the
//! echo path to read like any input. So the header is never echoed however
//! it was split, a connection holds no storage while it waits, and the
//! client's first lines are never read before the loop has decided whether
//! the client the header names is admitted (HAProxy reads its
//! `accept-proxy` headers the same way).
//!
//! Readiness, which the peek changes:
//!
//! - Peeking consumes nothing, so a header still arriving is not
//!   announced again by what is already queued; the next edge comes with
//!   the next bytes, which is exactly when a peek can find more. An
//!   incomplete header therefore waits for the next event.
//! - A FIN queued behind an incomplete header raises its edge once, and a
//!   peek keeps returning the same bytes, never the 0 of EOF. So an
//!   incomplete header seen with the FIN's edge (`ReadUntil::WouldBlock`
//!   from `EPOLLRDHUP`) can never be completed: it is malformed.
//! - The input after the header arrived before the read that consumed the
//!   header, and no edge will announce it again: the loop serves the
//!   connection at once after admitting it (`Connections::admit`).

use std::io;

use super::steps::{Input, ReadOutcome, read_retrying, retrying};
use super::{Connection, Stream};
use crate::buffer::ReadBuffer;
use crate::proxy::{self, MAX_HEADER_BYTES, Parsed};
use crate::state::ReadUntil;

impl<S: Stream> Connection<S> {
    /// Looks at the first bytes for a PROXY header, and consumes it once
    /// it is whole, taking the client it names as the connection's peer.
    /// The shared read buffer is only scratch space here: nothing is kept.
    /// Out of line and cold: without `--proxy-protocol` it is never called,
    /// and inlined it would cost the echo loop around it instructions.
    #[cold]
    #[inline(never)]
    pub(super) fn read_header(
        &mut self,
        until: ReadUntil,
        read_buffer: &mut ReadBuffer,
    ) -> io::Result<ReadOutcome> {
        let room = &mut read_buffer.room()[..MAX_HEADER_BYTES];
        let Some(n) = retrying(|| self.stream.peek(room))? else {
            return Ok(ReadOutcome::Blocked);
        };
        if n == 0 {
            return Ok(ReadOutcome::Found(Input::PeerEof));
        }
        let (header_bytes, client) = match proxy::parse(&room[..n]) {
            Parsed::Incomplete if until == ReadUntil::WouldBlock => {
                return Ok(ReadOutcome::Found(Input::HeaderMalformed));
            }
            Parsed::Incomplete => return Ok(ReadOutcome::Blocked),
            Parsed::Malformed => return Ok(ReadOutcome::Found(Input::HeaderMalformed)),
            Parsed::Complete {
                header_bytes,
                client,
            } => (header_bytes, client),
        };
        // The peek showed the whole header queued, so one read takes it; a
        // stream socket hands out what is queued up to the size asked.
        let mut taken = 0;
        while taken < header_bytes {
            match read_retrying(&mut self.stream, &mut room[taken..header_bytes])? {
                Some(k) if k > 0 => taken += k,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the PROXY header peeked at could not be read",
                    ));
                }
            }
        }
        // Counted as bytes received, but not as the client having spoken: a
        // balancer's health check that sends a header and closes is a
        // probe, as a connect-and-close check is without the protocol.
        read_buffer.count_received(header_bytes);
        match client {
            Some(client) => {
                log::debug!(
                    "conn {}: PROXY header from {}: client {client}",
                    self.id,
                    self.peer
                );
                self.peer = client;
            }
            None => log::debug!(
                "conn {}: PROXY header from {} names no client (LOCAL)",
                self.id,
                self.peer
            ),
        }
        Ok(ReadOutcome::Found(Input::HeaderRead {
            named_client: client.is_some(),
        }))
    }
}
