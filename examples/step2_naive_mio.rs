//! Step 2 of the ladder (docs/LEARN.md): one thread and mio, in the style
//! of mio's own `tcp_server` example: echo what was read, and ignore a
//! write that would block.
//!
//! Run `cargo run --example step2_naive_mio [ADDR]`; it prints the address
//! it bound. Check it with `cargo run -p echo-check -- ADDR`.
//!
//! What it fixes from step 1: a thread per client. One `Poll` waits for
//! every socket at once, and the loop serves whichever is ready.
//!
//! The readiness rule it teaches: mio's events are edge-triggered. An
//! event says "this socket became readable", once; read until
//! `WouldBlock` or you may never hear of the rest of the bytes.
//!
//! What breaks, and the checks that show it:
//! - it echoes bytes as they arrive, with no idea of a line
//!   (`partial-line-held` fails);
//! - a write the socket cannot take in full is dropped on the floor
//!   (`slow-reader-complete` fails);
//! - one client that keeps its socket readable keeps the loop to itself,
//!   as it reads until `WouldBlock` (`flooder-fairness` fails).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const SERVER: Token = Token(0);

fn main() -> io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let mut listener = TcpListener::bind(address.parse().map_err(io::Error::other)?)?;
    println!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, SERVER, Interest::READABLE)?;
    let mut connections: HashMap<Token, TcpStream> = HashMap::new();
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
                // The listener is edge-triggered too: accept until `WouldBlock`.
                SERVER => loop {
                    let (mut stream, _) = match listener.accept() {
                        Ok(accepted) => accepted,
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    };
                    let token = Token(next);
                    next += 1;
                    poll.registry()
                        .register(&mut stream, token, Interest::READABLE)?;
                    connections.insert(token, stream);
                },
                token => {
                    let done = match connections.get_mut(&token) {
                        Some(stream) => echo_available(stream),
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

/// Reads until `WouldBlock`, writing back each read at once. Returns
/// whether the connection is finished.
fn echo_available(stream: &mut TcpStream) -> bool {
    let mut chunk = [0; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => {
                // The fault this step is about: a short write, or
                // `WouldBlock`, loses the bytes the socket did not take.
                let _ = stream.write(&chunk[..n]);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
