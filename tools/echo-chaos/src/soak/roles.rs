//! How each kind of client reacts: to its connection completing, to a
//! writable or readable socket, to what it reads, to the connection ending,
//! and to its own timer. `soak.rs` calls these; they act through the same
//! `Soak`, so that every role's moves are in one place.
//!
//! A role that stops reading before `WouldBlock` (a slow reader over its
//! allowance, a half-closer still writing, a client that never reads) gets
//! no new edge for what is already waiting, so each resumes reading on its
//! own initiative: on its timer, or right after its half-close.

use std::io;
use std::time::{Duration, Instant};

use crate::client::{ABUSES, Received, Role};

use super::{EPISODE_LIFETIME, Soak};

/// An abuser's greeting: once it is echoed, echod has accepted the
/// connection, and from then on every echo the protocol promises is owed.
const GREETING: &[u8] = b"hello, I am about to misbehave\r\n";
/// Churn and waiter lines.
const PROBE: &[u8] = b"probe\r\n";
/// A slow reader reads this much per tick.
const SLOW_READ_BYTES: usize = 4096;
const SLOW_TICK: Duration = Duration::from_millis(50);
/// Bytes a slow reader, a never-reader, a resetter and a half-closer send.
const SLOW_BURST_BYTES: usize = 256 << 10;
const NEVER_READ_BYTES: usize = 4 << 20;
const RESET_BURST_BYTES: usize = 512 << 10;
const HALF_CLOSE_BYTES: usize = 2 << 20;
/// How long a partial-line holder sits on its half line.
const HOLD: Duration = Duration::from_secs(2);
/// Pace of a byte-at-a-time sender, and the lines it sends per episode.
const BYTE_INTERVAL: Duration = Duration::from_millis(10);
const BYTE_LINES: u32 = 3;

