//! memory-flood: many clients push megabytes of lines and never read,
//! while a fresh client from another loopback address checks that echod
//! still serves newcomers, and echod's memory is sampled.
//!
//! The schedule:
//!
//! 1. echod starts (under `RLIMIT_AS` if `--address-space` is given); its
//!    RSS is the start figure. The fresh client starts trying.
//! 2. Every flooding client connects at once and writes until it has sent
//!    `--bytes-per-client` or its socket is full. Each has a 16 KiB receive
//!    buffer and an MSS of 1460, like a client across a real network: on
//!    loopback's 64 KiB MSS echod's send buffer would autotune to megabytes
//!    and hide in the kernel what echod owes; with these, it stays in echod.
//! 3. Once every client has sent all it could (no write made progress for
//!    `STALL`), the flood is held open for `--hold`, then closed.
//! 4. After echod has let go of the flood (or `SETTLE` passes), the end RSS
//!    is read and one more fresh client must be served.
//!
//! One `mio` loop drives every flooding client; the fresh client has its
//! own thread, so that a slow echod delays it and nothing else.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use echod_kit::process;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

use super::options::AttackOptions;
use super::{
    FRESH_SOURCE, FreshProber, Outcome, Verdict, echod_side, fresh_try, judge_fresh, mib, ms,
};
use crate::target::Target;

/// No write of any flooding client made progress for this long: echod has
/// stopped reading them all (or they have sent everything).
const STALL: Duration = Duration::from_secs(3);
/// The longest echod may take to let go of the flood once it is closed.
const SETTLE: Duration = Duration::from_secs(10);
/// How often echod's RSS is read during the flood.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// One flooding client.
#[derive(Debug)]
struct Flooder {
    stream: TcpStream,
    /// Bytes written so far, at most `--bytes-per-client`.
    sent: usize,
    /// Set once the handshake has completed.
    connected: bool,
    /// When (since the flood began) the connection failed or was closed by
    /// echod; `None` while it is open.
    ended: Option<Duration>,
}

/// The flood's counts, for the report.
#[derive(Debug, Default)]
struct Tally {
    connected: usize,
    refused: usize,
    /// Connections echod closed (a reset, an end of file, a write error),
    /// with the first and last time since the flood began.
    closed_by_echod: usize,
    first_close: Option<Duration>,
    last_close: Option<Duration>,
    first_error: Option<String>,
    bytes: u64,
}

