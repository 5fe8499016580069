//! Step 1 of the ladder (docs/LEARN.md): a blocking echo server with a
//! thread per connection, the program readiness replaces.
//!
//! Run `cargo run --example step1_blocking` (it prints the address it
//! bound; give `127.0.0.1:7000` as the first argument to choose it), then
//! `nc -C 127.0.0.1 PORT` in another terminal, or check it with
//! `cargo run -p echo-check -- 127.0.0.1:PORT --max-line-bytes 8192`.
//!
//! Blocking I/O gets a lot right for free. A line is held until its CR LF
//! because the thread simply keeps reading. A client that does not read
//! its echoes blocks `write_all`, so its thread stops reading, and the
//! kernel's flow control stops the client: backpressure without a line
//! of code. Every client has its own thread, so none waits for another.
//!
//! What it costs: a thread, with its stack, per client, and the
//! scheduler switching between them; ten thousand idle clients are ten
//! thousand threads. And its unfinished line grows without a limit.
//! Step 2 serves every client from one thread, with readiness instead.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn main() -> io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(address)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || {
                    // One client's error ends that client's thread only.
                    let _ = serve(stream);
                });
            }
            // A failed accept (say, out of descriptors) drops that client.
            Err(err) => eprintln!("accept failed: {err}"),
        }
    }
    Ok(())
}

/// Echoes every complete line until the client finishes; an unfinished
/// line at the end is dropped.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    let mut input = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        input.extend_from_slice(&chunk[..n]);
        let end = complete_lines(&input);
        // Blocks while the client is not reading: this is the backpressure.
        stream.write_all(&input[..end])?;
        input.drain(..end);
    }
}

/// How many bytes of `input` are complete lines: up to just after its last
/// CR LF (a CR and an LF that arrived in different reads still count,
/// because `input` keeps the unfinished line whole).
fn complete_lines(input: &[u8]) -> usize {
    input
        .windows(2)
        .rposition(|pair| pair == b"\r\n")
        .map_or(0, |at| at + 2)
}
