//! One turn of the event loop, in order: the code `Server::run` runs after
//! every `poll`, and the simulation in `tests/sim` runs on its simulated
//! kernel and clock.
//!
//! It owns the order of a turn and the loop's own deadlines (accepting
//! again, the pause after running out of descriptors, housekeeping, the end
//! of a shutdown), kept in the loop's milliseconds so that a simulated
//! clock drives them as the real one does. What each step does to sockets,
//! totals and the log is its caller's, through `Steps`: the server's steps
//! log and count, the simulation's check what each call did.
//!
//! It does not poll, read the clock or touch a connection itself.

use crate::connection::Readiness;
use crate::connections::{AcceptEnd, EXPIRY_SWEEP_MS};
use crate::control::{Flow, Request};

/// How often housekeeping runs: idle and linger sweeps, warnings held back by
/// rate limiting, systemd's status and a worker's totals.
pub const HOUSEKEEPING_INTERVAL_MS: u64 = EXPIRY_SWEEP_MS;

/// After `accept` fails for want of descriptors, wait this long before trying
/// again (unless a connection closes first and frees one).
pub const ACCEPT_RETRY_DELAY_MS: u64 = 100;

/// One event of a poll, as the turn dispatches it.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Requests from outside the loop are waiting, at `Outside`.
    Outside(Outside),
    /// Listener `index` has connections queued.
    Listener(usize),
    /// The metrics endpoint's token `index` (a listener or a scraper; see
    /// `metrics::TOKENS`) is ready.
    Metrics(usize),
    /// Readiness for the connection under `key` (or for none: an event
    /// that outlived its connection).
    Connection {
        /// The connection's key, which is its token.
        key: usize,
        /// What the event says.
        ready: Readiness,
    },
}

/// Where requests from outside the loop come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    /// `ShutdownHandle::trigger` fired the waker.
    Waker,
    /// The signal pipe has signals.
    Signals,
}

/// The loop's own flags and deadlines, between turns, in milliseconds of
/// the loop's clock.
#[derive(Debug, Clone)]
pub struct TurnState {
    /// The time of this turn, read once for the whole turn.
    now_ms: u64,
    /// Set when a listener spent its accept budget, or a close ended an
    /// accept pause: every listener is accepted from next turn, and `poll`
    /// does not wait. Harmless once a shutdown has closed the listeners.
    accept_again: bool,
    /// Set while `accept` is failing for want of descriptors: no listener
    /// is served until then, or until a close frees a descriptor.
    accept_paused_until_ms: Option<u64>,
    /// When housekeeping runs next.
    next_housekeeping_ms: u64,
    /// How long a graceful shutdown may take.
    shutdown_timeout_ms: u64,
    /// Set once a shutdown has been requested, and never unset: the run
    /// ends when the last connection closes, or at this time (or at once,
    /// on a second request).
    shutdown_deadline_ms: Option<u64>,
}

impl TurnState {
    /// A loop whose clock starts at 0 and whose shutdowns may take
    /// `shutdown_timeout_ms`.
    pub fn new(shutdown_timeout_ms: u64) -> TurnState {
        TurnState {
            now_ms: 0,
            accept_again: false,
            accept_paused_until_ms: None,
            next_housekeeping_ms: HOUSEKEEPING_INTERVAL_MS,
            shutdown_timeout_ms,
            shutdown_deadline_ms: None,
        }
    }

    /// Starts the loop's clock at `now_ms` rather than 0: a loop that took
    /// over from the program before starts its clock further back (see
    /// `Server::take_over`).
    pub fn start_at(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.next_housekeeping_ms = now_ms.saturating_add(HOUSEKEEPING_INTERVAL_MS);
    }

    /// The time of the turn under way (or of the last one).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// True if a listener is to be accepted from next turn: the next poll
    /// must not wait.
    pub fn accept_again(&self) -> bool {
        self.accept_again
    }

    /// True once a shutdown has been requested.
    pub fn shutting_down(&self) -> bool {
        self.shutdown_deadline_ms.is_some()
    }

    /// The soonest of the loop's deadlines: housekeeping, the end of an
    /// accept pause, the end of a shutdown.
    pub fn next_deadline_ms(&self) -> u64 {
        let soonest = |ms: u64, other: Option<u64>| other.map_or(ms, |other| ms.min(other));
        let ms = soonest(self.next_housekeeping_ms, self.accept_paused_until_ms);
        soonest(ms, self.shutdown_deadline_ms)
    }

