//! dead-peer: a peer that vanishes for real, as a laptop does when its lid
//! closes or a mobile client leaves coverage: not a reset, not a FIN, just
//! silence, with echod owing it megabytes.
//!
//! The network is made for the run and exists only for it: two network
//! namespaces, echod's and the client's, joined by a veth pair whose ends
//! are 10.203.0.1/30 and 10.203.0.2/30. No host address or route is
//! involved, so nothing leaves the two namespaces. Then:
//!
//! 1. echod starts in its namespace (`ip netns exec`, which execs it: the
//!    pid is echod's) on 10.203.0.1.
//! 2. A client thread moves into the other namespace, connects, echoes one
//!    line (the path works), then writes `--owe-mib` of lines and reads
//!    nothing (16 KiB receive buffer, MSS 1460).
//! 3. Every packet leaving the client's namespace is dropped: `tc qdisc
//!    ... netem loss 100%`, or, where the kernel has no netem, a `pfifo`
//!    queue of length 0, which drops everything offered to it. echod's
//!    segments still arrive; nothing, not even an ACK or a reset, comes
//!    back.
//! 4. echod's side of the connection is watched in its `/proc/PID/net/tcp`
//!    until echod lets go of it, or `--close-within` passes.
//!
//! The namespaces (and with them the veth pair) are deleted when the run
//! ends, however it ends: `Network` is a guard.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use echod_kit::sockets;
use socket2::{Domain, Socket, Type};

use super::options::AttackOptions;
use super::{Outcome, Verdict, echod_side, mib, reaping_of};
use crate::target::Target;

/// echod's end and the client's end of the veth pair: a /30 of the
/// private 10/8, used only between these two namespaces.
const ECHOD_ADDRESS: &str = "10.203.0.1";
const CLIENT_ADDRESS: &str = "10.203.0.2";
const PREFIX: &str = "/30";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The client pushes until it has written `--owe-mib`, or no write has
/// made progress for this long (echod stopped reading it).
const PUSH_STALL: Duration = Duration::from_secs(2);

/// The two namespaces and the veth pair between them, deleted on drop.
#[derive(Debug)]
pub struct Network {
    /// echod's namespace, then the client's.
    pub namespaces: [String; 2],
    /// The veth ends: echod's, then the client's.
    pub links: [String; 2],
    /// Namespaces created so far (those `drop` deletes).
    created: usize,
}

impl Network {
    /// Makes the network, named after `tag` (this process's pid, so that
    /// two runs never share a name).
    ///
    /// # Errors
    ///
    /// The first `ip` command that failed, with its message. What was made
    /// before it is deleted again.
    pub fn create(tag: u32) -> io::Result<Network> {
        let mut network = Network {
            namespaces: [
                format!("echo-chaos-{tag}-echod"),
                format!("echo-chaos-{tag}-peer"),
            ],
            // Interface names have at most 15 bytes.
            links: [format!("ecd{tag}e"), format!("ecd{tag}p")],
            created: 0,
        };
        for name in network.namespaces.clone() {
            ip(&["netns", "add", &name])?;
            network.created += 1;
        }
        let [echod_ns, peer_ns] = &network.namespaces;
        let [echod_link, peer_link] = &network.links;
        // Both ends are created inside their namespaces: the host's own
        // namespace never sees either.
        ip(&[
            "link", "add", "name", echod_link, "netns", echod_ns, "type", "veth", "peer", "name",
            peer_link, "netns", peer_ns,
        ])?;
        for (ns, link, address) in [
            (echod_ns, echod_link, ECHOD_ADDRESS),
            (peer_ns, peer_link, CLIENT_ADDRESS),
        ] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}{PREFIX}"),
                "dev",
                link,
            ])?;
            ip(&["-n", ns, "link", "set", link, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// Drops every packet the client's namespace sends; returns how.
    ///
    /// # Errors
    ///
    /// If neither qdisc can be installed.
    pub fn drop_peer_packets(&self) -> io::Result<&'static str> {
        let (ns, link) = (&self.namespaces[1], &self.links[1]);
        let tc = |args: &[&str]| {
            run_program(
                "ip",
                &[
                    &[
                        "netns", "exec", ns, "tc", "qdisc", "add", "dev", link, "root",
                    ],
                    args,
                ]
                .concat(),
            )
        };
        match tc(&["netem", "loss", "100%"]) {
            Ok(()) => Ok("tc netem loss 100%"),
            Err(netem) => tc(&["pfifo", "limit", "0"])
                .map(|()| "tc pfifo limit 0 (no netem in this kernel)")
                .map_err(|err| io::Error::other(format!("{netem}; then {err}"))),
        }
    }

    /// Packets the client's qdisc has dropped, from `tc -s qdisc show`.
    pub fn dropped_packets(&self) -> Option<u64> {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespaces[1],
                "tc",
                "-s",
                "qdisc",
                "show",
                "dev",
            ])
            .arg(&self.links[1])
            .output()
            .ok()?;
        parse_dropped(&String::from_utf8_lossy(&output.stdout))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the
        // pair. echod must be gone first, or its namespace outlives the
        // name: `Target` is dropped before `Network` (declared after it).
        for name in &self.namespaces[..self.created] {
            if let Err(err) = ip(&["netns", "del", name]) {
                eprintln!("echo-chaos: cannot delete network namespace {name}: {err}");
            }
        }
    }
}

