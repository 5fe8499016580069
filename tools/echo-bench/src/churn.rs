//! Connection churn (`--churn K`): one thread's event loop of short-lived
//! connections. Each is a *cycle*: connect, echo K lines (with up to
//! `--pipeline` in flight), send FIN, read the server's FIN, close. This is
//! the load of a balancer's health checks and of clients that connect for
//! one request.
//!
//! Closed loop: the thread keeps its share of `--conns` cycles in flight and
//! starts a new one as soon as one ends. Open loop (`--rate`): cycles are
//! due on a fixed schedule, at most `--conns` in flight; a cycle due while
//! every slot is busy starts late, and its connect and cycle latencies count
//! from when it was *due*, so a server that accepts slowly cannot hide it
//! (no coordinated omission).
//!
//! The client closes first, so TIME_WAIT lands on the client's side of each
//! connection. To an IPv4 loopback target every cycle binds the next of
//! `SOURCES` source addresses with `IP_BIND_ADDRESS_NO_PORT`, so that the
//! kernel picks the port at `connect`, knowing the whole 4-tuple, and may
//! reuse a port in TIME_WAIT (`tcp_tw_reuse`, on for loopback by default):
//! the ephemeral range is then not what limits the cycle rate.
//!
//! A failed cycle is counted and its slot rests until the next housekeeping
//! tick (closed loop), so a server that refuses every connection costs a
//! bounded number of attempts per tick rather than a spinning client.
//!
//! Not here: the lines and their checking (`lines`), the long-lived
//! connections of the other loads (`client`), the summary (`report`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, OnceLock, mpsc};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

use crate::args::{Length, Options};
use crate::client::{Kind, Milestone, Progress, connected};
use crate::lines::{Checker, Lines};
use crate::report::{MAX_EXAMPLES, Report};

/// How often progress counters are published, timeouts looked for and
/// rested slots returned.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Bytes asked for per read.
const READ_BYTES: usize = 64 * 1024;
/// Source addresses a churn run to an IPv4 loopback target takes in turn:
/// 127.0.0.1 to 127.0.0.32.
pub const SOURCES: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    /// Our FIN is sent, at this time (ns); waiting for the server's.
    Finishing(u64),
}

struct Cycle {
    /// The run-wide cycle number: it seeds the cycle's lines and picks its
    /// source address.
    id: u64,
    stream: TcpStream,
    phase: Phase,
    /// When the cycle began (closed loop) or was due (open loop), in ns:
    /// the start of its connect and cycle latencies.
    began: u64,
    /// When its connect was actually started, in ns: the start of its
    /// connect timeout.
    opened: u64,
    out: Vec<u8>,
    written: usize,
    sent: u64,
    checker: Checker,
    /// When each line in flight was sent.
    sent_at: VecDeque<u64>,
}

/// Runs thread `index`'s share of the churn and returns what it measured.
pub fn run(
    options: Arc<Options>,
    index: usize,
    barrier: Arc<Barrier>,
    progress: Arc<Progress>,
    load_start: &OnceLock<Instant>,
    milestones: &mpsc::Sender<Milestone>,
) -> io::Result<Report> {
    let churn = Churn::new(options, index, progress);
    // Every thread reaches the barrier, even one that failed to start.
    barrier.wait();
    let mut churn = churn?;
    load_start.get_or_init(Instant::now);
    let _ = milestones.send(Milestone::LoadStarted);
    churn.load()?;
    Ok(churn.report)
}

struct Churn {
    options: Arc<Options>,
    lines_per_cycle: u64,
    /// This thread's number and the number of threads: cycle `seq` of this
    /// thread is cycle `seq * threads + index` of the run.
    index: usize,
    threads: usize,
    /// Cycles this thread keeps in flight at most.
    capacity: usize,
    /// Cycles this thread may start in all (`--cycles`), if bounded.
    budget: Option<u64>,
    started: u64,
    slots: Vec<Option<Cycle>>,
    free: Vec<usize>,
    in_flight: usize,
    /// Slots resting after a failure, returned at the next housekeeping.
    resting: usize,
    poll: Poll,
    events: Events,
    lines: Lines,
    read_buf: Vec<u8>,
    line_scratch: Vec<u8>,
    epoch: Instant,
    measuring: bool,
    sending: bool,
    /// Open loop: when the next cycle is due (ns), and the time between two
    /// of this thread's.
    next_due: u64,
    interval: u64,
    last_done: u64,
    unpublished_lines: u64,
    unpublished_cycles: u64,
    published_up: usize,
    progress: Arc<Progress>,
    report: Report,
}

