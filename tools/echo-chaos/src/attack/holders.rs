//! slowloris and slots: clients that hold a connection and do little or
//! nothing with it, from 127.0.0.1.
//!
//! - A *trickling* client feeds an unfinished line, one byte every
//!   `--byte-interval-ms`, never a terminator: each byte is progress to an
//!   idle timer, and the line never ends.
//! - A *stalled reader* makes echod owe it `--owe-mib` and reads nothing
//!   (16 KiB receive buffer, MSS 1460, as in memory-flood).
//! - A *silent* client connects and sends nothing.
//!
//! Whether echod still holds a connection is read from its side, in its
//! `/proc/PID/net/tcp`: a client cannot tell (a stalled reader reads
//! nothing, and a reset can wait in its unread queue). slowloris checks
//! that echod closes the trickling clients and the stalled readers, and
//! sets keepalive on every socket; slots checks that, with every slot
//! held, a client from 127.0.0.2 is still served.
//!
//! The clients are non-blocking sockets driven by one loop ticking every
//! `TICK`; nothing here waits on one of them.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use echod_kit::sockets::TcpSocket;
use socket2::{Domain, Socket, Type};

use super::options::AttackOptions;
use super::{
    FRESH_SOURCE, Outcome, Verdict, await_accepted, echod_side, fresh_try, judge_keepalive, mib, ms,
};
use crate::target::Target;

/// How often the loop feeds the clients and looks at echod's sockets.
const TICK: Duration = Duration::from_millis(100);
/// How long echod may take to accept every holder.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a holder does with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Habit {
    Silent,
    Trickle,
    Stalled,
}

impl Habit {
    fn name(self) -> &'static str {
        match self {
            Habit::Silent => "silent clients",
            Habit::Trickle => "trickling clients",
            Habit::Stalled => "stalled readers",
        }
    }
}

/// One client holding a connection.
#[derive(Debug)]
struct Holder {
    habit: Habit,
    stream: TcpStream,
    /// The client's address, which is echod's socket's remote end.
    local: SocketAddr,
    opened: Instant,
    /// Trickle: when the next byte is due.
    next_byte: Instant,
    /// Bytes written (a stalled reader's are all owed back to it).
    sent: usize,
    /// When, since `opened`, echod was first seen not holding it.
    closed_after: Option<Duration>,
}

impl Holder {
    fn open(habit: Habit, addr: SocketAddr) -> io::Result<Holder> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if habit == Habit::Stalled {
            // As memory-flood's clients, so that what is owed stays in echod.
            socket.set_recv_buffer_size(16 << 10)?;
            socket.set_tcp_mss(1460)?;
        }
        socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
        let stream = TcpStream::from(socket);
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let now = Instant::now();
        Ok(Holder {
            habit,
            local: stream.local_addr()?,
            stream,
            opened: now,
            next_byte: now,
            sent: 0,
            closed_after: None,
        })
    }

    /// Makes this tick's move: a trickling client's byte if it is due, a
    /// stalled reader's push until its socket is full or `owe` is sent. A
    /// write error is ignored: echod's side says whether it closed.
    fn act(&mut self, now: Instant, byte_interval: Duration, owe: usize, filler: &[u8]) {
        match self.habit {
            Habit::Silent => {}
            Habit::Trickle if now >= self.next_byte => {
                if self.stream.write(b"a").is_ok() {
                    self.sent += 1;
                }
                self.next_byte += byte_interval;
            }
            Habit::Trickle => {}
            Habit::Stalled => {
                while self.sent < owe {
                    let offset = self.sent % filler.len();
                    let end = filler.len().min(offset + (owe - self.sent));
                    match self.stream.write(&filler[offset..end]) {
                        Ok(n) if n > 0 => self.sent += n,
                        _ => break,
                    }
                }
            }
        }
    }
}

/// Opens `counts` of each habit against `addr`, trickling clients first
/// byte included.
fn open_all(addr: SocketAddr, counts: &[(Habit, usize)]) -> io::Result<Vec<Holder>> {
    let mut holders = Vec::new();
    for &(habit, n) in counts {
        for _ in 0..n {
            holders.push(Holder::open(habit, addr).map_err(|err| {
                io::Error::new(err.kind(), format!("opening {}: {err}", habit.name()))
            })?);
        }
    }
    Ok(holders)
}

/// Marks every holder echod no longer holds, as seen in `side`.
fn note_closes(holders: &mut [Holder], side: &HashMap<SocketAddr, TcpSocket>, now: Instant) {
    for holder in holders.iter_mut().filter(|h| h.closed_after.is_none()) {
        if !side.contains_key(&holder.local) {
            holder.closed_after = Some(now.duration_since(holder.opened));
        }
    }
}

