//! What other clients do to one: many at once, one flooding, many
//! trickling, one never reading. In each, a well-behaved client measures
//! its round trips while the others misbehave, and the check fails if its
//! 99th percentile passes `ISOLATION_BOUND`.
//!
//! The misbehaving clients are bounded in time and volume and are closed
//! before the check returns.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::ISOLATION_BOUND;

use crate::client::{self, Stopped, numbered_lines, read_up_to, round_trip};
use crate::{Options, Outcome};

/// Clients `concurrency` holds open at once.
const CONCURRENT_CLIENTS: usize = 1_000;
/// Clients `slowloris-isolation` trickles bytes from.
const TRICKLING_CLIENTS: usize = 200;
/// The p99 round trip allowed beside a flooder. A loop that serves the
/// flooder until it pauses answers no one for seconds (the round trip is
/// given up at `ROUND_TRIP_LIMIT`); a loop without a per-turn budget that
/// only keeps pace with the flooder was seen at 1.2 s on a loaded two-core
/// machine, a delay, not starvation.
const FLOODER_BOUND: Duration = Duration::from_secs(2);
/// Round trips the well-behaved client makes while others misbehave.
const ROUND_TRIPS: usize = 100;
/// Round trips beside the flooder, fewer: the flood costs the machine a
/// core or two for as long as they take.
const FLOODED_ROUND_TRIPS: usize = 50;
/// The longest one round trip is waited for; past `ISOLATION_BOUND`
/// already, so a missing echo is told from a slow one.
const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(3);
/// Most the non-reading client sends: more than the kernel's buffers for
/// its connection hold once its own receive buffer is small, so that a
/// server blocked on writing to it is certain to block.
const NON_READER_CAP_BYTES: u64 = 48 * 1024 * 1024;

/// `concurrency`: 1,000 clients connect, each sends a line of its own,
/// and each gets its own line back.
pub fn concurrency(options: &Options) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(20);
    let terminator = options.framing.terminator();
    let mut clients = Vec::with_capacity(CONCURRENT_CLIENTS);
    for n in 0..CONCURRENT_CLIENTS {
        if Instant::now() > deadline {
            return Outcome::fail(format!("only {n} clients connected in 20 s"));
        }
        let mut stream = match client::connect(options.target) {
            Ok(stream) => stream,
            Err(err) => {
                return Outcome::fail(format!(
                    "client {n} of {CONCURRENT_CLIENTS}: connect failed: {err}"
                ));
            }
        };
        let mut line = format!("client {n:04}").into_bytes();
        line.extend_from_slice(terminator);
        if let Err(err) = stream.write_all(&line) {
            return Outcome::fail(format!("client {n}: write failed: {err}"));
        }
        clients.push((stream, line));
    }
    let started = Instant::now();
    for (n, (stream, line)) in clients.iter_mut().enumerate() {
        let (received, ending) = read_up_to(stream, line.len(), deadline);
        if received != *line {
            return Outcome::fail(format!(
                "client {n} of {CONCURRENT_CLIENTS} connected at once: {}",
                client::difference(line, &received, ending)
            ));
        }
    }
    Outcome::pass(format!(
        "{CONCURRENT_CLIENTS} clients open at once, each echoed its own line; last echo read {} ms after the first",
        started.elapsed().as_millis()
    ))
}