impl Churn {
    fn new(options: Arc<Options>, index: usize, progress: Arc<Progress>) -> io::Result<Churn> {
        let threads = options.threads;
        let share = |n: u64| n / threads as u64 + u64::from((index as u64) < n % threads as u64);
        let budget = match options.length {
            Length::Cycles(n) => Some(share(n)),
            Length::Duration(_) | Length::LinesPerConn(_) => None,
        };
        // Each thread's schedule is the run's thinned out, offset by its
        // place so the threads' cycles interleave evenly.
        let interval = options
            .rate
            .map_or(0, |rate| (threads as f64 / rate * 1e9).max(1.0) as u64);
        Ok(Churn {
            lines_per_cycle: options.churn.unwrap_or(1),
            index,
            threads,
            capacity: share(options.conns as u64) as usize,
            budget,
            started: 0,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            resting: 0,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            lines: Lines::new(options.framing, options.line_bytes),
            read_buf: vec![0; READ_BYTES],
            line_scratch: Vec::new(),
            epoch: Instant::now(),
            measuring: false,
            sending: false,
            next_due: 0,
            interval,
            last_done: 0,
            unpublished_lines: 0,
            unpublished_cycles: 0,
            published_up: 0,
            progress,
            report: Report::new().map_err(io::Error::other)?,
            options,
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn budget_left(&self) -> bool {
        self.budget.is_none_or(|budget| self.started < budget)
    }

    /// Runs the load, then lets the cycles in flight finish.
    fn load(&mut self) -> io::Result<()> {
        let options = Arc::clone(&self.options);
        let start = self.now();
        let warmup_end = start + options.warmup.as_nanos() as u64;
        let measure_end = match options.length {
            Length::Duration(d) => Some(warmup_end + d.as_nanos() as u64),
            Length::LinesPerConn(_) | Length::Cycles(_) => None,
        };
        let timeout = options.timeout.as_nanos() as u64;
        self.sending = self.budget_left();
        self.measuring = options.warmup.is_zero();
        let mut measure_start = self.measuring.then_some(start);
        self.next_due = start + self.interval / self.threads as u64 * self.index as u64;
        self.last_done = start;
        let mut next_housekeeping = start;
        loop {
            let now = self.now();
            if !self.measuring && self.sending && now >= warmup_end {
                self.measuring = true;
                measure_start = Some(now);
            }
            if let Some(end) = measure_end
                && self.sending
                && now >= end
            {
                // The window closes: cycles in flight finish, unrecorded.
                self.sending = false;
                self.measuring = false;
                self.report.measured = Duration::from_nanos(now - measure_start.unwrap_or(now));
            }
            self.start_cycles(now);
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING.as_nanos() as u64;
                self.resting = 0;
                self.expire(now, timeout);
                self.publish();
            }
            if !self.sending && self.in_flight == 0 {
                break;
            }

            let mut wake = next_housekeeping;
            if let Some(end) = measure_end.filter(|_| self.sending) {
                wake = wake.min(end);
            }
            if options.rate.is_some() && self.sending && self.has_room() {
                wake = wake.min(self.next_due);
            }
            let wait = Duration::from_nanos(wake.saturating_sub(self.now()));
            self.poll.poll(&mut self.events, Some(wait))?;
            let now = self.now();
            let ready: Vec<(usize, bool, bool)> = self
                .events
                .iter()
                .map(|event| {
                    let closed = event.is_read_closed() || event.is_error();
                    (event.token().0, event.is_readable() || closed, closed)
                })
                .collect();
            // New cycles start only after the whole batch, so that no event
            // of a closed connection reaches the one that took its slot.
            for (slot, readable, read_closed) in ready {
                self.on_event(slot, readable, read_closed, now);
            }
        }
        if measure_end.is_none() {
            self.report.measured = Duration::from_nanos(
                self.last_done
                    .saturating_sub(measure_start.unwrap_or(start)),
            );
        }
        self.publish();
        Ok(())
    }

    fn has_room(&self) -> bool {
        self.in_flight + self.resting < self.capacity
    }

    /// Starts the cycles that are due: every free slot in closed loop, the
    /// schedule's in open loop.
    fn start_cycles(&mut self, now: u64) {
        while self.sending && self.has_room() && self.budget_left() {
            let began = if self.options.rate.is_some() {
                if self.next_due > now {
                    break;
                }
                let due = self.next_due;
                self.next_due += self.interval;
                due
            } else {
                now
            };
            self.open_cycle(began, now);
        }
        if !self.budget_left() {
            self.sending = false;
        }
    }

    fn open_cycle(&mut self, began: u64, now: u64) {
        let id = self.started * self.threads as u64 + self.index as u64;
        self.started += 1;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        match self.connect(id, slot) {
            Ok(stream) => {
                self.slots[slot] = Some(Cycle {
                    id,
                    stream,
                    phase: Phase::Connecting,
                    began,
                    opened: now,
                    out: Vec::new(),
                    written: 0,
                    sent: 0,
                    checker: Checker::default(),
                    sent_at: VecDeque::new(),
                });
                self.in_flight += 1;
            }
            Err(err) => {
                self.free.push(slot);
                self.rest();
                self.error(Kind::Connect, id, format!("connect: {err}"));
            }
        }
    }

    /// Starts a non-blocking connect for cycle `id`, registered as `slot`.
    fn connect(&mut self, id: u64, slot: usize) -> io::Result<TcpStream> {
        let target = self.options.addr;
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM.nonblocking(),
            None,
        )?;
        socket.set_tcp_nodelay(true)?;
        if let Some(source) = source_address(target, id) {
            bind_address_no_port(&socket)?;
            socket.bind(&source.into())?;
        }
        match socket.connect(&target.into()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) => return Err(err),
        }
        let mut stream = TcpStream::from_std(socket.into());
        self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    }