/// How the holders of one habit fared: the check's outcome and its line.
fn judge_closes(holders: &[Holder], habit: Habit, bound: Duration) -> (bool, String) {
    let ours: Vec<&Holder> = holders.iter().filter(|h| h.habit == habit).collect();
    let closed: Vec<Duration> = ours.iter().filter_map(|h| h.closed_after).collect();
    let slowest = closed.iter().max().copied();
    let passed = !ours.is_empty() && closed.len() == ours.len() && slowest <= Some(bound);
    let mut line = format!(
        "{} closed by echod: {} of {}",
        habit.name(),
        closed.len(),
        ours.len()
    );
    if let Some(slowest) = slowest {
        line += &format!(", the slowest after {:.1} s", slowest.as_secs_f64());
    }
    if closed.len() < ours.len() {
        let open_for = ours
            .iter()
            .map(|h| h.opened.elapsed())
            .min()
            .unwrap_or_default();
        line += &format!(
            ", the rest still open after {:.0} s",
            open_for.as_secs_f64()
        );
    }
    line += &format!("; bound {:.0} s", bound.as_secs_f64());
    (passed, line)
}

fn filler() -> Vec<u8> {
    let mut line = vec![b'x'; 1022];
    line.extend_from_slice(b"\r\n");
    line.repeat(64)
}

/// Runs slowloris.
pub fn run_slowloris(options: &AttackOptions) -> Outcome {
    let mut target = match Target::spawn(&options.echod, &options.echod_args) {
        Ok(target) => target,
        Err(err) => return Outcome::SetupFailed(format!("cannot start echod: {err}")),
    };
    let pid = target.pid.expect("an echod started here has a pid");
    let started = Instant::now();
    let counts = [
        (Habit::Trickle, options.trickle),
        (Habit::Stalled, options.stalled),
        (Habit::Silent, options.silent),
    ];
    let mut holders = match open_all(target.addr, &counts) {
        Ok(holders) => holders,
        Err(err) => return Outcome::SetupFailed(err.to_string()),
    };
    let filler = filler();
    let accepted = match await_accepted(pid, target.addr, holders.len(), ACCEPT_TIMEOUT) {
        Ok(side) => side,
        Err(err) => return Outcome::SetupFailed(format!("cannot read echod's sockets: {err}")),
    };
    // Keepalive is set, if at all, when echod accepts: read it now, while
    // echod holds every socket.
    let inodes: Vec<u64> = holders
        .iter()
        .filter_map(|h| accepted.get(&h.local).map(|s| s.inode))
        .collect();
    let keepalive = judge_keepalive(pid, &inodes);
    eprintln!(
        "echo-chaos: slowloris on echod at {} (pid {pid}): {} trickling, {} stalled, {} silent; up to {:.0} s",
        target.addr,
        options.trickle,
        options.stalled,
        options.silent,
        options.close_within.as_secs_f64()
    );
    let deadline = (started + options.max_seconds)
        .min(Instant::now() + options.close_within + Duration::from_secs(1));
    let must_close = |habit| habit != Habit::Silent || options.silent_must_close;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        for holder in holders.iter_mut().filter(|h| h.closed_after.is_none()) {
            holder.act(now, options.byte_interval, options.owe_bytes, &filler);
        }
        match echod_side(pid, target.addr) {
            Ok(side) => note_closes(&mut holders, &side, now),
            // echod has gone: nothing more will change.
            Err(_) => break,
        }
        let waiting = holders
            .iter()
            .filter(|h| must_close(h.habit) && h.closed_after.is_none())
            .count();
        if waiting == 0 || now >= deadline {
            break;
        }
        if now >= next_report {
            eprintln!(
                "echo-chaos: {:.0} s: {waiting} connections still held by echod",
                now.duration_since(started).as_secs_f64()
            );
            next_report += Duration::from_secs(10);
        }
        thread::sleep(TICK);
    }
    let exited = target.exited();

    let mut verdict = Verdict::default();
    verdict.figure(
        "accepted by echod",
        format!("{} of {}", inodes.len(), holders.len()),
    );
    let owed = holders
        .iter()
        .filter(|h| h.habit == Habit::Stalled)
        .map(|h| h.sent as u64)
        .min();
    if let Some(owed) = owed {
        verdict.figure(
            "owed to each stalled reader",
            format!("at least {}", mib(owed)),
        );
    }
    verdict.figure(
        "elapsed",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    for (habit, n) in counts {
        if n == 0 {
            continue;
        }
        let (passed, line) = judge_closes(&holders, habit, options.close_within);
        if must_close(habit) {
            verdict.check(passed, line);
        } else {
            verdict.figure(habit.name(), line);
        }
    }
    verdict.check(keepalive.0, keepalive.1);
    verdict.check(exited.is_none(), alive_line(exited));
    if let Some(Err(err)) = target.stop() {
        eprintln!("echo-chaos: stopping echod: {err}");
    }
    Outcome::Judged(verdict)
}

