//! Upgrading in place (SIGUSR2): the process's side of it. echod
//! re-executes its program file, the same process with the same PID, and
//! the new program carries on with every listening socket and every live
//! connection the old one had. This module does what needs the process
//! rather than a loop: it remembers the program at start, checks a new
//! program before anything is handed to it, writes the handover to a memfd,
//! keeps the descriptors open across `execve` and makes the call; and, in
//! the new program, reads the handover back. What is handed over, and in
//! what form, is `handover.rs`'s; how a loop gives up and takes over its
//! connections is `server/upgrade.rs`'s.
//!
//! The steps, in the old program:
//!
//! 1. `check` runs the program file as it is on disk now (its path was
//!    resolved at start: a package that renamed a new binary into place
//!    gets the new one) with `--version`, on a thread of its own so the
//!    loop serves on meanwhile, and reads the handover format it prints.
//!    A program that is missing, not executable, slower than
//!    `CHECK_TIMEOUT`, or of another format is refused here, while the old
//!    program still has everything: it logs why and serves on.
//! 2. `exec` writes the handover to a memfd, clears close-on-exec on it and
//!    on every socket handed over, and calls `execve` with the arguments
//!    and environment echod started with, plus `ECHOD_HANDOVER_FD` naming
//!    the memfd and `ECHOD_HANDOVER_PROGRAM` the program file (which a
//!    wrapper script may `exec` echod from), and without systemd's
//!    `LISTEN_*`, whose descriptors are now in the handover. If `execve` fails, close-on-exec is set again
//!    and the old program serves on: nothing was closed or deregistered.
//!
//! In the new program, `inherited` (called first thing in `main`, as
//! `systemd::inherited_listeners` is) reads and checks the handover; the
//! loop then registers every socket with its own poll instance. With
//! `--workers`, the coordinator stands in the loop's place: every worker
//! hands over its part (`HandOverOrder`) and the new program shares the
//! whole out among its own loops (`workers/handover.rs`).
//!
//! Why re-exec in place rather than fork and exec with a handover over a
//! Unix socket (nginx's way): the PID does not change, so systemd
//! (`Type=notify`, `MAINPID`), supervisors and pid files see nothing, and
//! there is never a moment with two programs serving the same sockets. The
//! price is that once `execve` succeeded there is no old program to fall
//! back to, which is why everything that can be checked is checked first.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use rustix::io::FdFlags;

use crate::handover::{self, FORMAT_VERSION, Handover, HandoverError};

mod check;

pub use check::{Check, check};

/// The variable that tells the new program where its handover is: the
/// number of an open memfd holding the form `handover::encode` wrote.
pub const HANDOVER_FD_VARIABLE: &str = "ECHOD_HANDOVER_FD";

/// The variable that tells the new program which program file it was
/// started as: the path the old one ran, which may be a wrapper script that
/// `exec`s echod (the new program's own file, `/proc/self/exe`, is then
/// the binary the wrapper names, not the file to run on the next upgrade).
/// Read only together with `HANDOVER_FD_VARIABLE`.
pub const PROGRAM_VARIABLE: &str = "ECHOD_HANDOVER_PROGRAM";

/// How long the new program may take to answer `--version`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The line of `echod --version` that names the handover format.
pub const FORMAT_LINE_PREFIX: &str = "handover format ";

/// systemd's socket-activation variables: their descriptors travel in the
/// handover, so the new program must not take them a second time.
const SOCKET_ACTIVATION_VARIABLES: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// The program echod was started as, to run again on an upgrade.
#[derive(Debug, Clone)]
pub struct Program {
    /// The program file's path, resolved at start: `/proc/self/exe` names
    /// the file that was run, which a package upgrade has since replaced.
    pub path: PathBuf,
    /// The arguments after the program name.
    pub args: Vec<OsString>,
}

static PROGRAM: OnceLock<Program> = OnceLock::new();

/// Remembers the program file and arguments of this process, for
/// `program`. `main` calls it at start, before anything can replace the
/// file; a library user that never calls it cannot be upgraded.
///
/// # Errors
///
/// If the path of the running program cannot be read.
pub fn remember_program(args: Vec<OsString>) -> io::Result<()> {
    // After an upgrade, the program file is the one the program before ran
    // (see `PROGRAM_VARIABLE`); otherwise the file this process runs.
    let handed_over = std::env::var_os(HANDOVER_FD_VARIABLE)
        .and(std::env::var_os(PROGRAM_VARIABLE))
        .map(PathBuf::from)
        .filter(|path| path.is_absolute());
    let path = match handed_over {
        Some(path) => path,
        None => std::env::current_exe()?,
    };
    let _ = PROGRAM.set(Program { path, args });
    Ok(())
}

/// The program `remember_program` remembered, if it did.
pub fn program() -> Option<&'static Program> {
    PROGRAM.get()
}

