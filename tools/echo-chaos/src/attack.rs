//! `echo-chaos attack KIND`: one attack on a freshly started echod, with
//! pass criteria taken from the targets of the issue "safe to expose with
//! default flags".
//!
//! Each attack lives in its own file: `flood` (memory-flood, with or
//! without an address-space limit), `holders` (slowloris and slots: clients
//! that hold a connection and do little or nothing with it) and `dead_peer`
//! (a peer that vanishes, in network namespaces made for the run). This
//! file holds what they share: the fresh client that must keep being
//! served, echod's side of the connections as its `/proc/PID/net/tcp`
//! shows it, the socket options read from echod's own descriptors, and the
//! verdict.
//!
//! The attacks never look at echod's log: what they check is what a peer,
//! or the kernel's view of echod's sockets, can observe.

mod dead_peer;
mod flood;
mod holders;
pub mod options;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use echod_kit::sockets::{self, TcpSocket};
use socket2::{Domain, SockRef, Socket, Type};

use options::{AttackCommand, Kind};

/// Exit statuses, as the soak's, plus "skipped".
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_SETUP: u8 = 3;
/// The attack could not run here and was not required to (automake's
/// "skipped" status).
const EXIT_SKIPPED: u8 = 77;

/// The address the fresh client binds before it connects: another
/// loopback address than the attackers' 127.0.0.1, so that a per-address
/// limit or an eviction that spares newcomers can tell them apart.
pub const FRESH_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The line the fresh client sends, and expects back.
const FRESH_LINE: &[u8] = b"are you still serving?\r\n";

/// Runs `echo-chaos attack ARGS` (the arguments after `attack`).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let options = match options::parse_attack_args(args) {
        Ok(AttackCommand::Run(options)) => options,
        Ok(AttackCommand::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!(
                "echo-chaos attack: {err}\nTry 'echo-chaos attack --help' for more information."
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("echo-chaos: cannot raise the open-file limit: {err}");
    }
    let outcome = match options.kind {
        Kind::MemoryFlood => flood::run(&options),
        Kind::Slowloris => holders::run_slowloris(&options),
        Kind::Slots => holders::run_slots(&options),
        Kind::DeadPeer => dead_peer::run(&options),
    };
    match outcome {
        Outcome::Judged(verdict) => verdict.print_and_exit(options.kind),
        Outcome::Skipped(why) => {
            println!("SKIPPED: {} ({why})", options.kind);
            ExitCode::from(EXIT_SKIPPED)
        }
        Outcome::SetupFailed(why) => {
            eprintln!("echo-chaos attack {}: {why}", options.kind);
            ExitCode::from(EXIT_SETUP)
        }
    }
}

/// How an attack ended.
#[derive(Debug)]
pub enum Outcome {
    /// It ran; these are its checks.
    Judged(Verdict),
    /// It could not run here, and nothing required it to.
    Skipped(String),
    /// It could not be set up (echod would not start, no sockets, ...).
    SetupFailed(String),
}

/// The figures an attack measured and the checks made on them.
#[derive(Debug, Default)]
pub struct Verdict {
    /// `name: value` lines, printed before the checks.
    pub figures: Vec<(String, String)>,
    /// One line per check, with whether it passed.
    pub checks: Vec<(bool, String)>,
}

impl Verdict {
    /// Records a figure.
    pub fn figure(&mut self, name: &str, value: impl ToString) {
        self.figures.push((name.to_owned(), value.to_string()));
    }

    /// Records a check: `passed`, and what it is (with what was seen).
    pub fn check(&mut self, passed: bool, what: impl Into<String>) {
        self.checks.push((passed, what.into()));
    }

    /// Whether every check passed; a verdict with no check has proved
    /// nothing and does not pass.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|(passed, _)| *passed)
    }

    fn print_and_exit(&self, kind: Kind) -> ExitCode {
        println!("== echo-chaos attack {kind}");
        let width = self
            .figures
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        for (name, value) in &self.figures {
            println!("  {name:<width$}  {value}");
        }
        for (passed, what) in &self.checks {
            println!("{} {what}", if *passed { "pass:" } else { "FAIL:" });
        }
        if self.passed() {
            println!("PASS");
            ExitCode::SUCCESS
        } else {
            println!("FAIL");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// One try of the fresh client: connect from `from` to `addr`, send one
/// line, read its echo. Returns how long the whole took, or what went
/// wrong (a refusal, a reset, a timeout, a short or wrong echo).
pub fn fresh_try(addr: SocketAddr, from: IpAddr, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let deadline = started + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("no echo within {timeout:?}"))
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|err| format!("socket: {err}"))?;
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .map_err(|err| format!("bind {from}: {err}"))?;
    socket
        .connect_timeout(&addr.into(), left()?)
        .map_err(|err| format!("connect: {err}"))?;
    let mut stream = TcpStream::from(socket);
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|err| err.to_string())?;
    stream
        .write_all(FRESH_LINE)
        .map_err(|err| format!("write: {err}"))?;
    let mut echoed = Vec::with_capacity(FRESH_LINE.len());
    let mut chunk = [0; 256];
    while echoed.len() < FRESH_LINE.len() {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|err| err.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} echoed bytes", echoed.len())),
            Ok(n) => echoed.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if is_timeout(&err) => {
                return Err(format!("no echo within {timeout:?}"));
            }
            Err(err) => return Err(format!("read: {err}")),
        }
    }
    if echoed != FRESH_LINE {
        return Err("the echo differs from the line".into());
    }
    Ok(started.elapsed())
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A fresh client trying again and again on its own thread, until told to
/// stop: the "is anyone else still served?" of the flood.
#[derive(Debug)]
pub struct FreshProber {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<Result<Duration, String>>>,
}

