//! Runs the real `echod` binary as a child process, for the tests in
//! `daemon.rs`, `memory.rs`, `probe.rs`, `reliability.rs`, `stats.rs`,
//! `systemd.rs` and `workers.rs`: start it on an ephemeral loopback port,
//! follow its log, signal it, read its resource use from `/proc`, and wait
//! for it to exit, every wait bounded by `DEADLINE`.
//!
//! The child's standard output is read on a helper thread that forwards each
//! line through a channel, so the test thread waits with `recv_timeout`, never
//! with `sleep`. Its exit is noticed by a second thread blocked in
//! `waitid(WNOWAIT)`, which sees the exit without reaping: the pid stays ours
//! until `Child::wait`, so a signal can never reach a recycled pid. A child
//! still running when its `Daemon` is dropped (a failed test) is killed, and
//! its log so far is printed to help with the diagnosis.
//!
//! The clients are `tests/common`'s: a test binary that uses this module
//! declares `mod common;` beside it. Only what needs the child lives here.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, MAX_BULK_BYTES, connect};

/// How long a bulk write may make no progress before the writer looks for
/// a sign that echod paused the connection. Ends a write phase; never used
/// to wait for the daemon.
const WRITE_STALL: Duration = Duration::from_millis(200);

/// How often `/proc` is read while waiting for a count to come down.
const PROC_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What becomes of the child's standard output once it is listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutReader {
    /// Read and forward every line until the child closes it.
    Follow,
    /// Forward the first "listening on" line, then close the pipe, as
    /// `echod | head -1` would: later log writes fail with `EPIPE`.
    CloseAfterListening,
    /// Forward the first "listening on" line, then stop reading, keeping
    /// the pipe open, until `Daemon::resume_stdout`: the pipe fills and
    /// log writes would block, as behind a stalled log collector.
    StallAfterListening,
}

/// A running (or exited) `echod` child process.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Lines of standard output, as the reader thread sees them.
    stdout: Receiver<String>,
    /// Every line received from `stdout` so far, in order.
    log: Vec<String>,
    /// `log[..cursor]` has been searched by `wait_for_log`.
    cursor: usize,
    /// All of standard error, sent once the child closes it.
    stderr: Receiver<String>,
    stderr_text: Option<String>,
    /// Fires once the child has exited (it is not yet reaped).
    exited: Receiver<()>,
    /// Set once the child is reaped; its pid may be reused from then on.
    status: Option<ExitStatus>,
    /// With `StdoutReader::StallAfterListening`, sending (or dropping) this
    /// makes the reader thread read again.
    resume_stdout: Option<mpsc::Sender<()>>,
}

impl Daemon {
    /// A command for the echod binary with `args`, its output piped and its
    /// log level independent of the test environment's `RUST_LOG`.
    pub fn command(args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_echod"));
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// The child's resident set size in bytes, from /proc.
    #[track_caller]
    pub fn rss_bytes(&self) -> usize {
        let rss = echod_kit::process::rss_bytes(self.pid())
            .unwrap_or_else(|err| panic!("echod's resident set size: {err}"));
        usize::try_from(rss).expect("an RSS that fits in memory")
    }

    /// Spawns echod with `args`.
    #[track_caller]
    pub fn spawn(args: &[&str]) -> Daemon {
        Daemon::spawn_command(&mut Daemon::command(args), StdoutReader::Follow)
    }

    /// Spawns echod listening on an ephemeral loopback port, with `args`
    /// added, and returns it with the address it is listening on.
    #[track_caller]
    pub fn start(args: &[&str]) -> (Daemon, SocketAddr) {
        let mut all = vec!["-l", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut daemon = Daemon::spawn(&all);
        let addr = daemon.listening_addr();
        (daemon, addr)
    }

    /// Spawns echod with a metrics endpoint on an ephemeral loopback port
    /// and `args` added; returns it, its echo address and its metrics
    /// address (read from its `metrics at http://...` line).
    #[track_caller]
    pub fn start_with_metrics(args: &[&str]) -> (Daemon, SocketAddr, SocketAddr) {
        let mut all = vec!["--metrics-listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (mut daemon, addr) = Daemon::start(&all);
        let line = daemon.wait_for_log("metrics at http://");
        let metrics = line
            .split_once("metrics at http://")
            .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
            .and_then(|address| address.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
        (daemon, addr, metrics)
    }

    /// Spawns `command` (from `Daemon::command`) with the given handling of
    /// its standard output.
    #[track_caller]
    pub fn spawn_command(command: &mut Command, reader: StdoutReader) -> Daemon {
        let mut child = spawn_retrying(command);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let (line_tx, line_rx) = mpsc::channel();
        let (resume_tx, resume_rx) = mpsc::channel::<()>();
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut stalling = reader == StdoutReader::StallAfterListening;
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                if reader == StdoutReader::CloseAfterListening && text.contains("listening on ") {
                    // Closed before the line is passed on, so that the test
                    // knows every later log write meets a closed pipe.
                    drop(stdout);
                    let _ = line_tx.send(text);
                    return;
                }
                let listening = text.contains("listening on ");
                if line_tx.send(text).is_err() {
                    return;
                }
                if stalling && listening {
                    // Returns on `resume_stdout` or when the `Daemon` is
                    // dropped; either way, read on.
                    let _ = resume_rx.recv();
                    stalling = false;
                }
            }
        });

        let (stderr_tx, stderr_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut text = Vec::new();
            let mut stderr = stderr;
            let _ = stderr.read_to_end(&mut text);
            let _ = stderr_tx.send(String::from_utf8_lossy(&text).into_owned());
        });

        let (exit_tx, exit_rx) = mpsc::channel();
        let pid = child.id() as libc::id_t;
        thread::spawn(move || {
            wait_for_exit_without_reaping(pid);
            let _ = exit_tx.send(());
        });

        Daemon {
            child,
            stdout: line_rx,
            log: Vec::new(),
            cursor: 0,
            stderr: stderr_rx,
            stderr_text: None,
            exited: exit_rx,
            status: None,
            resume_stdout: Some(resume_tx),
        }
    }