    fn on_event(&mut self, slot: usize, readable: bool, read_closed: bool, now: u64) {
        let measuring = self.measuring;
        let Some(cycle) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if cycle.phase == Phase::Connecting {
            match connected(&cycle.stream) {
                Ok(false) => return,
                Ok(true) => {
                    cycle.phase = Phase::Open;
                    self.report.connected += 1;
                    if measuring {
                        let latency = now.saturating_sub(cycle.began).max(1);
                        self.report.connect_latency.saturating_record(latency);
                    }
                }
                Err(err) => {
                    self.fail(slot, Kind::Connect, format!("connect: {err}"));
                    return;
                }
            }
        }
        if readable {
            self.receive(slot, read_closed, now);
        }
        self.refill(slot, now);
        self.flush(slot);
        self.finish_if_done(slot, now);
    }

    /// Reads what the socket holds and checks it against what was sent.
    fn receive(&mut self, slot: usize, read_closed: bool, now: u64) {
        loop {
            let Some(cycle) = self.slots[slot].as_mut() else {
                return;
            };
            let n = match cycle.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    self.on_eof(slot, now);
                    return;
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    let kind = if err.kind() == io::ErrorKind::ConnectionReset {
                        Kind::EarlyClose
                    } else {
                        Kind::Io
                    };
                    self.fail(slot, kind, format!("read: {err}"));
                    return;
                }
            };
            let measuring = self.measuring;
            if measuring {
                self.report.bytes_received += n as u64;
            }
            let (latency, recorded) = (&mut self.report.latency, &mut self.report.lines);
            let sent_at = &mut cycle.sent_at;
            let mut completed = 0;
            let result = cycle.checker.check(
                &self.lines,
                cycle.id,
                cycle.sent,
                &self.read_buf[..n],
                &mut self.line_scratch,
                |_| {
                    completed += 1;
                    let at = sent_at.pop_front().unwrap_or(now);
                    if measuring {
                        latency.saturating_record(now.saturating_sub(at).max(1));
                        *recorded += 1;
                    }
                },
            );
            self.unpublished_lines += completed;
            self.report.all_lines += completed;
            if let Err(m) = result {
                let message = format!(
                    "mismatch in line {} at byte {}: expected {:?}, received {:?}",
                    m.line,
                    m.offset,
                    char::from(m.expected),
                    char::from(m.received)
                );
                self.fail(slot, Kind::Mismatch, message);
                return;
            }
            // A short read proves the queue drained, unless the FIN is in.
            if n < self.read_buf.len() && !read_closed {
                return;
            }
        }
    }

    /// The server closed its side: the cycle's end, or too early.
    fn on_eof(&mut self, slot: usize, now: u64) {
        let Some(cycle) = self.slots[slot].as_ref() else {
            return;
        };
        if matches!(cycle.phase, Phase::Finishing(_)) {
            let began = cycle.began;
            self.close(slot);
            self.report.all_cycles += 1;
            self.unpublished_cycles += 1;
            self.last_done = now;
            if self.measuring {
                self.report.cycles += 1;
                let latency = now.saturating_sub(began).max(1);
                self.report.cycle_latency.saturating_record(latency);
            }
            return;
        }
        let owed = cycle.sent - cycle.checker.lines;
        self.fail(
            slot,
            Kind::EarlyClose,
            format!("server closed the connection with {owed} lines not echoed"),
        );
    }

    /// Tops the cycle's lines in flight up to the pipeline depth.
    fn refill(&mut self, slot: usize, now: u64) {
        let (k, pipeline) = (self.lines_per_cycle, self.options.pipeline as u64);
        let Some(cycle) = self.slots[slot].as_mut() else {
            return;
        };
        if cycle.phase != Phase::Open {
            return;
        }
        while cycle.sent < k && cycle.sent - cycle.checker.lines < pipeline {
            self.lines.append(cycle.id, cycle.sent, &mut cycle.out);
            cycle.sent_at.push_back(now);
            cycle.sent += 1;
        }
    }

    /// Writes queued lines until done or the send buffer is full.
    fn flush(&mut self, slot: usize) {
        let measuring = self.measuring;
        let Some(cycle) = self.slots[slot].as_mut() else {
            return;
        };
        while cycle.phase == Phase::Open && cycle.written < cycle.out.len() {
            match cycle.stream.write(&cycle.out[cycle.written..]) {
                Ok(n) => {
                    cycle.written += n;
                    if measuring {
                        self.report.bytes_sent += n as u64;
                    }
                    if cycle.written == cycle.out.len() {
                        cycle.out.clear();
                        cycle.written = 0;
                    } else {
                        return;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    let kind = if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) {
                        Kind::EarlyClose
                    } else {
                        Kind::Io
                    };
                    self.fail(slot, kind, format!("write: {err}"));
                    return;
                }
            }
        }
    }

    /// Sends FIN once every line of the cycle is echoed.
    fn finish_if_done(&mut self, slot: usize, now: u64) {
        let k = self.lines_per_cycle;
        let Some(cycle) = self.slots[slot].as_mut() else {
            return;
        };
        if cycle.phase != Phase::Open || cycle.checker.lines < k {
            return;
        }
        match cycle.stream.shutdown(Shutdown::Write) {
            Ok(()) => cycle.phase = Phase::Finishing(now),
            Err(err) => self.fail(slot, Kind::Io, format!("shutdown: {err}")),
        }
    }

    /// Fails cycles whose connect, oldest line or FIN has waited too long.
    fn expire(&mut self, now: u64, timeout: u64) {
        for slot in 0..self.slots.len() {
            let Some(cycle) = self.slots[slot].as_ref() else {
                continue;
            };
            let (since, message) = match cycle.phase {
                Phase::Connecting => (Some(cycle.opened), "connect: timed out".to_string()),
                Phase::Open => (
                    cycle.sent_at.front().copied(),
                    format!("line {} not echoed in time", cycle.checker.lines),
                ),
                Phase::Finishing(since) => {
                    (Some(since), "no FIN from the server after ours".to_string())
                }
            };
            if since.is_some_and(|since| now.saturating_sub(since) > timeout) {
                self.fail(slot, Kind::Timeout, message);
            }
        }
    }

    /// Deregisters and closes the cycle in `slot`, freeing the slot.
    fn close(&mut self, slot: usize) -> Option<Cycle> {
        let mut cycle = self.slots[slot].take()?;
        let _ = self.poll.registry().deregister(&mut cycle.stream);
        self.in_flight -= 1;
        self.free.push(slot);
        Some(cycle)
    }

    /// In closed loop, keeps a failed cycle's slot out of use until the
    /// next housekeeping tick.
    fn rest(&mut self) {
        if self.options.rate.is_none() {
            self.resting += 1;
        }
    }

    /// Counts an error and closes the cycle it happened on.
    fn fail(&mut self, slot: usize, kind: Kind, message: String) {
        let Some(cycle) = self.close(slot) else {
            return;
        };
        // Closed now, so that the server sees what happened as it happens.
        let _ = cycle.stream.shutdown(Shutdown::Both);
        self.rest();
        self.error(kind, cycle.id, message);
    }

    fn error(&mut self, kind: Kind, id: u64, message: String) {
        let errors = &mut self.report.errors;
        match kind {
            Kind::Connect => errors.connect += 1,
            Kind::Mismatch => errors.mismatch += 1,
            Kind::EarlyClose => errors.early_close += 1,
            Kind::Timeout => errors.timeout += 1,
            Kind::Io => errors.io += 1,
        }
        if errors.examples.len() < MAX_EXAMPLES {
            errors.examples.push(format!("cycle {id}: {message}"));
        }
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes the counters since the last call visible to the reporter.
    fn publish(&mut self) {
        let progress = &self.progress;
        progress.lines.fetch_add(
            std::mem::take(&mut self.unpublished_lines),
            Ordering::Relaxed,
        );
        progress.cycles.fetch_add(
            std::mem::take(&mut self.unpublished_cycles),
            Ordering::Relaxed,
        );
        if self.in_flight >= self.published_up {
            let up = (self.in_flight - self.published_up) as u64;
            progress.conns_up.fetch_add(up, Ordering::Relaxed);
        } else {
            let down = (self.published_up - self.in_flight) as u64;
            progress.conns_up.fetch_sub(down, Ordering::Relaxed);
        }
        self.published_up = self.in_flight;
    }
}

