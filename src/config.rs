//! The daemon's settings: `Config`, what each setting may be, and its default.
//!
//! `Config` is plain data, the same whether `cli::parse_args` built it from
//! a command line or a test or another program built it in code. Each
//! `DEFAULT_*` constant says what it sets, how, and why that value; the
//! bounds beside them are the ones `cli` enforces. Nothing here touches a
//! socket or reads the command line. The defaults are repeated in `--help`
//! (`cli::USAGE`) and in the README's options table.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use log::LevelFilter;

use crate::access::Access;
use crate::connection::{Limits, TURN_READ_BUDGET_BYTES, Timeouts};
use crate::framing::Framing;

/// Port for the default addresses. Unassigned by IANA, easy to type.
pub const DEFAULT_PORT: u16 = 12321;

/// Longest line, terminator included, in bytes. A client that sends a longer
/// line has every complete line before it echoed, then is disconnected with a
/// warning. 64 KiB holds any line a person or a health check would send, and
/// bounds what a client can make echod hold without ever ending a line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Echoes owed to one client, in bytes, at which echod stops reading from it
/// (backpressure); it reads again once the client has taken half of them. A
/// client that stops reading is paused and loses nothing; it is disconnected
/// only if `idle-timeout` is set and nothing moves for that long.
/// 1 MiB keeps a bulk sender busy through a loopback round trip while bounding
/// a stalled reader's cost; with `max-line-bytes` it bounds a connection's
/// buffer (see `Limits::max_buffer_bytes`).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 1024 * 1024;

/// How long echod delivers owed echoes after SIGINT or SIGTERM before it
/// closes what is left and exits. Five seconds is inside the grace period of
/// every common supervisor before SIGKILL (`docker stop` 10 s, Kubernetes
/// 30 s, systemd 90 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The memory budget (`max-memory`): the most buffer storage all
/// connections together may hold, in bytes. Past it, echod stops reading
/// from the connections that need more (their clients feel TCP
/// backpressure, as at `max-pending-bytes`), and evicts the ones holding
/// the most without their clients making progress; a client whose echoes
/// go straight out needs none of it. 256 MiB holds a full 1 MiB backlog for
/// about 230 clients at once, and keeps a flood of clients that never read
/// from taking the host's memory (without it, about 1.1 MB each: 21 GiB at
/// the default max-connections).
pub const DEFAULT_MAX_MEMORY: usize = 256 << 20;

/// How long echoes may be owed to a client that takes none of them before
/// echod closes the connection (`send-timeout`), like nginx's `send_timeout`.
/// Backpressure pauses a client that does not read; this ends one that never
/// will (gone, or a reader stopped on purpose), which would otherwise hold
/// its owed echoes and its connection slot forever. A client that takes even
/// one byte in that time restarts the clock, so a slow reader is never cut.
/// 60 seconds is nginx's default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a line may take from its first byte to its end before echod
/// closes the connection (`line-timeout`), like nginx's
/// `client_header_timeout`: a client that sends one byte every few seconds
/// (slowloris) cannot hold a slot and a line's buffer forever. No person at
/// a keyboard and no program takes a minute over one line.
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// TCP keepalive on accepted sockets (`tcp-keepalive`): after this long
/// with nothing sent either way, the kernel probes the peer every
/// `KEEPALIVE_INTERVAL`, and after `KEEPALIVE_PROBES` unanswered probes the
/// connection fails and echod closes it. It ends connections to peers that
/// vanished (a host powered off, a path gone) and would otherwise stay open
/// forever, silent. 60 seconds detects one within about two minutes; redis
/// uses 300.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Time between keepalive probes once they have started.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered keepalive probes after which the kernel declares the peer gone.
pub const KEEPALIVE_PROBES: u32 = 6;

/// Descriptors kept out of `max-connections` when it is derived from the
/// open-file limit, besides one per listener: the poll instance, its waker,
/// the signal pipe, standard streams and the log relay, with room to spare.
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// Shortest `stats_interval`: one line a tenth of a second is already more
/// than anyone reads, and a shorter one would be a flood.
pub const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);

/// Most `workers`: far more event loops than cores only adds threads that
/// compete for the same cores.
pub const MAX_WORKERS: usize = 256;

/// Largest `max_memory`.
pub const MAX_MEMORY_BYTES: usize = 1 << 40;

/// Largest `max_line_bytes` and `max_pending_bytes`, so that buffer sizes
/// stay far from overflow on any platform.
pub const MAX_LIMIT_BYTES: usize = 1 << 30;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// 127.0.0.1 and ::1 on this port. If the host has no IPv6, echod warns
    /// and serves IPv4 alone.
    Default {
        /// The port; 0 lets the OS choose one.
        port: u16,
    },
    /// Exactly these addresses; any that cannot be bound is an error.
    Addresses(Vec<SocketAddr>),
}

