//! Step 5 of the ladder (docs/LEARN.md): bounded. Reading pauses while a
//! client owes too much output and resumes when it drains; a line has a
//! limit; one client gets a budget of reads per turn. The core of echod
//! in miniature.
//!
//! Run `cargo run --example step5_bounded [ADDR]`; it prints the address
//! it bound. Check it with
//! `cargo run -p echo-check -- ADDR --max-line-bytes 8192`.
//!
//! The readiness rule it teaches: a connection that stops reading before
//! `WouldBlock` (paused, or out of budget) will get no new readable edge
//! for the bytes already queued. The server must come back to it on its
//! own: a paused one after a write drains its output, an unfinished
//! budget on the next turn (`again`).
//!
//! Where echod does the same in full: the loop in src/server/turn.rs, the
//! serve-again list in src/connections/again.rs, the read, echo, flush,
//! pause and `interest()` in src/connection/steps.rs and
//! src/connection/machine.rs, the line limit in src/framing.rs.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const SERVER: Token = Token(0);
/// Longest line, CR LF included; a longer one closes the connection.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// Output owed at which reading pauses; it resumes at half of it.
const MAX_PENDING_BYTES: usize = 1024 * 1024;
/// Bytes read from one connection per turn of the loop.
const TURN_READ_BUDGET_BYTES: usize = 64 * 1024;

struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    peer_done: bool,
    /// Reading stopped before `WouldBlock` because too much output is owed.
    paused: bool,
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
    let (mut next, mut again) = (1, Vec::new());
    let mut events = Events::with_capacity(1024);
    loop {
        // With connections to serve again, look at the sockets and go on.
        let timeout = (!again.is_empty()).then_some(std::time::Duration::ZERO);
        match poll.poll(&mut events, timeout) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        let mut ready: Vec<Token> = std::mem::take(&mut again);
        for event in events.iter() {
            match event.token() {
                SERVER => loop {
                    let Ok((mut stream, _)) = listener.accept() else {
                        break;
                    };
                    let token = Token(next);
                    next += 1;
                    poll.registry()
                        .register(&mut stream, token, Interest::READABLE)?;
                    let (input, output) = (Vec::new(), Vec::new());
                    let (peer_done, paused) = (false, false);
                    let connection = Connection {
                        stream,
                        input,
                        output,
                        peer_done,
                        paused,
                    };
                    connections.insert(token, connection);
                },
                token => ready.push(token),
            }
        }
        for token in ready {
            let Some(connection) = connections.get_mut(&token) else {
                continue;
            };
            // `Some(true)`: the budget ran out with input perhaps left.
            let served = drive(connection).ok();
            let reading = !connection.peer_done && !connection.paused;
            let interest = match (reading, connection.output.is_empty()) {
                (true, true) => Some(Interest::READABLE),
                (true, false) => Some(Interest::READABLE | Interest::WRITABLE),
                (false, false) => Some(Interest::WRITABLE),
                // Finished and delivered (a paused connection owes output).
                (false, true) => None,
            };
            let kept = match (served, interest) {
                (Some(_), Some(interest)) => poll
                    .registry()
                    .reregister(&mut connection.stream, token, interest)
                    .is_ok(),
                _ => false,
            };
            if !kept {
                connections.remove(&token);
            } else if served == Some(true) {
                again.push(token);
            }
        }
    }
}

/// Reads (within the budget, unless paused), queues complete lines and
/// writes; resumes a paused reader once its output has drained. `Ok(true)`
/// if the budget ran out before `WouldBlock`; `Err` closes.
fn drive(connection: &mut Connection) -> io::Result<bool> {
    let mut chunk = [0; 16 * 1024];
    let mut budget = TURN_READ_BUDGET_BYTES;
    loop {
        while !connection.peer_done && !connection.paused {
            if budget == 0 {
                return flush(connection).map(|()| true);
            }
            match connection.stream.read(&mut chunk) {
                Ok(0) => connection.peer_done = true,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    connection.input.extend_from_slice(&chunk[..n]);
                    let end = complete_lines(&connection.input);
                    connection
                        .output
                        .extend_from_slice(&connection.input[..end]);
                    connection.input.drain(..end);
                    if connection.input.len() >= MAX_LINE_BYTES {
                        return Err(io::Error::other("line too long"));
                    }
                    connection.paused = connection.output.len() >= MAX_PENDING_BYTES;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        flush(connection)?;
        // No readable edge will come for what waited in the kernel while
        // we were paused: read it now, on our own.
        if connection.paused && connection.output.len() <= MAX_PENDING_BYTES / 2 {
            connection.paused = false;
            continue;
        }
        return Ok(false);
    }
}

/// Writes what is owed until it is all out or the socket is full.
fn flush(connection: &mut Connection) -> io::Result<()> {
    while !connection.output.is_empty() {
        match connection.stream.write(&connection.output) {
            Ok(n) => drop(connection.output.drain(..n)),
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
