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
            let step = conn.on_ready(ready, &limits, &mut read_buffer, 0);
            assert!(
                matches!(step, Step::Wait),
                "the echo completes in one event"
            );
        });
    assert_eq!(conn.pending_bytes(), 0);
}
