//! One load thread: a mio event loop driving its share of the connections.
//!
//! A run has three phases, the same in every thread:
//!
//! 1. **Connect.** Connections are opened a bounded number at a time, so
//!    that the server's accept backlog never overflows (an overflowed backlog
//!    costs a one-second SYN retransmission, not an error). The thread then
//!    waits at a barrier until every thread's connections are up, so that no
//!    measurement includes another thread's connection setup.
//! 2. **Load.** Closed loop: each connection keeps `pipeline` lines in
//!    flight, sending the next as soon as an echo completes one. Open loop
//!    (`--rate`): each connection sends on a fixed schedule whatever the
//!    server does, and latency is measured from when a line was *due*, not
//!    when it was sent. Nothing is recorded during the warm-up.
//! 3. **Drain.** No new lines; the lines in flight are awaited (up to the
//!    timeout), then each connection sends FIN and waits for the server's, so
//!    TIME_WAIT lands on the server side and repeated runs do not exhaust
//!    the client's ephemeral ports.
//!
//! Readiness follows the same rules as the server's: registration is
//! edge-triggered and made once for reading and writing, a read shorter than
//! the buffer proves the socket drained (epoll(7)) unless the peer's FIN has
//! arrived, and a write that takes less than offered proves the send buffer
//! full, so the next writable edge is awaited rather than spun on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock, mpsc};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

use crate::args::{Length, Options};
use crate::lines::{Checker, Lines};
use crate::report::{MAX_EXAMPLES, Report};

/// Connections a thread has connecting at once.
const MAX_CONNECTING: usize = 256;
/// Bytes asked for per read: a whole 64 KiB window of pipelined echoes.
const READ_BYTES: usize = 64 * 1024;
/// How often progress counters are published and timeouts looked for.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Connections per IPv4 source address before the next one is used: well
/// inside the default ephemeral range (32768–60999).
pub const CONNS_PER_SOURCE: usize = 16_000;

/// Counters the progress reporter reads while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    pub lines: AtomicU64,
    /// Churn cycles completed (`--churn`).
    pub cycles: AtomicU64,
    pub conns_up: AtomicU64,
    pub errors: AtomicU64,
}

/// What a load thread tells the progress reporter, as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// Every thread's connections are up (or failed) and the load began, at
    /// the instant in the run's `OnceLock`.
    LoadStarted,
    /// The thread has finished, with or without errors.
    Done,
}

/// A connection's place in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connect in progress, started at this time (ns).
    Connecting(u64),
    Open,
    /// Our FIN is sent, at this time (ns); waiting for the server's.
    Finishing(u64),
    Closed,
}

struct Conn {
    /// The run-wide connection number: it seeds the connection's lines.
    id: u64,
    stream: TcpStream,
    phase: Phase,
    /// Lines generated but not yet written, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Lines generated so far.
    sent: u64,
    checker: Checker,
    /// When each line in flight was sent (closed loop) or due (open loop).
    sent_at: VecDeque<u64>,
}

impl Conn {
    fn in_flight(&self) -> u64 {
        self.sent - self.checker.lines
    }
}

/// Runs one thread's share of the load: connections `ids`. It sends
/// `Milestone::LoadStarted` on `milestones` once `load_start` is set, so
/// that the reporter can mark the phases from then on.
pub fn run(
    options: Arc<Options>,
    ids: Vec<u64>,
    barrier: Arc<Barrier>,
    progress: Arc<Progress>,
    load_start: &OnceLock<Instant>,
    milestones: &mpsc::Sender<Milestone>,
) -> io::Result<Report> {
    let mut thread = Thread::new(options, progress)?;
    let connect_start = Instant::now();
    let connected = thread.connect(&ids);
    let connect_time = connect_start.elapsed();
    // Every thread reaches the barrier, even one that failed, so that none
    // waits forever.
    barrier.wait();
    connected?;
    load_start.get_or_init(Instant::now);
    // The reporter may have gone already; the run goes on without it.
    let _ = milestones.send(Milestone::LoadStarted);
    thread.load()?;
    thread.report.connect_time = connect_time;
    Ok(thread.report)
}

