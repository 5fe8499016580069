//! Listening sockets: created with `socket2` so that every option is set on
//! purpose before the socket is handed to `mio`.
//!
//! Options, and why:
//! - non-blocking and close-on-exec from the start (`SOCK_NONBLOCK`,
//!   `SOCK_CLOEXEC`), so there is no window in which either is missing;
//! - `SO_REUSEADDR`, so a restart is not refused while old connections sit in
//!   TIME_WAIT;
//! - `IPV6_V6ONLY` on IPv6 sockets, so `[::]:port` and `0.0.0.0:port` are two
//!   independent listeners on every host, whatever the sysctl default;
//! - `TCP_NODELAY`, which accepted sockets inherit on Linux, so that echoes
//!   are never held back by Nagle's algorithm without a system call per
//!   connection to say so;
//! - a backlog of `BACKLOG` (the kernel caps it at `net.core.somaxconn`);
//! - with `--workers` above 1 only, `SO_REUSEPORT`, so that each worker has
//!   its own socket on the same address and the kernel spreads connections
//!   among them. (With one worker it is not set, so a second echod process
//!   cannot bind the same port by mistake.)
//!
//! `SO_REUSEPORT` lets any process of the same user join the address, so a
//! second `echod --workers 2` on a port the first serves would bind without
//! an error and take half its connections. Before binding with it,
//! `refuse_if_answered` connects to each address: if anything accepts, the
//! address is taken and echod does not start. The check and the bind are
//! not one step; two echods started within the same few microseconds could
//! both pass it. A lock held for the address's lifetime would close that
//! window but would need a resource outside the socket (a file, an abstract
//! Unix socket) that no other server honours, while the probe catches any
//! process that answers, which is the mistake operators make.
//!
//! Sockets inherited through systemd socket activation were created by the
//! service manager with the options of the `.socket` unit; `adopt` sets the
//! two that echod cannot do without.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use log::warn;
use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Listen;

/// Most listening sockets echod serves, bound or inherited. The event loop
/// keeps a range of this many tokens for them, and the command line accepts
/// no more `--listen` addresses. 64 is far more addresses than a host has
/// reason to listen on.
pub const MAX_LISTENERS: usize = 64;

/// Connections the kernel may queue, fully established, before echod accepts
/// them. Large enough to absorb a burst of connects while one turn of the
/// loop is busy.
pub const BACKLOG: i32 = 1024;

/// How long `refuse_if_answered` waits for each connect. A listener on this
/// host answers a connect in microseconds, and a closed port refuses at
/// once; only a firewall that drops packets to ourselves makes the probe
/// wait this long, and then it concludes nobody answers.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// A listening socket that could not be set up.
#[derive(Debug)]
pub struct BindError {
    /// The address echod tried to listen on.
    pub address: SocketAddr,
    /// What the system said.
    pub source: io::Error,
}

/// Binds every address `listen` names.
///
/// With `Listen::Default`, an IPv6 loopback that the host does not have is
/// skipped with a warning. With port 0, the IPv6 listener takes the port the
/// IPv4 one was given when it can, so one number reaches both.
///
/// # Errors
///
/// The first address that cannot be bound (in use, not permitted, not
/// available); listeners bound before it are closed.
///
/// With `reuse_port`, every socket also gets `SO_REUSEPORT`, so that the
/// listeners of several workers can share each address and the kernel
/// spreads new connections among them.
pub fn bind_all(listen: &Listen, reuse_port: bool) -> Result<Vec<TcpListener>, BindError> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    for mut address in listen.addresses() {
        let defaults = matches!(listen, Listen::Default { .. });
        if defaults && address.port() == 0 {
            if let Some(first) = listeners.first().and_then(|l| l.local_addr().ok()) {
                address.set_port(first.port());
            }
        }
        let bound = bind(address, reuse_port).or_else(|err| match err.kind() {
            io::ErrorKind::AddrInUse if defaults && listen_port(listen) == 0 => {
                bind(SocketAddr::new(address.ip(), 0), reuse_port)
            }
            _ => Err(err),
        });
        match bound {
            Ok(listener) => listeners.push(listener),
            Err(err) if defaults && address.is_ipv6() && ipv6_unavailable(&err) => {
                warn!("not listening on {address}: IPv6 is unavailable on this host ({err})");
            }
            Err(source) => return Err(BindError { address, source }),
        }
    }
    Ok(listeners)
}

/// Fails if some process already accepts connections on an address that
/// `listen` names, so that binding it with `SO_REUSEPORT` would silently
/// share it (see the module docs). An address with port 0 is skipped: the
/// kernel gives a port nobody uses. A wildcard address is probed at the
/// loopback address of its family, where a listener on the wildcard
/// answers too.
///
/// # Errors
///
/// The first address on which a connect succeeded, as an `AddrInUse`
/// error that says another process answers there.
pub fn refuse_if_answered(listen: &Listen) -> Result<(), BindError> {
    for address in listen.addresses() {
        if address.port() == 0 {
            continue;
        }
        let target = match address.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), address.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), address.port())
            }
            _ => address,
        };
        // Refused, unreachable or timed out: nobody answers, and the bind
        // that follows has the last word. The connection is closed at once;
        // the process that answered sees a client that sent nothing.
        if TcpStream::connect_timeout(&target, PROBE_TIMEOUT).is_ok() {
            return Err(BindError {
                address,
                source: io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process already accepts connections there",
                ),
            });
        }
    }
    Ok(())
}

/// Prepares a listening socket echod did not create (socket activation) for
/// the event loop: non-blocking, since systemd passes sockets in blocking
/// mode and a blocking `accept` would stall the loop; and `TCP_NODELAY`, so
/// echoes are not held back whatever the unit's `NoDelay=` says.
///
/// # Errors
///
/// If either option cannot be set.
pub fn adopt(listener: std::net::TcpListener) -> io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(TcpListener::from_std(listener))
}

/// Creates one listening socket on `address`.
fn bind(address: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn listen_port(listen: &Listen) -> u16 {
    match listen {
        Listen::Default { port } => *port,
        Listen::Addresses(_) => 0,
    }
}

/// Errors that mean "no IPv6 here" rather than "something is wrong": the
/// address family is not supported, or ::1 is not configured.
fn ipv6_unavailable(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::AddrNotAvailable
        || matches!(
            err.raw_os_error(),
            Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
        )
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.address, self.source)
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
