//! The Prometheus endpoint (`--metrics-listen`): its listening sockets, the
//! scrapers connected to them, and the one response each gets.
//!
//! It is served by the event loop that serves the echoes, between them,
//! with the same readiness rules; no thread, no runtime. The loop hands it
//! the events of its tokens (`Server::run` maps them to
//! `turn::Event::Metrics`), lends it the registry, and asks it once a
//! second to close the scrapers that are too slow. This module never
//! touches an echo connection: it reads the loop's totals through the
//! closure it is given, only when a response is due.
//!
//! A scraper's life, and the bound at each step:
//!
//! 1. accepted, if fewer than `MAX_SCRAPERS` are connected; otherwise
//!    accepted and closed at once. A listener accepts at most
//!    `ACCEPT_BUDGET` a turn and is served again the next turn, like the
//!    echo listeners, so a flood of connects cannot hold up a turn;
//! 2. reading its request head, at most `HEAD_LIMIT_BYTES`, within
//!    `SCRAPE_TIMEOUT_MS` of its accept;
//! 3. writing the response, asking for `WRITABLE` only while it owes bytes
//!    (a scraper that does not read holds its slot, never the loop), within
//!    `SCRAPE_TIMEOUT_MS` of its head's end;
//! 4. after the response, its write half shut (`Connection: close`) and
//!    what it still sends read and dropped until it closes, within
//!    `SCRAPE_TIMEOUT_MS` again: closing with unread input would reset the
//!    connection and could destroy the response in flight.
//!
//! Deadlines are checked by `expire`, once a second, so each is kept to
//! within a second. Everything a scraper holds is bounded by these
//! constants: at most `MAX_SCRAPERS` heads of `HEAD_LIMIT_BYTES` and as
//! many responses of a few KiB.
//!
//! `http` parses heads and writes responses; `encode` writes the series;
//! `process` reads `/proc` for the `process_*` series.

pub mod encode;
pub mod http;
pub mod process;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::config::Listen;
use crate::listener::{self, BindError, MAX_LISTENERS};
use crate::summary::Summary;
use encode::Snapshot;
use http::{Answer, HEAD_LIMIT_BYTES, Head};

/// Scrapers connected at once; one more is accepted and closed at once. A
/// Prometheus server scrapes a target over one connection at a time, so
/// 16 serves several servers and a person with `curl`, and bounds what a
/// flood of connections can hold.
pub const MAX_SCRAPERS: usize = 16;

/// How long a scraper has for each of its three steps: sending its request
/// head, taking the response, closing after it. A scraper sends its head
/// in one segment; 5 seconds outlasts any honest network and ends a
/// slowloris that sends a byte now and then.
pub const SCRAPE_TIMEOUT_MS: u64 = 5_000;

/// Connections one metrics listener accepts in a turn before the loop goes
/// on; the rest are accepted next turn. Four times `MAX_SCRAPERS`: a turn
/// can fill every slot and refuse a burst besides.
pub const ACCEPT_BUDGET: usize = 4 * MAX_SCRAPERS;

/// Tokens the endpoint needs, from the first one it is given: one per
/// listener (`MAX_LISTENERS` of them), then one per scraper.
pub const TOKENS: usize = MAX_LISTENERS + MAX_SCRAPERS;

/// Where a scrape's totals come from.
#[derive(Debug)]
pub enum Source {
    /// The loop that serves the endpoint: exact, taken when the scrape is
    /// answered.
    Own,
    /// What every worker last published (`--workers`), added up: each
    /// publishes once a second, so the sums are at most a second old.
    Published(Vec<Arc<Mutex<Summary>>>),
}

/// The metrics endpoint of one event loop.
#[derive(Debug)]
pub struct Endpoint {
    /// Listener `i` is registered at token `first_token + i`.
    listeners: Vec<TcpListener>,
    /// The addresses the listeners are bound to.
    local_addrs: Vec<SocketAddr>,
    /// The connected scrapers; scraper `key` is registered at token
    /// `first_token + MAX_LISTENERS + key`. Never more than `MAX_SCRAPERS`,
    /// so a key is always below it.
    scrapers: Slab<Scraper>,
    /// Where the totals come from.
    source: Source,
    /// The first of the `TOKENS` tokens the loop reserved; set by `attach`.
    first_token: usize,
    /// When the process started (`process::start_time`), read once.
    start_time_seconds: f64,
    /// Set when a listener spent its accept budget: every listener is
    /// accepted from next turn, without an event (the kernel raises no new
    /// edge for connections already queued).
    accept_again: bool,
}

