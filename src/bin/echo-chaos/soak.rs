//! The soak: one `mio` event loop driving every client, a timer queue, and
//! the schedule of the run.
//!
//! The schedule, for a run of `--duration` D:
//!
//! 1. All well-behaved clients connect and start sending; the abusers start
//!    their first episodes.
//! 2. From 0.1 D, a churn burst of `--churn` probes every 2 s, on top of
//!    everything else open, so that echod runs into `max-connections`.
//! 3. At 0.4 D, for `--exhaust` seconds, echod's descriptor limit is lowered
//!    so that no new descriptor fits, and waiters connect; when the limit
//!    comes back, each waiter must be served.
//! 4. At D, the abusers leave; each well-behaved client half-closes and
//!    must get every echo it is owed, then end of file.
//!
//! Every second: one status line on standard error, from echod's `/proc`
//! figures and the latencies of the second.
//!
//! Readiness is edge-triggered, as in echod itself: a client reads until
//! `WouldBlock` whenever its role lets it read, and a slow reader that stops
//! early resumes on its own timer, not on an event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::client::{ABUSES, Client, Received, Role};
use crate::options::Options;
use crate::report::{Ends, Row, Tally, status_line};
use crate::rng::Rng;
use crate::target::{Sample, Target};

/// An abuser's greeting: once it is echoed, echod has accepted the
/// connection, and from then on every echo the protocol promises is owed.
const GREETING: &[u8] = b"hello, I am about to misbehave\r\n";
/// Churn and waiter lines.
const PROBE: &[u8] = b"probe\r\n";
/// Time between churn bursts.
const CHURN_INTERVAL: Duration = Duration::from_secs(2);
/// The longest an abusive episode, probe or waiter may last.
const EPISODE_LIFETIME: Duration = Duration::from_secs(15);
/// After the run, how long the well-behaved clients have to get their last
/// echoes, and echod has to close everything.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections made while echod is out of descriptors.
const WAITERS: usize = 20;
/// A slow reader reads this much per tick.
const SLOW_READ_BYTES: usize = 4096;
const SLOW_TICK: Duration = Duration::from_millis(50);
/// Bytes a slow reader, a never-reader, a resetter and a half-closer send.
const SLOW_BURST_BYTES: usize = 256 << 10;
const NEVER_READ_BYTES: usize = 4 << 20;
const RESET_BURST_BYTES: usize = 512 << 10;
const HALF_CLOSE_BYTES: usize = 2 << 20;
/// A half-closer's receive buffer holds every echo without reading, so that
/// megabytes are still in flight when it half-closes.
const HALF_CLOSE_RECEIVE_BUFFER: usize = 8 << 20;
/// How long a partial-line holder sits on its half line.
const HOLD: Duration = Duration::from_secs(2);
/// Pace of a byte-at-a-time sender, and the lines it sends per episode.
const BYTE_INTERVAL: Duration = Duration::from_millis(10);
const BYTE_LINES: u32 = 3;

/// Something due at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Client `key` (if it is still client `id`) acts on its own.
    Client { key: usize, id: u64 },
    /// A new abuser starts.
    SpawnAbuser,
}

/// The run in progress.
pub struct Soak<'a> {
    options: &'a Options,
    target: &'a mut Target,
    poll: Poll,
    clients: Slab<(u64, Client)>,
    next_id: u64,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    rng: Rng,
    tally: Tally,
    chunk: Vec<u8>,
    started: Instant,
    ending: bool,
    exhaustion: Exhaustion,
    rows: Vec<Row>,
    /// CPU time at the previous sample, for per-second shares.
    last_cpu: Option<(Instant, Duration)>,
    lines_at_last_row: u64,
    last_row: Option<Instant>,
    /// echod's descriptors before any client connected.
    baseline_descriptors: Option<usize>,
}

/// The descriptor-exhaustion period.
#[derive(Debug, Default)]
struct Exhaustion {
    start: Option<Instant>,
    end: Option<Instant>,
    active: bool,
    restored_at: Option<Instant>,
}

