//! The PROXY protocol (`--proxy-protocol`, `--proxy-from`) on the real
//! binary: a v1 or v2 header is consumed and never echoed, however it is
//! split or joined to the first lines; the client it names is the client in
//! the close line, for the access rules and for the per-address limit; a v2
//! `LOCAL` header keeps the balancer's address; a source that is not a
//! `--proxy-from` one is closed at accept unread; a malformed, over-long,
//! cut-short or late header closes with its own reason, counted in the
//! stats line and the metrics; and HAProxy's own `send-proxy` and
//! `send-proxy-v2`, health checks included, reach echod with the real
//! client's address.
//!
//! Every daemon listens on an ephemeral loopback port; every wait is
//! bounded by a deadline.

mod common;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::scrape::scrape_until;
use common::{DEADLINE, assert_echoes, connect, connect_from, read_n};
use process::Daemon;

const PROXY: &str = "--proxy-protocol";
const STATS: [&str; 2] = ["--stats-interval", "0.2"];

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A v1 header naming `client` (to echod's port 12321).
fn v1(client: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    let to = if client.is_ipv4() {
        "192.0.2.1"
    } else {
        "2001:db8::1"
    };
    format!(
        "PROXY {family} {} {to} {} 12321\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

/// The 12 bytes every v2 header begins with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 `PROXY` header naming `client`, with `tlv` after the addresses.
fn v2(client: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    let mut addresses = Vec::new();
    let family = match client.ip() {
        IpAddr::V4(ip) => {
            addresses.extend_from_slice(&ip.octets());
            addresses.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 1).octets());
            0x11
        }
        IpAddr::V6(ip) => {
            addresses.extend_from_slice(&ip.octets());
            addresses.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    addresses.extend_from_slice(&client.port().to_be_bytes());
    addresses.extend_from_slice(&12321u16.to_be_bytes());
    addresses.extend_from_slice(tlv);
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, family]);
    header.extend_from_slice(&u16::try_from(addresses.len()).expect("short").to_be_bytes());
    header.extend_from_slice(&addresses);
    header
}

/// A v2 `LOCAL` header: the balancer speaking for itself.
fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    header
}

fn client(text: &str) -> SocketAddr {
    text.parse().expect("a socket address")
}

/// Reads until EOF or a reset, for at most `DEADLINE`; what arrived first.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return got,
            Err(err) => panic!("no close within {DEADLINE:?}: {err}"),
        }
    }
}

/// Sends `bytes` (a header and lines), half-closes, and returns everything
/// echod sends back before it closes (nothing, if it refused them).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    // echod may close a refused connection before the send or the
    // half-close is done; what came back, if anything, is the outcome.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    read_until_closed(&mut stream)
}

#[test]
fn a_v1_header_is_consumed_and_names_the_client() {
    let (mut daemon, addr) = Daemon::start(&[PROXY]);
    let mut input = v1(client("203.0.113.7:5555"));
    input.extend_from_slice(b"hello\r\nworld\r\n");
    assert_eq!(exchange(addr, &input), b"hello\r\nworld\r\n");
    daemon.wait_for_log("2 lines received, 14 bytes echoed; peer 203.0.113.7:5555");
    // An IPv6 client, in a TCP6 header.
    let mut input = v1(client("[2001:db8::7]:6000"));
    input.extend_from_slice(b"six\r\n");
    assert_eq!(exchange(addr, &input), b"six\r\n");
    daemon.wait_for_log("peer [2001:db8::7]:6000");
}

#[test]
fn a_header_split_byte_by_byte_is_never_echoed() {
    let (mut daemon, addr) = Daemon::start(&[PROXY]);
    for header in [
        v1(client("198.51.100.2:1000")),
        v2(client("198.51.100.3:1001"), &[]),
    ] {
        let mut stream = connect(addr);
        stream.set_nodelay(true).expect("nodelay");
        for byte in &header {
            stream.write_all(&[*byte]).expect("send a byte");
            // Each byte its own segment, most of the time: a pause, not a
            // synchronisation (the test holds whatever the segments are).
            std::thread::sleep(Duration::from_millis(1));
        }
        // The first line, also split, then one whole.
        stream.write_all(b"he").expect("send");
        std::thread::sleep(Duration::from_millis(5));
        stream.write_all(b"llo\r\n").expect("send");
        assert_eq!(read_n(&mut stream, 7), b"hello\r\n");
        assert_echoes(&mut stream, b"again\r\n");
    }
    daemon.wait_for_log("2 lines received, 14 bytes echoed; peer 198.51.100.2:1000");
    daemon.wait_for_log("2 lines received, 14 bytes echoed; peer 198.51.100.3:1001");
}

