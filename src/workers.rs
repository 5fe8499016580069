//! Running the daemon: where its listening sockets come from (bound from
//! `Config::listen`, or inherited through systemd socket activation), and
//! the event loop that serves them.
//!
//! `main` calls `run` and maps its `RunError` to an exit status.

use std::fmt;
use std::io;
use std::net::TcpListener as StdTcpListener;

use log::info;

use crate::config::Config;
use crate::listener;
use crate::server::{Server, StartError};
use crate::summary::Summary;

/// Why the daemon stopped with an error.
#[derive(Debug)]
pub enum RunError {
    /// It could not start: a listener or the event loop could not be set up.
    Start(StartError),
    /// An event loop failed while running.
    Loop(io::Error),
}

/// Sets up the listeners and serves until a shutdown completes; returns
/// the totals.
///
/// `inherited` holds the sockets passed by socket activation, if any; then
/// `config.listen` is ignored and nothing is bound.
///
/// # Errors
///
/// `RunError::Start` before anything is served; `RunError::Loop` if the
/// event loop fails.
pub fn run(config: Config, inherited: Option<Vec<StdTcpListener>>) -> Result<Summary, RunError> {
    let server = match inherited {
        Some(inherited) => {
            info!(
                "socket activation: serving {} listening sockets passed by systemd",
                inherited.len()
            );
            let listeners = inherited
                .into_iter()
                .map(listener::adopt)
                .collect::<io::Result<Vec<_>>>()
                .map_err(|err| RunError::Start(StartError::Setup(err)))?;
            Server::with_listeners(config, listeners)
        }
        None => Server::bind(config),
    }
    .map_err(RunError::Start)?;
    server.run().map_err(RunError::Loop)
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Start(err) => write!(f, "{err}"),
            RunError::Loop(err) => write!(f, "event loop failed: {err}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Start(err) => Some(err),
            RunError::Loop(err) => Some(err),
        }
    }
}