/// The daemon's configuration.
///
/// The command line (`cli::parse_args`) only ever builds values inside the
/// bounds each field names; a `Config` built in code should keep to them too.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening addresses; at most `listener::MAX_LISTENERS` of them.
    pub listen: Listen,
    /// How the input is divided into lines.
    pub framing: Framing,
    /// Longest line, terminator included: 2 (a terminator and one byte
    /// before it) to `MAX_LIMIT_BYTES`.
    pub max_line_bytes: usize,
    /// Echoes owed to one client at which reading from it pauses: 1 to
    /// `MAX_LIMIT_BYTES`.
    pub max_pending_bytes: usize,
    /// Bytes one connection may read in one turn of the event loop before
    /// the others get theirs: the trade between a bulk sender's throughput
    /// and everyone else's latency (`--read-budget`, default
    /// `TURN_READ_BUDGET_BYTES`, 64 KiB). A read takes up to 16 KiB, so a
    /// budget below that still makes one read a turn.
    pub read_budget_bytes: usize,
    /// Connections served at once, at least 1; `None` derives it from the
    /// open-file limit, less `RESERVED_DESCRIPTORS` and one per listener.
    pub max_connections: Option<usize>,
    /// Close a connection after this long with no bytes moving; `None`:
    /// never. Never `Some(Duration::ZERO)`.
    pub idle_timeout: Option<Duration>,
    /// Connections one address (one /64 for IPv6) may hold at once, at
    /// least 1; `None`: no such limit.
    pub max_connections_per_ip: Option<usize>,
    /// The memory budget over every connection's buffer storage, at most
    /// `MAX_MEMORY_BYTES`; `None`: no budget.
    pub max_memory: Option<usize>,
    /// Close a connection that owes echoes and has had none of them taken
    /// for this long; `None`: never. Never `Some(Duration::ZERO)`.
    pub send_timeout: Option<Duration>,
    /// Close a connection whose unfinished line began this long ago;
    /// `None`: never. Never `Some(Duration::ZERO)`.
    pub line_timeout: Option<Duration>,
    /// TCP keepalive idle time on accepted sockets; `None`: no keepalive.
    /// Never `Some(Duration::ZERO)`.
    pub tcp_keepalive: Option<Duration>,
    /// How long to deliver owed echoes after a shutdown request; zero
    /// closes at once.
    pub shutdown_timeout: Duration,
    /// Log a one-line summary this often, at least `MIN_STATS_INTERVAL`;
    /// `None`: never.
    pub stats_interval: Option<Duration>,
    /// Event loops, each on its own thread with its own listening sockets:
    /// 1 (the classic single loop) to `MAX_WORKERS`.
    pub workers: usize,
    /// Log level; `None` defers to `RUST_LOG`, then to `info`.
    pub log_level: Option<LevelFilter>,
    /// Where the Prometheus endpoint listens (`metrics.rs`), at most
    /// `listener::MAX_LISTENERS` addresses; empty: no endpoint.
    pub metrics_listen: Vec<SocketAddr>,
    /// Which client addresses may connect (`--allow`, `--deny`); the
    /// default admits all.
    pub access: Access,
    /// Under `--proxy-protocol`, the sources whose PROXY headers are
    /// believed (`--proxy-from`, loopback by default); `None`: connections
    /// carry no header.
    pub proxy_from: Option<Access>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: Listen::Default { port: DEFAULT_PORT },
            framing: Framing::Crlf,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            read_budget_bytes: TURN_READ_BUDGET_BYTES,
            max_connections: None,
            idle_timeout: None,
            max_connections_per_ip: None,
            max_memory: Some(DEFAULT_MAX_MEMORY),
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            line_timeout: Some(DEFAULT_LINE_TIMEOUT),
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            stats_interval: None,
            workers: 1,
            log_level: None,
            metrics_listen: Vec::new(),
            access: Access::default(),
            proxy_from: None,
        }
    }
}

impl Config {
    /// The per-connection limits this configuration sets.
    pub fn limits(&self) -> Limits {
        Limits {
            read_budget_bytes: self.read_budget_bytes,
            ..Limits::new(self.framing, self.max_line_bytes, self.max_pending_bytes)
        }
    }

    /// The per-connection timeouts this configuration sets, in milliseconds.
    pub fn timeouts(&self) -> Timeouts {
        let ms = |timeout: Option<Duration>| {
            timeout.map_or(0, |timeout| {
                u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
            })
        };
        Timeouts {
            idle_ms: ms(self.idle_timeout),
            send_ms: ms(self.send_timeout),
            line_ms: ms(self.line_timeout),
        }
    }
}

impl Listen {
    /// The addresses to bind, in order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match self {
            Listen::Default { port } => vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, *port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, *port)),
            ],
            Listen::Addresses(addresses) => addresses.clone(),
        }
    }
}
