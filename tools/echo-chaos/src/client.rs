//! One client connection and what it does: its role, its socket, the bytes
//! it still owes echod and the echoes echod still owes it.
//!
//! Every client checks every byte it gets back against the lines it sent:
//! `expect` holds, in order, the echoes still owed, and an echo byte that
//! differs, or arrives when nothing is owed, is corruption whatever the
//! client's role. What counts as a *loss* depends on the role: a
//! well-behaved client must get every echo and never be closed; an abusive
//! one, once its greeting line has come back (so echod accepted it rather
//! than rejecting it at `max-connections`), must get every echo the protocol
//! promises it (a half-close, a line finished after a long wait, the lines
//! before an over-long one).
//!
//! This module does the I/O; `soak.rs` owns the poll instance and decides
//! when each client acts.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use socket2::{Domain, Socket, Type};

/// What a client does. The first is the well-behaved kind; the rest abuse
/// echod, each in one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends lines at a steady pace and times each echo.
    Steady,
    /// Sends a burst, then reads it back a few KiB at a time.
    SlowReader,
    /// Sends until its buffers and echod's are full, and never reads.
    NeverReader,
    /// Sends half a line and sits on it, then finishes it.
    PartialHolder,
    /// Sends lines one byte per write.
    ByteAtATime,
    /// Sends a burst and resets the connection (`SO_LINGER` 0) mid-stream.
    Resetter,
    /// Sends megabytes without reading, half-closes, then reads it all back.
    HalfCloser,
    /// Sends a few lines, then one longer than `max-line-bytes`.
    OverLong,
    /// Churn: connects, sends one line, leaves (often above
    /// `max-connections`, so echod may reject it).
    Probe,
    /// Connects while echod is out of descriptors and waits to be served.
    Waiter,
}

/// The abusive roles an abuser cycles through.
pub const ABUSES: [Role; 7] = [
    Role::SlowReader,
    Role::NeverReader,
    Role::PartialHolder,
    Role::ByteAtATime,
    Role::Resetter,
    Role::HalfCloser,
    Role::OverLong,
];

/// What reading found.
#[derive(Debug, Default)]
pub struct Received {
    /// Echo bytes that arrived.
    pub bytes: usize,
    /// Echo bytes that differed from what was owed (or were not owed).
    pub corrupt: usize,
    /// Latencies of the timed lines completed by this read.
    pub latencies: Vec<Duration>,
    /// The peer closed (end of file).
    pub eof: bool,
    /// The connection failed (reset, or another error).
    pub error: Option<io::Error>,
}

/// One connection.
#[derive(Debug)]
pub struct Client {
    /// What it does.
    pub role: Role,
    /// Its socket.
    pub stream: TcpStream,
    /// The handshake finished.
    pub connected: bool,
    /// For abusers: the greeting came back, so echod accepted the
    /// connection; from now on a missing echo is a loss.
    pub greeted: bool,
    /// Role-specific progress (a step counter).
    pub step: u32,
    /// When the client was created.
    pub created: Instant,
    /// The latest time by which the client must be done.
    pub deadline: Instant,
    /// For slow readers: bytes it may still read before its next tick.
    pub read_allowance: usize,
    /// A half-close was sent.
    pub write_closed: bool,
    /// For partial-line holders: the half line it sits on.
    pub held: Vec<u8>,
    /// Role-specific count: lines sent (well-behaved), bytes of the current
    /// line sent (byte at a time).
    pub progress: usize,
    /// Bytes queued for writing; `out[out_pos..]` is not yet written.
    out: Vec<u8>,
    out_pos: usize,
    /// Echo bytes owed to the client, in order.
    expect: VecDeque<u8>,
    /// Total bytes ever added to `expect`, and received from it.
    expected_total: u64,
    received_total: u64,
    /// Lines being timed: the offset just past each line's last echo byte,
    /// and when the line was handed to the kernel in full.
    stamps: VecDeque<(u64, Instant)>,
    /// Timed lines queued but not yet fully written: (end offset in `out`,
    /// offset in the echo stream).
    unwritten_stamps: VecDeque<(usize, u64)>,
}

