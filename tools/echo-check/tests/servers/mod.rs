//! A small correct line echo server, and the same server with one fault
//! planted, for proving that echo-check is honest in both directions: the
//! correct server passes every check, and each faulty one fails the check
//! named for its fault and no other.
//!
//! The server is a mio loop on 127.0.0.1:0 in a thread of the test process:
//! CRLF framing with the unfinished line kept, a bounded output buffer per
//! connection with write interest while output is owed, reading paused
//! above `HIGH_WATER_BYTES` owed and resumed by the server itself below
//! half of it, a line limit that closes the connection, a half-close
//! that delivers what is owed before closing, and a budget of bytes read
//! from one connection per turn of the loop. Each `Fault` changes one of
//! those and nothing else.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

/// The longest line the server accepts, terminator included.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most bytes read from one connection in one turn of the loop, so that a
/// client that keeps its socket readable cannot keep the loop to itself.
const READ_BUDGET_BYTES: usize = 64 * 1024;
/// Echoes owed to one client at which the server stops reading from it.
const HIGH_WATER_BYTES: usize = 1024 * 1024;
const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// The one fault planted in the server, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None: the correct server.
    None,
    /// Echoes every byte as soon as it is read: no lines at all.
    EchoAsArrives,
    /// Ends a line at a bare LF.
    BareLf,
    /// Waits, in the loop, until a write that met a full socket completes.
    BlockingWrite,
    /// Discards whatever a write could not send.
    DropUnsent,
    /// Never stops reading, however much output is owed.
    Unbounded,
    /// Closes at the client's FIN even with echoes owed.
    CloseAtFin,
    /// Reads one connection without a budget, and a heavy sender until it
    /// has sent nothing for 50 ms, however long that takes.
    Unfair,
}

/// A running server; stopped and joined when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts the server with `fault` on an ephemeral loopback port.
    pub fn start(fault: Fault) -> TestServer {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind the test server");
        let addr = listener.local_addr().expect("its address");
        let poll = Poll::new().expect("a poll");
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .expect("register the listener");
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("a waker"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || serve(poll, listener, fault, &flag));
        TestServer {
            addr,
            stop,
            waker,
            handle: Some(handle),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

struct Connection {
    stream: TcpStream,
    /// The unfinished line.
    input: Vec<u8>,
    /// Echoes owed from `sent` on; what is before `sent` is written.
    output: Vec<u8>,
    sent: usize,
    /// Reading stopped before `WouldBlock` because too much is owed.
    paused: bool,
    /// The client's FIN has been read.
    peer_done: bool,
    /// Reading stopped at the turn's budget, before `WouldBlock`.
    more_to_read: bool,
}

impl Connection {
    fn owed(&self) -> usize {
        self.output.len() - self.sent
    }
    fn interest(&self) -> Interest {
        let readable = !self.paused && !self.peer_done;
        match (readable, self.owed() > 0) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            _ => Interest::READABLE,
        }
    }
}

fn serve(mut poll: Poll, listener: TcpListener, fault: Fault, stop: &AtomicBool) {
    let mut connections = Slab::new();
    let mut events = Events::with_capacity(1024);
    // Connections that stopped reading at their budget with bytes still
    // queued: no edge will come for those, so they are served again
    // without waiting.
    let mut again = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let timeout = if again.is_empty() {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        if let Err(err) = poll.poll(&mut events, Some(timeout)) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let mut ready: Vec<usize> = std::mem::take(&mut again);
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_pending(&listener, poll.registry(), &mut connections),
                WAKER => {}
                Token(key) => ready.push(key),
            }
        }
        for key in ready {
            let Some(connection) = connections.get_mut(key) else {
                continue;
            };
            let open = drive(connection, fault).is_ok();
            let interest = connection.interest();
            if !open
                || poll
                    .registry()
                    .reregister(&mut connection.stream, Token(key), interest)
                    .is_err()
            {
                connections.remove(key);
            } else if connection.more_to_read {
                again.push(key);
            }
        }
    }
}