/// One connected scraper.
#[derive(Debug)]
struct Scraper {
    stream: TcpStream,
    /// What it is doing; its interest follows from it (`Phase::interest`).
    phase: Phase,
    /// The request head received so far: at most `HEAD_LIMIT_BYTES`.
    /// Emptied (and freed) once the head is answered.
    head: Vec<u8>,
    /// The response, whole; `sent` of it are written.
    response: Vec<u8>,
    sent: usize,
    /// When the current step must be over, in the loop's milliseconds.
    deadline_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Writing the response.
    Writing,
    /// The response is written and the write half shut: reading and
    /// dropping until the scraper closes.
    Lingering,
}

/// Whether a scraper is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Waiting for readiness.
    Waiting,
    /// Finished, or failed: close it.
    Done,
}

impl Endpoint {
    /// Binds the endpoint's listening sockets on `addresses`.
    ///
    /// # Errors
    ///
    /// The first address that cannot be bound.
    pub fn bind(addresses: &[SocketAddr], source: Source) -> Result<Endpoint, BindError> {
        let listeners = listener::bind_all(&Listen::Addresses(addresses.to_vec()), false)?;
        let mut local_addrs = Vec::with_capacity(listeners.len());
        for (listener, &address) in listeners.iter().zip(addresses) {
            let bound = listener
                .local_addr()
                .map_err(|source| BindError { address, source })?;
            local_addrs.push(bound);
        }
        Ok(Endpoint::from_listeners(listeners, local_addrs, source))
    }

    /// The endpoint on `listeners`, already bound to `local_addrs` (each
    /// the address of the listener at its index): the sockets the program
    /// before this one served the endpoint on, across an upgrade.
    pub fn from_listeners(
        listeners: Vec<TcpListener>,
        local_addrs: Vec<SocketAddr>,
        source: Source,
    ) -> Endpoint {
        Endpoint {
            listeners,
            local_addrs,
            scrapers: Slab::with_capacity(MAX_SCRAPERS),
            source,
            first_token: 0,
            start_time_seconds: process::start_time(),
            accept_again: false,
        }
    }

    /// Registers the listeners at the `TOKENS` tokens from `first_token`,
    /// which the loop reserved for the endpoint.
    ///
    /// # Errors
    ///
    /// If a listener cannot be registered.
    pub fn attach(&mut self, registry: &Registry, first_token: usize) -> io::Result<()> {
        self.first_token = first_token;
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            registry.register(listener, Token(first_token + i), Interest::READABLE)?;
        }
        Ok(())
    }

    /// The addresses the listeners are bound to, with the ports the OS chose.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The listening sockets, in the order of `local_addrs`.
    pub fn listeners(&self) -> &[TcpListener] {
        &self.listeners
    }

    /// Scrapers connected now.
    pub fn scrapers(&self) -> usize {
        self.scrapers.len()
    }

    /// True if a listener is to be accepted from next turn: the next poll
    /// must not wait.
    pub fn wants_another_turn(&self) -> bool {
        self.accept_again
    }

    /// Handles the event of token `first_token + index`: accepts from a
    /// listener, or drives a scraper. `totals` gives the loop's totals, and
    /// is called only when a response is due (and only with `Source::Own`).
    pub fn on_event(
        &mut self,
        registry: &Registry,
        index: usize,
        now_ms: u64,
        totals: impl FnOnce() -> Summary,
    ) {
        if index < MAX_LISTENERS {
            // One budget a turn: the listeners are served from
            // `serve_again` once one spent its budget.
            if !self.accept_again {
                self.accept(registry, index, now_ms);
            }
            return;
        }
        let key = index - MAX_LISTENERS;
        let (source, start) = (&self.source, self.start_time_seconds);
        let Some(scraper) = self.scrapers.get_mut(key) else {
            return; // The event outlived its scraper: harmless.
        };
        let before = scraper.phase;
        let snapshot = || Snapshot {
            summary: match source {
                Source::Own => totals(),
                Source::Published(reports) => published(reports),
            },
            process: process::read(start),
        };
        let progress = match scraper.advance(now_ms, snapshot) {
            Ok(progress) => progress,
            Err(err) => {
                debug!("metrics: scraper failed: {err}");
                Progress::Done
            }
        };
        let token = Token(self.first_token + index);
        let reregistered = match progress {
            Progress::Done => Err(()),
            Progress::Waiting if scraper.phase.interest() == before.interest() => Ok(()),
            Progress::Waiting => registry
                .reregister(&mut scraper.stream, token, scraper.phase.interest())
                .map_err(|err| debug!("metrics: cannot reregister a scraper: {err}")),
        };
        if reregistered.is_err() {
            // Dropping the stream closes it, which removes it from epoll.
            self.scrapers.remove(key);
        }
    }

    /// Accepts on every listener if one spent its budget last turn.
    pub fn serve_again(&mut self, registry: &Registry, now_ms: u64) {
        if std::mem::take(&mut self.accept_again) {
            for index in 0..self.listeners.len() {
                self.accept(registry, index, now_ms);
            }
        }
    }

    /// Closes every scraper whose current step is past its deadline.
    pub fn expire(&mut self, now_ms: u64) {
        let before = self.scrapers.len();
        self.scrapers
            .retain(|_, scraper| scraper.deadline_ms > now_ms);
        let expired = before - self.scrapers.len();
        if expired > 0 {
            debug!("metrics: closed {expired} scraper(s) too slow for {SCRAPE_TIMEOUT_MS} ms");
        }
    }

    /// Accepts what listener `index` has queued, up to `ACCEPT_BUDGET`: a
    /// scraper while there is a slot, otherwise closed at once.
    fn accept(&mut self, registry: &Registry, index: usize, now_ms: u64) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        for _ in 0..ACCEPT_BUDGET {
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                // Drained: the next connection raises a new edge.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                // Out of descriptors, say: the connections queued wait for
                // the next edge, which the next connection raises. The echo
                // listeners have their own retry; the endpoint needs none.
                Err(err) => {
                    debug!("metrics: accept failed: {err}");
                    return;
                }
            };
            if self.scrapers.len() >= MAX_SCRAPERS {
                debug!("metrics: {MAX_SCRAPERS} scrapers connected: closed a new one from {peer}");
                continue;
            }
            let entry = self.scrapers.vacant_entry();
            let token = Token(self.first_token + MAX_LISTENERS + entry.key());
            match registry.register(&mut stream, token, Phase::Reading.interest()) {
                Ok(()) => {
                    entry.insert(Scraper {
                        stream,
                        phase: Phase::Reading,
                        head: Vec::new(),
                        response: Vec::new(),
                        sent: 0,
                        deadline_ms: now_ms + SCRAPE_TIMEOUT_MS,
                    });
                }
                Err(err) => debug!("metrics: cannot register a scraper from {peer}: {err}"),
            }
        }
        // Budget spent: more may be queued, and no edge will say so.
        self.accept_again = true;
    }
}

