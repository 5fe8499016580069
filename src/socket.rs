//! A client's socket as the event loop uses it: mio's stream for readiness,
//! with reads and writes made as direct system calls; and mio's registry
//! and listener as `Connections` sees them.
//!
//! Reads and writes are the only system calls made per echoed line, so their
//! cost in user space matters. `std`'s `read` on a socket goes through libc's
//! `recv`, which, in a process with more than one thread (echod has its log
//! relay), brackets every call with cancellation-point bookkeeping that costs
//! more instructions than echod's own handling of a line. `rustix` makes the
//! same `recvfrom` and `sendto` calls directly; the kernel sees no difference.
//! `close` is a cancellation point too, so the socket is closed the same way
//! when it is dropped (every churning client's last system call).

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::IntoRawFd;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

use crate::connection::Stream;
use crate::connections::{Listener, Registrar};

/// An accepted, non-blocking TCP connection. Its descriptor is closed when
/// it is dropped, which also takes it out of the epoll set.
#[derive(Debug)]
pub struct Socket(ManuallyDrop<TcpStream>);

impl Socket {
    /// Wraps an accepted stream (already non-blocking, as mio's are).
    pub fn new(stream: TcpStream) -> Socket {
        Socket(ManuallyDrop::new(stream))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the stream is taken once, here, and never touched again:
        // `self` is being dropped.
        #[allow(unsafe_code)]
        let stream = unsafe { ManuallyDrop::take(&mut self.0) };
        let fd = stream.into_raw_fd();
        // SAFETY: `fd` is the stream's own descriptor, open, and owned by
        // nothing else now that the stream has given it up: closing it is
        // what dropping the stream would have done. `close` reports no
        // error worth acting on for a socket (the descriptor is gone
        // either way), as `OwnedFd`'s drop ignores it too.
        #[allow(unsafe_code)]
        unsafe {
            rustix::io::close(fd);
        }
    }
}

/// Its descriptor, for an upgrade to hand over (`server/upgrade.rs`).
impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _) = rustix::net::recv(&*self.0, buf, RecvFlags::empty())?;
        Ok(n)
    }
}

impl Write for Socket {
    /// `MSG_NOSIGNAL`: a peer that has gone away is reported as `EPIPE` on
    /// this connection, never as a SIGPIPE to the process.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(&*self.0, buf, SendFlags::NOSIGNAL)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Socket {
    fn shutdown_write(&self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }

    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _) = rustix::net::recv(&*self.0, buf, RecvFlags::PEEK)?;
        Ok(n)
    }
}

impl Source for Socket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.0.register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.0.reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.0.deregister(registry)
    }
}

/// The poll instance's registry, as `Connections` uses it: a connection's
/// token is its slab key.
impl<S: Source> Registrar<S> for Registry {
    fn register(&self, stream: &mut S, key: usize, interest: Interest) -> io::Result<()> {
        Registry::register(self, stream, Token(key), interest)
    }

    fn reregister(&self, stream: &mut S, key: usize, interest: Interest) -> io::Result<()> {
        Registry::reregister(self, stream, Token(key), interest)
    }

    fn deregister(&self, stream: &mut S) -> io::Result<()> {
        Registry::deregister(self, stream)
    }
}

/// mio's listener hands out `Socket`s: accepted non-blocking and
/// close-on-exec in one `accept4`, as mio's own `accept` does, but made
/// directly, for the reason the module docs give for reads (`accept4` is a
/// cancellation point too).
impl Listener<Socket> for TcpListener {
    fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let (fd, peer) = rustix::net::acceptfrom_with(self, flags)?;
        // A TCP listener's peers are IP addresses; were one not, that one
        // connection fails (and is closed here), not the listener.
        let peer = peer
            .and_then(|peer| SocketAddr::try_from(peer).ok())
            .ok_or_else(|| io::Error::other("accepted a connection without an IP address"))?;
        let stream = TcpStream::from_std(std::net::TcpStream::from(fd));
        Ok((Socket::new(stream), peer))
    }
}