/// Why an upgrade did not happen. The old program still serves everything.
#[derive(Debug)]
pub enum UpgradeError {
    /// echod was not started as a program that can be run again (a server
    /// embedded in another program), or is shutting down.
    Unsupported(&'static str),
    /// The new program could not be started.
    Spawn(io::Error),
    /// It did not answer `--version` within `CHECK_TIMEOUT`.
    CheckTimedOut,
    /// It answered, but not with success.
    CheckFailed(std::process::ExitStatus),
    /// It answered without naming a handover format: not an echod that can
    /// take over.
    NoFormat,
    /// It reads another handover format.
    Format(u32),
    /// The handover could not be written or the descriptors prepared.
    Prepare(io::Error),
    /// `execve` failed.
    Exec(io::Error),
    /// With `--workers`: worker `number` did not hand over its part within
    /// `HAND_OVER_TIMEOUT` (its loop is stuck, or is stopping).
    WorkerTimedOut {
        /// The worker, from 1.
        number: usize,
    },
}

/// How long a coordinator waits for each worker's part of the handover.
/// A loop takes the order between two events, so anything close to this is
/// a loop that is not turning.
pub const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::Unsupported(why) => write!(f, "{why}"),
            UpgradeError::Spawn(err) => write!(f, "cannot run the new program: {err}"),
            UpgradeError::CheckTimedOut => write!(
                f,
                "the new program did not answer --version within {CHECK_TIMEOUT:?}"
            ),
            UpgradeError::CheckFailed(status) => {
                write!(f, "the new program's --version failed ({status})")
            }
            UpgradeError::NoFormat => write!(
                f,
                "the new program's --version names no handover format: it cannot take over"
            ),
            UpgradeError::Format(version) => write!(
                f,
                "the new program reads handover format {version}, this one writes {FORMAT_VERSION}"
            ),
            UpgradeError::Prepare(err) => write!(f, "cannot prepare the handover: {err}"),
            UpgradeError::Exec(err) => write!(f, "execve failed: {err}"),
            UpgradeError::WorkerTimedOut { number } => write!(
                f,
                "worker {number} did not hand over its connections within {HAND_OVER_TIMEOUT:?}"
            ),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// A coordinator's order to one of its workers (`--workers`): hand over
/// everything the loop serves, then wait. The worker sends its part of the
/// handover (its descriptors already kept open across `execve`), and then
/// blocks on `resume` until the coordinator either re-executes the program,
/// which ends every thread, or gives up, which it says by sending on
/// `resume` or by dropping its end: the worker then serves on as before.
#[derive(Debug)]
pub struct HandOverOrder {
    /// Where the worker sends its part, or why it cannot.
    pub part: mpsc::Sender<Result<Handover, UpgradeError>>,
    /// Ready once the upgrade has failed.
    pub resume: Receiver<()>,
}

/// Keeps `fds` open across `execve` (clears close-on-exec on each). If one
/// cannot be, those already cleared are set again.
///
/// # Errors
///
/// As `fcntl`.
pub fn keep_across_exec(fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    for (i, &fd) in fds.iter().enumerate() {
        if let Err(err) = rustix::io::fcntl_setfd(fd, FdFlags::empty()) {
            restore_close_on_exec(&fds[..i]);
            return Err(err.into());
        }
    }
    Ok(())
}

/// Makes `fds` close-on-exec again, after an upgrade that failed.
pub fn close_on_exec_again(fds: &[BorrowedFd<'_>]) {
    restore_close_on_exec(fds);
}

/// Re-executes `program` with `handover`, keeping `keep` (every socket the
/// handover names) open across `execve`. Returns only if it failed; then
/// every descriptor is close-on-exec again and nothing else has changed,
/// so the caller serves on.
pub fn exec(program: &Program, handover: &Handover, keep: &[BorrowedFd<'_>]) -> UpgradeError {
    let memfd = match write_memfd(handover) {
        Ok(memfd) => memfd,
        Err(err) => return UpgradeError::Prepare(err),
    };
    let mut cleared = Vec::with_capacity(keep.len() + 1);
    for fd in keep.iter().copied().chain([memfd.as_fd()]) {
        if let Err(err) = rustix::io::fcntl_setfd(fd, FdFlags::empty()) {
            restore_close_on_exec(&cleared);
            return UpgradeError::Prepare(err.into());
        }
        cleared.push(fd);
    }
    let mut command = Command::new(&program.path);
    command
        .args(&program.args)
        .env(HANDOVER_FD_VARIABLE, memfd.as_raw_fd().to_string())
        .env(PROGRAM_VARIABLE, &program.path);
    for variable in SOCKET_ACTIVATION_VARIABLES {
        command.env_remove(variable);
    }
    // What is queued for the log must be written before `execve` replaces
    // the thread that writes it.
    log::logger().flush();
    let err = command.exec();
    restore_close_on_exec(&cleared);
    restore_sigpipe();
    UpgradeError::Exec(err)
}

fn restore_close_on_exec(fds: &[BorrowedFd<'_>]) {
    for &fd in fds {
        let _ = rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC);
    }
}

/// `Command::exec` resets SIGPIPE to its default before calling `execve`,
/// for the program it runs; when `execve` fails, this process is left with
/// it. Every socket write is `MSG_NOSIGNAL`, but a write to a standard
/// error whose reader left would now kill the process: take SIGPIPE again
/// (a handler that does nothing makes such a write fail with `EPIPE`).
fn restore_sigpipe() {
    static IGNORED: OnceLock<std::sync::Arc<AtomicBool>> = OnceLock::new();
    let flag = IGNORED.get_or_init(|| std::sync::Arc::new(AtomicBool::new(false)));
    if let Err(err) = signal_hook::flag::register(signal_hook::consts::SIGPIPE, flag.clone()) {
        log::warn!("cannot take SIGPIPE again after the failed upgrade: {err}");
    }
    flag.store(false, Ordering::Relaxed);
}

/// The handover in a memfd, its offset back at the start for the reader.
fn write_memfd(handover: &Handover) -> io::Result<OwnedFd> {
    let memfd = rustix::fs::memfd_create("echod-handover", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = File::from(memfd);
    file.write_all(&handover::encode(handover))?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// Why the handover passed to this program could not be taken.
#[derive(Debug)]
pub enum InheritError {
    /// `ECHOD_HANDOVER_FD` is not a descriptor number.
    Variable(String),
    /// The memfd could not be read.
    Read(io::Error),
    /// The form was refused.
    Form(HandoverError),
}

impl fmt::Display for InheritError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InheritError::Variable(value) => write!(
                f,
                "{HANDOVER_FD_VARIABLE}='{value}' is not an open descriptor number"
            ),
            InheritError::Read(err) => write!(f, "cannot read the handover: {err}"),
            InheritError::Form(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for InheritError {}

/// Set once the handover has been taken, so that no second call can claim
/// the same descriptors.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The handover the program before this one left, if it did: `None`
/// unless `ECHOD_HANDOVER_FD` is set. The memfd is read and closed; the
/// descriptors it names are this program's to take (`take_socket`).
///
/// Call it first thing in `main`, before anything opens a descriptor.
///
/// # Errors
///
/// If the variable is malformed, the memfd cannot be read, or the form is
/// refused. The descriptors it names are then left as they are.
pub fn inherited() -> Result<Option<Handover>, InheritError> {
    let Some(value) = std::env::var_os(HANDOVER_FD_VARIABLE) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    let fd: RawFd = value
        .parse()
        .ok()
        .filter(|&fd| fd > 2)
        .ok_or_else(|| InheritError::Variable(value.clone()))?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(InheritError::Variable(value));
    }
    if rustix::io::fcntl_getfd(borrow_inherited(fd)).is_err() {
        return Err(InheritError::Variable(value));
    }
    let mut file = File::from(own_inherited(fd));
    let mut form = Vec::new();
    file.read_to_end(&mut form).map_err(InheritError::Read)?;
    let handover = handover::decode(&form).map_err(InheritError::Form)?;
    // Each descriptor is taken once (`own_inherited`), and none can be a
    // standard stream or the memfd just closed.
    let mut fds: Vec<RawFd> = handover
        .listeners
        .iter()
        .map(|listener| listener.fd)
        .chain(handover.connections.iter().map(|connection| connection.fd))
        .collect();
    fds.sort_unstable();
    let distinct = fds.windows(2).all(|pair| pair[0] != pair[1]);
    if !distinct || fds.iter().any(|&socket| socket <= 2 || socket == fd) {
        return Err(InheritError::Form(HandoverError::Invalid(
            "descriptor list",
        )));
    }
    Ok(Some(handover))
}

/// Takes the socket descriptor `fd` that the handover names, made
/// close-on-exec again.
///
/// # Errors
///
/// If `fd` is not open or not a socket.
pub fn take_socket(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= 2 || !TAKEN.load(Ordering::SeqCst) {
        return Err(io::Error::other(format!(
            "descriptor {fd} was not handed over"
        )));
    }
    let borrowed = borrow_inherited(fd);
    rustix::io::fcntl_setfd(borrowed, FdFlags::CLOEXEC)?;
    let socket = socket2::SockRef::from(&borrowed);
    socket.r#type()?;
    Ok(own_inherited(fd))
}

/// Borrows descriptor `fd`, passed by the program before this one.
#[allow(unsafe_code)]
fn borrow_inherited(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: `BorrowedFd::borrow_raw` requires `fd` to stay open while
    // borrowed. Until it is owned (`own_inherited`), nothing in echod
    // closes an inherited descriptor; a number that is not open makes the
    // calls made on it fail with EBADF, and is then refused.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Takes ownership of descriptor `fd`, passed by the program before this
/// one.
#[allow(unsafe_code)]
fn own_inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: `OwnedFd::from_raw_fd` requires `fd` to be open and owned by
    // nobody else. The caller has checked it is open (`fcntl`); the program
    // before this one kept it open across `execve` for this program alone,
    // `TAKEN` makes sure the handover is read once, and each descriptor
    // appears once in a handover `decode` accepted.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
