//! The floor: the least a readiness server can do and still echo correctly.
//! Every table of this benchmark shows echod's distance to it, so that what
//! echod's design costs can be told apart from what the kernel and the
//! loopback cost anyone.
//!
//! One thread, one epoll instance, one buffer for the whole server, and
//! nothing else: no limits, no logging, no timers, no line scanning. A
//! readable event is a `read` into the shared buffer and a `write` of
//! exactly what was read, again while reads fill the buffer. Echoing every byte back in order preserves the
//! line framing for a client that sends whole lines, as `echo-bench` does, so
//! its byte-by-byte verification holds; what the floor skips is the search
//! for terminators and holding back an unfinished line, which are part of
//! echod's distance to it.
//!
//! Correct, if minimal, about backpressure: when the socket takes less than
//! was read, the rest moves into the connection, which then waits for
//! `EPOLLOUT` and reads nothing until the rest is sent. So a connection
//! holds at most one read's worth, and only while its peer is not reading.
//!
//! Interest is level-triggered (`epoll(7)`): a socket with bytes left is
//! reported again by the next wait, so the floor may stop after a short read
//! without the read ending in `EAGAIN` that edge-triggered draining costs,
//! and makes one read and one write per ping-pong line. It reads again after
//! a full read, to save a wait per buffer in bulk transfers, and with no
//! budget: a client that keeps the buffer full and reads its echoes as fast
//! keeps the others waiting, which echod's per-turn read budget prevents.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{SocketFlags, sockopt};

/// Bytes one read may take: echod's read size, so that bulk transfers take
/// the same number of system calls in both.
const READ_BYTES: usize = 16 * 1024;
/// Events one wait may return: echod's events capacity.
const EVENTS_CAPACITY: usize = 1024;

/// One client. Its key in epoll and in the server's table is its descriptor.
struct Connection {
    socket: OwnedFd,
    /// Echo bytes the socket did not take. While this is not empty the
    /// connection is registered for `EPOLLOUT` only and reads nothing, so it
    /// never holds more than one read.
    unsent: Vec<u8>,
}

/// What a readiness handler decided about its connection.
enum After {
    KeepOpen,
    Close,
}

/// Serves on `listener` (bound, and announced, by the caller: connections
/// that come before the loop starts wait in its backlog). Runs until killed.
///
/// # Errors
///
/// Setting up the listener or epoll, a failed wait, or a failed accept other
/// than a connection aborted before it was taken (the floor has no limits,
/// so running out of descriptors ends it).
pub fn serve(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let epoll = epoll::create(CreateFlags::CLOEXEC)?;
    let listener_key = key(&listener);
    epoll::add(
        &epoll,
        &listener,
        EventData::new_u64(listener_key),
        EventFlags::IN,
    )?;

    let mut buf = vec![0; READ_BYTES];
    // Indexed by descriptor, as a C server's table of clients would be.
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut events = Vec::with_capacity(EVENTS_CAPACITY);
    loop {
        events.clear();
        match epoll::wait(&epoll, spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
        for event in &events {
            let event_key = event.data.u64();
            if event_key == listener_key {
                accept_pending(&epoll, &listener, &mut connections)?;
                continue;
            }
            let fd = event_key as usize;
            // A connection closed earlier in this batch has no entry (or a
            // new one on a reused descriptor, for which the event is merely
            // spurious: its read or write says `EAGAIN`).
            let Some(connection) = connections.get_mut(fd).and_then(Option::as_mut) else {
                continue;
            };
            let after = if connection.unsent.is_empty() {
                echo(&epoll, connection, &mut buf)
            } else {
                flush(&epoll, connection)
            };
            if let After::Close = after {
                // Dropping the socket closes it, which also removes it from
                // epoll: nothing else holds a copy of the descriptor.
                connections[fd] = None;
            }
        }
    }
}

/// Accepts until the queue is empty (one readable event on the listener may
/// stand for many connections), registering each for reading.
fn accept_pending(
    epoll: &OwnedFd,
    listener: &TcpListener,
    connections: &mut Vec<Option<Connection>>,
) -> io::Result<()> {
    loop {
        let socket = match rustix::net::accept_with(listener, SocketFlags::NONBLOCK) {
            Ok(socket) => socket,
            Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR | Errno::CONNABORTED) => continue,
            Err(err) => return Err(err.into()),
        };
        // Like every peer: an echo goes out at once, not after Nagle's delay.
        sockopt::set_tcp_nodelay(&socket, true)?;
        let fd = key(&socket);
        epoll::add(epoll, &socket, EventData::new_u64(fd), EventFlags::IN)?;
        let index = fd as usize;
        if connections.len() <= index {
            connections.resize_with(index + 1, || None);
        }
        connections[index] = Some(Connection {
            socket,
            unsent: Vec::new(),
        });
    }
}

/// A read into the shared buffer and a write of what it read, repeated while
/// reads fill the buffer. What the socket does not take is kept, and the
/// connection waits to write it.
fn echo(epoll: &OwnedFd, connection: &mut Connection, buf: &mut [u8]) -> After {
    loop {
        let read = match rustix::io::read(&connection.socket, &mut *buf) {
            // The peer finished sending, and nothing is owed to it: a
            // connection with unsent bytes is not reading.
            Ok(0) => return After::Close,
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => return After::KeepOpen,
            Err(_) => return After::Close,
        };
        let sent = match rustix::io::write(&connection.socket, &buf[..read]) {
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => 0,
            Err(_) => return After::Close,
        };
        if sent < read {
            connection.unsent.extend_from_slice(&buf[sent..read]);
            return interest(epoll, connection, EventFlags::OUT);
        }
        // A short read emptied the socket; had it not, the next wait would
        // report it again (level-triggered).
        if read < buf.len() {
            return After::KeepOpen;
        }
    }
}

/// Writes what the socket did not take before; once all of it is gone, the
/// connection reads again.
fn flush(epoll: &OwnedFd, connection: &mut Connection) -> After {
    match rustix::io::write(&connection.socket, &connection.unsent) {
        Ok(n) => drop(connection.unsent.drain(..n)),
        Err(Errno::AGAIN | Errno::INTR) => return After::KeepOpen,
        Err(_) => return After::Close,
    }
    if !connection.unsent.is_empty() {
        return After::KeepOpen;
    }
    interest(epoll, connection, EventFlags::IN)
}

/// Replaces the connection's registered interest.
fn interest(epoll: &OwnedFd, connection: &Connection, flags: EventFlags) -> After {
    let data = EventData::new_u64(key(&connection.socket));
    match epoll::modify(epoll, &connection.socket, data, flags) {
        Ok(()) => After::KeepOpen,
        Err(_) => After::Close,
    }
}

/// The epoll key of a socket: its descriptor, which is never negative.
fn key(socket: &impl AsRawFd) -> u64 {
    socket.as_raw_fd() as u64
}
