//! Upgrading in place (SIGUSR2): the real binary re-executes its program
//! file, the way a package upgrade puts a new one in place (`rename`), and
//! carries every listening socket and every live connection across.
//!
//! Every server runs on an ephemeral loopback port; every wait is bounded.

mod common;
mod process;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use common::scrape::scrape_until;
use common::{DEADLINE, assert_echoes, connect, connect_small_buffers, numbered_lines, read_n};
use process::{Daemon, StdoutReader};

/// A directory of its own for one test's program files, removed at the end.
struct Install {
    dir: PathBuf,
}

impl Install {
    fn new(name: &str) -> Install {
        let dir = std::env::temp_dir().join(format!("echod-upgrade-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the install directory");
        Install { dir }
    }

    /// Where the program is installed, as a unit file would name it.
    fn program(&self) -> PathBuf {
        self.dir.join("echod")
    }

    /// Puts a fresh copy of the echod binary in place as a package manager
    /// does: written beside it, then renamed over it. Returns its inode.
    fn install_echod(&self) -> u64 {
        let staged = self.dir.join("echod.new");
        fs::copy(env!("CARGO_BIN_EXE_echod"), &staged).expect("copy the binary");
        self.put_in_place(&staged)
    }

    /// Puts in place a shell script that runs a fresh copy of echod (its
    /// own file, `echod-ROUND`) with the arguments it is given and then
    /// `--workers WORKERS`. Returns the inode of that copy, the file the
    /// process runs once the script has exec'd it.
    fn install_wrapper(&self, round: usize, workers: usize) -> u64 {
        let real = self.dir.join(format!("echod-{round}"));
        fs::copy(env!("CARGO_BIN_EXE_echod"), &real).expect("copy the binary");
        let script = format!(
            "#!/bin/sh\nexec {} \"$@\" --workers {workers}\n",
            real.display()
        );
        self.install_file(script.as_bytes(), 0o755);
        fs::metadata(&real).expect("stat the copy").ino()
    }

    /// Puts `contents` in place as the program, with `mode`.
    fn install_file(&self, contents: &[u8], mode: u32) -> u64 {
        let staged = self.dir.join("echod.new");
        fs::write(&staged, contents).expect("write the program file");
        fs::set_permissions(&staged, fs::Permissions::from_mode(mode)).expect("chmod");
        self.put_in_place(&staged)
    }

    fn put_in_place(&self, staged: &Path) -> u64 {
        let program = self.program();
        fs::rename(staged, &program).expect("rename into place");
        fs::metadata(&program).expect("stat the program").ino()
    }

    /// Starts the installed program on an ephemeral loopback port.
    fn start(&self, args: &[&str]) -> (Daemon, SocketAddr) {
        let mut command = Command::new(self.program());
        command
            .args(["-l", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::Follow);
        let addr = daemon.listening_addr();
        (daemon, addr)
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The inode of the program file process `pid` runs.
fn running_inode(pid: u32) -> u64 {
    fs::metadata(format!("/proc/{pid}/exe"))
        .expect("stat /proc/PID/exe")
        .ino()
}

/// Processes whose program file is in `dir`.
fn processes_running_from(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(exe) = fs::read_link(entry.path().join("exe")) {
            if exe.starts_with(dir) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Connect, echo one line, close, over and over on `threads` threads until
/// told to stop: the cycles made and every failure, described.
struct Churn {
    stop: Arc<AtomicBool>,
    cycles: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
    started: Instant,
}

impl Churn {
    fn start(addr: SocketAddr, threads: usize) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let cycles = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, cycles) = (Arc::clone(&stop), Arc::clone(&cycles));
                thread::spawn(move || {
                    let mut failures = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && failures.len() < 10 {
                        n += 1;
                        let line = format!("churn {t} {n}\r\n");
                        match churn_once(addr, line.as_bytes()) {
                            Ok(()) => {
                                cycles.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) => failures.push(format!("cycle {t}/{n}: {err}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Churn {
            stop,
            cycles,
            threads,
            started: Instant::now(),
        }
    }

    fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// Stops the threads; returns the cycles made, their rate, and the
    /// failures.
    fn finish(self) -> (u64, f64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("a churn thread panicked"))
            .collect();
        let cycles = self.cycles.load(Ordering::Relaxed);
        (
            cycles,
            cycles as f64 / self.started.elapsed().as_secs_f64(),
            failures,
        )
    }
}

fn churn_once(addr: SocketAddr, line: &[u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(line)?;
    let mut echo = vec![0; line.len()];
    stream.read_exact(&mut echo)?;
    if echo != line {
        return Err(std::io::Error::other(format!(
            "echo {:?} for {:?}",
            String::from_utf8_lossy(&echo),
            String::from_utf8_lossy(line)
        )));
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(std::io::Error::other("bytes after the echo"));
    }
    Ok(())
}

/// Sends SIGUSR2 and waits until the program that took over serves.
fn upgrade(daemon: &mut Daemon) -> String {
    daemon.signal(libc::SIGUSR2);
    daemon.wait_for_log("took over ")
}

/// Under churn, with long-lived clients holding unfinished lines and
/// non-readers owed about a MiB each, three upgrades in a row, each to a
/// new copy of the binary renamed into place: nothing is refused or reset,
/// no byte is lost or duplicated, and afterwards the same single process
/// runs the newest file.
#[test]
fn three_upgrades_under_churn_lose_nothing() {
    let install = Install::new("churn");
    upgrades_under_churn(&install, &[], &[Next::Echod, Next::Echod, Next::Echod]);
}

/// The same with `--workers 2`: every loop's listeners and connections are
/// carried over, and the program that takes over may run another number of
/// loops (here a wrapper installed as the program file adds `--workers`, as
/// an operator's wrapper script would): 2 to 2, then 3, then 1, then 2.
#[test]
fn with_workers_every_loop_is_carried_across_upgrades_under_churn() {
    let install = Install::new("workers-churn");
    upgrades_under_churn(
        &install,
        &["--workers", "2"],
        &[
            Next::Echod,
            Next::Wrapper { workers: 3 },
            Next::Wrapper { workers: 1 },
            Next::Wrapper { workers: 2 },
        ],
    );
}

/// What each upgrade of `upgrades_under_churn` installs as the program file.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// A fresh copy of echod, with the same arguments.
    Echod,
    /// A shell script that runs a fresh copy of echod with the same
    /// arguments and then `--workers N` (the last given wins).
    Wrapper { workers: usize },
}

/// Under churn, with long-lived clients holding unfinished lines and
/// non-readers owed about a MiB each, an upgrade for each of `rounds`, each
/// to a new program file renamed into place: nothing is refused or reset,
/// no byte is lost or duplicated, and afterwards the same single process
/// runs the newest echod file.
fn upgrades_under_churn(install: &Install, args: &[&str], rounds: &[Next]) {
    const LONG_LIVED: usize = 30;
    const NON_READERS: usize = 4;
    const OWED_BYTES: usize = 5 << 18; // 1.25 MiB: past max-pending-bytes, so paused.
    let first_inode = install.install_echod();
    let (mut daemon, addr) = install.start(args);
    let pid = daemon.pid();
    let mut workers = args
        .iter()
        .position(|&arg| arg == "--workers")
        .map_or(1, |i| args[i + 1].parse().expect("a number of workers"));

    let mut long_lived: Vec<TcpStream> = (0..LONG_LIVED)
        .map(|i| {
            let mut stream = connect(addr);
            assert_echoes(&mut stream, format!("hello {i}\r\n").as_bytes());
            stream
                .write_all(format!("unfinished line {i}:").as_bytes())
                .expect("write half a line");
            stream
        })
        .collect();
    let non_readers: Vec<(TcpStream, Vec<u8>, thread::JoinHandle<()>)> = (0..NON_READERS)
        .map(|i| {
            let stream = connect_small_buffers(addr);
            let lines = numbered_lines(OWED_BYTES / 32, &format!("non-reader {i} owed"));
            let writer = common::write_in_background(&stream, lines.clone(), false);
            (stream, lines, writer)
        })
        .collect();
    let churn = Churn::start(addr, 3);
    // Each upgrade happens with churn under way: wait for cycles between.
    let mut newest = first_inode;
    for (round, &next) in rounds.iter().enumerate() {
        let before = churn.cycles();
        let deadline = Instant::now() + DEADLINE;
        while churn.cycles() < before + 1000 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the churn stalled"
            );
            thread::yield_now();
        }
        newest = match next {
            Next::Echod => install.install_echod(),
            Next::Wrapper { workers: n } => {
                workers = n;
                install.install_wrapper(round, n)
            }
        };
        daemon.signal(libc::SIGUSR2);
        daemon.wait_for_log("upgrading: re-executing");
        if workers == 1 {
            let line = daemon.wait_for_log("took over ");
            assert!(line.contains("listening socket"), "round {round}: {line}");
        } else {
            for worker in 1..=workers {
                daemon.wait_for_log(&format!("worker {worker}: took over "));
            }
        }
        assert_eq!(daemon.pid(), pid, "the same process serves on");
    }
    let before = churn.cycles();
    let deadline = Instant::now() + DEADLINE;
    while churn.cycles() < before + 1000 {
        assert!(
            Instant::now() < deadline,
            "the churn stalled after the upgrades"
        );
        thread::yield_now();
    }
    let (cycles, rate, failures) = churn.finish();
    assert!(failures.is_empty(), "churn failures: {failures:#?}");
    eprintln!("churn: {cycles} cycles, {rate:.0} per second, no failure");

    for (i, stream) in long_lived.iter_mut().enumerate() {
        stream.write_all(b" finished\r\n").expect("finish the line");
        let expected = format!("unfinished line {i}: finished\r\n");
        assert_eq!(
            read_n(stream, expected.len()),
            expected.as_bytes(),
            "long-lived client {i}"
        );
    }
    for (i, (mut stream, lines, writer)) in non_readers.into_iter().enumerate() {
        let echoed = read_n(&mut stream, lines.len());
        assert!(
            echoed == lines,
            "non-reader {i}: its echoes differ from what it sent"
        );
        writer.join().expect("the non-reader's writer");
    }
    // Nothing more than was owed: a line now comes back alone.
    assert_echoes(&mut long_lived[0], b"after\r\n");

    assert_ne!(newest, first_inode);
    assert_eq!(
        running_inode(pid),
        newest,
        "the process runs the newest file"
    );
    assert_eq!(
        processes_running_from(&install.dir),
        [pid],
        "exactly one echod"
    );
    drop(long_lived);
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status:?}");
}

/// Each way an upgrade can fail before `execve` leaves the old program
/// serving every connection and listener as before, with one log line that
/// says why; a good upgrade afterwards still carries everything.
#[test]
fn failed_upgrades_lose_nothing() {
    failed_upgrades_lose_nothing_with(&Install::new("failed"), &[]);
}

/// The same with `--workers 2`, where the last case fails after every
/// worker has handed over its part and waits: each serves on.
#[test]
fn with_workers_failed_upgrades_lose_nothing() {
    failed_upgrades_lose_nothing_with(&Install::new("failed-workers"), &["--workers", "2"]);
}

fn failed_upgrades_lose_nothing_with(install: &Install, args: &[&str]) {
    let first_inode = install.install_echod();
    let (mut daemon, addr) = install.start(args);
    let pid = daemon.pid();
    let mut client = connect(addr);
    assert_echoes(&mut client, b"before\r\n");
    client
        .write_all(b"held across every attempt:")
        .expect("write");

    type Setup = fn(&Install);
    let cases: [(&str, Setup, &str); 7] = [
        (
            "missing",
            |install| fs::remove_file(install.program()).expect("remove"),
            "cannot run the new program",
        ),
        (
            "not executable",
            |install| {
                install.install_file(b"#!/bin/sh\necho 'handover format 1'\n", 0o644);
            },
            "cannot run the new program",
        ),
        (
            "exits with failure",
            |install| {
                install.install_file(b"#!/bin/sh\nexit 1\n", 0o755);
            },
            "--version failed",
        ),
        (
            "another format",
            |install| {
                install.install_file(
                    b"#!/bin/sh\necho 'echod 9.0.0'\necho 'handover format 999'\n",
                    0o755,
                );
            },
            "reads handover format 999",
        ),
        (
            "no format",
            |install| {
                install.install_file(b"#!/bin/sh\necho 'echod 0.0.1'\n", 0o755);
            },
            "names no handover format",
        ),
        (
            "never answers",
            |install| {
                install.install_file(b"#!/bin/sh\nexec sleep 60\n", 0o755);
            },
            "did not answer --version",
        ),
        (
            // It passes the check, then cannot be executed: `execve`
            // itself fails, after everything was prepared.
            "execve fails",
            |install| {
                install.install_file(
                    b"#!/bin/sh\necho 'echod 0.0.1'\necho 'handover format 1'\nchmod 644 \"$0\"\n",
                    0o755,
                );
            },
            "execve failed",
        ),
    ];
    for (name, setup, why) in cases {
        setup(install);
        daemon.signal(libc::SIGUSR2);
        let line = daemon.wait_for_log("upgrade failed: ");
        assert!(line.contains(why), "{name}: {line}");
        assert!(line.contains("serving on"), "{name}: {line}");
        assert_eq!(daemon.pid(), pid, "{name}");
        assert_eq!(
            running_inode(pid),
            first_inode,
            "{name}: still the first program"
        );
        // The listener still accepts and the connections still echo.
        let mut fresh = connect(addr);
        assert_echoes(&mut fresh, format!("after {name}\r\n").as_bytes());
    }
    client.write_all(b" done\r\n").expect("write");
    let expected = b"held across every attempt: done\r\n";
    assert_eq!(read_n(&mut client, expected.len()), expected);

    // A good program now: the connection is carried over.
    client.write_all(b"carried:").expect("write");
    let newest = install.install_echod();
    upgrade(&mut daemon);
    assert_eq!(running_inode(pid), newest);
    client.write_all(b" yes\r\n").expect("write");
    assert_eq!(read_n(&mut client, 14), b"carried: yes\r\n");
    drop(client);
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status:?}");
}

/// Totals and connection ids carry over: the summary after an upgrade
/// counts what the program before served, and a connection accepted after
/// it gets an id no connection had before.
#[test]
fn totals_and_ids_continue_across_an_upgrade() {
    let install = Install::new("totals");
    install.install_echod();
    let (mut daemon, addr) = install.start(&["--log-level", "debug"]);
    for i in 0..5 {
        let mut stream = connect(addr);
        assert_echoes(&mut stream, format!("line {i}\r\n").as_bytes());
    }
    let mut open = connect(addr);
    assert_echoes(&mut open, b"open\r\n");
    let open_id = daemon.wait_for_log("conn 6: accepted");
    assert!(open_id.contains("conn 6"), "{open_id}");
    // Every closed connection counted before the upgrade.
    let deadline = Instant::now() + DEADLINE;
    loop {
        daemon.signal(libc::SIGUSR1);
        let summary = daemon.wait_for_log("summary: ");
        if summary.contains("6 connections served") && summary.contains("5 peer finished") {
            break;
        }
        assert!(Instant::now() < deadline, "{summary}");
    }
    install.install_echod();
    upgrade(&mut daemon);
    daemon.signal(libc::SIGUSR1);
    let summary = daemon.wait_for_log("summary: ");
    assert!(summary.contains("6 connections served"), "{summary}");
    assert!(summary.contains("6 lines received"), "{summary}");
    assert!(summary.contains("5 peer finished"), "{summary}");
    let mut after = connect(addr);
    assert_echoes(&mut after, b"after\r\n");
    let accepted = daemon.wait_for_log("conn 7: accepted");
    assert!(accepted.contains("conn 7: accepted"), "{accepted}");
    assert_echoes(&mut open, b"still open\r\n");
    drop((open, after));
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status:?}");
}

/// Under `--proxy-protocol`, a connection still waiting for its header is
/// carried across as one (nothing of the header was consumed, so the new
/// program reads it whole), and one whose header was read keeps the
/// client it named and its unfinished line.
#[test]
fn proxy_protocol_connections_carry_on_across_an_upgrade() {
    let install = Install::new("proxy");
    install.install_echod();
    let (mut daemon, addr) = install.start(&["--proxy-protocol"]);
    let header = b"PROXY TCP4 203.0.113.40 192.0.2.1 4040 12321\r\n";
    let mut waiting = connect(addr);
    waiting
        .write_all(&header[..20])
        .expect("send half a header");
    let mut named = connect(addr);
    named
        .write_all(b"PROXY TCP4 203.0.113.41 192.0.2.1 4141 12321\r\n")
        .expect("send a header");
    assert_echoes(&mut named, b"before\r\n");
    named.write_all(b"hal").expect("send half a line");
    // Read before the upgrade and carried as leftovers, or still queued
    // on the same socket: either way the line must come back whole.
    install.install_echod();
    upgrade(&mut daemon);
    waiting
        .write_all(&header[20..])
        .expect("send the rest of the header");
    assert_echoes(&mut waiting, b"carried\r\n");
    named.write_all(b"f\r\n").expect("end the line");
    assert_eq!(read_n(&mut named, 6), b"half\r\n");
    drop((waiting, named));
    daemon.wait_for_log("peer 203.0.113.40:4040");
    daemon.wait_for_log("2 lines received, 14 bytes echoed; peer 203.0.113.41:4141");
}

/// The metrics endpoint's socket is carried over as the echo listeners
/// are, and the series go on: the same address answers after the upgrade,
/// the counters keep what came before, and the process start time does not
/// change (Prometheus sees one process, never a restart).
#[test]
fn the_metrics_endpoint_carries_on_across_an_upgrade() {
    let install = Install::new("metrics");
    install.install_echod();
    let (mut daemon, addr) = install.start(&["--metrics-listen", "127.0.0.1:0"]);
    let line = daemon.wait_for_log("metrics at http://");
    let metrics: SocketAddr = line
        .split_once("metrics at http://")
        .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
        .and_then(|address| address.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
    for i in 0..3 {
        let mut stream = connect(addr);
        assert_echoes(&mut stream, format!("line {i}\r\n").as_bytes());
    }
    let before = scrape_until(metrics, "3 connections closed", |series| {
        series.get("echod_connections_accepted_total") == 3.0
            && series.get("echod_connections_open") == 0.0
    });
    install.install_echod();
    daemon.signal(libc::SIGUSR2);
    let handing = daemon.wait_for_log("upgrading: re-executing");
    assert!(
        handing.contains("with 2 listening sockets"),
        "the echo and the metrics listener are both handed over: {handing}"
    );
    daemon.wait_for_log("took over ");
    let mut after = connect(addr);
    assert_echoes(&mut after, b"after\r\n");
    let series = scrape_until(metrics, "the fourth connection", |series| {
        series.get("echod_connections_accepted_total") == 4.0
    });
    assert_eq!(series.get("echod_lines_echoed_total"), 4.0);
    assert_eq!(
        series.get("process_start_time_seconds"),
        before.get("process_start_time_seconds"),
        "the start time changed across the upgrade"
    );
    drop(after);
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status:?}");
}
