//! Property: for any byte stream, cut into any sequence of reads, with the
//! socket accepting writes in any sequence of sizes, a connection writes back
//! exactly the complete-line prefix of its input, then closes.
//!
//! The connection is driven against a simulated socket with edge-triggered
//! readiness: an event is delivered only when bytes arrive or send space
//! opens while the connection asks for that readiness (or when it changes its
//! interest while ready, as `EPOLL_CTL_MOD` re-reports). A connection that
//! stopped early and forgot to come back would stall, and the test would
//! say so.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

use echod::Framing;
use echod::buffer::Pool;
use echod::connection::{CloseReason, Connection, Limits, Readiness, Step, Stream};
use mio::Interest;
use proptest::prelude::*;

/// The kernel's view of one socket, shared between the test and the stream.
#[derive(Default)]
struct Socket {
    /// Received and not yet read.
    incoming: VecDeque<u8>,
    /// The peer's FIN has arrived (after everything in `incoming`).
    eof: bool,
    /// Bytes the send buffer can take now.
    send_space: usize,
    /// Everything written, in order.
    written: Vec<u8>,
    /// `shutdown_write` was called.
    fin_sent: bool,
}

struct SimStream(Rc<RefCell<Socket>>);

impl Read for SimStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut socket = self.0.borrow_mut();
        if socket.incoming.is_empty() {
            return if socket.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(socket.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(socket.incoming.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for SimStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut socket = self.0.borrow_mut();
        assert!(!socket.fin_sent, "write after shutdown_write");
        if socket.send_space == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(socket.send_space);
        socket.send_space -= n;
        socket.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for SimStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.0.borrow_mut().fin_sent = true;
        Ok(())
    }
}

/// A reference model written for clarity, not speed: the bytes of every
/// complete line before the first line over the limit, and whether one was.
fn expected_echo(framing: Framing, input: &[u8], max_line_bytes: usize) -> (Vec<u8>, bool) {
    if framing == Framing::Raw {
        return (input.to_vec(), false);
    }
    let mut echoed = Vec::new();
    let mut line = Vec::new();
    for &byte in input {
        line.push(byte);
        let ended = match framing {
            Framing::Lf => byte == b'\n',
            Framing::Crlf => line.ends_with(b"\r\n"),
            Framing::Raw => unreachable!(),
        };
        if ended {
            if line.len() > max_line_bytes {
                return (echoed, true);
            }
            echoed.append(&mut line);
        } else if line.len() >= max_line_bytes {
            return (echoed, true);
        }
    }
    (echoed, false)
}

/// One thing that happens to the socket from outside.
#[derive(Debug, Clone)]
enum Happening {
    /// The next `n` input bytes arrive (with the FIN if they are the last and
    /// `fin` is set; otherwise the FIN comes with a later `Arrive`).
    Arrive { n: usize, fin: bool },
    /// The peer reads `n` bytes, making room in the send buffer.
    Drain(usize),
    /// The event loop takes its events. Until it does, edges accumulate and
    /// arrive as one event, as they do when epoll reports a socket once for
    /// everything that happened since the last `epoll_wait`.
    Poll,
}

/// Runs one case to completion and returns what was written and why the
/// connection closed.
fn run(input: &[u8], happenings: &[Happening], limits: Limits) -> (Vec<u8>, CloseReason) {
    let socket = Rc::new(RefCell::new(Socket::default()));
    let peer = "127.0.0.1:1".parse().expect("address");
    let mut connection = Connection::new(SimStream(Rc::clone(&socket)), peer, 0);
    let mut pool = Pool::default();
    let mut interest = connection.interest();
    let mut to_arrive = input;
    let mut again = false;
    // Edges raised since the event loop last took its events.
    let mut edges = Readiness::default();

    // The scripted happenings, then the rest of the input, the FIN, and a
    // peer that reads everything, for as long as the connection needs.
    let tail = [
        Happening::Arrive {
            n: usize::MAX,
            fin: false,
        },
        Happening::Drain(usize::MAX),
        Happening::Poll,
    ];
    let script = happenings
        .iter()
        .chain(tail.iter().cycle())
        .take(happenings.len() + 10_000);
    for happening in script {
        {
            let mut s = socket.borrow_mut();
            match *happening {
                Happening::Arrive { n, fin } => {
                    let n = n.min(to_arrive.len());
                    s.incoming.extend(&to_arrive[..n]);
                    to_arrive = &to_arrive[n..];
                    let fin_now = to_arrive.is_empty() && !s.eof && (fin || n == 0);
                    s.eof |= fin_now;
                    if (n > 0 || fin_now) && interest.is_some_and(Interest::is_readable) {
                        edges.readable = true;
                        edges.read_closed = s.eof;
                    }
                }
                Happening::Drain(n) => {
                    let opened = s.send_space == 0;
                    s.send_space = s.send_space.saturating_add(n.max(1));
                    if opened && interest.is_some_and(Interest::is_writable) {
                        edges.writable = true;
                    }
                }
                Happening::Poll => {}
            }
        }
        if !matches!(happening, Happening::Poll) {
            continue;
        }
        // A connection that spent its budget is served again without an
        // event, as the server does (reading until `WouldBlock`).
        let ready = Readiness {
            readable: edges.readable || again,
            read_closed: edges.read_closed || again,
            writable: edges.writable,
        };
        edges = Readiness::default();
        if !ready.readable && !ready.writable {
            continue;
        }
        let mut step = connection.on_ready(ready, &limits, &mut pool, 0);
        // EPOLL_CTL_MOD reports readiness that is already there when the
        // interest changes, so the server's re-register delivers an event.
        while let Step::Wait | Step::Again = step {
            again = matches!(step, Step::Again);
            let now = connection.interest();
            if now == interest {
                break;
            }
            interest = now;
            let s = socket.borrow();
            let ready = Readiness {
                readable: now.is_some_and(Interest::is_readable)
                    && (!s.incoming.is_empty() || s.eof),
                writable: now.is_some_and(Interest::is_writable) && s.send_space > 0,
                read_closed: s.eof,
            };
            drop(s);
            if !ready.readable && !ready.writable {
                break;
            }
            step = connection.on_ready(ready, &limits, &mut pool, 0);
        }
        if let Step::Close(reason) = step {
            let written = std::mem::take(&mut socket.borrow_mut().written);
            return (written, reason);
        }
        assert!(
            connection.buffer_capacity() <= limits.max_buffer_bytes(),
            "buffer grew to {} bytes, over its bound",
            connection.buffer_capacity()
        );
    }
    panic!(
        "connection stalled in state {} with {} bytes pending, {} unread",
        connection.state(),
        connection.pending_bytes(),
        socket.borrow().incoming.len()
    );
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![Just(Framing::Crlf), Just(Framing::Lf), Just(Framing::Raw)]
}

/// Input rich in terminators and near-terminators.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![4 => Just(b'\r'), 4 => Just(b'\n'), 3 => Just(b'a'), 1 => any::<u8>()];
    prop::collection::vec(byte, 0..600)
}

fn happenings() -> impl Strategy<Value = Vec<Happening>> {
    let happening = prop_oneof![
        (1usize..40, any::<bool>()).prop_map(|(n, fin)| Happening::Arrive { n, fin }),
        (0usize..40).prop_map(Happening::Drain),
        Just(Happening::Poll),
    ];
    prop::collection::vec(happening, 0..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn echo_is_exactly_the_complete_line_prefix(
        framing in framing(),
        input in input(),
        happenings in happenings(),
        max_line_bytes in 2usize..64,
        max_pending_bytes in 1usize..48,
    ) {
        let limits = Limits {
            framing,
            max_line_bytes,
            max_pending_bytes,
            resume_pending_bytes: max_pending_bytes / 2,
        };
        let (written, reason) = run(&input, &happenings, limits);
        let (expected, too_long) = expected_echo(framing, &input, max_line_bytes);
        prop_assert_eq!(&written, &expected);
        if too_long {
            prop_assert!(matches!(reason, CloseReason::LineTooLong), "closed with {}", reason);
        } else {
            prop_assert!(matches!(reason, CloseReason::PeerFinished), "closed with {}", reason);
        }
    }
}