/// The listener is edge-triggered: accept until `WouldBlock`.
fn accept_pending(listener: &TcpListener, registry: &Registry, connections: &mut Slab<Connection>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let entry = connections.vacant_entry();
                if registry
                    .register(&mut stream, Token(entry.key()), Interest::READABLE)
                    .is_ok()
                {
                    entry.insert(Connection {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        sent: 0,
                        paused: false,
                        peer_done: false,
                        more_to_read: false,
                    });
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads until `WouldBlock` (or until paused), echoes, flushes; `Err`
/// closes the connection.
fn drive(connection: &mut Connection, fault: Fault) -> io::Result<()> {
    let mut chunk = [0; 16 * 1024];
    let mut budget = READ_BUDGET_BYTES;
    let (mut read_in_turn, mut lingered) = (0, 0);
    connection.more_to_read = false;
    loop {
        while !connection.paused && !connection.peer_done {
            if budget == 0 && fault != Fault::Unfair {
                connection.more_to_read = true;
                break;
            }
            match connection.stream.read(&mut chunk) {
                Ok(0) => connection.peer_done = true,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    read_in_turn += n;
                    lingered = 0;
                    frame(connection, &chunk[..n], fault)?;
                }
                // The unfair server drains a heavy sender completely: it
                // waits up to 50 ms for more before it moves on, which a
                // client sending without pause never gives it.
                Err(err)
                    if err.kind() == io::ErrorKind::WouldBlock
                        && fault == Fault::Unfair
                        && read_in_turn >= 1024 * 1024
                        && lingered < 50 =>
                {
                    lingered += 1;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
            if fault != Fault::Unbounded && connection.owed() >= HIGH_WATER_BYTES {
                connection.paused = true;
            }
        }
        flush(connection, fault)?;
        // Reading stopped before `WouldBlock`, so no readable edge will
        // come for the bytes already queued: resume on our own.
        if connection.paused && connection.owed() <= HIGH_WATER_BYTES / 2 {
            connection.paused = false;
            continue;
        }
        break;
    }
    if connection.peer_done && (connection.owed() == 0 || fault == Fault::CloseAtFin) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn frame(connection: &mut Connection, bytes: &[u8], fault: Fault) -> io::Result<()> {
    if fault == Fault::EchoAsArrives {
        connection.output.extend_from_slice(bytes);
        return Ok(());
    }
    connection.input.extend_from_slice(bytes);
    let mut start = 0;
    while let Some(end) = line_end(&connection.input[start..], fault) {
        connection
            .output
            .extend_from_slice(&connection.input[start..start + end]);
        start += end;
    }
    connection.input.drain(..start);
    if connection.input.len() >= MAX_LINE_BYTES {
        return Err(io::Error::other("line too long"));
    }
    Ok(())
}

/// The length of the first line in `input`, terminator included.
fn line_end(input: &[u8], fault: Fault) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = input[from..].iter().position(|&b| b == b'\n') {
        let lf = from + at;
        if fault == Fault::BareLf || (lf > 0 && input[lf - 1] == b'\r') {
            return Some(lf + 1);
        }
        from = lf + 1;
    }
    None
}

fn flush(connection: &mut Connection, fault: Fault) -> io::Result<()> {
    while connection.owed() > 0 {
        match connection
            .stream
            .write(&connection.output[connection.sent..])
        {
            Ok(n) => connection.sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => match fault {
                Fault::BlockingWrite => thread::sleep(Duration::from_millis(1)),
                Fault::DropUnsent => connection.sent = connection.output.len(),
                _ => break,
            },
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    if connection.sent == connection.output.len() {
        connection.output.clear();
        connection.sent = 0;
    } else if connection.sent > connection.output.len() / 2 {
        connection.output.drain(..connection.sent);
        connection.sent = 0;
    }
    Ok(())
}