struct Thread {
    options: Arc<Options>,
    lines: Lines,
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    /// Open-loop schedule: (due time in ns, connection index).
    due: BinaryHeap<Reverse<(u64, usize)>>,
    epoch: Instant,
    read_buf: Vec<u8>,
    /// The events of one poll, copied out so that handling them can borrow
    /// the thread mutably.
    ready: Vec<Ready>,
    line_scratch: Vec<u8>,
    /// Whether completed lines are recorded now (not warming up or draining).
    measuring: bool,
    /// Whether new lines may be sent.
    sending: bool,
    /// Lines echoed in any phase, not yet published to `progress`.
    unpublished_lines: u64,
    progress: Arc<Progress>,
    report: Report,
}

impl Thread {
    fn new(options: Arc<Options>, progress: Arc<Progress>) -> io::Result<Thread> {
        let report = Report::new().map_err(io::Error::other)?;
        Ok(Thread {
            lines: Lines::new(options.framing, options.line_bytes),
            options,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Vec::new(),
            due: BinaryHeap::new(),
            epoch: Instant::now(),
            read_buf: vec![0; READ_BYTES],
            ready: Vec::new(),
            line_scratch: Vec::new(),
            measuring: false,
            sending: false,
            unpublished_lines: 0,
            progress,
            report,
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Opens every connection in `ids`, at most `MAX_CONNECTING` at a time,
    /// and returns once each is up or has failed.
    fn connect(&mut self, ids: &[u64]) -> io::Result<()> {
        let timeout = self.options.timeout.as_nanos() as u64;
        let mut next = 0;
        let mut connecting = 0;
        loop {
            while connecting < MAX_CONNECTING && next < ids.len() {
                let id = ids[next];
                next += 1;
                match self.open(id) {
                    Ok(()) => connecting += 1,
                    Err(err) => self.error(Kind::Connect, id, format!("connect: {err}")),
                }
            }
            if connecting == 0 && next == ids.len() {
                self.publish();
                return Ok(());
            }
            self.poll.poll(&mut self.events, Some(HOUSEKEEPING))?;
            let now = self.now();
            let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for index in ready {
                if let Phase::Connecting(_) = self.conns[index].phase {
                    match connected(&self.conns[index].stream) {
                        Ok(false) => {}
                        Ok(true) => {
                            connecting -= 1;
                            self.conns[index].phase = Phase::Open;
                            self.report.connected += 1;
                            self.progress.conns_up.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            connecting -= 1;
                            self.fail(index, Kind::Connect, format!("connect: {err}"));
                        }
                    }
                }
            }
            for index in 0..self.conns.len() {
                if let Phase::Connecting(since) = self.conns[index].phase
                    && now.saturating_sub(since) > timeout
                {
                    connecting -= 1;
                    self.fail(index, Kind::Connect, "connect: timed out".into());
                }
            }
            self.publish();
        }
    }

    /// Starts a non-blocking connect for connection `id`.
    fn open(&mut self, id: u64) -> io::Result<()> {
        let target = self.options.addr;
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM.nonblocking(),
            None,
        )?;
        socket.set_tcp_nodelay(true)?;
        if let Some(source) = source_address(target, self.options.conns, id) {
            socket.bind(&source.into())?;
        }
        match socket.connect(&target.into()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) => return Err(err),
        }
        let mut stream = TcpStream::from_std(socket.into());
        let index = self.conns.len();
        self.poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let now = self.now();
        self.conns.push(Conn {
            id,
            stream,
            phase: Phase::Connecting(now),
            out: Vec::new(),
            written: 0,
            sent: 0,
            checker: Checker::default(),
            sent_at: VecDeque::new(),
        });
        Ok(())
    }

    /// Runs the load and drain phases.
    fn load(&mut self) -> io::Result<()> {
        let options = Arc::clone(&self.options);
        let start = self.now();
        let warmup_end = start + options.warmup.as_nanos() as u64;
        let measure_end = match options.length {
            Length::Duration(d) => Some(warmup_end + d.as_nanos() as u64),
            Length::LinesPerConn(_) | Length::Cycles(_) => None,
        };
        let timeout = options.timeout.as_nanos() as u64;
        self.sending = true;
        self.measuring = options.warmup.is_zero();
        let mut measure_start = if self.measuring { Some(start) } else { None };
        let mut last_echo = start;

        if let Some(rate) = options.rate {
            let interval = (options.conns as f64 / rate * 1e9) as u64;
            for index in 0..self.conns.len() {
                // Spread the connections' schedules evenly over one interval.
                let offset = (self.conns[index].id as f64 / rate * 1e9) as u64 % interval.max(1);
                self.due.push(Reverse((start + offset, index)));
            }
        } else {
            for index in 0..self.conns.len() {
                self.refill(index, start);
                self.flush(index);
            }
        }

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
                // The measured window closes: lines echoed from here on are
                // owed from before, and are awaited but not recorded.
                self.sending = false;
                self.measuring = false;
                self.due.clear();
                self.report.measured = Duration::from_nanos(now - measure_start.unwrap_or(now));
                for index in 0..self.conns.len() {
                    self.finish_if_done(index, now);
                }
            }
            self.send_due(now);
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING.as_nanos() as u64;
                self.expire(now, timeout);
                self.publish();
                if self.conns.iter().all(|c| c.phase == Phase::Closed) {
                    break;
                }
            }