    /// Makes a reader stalled by `StdoutReader::StallAfterListening` read
    /// the child's standard output again.
    pub fn resume_stdout(&mut self) {
        if let Some(resume) = self.resume_stdout.take() {
            let _ = resume.send(());
        }
    }

    /// The child's process id. Valid until the child is reaped.
    pub fn pid(&self) -> u32 {
        assert!(self.status.is_none(), "the child has already been reaped");
        self.child.id()
    }

    /// Descriptors the child has open, counted in `/proc/PID/fd`.
    #[track_caller]
    pub fn open_descriptors(&self) -> usize {
        echod_kit::process::open_descriptors(self.pid())
            .unwrap_or_else(|err| panic!("echod's open descriptors: {err}"))
    }

    /// Waits until the child has at most `limit` descriptors open, polling
    /// `/proc` (a connection's close is observable nowhere else); fails
    /// after `DEADLINE`. Returns the count.
    #[track_caller]
    pub fn wait_for_descriptors_at_most(&self, limit: usize) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let open = self.open_descriptors();
            if open <= limit {
                return open;
            }
            assert!(
                Instant::now() < deadline,
                "echod still has {open} descriptors open after {DEADLINE:?}; want at most {limit}"
            );
            thread::sleep(PROC_POLL_INTERVAL);
        }
    }

    /// CPU time the child has used so far, user and system, all threads
    /// (`utime + stime` in `/proc/PID/stat`, in clock ticks).
    #[track_caller]
    pub fn cpu_time(&self) -> Duration {
        echod_kit::process::cpu_time(self.pid())
            .unwrap_or_else(|err| panic!("echod's CPU time: {err}"))
    }

    /// Waits for the (first) "listening on ADDR" line and returns ADDR.
    #[track_caller]
    pub fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_log("listening on ");
        let (_, addr) = line
            .split_once("listening on ")
            .expect("the line was matched on this text");
        addr.trim()
            .parse()
            .unwrap_or_else(|err| panic!("cannot parse the address in {line:?}: {err}"))
    }

    /// Waits for the next log line, after the last one this returned,
    /// that contains `needle`, and returns it.
    #[track_caller]
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        match self.poll_log(needle, DEADLINE) {
            Some(line) => line,
            None => panic!(
                "no log line containing {needle:?} within {DEADLINE:?}; log so far:\n{}",
                self.log.join("\n")
            ),
        }
    }

    /// Waits for a `--stats-interval` line that contains every one of
    /// `needles`, and returns it; earlier stats lines are skipped. The
    /// stats line is echod's counters, as an operator reads them.
    #[track_caller]
    pub fn wait_for_stats(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let line = self.wait_for_log("stats: ");
            if needles.iter().all(|needle| line.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no stats line with {needles:?} within {DEADLINE:?}; last: {line}"
            );
        }
    }

    /// Like `wait_for_log`, but gives up after `timeout` and returns `None`.
    #[track_caller]
    pub fn poll_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.log[self.cursor..]
                .iter()
                .position(|line| line.contains(needle))
            {
                self.cursor += i + 1;
                return Some(self.log[self.cursor - 1].clone());
            }
            self.cursor = self.log.len();
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "standard output closed without a line containing {needle:?}; log:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
    }

    /// The connection id echod gave the connection from `peer`, read from
    /// its accept line (logged at `debug`), wherever it is in the log so
    /// far; waits for it until `DEADLINE`.
    #[track_caller]
    pub fn connection_id_of(&mut self, peer: SocketAddr) -> u64 {
        let suffix = format!(": accepted from {peer}");
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.log.extend(self.stdout.try_iter());
            if let Some(line) = self.log.iter().find(|line| line.ends_with(&suffix)) {
                let id = line
                    .split_once("] conn ")
                    .and_then(|(_, rest)| rest.split_once(':'))
                    .and_then(|(id, _)| id.parse().ok());
                return id.unwrap_or_else(|| panic!("no connection id in {line:?}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(err) => panic!(
                    "no accept line for {peer} within {DEADLINE:?} ({err}); log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Sends `signal` (a `libc::SIG*` number) to the child.
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        // The pid is our child's and it has not been reaped (only
        // `wait_exit` and `Drop` reap it), so it cannot name another process.
        assert!(self.status.is_none(), "the child has already been reaped");
        let signal = echod_kit::process::Signal::from_named_raw(signal)
            .unwrap_or_else(|| panic!("{signal} is not a named signal"));
        echod_kit::process::signal(self.pid(), signal).unwrap_or_else(|err| panic!("kill: {err}"));
    }

    /// Waits for the child to exit and returns its status.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        if let Err(err) = self.exited.recv_timeout(DEADLINE) {
            panic!(
                "echod did not exit within {DEADLINE:?} ({err}); log:\n{}",
                self.log.join("\n")
            );
        }
        // It has exited, so this returns at once.
        let status = self.child.wait().expect("reap the exited child");
        self.status = Some(status);
        status
    }

    /// Every log line received so far, without waiting for more.
    pub fn log_so_far(&mut self) -> &[String] {
        self.log.extend(self.stdout.try_iter());
        &self.log
    }

    /// Every line of standard output, once the child has exited and the
    /// reader has seen the end of it.
    #[track_caller]
    pub fn full_log(&mut self) -> &[String] {
        self.wait_exit();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Disconnected) => return &self.log,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("standard output still open {DEADLINE:?} after exit")
                }
            }
        }
    }

    /// All of standard error, once the child has exited.
    #[track_caller]
    pub fn stderr(&mut self) -> &str {
        self.wait_exit();
        if self.stderr_text.is_none() {
            let text = self
                .stderr
                .recv_timeout(DEADLINE)
                .expect("standard error closes when the child exits");
            self.stderr_text = Some(text);
        }
        self.stderr_text.as_deref().unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // A test failed (or forgot to stop the child): SIGKILL ends it
        // whatever state it is in, so the wait below is bounded.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            self.log.extend(self.stdout.try_iter());
            eprintln!("echod's log before it was killed:\n{}", self.log.join("\n"));
        }
    }
}

