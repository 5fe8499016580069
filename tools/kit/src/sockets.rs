//! Another process's TCP sockets, seen from outside: the table in
//! `/proc/PID/net/tcp` (and `tcp6`) as that process's network namespace
//! has it, which of its descriptors is which socket, and a duplicate of one
//! of them (`pidfd_getfd(2)`) so that its socket options can be read.
//!
//! This is how a harness checks what echod did to a connection without
//! asking echod: whether it still holds the socket (a descriptor refers to
//! it), and whether keepalive or a user timeout is set on it. Nothing here
//! changes the other process's sockets.
//!
//! Also the one namespace move a harness needs: this thread into a named
//! network namespace (`ip netns add NAME`), so that the sockets it creates
//! from then on live there.
//!
//! The table's format is in `proc_net_tcp(5)` (the kernel's
//! `Documentation/networking/proc_net_tcp.rst`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};
use rustix::thread::LinkNameSpaceType;

/// `st` of an established connection in `/proc/net/tcp`.
pub const TCP_ESTABLISHED: u8 = 0x01;
/// `st` of a listening socket.
pub const TCP_LISTEN: u8 = 0x0a;
/// `tr` when only the socket's own timer is armed: on an established
/// connection that is the keepalive timer.
pub const TIMER_KEEPALIVE: u8 = 2;

/// One row of `/proc/PID/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// The local end (`local_address`).
    pub local: SocketAddr,
    /// The remote end (`rem_address`); `0.0.0.0:0` for a listener.
    pub remote: SocketAddr,
    /// The TCP state (`st`): [`TCP_ESTABLISHED`], [`TCP_LISTEN`], ...
    pub state: u8,
    /// Bytes queued to send but not yet acknowledged (`tx_queue`).
    pub send_queue_bytes: u64,
    /// Bytes received but not yet read (`rx_queue`).
    pub receive_queue_bytes: u64,
    /// Which timer is pending (`tr`): 0 none, 1 retransmission, 2 the
    /// socket's own timer ([`TIMER_KEEPALIVE`]), 3 TIME_WAIT, 4 zero-window
    /// probe.
    pub timer: u8,
    /// The socket's inode. 0 when no descriptor refers to it any more (a
    /// connection its owner has closed while the kernel finishes it, or
    /// one still waiting in the listen queue).
    pub inode: u64,
}

impl TcpSocket {
    /// Whether a process still holds this socket through a descriptor.
    pub fn is_held(&self) -> bool {
        self.inode != 0
    }
}

/// Every TCP socket in `pid`'s network namespace, IPv4 then IPv6.
///
/// # Errors
///
/// If `/proc/PID/net/tcp` cannot be read (the process has gone). A missing
/// `tcp6` (no IPv6 in the kernel) is not an error.
pub fn tcp_sockets(pid: u32) -> io::Result<Vec<TcpSocket>> {
    let path = format!("/proc/{pid}/net/tcp");
    let mut sockets = parse_tcp_table(&read(&path)?);
    if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/tcp6")) {
        sockets.extend(parse_tcp_table(&text));
    }
    Ok(sockets)
}

/// The descriptors of `pid` that are sockets, by socket inode.
///
/// # Errors
///
/// If `/proc/PID/fd` cannot be read (the process has gone, or is not ours).
pub fn socket_descriptors(pid: u32) -> io::Result<HashMap<u64, i32>> {
    let path = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&path).map_err(|err| annotate(&path, err))?;
    let mut sockets = HashMap::new();
    for entry in entries.flatten() {
        // A descriptor closed between the listing and the readlink is
        // simply not there any more.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let (Some(fd), Some(inode)) = (
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok()),
            target.to_str().and_then(socket_inode),
        ) else {
            continue;
        };
        sockets.insert(inode, fd);
    }
    Ok(sockets)
}

/// A duplicate of descriptor `fd` of process `pid`, made with
/// `pidfd_getfd(2)`: it refers to the same open socket, so its options can
/// be read with `getsockopt`.
///
/// Drop it at once: while it is open the socket stays open too, whatever
/// `pid` does with its own descriptor.
///
/// # Errors
///
/// If `pid` has gone, the descriptor is closed, or we may not trace `pid`
/// (`EPERM`: the same checks as `ptrace(2)` attach; our own child, or root,
/// passes them).
pub fn duplicate_descriptor(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{pid} is not a pid"))
        })?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
    Ok(rustix::process::pidfd_getfd(
        &pidfd,
        fd,
        PidfdGetfdFlags::empty(),
    )?)
}

