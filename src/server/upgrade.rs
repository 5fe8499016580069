//! The loop's side of an upgrade in place (SIGUSR2; the process's side is
//! `upgrade.rs`): giving up everything it serves to the next program, and,
//! in the next program, taking it all back.
//!
//! Giving up happens between two events, so the handover is one instant of
//! the loop: every listening socket as it is (its accept queue untouched),
//! every connection with its state, leftovers and timers, the totals and the
//! next connection id. Nothing is closed or deregistered first, so that an
//! upgrade that fails at its last step leaves the loop as it was.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};

use super::clock::Clock;
use super::setup::StartError;
use super::{LOG_TARGET, Server};
use crate::config::Config;
use crate::connection::next_connection_id;
use crate::control::Control;
use crate::handover::{Handover, ListenerRecord};
use crate::listener;
use crate::socket::Socket;
use crate::summary::counted;
use crate::upgrade::{self, Check, UpgradeError};

impl Server {
    /// SIGUSR2: starts checking the program file, unless an upgrade is
    /// under way or the loop is shutting down. The loop serves on while the
    /// check runs; its answer comes back as `Request::UpgradeChecked`.
    pub(super) fn begin_upgrade(&mut self) {
        let refuse =
            |why: &str| warn!(target: LOG_TARGET, "SIGUSR2 received: not upgrading: {why}");
        if self.turn.shutting_down() {
            return refuse("a shutdown is under way");
        }
        if self.upgrade.is_some() {
            return refuse("an upgrade is already under way");
        }
        let Some(program) = upgrade::program() else {
            return refuse("this loop was not started as a program that can be run again");
        };
        let shutdowns = self.shutdowns.handle();
        match Check::start(program, move || shutdowns.wake_for_upgrade()) {
            Ok(check) => {
                info!(
                    target: LOG_TARGET,
                    "SIGUSR2 received: upgrading in place: checking {}",
                    program.path.display()
                );
                self.upgrade = Some(check);
            }
            Err(err) => refuse(&err.to_string()),
        }
    }

    /// True once the check under way has its answer.
    pub(super) fn upgrade_answered(&mut self) -> bool {
        self.upgrade.as_mut().is_some_and(Check::answered)
    }

    /// The check has answered: re-executes the new program with everything
    /// this loop serves, or logs why not and serves on. Returns only if
    /// the upgrade did not happen.
    pub(super) fn finish_upgrade(&mut self) {
        // A worker's coordinator made the check and does the rest: this
        // loop hands over its part.
        if let Some(order) = self.shutdowns.take_hand_over_order() {
            return self.hand_over_part(order);
        }
        let Some(mut check) = self.upgrade.take() else {
            return;
        };
        let outcome: Result<(), UpgradeError> = check.outcome().and_then(|()| {
            if self.turn.shutting_down() {
                return Err(UpgradeError::Unsupported("a shutdown began meanwhile"));
            }
            let program =
                upgrade::program().ok_or(UpgradeError::Unsupported("no program to run again"))?;
            Err(self.re_execute(program, check.started))
        });
        if let Err(err) = outcome {
            warn!(
                target: LOG_TARGET,
                "upgrade failed: {err}; serving on with every connection and listener"
            );
            self.control.ready(&self.summary());
        }
    }

    /// Hands everything over to `program` and re-executes it. Returns only
    /// if that failed, with nothing changed.
    fn re_execute(&mut self, program: &upgrade::Program, since: Instant) -> UpgradeError {
        let mut handover = self.handover();
        handover.next_connection_id = next_connection_id();
        info!(
            target: LOG_TARGET,
            "upgrading: re-executing {} with {} (checked in {:?})",
            program.path.display(),
            handover.contents(),
            since.elapsed()
        );
        self.control.reloading();
        upgrade::exec(program, &handover, &self.descriptors())
    }

    /// With `--workers`: the coordinator has checked the new program and
    /// asks for this loop's part. The part goes to it with every
    /// descriptor kept open across `execve`; then the loop waits, serving
    /// nothing, until the coordinator re-executes the program (which ends
    /// this thread with every other) or says the upgrade failed. Nothing
    /// was closed or deregistered, so the loop then serves on as before.
    /// The wait is the upgrade's pause, as a single loop's is the time it
    /// takes to `execve`.
    fn hand_over_part(&mut self, order: upgrade::HandOverOrder) {
        let keep = self.descriptors();
        if let Err(err) = upgrade::keep_across_exec(&keep) {
            let _ = order.part.send(Err(UpgradeError::Prepare(err)));
            return;
        }
        if order.part.send(Ok(self.handover())).is_ok() {
            // A message, or the coordinator's end dropped: either way the
            // upgrade did not happen.
            let _ = order.resume.recv();
        }
        upgrade::close_on_exec_again(&keep);
    }