#[test]
fn a_v2_header_names_the_client_and_a_local_one_keeps_the_balancer() {
    let (mut daemon, addr) = Daemon::start(&[PROXY]);
    // With a TLV after the addresses (HAProxy sends some with
    // send-proxy-v2-ssl and unique-id), skipped.
    let tlv = [0x05, 0x00, 0x03, b'a', b'b', b'c'];
    let mut input = v2(client("198.51.100.4:4000"), &tlv);
    input.extend_from_slice(b"v2\r\n");
    assert_eq!(exchange(addr, &input), b"v2\r\n");
    daemon.wait_for_log("peer 198.51.100.4:4000");
    let mut input = v2(client("[2001:db8::4]:4001"), &[]);
    input.extend_from_slice(b"v6\r\n");
    assert_eq!(exchange(addr, &input), b"v6\r\n");
    daemon.wait_for_log("peer [2001:db8::4]:4001");
    let mut stream = connect_from(loopback(3), addr);
    stream.write_all(&v2_local()).expect("send");
    assert_echoes(&mut stream, b"check\r\n");
    drop(stream);
    daemon.wait_for_log("1 line received, 7 bytes echoed; peer 127.0.0.3:");
}

#[test]
fn a_source_not_in_proxy_from_is_closed_unread_and_counted() {
    let (mut daemon, addr) =
        Daemon::start(&[PROXY, "--proxy-from", "127.0.0.5", STATS[0], STATS[1]]);
    let mut stream = connect_from(loopback(6), addr);
    let mut input = v1(client("203.0.113.9:9"));
    input.extend_from_slice(b"never echoed\r\n");
    let _ = stream.write_all(&input);
    assert_eq!(read_until_closed(&mut stream), b"");
    daemon.wait_for_log("not a --proxy-from source: closed a new connection from 127.0.0.6");
    let stats = daemon.wait_for_stats(&["1 rejected (1 untrusted)"]);
    assert!(stats.contains("0 accepted"), "{stats}");
    // The trusted source is served.
    let mut stream = connect_from(loopback(5), addr);
    stream
        .write_all(&v1(client("203.0.113.9:9")))
        .expect("send");
    assert_echoes(&mut stream, b"trusted\r\n");
}

#[test]
fn the_default_proxy_from_is_loopback_only() {
    // Every test client is on loopback, so all that can be shown here is
    // that 127.0.0.0/8 and ::1 are trusted by default; that nothing else is
    // follows from the rules (`access.rs`'s tests) and is shown above with
    // --proxy-from.
    let (_daemon, addr) = Daemon::start(&[PROXY]);
    let mut stream = connect_from(loopback(42), addr);
    stream
        .write_all(&v1(client("203.0.113.1:1")))
        .expect("send");
    assert_echoes(&mut stream, b"loopback\r\n");
}

#[test]
fn malformed_over_long_and_cut_short_headers_close_with_their_reason() {
    let (mut daemon, addr, metrics) = Daemon::start_with_metrics(&[PROXY, STATS[0], STATS[1]]);
    // Not a header at all: an echo client that forgot the balancer.
    assert_eq!(exchange(addr, b"hello\r\n"), b"");
    // A v1 header with no CR LF within its 107 bytes.
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(200, b'1');
    assert_eq!(exchange(addr, &long), b"");
    // A v2 header whose length goes past the 536-byte bound.
    let mut over = V2_SIGNATURE.to_vec();
    over.extend_from_slice(&[0x21, 0x11]);
    over.extend_from_slice(&600u16.to_be_bytes());
    assert_eq!(exchange(addr, &over), b"");
    // Half a header, then the FIN: it can never be completed.
    assert_eq!(exchange(addr, b"PROXY TCP4 203.0.1"), b"");
    // A v1 header with a bad address.
    assert_eq!(
        exchange(addr, b"PROXY TCP4 999.0.0.1 192.0.2.1 1 2\r\nhi\r\n"),
        b""
    );
    daemon.wait_for_log("closed (malformed PROXY header)");
    daemon.wait_for_stats(&["after the PROXY header: 5 malformed PROXY header"]);
    let series = scrape_until(metrics, "five malformed headers", |series| {
        series.count("echod_connections_closed_total{reason=\"proxy_header_malformed\"}") == 5
    });
    assert_eq!(series.count("echod_connections_accepted_total"), 5);
    assert_eq!(series.count("echod_lines_echoed_total"), 0);
    // A connection that sends nothing and closes is a probe, as without
    // the protocol.
    drop(connect(addr));
    daemon.wait_for_stats(&["1 probe"]);
}