impl Scraper {
    /// Does whatever the scraper's phase allows until the socket would
    /// block or the scraper is done. Every step runs until `WouldBlock`:
    /// readiness is edge-triggered, and each phase is entered with no event
    /// of its own to announce it.
    fn advance(
        &mut self,
        now_ms: u64,
        snapshot: impl FnOnce() -> Snapshot,
    ) -> io::Result<Progress> {
        if self.phase == Phase::Reading {
            let Some(answer) = self.read_head()? else {
                return Ok(Progress::Waiting);
            };
            let body = match answer {
                Answer::Metrics(format) => encode::encode(snapshot(), format),
                _ => String::new(),
            };
            self.response = http::response(answer, &body);
            self.head = Vec::new();
            self.phase = Phase::Writing;
            self.deadline_ms = now_ms + SCRAPE_TIMEOUT_MS;
        }
        if self.phase == Phase::Writing {
            while self.sent < self.response.len() {
                match self.stream.write(&self.response[self.sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.sent += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Progress::Waiting);
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
            self.response = Vec::new();
            self.stream.shutdown(Shutdown::Write)?;
            self.phase = Phase::Lingering;
            self.deadline_ms = now_ms + SCRAPE_TIMEOUT_MS;
        }
        // Lingering: drop whatever comes until the scraper closes.
        let mut discard = [0; 1024];
        loop {
            match self.stream.read(&mut discard) {
                Ok(0) => return Ok(Progress::Done),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Progress::Waiting);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Reads the request head until it is complete (its answer), or the
    /// socket would block (`None`). Never holds more than
    /// `HEAD_LIMIT_BYTES`; the head is parsed again only after a read that
    /// brought a line's end, so a head trickled in byte by byte costs one
    /// parse per line, not per byte.
    fn read_head(&mut self) -> io::Result<Option<Answer>> {
        let mut chunk = [0; 2048];
        loop {
            let room = (HEAD_LIMIT_BYTES - self.head.len()).min(chunk.len());
            let n = match self.stream.read(&mut chunk[..room]) {
                // The scraper gave up before its head ended: nothing to
                // answer.
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.head.extend_from_slice(&chunk[..n]);
            if memchr::memchr(b'\n', &chunk[..n]).is_none() && self.head.len() < HEAD_LIMIT_BYTES {
                continue;
            }
            if let Head::Complete(answer) = http::parse(&self.head) {
                return Ok(Some(answer));
            }
        }
    }
}

impl Phase {
    /// What a scraper in this phase waits for.
    fn interest(self) -> Interest {
        match self {
            Phase::Reading | Phase::Lingering => Interest::READABLE,
            Phase::Writing => Interest::WRITABLE,
        }
    }
}

/// The workers' totals as they last published them.
fn published(reports: &[Arc<Mutex<Summary>>]) -> Summary {
    let mut total = Summary::default();
    for report in reports {
        if let Ok(report) = report.lock() {
            total += *report;
        }
    }
    total
}