impl<'a> Soak<'a> {
    /// Sets up the event loop; nothing connects yet.
    ///
    /// # Errors
    ///
    /// If the poll instance cannot be created.
    pub fn new(options: &'a Options, target: &'a mut Target) -> io::Result<Soak<'a>> {
        Ok(Soak {
            options,
            target,
            poll: Poll::new()?,
            clients: Slab::new(),
            next_id: 0,
            timers: BinaryHeap::new(),
            rng: Rng::new(options.seed),
            tally: Tally::new(),
            chunk: vec![0; 64 * 1024],
            started: Instant::now(),
            ending: false,
            exhaustion: Exhaustion::default(),
            rows: Vec::new(),
            last_cpu: None,
            lines_at_last_row: 0,
            last_row: None,
            baseline_descriptors: None,
        })
    }

    /// Runs the schedule to its end, then waits for echod to settle.
    /// Returns the tally, the per-second rows and echod's state at both ends.
    pub fn run(mut self) -> (Tally, Vec<Row>, Ends) {
        let baseline = self.target.sample();
        self.baseline_descriptors = baseline.map(|sample| sample.descriptors);
        self.started = Instant::now();
        let end = self.started + self.options.duration;
        let mut next_row = self.started + Duration::from_secs(1);
        let mut next_churn = self.started + self.options.duration / 10;
        if !self.options.exhaust.is_zero() && self.target.pid.is_some() {
            let start = self.started + self.options.duration * 2 / 5;
            self.exhaustion.start = Some(start);
            self.exhaustion.end = Some(start + self.options.exhaust);
        }
        self.last_cpu = baseline.map(|sample| (self.started, sample.cpu));
        self.last_row = Some(self.started);

        for _ in 0..self.options.conns {
            self.open(Role::Steady, Duration::MAX);
        }
        for _ in 0..self.options.abusers {
            self.spawn_abuser();
        }

        let mut events = Events::with_capacity(4096);
        let mut drain_deadline = None;
        loop {
            let now = Instant::now();
            if !self.ending && now >= end {
                self.begin_end(now);
                drain_deadline = Some(now + DRAIN_TIMEOUT);
            }
            if self.ending && (self.clients.is_empty() || drain_deadline.is_some_and(|d| now >= d))
            {
                break;
            }
            let mut wake = next_row.min(if self.ending { next_row } else { end });
            if let Some(Reverse((at, _))) = self.timers.peek() {
                wake = wake.min(*at);
            }
            if !self.ending {
                wake = wake.min(next_churn);
                for at in [self.exhaustion.start, self.exhaustion.end]
                    .into_iter()
                    .flatten()
                {
                    wake = wake.min(at);
                }
            }
            if let Some(deadline) = drain_deadline {
                wake = wake.min(deadline);
            }
            if let Err(err) = self
                .poll
                .poll(&mut events, Some(wake.saturating_duration_since(now)))
            {
                if err.kind() != io::ErrorKind::Interrupted {
                    self.tally.record_loss(format!("poll failed: {err}"));
                    break;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                self.on_event(event, now);
            }
            self.fire_timers(now);
            if !self.ending {
                if now >= next_churn {
                    next_churn = now + CHURN_INTERVAL;
                    for _ in 0..self.options.churn {
                        self.tally.probes += 1;
                        self.open(Role::Probe, EPISODE_LIFETIME);
                    }
                }
                self.schedule_exhaustion(now);
            }
            if now >= next_row {
                // From now, not from the last due time: a late loop shows
                // as a longer second, not as a burst of rows.
                next_row = now + Duration::from_secs(1);
                self.row(now);
            }
        }

        // Whatever is left did not finish in time.
        let left: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        for key in left {
            let (_, client) = self.clients.remove(key);
            if client.role == Role::Steady {
                self.tally.record_loss(format!(
                    "a well-behaved client had no end of file {DRAIN_TIMEOUT:?} after half-closing ({} bytes still owed)",
                    client.owed()
                ));
            }
        }
        if let Err(err) = self.target.restore_descriptors() {
            eprintln!("echo-chaos: cannot restore echod's descriptor limit: {err}");
        }
        let (settled, settle_time) = self.settle(baseline);
        let ends = Ends {
            baseline,
            settled,
            settle_time,
        };
        (self.tally, self.rows, ends)
    }

    /// Waits for echod's descriptors to come back to `baseline`, sampling
    /// every 100 ms, for at most `SETTLE_TIMEOUT`.
    fn settle(&mut self, baseline: Option<Sample>) -> (Option<Sample>, Option<Duration>) {
        let baseline = match baseline {
            Some(baseline) => baseline,
            None => return (None, None),
        };
        let started = Instant::now();
        loop {
            let sample = self.target.sample();
            match sample {
                Some(now) if now.descriptors <= baseline.descriptors => {
                    return (Some(now), Some(started.elapsed()));
                }
                None => return (None, None),
                Some(_) if started.elapsed() >= SETTLE_TIMEOUT => return (sample, None),
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Opens a connection for `role`; a failure to even start it is
    /// counted, and an abuser tries again later.
    fn open(&mut self, role: Role, lifetime: Duration) {
        let now = Instant::now();
        let receive_buffer = (role == Role::HalfCloser).then_some(HALF_CLOSE_RECEIVE_BUFFER);
        let lifetime = lifetime.min(Duration::from_secs(365 * 24 * 3600));
        let mut client =
            match Client::connect(role, self.target.addr, receive_buffer, now, lifetime) {
                Ok(client) => client,
                Err(_) => {
                    self.tally.connect_failures += 1;
                    if is_abuse(role) && !self.ending {
                        self.schedule(now + Duration::from_millis(100), Timer::SpawnAbuser);
                    }
                    return;
                }
            };
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if self
            .poll
            .registry()
            .register(
                &mut client.stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.tally.connect_failures += 1;
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = client.deadline;
        entry.insert((id, client));
        if lifetime < Duration::MAX / 2 {
            self.schedule(deadline, Timer::Client { key, id });
        }
    }

    fn spawn_abuser(&mut self) {
        let role = ABUSES[self.rng.below(ABUSES.len() as u64) as usize];
        self.open(role, EPISODE_LIFETIME);
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    fn schedule_client(&mut self, key: usize, at: Instant) {
        let id = self.clients[key].0;
        self.schedule(at, Timer::Client { key, id });
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            match timer {
                Timer::SpawnAbuser if !self.ending => self.spawn_abuser(),
                Timer::SpawnAbuser => {}
                Timer::Client { key, id } => {
                    if self.clients.get(key).is_some_and(|(cid, _)| *cid == id) {
                        self.on_timer(key, now);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: &Event, now: Instant) {
        let key = event.token().0;
        let Some((_, client)) = self.clients.get_mut(key) else {
            return;
        };
        if !client.connected {
            match client.check_connected() {
                Ok(true) => self.on_connected(key, now),
                Ok(false) => return,
                Err(_) => {
                    self.tally.connect_failures += 1;
                    return self.finish(key, now);
                }
            }
        }
        if event.is_writable() || event.is_error() {
            self.write(key, now);
        }
        if self.clients.contains(key) {
            self.read(key, now);
        }
    }

    /// The handshake finished: each role makes its opening move.
    fn on_connected(&mut self, key: usize, now: Instant) {
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
    fn write(&mut self, key: usize, now: Instant) {
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
            // Keep pushing, up to the cap, whenever there is room.
            Role::NeverReader
                if client.step == 1 && done_writing && client.owed() < NEVER_READ_BYTES =>
            {
                let line = self.filler_line(128);
                let client = &mut self.clients[key].1;
                for _ in 0..64 {
                    client.send_line(&line, false);
                }
                if let Err(err) = client.flush(now) {
                    self.failed(key, err, now);
                }
            }
            _ => {}
        }
    }

    /// Reads what the role lets it read, and reacts to what came.
    fn read(&mut self, key: usize, now: Instant) {
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

    fn on_received(&mut self, key: usize, received: Received, now: Instant) {
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
    fn on_closed(&mut self, key: usize, error: Option<io::Error>, now: Instant) {
        let client = &self.clients[key].1;
        let owed = client.owed();
        let why = error.map_or("end of file".to_owned(), |err| err.to_string());
        match client.role {
            Role::Steady if self.ending && owed == 0 => self.tally.steady_finished += 1,
            Role::Steady => self.tally.record_loss(format!(
                "a well-behaved client was cut off ({why}) with {owed} bytes owed"
            )),
            Role::Probe | Role::Waiter => self.tally.rejected += 1,
            role if !client.greeted => {
                let _ = role;
                self.tally.rejected += 1;
            }
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
    fn on_timer(&mut self, key: usize, now: Instant) {
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
}

impl Soak<'_> {
    /// The greeting came back: the abuse proper begins.
    fn begin_abuse(&mut self, key: usize, now: Instant) {
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
    fn send_burst(&mut self, key: usize, bytes: usize) {
        let line = self.filler_line(126);
        let client = &mut self.clients[key].1;
        for _ in 0..bytes.div_ceil(line.len()) {
            client.send_line(&line, false);
        }
    }

    fn shorten_episode(&mut self, key: usize, now: Instant, episode: Duration) {
        self.clients[key].1.deadline = now + episode;
        self.schedule_client(key, now + episode);
    }

    /// A socket error on `key`: handled as echod ending the connection.
    fn failed(&mut self, key: usize, err: io::Error, now: Instant) {
        if self.clients.contains(key) {
            self.on_closed(key, Some(err), now);
        }
    }

    /// Drops client `key` (closing its socket); an abuser is replaced.
    fn finish(&mut self, key: usize, now: Instant) {
        let (_, client) = self.clients.remove(key);
        if !is_abuse(client.role) {
            return;
        }
        if client.greeted {
            self.tally.record_episode(role_name(client.role));
        }
        if !self.ending {
            // Rejected or failed: back off a little rather than hammer.
            let delay = if client.greeted {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            self.schedule(now + delay, Timer::SpawnAbuser);
        }
    }

    /// The run is over: abusers, probes and waiters leave; well-behaved
    /// clients half-close once their last line is written.
    fn begin_end(&mut self, now: Instant) {
        self.ending = true;
        if self.exhaustion.active {
            self.exhaustion.active = false;
            self.exhaustion.restored_at = Some(now);
            if let Err(err) = self.target.restore_descriptors() {
                eprintln!("echo-chaos: cannot restore echod's descriptor limit: {err}");
            }
        }
        let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            let client = &self.clients[key].1;
            if client.role != Role::Steady {
                if client.role == Role::Waiter {
                    self.tally.waiters_unserved += 1;
                }
                self.finish(key, now);
            } else if client.connected {
                self.write(key, now);
            } else {
                self.tally
                    .record_loss("a well-behaved client never connected".into());
                self.finish(key, now);
            }
        }
    }

    /// Starts and ends the descriptor-exhaustion period when due.
    fn schedule_exhaustion(&mut self, now: Instant) {
        let due = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        if due(self.exhaustion.start) && !self.exhaustion.active {
            self.exhaustion.start = None;
            // The limit bounds descriptor *numbers*, and a new descriptor
            // takes the lowest free one: a limit just below the count open
            // would still admit a connection whenever a low-numbered one
            // closed. At the count echod had before any client, no number
            // is free below the limit, so nothing new is accepted until the
            // limit comes back, while every open connection goes on.
            let limited = self
                .baseline_descriptors
                .map(|base| self.target.limit_descriptors(base as u64));
            match limited {
                Some(Ok(())) => {
                    self.exhaustion.active = true;
                    let lifetime = self.options.exhaust + EPISODE_LIFETIME;
                    for _ in 0..WAITERS {
                        self.open(Role::Waiter, lifetime);
                    }
                }
                Some(Err(err)) => {
                    eprintln!("echo-chaos: cannot limit echod's descriptors, no exhaustion: {err}");
                    self.exhaustion.end = None;
                }
                None => self.exhaustion.end = None,
            }
        }
        if self.exhaustion.active && due(self.exhaustion.end) {
            self.exhaustion.active = false;
            self.exhaustion.end = None;
            self.exhaustion.restored_at = Some(now);
            if let Err(err) = self.target.restore_descriptors() {
                eprintln!("echo-chaos: cannot restore echod's descriptor limit: {err}");
            }
        }
    }

    /// Samples echod and prints the second's status line.
    fn row(&mut self, now: Instant) {
        let sample = self.target.sample();
        let cpu_share = match (sample, self.last_cpu) {
            (Some(sample), Some((at, cpu))) => {
                let wall = now.saturating_duration_since(at).as_secs_f64();
                (wall > 0.0).then(|| sample.cpu.saturating_sub(cpu).as_secs_f64() / wall)
            }
            _ => None,
        };
        if let Some(sample) = sample {
            self.last_cpu = Some((now, sample.cpu));
        }
        let wall = self
            .last_row
            .map_or(1.0, |at| now.saturating_duration_since(at).as_secs_f64())
            .max(1e-3);
        self.last_row = Some(now);
        let row = Row {
            second: now
                .saturating_duration_since(self.started)
                .as_secs_f64()
                .round() as u64,
            sample,
            cpu_share,
            exhausted: self.exhaustion.active,
            lines_per_second: (self.tally.steady_lines - self.lines_at_last_row) as f64 / wall,
            p99: Duration::from_micros(self.tally.latency_second.value_at_quantile(0.99)),
        };
        self.lines_at_last_row = self.tally.steady_lines;
        self.tally.latency_second.reset();
        eprintln!(
            "{}",
            status_line(&row, &self.tally, self.clients.len(), self.options)
        );
        self.rows.push(row);
    }

    /// Time between a well-behaved client's lines, on average.
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.options.rate)
    }

    /// A well-behaved line: who sent it, its number, and random filler, so
    /// that a misplaced or repeated echo shows.
    fn steady_line(&mut self, key: usize) -> Vec<u8> {
        let client = &mut self.clients[key].1;
        client.progress += 1;
        let mut line = format!("steady {key} line {} ", client.progress).into_bytes();
        let filler = self.rng.below(100) as usize;
        line.extend((0..filler).map(|_| b'a' + self.rng.below(26) as u8));
        line.extend_from_slice(b"\r\n");
        line
    }

    /// `len` random letters and CR LF.
    fn filler_line(&mut self, len: usize) -> Vec<u8> {
        let mut line: Vec<u8> = (0..len).map(|_| b'a' + self.rng.below(26) as u8).collect();
        line.extend_from_slice(b"\r\n");
        line
    }
}

fn is_abuse(role: Role) -> bool {
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