#[test]
fn no_header_within_five_seconds_closes() {
    let (mut daemon, addr, metrics) = Daemon::start_with_metrics(&[PROXY]);
    let began = Instant::now();
    let mut silent = connect(addr);
    let mut half = connect(addr);
    half.write_all(b"PROXY TCP4 203.0.113.5")
        .expect("send half");
    for stream in [&mut silent, &mut half] {
        assert_eq!(read_until_closed(stream), b"");
    }
    // A deadline is never early: this is the behaviour, not a timing.
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(echod::connection::PROXY_HEADER_TIMEOUT_MS - 100),
        "closed after {waited:?}, before the header's deadline"
    );
    daemon.wait_for_log("closed (no PROXY header in time)");
    scrape_until(metrics, "two late headers", |series| {
        series.count("echod_connections_closed_total{reason=\"proxy_header_timeout\"}") == 2
    });
}

#[test]
fn the_access_rules_judge_the_client_the_header_names() {
    let (mut daemon, addr, metrics) =
        Daemon::start_with_metrics(&[PROXY, "--deny", "203.0.113.0/24"]);
    let mut input = v1(client("203.0.113.7:7"));
    input.extend_from_slice(b"denied\r\n");
    assert_eq!(
        exchange(addr, &input),
        b"",
        "the client the header names is denied"
    );
    daemon.wait_for_log("closed (denied by --allow/--deny)");
    // Its IPv4-mapped spelling, in a v2 IPv6 header, is the same client.
    let mut input = v2(client("[::ffff:203.0.113.8]:8"), &[]);
    input.extend_from_slice(b"mapped\r\n");
    assert_eq!(
        exchange(addr, &input),
        b"",
        "::ffff:203.0.113.8 is 203.0.113.8"
    );
    // Another client from the same balancer is served.
    let mut input = v1(client("198.51.100.7:7"));
    input.extend_from_slice(b"served\r\n");
    assert_eq!(exchange(addr, &input), b"served\r\n");
    let series = scrape_until(metrics, "two denied", |series| {
        series.count("echod_connections_closed_total{reason=\"denied\"}") == 2
    });
    assert_eq!(
        series.count("echod_connections_rejected_total{reason=\"denied\"}"),
        0,
        "decided after the header: a close, not a rejection at accept"
    );
}

#[test]
fn the_per_address_limit_counts_the_client_the_header_names() {
    let (mut daemon, addr) = Daemon::start(&[PROXY, "--max-connections-per-ip", "1"]);
    let mut first = connect(addr);
    first
        .write_all(&v1(client("203.0.113.20:1")))
        .expect("send");
    assert_echoes(&mut first, b"first\r\n");
    // The same client through the same balancer: over its limit.
    let mut input = v1(client("203.0.113.20:2"));
    input.extend_from_slice(b"second\r\n");
    assert_eq!(exchange(addr, &input), b"");
    daemon.wait_for_log("closed (max-connections-per-ip reached)");
    // Another client through the same balancer: its own count.
    let mut other = connect(addr);
    other
        .write_all(&v1(client("203.0.113.21:1")))
        .expect("send");
    assert_echoes(&mut other, b"other\r\n");
    // Once the first closes, its client may connect again.
    first.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_until_closed(&mut first), b"");
    daemon.wait_for_log("peer 203.0.113.20:1");
    let mut again = connect(addr);
    again
        .write_all(&v1(client("203.0.113.20:3")))
        .expect("send");
    assert_echoes(&mut again, b"again\r\n");
}

