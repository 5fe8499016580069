//! Closed connections counted by why they closed: what the close lines'
//! reasons add up to on the stats line, in the summary and in the metrics
//! (`echod_connections_closed_total{reason}`), and which closes are a
//! probe's.

use std::fmt;
use std::ops::AddAssign;

use super::counted;
use crate::connection::CloseReason;

/// Closed connections counted by why they closed. Each close counts once:
/// a connect-then-close health check counts as a probe and under no reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Closes {
    /// The client finished and every echo was delivered.
    pub peer_finished: u64,
    /// A line exceeded `max-line-bytes`.
    pub line_too_long: u64,
    /// No bytes moved for `idle-timeout`.
    pub idle_timeout: u64,
    /// Owed echoes not taken for `send-timeout`.
    pub send_timeout: u64,
    /// A line not finished within `line-timeout`.
    pub line_timeout: u64,
    /// Evicted when the memory budget was spent.
    pub evicted: u64,
    /// The allocator refused the connection memory.
    pub out_of_memory: u64,
    /// Quiet the longest at max-connections: its slot went to a new client.
    pub displaced: u64,
    /// Closed by a graceful shutdown after delivering every echo.
    pub server_shutdown: u64,
    /// Cut off when the shutdown timeout expired.
    pub shutdown_timeout: u64,
    /// A socket error, usually a reset by the client.
    pub error: u64,
    /// Under `--proxy-protocol`: the first bytes were no PROXY header.
    pub proxy_header_malformed: u64,
    /// Under `--proxy-protocol`: no whole PROXY header in time.
    pub proxy_header_timeout: u64,
    /// Under `--proxy-protocol`: the client the header named was denied by
    /// the access rules.
    pub denied: u64,
    /// Under `--proxy-protocol`: the client the header named already had
    /// `max-connections-per-ip` open.
    pub max_connections_per_ip: u64,
    /// Connections whose client closed (or reset) them without ever sending
    /// a byte: the TCP health checks of load balancers and supervisors.
    pub probes: u64,
}

impl Closes {
    /// Counts one close. `received_nothing` says that the client never sent
    /// a byte; if it also closed the connection itself, it was a probe.
    pub fn record(&mut self, reason: &CloseReason, received_nothing: bool) {
        let counter = match reason {
            CloseReason::PeerFinished | CloseReason::Io(_) if received_nothing => &mut self.probes,
            CloseReason::PeerFinished => &mut self.peer_finished,
            CloseReason::LineTooLong => &mut self.line_too_long,
            CloseReason::IdleTimeout => &mut self.idle_timeout,
            CloseReason::SendTimeout => &mut self.send_timeout,
            CloseReason::LineTimeout => &mut self.line_timeout,
            CloseReason::Evicted => &mut self.evicted,
            CloseReason::OutOfMemory => &mut self.out_of_memory,
            CloseReason::Displaced => &mut self.displaced,
            CloseReason::ServerShutdown => &mut self.server_shutdown,
            CloseReason::ShutdownTimeout => &mut self.shutdown_timeout,
            CloseReason::ProxyHeaderMalformed => &mut self.proxy_header_malformed,
            CloseReason::ProxyHeaderTimeout => &mut self.proxy_header_timeout,
            CloseReason::Denied => &mut self.denied,
            CloseReason::TooManyFromAddress => &mut self.max_connections_per_ip,
            CloseReason::Io(_) => &mut self.error,
        };
        *counter += 1;
    }

    /// Whether this close is a probe's: the client closed or reset the
    /// connection without sending anything.
    pub fn is_probe(reason: &CloseReason, received_nothing: bool) -> bool {
        received_nothing && matches!(reason, CloseReason::PeerFinished | CloseReason::Io(_))
    }
}