/// The source address of cycle `id`: for an IPv4 loopback target, the next
/// of 127.0.0.1 to 127.0.0.`SOURCES` in turn; otherwise the kernel's choice.
fn source_address(target: SocketAddr, id: u64) -> Option<SocketAddr> {
    match target {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let host = 1 + (id % u64::from(SOURCES)) as u32;
            Some(SocketAddr::from((Ipv4Addr::from(0x7f00_0000 | host), 0)))
        }
        _ => None,
    }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`: a bind to port 0 then picks no port
/// until `connect`, which picks one unique for the whole 4-tuple and may
/// reuse one in TIME_WAIT (ip(7)). Without it, binding a source address
/// reserves a port for it alone and churn runs out of them.
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is a live socket owned by `socket`, and the
    // option value is a c_int that outlives the call, its size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_take_the_loopback_sources_in_turn() {
        let v4: SocketAddr = "127.0.0.1:9".parse().expect("valid");
        let v6: SocketAddr = "[::1]:9".parse().expect("valid");
        let source = |id| source_address(v4, id).map(|s| s.to_string());
        assert_eq!(source(0).as_deref(), Some("127.0.0.1:0"));
        assert_eq!(source(31).as_deref(), Some("127.0.0.32:0"));
        assert_eq!(source(32).as_deref(), Some("127.0.0.1:0"));
        assert_eq!(source_address(v6, 5), None);
    }
}