/// The `dropped N` of a `tc -s qdisc show` report (the first qdisc's).
fn parse_dropped(report: &str) -> Option<u64> {
    let after = report.split_once("dropped ")?.1;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn ip(args: &[&str]) -> io::Result<()> {
    run_program("ip", args)
}

/// Runs `program args`, an error with its standard error if it fails.
fn run_program(program: &str, args: &[&str]) -> io::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| io::Error::new(err.kind(), format!("{program}: {err}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// Why the attack cannot run here, if it cannot: it needs root (network
/// namespaces) and iproute2.
fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned));
    if effective_uid.as_deref() != Some("0") {
        return Some("network namespaces need root".into());
    }
    for program in ["ip", "tc"] {
        if Command::new(program).arg("-V").output().is_err() {
            return Some(format!("no `{program}` (install iproute2)"));
        }
    }
    None
}

/// What the client did before its packets were dropped.
#[derive(Debug)]
struct Peer {
    /// Kept open, so that it never closes: a vanished peer sends nothing.
    _stream: TcpStream,
    local: SocketAddr,
    owed: usize,
}

/// Connects from the client's namespace, echoes one line, then pushes up
/// to `owe` bytes of lines without reading.
fn make_peer(namespace: String, addr: SocketAddr, owe: usize) -> io::Result<Peer> {
    thread::spawn(move || {
        sockets::enter_network_namespace(&namespace)?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_recv_buffer_size(16 << 10)?;
        socket.set_tcp_mss(1460)?;
        socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
        let mut stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        stream.write_all(b"hello\r\n")?;
        let mut echo = [0; 7];
        stream.read_exact(&mut echo)?;
        if &echo != b"hello\r\n" {
            return Err(io::Error::other("the first echo differs from the line"));
        }
        stream.set_nonblocking(true)?;
        let mut line = vec![b'x'; 1022];
        line.extend_from_slice(b"\r\n");
        let lines = line.repeat(64);
        let (mut owed, mut last_progress) = (0, Instant::now());
        while owed < owe && last_progress.elapsed() < PUSH_STALL {
            let offset = owed % lines.len();
            let end = lines.len().min(offset + (owe - owed));
            match stream.write(&lines[offset..end]) {
                Ok(n) => {
                    owed += n;
                    last_progress = Instant::now();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Peer {
            local: stream.local_addr()?,
            _stream: stream,
            owed,
        })
    })
    .join()
    .expect("the peer's thread panicked")
}

/// Runs the attack.
pub fn run(options: &AttackOptions) -> Outcome {
    if let Some(why) = unavailable() {
        return if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            Outcome::SetupFailed(format!("{why}; CI=true requires this attack"))
        } else {
            Outcome::Skipped(why)
        };
    }
    let network = match Network::create(std::process::id()) {
        Ok(network) => network,
        Err(err) => return Outcome::SetupFailed(format!("cannot make the network: {err}")),
    };
    // Declared after `network`, so dropped before it: echod leaves its
    // namespace before the namespace is deleted.
    let mut target = match Target::spawn_in(
        &["ip", "netns", "exec", &network.namespaces[0]],
        &options.echod,
        &format!("{ECHOD_ADDRESS}:0"),
        &options.echod_args,
    ) {
        Ok(target) => target,
        Err(err) => return Outcome::SetupFailed(format!("cannot start echod: {err}")),
    };
    let pid = target.pid.expect("an echod started here has a pid");
    let started = Instant::now();
    let peer = match make_peer(
        network.namespaces[1].clone(),
        target.addr,
        options.owe_bytes,
    ) {
        Ok(peer) => peer,
        Err(err) => {
            return Outcome::SetupFailed(format!("the peer could not connect and push: {err}"));
        }
    };
    let held = echod_side(pid, target.addr)
        .ok()
        .and_then(|side| side.get(&peer.local).copied());
    let Some(socket) = held else {
        return Outcome::SetupFailed(
            "echod does not hold the peer's connection before the drop".into(),
        );
    };
    let reaping = reaping_of(pid, socket.inode);
    let how = match network.drop_peer_packets() {
        Ok(how) => how,
        Err(err) => return Outcome::SetupFailed(format!("cannot drop the peer's packets: {err}")),
    };
    let dropped_at = Instant::now();
    eprintln!(
        "echo-chaos: dead-peer: echod at {} (pid {pid}) owes {} to {}, whose packets now vanish ({how}); waiting up to {:.0} s",
        target.addr,
        mib(peer.owed as u64),
        peer.local,
        options.close_within.as_secs_f64()
    );
    let deadline = (started + options.max_seconds)
        .min(dropped_at + options.close_within + Duration::from_secs(1));
    let mut closed_after = None;
    while Instant::now() < deadline {
        match echod_side(pid, target.addr) {
            Ok(side) if side.contains_key(&peer.local) => {}
            _ => {
                closed_after = Some(dropped_at.elapsed());
                break;
            }
        }
        thread::sleep(Duration::from_millis(250));
    }
    let dropped = network.dropped_packets();
    let exited = target.exited();

    let mut verdict = Verdict::default();
    verdict.figure(
        "network",
        format!(
            "namespaces {} and {}, veth {ECHOD_ADDRESS}{PREFIX} <-> {CLIENT_ADDRESS}{PREFIX}",
            network.namespaces[0], network.namespaces[1]
        ),
    );
    verdict.figure(
        "owed to the peer",
        format!("{} written, none read", mib(peer.owed as u64)),
    );
    verdict.figure(
        "drop",
        format!(
            "{how}; {} packets dropped",
            dropped.map_or("?".into(), |n| n.to_string())
        ),
    );
    verdict.figure(
        "echod's socket before the drop",
        match reaping {
            Ok(r) => format!(
                "keepalive {}, user timeout {}",
                if r.keepalive { "on" } else { "off" },
                r.user_timeout.map_or("none".into(), super::ms)
            ),
            Err(err) => format!("options unreadable: {err}"),
        },
    );
    verdict.check(
        closed_after.is_some_and(|after| after <= options.close_within),
        match closed_after {
            Some(after) => format!(
                "echod closed the dead peer's connection {:.1} s after the drop, bound {:.0} s",
                after.as_secs_f64(),
                options.close_within.as_secs_f64()
            ),
            None => format!(
                "echod still held the dead peer's connection {:.0} s after the drop, bound {:.0} s",
                dropped_at.elapsed().as_secs_f64(),
                options.close_within.as_secs_f64()
            ),
        },
    );
    verdict.check(exited.is_none(), super::holders::alive_line(exited));
    if let Some(Err(err)) = target.stop() {
        eprintln!("echo-chaos: stopping echod: {err}");
    }
    drop(target);
    drop(network);
    Outcome::Judged(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_count_is_read_from_tcs_statistics() {
        let report = "qdisc netem 8001: root refcnt 2 limit 1000 loss 100%\n Sent 0 bytes 0 pkt (dropped 37, overlimits 0 requeues 0)\n backlog 0b 0p requeues 0\n";
        assert_eq!(parse_dropped(report), Some(37));
        assert_eq!(parse_dropped("qdisc noqueue 0: root refcnt 2"), None);
    }
}