    /// What this loop hands over: its listeners, the metrics endpoint's if
    /// it serves one, every connection and its totals. The next connection
    /// id is the process's, for the caller to add.
    fn handover(&self) -> Handover {
        let now_ms = self.turn.now_ms();
        let mut counters = self.totals;
        counters.bytes_received = self.summary().bytes_received;
        Handover {
            next_connection_id: 0,
            counters: counters.counters(),
            listeners: records(&self.listeners, &self.local_addrs),
            metrics_listeners: self.metrics.as_ref().map_or_else(Vec::new, |endpoint| {
                records(endpoint.listeners(), endpoint.local_addrs())
            }),
            connections: self
                .connections
                .hand_over(now_ms, |socket| socket.as_fd().as_raw_fd()),
        }
    }

    /// Every descriptor `handover` names: the listeners, the metrics
    /// endpoint's and the connections'.
    fn descriptors(&self) -> Vec<BorrowedFd<'_>> {
        self.listeners
            .iter()
            .chain(
                self.metrics
                    .iter()
                    .flat_map(|endpoint| endpoint.listeners()),
            )
            .map(AsFd::as_fd)
            .chain(self.connections.iter().map(|(_, c)| c.stream().as_fd()))
            .collect()
    }

    /// Sets up the loop that carries on from `handover` over `listeners`
    /// (taken from it, `take_listeners`): the connections the program
    /// before this one served, its totals and its next connection id.
    /// `config.listen` and the handover's listener records are not used.
    ///
    /// A connection that cannot be taken over (a state it cannot be in
    /// under this program's limits, a socket that cannot be registered) is
    /// closed and counted as an error; the others are served on.
    ///
    /// # Errors
    ///
    /// As `with_control`.
    pub fn take_over(
        config: Config,
        listeners: Vec<TcpListener>,
        handover: Handover,
        control: Control,
    ) -> Result<Server, StartError> {
        let n_listeners = listeners.len();
        let mut server = Server::with_control(config, listeners, control)?;
        // The clock starts far enough back that every age handed over is a
        // time on it.
        let oldest_ms = handover
            .connections
            .iter()
            .flat_map(|c| [c.active_age_ms, c.owing_age_ms, c.line_age_ms])
            .max()
            .unwrap_or(0);
        let now_ms = oldest_ms.saturating_add(1);
        server.clock = Clock::reading(now_ms);
        server.turn.start_at(now_ms);
        crate::connection::continue_ids_from(handover.next_connection_id);
        server.totals.restore_counters(&handover.counters);
        let mut refused = 0;
        for record in &handover.connections {
            let stream = upgrade::take_socket(record.fd).and_then(|socket| {
                let stream = std::net::TcpStream::from(socket);
                stream.set_nonblocking(true)?;
                Ok(Socket::new(TcpStream::from_std(stream)))
            });
            let taken = match stream {
                Ok(stream) => server
                    .connections
                    .take_over(server.poll.registry(), stream, record, now_ms)
                    .map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(why) = taken {
                warn!(target: LOG_TARGET, "conn {}: not taken over: {why}; closed", record.id);
                server.totals.closes.error += 1;
                server.totals.lines += record.lines;
                server.totals.bytes += record.bytes_echoed;
                refused += 1;
            }
        }
        // The most open at once is at least what was just taken over (with
        // `--workers`, the totals, the peak with them, go to worker 1 alone).
        server.totals.peak_connections =
            server.totals.peak_connections.max(server.connections.len());
        info!(
            target: LOG_TARGET,
            "{}took over {} and {} from the program before{}",
            server.control.label(),
            counted(n_listeners, "listening socket"),
            counted(handover.connections.len() - refused, "connection"),
            if refused > 0 {
                format!(" ({refused} closed: see above)")
            } else {
                String::new()
            }
        );
        Ok(server)
    }
}

/// The records of `listeners`, each bound to the address at its index in
/// `local_addrs`.
fn records(listeners: &[TcpListener], local_addrs: &[SocketAddr]) -> Vec<ListenerRecord> {
    listeners
        .iter()
        .zip(local_addrs)
        .map(|(listener, &address)| ListenerRecord {
            fd: listener.as_raw_fd(),
            address,
        })
        .collect()
}

/// The listening sockets `records` name, taken from the program before
/// this one and made ready for the loop.
///
/// # Errors
///
/// A descriptor that was not handed over, or cannot be made non-blocking.
pub fn take_listeners(records: &[ListenerRecord]) -> std::io::Result<Vec<TcpListener>> {
    records
        .iter()
        .map(|record| {
            let socket = upgrade::take_socket(record.fd)?;
            listener::adopt(std::net::TcpListener::from(socket))
        })
        .collect()
}