            let mut wake = next_housekeeping;
            if let Some(Reverse((due, _))) = self.due.peek() {
                wake = wake.min(*due);
            }
            if let Some(end) = measure_end.filter(|_| self.sending) {
                wake = wake.min(end);
            }
            let wait = Duration::from_nanos(wake.saturating_sub(self.now()));
            self.poll.poll(&mut self.events, Some(wait))?;
            let now = self.now();
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            ready.extend(self.events.iter().map(|event| Ready {
                index: event.token().0,
                // An error or the peer's FIN is seen by reading.
                readable: event.is_readable() || event.is_read_closed() || event.is_error(),
                read_closed: event.is_read_closed() || event.is_error(),
                writable: event.is_writable(),
            }));
            for ready in &ready {
                let index = ready.index;
                if ready.readable {
                    let before = self.conns[index].checker.lines;
                    self.receive(index, ready.read_closed, now);
                    if self.conns[index].checker.lines != before {
                        last_echo = now;
                    }
                }
                if ready.writable || ready.readable {
                    if options.rate.is_none() {
                        self.refill(index, now);
                    }
                    self.flush(index);
                    self.finish_if_done(index, now);
                }
            }
            self.ready = ready;
        }
        if measure_end.is_none() {
            self.report.measured =
                Duration::from_nanos(last_echo.saturating_sub(measure_start.unwrap_or(start)));
        }
        self.publish();
        Ok(())
    }

    /// Reads what the socket holds and checks it against what was sent.
    fn receive(&mut self, index: usize, read_closed: bool, now: u64) {
        loop {
            let conn = &mut self.conns[index];
            if matches!(conn.phase, Phase::Closed | Phase::Connecting(_)) {
                return;
            }
            let n = match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    self.on_eof(index);
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
                    self.fail(index, kind, format!("read: {err}"));
                    return;
                }
            };
            if self.measuring {
                self.report.bytes_received += n as u64;
            }
            let (lines, measuring) = (&self.lines, self.measuring);
            let (latency, recorded) = (&mut self.report.latency, &mut self.report.lines);
            let sent_at = &mut conn.sent_at;
            let mut completed = 0;
            let result = conn.checker.check(
                lines,
                conn.id,
                conn.sent,
                &self.read_buf[..n],
                &mut self.line_scratch,
                |_| {
                    completed += 1;
                    let at = sent_at.pop_front().unwrap_or(now);
                    if measuring {
                        // Saturates at the histogram's bound rather than failing.
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
                self.fail(index, Kind::Mismatch, message);
                return;
            }
            // A short read proves the receive queue drained, unless the FIN
            // is already in: then only reading on to 0 sees it, and no
            // further edge would come to say so.
            if n < self.read_buf.len() && !read_closed {
                return;
            }
        }
    }

    /// The server closed its side.
    fn on_eof(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if let Phase::Finishing(_) = conn.phase
            && conn.in_flight() == 0
        {
            conn.phase = Phase::Closed;
            self.progress.conns_up.fetch_sub(1, Ordering::Relaxed);
            // Dropping the stream here would leave a dead entry in the
            // vector; deregistering is enough, and the socket closes when
            // the run ends.
            let _ = self.poll.registry().deregister(&mut conn.stream);
            return;
        }
        let owed = conn.in_flight();
        self.fail(
            index,
            Kind::EarlyClose,
            format!("server closed the connection with {owed} lines not echoed"),
        );
    }

    /// Closed loop: tops the lines in flight up to the pipeline depth.
    fn refill(&mut self, index: usize, now: u64) {
        let limit = match self.options.length {
            Length::LinesPerConn(n) => n,
            // Cycles are churn's, whose threads are churn.rs's.
            Length::Duration(_) | Length::Cycles(_) => u64::MAX,
        };
        let pipeline = self.options.pipeline as u64;
        let conn = &mut self.conns[index];
        if !self.sending || conn.phase != Phase::Open {
            return;
        }
        while conn.sent < limit && conn.in_flight() < pipeline {
            self.lines.append(conn.id, conn.sent, &mut conn.out);
            conn.sent_at.push_back(now);
            conn.sent += 1;
        }
    }

    /// Open loop: sends every line that is due, each stamped with the time it
    /// was due.
    fn send_due(&mut self, now: u64) {
        let Some(rate) = self.options.rate else {
            return;
        };
        let interval = ((self.options.conns as f64 / rate) * 1e9).max(1.0) as u64;
        let limit = match self.options.length {
            Length::LinesPerConn(n) => n,
            // Cycles are churn's, whose threads are churn.rs's.
            Length::Duration(_) | Length::Cycles(_) => u64::MAX,
        };
        let mut touched = Vec::new();
        while let Some(&Reverse((due, index))) = self.due.peek() {
            if due > now || !self.sending {
                break;
            }
            self.due.pop();
            let conn = &mut self.conns[index];
            if conn.phase != Phase::Open || conn.sent >= limit {
                continue;
            }
            self.lines.append(conn.id, conn.sent, &mut conn.out);
            conn.sent_at.push_back(due);
            conn.sent += 1;
            if conn.sent < limit {
                self.due.push(Reverse((due + interval, index)));
            }
            touched.push(index);
        }
        touched.dedup();
        for index in touched {
            self.flush(index);
        }
    }

    /// Writes queued lines until done or the send buffer is full.
    fn flush(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        while conn.written < conn.out.len() && conn.phase == Phase::Open {
            match conn.stream.write(&conn.out[conn.written..]) {
                Ok(n) => {
                    conn.written += n;
                    if self.measuring {
                        self.report.bytes_sent += n as u64;
                    }
                    if conn.written == conn.out.len() {
                        conn.out.clear();
                        conn.written = 0;
                    } else {
                        // A short write proves the send buffer full: wait
                        // for the writable edge.
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
                    self.fail(index, kind, format!("write: {err}"));
                    return;
                }
            }
        }
    }

    /// Sends FIN once a connection will send no more and owes nothing.
    fn finish_if_done(&mut self, index: usize, now: u64) {
        let limit = match self.options.length {
            Length::LinesPerConn(n) => n,
            // Cycles are churn's, whose threads are churn.rs's.
            Length::Duration(_) | Length::Cycles(_) => u64::MAX,
        };
        let sending = self.sending;
        let conn = &mut self.conns[index];
        if conn.phase != Phase::Open || conn.in_flight() > 0 || (sending && conn.sent < limit) {
            return;
        }
        match conn.stream.shutdown(Shutdown::Write) {
            Ok(()) => conn.phase = Phase::Finishing(now),
            Err(err) => self.fail(index, Kind::Io, format!("shutdown: {err}")),
        }
    }

    /// Fails connections whose oldest line, or whose FIN, has waited too long.
    fn expire(&mut self, now: u64, timeout: u64) {
        for index in 0..self.conns.len() {
            let conn = &self.conns[index];
            let waiting_since = match conn.phase {
                Phase::Open => conn.sent_at.front().copied(),
                Phase::Finishing(since) => Some(since),
                Phase::Connecting(_) | Phase::Closed => None,
            };
            if let Some(since) = waiting_since
                && now.saturating_sub(since) > timeout
            {
                let message = match conn.phase {
                    Phase::Finishing(_) => "no FIN from the server after ours".to_string(),
                    _ => format!("line {} not echoed in time", conn.checker.lines),
                };
                self.fail(index, Kind::Timeout, message);
            }
        }
    }

    /// Makes the counters since the last call visible to the reporter.
    fn publish(&mut self) {
        self.progress.lines.fetch_add(
            std::mem::take(&mut self.unpublished_lines),
            Ordering::Relaxed,
        );
    }

    /// Counts an error and closes the connection it happened on.
    fn fail(&mut self, index: usize, kind: Kind, message: String) {
        let conn = &mut self.conns[index];
        if conn.phase == Phase::Open || matches!(conn.phase, Phase::Finishing(_)) {
            self.progress.conns_up.fetch_sub(1, Ordering::Relaxed);
        }
        conn.phase = Phase::Closed;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // Close now rather than at the end of the run: the server should
        // see what happened while it happens.
        let _ = conn.stream.shutdown(Shutdown::Both);
        conn.sent_at.clear();
        conn.out = Vec::new();
        let id = conn.id;
        self.error(kind, id, message);
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
            errors.examples.push(format!("connection {id}: {message}"));
        }
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Connect,
    Mismatch,
    EarlyClose,
    Timeout,
    Io,
}