impl Soak<'_> {
    /// The handshake finished: each role makes its opening move.
    pub(super) fn on_connected(&mut self, key: usize, now: Instant) {
        let role = self.clients[key].1.role;
        match role {
            Role::Steady => {
                // Spread the first lines over one interval, not all at once.
                let interval = self.interval();
                let first = now + interval.mul_f64(self.rng.unit());
                self.schedule_client(key, first);
            }
            Role::Probe | Role::Waiter => self.clients[key].1.send_line(PROBE, false),
            _ => self.clients[key].1.send_line(GREETING, false),
        }
    }

    /// Writes what is queued, then lets the role follow up.
    pub(super) fn write(&mut self, key: usize, now: Instant) {
        let client = &mut self.clients[key].1;
        if let Err(err) = client.flush(now) {
            return self.failed(key, err, now);
        }
        let client = &mut self.clients[key].1;
        let done_writing = client.unwritten() == 0 && !client.write_closed;
        match client.role {
            Role::Steady if self.ending && done_writing => {
                if let Err(err) = client.half_close() {
                    self.failed(key, err, now);
                }
            }
            Role::HalfCloser if client.step == 1 && done_writing => {
                // Every byte is written; megabytes of echoes are in flight.
                // Those already here raised their edge while unread, so read
                // now rather than wait for the next.
                client.step = 2;
                match client.half_close() {
                    Ok(()) => self.read(key, now),
                    Err(err) => self.failed(key, err, now),
                }
            }
            // Keep pushing, up to the cap, until the socket is full: a
            // write that empties the queue leaves the socket writable, and
            // no new edge will say so.
            Role::NeverReader if client.step == 1 && done_writing => {
                let line = self.filler_line(128);
                let client = &mut self.clients[key].1;
                while client.unwritten() == 0 && client.owed() < NEVER_READ_BYTES {
                    for _ in 0..64 {
                        client.send_line(&line, false);
                    }
                    if let Err(err) = client.flush(now) {
                        return self.failed(key, err, now);
                    }
                }
            }
            _ => {}
        }
    }

    /// Reads what the role lets it read, and reacts to what came.
    pub(super) fn read(&mut self, key: usize, now: Instant) {
        let client = &mut self.clients[key].1;
        let limit = match client.role {
            Role::NeverReader if client.greeted => return,
            Role::HalfCloser if client.greeted && client.step < 2 => return,
            Role::SlowReader if client.greeted => client.read_allowance,
            _ => usize::MAX,
        };
        let received = client.read_some(limit, &mut self.chunk, now);
        if let Role::SlowReader = client.role {
            client.read_allowance = client.read_allowance.saturating_sub(received.bytes);
        }
        self.on_received(key, received, now);
    }

    pub(super) fn on_received(&mut self, key: usize, received: Received, now: Instant) {
        self.tally.corrupt_bytes += received.corrupt as u64;
        let client = &mut self.clients[key].1;
        let role = client.role;
        if role == Role::Steady {
            for latency in &received.latencies {
                self.tally.record_latency(*latency);
            }
        }
        if received.eof || received.error.is_some() {
            return self.on_closed(key, received.error, now);
        }
        let client = &mut self.clients[key].1;
        let served = client.owed() == 0;
        match role {
            Role::Probe if served => {
                self.tally.probes_served += 1;
                // Health checkers leave both ways: with a FIN, or a reset.
                if self.rng.below(2) == 0 {
                    client.set_reset_on_close();
                }
                self.finish(key, now);
            }
            Role::Waiter if served => {
                self.tally.waiters_served += 1;
                match self.exhaustion.restored_at {
                    Some(restored) => {
                        let waited = now.saturating_duration_since(restored);
                        let longest = self.tally.recovery.map_or(waited, |r| r.max(waited));
                        self.tally.recovery = Some(longest);
                    }
                    None => self.tally.waiters_early += 1,
                }
                self.finish(key, now);
            }
            _ if is_abuse(role) && !client.greeted && served && client.received_total() > 0 => {
                client.greeted = true;
                client.step = 1;
                self.begin_abuse(key, now);
            }
            Role::PartialHolder if client.step == 3 && served => self.finish(key, now),
            Role::ByteAtATime if client.step == 2 && served => {
                if client.created.elapsed() > EPISODE_LIFETIME / 2
                    || self.rng.below(BYTE_LINES as u64) == 0
                {
                    self.finish(key, now);
                } else {
                    client.step = 1;
                    self.schedule_client(key, now + BYTE_INTERVAL);
                }
            }
            _ => {}
        }
    }

    /// echod ended the connection (end of file), or it failed.
    pub(super) fn on_closed(&mut self, key: usize, error: Option<io::Error>, now: Instant) {
        let client = &self.clients[key].1;
        let owed = client.owed();
        let why = error.map_or("end of file".to_owned(), |err| err.to_string());
        match client.role {
            Role::Steady if self.ending && owed == 0 => self.tally.steady_finished += 1,
            Role::Steady => self.tally.record_loss(format!(
                "a well-behaved client was cut off ({why}) with {owed} bytes owed"
            )),
            // Closed before it was served: rejected at max-connections, or
            // cut while it waited in the backlog.
            Role::Probe => self.tally.rejected += 1,
            Role::Waiter => self.tally.waiters_rejected += 1,
            _ if !client.greeted => self.tally.rejected += 1,
            // The protocol promises these every echo, then end of file.
            Role::HalfCloser | Role::OverLong | Role::PartialHolder | Role::ByteAtATime
                if owed > 0 =>
            {
                self.tally.record_loss(format!(
                    "{} (step {}) ended by {why} with {owed} bytes owed",
                    role_name(client.role),
                    client.step
                ))
            }
            _ => {}
        }
        self.finish(key, now);
    }

    /// The client's own timer: its deadline, or the next move of its role.
    pub(super) fn on_timer(&mut self, key: usize, now: Instant) {
        let client = &mut self.clients[key].1;
        if now >= client.deadline {
            let owed = client.owed();
            match client.role {
                Role::Waiter => self.tally.waiters_unserved += 1,
                Role::Probe => {}
                Role::PartialHolder | Role::ByteAtATime | Role::HalfCloser | Role::OverLong
                    if client.greeted && owed > 0 =>
                {
                    self.tally.record_loss(format!(
                        "{} (step {}) still owed {owed} bytes after {EPISODE_LIFETIME:?}",
                        role_name(client.role),
                        client.step
                    ));
                }
                _ => {}
            }
            return self.finish(key, now);
        }
        match client.role {
            Role::Steady if !self.ending => {
                let lines = if self.rng.below(10) == 0 { 3 } else { 1 };
                for _ in 0..lines {
                    let line = self.steady_line(key);
                    self.clients[key].1.send_line(&line, true);
                }
                self.write(key, now);
                if self.clients.contains(key) {
                    let next = now + self.interval().mul_f64(0.5 + self.rng.unit());
                    self.schedule_client(key, next);
                }
            }
            Role::SlowReader => {
                client.read_allowance = SLOW_READ_BYTES;
                self.read(key, now);
                if self.clients.contains(key) {
                    self.schedule_client(key, now + SLOW_TICK);
                }
            }
            Role::NeverReader | Role::HalfCloser => {}
            Role::Resetter => {
                client.set_reset_on_close();
                self.tally.resets += 1;
                self.finish(key, now);
            }
            Role::PartialHolder if client.step == 2 => {
                // Finish the held line: now it is owed, all of it.
                let held = std::mem::take(&mut client.held);
                client.owe(&held);
                client.send_line(b"\r\n", false);
                client.step = 3;
                self.write(key, now);
            }
            Role::ByteAtATime if client.step == 1 => {
                let line = b"one byte at a time, 32 bytes.\r\n";
                let sent = client.progress;
                client.send_unowed(&line[sent..=sent]);
                client.progress += 1;
                if client.progress == line.len() {
                    client.owe(line);
                    client.progress = 0;
                    client.step = 2;
                } else {
                    self.schedule_client(key, now + BYTE_INTERVAL);
                }
                self.write(key, now);
            }
            _ => {}
        }
    }

    /// The greeting came back: the abuse proper begins.
    pub(super) fn begin_abuse(&mut self, key: usize, now: Instant) {
        let role = self.clients[key].1.role;
        match role {
            Role::SlowReader => {
                self.send_burst(key, SLOW_BURST_BYTES);
                self.shorten_episode(key, now, Duration::from_secs(3));
                self.clients[key].1.read_allowance = SLOW_READ_BYTES;
                self.schedule_client(key, now + SLOW_TICK);
            }
            Role::NeverReader => {
                self.send_burst(key, 64 * 128);
                self.shorten_episode(key, now, Duration::from_secs(3));
            }
            Role::PartialHolder => {
                let room = self.options.max_line_bytes.saturating_sub(2).clamp(1, 1000);
                let len = 1 + self.rng.below(room as u64) as usize;
                let mut partial = self.filler_line(len);
                partial.truncate(len);
                let client = &mut self.clients[key].1;
                client.send_unowed(&partial);
                client.held = partial;
                client.step = 2;
                self.schedule_client(key, now + HOLD);
            }
            Role::ByteAtATime => self.schedule_client(key, now + BYTE_INTERVAL),
            Role::Resetter => {
                self.send_burst(key, RESET_BURST_BYTES);
                let after = Duration::from_millis(20 + self.rng.below(280));
                self.schedule_client(key, now + after);
            }
            Role::HalfCloser => {
                self.send_burst(key, HALF_CLOSE_BYTES);
                // An unfinished last line: never echoed, by the protocol.
                self.clients[key].1.send_unowed(b"a last line with no end");
            }
            Role::OverLong => {
                for _ in 0..3 {
                    let line = self.filler_line(40);
                    self.clients[key].1.send_line(&line, false);
                }
                let client = &mut self.clients[key].1;
                client.send_unowed(&vec![b'x'; self.options.max_line_bytes + 1]);
                client.send_unowed(b"and more after it\r\n");
            }
            Role::Steady | Role::Probe | Role::Waiter => {}
        }
        self.write(key, now);
    }

    /// Queues `bytes` of lines, owed back but not timed.
    pub(super) fn send_burst(&mut self, key: usize, bytes: usize) {
        let line = self.filler_line(126);
        let client = &mut self.clients[key].1;
        for _ in 0..bytes.div_ceil(line.len()) {
            client.send_line(&line, false);
        }
    }

    pub(super) fn shorten_episode(&mut self, key: usize, now: Instant, episode: Duration) {
        self.clients[key].1.deadline = now + episode;
        self.schedule_client(key, now + episode);
    }

    /// Time between a well-behaved client's lines, on average.
    pub(super) fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.options.rate)
    }

    /// A well-behaved line: who sent it, its number, and random filler, so
    /// that a misplaced or repeated echo shows.
    pub(super) fn steady_line(&mut self, key: usize) -> Vec<u8> {
        let client = &mut self.clients[key].1;
        client.progress += 1;
        let mut line = format!("steady {key} line {} ", client.progress).into_bytes();
        let filler = self.rng.below(100) as usize;
        line.extend((0..filler).map(|_| b'a' + self.rng.below(26) as u8));
        line.extend_from_slice(b"\r\n");
        line
    }

    /// `len` random letters and CR LF.
    pub(super) fn filler_line(&mut self, len: usize) -> Vec<u8> {
        let mut line: Vec<u8> = (0..len).map(|_| b'a' + self.rng.below(26) as u8).collect();
        line.extend_from_slice(b"\r\n");
        line
    }
}

pub(super) fn is_abuse(role: Role) -> bool {
    ABUSES.contains(&role)
}

/// The name reports use for a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Steady => "well-behaved",
        Role::SlowReader => "slow reader",
        Role::NeverReader => "never reads",
        Role::PartialHolder => "partial line",
        Role::ByteAtATime => "byte at a time",
        Role::Resetter => "reset mid-stream",
        Role::HalfCloser => "half-close with MiB pending",
        Role::OverLong => "over-long line",
        Role::Probe => "churn probe",
        Role::Waiter => "waiter",
    }
}