impl FreshProber {
    /// Starts trying every `interval`, each try given `timeout` (a try
    /// that takes longer is a failure and the next starts at once).
    pub fn start(addr: SocketAddr, interval: Duration, timeout: Duration) -> FreshProber {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut tries = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let started = Instant::now();
                tries.push(fresh_try(addr, FRESH_SOURCE, timeout));
                if let Some(rest) = interval.checked_sub(started.elapsed()) {
                    thread::sleep(rest);
                }
            }
            tries
        });
        FreshProber { stop, handle }
    }

    /// Stops after the try under way and returns every try.
    pub fn finish(self) -> Vec<Result<Duration, String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .expect("the fresh client's thread panicked")
    }
}

/// The slowest, the 99th percentile and the count of `latencies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// How many there were.
    pub count: usize,
    /// The nearest-rank 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

/// Summarises `latencies` (`None` if there are none).
pub fn summarise(latencies: &[Duration]) -> Option<LatencySummary> {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let max = *sorted.last()?;
    // Nearest rank: the smallest value with at least 99% at or below it.
    let rank = (sorted.len() * 99).div_ceil(100).max(1);
    Some(LatencySummary {
        count: sorted.len(),
        p99: sorted[rank - 1],
        max,
    })
}

/// Judges the fresh client's tries: each must be served, the slowest
/// within `limit`. Returns the check's outcome and its line.
pub fn judge_fresh(tries: &[Result<Duration, String>], limit: Duration) -> (bool, String) {
    let served: Vec<Duration> = tries
        .iter()
        .filter_map(|t| t.as_ref().ok().copied())
        .collect();
    let failed: Vec<&String> = tries.iter().filter_map(|t| t.as_ref().err()).collect();
    let Some(summary) = summarise(&served) else {
        let first = failed
            .first()
            .map_or("no try made".into(), |err| err.to_string());
        return (
            false,
            format!(
                "fresh client served on 0 of {} tries ({first})",
                tries.len()
            ),
        );
    };
    let passed = failed.is_empty() && summary.max <= limit;
    let mut line = format!(
        "fresh client from {FRESH_SOURCE} served on {} of {} tries, slowest {} (p99 {}), bound {}",
        served.len(),
        tries.len(),
        ms(summary.max),
        ms(summary.p99),
        ms(limit)
    );
    if let Some(first) = failed.first() {
        line += &format!("; first failure: {first}");
    }
    (passed, line)
}

/// A duration in milliseconds, for the report.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// Bytes in MiB, for the report.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// echod's side of its connections, by the client's address: the sockets
/// in echod's network namespace whose local end is `listen`'s port and
/// that echod still holds through a descriptor.
///
/// # Errors
///
/// If echod's `/proc/PID/net/tcp` cannot be read (it has gone).
pub fn echod_side(pid: u32, listen: SocketAddr) -> io::Result<HashMap<SocketAddr, TcpSocket>> {
    Ok(sockets::tcp_sockets(pid)?
        .into_iter()
        .filter(|socket| {
            socket.local.port() == listen.port()
                && socket.state != sockets::TCP_LISTEN
                && socket.is_held()
        })
        .map(|socket| (socket.remote, socket))
        .collect())
}

/// The reaping options set on one of echod's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaping {
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    /// `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`.
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
    /// `TCP_USER_TIMEOUT` (`None`: 0, the kernel's default).
    pub user_timeout: Option<Duration>,
}

/// Reads the reaping options of echod's socket with inode `inode`, from a
/// duplicate of its descriptor (dropped before returning, so that echod's
/// close still closes the socket).
///
/// # Errors
///
/// If echod no longer holds it, or we may not duplicate its descriptors.
pub fn reaping_of(pid: u32, inode: u64) -> io::Result<Reaping> {
    let descriptors = sockets::socket_descriptors(pid)?;
    let fd = *descriptors
        .get(&inode)
        .ok_or_else(|| io::Error::other(format!("echod holds no socket with inode {inode}")))?;
    let duplicate = sockets::duplicate_descriptor(pid, fd)?;
    let socket = SockRef::from(&duplicate);
    Ok(Reaping {
        keepalive: socket.keepalive()?,
        idle: socket.tcp_keepalive_time()?,
        interval: socket.tcp_keepalive_interval()?,
        probes: socket.tcp_keepalive_retries()?,
        user_timeout: socket.tcp_user_timeout()?,
    })
}

