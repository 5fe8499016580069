//! Micro-benchmarks of the per-byte and per-event work, with no system calls:
//! the framing scan, and a connection echoing through an in-memory stream
//! (reads, scan, buffer bookkeeping, writes, buffer release).
//!
//! `cargo bench --bench micro`; `cargo bench --bench micro -- --test` runs
//! each once, as CI does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use echod::Framing;
use echod::buffer::ReadBuffer;
use echod::connection::{Connection, Limits, Readiness, Step, Stream};

fn main() {
    divan::main();
}

/// `count` lines of `size` bytes each, terminator included.
fn lines(framing: Framing, size: usize, count: usize) -> Vec<u8> {
    let terminator: &[u8] = if framing == Framing::Crlf {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut out = Vec::with_capacity(size * count);
    for i in 0..count {
        let body = size - terminator.len();
        out.extend((0..body).map(|j| b'a' + ((i + j) % 26) as u8));
        out.extend_from_slice(terminator);
    }
    out
}

const FRAMINGS: [Framing; 2] = [Framing::Crlf, Framing::Lf];

/// Scanning 256 KiB of lines for terminators.
#[divan::bench(args = FRAMINGS, consts = [64, 4096])]
fn scan<const LINE: usize>(bencher: Bencher, framing: Framing) {
    let window = lines(framing, LINE, 256 * 1024 / LINE);
    bencher
        .counter(BytesCount::of_slice(&window))
        .bench(|| framing.scan(black_box(&window), 0, 64 * 1024));
}

/// A socket stand-in: reads return the queued chunks one at a time, then
/// `WouldBlock`; writes are swallowed whole.
struct Memory {
    input: VecDeque<Vec<u8>>,
    written: usize,
}

impl Read for Memory {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(chunk) = self.input.front_mut() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.input.pop_front();
        }
        Ok(n)
    }
}

impl Write for Memory {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Memory {
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

/// One readiness event carrying `PER_EVENT` 64-byte CRLF lines, echoed:
/// 1 is ping-pong, 64 a pipelined client.
#[divan::bench(consts = [1, 16, 64])]
fn echo_event<const PER_EVENT: usize>(bencher: Bencher) {
    let chunk = lines(Framing::Crlf, 64, PER_EVENT);
    let limits = Limits::new(Framing::Crlf, 64 * 1024, 1024 * 1024);
    let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
    let mut read_buffer = ReadBuffer::default();
    let memory = Memory {
        input: VecDeque::new(),
        written: 0,
    };
    let mut conn = Connection::new(memory, peer, 0);
    let ready = Readiness::of_event(true, true, false, false, false);
    bencher
        .counter(ItemsCount::new(PER_EVENT))
        .counter(BytesCount::of_slice(&chunk))
        .bench_local(|| {
            conn.stream_mut().input.push_back(chunk.clone());
            let step = conn.on_ready(ready, &limits, &mut read_buffer, 0, usize::MAX);
            assert!(
                matches!(step, Step::Wait),
                "the echo completes in one event"
            );
        });
    assert_eq!(conn.pending_bytes(), 0);
}

/// `n` idle connections accepted evenly over a minute, with the default
/// timeouts and an idle timeout of an hour, as a steady population would
/// be. (Without an idle timeout an idle connection has no entry in the
/// deadline queue at all: the send and line timeouts run only while it
/// holds leftovers.)
fn idle_population(n: usize) -> echod::connections::Connections<Memory> {
    use echod::config::Config;
    use echod::connections::{AcceptEnd, Connections, Listener, Registrar};
    use mio::Interest;

    struct NoRegistry;
    impl Registrar<Memory> for NoRegistry {
        fn register(&self, _: &mut Memory, _: usize, _: Interest) -> io::Result<()> {
            Ok(())
        }
        fn reregister(&self, _: &mut Memory, _: usize, _: Interest) -> io::Result<()> {
            Ok(())
        }
        fn deregister(&self, _: &mut Memory) -> io::Result<()> {
            Ok(())
        }
    }
    struct Clients(std::cell::Cell<usize>);
    impl Listener<Memory> for Clients {
        fn accept(&self) -> io::Result<(Memory, SocketAddr)> {
            if self.0.get() == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.0.set(self.0.get() - 1);
            let memory = Memory {
                input: VecDeque::new(),
                written: 0,
            };
            Ok((memory, ([127, 0, 0, 1], 1).into()))
        }
    }

    let config = Config {
        idle_timeout: Some(std::time::Duration::from_secs(3600)),
        ..Config::default()
    };
    let mut connections =
        Connections::new(config.limits(), config.timeouts(), usize::MAX, usize::MAX);
    for second in 0..60u64 {
        let clients = Clients(std::cell::Cell::new(n / 60));
        while matches!(
            connections
                .accept_pending(&clients, &NoRegistry, usize::MAX, second * 1000, |_| {})
                .0,
            AcceptEnd::BudgetSpent
        ) {}
    }
    connections
}

/// What the deadline queue costs the loop at 20,000 idle connections with
/// the default timeouts and an idle timeout (see `idle_population`): one second's `expire` (the housekeeping tick), in
/// which the connections whose look falls in that second (about 1/60 of
/// them: the shortest timeout is 60 s, and nothing is owed or begun) are
/// looked at and put back.
#[divan::bench(consts = [20_000])]
fn expire_one_second<const CONNECTIONS: usize>(bencher: Bencher) {
    let mut connections = idle_population(CONNECTIONS);
    let mut now_ms = 60_000;
    bencher.bench_local(|| {
        now_ms += 1000;
        let closed = connections.expire(black_box(now_ms));
        assert!(closed.is_empty(), "idle connections have no deadline");
    });
}

/// The same second as a sweep would spend it: every connection's deadline
/// worked out, as echod did before the queue.
#[divan::bench(consts = [20_000])]
fn sweep_one_second<const CONNECTIONS: usize>(bencher: Bencher) {
    let connections = idle_population(CONNECTIONS);
    let timeouts = echod::config::Config {
        idle_timeout: Some(std::time::Duration::from_secs(3600)),
        ..echod::config::Config::default()
    }
    .timeouts();
    bencher.bench_local(|| {
        let due = connections
            .iter()
            .filter(|(_, connection)| {
                connection
                    .deadline(&timeouts)
                    .is_some_and(|(at_ms, _)| at_ms <= black_box(120_000))
            })
            .count();
        assert_eq!(due, 0);
    });
}
