//! The yardsticks echod is compared with: the line echo servers people would
//! otherwise write. Each is small, correct and CRLF-framed: it echoes every
//! complete line and holds back an unfinished one, with the same 64 KiB line
//! limit as echod's default. They run as separate processes (this benchmark
//! binary, re-executed with `ECHOD_BENCH_PEER` set) so that their CPU time
//! and memory can be read from /proc like echod's.
//!
//! One peer is not a yardstick but a bound: `floor` (in `floor.rs`) does the
//! least a readiness server can do, with no framing and no limits, so that
//! the tables can show how far echod is from the bare cost of the job.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use memchr::memmem;

/// Longest line a peer holds, as echod's default `--max-line-bytes`.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// A connection's buffer, allocated when it is accepted as in the classic
/// examples: the size of echod's reads, so that bulk transfers cost the
/// same system calls. It doubles while a line outgrows it, up to
/// `MAX_LINE_BYTES`.
const INITIAL_BYTES: usize = 16 * 1024;

/// A server to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The daemon itself, built by cargo.
    Echod,
    /// One thread, raw level-triggered epoll, one buffer: the least a
    /// readiness server can do (`floor.rs`).
    Floor,
    /// tokio with the current-thread runtime: one thread, like echod.
    TokioCurrent,
    /// tokio with the multi-thread runtime (a worker per core).
    TokioMulti,
    /// std only: a blocking thread per connection, as in the classic examples.
    Threads,
}

impl Peer {
    pub const ALL: [Peer; 5] = [
        Peer::Echod,
        Peer::Floor,
        Peer::TokioCurrent,
        Peer::TokioMulti,
        Peer::Threads,
    ];

    /// The peers every table measures echod's distance to: the floor below
    /// it, and tokio, what people would write instead.
    pub const REFERENCES: [Peer; 3] = [Peer::Floor, Peer::TokioCurrent, Peer::TokioMulti];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Echod => "echod",
            Peer::Floor => "floor",
            Peer::TokioCurrent => "tokio-current",
            Peer::TokioMulti => "tokio-multi",
            Peer::Threads => "threads",
        }
    }

    pub fn from_name(name: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|peer| peer.name() == name)
    }
}

/// Serves `peer` on 127.0.0.1 with a port chosen by the OS, printing
/// `listening on ADDR` once ready. Runs until killed.
pub fn serve(peer: Peer) -> io::Result<()> {
    match peer {
        Peer::Echod => Err(io::Error::other("echod runs as its own binary")),
        Peer::Floor => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            announce(listener.local_addr()?);
            crate::floor::serve(listener)
        }
        Peer::Threads => threads(),
        Peer::TokioCurrent => tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?
            .block_on(tokio_server()),
        Peer::TokioMulti => tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .build()?
            .block_on(tokio_server()),
    }
}

/// The end of the last complete line in `buf`, if any.
fn lines_end(buf: &[u8]) -> Option<usize> {
    memmem::rfind(buf, b"\r\n").map(|at| at + 2)
}

/// Grows a full buffer; `false` if the unfinished line is over the limit.
fn make_room(buf: &mut Vec<u8>, held: usize) -> bool {
    if held < buf.len() {
        return true;
    }
    if held >= MAX_LINE_BYTES {
        return false;
    }
    buf.resize(buf.len() * 2, 0);
    true
}

/// Tells the benchmark, which reads the server's stdout, where it listens.
pub fn announce(addr: std::net::SocketAddr) {
    let mut out = io::stdout();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

fn threads() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    announce(listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || {
            let _ = echo_blocking(stream);
        });
    }
    Ok(())
}

fn echo_blocking(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0; INITIAL_BYTES];
    let mut held = 0;
    loop {
        if !make_room(&mut buf, held) {
            return Ok(());
        }
        let n = stream.read(&mut buf[held..])?;
        if n == 0 {
            return Ok(());
        }
        held += n;
        if let Some(end) = lines_end(&buf[..held]) {
            stream.write_all(&buf[..end])?;
            buf.copy_within(end..held, 0);
            held -= end;
        }
    }
}

async fn tokio_server() -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    announce(listener.local_addr()?);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = echo_async(stream).await;
        });
    }
}

async fn echo_async(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.set_nodelay(true)?;
    let mut buf = vec![0; INITIAL_BYTES];
    let mut held = 0;
    loop {
        if !make_room(&mut buf, held) {
            return Ok(());
        }
        let n = stream.read(&mut buf[held..]).await?;
        if n == 0 {
            return Ok(());
        }
        held += n;
        if let Some(end) = lines_end(&buf[..held]) {
            stream.write_all(&buf[..end]).await?;
            buf.copy_within(end..held, 0);
            held -= end;
        }
    }
}