    /// `closes` connections closed: if accepting had paused for want of a
    /// descriptor, resume next turn rather than at the retry timer.
    fn freed(&mut self, closes: usize) {
        if closes > 0 && self.accept_paused_until_ms.take().is_some() {
            self.accept_again = true;
        }
    }
}

/// What each step of a turn does, in the loop that runs it. Every step that
/// may close connections returns how many it closed.
pub trait Steps {
    /// What stops a turn: nothing in the server (`Infallible`), a broken
    /// property in the simulation.
    type Fault;

    /// The loop's flags and deadlines.
    fn turn_state(&mut self) -> &mut TurnState;

    /// Sets aside last turn's leftovers (`Connections::begin_turn`).
    fn begin_turn(&mut self) -> Result<(), Self::Fault>;

    /// The requests waiting at `from`.
    fn requests(&mut self, from: Outside) -> Result<Vec<Request>, Self::Fault>;

    /// Logs the totals so far.
    fn summary_requested(&mut self) -> Result<(), Self::Fault>;

    /// SIGUSR2: begin an upgrade in place by checking the new program
    /// (`server/upgrade.rs`). A loop that cannot be upgraded (the
    /// simulation) does nothing.
    fn upgrade_requested(&mut self) -> Result<(), Self::Fault> {
        Ok(())
    }

    /// The check has an answer: re-execute, or log why not.
    fn upgrade_checked(&mut self) -> Result<(), Self::Fault> {
        Ok(())
    }

    /// A first shutdown request: close the listeners and begin every
    /// connection's shutdown (`Connections::begin_shutdown`).
    fn begin_shutdown(&mut self, why: &str) -> Result<usize, Self::Fault>;

    /// A second shutdown request: the loop stops now.
    fn stop_now(&mut self, why: &str) -> Result<(), Self::Fault>;

    /// How many listeners are open (none once a shutdown began).
    fn listeners(&self) -> usize;

    /// Accepts from listener `index` (`Connections::accept_pending`):
    /// why it stopped, and how many connections it displaced.
    fn accept(&mut self, index: usize) -> Result<(AcceptEnd, usize), Self::Fault>;

    /// Hands an event to the metrics endpoint (`metrics::Endpoint::on_event`);
    /// it closes no echo connection.
    fn metrics(&mut self, index: usize) -> Result<(), Self::Fault>;

    /// Hands an event to its connection (`Connections::drive`).
    fn drive(&mut self, key: usize, ready: Readiness) -> Result<usize, Self::Fault>;

    /// Serves last turn's leftovers (`Connections::serve_again`).
    fn serve_again(&mut self) -> Result<usize, Self::Fault>;

    /// Evicts for memory if the budget is spent (`Connections::relieve_memory`).
    fn relieve_memory(&mut self) -> Result<usize, Self::Fault>;

    /// Once every `HOUSEKEEPING_INTERVAL_MS`: the deadlines
    /// (`Connections::expire`) and whatever else the loop does once a
    /// second.
    fn housekeeping(&mut self) -> Result<usize, Self::Fault>;

    /// Every turn, after housekeeping: what else the clock makes due (the
    /// stats line).
    fn clock_work(&mut self) -> Result<(), Self::Fault>;

    /// True when no connection is open.
    fn no_connections(&self) -> bool;

    /// The shutdown deadline passed: close every connection left.
    fn close_all(&mut self) -> Result<(), Self::Fault>;
}