#[test]
fn proxy_from_needs_proxy_protocol_and_both_come_from_the_environment() {
    let output = Daemon::command(&["--proxy-from", "10.0.0.0/8"])
        .output()
        .expect("run echod");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs --proxy-protocol"), "{stderr}");
    let output = Daemon::command(&[PROXY, "--proxy-from", "10.0.0.0/33"])
        .output()
        .expect("run echod");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid --proxy-from '10.0.0.0/33'"),
        "{stderr}"
    );
    // From the environment: only 127.0.0.9 may send headers.
    let mut command = Daemon::command(&["-l", "127.0.0.1:0"]);
    command
        .env("ECHOD_PROXY_PROTOCOL", "1")
        .env("ECHOD_PROXY_FROM", "127.0.0.9");
    let mut daemon = Daemon::spawn_command(&mut command, process::StdoutReader::Follow);
    let addr = daemon.listening_addr();
    let mut stream = connect_from(loopback(9), addr);
    stream
        .write_all(&v1(client("203.0.113.30:1")))
        .expect("send");
    assert_echoes(&mut stream, b"env\r\n");
    let mut stream = connect_from(loopback(10), addr);
    let _ = stream.write_all(b"PROXY UNKNOWN\r\n");
    assert_eq!(read_until_closed(&mut stream), b"");
    daemon.wait_for_log("not a --proxy-from source");
}

/// HAProxy in front of echod, the way DEPLOYMENT describes it: one
/// frontend with `send-proxy` (v1), one with `send-proxy-v2`, each backend
/// health-checked with `check-send-proxy`. The client is bound to
/// 127.0.0.7, HAProxy reaches echod from 127.0.0.1: echod's close lines
/// must name 127.0.0.7, and the health checks must count as probes, never
/// as malformed headers.
#[test]
#[cfg_attr(no_haproxy, ignore = "haproxy is not on PATH (Debian package haproxy)")]
fn haproxy_send_proxy_and_send_proxy_v2_reach_echod_with_the_client_address() {
    let (mut daemon, echod, metrics) = Daemon::start_with_metrics(&[PROXY]);
    let ports = [free_port(), free_port()];
    let config = format!(
        "global\n\
         \x20   log stderr format raw local0 info\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         frontend v1\n\
         \x20   bind 127.0.0.1:{}\n\
         \x20   default_backend v1\n\
         frontend v2\n\
         \x20   bind 127.0.0.1:{}\n\
         \x20   default_backend v2\n\
         backend v1\n\
         \x20   server echod {echod} send-proxy check check-send-proxy inter 100ms\n\
         backend v2\n\
         \x20   server echod {echod} send-proxy-v2 check check-send-proxy inter 100ms\n",
        ports[0], ports[1]
    );
    let dir = std::env::temp_dir().join(format!("echod-proxy-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    let haproxy = std::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    let _haproxy = KillOnDrop(haproxy);
    for (i, port) in ports.into_iter().enumerate() {
        let frontend = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = connect_when_listening(loopback(7), frontend);
        let line = format!("through haproxy {i}\r\n");
        assert_echoes(&mut stream, line.as_bytes());
        stream.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_until_closed(&mut stream), b"");
        daemon.wait_for_log(&format!(
            "1 line received, {} bytes echoed; peer 127.0.0.7:",
            line.len()
        ));
    }
    // Both backends' checks keep coming (every 100 ms), each a probe.
    let series = scrape_until(metrics, "ten health checks", |series| {
        series.count("echod_connections_closed_total{reason=\"probe\"}") >= 10
    });
    for refused in ["proxy_header_malformed", "proxy_header_timeout", "error"] {
        assert_eq!(
            series.count(&format!(
                "echod_connections_closed_total{{reason=\"{refused}\"}}"
            )),
            0,
            "a health check closed as {refused}"
        );
    }
    assert_eq!(
        series.count("echod_connections_rejected_total{reason=\"proxy_untrusted\"}"),
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback port nothing listens on now, for HAProxy's frontends (its
/// configuration needs a number; the kernel picks one that is free).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Connects from `from` to `addr` once something listens there, trying
/// for at most `DEADLINE`.
fn connect_when_listening(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .expect("bind the client");
        match socket.connect(&addr.into()) {
            Ok(()) => {
                let stream = TcpStream::from(socket);
                stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
                return stream;
            }
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                // A polling interval while HAProxy starts, not a synchronisation.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => panic!("nothing listens on {addr} after {DEADLINE:?}: {err}"),
        }
    }
}

/// A child process killed and reaped when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
