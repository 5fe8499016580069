//! The connections' side of an upgrade: each open connection described for
//! the next program (`hand_over`), and each described connection taken
//! back into the slab with everything the loop keeps about it: its
//! registration, its storage in the memory budget, its address's count
//! and its place in the deadline queue (`take_over`).

use super::admission::AddressKey;
use super::{Connections, Registrar};
use crate::connection::{Connection, Stream};
use crate::handover::{ConnectionRecord, HandoverError};
use crate::state::State;

impl<S: Stream> Connections<S> {
    /// Every open connection as the next program takes it over, with its
    /// socket's descriptor from `fd_of`; timestamps become ages at
    /// `now_ms`.
    pub fn hand_over(&self, now_ms: u64, fd_of: impl Fn(&S) -> i32) -> Vec<ConnectionRecord> {
        self.slab
            .iter()
            .map(|(_, connection)| connection.hand_over(fd_of(connection.stream()), now_ms))
            .collect()
    }

    /// Carries on the connection `record` describes over `stream`: it is
    /// registered for the readiness its state waits for and counted as
    /// any connection accepted here would be. Returns its key.
    ///
    /// Readiness: a socket added to a poll instance reports the readiness it
    /// already has (epoll checks it as it adds it), so input that arrived
    /// while the programs changed, or room to write owed echoes, is reported
    /// by the first poll as for a new connection; no event is lost between
    /// the two programs' poll instances.
    ///
    /// # Errors
    ///
    /// The record describes a state no connection here can be in (see
    /// `Connection::take_over`), or the socket cannot be registered. The
    /// connection is then not taken; dropping `stream` closes it.
    pub fn take_over(
        &mut self,
        registrar: &impl Registrar<S>,
        stream: S,
        record: &ConnectionRecord,
        now_ms: u64,
    ) -> Result<usize, HandoverError> {
        let reads_headers = self.proxy_from.is_some();
        let mut connection =
            Connection::take_over(stream, record, &self.limits, reads_headers, now_ms)?;
        let interest = connection
            .interest()
            .ok_or(HandoverError::Invalid("state (finished)"))?;
        let entry = self.slab.vacant_entry();
        let key = entry.key();
        registrar
            .register(connection.stream_mut(), key, interest)
            .map_err(|_| HandoverError::Invalid("socket (cannot be registered)"))?;
        let connection = entry.insert(connection);
        self.memory_used += connection.buffer_capacity();
        self.memory_peak = self.memory_peak.max(self.memory_used);
        // One still waiting for its header is counted once it is read.
        if self.max_per_address != usize::MAX && connection.state() != State::AwaitingHeader {
            *self
                .per_address
                .entry(AddressKey::of(connection.peer()))
                .or_insert(0) += 1;
        }
        // Lingering has an entry of its own, as `apply` gives it.
        if let State::Lingering(_) = connection.state() {
            if let Some((due_ms, _)) = connection.deadline(&self.timeouts) {
                // Read out first: `connection` borrows the slab mutably.
                let deadline = (due_ms, key, connection.id());
                self.push_deadline(deadline);
            }
        }
        self.arm(key, now_ms);
        Ok(key)
    }
}
