//! Logging for the binary: `simple_logger` formats the lines, a relay thread
//! writes them, and the event loop never waits for either.
//!
//! Standard output can fail a daemon in two ways, and neither may stop it:
//!
//! - its reader goes away (`echod | head -1`): writes fail with `EPIPE`, and
//!   `println!`, which `simple_logger` writes with, panics when a write fails;
//! - its reader stalls: writes block, and a blocked write in the event loop
//!   would stall every client with it.
//!
//! So the logger the `log` macros call (`Handoff`) formats a record and
//! passes it to a relay thread over a bounded queue without waiting; if the
//! queue is full the line is dropped and counted, and the count is logged
//! when the relay catches up. The relay thread runs `simple_logger`, whose
//! `println!` writes into a private pipe that descriptor 1 now names, and
//! copies the pipe to the real standard output with plain writes whose errors
//! it can handle: once the reader is gone it discards instead of copying.
//!
//! The library itself only calls `log` macros; this module is used by
//! `main`, which is the only place a logger is installed.

use std::fs::File;
use std::io::{self, PipeReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use simple_logger::SimpleLogger;

/// Lines queued for the relay before new ones are dropped. A burst of
/// connection logs fits; a stalled reader cannot make echod hold more.
const QUEUE_LINES: usize = 16 * 1024;

/// Longest message passed on; a longer one is cut, so that one line always
/// fits in the relay's pipe (64 KiB on Linux) and cannot block it.
const MAX_MESSAGE_BYTES: usize = 4096;

/// How long `log::logger().flush()` waits for the relay to write what is
/// queued (the final summary, say) before the process exits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Installs the logger: `level` if given, else `RUST_LOG`, else `info`.
///
/// # Errors
///
/// If the relay's pipe or thread cannot be created, or a logger is already
/// installed.
pub fn init(level: Option<LevelFilter>) -> io::Result<()> {
    let mut formatter = SimpleLogger::new()
        .with_level(LevelFilter::Info)
        .with_utc_timestamps()
        // mio logs through `log` too; its detail is not an operator's concern.
        .with_module_level("mio", LevelFilter::Warn)
        .env();
    if let Some(level) = level {
        formatter = formatter.with_level(level);
    }
    let max_level = formatter.max_level();
    let formatter = Arc::new(formatter);

    let stdout = take_over_stdout()?;
    let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let relay = Relay {
        formatter: Arc::clone(&formatter),
        receiver,
        pipe: stdout.pipe,
        output: stdout.real.map(File::from),
        dropped: Arc::clone(&dropped),
    };
    thread::Builder::new()
        .name("echod-log".into())
        .spawn(move || relay.run())?;

    let handoff = Handoff {
        formatter,
        sender,
        dropped,
    };
    log::set_boxed_logger(Box::new(handoff)).map_err(io::Error::other)?;
    log::set_max_level(max_level);
    Ok(())
}

/// The logger the macros call, on whatever thread they run.
struct Handoff {
    /// Used here only for its level filter; it formats on the relay thread.
    formatter: Arc<SimpleLogger>,
    sender: SyncSender<Message>,
    /// Lines dropped because the queue was full.
    dropped: Arc<AtomicU64>,
}

enum Message {
    Line {
        level: Level,
        target: String,
        text: String,
    },
    Flush(SyncSender<()>),
}

impl Log for Handoff {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.formatter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut text = record.args().to_string();
        if text.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let line = Message::Line {
            level: record.level(),
            target: record.target().to_owned(),
            text,
        };
        match self.sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The relay is gone (it never exits while the sender lives, so
            // this is only reachable during process exit): nothing to do.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let (ack, done) = mpsc::sync_channel(1);
        let mut request = Message::Flush(ack);
        // Not `send`: if standard output has stalled, the queue stays full
        // and a blocking send would hang the exit.
        loop {
            match self.sender.try_send(request) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    request = again;
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The relay thread's side.
struct Relay {
    formatter: Arc<SimpleLogger>,
    receiver: Receiver<Message>,
    /// Where `simple_logger`'s `println!` lands (descriptor 1's pipe).
    pipe: PipeReader,
    /// The real standard output; `None` once its reader has gone away.
    output: Option<File>,
    dropped: Arc<AtomicU64>,
}

impl Relay {
    fn run(mut self) {
        let mut chunk = vec![0; 64 * 1024];
        while let Ok(message) = self.receiver.recv() {
            match message {
                Message::Line {
                    level,
                    target,
                    text,
                } => {
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        self.formatter.log(
                            &Record::builder()
                                .level(Level::Warn)
                                .target("echod::logging")
                                .args(format_args!("{dropped} log lines dropped: standard output was not keeping up"))
                                .build(),
                        );
                    }
                    self.formatter.log(
                        &Record::builder()
                            .level(level)
                            .target(&target)
                            .args(format_args!("{text}"))
                            .build(),
                    );
                    self.copy_out(&mut chunk);
                }
                Message::Flush(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    /// Moves what the formatter wrote from the pipe to standard output.
    fn copy_out(&mut self, chunk: &mut [u8]) {
        loop {
            let n = match self.pipe.read(chunk) {
                Ok(0) => return,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // `WouldBlock`: the pipe is empty, all copied.
                Err(_) => return,
            };
            if let Some(output) = self.output.as_mut() {
                if output.write_all(&chunk[..n]).is_err() {
                    // The reader is gone (EPIPE) or the descriptor is broken.
                    // echod goes on serving; its log goes nowhere.
                    self.output = None;
                }
            }
        }
    }
}

/// Descriptor 1, taken over for the relay.
struct Stdout {
    /// Reading end of the pipe descriptor 1 now writes into.
    pipe: PipeReader,
    /// A duplicate of the original standard output, if there was one.
    real: Option<OwnedFd>,
}

/// Points descriptor 1 at a new pipe and returns its reading end with the
/// original standard output.
fn take_over_stdout() -> io::Result<Stdout> {
    // Fails with EBADF if descriptor 1 was closed; then logs are discarded.
    let real = io::stdout().as_fd().try_clone_to_owned().ok();
    let (reader, writer) = io::pipe()?;
    // With descriptor 1 closed, `pipe` may have handed out 1 itself, which
    // the `dup2` below would then clobber. Duplicates are numbered 3 or more.
    let (reader, writer) = (reader.try_clone()?, writer.try_clone()?);
    set_nonblocking(&reader)?;
    replace_stdout(&writer)?;
    Ok(Stdout { pipe: reader, real })
}

#[allow(unsafe_code)]
fn replace_stdout(writer: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: dup2 takes two integer descriptors and touches no memory;
    // `writer` is open for the duration of the call. Afterwards descriptor 1
    // is a second handle on the pipe, independent of `writer`.
    let rc = unsafe { libc::dup2(writer.as_raw_fd(), libc::STDOUT_FILENO) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL reads and sets integer flags of an
    // open descriptor and touches no memory.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
