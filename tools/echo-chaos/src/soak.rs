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
//! `WouldBlock` whenever its role lets it read. What each role does on each
//! event is in `roles.rs`; this file owns the loop, the timers, the
//! schedule and the sampling.

mod roles;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use echod_kit::SplitMix64;
use echod_kit::process::Sample;
use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::client::{ABUSES, Client, Role};
use crate::options::Options;
use crate::report::{Ends, Row, Tally, status_line};
use crate::target::Target;
use roles::{is_abuse, role_name};

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
    rng: SplitMix64,
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
            rng: SplitMix64::new(options.seed),
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
        let lifetime = lifetime.min(Duration::from_secs(365 * 24 * 3600));
        let mut client = match Client::connect(role, self.target.addr, now, lifetime) {
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
}

impl Soak<'_> {
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
        eprintln!("{}", status_line(&row, &self.tally, self.clients.len()));
        self.rows.push(row);
    }
}
