//! Building a `Server`: its poll instance and waker, its listeners at
//! their reserved tokens, the control plane attached, and the limits it
//! derives; and `StartError`, the reasons it may fail to start.
//!
//! Everything here happens once, before the first turn; `server.rs` is the
//! loop that runs on what this builds.

use std::io;

use log::info;
use mio::net::TcpListener;
use mio::{Interest, Poll, Token, Waker};

use super::clock::Clock;
use super::turn::TurnState;
use super::{LISTENERS, LOG_TARGET, SIGNALS, Server, WAKER};
use crate::config::{Config, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, RESERVED_DESCRIPTORS};
use crate::connections::Connections;
use crate::control::{Control, ShutdownRequests, Wiring};
use crate::listener::{self, BindError, MAX_LISTENERS};
use crate::summary::Summary;

/// A server that could not start.
#[derive(Debug)]
pub enum StartError {
    /// A listening socket could not be set up.
    Listen(BindError),
    /// The poll instance, its waker or the signal handlers could not be set up.
    Setup(io::Error),
}

impl Server {
    /// Binds the listeners and sets up the poll instance.
    ///
    /// # Errors
    ///
    /// `StartError::Listen` if an address cannot be bound (in use, not
    /// permitted); `StartError::Setup` if the system refuses a poll instance
    /// or waker.
    pub fn bind(config: Config) -> Result<Server, StartError> {
        let listeners = listener::bind_all(&config.listen, false).map_err(StartError::Listen)?;
        Server::with_listeners(config, listeners)
    }

    /// Sets up the poll instance around listening sockets made elsewhere
    /// (inherited through socket activation, say); `config.listen` is not
    /// used. Like `bind`, the server takes no signal and notifies nobody.
    ///
    /// # Errors
    ///
    /// `StartError::Setup` if the system refuses a poll instance or waker,
    /// or a listener cannot be registered.
    pub fn with_listeners(
        config: Config,
        listeners: Vec<TcpListener>,
    ) -> Result<Server, StartError> {
        let control =
            Control::new(Wiring::EMBEDDED, config.stats_interval).map_err(StartError::Setup)?;
        Server::with_control(config, listeners, control)
    }

    /// Like `with_listeners`, with the control plane made by the caller:
    /// the daemon's, with signals and systemd, or a worker's. The control
    /// plane, not `config`, decides whether a stats line is logged.
    ///
    /// # Errors
    ///
    /// As `with_listeners`, and if the signal pipe cannot be registered.
    pub fn with_control(
        config: Config,
        mut listeners: Vec<TcpListener>,
        mut control: Control,
    ) -> Result<Server, StartError> {
        if listeners.len() > MAX_LISTENERS {
            return Err(StartError::Setup(io::Error::other(format!(
                "{} listening sockets: at most {MAX_LISTENERS} are served",
                listeners.len()
            ))));
        }
        let label = control.label();
        let poll = Poll::new().map_err(StartError::Setup)?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(StartError::Setup)?;
        let mut local_addrs = Vec::new();
        for (i, listener) in listeners.iter_mut().take(MAX_LISTENERS).enumerate() {
            // Accepted sockets inherit the listener's keepalive settings on
            // Linux (as they do TCP_NODELAY), so set once here, they cost no
            // system call per connection.
            if let Some(idle) = config.tcp_keepalive {
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval(KEEPALIVE_INTERVAL)
                    .with_retries(KEEPALIVE_PROBES);
                socket2::SockRef::from(&*listener)
                    .set_tcp_keepalive(&keepalive)
                    .map_err(StartError::Setup)?;
            }
            poll.registry()
                .register(listener, Token(LISTENERS.start + i), Interest::READABLE)
                .map_err(StartError::Setup)?;
            let address = listener.local_addr().map_err(StartError::Setup)?;
            info!(target: LOG_TARGET, "{label}listening on {address}");
            local_addrs.push(address);
        }
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| derived_max_connections(listeners.len()));
        info!(
            target: LOG_TARGET,
            "{label}echod {}: framing {}, max-line-bytes {}, max-pending-bytes {}, max-connections {}, read-budget {}",
            env!("CARGO_PKG_VERSION"),
            config.framing,
            config.max_line_bytes,
            config.max_pending_bytes,
            max_connections,
            config.read_budget_bytes
        );
        control
            .attach(poll.registry(), SIGNALS, LOG_TARGET)
            .map_err(StartError::Setup)?;
        Ok(Server {
            poll,
            listeners,
            local_addrs,
            connections: Connections::new(
                config.limits(),
                config.timeouts(),
                config.max_memory.unwrap_or(usize::MAX),
                config.max_connections_per_ip.unwrap_or(usize::MAX),
            )
            .with_access(config.access.clone())
            .with_proxy_from(config.proxy_from.clone()),
            max_connections,
            shutdown_timeout: config.shutdown_timeout,
            shutdowns: ShutdownRequests::new(waker),
            control,
            clock: Clock::reading(0),
            turn: TurnState::new(
                u64::try_from(config.shutdown_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            totals: Summary::default(),
            metrics: None,
            upgrade: None,
        })
    }
}

/// The default for `max-connections`: the open-file limit, less the
/// descriptors echod needs for itself.
pub(crate) fn derived_max_connections(n_listeners: usize) -> usize {
    let soft = rlimit::Resource::NOFILE.get_soft().unwrap_or(1024);
    soft.saturating_sub(RESERVED_DESCRIPTORS + n_listeners as u64)
        .clamp(1, usize::MAX as u64) as usize
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Listen(err) => write!(f, "{err}"),
            StartError::Setup(err) => write!(f, "cannot set up the event loop: {err}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Listen(err) => Some(err),
            StartError::Setup(err) => Some(err),
        }
    }
}