/// Runs the attack.
pub fn run(options: &AttackOptions) -> Outcome {
    let mut target = match Target::spawn(&options.echod, &options.echod_args) {
        Ok(target) => target,
        Err(err) => return Outcome::SetupFailed(format!("cannot start echod: {err}")),
    };
    let pid = target.pid.expect("an echod started here has a pid");
    if let Some(bytes) = options.address_space_bytes {
        if let Err(err) = target.limit_address_space(bytes) {
            return Outcome::SetupFailed(format!("cannot limit echod's address space: {err}"));
        }
    }
    let started = Instant::now();
    let deadline = started + options.max_seconds;
    let rss_start = match process::rss_bytes(pid) {
        Ok(rss) => rss,
        Err(err) => return Outcome::SetupFailed(format!("cannot read echod's RSS: {err}")),
    };
    let fresh_timeout = options.fresh_limit * 3;
    let prober = FreshProber::start(target.addr, options.fresh_interval, fresh_timeout);
    eprintln!(
        "echo-chaos: memory-flood of echod at {} (pid {pid}): {} clients x {}",
        target.addr,
        options.clients,
        mib(options.bytes_per_client as u64)
    );
    let mut rss_peak = rss_start;
    let flood = flood(options, target.addr, deadline, &mut || {
        if let Ok(rss) = process::rss_bytes(pid) {
            rss_peak = rss_peak.max(rss);
        }
    });
    let tally = match flood {
        Ok(tally) => tally,
        Err(err) => return Outcome::SetupFailed(format!("cannot run the flood: {err}")),
    };
    let meanwhile = prober.finish();
    // echod lets go of the closed flood; its figures then are the end ones.
    let settle_deadline =
        Instant::now() + SETTLE.min(deadline.saturating_duration_since(Instant::now()));
    while Instant::now() < settle_deadline
        && echod_side(pid, target.addr).is_ok_and(|side| !side.is_empty())
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_end = process::rss_bytes(pid).ok();
    let high_water = process::status_bytes(pid, "VmHWM").ok();
    let afterwards = fresh_try(target.addr, FRESH_SOURCE, fresh_timeout);
    let exited = target.exited();
    let peak = high_water.unwrap_or(rss_peak).max(rss_peak);
    let growth = peak.saturating_sub(rss_start);

    let mut verdict = Verdict::default();
    verdict.figure(
        "flood clients",
        format!(
            "{} connected, {} refused, {} closed by echod",
            tally.connected, tally.refused, tally.closed_by_echod
        ),
    );
    verdict.figure(
        "echod's closes",
        match (tally.first_close, tally.last_close) {
            (Some(first), Some(last)) => format!(
                "from {:.1} s to {:.1} s into the flood{}",
                first.as_secs_f64(),
                last.as_secs_f64(),
                tally
                    .first_error
                    .as_ref()
                    .map_or(String::new(), |err| format!(" (first: {err})"))
            ),
            _ => "none".into(),
        },
    );
    verdict.figure(
        "bytes pushed",
        format!(
            "{} in all, {} per connected client",
            mib(tally.bytes),
            mib(tally.bytes / tally.connected.max(1) as u64)
        ),
    );
    verdict.figure(
        "echod RSS",
        format!(
            "start {}, peak {} (VmHWM {}), end {}",
            mib(rss_start),
            mib(rss_peak),
            high_water.map_or("unreadable".into(), mib),
            rss_end.map_or("unreadable".into(), mib)
        ),
    );
    verdict.figure(
        "elapsed",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    if let Some(bytes) = options.address_space_bytes {
        verdict.figure("RLIMIT_AS", mib(bytes));
    }
    let (fresh_passed, fresh_line) = judge_fresh(&meanwhile, options.fresh_limit);
    verdict.check(
        exited.is_none(),
        match exited {
            None => "echod alive at the end".to_owned(),
            Some(status) => format!("echod alive at the end: it exited, {status}"),
        },
    );
    verdict.check(
        growth <= options.rss_growth_bytes,
        format!(
            "echod's RSS grew {} over its start, bound {}",
            mib(growth),
            mib(options.rss_growth_bytes)
        ),
    );
    if options.address_space_bytes.is_some() {
        // Under the limit the target is survival and service afterwards;
        // how newcomers fared during the flood is reported, not judged.
        verdict.figure("during the flood", fresh_line);
    } else {
        verdict.check(fresh_passed, format!("during the flood: {fresh_line}"));
    }
    verdict.check(
        afterwards
            .as_ref()
            .is_ok_and(|took| *took <= options.fresh_limit),
        match &afterwards {
            Ok(took) => format!("after the flood: a fresh client served in {}", ms(*took)),
            Err(err) => format!("after the flood: a fresh client not served ({err})"),
        },
    );
    if let Some(Err(err)) = target.stop() {
        eprintln!("echo-chaos: stopping echod: {err}");
    }
    Outcome::Judged(verdict)
}

/// Connects every flooding client, pushes until all have sent what they
/// could, holds them for `--hold`, and closes them. `sample` is called
/// every `SAMPLE_EVERY`.
fn flood(
    options: &AttackOptions,
    addr: SocketAddr,
    deadline: Instant,
    sample: &mut dyn FnMut(),
) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let lines = filler(options.line_bytes);
    let mut flooders = Vec::with_capacity(options.clients);
    for key in 0..options.clients {
        let mut stream = connect_stalled_reader(addr)?;
        poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        flooders.push(Flooder {
            stream,
            sent: 0,
            connected: false,
            ended: None,
        });
    }
    let began = Instant::now();
    let mut tally = Tally::default();
    let mut last_progress = began;
    let mut next_sample = began;
    let mut hold_until = None;
    loop {
        let now = Instant::now();
        if now >= next_sample {
            sample();
            next_sample = now + SAMPLE_EVERY;
        }
        let all_done = flooders
            .iter()
            .all(|f| f.ended.is_some() || f.sent == options.bytes_per_client);
        if hold_until.is_none() && (all_done || now.duration_since(last_progress) >= STALL) {
            eprintln!(
                "echo-chaos: flood pushed what it could after {:.1} s; holding {:.1} s",
                now.duration_since(began).as_secs_f64(),
                options.hold.as_secs_f64()
            );
            hold_until = Some(now + options.hold);
        }
        if hold_until.is_some_and(|until| now >= until) || now >= deadline {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in &events {
            let flooder = &mut flooders[event.token().0];
            if flooder.ended.is_some() {
                continue;
            }
            let at = now.duration_since(began);
            if event.is_error() || event.is_read_closed() || event.is_write_closed() {
                let err = flooder.stream.take_error().ok().flatten();
                end(
                    flooder,
                    &mut tally,
                    at,
                    err.map_or("closed".into(), |e| e.to_string()),
                );
                continue;
            }
            if !event.is_writable() {
                continue;
            }
            if !flooder.connected {
                match flooder.stream.peer_addr() {
                    Ok(_) => {
                        flooder.connected = true;
                        tally.connected += 1;
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotConnected => continue,
                    Err(err) => {
                        end(flooder, &mut tally, at, err.to_string());
                        continue;
                    }
                }
            }
            match push(flooder, &lines, options.bytes_per_client) {
                Ok(0) => {}
                Ok(bytes) => {
                    tally.bytes += bytes as u64;
                    last_progress = now;
                }
                Err(err) => end(flooder, &mut tally, at, err.to_string()),
            }
        }
    }
    // Dropping the clients closes them: with unread echoes, each with a
    // reset, as a crashed or killed client would.
    drop(flooders);
    Ok(tally)
}

/// Records that `flooder`'s connection ended `at` into the flood.
fn end(flooder: &mut Flooder, tally: &mut Tally, at: Duration, why: String) {
    flooder.ended = Some(at);
    if !flooder.connected {
        tally.refused += 1;
        return;
    }
    tally.closed_by_echod += 1;
    tally.first_close.get_or_insert(at);
    tally.last_close = Some(at);
    tally.first_error.get_or_insert(why);
}

/// Writes until the socket is full or `quota` is sent; returns the bytes
/// written. The lines are periodic in `lines`, so any offset continues them.
fn push(flooder: &mut Flooder, lines: &[u8], quota: usize) -> io::Result<usize> {
    let mut written = 0;
    while flooder.sent < quota {
        let offset = flooder.sent % lines.len();
        let end = lines.len().min(offset + (quota - flooder.sent));
        match flooder.stream.write(&lines[offset..end]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                flooder.sent += n;
                written += n;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(written)
}

/// 64 lines of `line_bytes` each, CRLF included.
fn filler(line_bytes: usize) -> Vec<u8> {
    let mut line = vec![b'x'; line_bytes - 2];
    line.extend_from_slice(b"\r\n");
    line.repeat(64)
}

/// A non-blocking connection to `addr` made like a reader across a real
/// network that has stopped reading: a 16 KiB receive buffer and an MSS of
/// 1460, set before the handshake, where the window scale and the MSS are
/// chosen. What echod owes it then stays in echod, not in the kernel.
pub fn connect_stalled_reader(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_recv_buffer_size(16 << 10)?;
    socket.set_tcp_mss(1460)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_lines_have_the_asked_length_and_end_in_crlf() {
        let lines = filler(1024);
        assert_eq!(lines.len(), 64 * 1024);
        assert!(
            lines
                .chunks(1024)
                .all(|line| line.ends_with(b"\r\n") && line[..1022].iter().all(|&b| b == b'x'))
        );
    }
}
