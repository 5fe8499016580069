//! The access rules on the real binary: `--allow` and `--deny` in the order
//! given, the first match deciding; with any `--allow`, what no rule names
//! is refused; a refused client is closed at accept without a byte read,
//! counted as rejected (`denied`) and logged; and an IPv4 client on a
//! dual-stack `[::]` listener (an IPv4-mapped address) meets the IPv4 rules.

mod common;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::{DEADLINE, connect_from};
use process::Daemon;

const STATS: [&str; 2] = ["--stats-interval", "0.2"];

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Sends a line from `from` and says whether it came back (`true`) or the
/// connection was closed without an echo (`false`).
fn echoed(from: IpAddr, addr: SocketAddr) -> bool {
    let mut client = connect_from(from, addr);
    let _ = client.write_all(b"hello\r\n");
    let mut echo = Vec::new();
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut chunk = [0; 64];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                echo.extend_from_slice(&chunk[..n]);
                if echo.len() >= 7 {
                    assert_eq!(echo, b"hello\r\n");
                    return true;
                }
            }
            Err(err) if err.kind() == ErrorKind::ConnectionReset => {
                assert!(echo.is_empty(), "a denied client got {echo:?}");
                return false;
            }
            Err(err) => panic!("read from {from}: {err}"),
        }
    }
}

#[test]
fn the_first_rule_that_matches_decides_in_the_order_given() {
    let (_daemon, addr) = Daemon::start(&["--deny", "127.0.0.5", "--allow", "127.0.0.0/8"]);
    assert!(!echoed(loopback(5), addr), "denied before the allow");
    assert!(echoed(loopback(6), addr));
    let (_daemon, addr) = Daemon::start(&["--allow", "127.0.0.0/8", "--deny", "127.0.0.5"]);
    assert!(echoed(loopback(5), addr), "allowed before the deny");
}

#[test]
fn with_an_allow_a_client_no_rule_names_is_denied() {
    let (_daemon, addr) = Daemon::start(&["--allow", "127.0.0.7/32"]);
    assert!(echoed(loopback(7), addr));
    assert!(!echoed(loopback(8), addr));
    // Deny rules alone admit the rest.
    let (_daemon, addr) = Daemon::start(&["--deny", "127.0.0.8"]);
    assert!(echoed(loopback(7), addr));
    assert!(!echoed(loopback(8), addr));
}

#[test]
fn a_denied_client_is_closed_unread_counted_and_logged() {
    let (mut daemon, addr) = Daemon::start(&["--deny", "127.0.0.9", STATS[0], STATS[1]]);
    let mut client = connect_from(loopback(9), addr);
    let _ = client.write_all(b"never echoed\r\n");
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "a denied client got {rest:?}"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
    daemon.wait_for_log("denied by --allow/--deny: closed a new connection from 127.0.0.9");
    let stats = daemon.wait_for_stats(&["1 rejected (1 denied)"]);
    assert!(stats.contains("0 accepted"), "{stats}");
    daemon.signal(libc::SIGUSR1);
    let summary = daemon.wait_for_log("summary: ");
    assert!(summary.contains("1 rejected (1 denied)"), "{summary}");
}

/// echod's own `[::]` listeners are IPv6-only (`IPV6_V6ONLY`); a
/// dual-stack socket comes from a service manager. `systemd-socket-activate`
/// binds `[::]:port` dual-stack (as systemd does by default), so IPv4
/// clients reach echod as `::ffff:127.0.0.x`.
#[test]
#[cfg_attr(no_ipv6_loopback, ignore = "no IPv6 on this host")]
#[cfg_attr(
    no_systemd_socket_activate,
    ignore = "systemd-socket-activate is not on PATH (Debian package systemd)"
)]
fn a_mapped_address_on_a_dual_stack_listener_meets_the_ipv4_rules() {
    for rule in ["127.0.0.10", "::ffff:127.0.0.10"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = std::process::Command::new("sh");
        command
            .args([
                "-c",
                r#"exec "$@" 2>&1"#,
                "sh",
                "systemd-socket-activate",
                "-l",
            ])
            .arg(format!("[::]:{port}"))
            .arg(env!("CARGO_BIN_EXE_echod"))
            .args(["--deny", rule])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut daemon = Daemon::spawn_command(&mut command, process::StdoutReader::Follow);
        daemon.wait_for_log("Listening on [::]:");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(
            !echoed(loopback(10), addr),
            "--deny {rule}: ::ffff:127.0.0.10 is 127.0.0.10"
        );
        daemon.wait_for_log("closed a new connection from [::ffff:127.0.0.10]");
        assert!(echoed(loopback(11), addr), "--deny {rule}");
    }
}

#[test]
fn a_bad_network_is_a_usage_error() {
    let output = Daemon::command(&["--allow", "10.0.0.0/33"])
        .output()
        .expect("run echod");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid --allow '10.0.0.0/33'"), "{stderr}");
}
