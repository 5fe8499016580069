//! Step 4 of the ladder (docs/LEARN.md): an output buffer per connection,
//! and write interest exactly while it holds bytes.
//!
//! Run `cargo run --example step4_write_interest [ADDR]`; it prints the
//! address it bound. Check it with `cargo run -p echo-check -- ADDR`.
//!
//! What it fixes from step 3: what the socket did not take was dropped.
//! Now echoes go into the connection's output buffer; the server writes
//! at once (most echoes leave right away), and only if bytes are left
//! does it ask for `WRITABLE`, to hear when the socket has room again.
//! `slow-reader-complete` passes, and `half-close-flush` can be judged and
//! passes: after the client's FIN the connection stays until its output
//! is written.
//!
//! The readiness rule it teaches: ask for write interest only while
//! output is owed. A socket with room is writable nearly always, so a
//! connection that always asked would wake the loop for nothing.
//!
//! What now breaks: the server never stops reading, so a client that
//! sends and never reads makes it buffer without end (`backpressure`
//! fails); `long-line` and `flooder-fairness` still fail.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const SERVER: Token = Token(0);

struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
    /// Echoes not yet written; while not empty, the server wants `WRITABLE`.
    output: Vec<u8>,
    /// The client has sent its FIN: only the output is left to deliver.
    peer_done: bool,
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
                    let (input, output) = (Vec::new(), Vec::new());
                    let connection = Connection {
                        stream,
                        input,
                        output,
                        peer_done: false,
                    };
                    connections.insert(token, connection);
                },
                token => {
                    let Some(connection) = connections.get_mut(&token) else {
                        continue;
                    };
                    let open = drive(connection).is_ok();
                    let interest = match (connection.peer_done, connection.output.is_empty()) {
                        (false, true) => Some(Interest::READABLE),
                        (false, false) => Some(Interest::READABLE | Interest::WRITABLE),
                        (true, false) => Some(Interest::WRITABLE),
                        // Finished and delivered: close.
                        (true, true) => None,
                    };
                    let kept = match (open, interest) {
                        (true, Some(interest)) => poll
                            .registry()
                            .reregister(&mut connection.stream, token, interest)
                            .is_ok(),
                        _ => false,
                    };
                    if !kept {
                        connections.remove(&token);
                    }
                }
            }
        }
    }
}

/// Reads until `WouldBlock` (or the FIN), queues the complete lines, and
/// writes until the output is empty or the socket is full. `Err` closes.
fn drive(connection: &mut Connection) -> io::Result<()> {
    let mut chunk = [0; 16 * 1024];
    while !connection.peer_done {
        match connection.stream.read(&mut chunk) {
            Ok(0) => connection.peer_done = true,
            Ok(n) => {
                connection.input.extend_from_slice(&chunk[..n]);
                let end = complete_lines(&connection.input);
                connection
                    .output
                    .extend_from_slice(&connection.input[..end]);
                connection.input.drain(..end);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    while !connection.output.is_empty() {
        match connection.stream.write(&connection.output) {
            Ok(n) => drop(connection.output.drain(..n)),
            // Full: the rest waits for a `WRITABLE` event.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn complete_lines(input: &[u8]) -> usize {
    input
        .windows(2)
        .rposition(|pair| pair == b"\r\n")
        .map_or(0, |at| at + 2)
}