/// `closed: 7 peer finished, 0 line too long, ...; 4 probes`: the closes by
/// reason, as the stats line and the summary both end.
impl fmt::Display for Closes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closed: {} peer finished, {} line too long, {} idle timeout, {} send timeout, \
             {} line timeout, {} evicted for memory, {} out of memory, {} displaced, \
             {} server shutdown, {} shutdown timeout, {} error; {}",
            self.peer_finished,
            self.line_too_long,
            self.idle_timeout,
            self.send_timeout,
            self.line_timeout,
            self.evicted,
            self.out_of_memory,
            self.displaced,
            self.server_shutdown,
            self.shutdown_timeout,
            self.error,
            counted(self.probes, "probe"),
        )?;
        // Only behind a balancer (`--proxy-protocol`) can these happen:
        // shown once one has, so that the usual line stays as it was.
        let proxy = [
            (self.proxy_header_malformed, "malformed PROXY header"),
            (self.proxy_header_timeout, "no PROXY header in time"),
            (self.denied, "denied"),
            (self.max_connections_per_ip, "max-connections-per-ip"),
        ];
        if proxy.iter().any(|&(n, _)| n > 0) {
            f.write_str("; after the PROXY header:")?;
            for (i, (n, what)) in proxy.into_iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                write!(f, "{sep}{n} {what}")?;
            }
        }
        Ok(())
    }
}

impl AddAssign for Closes {
    fn add_assign(&mut self, other: Closes) {
        self.peer_finished += other.peer_finished;
        self.line_too_long += other.line_too_long;
        self.idle_timeout += other.idle_timeout;
        self.send_timeout += other.send_timeout;
        self.line_timeout += other.line_timeout;
        self.evicted += other.evicted;
        self.out_of_memory += other.out_of_memory;
        self.displaced += other.displaced;
        self.server_shutdown += other.server_shutdown;
        self.shutdown_timeout += other.shutdown_timeout;
        self.error += other.error;
        self.proxy_header_malformed += other.proxy_header_malformed;
        self.proxy_header_timeout += other.proxy_header_timeout;
        self.denied += other.denied;
        self.max_connections_per_ip += other.max_connections_per_ip;
        self.probes += other.probes;
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn probes_are_closes_without_a_byte_received() {
        let mut closes = Closes::default();
        let reset = || CloseReason::Io(io::ErrorKind::ConnectionReset.into());
        closes.record(&CloseReason::PeerFinished, true);
        closes.record(&reset(), true);
        closes.record(&CloseReason::PeerFinished, false);
        closes.record(&reset(), false);
        // A client that never spoke but did not close is no probe.
        closes.record(&CloseReason::IdleTimeout, true);
        closes.record(&CloseReason::ServerShutdown, true);
        closes.record(&CloseReason::LineTooLong, false);
        closes.record(&CloseReason::ShutdownTimeout, false);
        closes.record(&CloseReason::SendTimeout, false);
        closes.record(&CloseReason::LineTimeout, false);
        closes.record(&CloseReason::Evicted, false);
        closes.record(&CloseReason::OutOfMemory, false);
        closes.record(&CloseReason::Displaced, false);
        closes.record(&CloseReason::ProxyHeaderMalformed, false);
        closes.record(&CloseReason::ProxyHeaderTimeout, true);
        closes.record(&CloseReason::Denied, false);
        closes.record(&CloseReason::TooManyFromAddress, false);
        let expected = Closes {
            peer_finished: 1,
            line_too_long: 1,
            idle_timeout: 1,
            send_timeout: 1,
            line_timeout: 1,
            evicted: 1,
            out_of_memory: 1,
            displaced: 1,
            server_shutdown: 1,
            shutdown_timeout: 1,
            error: 1,
            probes: 2,
            proxy_header_malformed: 1,
            proxy_header_timeout: 1,
            denied: 1,
            max_connections_per_ip: 1,
        };
        assert_eq!(closes, expected);
        assert!(Closes::is_probe(&reset(), true));
        assert!(!Closes::is_probe(&CloseReason::IdleTimeout, true));
        assert!(!Closes::is_probe(&CloseReason::PeerFinished, false));
    }
}
