//! The client side of every check: blocking sockets whose every wait has a
//! deadline, and the few ways of reading a reply that the checks share.
//!
//! Nothing here judges a server. A helper reports what arrived and how the
//! reading ended (`Ending`), and the check decides what that proves. The
//! checks judge the byte stream, never the size or timing of the pieces it
//! arrives in: TCP may split or merge an echo however it likes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How long a connect may take before the check gives up on it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a single read or write may block, so that no wait is unbounded.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an exchange's reader waits for a byte before it gives up.
const EXCHANGE_QUIET: Duration = Duration::from_secs(2);
/// The size of one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How a read of an expected reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Everything expected arrived.
    Complete,
    /// The server closed its sending half (FIN) first.
    Eof,
    /// The connection was reset, or another socket error ended it.
    Error(io::ErrorKind),
    /// The deadline passed first.
    TimedOut,
}

impl Ending {
    /// The ending as evidence reads it.
    pub fn describe(self) -> String {
        match self {
            Ending::Complete => "complete".into(),
            Ending::Eof => "end of file".into(),
            Ending::Error(kind) => format!("socket error ({kind})"),
            Ending::TimedOut => "no more bytes before the deadline".into(),
        }
    }
}

/// A blocking connection with read and write timeouts and no Nagle delay.
pub fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    configure(&stream)?;
    Ok(stream)
}

/// As `connect`, with the client's receive buffer fixed at
/// `receive_buffer_bytes` before the handshake. Setting it turns off the
/// kernel's autotuning, so the server's writes meet a full socket quickly:
/// the checks of slow and stalled readers need that, not megabytes of
/// kernel buffer between the server and the stall.
pub fn connect_small_receive(
    target: SocketAddr,
    receive_buffer_bytes: usize,
) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_recv_buffer_size(receive_buffer_bytes)?;
    socket.connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    configure(&stream)?;
    Ok(stream)
}

fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))
}

/// Reads until `expected_len` bytes have arrived, the server closes, or
/// `deadline` passes.
pub fn read_up_to(
    stream: &mut TcpStream,
    expected_len: usize,
    deadline: Instant,
) -> (Vec<u8>, Ending) {
    read_paced(stream, expected_len, deadline, Duration::ZERO)
}

/// As `read_up_to`, pausing `pause` after each read: a reader slower than
/// the server can write.
pub fn read_paced(
    stream: &mut TcpStream,
    expected_len: usize,
    deadline: Instant,
    pause: Duration,
) -> (Vec<u8>, Ending) {
    let mut received = Vec::with_capacity(expected_len.min(1 << 24));
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    while received.len() < expected_len {
        let want = (expected_len - received.len()).min(chunk.len());
        match read_by(stream, &mut chunk[..want], deadline) {
            Ok(0) => return (received, Ending::Eof),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(ending) => return (received, ending),
        }
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    (received, Ending::Complete)
}

/// Whatever arrives within `wait`: how a check sees that nothing came back.
pub fn collect_for(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, Ending) {
    let (received, ending) = read_up_to(stream, usize::MAX, Instant::now() + wait);
    (received, ending)
}

/// Counts the bytes that arrive until the server closes, `quiet` passes
/// with nothing arriving, or `deadline` passes. The bytes themselves are
/// not kept: this reads what a server held for a client, which may be a
/// lot.
pub fn count_until_quiet(stream: &mut TcpStream, quiet: Duration, deadline: Instant) -> u64 {
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        let by = deadline.min(Instant::now() + quiet);
        match read_by(stream, &mut chunk, by) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

/// One read that gives up at `deadline`; `Err` carries how reading ended.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize, Ending> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Ending::TimedOut);
        }
        // A zero timeout means "block forever" to the socket API.
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) => return Err(Ending::Error(err.kind())),
        }
    }
}

/// One ping-pong: writes `line`, waits for its echo until `bound`, returns
/// how long it took, or the evidence of what went wrong.
pub fn round_trip(
    stream: &mut TcpStream,
    line: &[u8],
    bound: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    stream
        .write_all(line)
        .map_err(|err| format!("write failed: {err}"))?;
    let (received, ending) = read_up_to(stream, line.len(), started + bound);
    if received == line {
        Ok(started.elapsed())
    } else if ending == Ending::TimedOut {
        Err(format!(
            "no complete echo within {} ms ({} of {} bytes)",
            bound.as_millis(),
            received.len(),
            line.len()
        ))
    } else {
        Err(difference(line, &received, ending))
    }
}

/// Sends `payload` from a thread of its own, never letting more than
/// `window` bytes be sent and not yet echoed, while this thread reads the
/// echoes. `stall` delays the first read; `pause` follows every read;
/// `finish` shuts down the sending half once everything is sent. Reads
/// until `payload.len()` bytes, the server's close, two seconds with
/// nothing arriving, or `deadline`.
#[derive(Debug)]
pub struct Exchange {
    /// The bytes to send, whose echo is expected in full.
    pub payload: Arc<Vec<u8>>,
    /// Most bytes in flight (sent, not yet received back); `None` is no limit.
    pub window: Option<usize>,
    /// How long to wait before reading at all.
    pub stall: Duration,
    /// How long to wait after each read.
    pub pause: Duration,
    /// Whether to shut down the sending half (FIN) after the payload.
    pub finish: bool,
    /// When reading gives up.
    pub deadline: Instant,
}