impl Client {
    /// Starts a non-blocking connection to `addr`, with the role's socket
    /// options set before the handshake (where the window scale and the
    /// MSS are chosen).
    ///
    /// # Errors
    ///
    /// If the socket cannot be created or the connect fails at once.
    pub fn connect(
        role: Role,
        addr: SocketAddr,
        now: Instant,
        lifetime: Duration,
    ) -> io::Result<Client> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
        socket.set_tcp_nodelay(true)?;
        match role {
            // Room for every echo without reading, so that megabytes are
            // still in flight when it half-closes. A fixed size also turns
            // off autotuning, which could make a client that is not reading
            // drop segments and the sender back off for seconds.
            Role::HalfCloser => socket.set_recv_buffer_size(8 << 20)?,
            // Like a client across a real network: a small window and an
            // Ethernet MSS. On loopback (64 KiB MSS) echod's send buffer
            // autotunes to megabytes and absorbs what it owes a stalled
            // reader; with these, the backlog stays in echod, up to
            // max-pending-bytes, which is what this abuse is for.
            Role::SlowReader | Role::NeverReader => {
                socket.set_recv_buffer_size(16 << 10)?;
                socket.set_tcp_mss(1460)?;
            }
            _ => {}
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) => return Err(err),
        }
        Ok(Client {
            role,
            stream: TcpStream::from_std(socket.into()),
            connected: false,
            greeted: false,
            step: 0,
            created: now,
            deadline: now + lifetime,
            read_allowance: usize::MAX,
            write_closed: false,
            held: Vec::new(),
            progress: 0,
            out: Vec::new(),
            out_pos: 0,
            expect: VecDeque::new(),
            expected_total: 0,
            received_total: 0,
            stamps: VecDeque::new(),
            unwritten_stamps: VecDeque::new(),
        })
    }

    /// Checks, on a writable event, whether the handshake has finished.
    /// Returns an error if it failed.
    pub fn check_connected(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        if let Some(err) = self.stream.take_error()? {
            return Err(err);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Queues a complete line: it is owed back. With `timed`, its echo's
    /// latency is measured from when its last byte reaches the kernel.
    pub fn send_line(&mut self, line: &[u8], timed: bool) {
        self.out.extend_from_slice(line);
        self.expect.extend(line);
        self.expected_total += line.len() as u64;
        if timed {
            self.unwritten_stamps
                .push_back((self.out.len(), self.expected_total));
        }
    }

    /// Queues bytes that echod will not echo (yet): part of a line.
    pub fn send_unowed(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Records that `bytes`, sent earlier with `send_unowed`, now form a
    /// complete line with what follows: they are owed back too.
    pub fn owe(&mut self, bytes: &[u8]) {
        self.expect.extend(bytes);
        self.expected_total += bytes.len() as u64;
    }

    /// Bytes queued but not yet written.
    pub fn unwritten(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Echo bytes still owed to this client.
    pub fn owed(&self) -> usize {
        self.expect.len()
    }

    /// Echo bytes received so far.
    pub fn received_total(&self) -> u64 {
        self.received_total
    }

    /// Writes queued bytes until they are all written or the socket is full.
    ///
    /// # Errors
    ///
    /// A socket error other than `WouldBlock`.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
            while let Some(&(end, offset)) = self.unwritten_stamps.front() {
                if end > self.out_pos {
                    break;
                }
                self.unwritten_stamps.pop_front();
                self.stamps.push_back((offset, now));
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            self.unwritten_stamps.clear();
        }
        Ok(())
    }

    /// Reads up to `limit` bytes (fewer if the socket runs dry), checking
    /// each against the echoes owed.
    pub fn read_some(&mut self, limit: usize, chunk: &mut [u8], now: Instant) -> Received {
        let mut received = Received::default();
        while received.bytes < limit {
            let want = chunk.len().min(limit - received.bytes);
            let n = match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    received.eof = true;
                    break;
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    received.error = Some(err);
                    break;
                }
            };
            received.corrupt += take_owed(&mut self.expect, &chunk[..n]);
            received.bytes += n;
            self.received_total += n as u64;
            while let Some(&(offset, sent)) = self.stamps.front() {
                if offset > self.received_total {
                    break;
                }
                self.stamps.pop_front();
                received.latencies.push(now.saturating_duration_since(sent));
            }
        }
        received
    }

    /// Shuts down the sending half, once everything queued is written.
    ///
    /// # Errors
    ///
    /// If the shutdown fails (the connection is already gone).
    pub fn half_close(&mut self) -> io::Result<()> {
        self.write_closed = true;
        self.stream.shutdown(Shutdown::Write)
    }

    /// Arranges for the close to send a reset rather than a FIN.
    pub fn set_reset_on_close(&self) {
        // A failure leaves a FIN instead, which is harmless here.
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }
}

/// Takes `echo` off the front of `owed`, and returns how many of its bytes
/// differ from what was owed (bytes beyond what was owed all count).
fn take_owed(owed: &mut VecDeque<u8>, echo: &[u8]) -> usize {
    let n = echo.len().min(owed.len());
    let (front, back) = owed.as_slices();
    let in_front = front.len().min(n);
    let differ = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    let corrupt = differ(&echo[..in_front], &front[..in_front])
        + differ(&echo[in_front..n], &back[..n - in_front])
        + (echo.len() - n);
    owed.drain(..n);
    corrupt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_owed_counts_differences_across_the_ring_wrap() {
        let mut owed = VecDeque::with_capacity(8);
        owed.extend(b"abcdef");
        owed.drain(..4);
        // Pushed past the end of the storage: the deque now wraps.
        owed.extend(b"ghijkl");
        assert!(!owed.as_slices().1.is_empty(), "the test needs a wrap");
        assert_eq!(take_owed(&mut owed, b"efgh"), 0);
        assert_eq!(take_owed(&mut owed, b"iXkY"), 2);
        assert!(owed.is_empty());
        // Nothing owed: every byte that arrives is wrong.
        assert_eq!(take_owed(&mut owed, b"zz"), 2);
    }
}