/// Moves the calling thread (only it) into the network namespace `name`,
/// as made by `ip netns add NAME` (`/run/netns/NAME`). Sockets the thread
/// creates from then on belong to that namespace, wherever they are used
/// later.
///
/// # Errors
///
/// If there is no such namespace, or we lack `CAP_SYS_ADMIN`.
pub fn enter_network_namespace(name: &str) -> io::Result<()> {
    let path = format!("/run/netns/{name}");
    let namespace = fs::File::open(&path).map_err(|err| annotate(&path, err))?;
    rustix::thread::move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|err| annotate(&path, err.into()))
}

/// The rows of a `/proc/net/tcp` or `tcp6` table; the heading and any row
/// that does not parse are skipped.
fn parse_tcp_table(text: &str) -> Vec<TcpSocket> {
    text.lines().skip(1).filter_map(parse_tcp_row).collect()
}

/// One row: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
fn parse_tcp_row(row: &str) -> Option<TcpSocket> {
    let mut fields = row.split_whitespace();
    let _slot = fields.next()?;
    let local = parse_endpoint(fields.next()?)?;
    let remote = parse_endpoint(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let (tx, rx) = fields.next()?.split_once(':')?;
    let (timer, _when) = fields.next()?.split_once(':')?;
    let _retransmits = fields.next()?;
    let _uid = fields.next()?;
    let _timeout = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some(TcpSocket {
        local,
        remote,
        state,
        send_queue_bytes: u64::from_str_radix(tx, 16).ok()?,
        receive_queue_bytes: u64::from_str_radix(rx, 16).ok()?,
        timer: timer.parse().ok()?,
        inode,
    })
}

/// `0100007F:1F90` is 127.0.0.1:8080: the address is the kernel's 32-bit
/// words printed in hex in host byte order (little-endian here), the port
/// plain hex.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..address.len() / 8)
        .map(|i| u32::from_str_radix(address.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let ip = match words[..] {
        [word] => IpAddr::V4(Ipv4Addr::from(word.to_le_bytes())),
        [a, b, c, d] => {
            let mut octets = [0; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The inode in a descriptor's link, `socket:[12345]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn read(path: &str) -> io::Result<String> {
    fs::read_to_string(path).map_err(|err| annotate(path, err))
}

fn annotate(path: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{path}: {err}"))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn rows_of_the_ipv4_and_ipv6_tables_parse() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0200007F:A2B4 01 00000010:00000400 02:000EA5F3 00000000     0        0 41240 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:A2B6 04 00100000:00000000 01:00000014 00000003     0        0 0 3 0000000000000000 20 4 30 10 -1
";
        let sockets = parse_tcp_table(v4);
        assert_eq!(sockets.len(), 3, "{sockets:?}");
        assert_eq!(sockets[0].local, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(sockets[0].state, TCP_LISTEN);
        assert_eq!(sockets[1].remote, "127.0.0.2:41652".parse().expect("addr"));
        assert_eq!(sockets[1].state, TCP_ESTABLISHED);
        assert_eq!(sockets[1].timer, TIMER_KEEPALIVE);
        assert_eq!(
            (sockets[1].send_queue_bytes, sockets[1].receive_queue_bytes),
            (16, 1024)
        );
        assert!(sockets[1].is_held());
        // Closed by its owner, the kernel still sending what was queued.
        assert!(!sockets[2].is_held());

        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 52000 1 0000000000000000 20 4 30 10 -1
";
        let sockets = parse_tcp_table(v6);
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        assert_eq!(sockets[0].local, "[::1]:8080".parse().expect("addr"));
        assert_eq!(sockets[0].remote, "[::1]:50000".parse().expect("addr"));
    }

    #[test]
    fn malformed_rows_are_skipped() {
        let table = "heading\n   0: nonsense\n   1: 0100007F:1F90 00000000:0000 0A\n";
        assert!(parse_tcp_table(table).is_empty());
        assert_eq!(socket_inode("socket:[77]"), Some(77));
        assert_eq!(socket_inode("pipe:[77]"), None);
    }

    #[test]
    fn this_process_sees_its_own_listener_and_its_descriptor() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let pid = std::process::id();
        let row = tcp_sockets(pid)
            .expect("read our table")
            .into_iter()
            .find(|socket| socket.local == addr)
            .expect("our listener is listed");
        assert_eq!(row.state, TCP_LISTEN);
        let descriptors = socket_descriptors(pid).expect("read our descriptors");
        let fd = descriptors[&row.inode];
        use std::os::fd::AsRawFd;
        assert_eq!(fd, listener.as_raw_fd());
        // Duplicating our own descriptor needs no privilege.
        let duplicate = duplicate_descriptor(pid, fd).expect("pidfd_getfd");
        drop(duplicate);
    }
}
