//! The two systemd protocols echod speaks: socket activation (it serves
//! listening sockets it inherits instead of binding its own) and readiness
//! notification (`Type=notify`: READY, STOPPING and STATUS messages).
//!
//! Both are defined by environment variables systemd sets, and both are
//! inert without them: `inherited_listeners` returns `None` unless
//! `LISTEN_PID` names this process, and `Notifier` sends nothing unless
//! `NOTIFY_SOCKET` is set. `sd_listen_fds(3)` and `sd_notify(3)` are the
//! references.
//!
//! Neither unsets its variables. The Rust 2024 edition rightly makes
//! `remove_var` unsafe once threads exist, and echod's log relay thread
//! exists by then; echod starts no child that could inherit them, and
//! `LISTEN_PID` would stop a child from taking the sockets anyway.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;
use sd_notify::NotifyState;
use socket2::{Socket, Type};

/// Set once the inherited descriptors have been taken, so that no second
/// call can claim the same descriptor numbers (see `own_inherited`).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the listening sockets systemd passed to this process, if it did.
///
/// Returns `None` when `LISTEN_PID` is unset or names another process, or
/// when `LISTEN_FDS` is unset or 0. Otherwise every passed descriptor must
/// be a listening TCP socket (IPv4 or IPv6); each is made close-on-exec
/// (by `sd_notify::listen_fds`). `listener::adopt` prepares them for `mio`.
///
/// Call it first thing in `main`, before anything opens a descriptor: the
/// numbers `LISTEN_FDS` announces must still be the ones systemd passed.
///
/// # Errors
///
/// If the variables are malformed, a descriptor is not open, or one is
/// not a listening TCP socket. Also if called a second time.
pub fn inherited_listeners() -> io::Result<Option<Vec<TcpListener>>> {
    let fds = sd_notify::listen_fds()?;
    if fds.len() == 0 {
        return Ok(None);
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("inherited sockets were already taken"));
    }
    let mut listeners = Vec::with_capacity(fds.len());
    for fd in fds {
        let socket = Socket::from(own_inherited(fd));
        let is_tcp_listener = socket.r#type()? == Type::STREAM
            && socket.is_listener()?
            && socket.local_addr()?.as_socket().is_some();
        if !is_tcp_listener {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("inherited descriptor {fd} is not a listening TCP socket"),
            ));
        }
        listeners.push(TcpListener::from(socket));
    }
    Ok(Some(listeners))
}

/// Takes ownership of descriptor `fd`, passed by the service manager.
#[allow(unsafe_code)]
fn own_inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: `OwnedFd::from_raw_fd` requires that `fd` be open and owned by
    // nobody else. `sd_notify::listen_fds` has checked that `LISTEN_PID` is
    // this process and that each announced descriptor is open (it set
    // FD_CLOEXEC on it). Nothing in echod opens a descriptor before `main`
    // calls `inherited_listeners`, so these numbers are still the ones
    // systemd passed, which the protocol gives to this process alone; and
    // `TAKEN` makes sure they are taken once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends `sd_notify` messages to the service manager, if there is one.
///
/// Each message is one datagram on a Unix socket that the manager reads
/// at once; the send does not wait on anything echod's clients do.
#[derive(Debug, Default)]
pub struct Notifier {
    /// The last STATUS sent, so that an unchanged one is not sent again.
    last_status: String,
    /// Set after a failed send has been warned about, so the warning is
    /// logged once, not every second.
    warned: bool,
}

impl Notifier {
    /// READY=1 with a first STATUS: echod is listening and serving.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// STATUS=`status`, if it differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        if self.last_status != status {
            self.last_status = status.to_owned();
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// RELOADING=1, with the time it began: an upgrade in place (SIGUSR2)
    /// is re-executing the program, which sends READY=1 once it serves.
    pub fn reloading(&mut self) {
        let status = "upgrading in place";
        self.last_status = status.to_owned();
        self.send(&[
            NotifyState::Reloading,
            NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status(status)),
            NotifyState::Status(status),
        ]);
    }

    /// STOPPING=1 with a last STATUS: a graceful shutdown has begun.
    pub fn stopping(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        // Without NOTIFY_SOCKET, `notify` returns Ok at once.
        if let Err(err) = sd_notify::notify(states) {
            if !self.warned {
                self.warned = true;
                warn!("cannot notify the service manager: {err}");
            }
        }
    }
}