/// Checks the reaping options of every socket in `inodes`: keepalive must
/// be on for all. Returns the check and its line.
pub fn judge_keepalive(pid: u32, inodes: &[u64]) -> (bool, String) {
    let mut on = 0;
    let mut errors = Vec::new();
    let mut example = None;
    for &inode in inodes {
        match reaping_of(pid, inode) {
            Ok(reaping) => {
                on += usize::from(reaping.keepalive);
                example.get_or_insert(reaping);
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    let mut line = format!("keepalive on {on} of {} of echod's sockets", inodes.len());
    if let Some(reaping) = example {
        line += &format!(
            " (first: keepalive {}, idle {}s, interval {}s, {} probes, user timeout {})",
            if reaping.keepalive { "on" } else { "off" },
            reaping.idle.as_secs(),
            reaping.interval.as_secs(),
            reaping.probes,
            reaping.user_timeout.map_or("none".into(), ms)
        );
    }
    if let Some(err) = errors.first() {
        line += &format!("; {} unreadable: {err}", errors.len());
    }
    (!inodes.is_empty() && on == inodes.len(), line)
}

/// Waits until echod holds at least `n` connections on `listen`'s port, or
/// `timeout` passes; returns them.
pub fn await_accepted(
    pid: u32,
    listen: SocketAddr,
    n: usize,
    timeout: Duration,
) -> io::Result<HashMap<SocketAddr, TcpSocket>> {
    let deadline = Instant::now() + timeout;
    loop {
        let side = echod_side(pid, listen)?;
        if side.len() >= n || Instant::now() >= deadline {
            return Ok(side);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        assert_eq!(summarise(&[]), None);
        let one = summarise(&millis(&[7])).expect("one value");
        assert_eq!(
            (one.count, one.p99, one.max),
            (1, Duration::from_millis(7), Duration::from_millis(7))
        );
        let hundred: Vec<u64> = (1..=100).collect();
        let summary = summarise(&millis(&hundred)).expect("values");
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
        let summary = summarise(&millis(&[5, 1, 900, 3])).expect("values");
        assert_eq!(summary.p99, Duration::from_millis(900));
    }

    #[test]
    fn the_fresh_client_passes_only_if_served_every_time_within_the_bound() {
        let limit = Duration::from_secs(1);
        let ok = |ms| Ok(Duration::from_millis(ms));
        let cases: [(&[Result<Duration, String>], bool); 5] = [
            (&[ok(3), ok(40), ok(999)], true),
            (&[ok(3), ok(1001)], false),
            (&[ok(3), Err("connect: refused".into())], false),
            (&[Err("read: reset".into())], false),
            // No try at all proves nothing.
            (&[], false),
        ];
        for (tries, passes) in cases {
            let (passed, line) = judge_fresh(tries, limit);
            assert_eq!(passed, passes, "{tries:?}: {line}");
        }
        let (_, line) = judge_fresh(&[ok(3), Err("connect: refused".into())], limit);
        assert!(
            line.contains("served on 1 of 2") && line.contains("refused"),
            "{line}"
        );
    }

    #[test]
    fn a_verdict_without_checks_does_not_pass() {
        let mut verdict = Verdict::default();
        assert!(!verdict.passed());
        verdict.check(true, "one");
        assert!(verdict.passed());
        verdict.check(false, "two");
        assert!(!verdict.passed());
    }

    #[test]
    fn the_fresh_client_binds_its_own_source_address() {
        // A listener on every loopback address sees where the try came from.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = thread::spawn(move || {
            let (mut stream, peer) = listener.accept().expect("accept");
            let mut line = vec![0; FRESH_LINE.len()];
            stream.read_exact(&mut line).expect("read the line");
            stream.write_all(&line).expect("echo it");
            peer
        });
        let took = fresh_try(addr, FRESH_SOURCE, Duration::from_secs(5)).expect("served");
        assert!(took < Duration::from_secs(5));
        assert_eq!(server.join().expect("server thread").ip(), FRESH_SOURCE);
    }

    #[test]
    fn a_fresh_try_that_is_never_answered_fails_at_its_timeout() {
        // Accepted by the kernel (the backlog), never read or answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let started = Instant::now();
        let err = fresh_try(addr, FRESH_SOURCE, Duration::from_millis(300)).expect_err("no echo");
        assert!(err.contains("no echo within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
    }
}
