//! echod: a TCP line echo daemon on a single-threaded, readiness-based event
//! loop, written to be read.
//!
//! Every complete line a client sends comes back to it, byte for byte; one
//! thread serves thousands of clients, and a client that sends half a line or
//! stops reading never holds up another. This page introduces the model the
//! code is built on, in the order it is best read.
//!
//! # 1. Readiness, not completion
//!
//! Every socket is non-blocking. Instead of waiting on one socket, the
//! server asks the kernel (`epoll`, through `mio::Poll`) which of *all* its
//! sockets are ready, and does on each only what can be done without
//! waiting. A read that would block returns `WouldBlock` at once; that is
//! the normal end of the work on that socket, not an error.
//!
//! Readiness is *edge-triggered*: the kernel reports a socket when it
//! becomes ready, not for as long as it stays ready. So whoever stops
//! reading before `WouldBlock` must remember to come back, because no event
//! will remind them. echod stops early in four places (a connection over
//! its output limit, one that used its share of a turn, one starving for
//! memory under the budget, a listener that accepted its share) and
//! records each one. It saves the last `read` of a
//! burst when the one before came back short, because `epoll(7)` says a
//! short read on a stream socket proves the buffer drained. And since an
//! event is only a hint, every handler tolerates one that leads nowhere.
//!
//! # 2. One loop, many connections
//!
//! `Server::run` is the loop: wait for events, handle each, tidy up.
//! Listeners and connections are registered with a `Token`; a connection's
//! token is its key in a `slab::Slab`, so an event leads straight to its
//! connection. `Connections` (`connections.rs`) holds them all and applies
//! what each asks for next; it reaches the poll instance only through the
//! `Registrar` the loop lends it, which is how the simulation in `tests/sim`
//! runs the same code on a simulated kernel.
//!
//! # 3. A connection is a small state machine
//!
//! `Connection` reads, finds complete lines (`framing`), writes them back at
//! once, and reports which readiness it needs next: reading while open,
//! writing too while it owes output, writing only while paused because its
//! client is not reading its echoes. What its work finds (the peer's EOF, an
//! over-long line, output full) goes to one table, `transition`, the only
//! place its `State` changes. The loop re-registers only when the answer
//! changes. One connection's error closes that connection, never the server.
//!
//! # 4. Bounded everything
//!
//! Reads land in one buffer for the whole loop (`ReadBuffer`), and complete
//! lines are echoed from there; a connection keeps only what is left over,
//! in a `Buffer` of its own: echoes the socket did not take, then the line
//! not yet finished. An idle connection owns no buffer. The owed output has
//! a high-water mark (`max-pending-bytes`), the unfinished line a limit
//! (`max-line-bytes`), the server a connection limit: memory is bounded by
//! configuration, not by what clients do.
//!
//! # Reading order
//!
//! This page; the core, `server`, `connections`, `connection` (with `state`,
//! the words it and the loop speak), `buffer`, `framing`; then the daemon
//! around it: `control` (what a loop hears from outside its sockets and
//! tells besides echoes: signals, shutdown requests, stats, systemd, a
//! worker's totals), `workers` (one loop, or one per `--workers` thread),
//! `config` (the settings), `cli` (the command line, with `args` for option
//! values), `listener` and `socket` (the sockets), `logging`, and as needed
//! `systemd`, `summary`, `allocator`, `probe` (the `echod probe` health
//! check, a client of the daemon) and `metrics` (the Prometheus endpoint of
//! `--metrics-listen`, served by the same loop). `docs/ARCHITECTURE.md` has the same map
//! with each module's invariants.

#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod access;
pub mod allocator;
pub mod args;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod connection;
pub mod connections;
pub mod control;
pub mod framing;
pub mod handover;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod server;
pub mod socket;
pub mod state;
pub mod summary;
pub mod systemd;
pub mod upgrade;
pub mod workers;

pub use cli::Command;
pub use config::{Config, Listen};
pub use control::ShutdownHandle;
pub use framing::Framing;
pub use server::{Server, StartError};
pub use summary::Summary;