/// One event, as much of it as the handlers need.
#[derive(Debug, Clone, Copy)]
struct Ready {
    index: usize,
    readable: bool,
    read_closed: bool,
    writable: bool,
}

/// Whether a non-blocking connect has completed: the way mio documents it,
/// a pending error means failure, and a peer address means success.
pub(crate) fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(err) => Err(err),
    }
}

/// The source address for connection `id`, when connections must be spread
/// over several to stay within the ephemeral port range: only for an IPv4
/// loopback target, where all of 127.0.0.0/8 is local.
fn source_address(target: SocketAddr, conns: usize, id: u64) -> Option<SocketAddr> {
    match target {
        SocketAddr::V4(v4) if v4.ip().is_loopback() && conns > CONNS_PER_SOURCE => {
            let host = 1 + (id as usize / CONNS_PER_SOURCE) as u32;
            Some(SocketAddr::from((Ipv4Addr::from(0x7f00_0000 | host), 0)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_only_when_ports_would_run_out() {
        let v4: SocketAddr = "127.0.0.1:9".parse().expect("valid");
        let v6: SocketAddr = "[::1]:9".parse().expect("valid");
        assert_eq!(source_address(v4, CONNS_PER_SOURCE, 5), None);
        assert_eq!(source_address(v6, 100_000, 5), None);
        let many = 100_000;
        assert_eq!(
            source_address(v4, many, 0),
            Some("127.0.0.1:0".parse().expect("valid"))
        );
        assert_eq!(
            source_address(v4, many, (CONNS_PER_SOURCE * 6) as u64),
            Some("127.0.0.7:0".parse().expect("valid"))
        );
    }
}