/// What a client sent before echod paused it: whole lines, then perhaps
/// the start of one more.
#[derive(Debug)]
pub struct Pushed {
    /// Every byte the kernel accepted, in order.
    pub sent: Vec<u8>,
    /// The rest of the line `sent` stops inside, to be sent once the client
    /// reads again; empty if `sent` ends with a whole line.
    pub unfinished: Vec<u8>,
}

/// Writes lines on `stream` without reading until echod logs that it paused
/// the connection (it must run at `--log-level trace`), so that at least
/// `max-pending-bytes` of echoes are owed. Each line is a number, a space,
/// then `line` (which ends with CRLF and holds no other LF): distinct, so
/// that a lost or repeated echo shows.
///
/// A write that would block is not proof of a pause: echod may simply not
/// have read yet. So after each one the log is checked, briefly, and
/// writing resumes if the pause has not been logged.
///
/// The trace line is the only immediate, per-connection sign of a pause.
/// The stats line counts paused connections, but at most ten times a
/// second and without saying which; tests that stall a thousand clients one
/// after another cannot wait a tenth of a second for each.
#[track_caller]
pub fn push_until_paused(daemon: &mut Daemon, stream: &mut TcpStream, line: &[u8]) -> Pushed {
    assert!(
        line.ends_with(b"\r\n") && !line[..line.len() - 1].contains(&b'\n'),
        "one CRLF line, please"
    );
    // Traced on the way from open to paused (`Connection::transition`),
    // under the connection id its accept line gave it.
    let id = daemon.connection_id_of(stream.local_addr().expect("client address"));
    let needle = format!("conn {id}: open -> paused");
    let deadline = Instant::now() + DEADLINE;
    stream.set_nonblocking(true).expect("non-blocking");
    let mut sent = Vec::new();
    let mut number = 0u64;
    // 64 lines per write call; `block[..offset]` has been sent.
    let mut block = Vec::new();
    let mut offset = 0;
    loop {
        assert!(
            sent.len() < MAX_BULK_BYTES && Instant::now() < deadline,
            "{} bytes sent and no pause logged: echod never stopped reading",
            sent.len()
        );
        if offset == block.len() {
            block.clear();
            offset = 0;
            for _ in 0..64 {
                number += 1;
                block.extend_from_slice(format!("{number:08} ").as_bytes());
                block.extend_from_slice(line);
            }
        }
        match stream.write(&block[offset..]) {
            Ok(n) => {
                sent.extend_from_slice(&block[offset..offset + n]);
                offset += n;
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                if daemon.poll_log(&needle, WRITE_STALL / 10).is_some() {
                    break;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("write failed after {} bytes: {err}", sent.len()),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    let unfinished = if offset == 0 || block[offset - 1] == b'\n' {
        Vec::new()
    } else {
        let end = block[offset..]
            .iter()
            .position(|&byte| byte == b'\n')
            .expect("every line in the block ends with LF");
        block[offset..=offset + end].to_vec()
    };
    Pushed { sent, unfinished }
}

/// Blocks until process `pid` has exited, leaving it unreaped.
fn wait_for_exit_without_reaping(pid: libc::id_t) {
    loop {
        // SAFETY: all-zero bytes are a valid `siginfo_t` (a plain C struct).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable `siginfo_t` for the duration of
        // the call. WNOWAIT leaves the child a zombie for `Child::wait` to
        // reap, so its pid stays reserved while the test may still signal it.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            return;
        }
    }
}

/// echod out of descriptors, with clients waiting: started under
/// RLIMIT_NOFILE 64, with `clients` clients that have each sent one line.
/// About a dozen descriptors are echod's own, so some fifty clients are
/// accepted before `accept` fails with EMFILE; the kernel completes every
/// handshake from the backlog regardless, so the rest connect and wait.
pub struct Exhausted {
    pub daemon: Daemon,
    /// The line client `i` sent.
    pub lines: Vec<String>,
    /// `None` once a test has closed the client.
    pub clients: Vec<Option<TcpStream>>,
    /// Whether client `i` was accepted before the first EMFILE.
    pub accepted: Vec<bool>,
}

impl Exhausted {
    /// Starts echod (at debug, where accepts are logged), connects the
    /// clients, and waits for the first failed accept. Asserts that some
    /// clients but not all were accepted.
    #[track_caller]
    pub fn start(clients: usize) -> Exhausted {
        let mut command = Daemon::command(&[
            "-l",
            "127.0.0.1:0",
            "--max-connections",
            "1000",
            "--log-level",
            "debug",
        ]);
        limit_descriptors(&mut command, 64);
        let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::Follow);
        let addr = daemon.listening_addr();
        let lines: Vec<String> = (0..clients).map(|i| format!("client {i}\r\n")).collect();
        let clients: Vec<Option<TcpStream>> = lines
            .iter()
            .map(|line| {
                let mut client = connect(addr);
                client.write_all(line.as_bytes()).expect("send a line");
                Some(client)
            })
            .collect();
        // Which clients were accepted is in the debug log only: the counters
        // say how many, not which, and the client cannot tell (the kernel
        // completed its handshake either way).
        daemon.wait_for_log("accept failed");
        // Every accept before the failure is logged before it, and none
        // succeeds after it until a client closes: the list is complete.
        let log = daemon.log_so_far();
        let accepted: Vec<bool> = clients
            .iter()
            .flatten()
            .map(|client| {
                let needle = format!("accepted from {}", client.local_addr().expect("address"));
                log.iter().any(|line| line.contains(&needle))
            })
            .collect();
        let exhausted = Exhausted {
            daemon,
            lines,
            clients,
            accepted,
        };
        let served = exhausted.served();
        assert!(
            (1..exhausted.clients.len()).contains(&served),
            "{served} of {} clients accepted; want some but not all",
            exhausted.clients.len()
        );
        exhausted
    }

    /// How many clients were accepted before the first EMFILE.
    pub fn served(&self) -> usize {
        self.accepted.iter().filter(|&&a| a).count()
    }
}

/// Sets RLIMIT_NOFILE (soft and hard) to `limit` in the child, before it
/// runs echod.
pub fn limit_descriptors(command: &mut Command, limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; setrlimit(2) is one, it reads the
    // `rlimit` copied into the closure, and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// Spawns `command`, trying again while the kernel says the program file is
/// busy (`ETXTBSY`). A test that has just written a copy of the binary
/// (`tests/upgrade.rs`) meets it when another test thread forked while the
/// copy was open for writing: the child holds that descriptor until it
/// execs, a moment later. Bounded: 100 tries, 10 ms apart.
#[track_caller]
fn spawn_retrying(command: &mut Command) -> std::process::Child {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                // A retry of a transient refusal, not a synchronisation.
                thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("spawn the echod binary: {err}"),
        }
    }
}