/// `flooder-fairness`: one client writes lines as fast as the server
/// takes them (and reads its echoes, so it never stalls itself) while
/// another makes 50 round trips.
pub fn flooder_fairness(options: &Options) -> Outcome {
    let flooder = match client::connect(options.target) {
        Ok(stream) => stream,
        Err(err) => return Outcome::fail(format!("flooder: connect failed: {err}")),
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Writes of 256 KiB: the flooder makes one system call for the
    // server's many reads, so a server that reads it until `WouldBlock`
    // seldom gets there.
    let chunk = numbered_lines("flood", 4096, 64, options.framing.terminator());
    let writer = {
        let (mut stream, stop) = (flooder.try_clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let Ok(stream) = stream.as_mut() else {
                return 0u64;
            };
            let until = Instant::now() + Duration::from_secs(15);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                match stream.write(&chunk) {
                    Ok(n) => sent += n as u64,
                    Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            sent
        })
    };
    let reader = {
        let (mut stream, stop) = (flooder.try_clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let Ok(stream) = stream.as_mut() else { return };
            let mut buf = vec![0; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        })
    };
    // Let the flood get going before measuring.
    thread::sleep(Duration::from_millis(200));
    let measured = round_trips(options, FLOODED_ROUND_TRIPS, "beside a flooder");
    stop.store(true, Ordering::Relaxed);
    let _ = flooder.shutdown(Shutdown::Both);
    let flooded = writer.join().unwrap_or(0);
    let _ = reader.join();
    judge_round_trips(
        measured,
        FLOODER_BOUND,
        &format!("beside a flooder ({} MiB sent)", flooded >> 20),
    )
}

/// `slowloris-isolation`: 200 clients each send one byte of an unfinished
/// line every 20 ms while another makes 100 round trips.
pub fn slowloris_isolation(options: &Options) -> Outcome {
    let mut tricklers = Vec::with_capacity(TRICKLING_CLIENTS);
    for n in 0..TRICKLING_CLIENTS {
        match client::connect(options.target) {
            Ok(stream) => tricklers.push(stream),
            Err(err) => return Outcome::fail(format!("trickler {n}: connect failed: {err}")),
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(15);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                for stream in &mut tricklers {
                    // A server that closes a trickler (a line timeout, say)
                    // is within its rights; the verdict is the other
                    // client's.
                    let _ = stream.write(b"s");
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    thread::sleep(Duration::from_millis(200));
    let measured = round_trips(options, ROUND_TRIPS, "beside tricklers");
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    judge_round_trips(
        measured,
        ISOLATION_BOUND,
        &format!("beside {TRICKLING_CLIENTS} clients trickling a byte each every 20 ms"),
    )
}

/// `non-reader-isolation`: one client with a small receive buffer writes
/// until the server stops taking its bytes (or 48 MiB), never reading;
/// then another client makes 100 round trips.
pub fn non_reader_isolation(options: &Options) -> Outcome {
    let mut non_reader = match client::connect_small_receive(options.target, 16 * 1024) {
        Ok(stream) => stream,
        Err(err) => return Outcome::fail(format!("non-reader: connect failed: {err}")),
    };
    let chunk = numbered_lines("never read", 1024, 64, options.framing.terminator());
    let (sent, stopped) = client::send_until_stuck(
        &mut non_reader,
        &chunk,
        NON_READER_CAP_BYTES,
        Duration::from_millis(500),
    );
    let how = match stopped {
        Stopped::Stuck => "until its writes stopped",
        Stopped::Cap => "without its writes stopping",
        Stopped::Error(_) => "until the server closed it",
    };
    let measured = round_trips(options, ROUND_TRIPS, "beside a non-reader");
    // Closing the non-reader resets its connection, which also frees a
    // server blocked on writing to it.
    drop(non_reader);
    judge_round_trips(
        measured,
        ISOLATION_BOUND,
        &format!(
            "after a non-reader sent {:.1} MiB {how}",
            sent as f64 / 1048576.0
        ),
    )
}

/// `count` round trips on a new connection; their durations, or the
/// evidence of the first that failed.
fn round_trips(options: &Options, count: usize, context: &str) -> Result<Vec<Duration>, String> {
    let mut stream = client::connect(options.target)
        .map_err(|err| format!("ping-pong client {context}: connect failed: {err}"))?;
    let mut times = Vec::with_capacity(count);
    for n in 0..count {
        let mut line = format!("ping {n:03}").into_bytes();
        line.extend_from_slice(options.framing.terminator());
        let time = round_trip(&mut stream, &line, ROUND_TRIP_LIMIT)
            .map_err(|evidence| format!("round trip {} of {count} {context}: {evidence}", n + 1))?;
        times.push(time);
    }
    Ok(times)
}

/// Passes if every round trip completed and their 99th percentile is
/// within `bound`.
fn judge_round_trips(
    measured: Result<Vec<Duration>, String>,
    bound: Duration,
    context: &str,
) -> Outcome {
    let mut times = match measured {
        Ok(times) => times,
        Err(evidence) => return Outcome::fail(evidence),
    };
    times.sort();
    let at = |quantile: f64| {
        times[((times.len() as f64 * quantile).ceil() as usize).clamp(1, times.len()) - 1]
    };
    let (p50, p99) = (at(0.50), at(0.99));
    let summary = format!(
        "{} round trips {context}: p50 {:.1} ms, p99 {:.1} ms (bound {} ms)",
        times.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        bound.as_millis()
    );
    if p99 <= bound {
        Outcome::pass(summary)
    } else {
        Outcome::fail(summary)
    }
}