/// What an `Exchange` saw.
#[derive(Debug)]
pub struct Exchanged {
    /// Every byte received.
    pub received: Vec<u8>,
    /// How reading ended.
    pub ending: Ending,
    /// Whether the server closed (FIN) once everything had arrived, checked
    /// only when the exchange finished its sending half.
    pub closed_after: Option<Ending>,
}

impl Exchange {
    /// Runs the exchange on `stream`.
    pub fn run(self, stream: &mut TcpStream) -> io::Result<Exchanged> {
        let mut writer = stream.try_clone()?;
        let echoed = Arc::new((Mutex::new(0usize), Condvar::new()));
        let payload = Arc::clone(&self.payload);
        let (window, finish, deadline) = (self.window, self.finish, self.deadline);
        let progress = Arc::clone(&echoed);
        let sender = thread::spawn(move || {
            let mut sent = 0;
            while sent < payload.len() && Instant::now() < deadline {
                let room = match window {
                    None => usize::MAX,
                    Some(window) => {
                        let (lock, changed) = &*progress;
                        let mut echoed = lock.lock().expect("the reader never panics holding it");
                        while sent - *echoed >= window && Instant::now() < deadline {
                            echoed = changed
                                .wait_timeout(echoed, Duration::from_millis(50))
                                .expect("the reader never panics holding it")
                                .0;
                        }
                        window.saturating_sub(sent - *echoed)
                    }
                };
                let end = payload.len().min(sent + room.min(READ_CHUNK_BYTES));
                match writer.write(&payload[sent..end]) {
                    Ok(n) => sent += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err)
                        if matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
            if finish {
                let _ = writer.shutdown(Shutdown::Write);
            }
        });
        if !self.stall.is_zero() {
            thread::sleep(self.stall);
        }
        let mut received = Vec::with_capacity(self.payload.len());
        let mut chunk = vec![0; READ_CHUNK_BYTES];
        let mut ending = Ending::Complete;
        while received.len() < self.payload.len() {
            let want = (self.payload.len() - received.len()).min(chunk.len());
            // A server that lost bytes would keep the reader waiting to the
            // deadline: two quiet seconds end the reading sooner.
            let by = self.deadline.min(Instant::now() + EXCHANGE_QUIET);
            match read_by(stream, &mut chunk[..want], by) {
                Ok(0) => {
                    ending = Ending::Eof;
                    break;
                }
                Ok(n) => {
                    received.extend_from_slice(&chunk[..n]);
                    let (lock, changed) = &*echoed;
                    *lock.lock().expect("the sender never panics holding it") = received.len();
                    changed.notify_one();
                }
                Err(end) => {
                    ending = end;
                    break;
                }
            }
            if !self.pause.is_zero() {
                thread::sleep(self.pause);
            }
        }
        let closed_after = (self.finish && ending == Ending::Complete).then(|| {
            let (extra, end) = collect_for(stream, Duration::from_secs(2));
            if extra.is_empty() {
                end
            } else {
                Ending::Complete
            }
        });
        // The sender gives up at the deadline at the latest; closing the
        // socket would also end a write blocked on a stalled server.
        let _ = stream.shutdown(Shutdown::Both);
        let _ = sender.join();
        Ok(Exchanged {
            received,
            ending,
            closed_after,
        })
    }
}

/// Evidence of how `received` differs from `expected`.
pub fn difference(expected: &[u8], received: &[u8], ending: Ending) -> String {
    let first = expected
        .iter()
        .zip(received)
        .position(|(want, got)| want != got);
    match first {
        Some(at) => format!(
            "byte {at} differs: expected 0x{:02x}, got 0x{:02x} ({} of {} bytes received)",
            expected[at],
            received[at],
            received.len(),
            expected.len()
        ),
        None if received.len() > expected.len() => format!(
            "{} bytes more than the {} expected",
            received.len() - expected.len(),
            expected.len()
        ),
        None => format!(
            "{} of {} bytes, then {}",
            received.len(),
            expected.len(),
            ending.describe()
        ),
    }
}

/// `count` lines `PREFIX NNNNNNNN` padded to `line_bytes` bytes each,
/// terminator included, numbered so that a lost or reordered line shows.
pub fn numbered_lines(prefix: &str, count: usize, line_bytes: usize, terminator: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * line_bytes);
    for n in 0..count {
        let start = out.len();
        out.extend_from_slice(format!("{prefix} {n:08} ").as_bytes());
        let body = line_bytes.saturating_sub(terminator.len());
        while out.len() - start < body {
            out.push(b'.');
        }
        out.extend_from_slice(terminator);
    }
    out
}

/// How `send_until_stuck` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A write made no progress for the time allowed: the server stopped
    /// taking bytes.
    Stuck,
    /// The cap was reached with every write taken.
    Cap,
    /// The socket failed (the server reset or closed the connection).
    Error(io::ErrorKind),
}

/// Writes `chunk` again and again, never reading, until a write makes no
/// progress for `stuck`, `cap` bytes are sent, or the socket fails.
/// Returns the bytes the server took and why sending stopped.
pub fn send_until_stuck(
    stream: &mut TcpStream,
    chunk: &[u8],
    cap: u64,
    stuck: Duration,
) -> (u64, Stopped) {
    let _ = stream.set_write_timeout(Some(stuck));
    let mut sent = 0u64;
    while sent < cap {
        match stream.write(chunk) {
            Ok(n) => sent += n as u64,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (sent, Stopped::Stuck);
            }
            Err(err) => return (sent, Stopped::Error(err.kind())),
        }
    }
    (sent, Stopped::Cap)
}
