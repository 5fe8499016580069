//! Step 3 of the ladder (docs/LEARN.md): line framing, with each
//! connection's unfinished line kept until its CR LF arrives.
//!
//! Run `cargo run --example step3_framing [ADDR]`; it prints the address it
//! bound. Check it with `cargo run -p echo-check -- ADDR`.
//!
//! What it fixes from step 2: bytes were echoed as they arrived. Now a
//! connection owns an input buffer; a read appends to it, the complete
//! lines are echoed, and the rest (an unfinished line, perhaps a lone CR
//! whose LF is in the next read) stays for the next read.
//! `partial-line-held` passes; so does `bare-lf-is-data`, which step 2
//! could not even be judged on.
//!
//! What still breaks: the echo is still a single `write` whose leftover is
//! dropped (`slow-reader-complete` fails), a client's line may grow
//! without a limit (`long-line` fails), and reads go on until `WouldBlock`
//! (`flooder-fairness` fails).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const SERVER: Token = Token(0);

/// A client and its unfinished line.
struct Connection {
    stream: TcpStream,
    /// Bytes read after the last complete line.
    input: Vec<u8>,
}

fn main() -> io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let mut listener = TcpListener::bind(address.parse().map_err(io::Error::other)?)?;
    println!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, SERVER, Interest::READABLE)?;
    let mut connections: HashMap<Token, Connection> = HashMap::new();
    let mut next = 1;
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for event in events.iter() {
            match event.token() {
                SERVER => loop {
                    let (mut stream, _) = match listener.accept() {
                        Ok(accepted) => accepted,
                        Err(_) => break,
                    };
                    let token = Token(next);
                    next += 1;
                    poll.registry()
                        .register(&mut stream, token, Interest::READABLE)?;
                    connections.insert(
                        token,
                        Connection {
                            stream,
                            input: Vec::new(),
                        },
                    );
                },
                token => {
                    let done = match connections.get_mut(&token) {
                        Some(connection) => echo_lines(connection),
                        None => false,
                    };
                    if done {
                        connections.remove(&token);
                    }
                }
            }
        }
    }
}

/// Reads until `WouldBlock` and writes back every complete line. Returns
/// whether the connection is finished.
fn echo_lines(connection: &mut Connection) -> bool {
    let mut chunk = [0; 16 * 1024];
    loop {
        match connection.stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => {
                connection.input.extend_from_slice(&chunk[..n]);
                let end = complete_lines(&connection.input);
                // Still the fault of step 2: what the socket does not take
                // is lost.
                let _ = connection.stream.write(&connection.input[..end]);
                connection.input.drain(..end);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// How many bytes of `input` are complete lines: up to just after its last
/// CR LF. A bare LF is data; so is a bare CR.
fn complete_lines(input: &[u8]) -> usize {
    input
        .windows(2)
        .rposition(|pair| pair == b"\r\n")
        .map_or(0, |at| at + 2)
}