/// Runs one turn at `now_ms` over the events of one poll, and says whether
/// the loop goes on:
///
/// 1. set aside last turn's leftovers;
/// 2. dispatch each event by what it is for: requests from outside,
///    a listener (accepted from now unless it spent its budget last turn,
///    when every listener is accepted from after the events), the metrics
///    endpoint, a connection;
/// 3. serve the leftovers (the endpoint's too), and evict for memory if the
///    budget is spent;
/// 4. accept on every listener if an accept pause has run out, or a
///    listener spent its budget last turn;
/// 5. housekeeping when due, then whatever else the clock makes due;
/// 6. once shutting down, stop when no connection is left, or close the
///    rest at the deadline and stop.
///
/// # Errors
///
/// Whatever fault a step returns; the turn stops there.
pub fn turn<S: Steps>(
    steps: &mut S,
    now_ms: u64,
    events: impl IntoIterator<Item = Event>,
) -> Result<Flow, S::Fault> {
    steps.turn_state().now_ms = now_ms;
    // Taken before the events so that what this turn adds waits for the
    // next one: a busy client gets one budget per turn, not two.
    steps.begin_turn()?;
    let accept_again = std::mem::take(&mut steps.turn_state().accept_again);
    for event in events {
        let closes = match event {
            Event::Outside(from) => {
                for request in steps.requests(from)? {
                    if handle_request(steps, request)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                0
            }
            // One budget a turn: every listener is accepted from after the
            // events when one spent its budget last turn.
            Event::Listener(index) if !accept_again => {
                accept(steps, index)?;
                0
            }
            Event::Listener(_) => 0,
            Event::Metrics(index) => {
                steps.metrics(index)?;
                0
            }
            Event::Connection { key, ready } => steps.drive(key, ready)?,
        };
        steps.turn_state().freed(closes);
    }
    let closes = steps.serve_again()?;
    steps.turn_state().freed(closes);
    let closes = steps.relieve_memory()?;
    steps.turn_state().freed(closes);
    let state = steps.turn_state();
    if state
        .accept_paused_until_ms
        .is_some_and(|until| now_ms >= until)
    {
        state.accept_paused_until_ms = None;
        accept_all(steps)?;
    } else if accept_again {
        accept_all(steps)?;
    }
    let state = steps.turn_state();
    if now_ms >= state.next_housekeeping_ms {
        state.next_housekeeping_ms = now_ms + HOUSEKEEPING_INTERVAL_MS;
        let closes = steps.housekeeping()?;
        steps.turn_state().freed(closes);
    }
    steps.clock_work()?;
    if let Some(deadline_ms) = steps.turn_state().shutdown_deadline_ms {
        if steps.no_connections() {
            return Ok(Flow::Stop);
        }
        if now_ms >= deadline_ms {
            // Whatever each connection was still waiting for.
            steps.close_all()?;
            return Ok(Flow::Stop);
        }
    }
    Ok(Flow::Continue)
}

/// Acts on one request from outside the loop: a first shutdown request is
/// graceful, a second stops at once.
fn handle_request<S: Steps>(steps: &mut S, request: Request) -> Result<Flow, S::Fault> {
    match request {
        Request::Shutdown { why } => {
            let state = steps.turn_state();
            if state.shutting_down() {
                steps.stop_now(why)?;
                return Ok(Flow::Stop);
            }
            state.shutdown_deadline_ms =
                Some(state.now_ms.saturating_add(state.shutdown_timeout_ms));
            state.accept_again = false;
            let closes = steps.begin_shutdown(why)?;
            steps.turn_state().freed(closes);
        }
        Request::Summary => steps.summary_requested()?,
        // An upgrade never changes what this turn does next: once it
        // succeeds, this program is gone; while it is checked, or if it
        // failed, the loop serves on as before.
        Request::Upgrade => steps.upgrade_requested()?,
        Request::UpgradeChecked => steps.upgrade_checked()?,
    }
    Ok(Flow::Continue)
}

/// Accepts from listener `index` unless accepting is paused, and records
/// why it stopped.
fn accept<S: Steps>(steps: &mut S, index: usize) -> Result<(), S::Fault> {
    if steps.turn_state().accept_paused_until_ms.is_some() {
        // Out of descriptors: the retry timer or the next close resumes.
        return Ok(());
    }
    if index >= steps.listeners() {
        return Ok(()); // Closed by a shutdown earlier in this turn.
    }
    let (end, displaced) = steps.accept(index)?;
    let state = steps.turn_state();
    state.freed(displaced);
    match end {
        AcceptEnd::Empty => {}
        AcceptEnd::BudgetSpent => state.accept_again = true,
        AcceptEnd::OutOfDescriptors(_) => {
            state.accept_paused_until_ms = Some(state.now_ms + ACCEPT_RETRY_DELAY_MS);
        }
    }
    Ok(())
}

fn accept_all<S: Steps>(steps: &mut S) -> Result<(), S::Fault> {
    for index in 0..steps.listeners() {
        accept(steps, index)?;
    }
    Ok(())
}