/// Runs slots.
pub fn run_slots(options: &AttackOptions) -> Outcome {
    let mut target = match Target::spawn(&options.echod, &options.echod_args) {
        Ok(target) => target,
        Err(err) => return Outcome::SetupFailed(format!("cannot start echod: {err}")),
    };
    let pid = target.pid.expect("an echod started here has a pid");
    let started = Instant::now();
    let counts = [
        (Habit::Silent, options.silent),
        (Habit::Trickle, options.trickle),
    ];
    let mut holders = match open_all(target.addr, &counts) {
        Ok(holders) => holders,
        Err(err) => return Outcome::SetupFailed(err.to_string()),
    };
    let held = match await_accepted(pid, target.addr, holders.len(), ACCEPT_TIMEOUT) {
        Ok(side) => side.len(),
        Err(err) => return Outcome::SetupFailed(format!("cannot read echod's sockets: {err}")),
    };
    eprintln!(
        "echo-chaos: slots on echod at {} (pid {pid}): {held} of --max-connections {} held",
        target.addr, options.max_connections
    );
    let addr = target.addr;
    let (limit, interval) = (options.fresh_limit, options.fresh_interval);
    let give_up = options
        .give_up
        .min(options.max_seconds.saturating_sub(started.elapsed()));
    let fresh = thread::spawn(move || {
        let first_try = Instant::now();
        let mut failures = Vec::new();
        while first_try.elapsed() < give_up {
            match fresh_try(addr, FRESH_SOURCE, limit) {
                Ok(_) => return (Some(first_try.elapsed()), failures),
                Err(err) => failures.push(err),
            }
            thread::sleep(interval);
        }
        (None, failures)
    });
    let filler = filler();
    while !fresh.is_finished() {
        let now = Instant::now();
        for holder in holders.iter_mut() {
            holder.act(now, options.byte_interval, 0, &filler);
        }
        thread::sleep(TICK);
    }
    let (served_after, failures) = fresh.join().expect("the fresh client's thread panicked");
    if let Ok(side) = echod_side(pid, target.addr) {
        note_closes(&mut holders, &side, Instant::now());
    }
    let exited = target.exited();

    let mut verdict = Verdict::default();
    let evicted = holders.iter().filter(|h| h.closed_after.is_some()).count();
    verdict.figure(
        "holders closed by echod",
        format!("{evicted} of {}", holders.len()),
    );
    verdict.figure(
        "fresh client's failed tries",
        match failures.first() {
            Some(first) => format!("{} (first: {first})", failures.len()),
            None => "0".into(),
        },
    );
    verdict.check(
        held == options.max_connections,
        format!(
            "the holders took every slot: echod held {held} of --max-connections {}",
            options.max_connections
        ),
    );
    verdict.check(
        served_after.is_some_and(|after| after <= limit),
        match served_after {
            Some(after) => format!(
                "a client from {FRESH_SOURCE} served {} after its first try, bound {}",
                ms(after),
                ms(limit)
            ),
            None => format!(
                "a client from {FRESH_SOURCE} not served in {:.1} s of tries, bound {}",
                give_up.as_secs_f64(),
                ms(limit)
            ),
        },
    );
    verdict.check(exited.is_none(), alive_line(exited));
    if let Some(Err(err)) = target.stop() {
        eprintln!("echo-chaos: stopping echod: {err}");
    }
    Outcome::Judged(verdict)
}

/// The line of the "echod alive" check.
pub fn alive_line(exited: Option<std::process::ExitStatus>) -> String {
    match exited {
        None => "echod alive at the end".into(),
        Some(status) => format!("echod alive at the end: it exited, {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(habit: Habit, closed_after: Option<u64>) -> Holder {
        // A connected pair on loopback: the tests judge figures, not sockets.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        Holder {
            habit,
            local: stream.local_addr().expect("local"),
            stream,
            opened: Instant::now(),
            next_byte: Instant::now(),
            sent: 0,
            closed_after: closed_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn every_holder_of_a_habit_must_be_closed_within_the_bound() {
        let bound = Duration::from_secs(100);
        let cases = [
            (vec![Some(60), Some(99)], true),
            (vec![Some(60), Some(101)], false),
            (vec![Some(60), None], false),
            (vec![], false),
        ];
        for (closes, passes) in cases {
            let holders: Vec<Holder> = closes.iter().map(|c| holder(Habit::Trickle, *c)).collect();
            let (passed, line) = judge_closes(&holders, Habit::Trickle, bound);
            assert_eq!(passed, passes, "{closes:?}: {line}");
        }
        // Other habits do not count.
        let holders = [holder(Habit::Trickle, Some(5)), holder(Habit::Silent, None)];
        assert!(judge_closes(&holders, Habit::Trickle, bound).0);
    }

    #[test]
    fn a_holder_missing_from_echods_side_is_closed() {
        let mut holders = [holder(Habit::Silent, None), holder(Habit::Silent, None)];
        let mut side = HashMap::new();
        let row = TcpSocket {
            local: "127.0.0.1:1".parse().expect("addr"),
            remote: holders[0].local,
            state: echod_kit::sockets::TCP_ESTABLISHED,
            send_queue_bytes: 0,
            receive_queue_bytes: 0,
            timer: 0,
            inode: 1,
        };
        side.insert(holders[0].local, row);
        note_closes(&mut holders, &side, Instant::now());
        assert!(holders[0].closed_after.is_none());
        assert!(holders[1].closed_after.is_some());
    }
}
