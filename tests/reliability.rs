//! What must hold under abuse, shown against the real `echod` binary: the
//! guarantees listed in `docs/RELIABILITY.md`, one test each.
//!
//! - stalled readers are paused, never disconnected, and lose nothing, with
//!   memory inside the configured bound even for a thousand of them, and
//!   given back to the system once a burst of them has gone;
//! - running out of descriptors costs almost no CPU, and echod recovers as
//!   soon as one comes free;
//! - connections reset or closed at once leave no descriptor or memory
//!   behind;
//! - SIGTERM under load delivers every echo owed and exits 0;
//! - a stalled or vanished log reader, and `SIGPIPE`, never stop the server.
//!
//! Figures the tests measure (CPU share, recovery time, memory) are printed
//! on standard error; `cargo test --test reliability -- --nocapture` shows
//! them. The assertions on them are generous bounds that a healthy echod
//! meets many times over, so that they catch a defect (a spin, a leak), not
//! a slow machine.

mod common;
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use echod::Config;

use common::{
    DEADLINE, assert_echoes, connect, connect_small_buffers, connect_with_receive_buffer,
    push_until_blocked, read_to_eof,
};
use process::{Daemon, Exhausted, Pushed, StdoutReader, push_until_paused};

/// Memory echod may use beyond what its connections' buffers account for:
/// the buffer pool's spare buffers (1 MiB at most), the slab and event list,
/// the log queue, and the allocator's own slack.
const CONSTANT_OVERHEAD_BYTES: usize = 4 << 20;

/// Gives this test process room for its clients: each test here may hold
/// a thousand sockets, and tests run in parallel.
fn raise_open_file_limit() {
    rlimit::increase_nofile_limit(16 * 1024).expect("raise the open-file limit");
}

#[test]
fn a_thousand_stalled_readers_stay_within_the_memory_bound_and_lose_nothing() {
    const STALLED: usize = 1000;
    raise_open_file_limit();
    // Small limits keep the volume small: each stalled reader makes echod
    // owe it 16 KiB, on top of what the kernel buffers hold.
    let max_connections = STALLED + 1;
    // At trace, echod logs each pause, which is how a client knows it is
    // owed `max-pending-bytes`.
    let (mut daemon, addr) = Daemon::start(&[
        "--max-pending-bytes",
        "16K",
        "--max-line-bytes",
        "1K",
        "--max-connections",
        &max_connections.to_string(),
        "--log-level",
        "trace",
    ]);
    let per_connection = Config {
        max_pending_bytes: 16 * 1024,
        max_line_bytes: 1024,
        ..Config::default()
    }
    .limits()
    .max_buffer_bytes();
    let baseline = daemon.rss_bytes();

    let line: &[u8] = b"a line a stalled reader gets back only once it reads again, padded to about 100 bytes\r\n";
    let started = Instant::now();
    let mut stalled: Vec<(TcpStream, Pushed)> = (0..STALLED)
        .map(|_| {
            let mut client = connect_small_buffers(addr);
            let pushed = push_until_paused(&mut daemon, &mut client, line);
            (client, pushed)
        })
        .collect();
    let stalling = started.elapsed();

    // Every client is paused, yet a new one is served at once.
    let mut other = connect(addr);
    assert_echoes(&mut other, b"unaffected\r\n");

    let grown = daemon.rss_bytes().saturating_sub(baseline);
    let bound = max_connections * per_connection + CONSTANT_OVERHEAD_BYTES;
    let pushed: usize = stalled.iter().map(|(_, pushed)| pushed.sent.len()).sum();
    eprintln!(
        "{STALLED} stalled readers ({} MiB pushed in {stalling:.1?}): RSS grew by {:.1} MiB \
         ({} bytes per reader); bound {:.1} MiB ({max_connections} x {per_connection} + {} MiB)",
        pushed >> 20,
        grown as f64 / (1 << 20) as f64,
        grown / STALLED,
        bound as f64 / (1 << 20) as f64,
        CONSTANT_OVERHEAD_BYTES >> 20,
    );
    assert!(
        grown <= bound,
        "RSS grew by {grown} bytes with {STALLED} stalled readers; bound is {bound}"
    );

    // The readers wake up: each gets back exactly the complete lines it sent.
    for (client, Pushed { sent, unfinished }) in &mut stalled {
        let mut writer = client.try_clone().expect("clone the client socket");
        let rest = unfinished.clone();
        let finisher = thread::spawn(move || {
            writer.write_all(&rest).expect("finish the last line");
            writer.shutdown(Shutdown::Write).expect("half-close");
        });
        let echoed = read_to_eof(client);
        finisher.join().expect("the finisher does not panic");
        sent.extend_from_slice(unfinished);
        assert!(
            echoed == *sent,
            "{} bytes came back of {} sent: the echo differs after the stall",
            echoed.len(),
            sent.len()
        );
    }
    drop((daemon, other));
}

#[test]
fn descriptor_exhaustion_costs_little_cpu_and_recovers_within_a_second() {
    const CLIENTS: usize = 200;
    /// Long enough that the CPU clock (10 ms ticks) measures well under 1%.
    const WINDOW: Duration = Duration::from_secs(2);
    raise_open_file_limit();
    let exhausted = Exhausted::start(CLIENTS);
    let served = exhausted.served();
    let Exhausted {
        mut daemon,
        lines,
        mut clients,
        accepted,
    } = exhausted;
    for (i, client) in clients.iter_mut().enumerate() {
        if accepted[i] {
            let client = client.as_mut().expect("every client is open");
            let mut echo = vec![0; lines[i].len()];
            client
                .read_exact(&mut echo)
                .expect("accepted clients are served");
        }
    }

    // Exhausted, with clients waiting in the backlog: echod retries accept
    // every 100 ms and otherwise sleeps.
    let cpu_before = daemon.cpu_time();
    let window_started = Instant::now();
    thread::sleep(WINDOW); // The measurement window, not a wait for an event.
    let cpu = daemon.cpu_time() - cpu_before;
    let share = cpu.as_secs_f64() / window_started.elapsed().as_secs_f64();

    // Recovery: free the accepted clients' descriptors; the first waiting
    // client is accepted and its queued line echoed. Then each waiting
    // client, once served, leaves, making room for the next.
    let freed = Instant::now();
    for (i, client) in clients.iter_mut().enumerate() {
        if accepted[i] {
            *client = None;
        }
    }
    let mut first_recovery = None;
    for (i, client) in clients.iter_mut().enumerate() {
        if accepted[i] {
            continue;
        }
        let mut waiting = client.take().expect("waiting clients are open");
        let mut echo = vec![0; lines[i].len()];
        waiting
            .read_exact(&mut echo)
            .unwrap_or_else(|err| panic!("waiting client {i} never served: {err}"));
        assert_eq!(echo, lines[i].as_bytes());
        first_recovery.get_or_insert(freed.elapsed());
    }
    let all_served = freed.elapsed();
    let first_recovery = first_recovery.expect("some clients waited");
    eprintln!(
        "descriptor exhaustion (RLIMIT_NOFILE 64, {CLIENTS} clients, {served} served at first): \
         {:.2}% of a core over {:.1?} ({cpu:?} CPU); first waiting client served {first_recovery:.1?} \
         after descriptors freed, all {} waiting clients in {all_served:.1?}",
        share * 100.0,
        window_started.elapsed(),
        CLIENTS - served,
    );
    // A spinning accept loop would use a whole core.
    assert!(
        share < 0.25,
        "{:.1}% of a core while exhausted",
        share * 100.0
    );
    assert!(
        first_recovery < Duration::from_secs(1),
        "first waiting client served {first_recovery:?} after descriptors freed"
    );

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn ten_thousand_resets_and_probes_leave_no_descriptor_or_memory_behind() {
    const CYCLES: usize = 10_000;
    /// Cycles of each kind run first, so that the buffer pool, the slab and
    /// the allocator reach their working size before the baseline is taken.
    const WARM_UP: usize = 1_000;
    let (mut daemon, addr) = Daemon::start(&[]);
    // Logged once every descriptor echod keeps for itself is open (the
    // signal pipe is made after the listeners).
    daemon.wait_for_log(" max-connections ");
    let descriptors = daemon.open_descriptors();

    let run = |cycles: usize| {
        let resets = thread::spawn(move || {
            for _ in 0..cycles {
                let mut client = connect(addr);
                // A line and a half: echod holds an echo and a partial line
                // when the reset arrives, or has not read them yet.
                client
                    .write_all(b"a complete line\r\nand half of the ne")
                    .expect("write before the reset");
                socket2::SockRef::from(&client)
                    .set_linger(Some(Duration::ZERO))
                    .expect("SO_LINGER 0: close sends RST");
            }
        });
        // A health check: connect, then close without a word.
        let probes = thread::spawn(move || {
            for _ in 0..cycles {
                drop(connect(addr));
            }
        });
        resets.join().expect("the resetting client does not panic");
        probes.join().expect("the probing client does not panic");
    };

    run(WARM_UP);
    daemon.wait_for_descriptors_at_most(descriptors);
    let rss_warm = daemon.rss_bytes();
    let started = Instant::now();
    run(CYCLES);
    let elapsed = started.elapsed();
    let after = daemon.wait_for_descriptors_at_most(descriptors);
    let rss_after = daemon.rss_bytes();
    eprintln!(
        "{CYCLES} resets + {CYCLES} probes in {elapsed:.1?}: descriptors {descriptors} before, \
         {after} after; RSS {} KiB after warm-up, {} KiB after",
        rss_warm >> 10,
        rss_after >> 10,
    );
    // Even 64 bytes kept per connection would add 1.25 MiB.
    assert!(
        rss_after <= rss_warm + (512 << 10),
        "RSS grew from {rss_warm} to {rss_after} bytes over {} connections",
        2 * CYCLES
    );

    // And echod still serves.
    let mut client = connect(addr);
    assert_echoes(&mut client, b"still serving\r\n");
}

#[test]
fn sigterm_under_load_delivers_every_owed_echo_and_exits_0() {
    const BUSY: usize = 16;
    const STALLED: usize = 8;
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    // At trace, so that a stalled client can see that it was paused.
    let (mut daemon, addr) = Daemon::start(&[
        "--log-level",
        "trace",
        "--max-pending-bytes",
        "256K",
        "--shutdown-timeout",
        &SHUTDOWN_TIMEOUT.as_secs().to_string(),
    ]);

    // Stalled readers: echod owes each of them at least 256 KiB.
    let line: &[u8] = b"owed to a client that is not reading\r\n";
    let stalled: Vec<(TcpStream, Vec<u8>)> = (0..STALLED)
        .map(|_| {
            let mut client = connect_small_buffers(addr);
            let pushed = push_until_paused(&mut daemon, &mut client, line);
            (client, pushed.sent)
        })
        .collect();

    // Busy clients send and read at full speed, each on two threads.
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<BusyClient> = (0..BUSY)
        .map(|i| BusyClient::start(addr, i, Arc::clone(&stop)))
        .collect();
    // Under way once every busy client has had a megabyte back.
    let deadline = Instant::now() + DEADLINE;
    for client in &busy {
        client.wait_for_received(1 << 20, deadline);
    }

    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);
    let mut received_bytes = 0;
    let mut received_lines = 0;
    for (mut client, sent) in stalled {
        let echoed = read_to_eof(&mut client);
        check_prefix_of_complete_lines(&echoed, &sent);
        received_bytes += echoed.len();
        received_lines += count_lines(&echoed);
    }
    for client in busy {
        let (sent, echoed) = client.finish();
        check_prefix_of_complete_lines(&echoed, &sent);
        received_bytes += echoed.len();
        received_lines += count_lines(&echoed);
    }
    stop.store(true, Ordering::Relaxed);
    let status = daemon.wait_exit();
    let elapsed = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        elapsed < SHUTDOWN_TIMEOUT,
        "took {elapsed:?} from SIGTERM to exit"
    );

    // Every line echod read was echoed and arrived: its counts are the
    // clients' counts.
    let stopped = daemon.wait_for_log("stopped:");
    eprintln!(
        "SIGTERM with {BUSY} busy and {STALLED} stalled clients: exited 0 after {elapsed:.1?}, \
         {received_lines} lines and {received_bytes} bytes delivered"
    );
    assert!(
        stopped.contains(&format!(
            " {received_lines} lines received, {received_bytes} bytes echoed"
        )),
        "the clients received {received_lines} lines, {received_bytes} bytes; echod says: {stopped}"
    );
    // Both records of a cut at exit: the `stopped:` summary's count of
    // closes by reason, and the connection's own close line.
    assert!(
        stopped.contains(", 0 shutdown timeout,"),
        "a connection was cut at the shutdown timeout: {stopped}"
    );
    let log = daemon.full_log();
    assert!(
        !log.iter()
            .any(|line| line.contains("closed (shutdown timeout)")),
        "a connection was cut at the shutdown timeout"
    );
}

/// A client that writes distinct lines and reads its echoes at full speed,
/// on two threads, until echod ends the connection.
struct BusyClient {
    received: Arc<std::sync::atomic::AtomicUsize>,
    writer: thread::JoinHandle<Vec<u8>>,
    reader: thread::JoinHandle<Vec<u8>>,
}

impl BusyClient {
    fn start(addr: SocketAddr, id: usize, stop: Arc<AtomicBool>) -> BusyClient {
        let stream = connect(addr);
        let mut writing = stream.try_clone().expect("clone the client socket");
        // Short, so that the writer notices the end promptly; a timeout
        // here only means echod is not reading just now.
        writing
            .set_write_timeout(Some(Duration::from_millis(100)))
            .expect("set write timeout");
        let done = Arc::new(AtomicBool::new(false));
        let writer_done = Arc::clone(&done);
        let writer = thread::spawn(move || {
            let mut sent = Vec::new();
            let mut n = 0u64;
            let mut chunk = Vec::new();
            'writing: while !writer_done.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                chunk.clear();
                for _ in 0..64 {
                    n += 1;
                    write!(
                        chunk,
                        "client {id} line {n} {}\r\n",
                        "x".repeat(n as usize % 80)
                    )
                    .expect("format a line");
                }
                let mut written = 0;
                while written < chunk.len() {
                    if writer_done.load(Ordering::Relaxed) {
                        break 'writing;
                    }
                    match writing.write(&chunk[written..]) {
                        Ok(n) => {
                            sent.extend_from_slice(&chunk[written..written + n]);
                            written += n;
                        }
                        Err(err)
                            if matches!(
                                err.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        // echod closed the connection after its shutdown.
                        Err(_) => break 'writing,
                    }
                }
            }
            sent
        });
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        let mut reading = stream;
        let reader = thread::spawn(move || {
            let mut echoed = Vec::new();
            let mut chunk = vec![0; 64 * 1024];
            loop {
                match reading.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        echoed.extend_from_slice(&chunk[..n]);
                        counter.store(echoed.len(), Ordering::Relaxed);
                    }
                    Err(err) if err.kind() == ErrorKind::Interrupted => {}
                    Err(err) => panic!("reading echoes failed after {} bytes: {err}", echoed.len()),
                }
            }
            done.store(true, Ordering::Relaxed);
            echoed
        });
        BusyClient {
            received,
            writer,
            reader,
        }
    }

    /// Waits until at least `bytes` of echoes have arrived.
    #[track_caller]
    fn wait_for_received(&self, bytes: usize, deadline: Instant) {
        while self.received.load(Ordering::Relaxed) < bytes {
            assert!(
                Instant::now() < deadline,
                "only {} bytes echoed to a busy client",
                self.received.load(Ordering::Relaxed)
            );
            thread::sleep(Duration::from_millis(5)); // Polls a counter.
        }
    }

    /// Waits for echod to end the connection; returns what was sent and
    /// what came back.
    fn finish(self) -> (Vec<u8>, Vec<u8>) {
        let echoed = self.reader.join().expect("the reader does not panic");
        let sent = self.writer.join().expect("the writer does not panic");
        (sent, echoed)
    }
}

#[track_caller]
fn check_prefix_of_complete_lines(echoed: &[u8], sent: &[u8]) {
    assert!(
        sent.starts_with(echoed),
        "the echo ({} bytes) is not a prefix of what was sent ({} bytes)",
        echoed.len(),
        sent.len()
    );
    assert!(
        echoed.is_empty() || echoed.ends_with(b"\r\n"),
        "a partial line was echoed"
    );
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.windows(2).filter(|pair| pair == b"\r\n").count()
}

#[test]
fn a_stalled_log_reader_never_stops_the_server() {
    const CONNECTIONS: usize = 6_000;
    // At trace, each short connection logs three lines: 18,000 in all, more
    // than the pipe (64 KiB) and the relay's queue (16,384 lines) hold.
    let mut command = Daemon::command(&["-l", "127.0.0.1:0", "--log-level", "trace"]);
    let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::StallAfterListening);
    let addr = daemon.listening_addr();

    let started = Instant::now();
    let workers: Vec<_> = (0..3)
        .map(|worker| {
            thread::spawn(move || {
                for i in 0..CONNECTIONS / 3 {
                    let mut client = connect(addr);
                    assert_echoes(
                        &mut client,
                        format!("worker {worker} client {i}\r\n").as_bytes(),
                    );
                    client.shutdown(Shutdown::Write).expect("half-close");
                    assert_eq!(read_to_eof(&mut client), b"");
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .expect("every client is served while the log stalls");
    }
    eprintln!(
        "{CONNECTIONS} connections served in {:.1?} while nobody read standard output",
        started.elapsed()
    );

    // The reader comes back: the log resumes, saying how much it dropped.
    daemon.resume_stdout();
    daemon.wait_for_log("log lines dropped: standard output was not keeping up");
    let mut client = connect(addr);
    assert_echoes(&mut client, b"after the stall\r\n");
    drop(client);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn sigpipe_never_stops_the_server() {
    // echod must not depend on the disposition it inherits: start it with
    // SIGPIPE at its default action (terminate), then make it write to a
    // log pipe nobody reads and to sockets whose peers reset.
    let mut command = Daemon::command(&["-l", "127.0.0.1:0", "--max-pending-bytes", "64K"]);
    // SAFETY: runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; signal(2) is one and allocates
    // nothing.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::CloseAfterListening);
    let addr = daemon.listening_addr();

    let line: &[u8] = b"echoed to a client that resets before it reads\r\n";
    for _ in 0..20 {
        let mut client = connect_with_receive_buffer(addr, 64 * 1024);
        push_until_blocked(&mut client, line, 16 << 20);
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0: close sends RST");
    }
    for i in 0..50 {
        let mut client = connect(addr);
        assert_echoes(&mut client, format!("client {i}\r\n").as_bytes());
    }
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert_eq!(status.signal(), None, "killed by a signal: {status:?}");
    assert_eq!(status.code(), Some(0), "stderr: {}", daemon.stderr());
}

#[test]
fn memory_of_a_burst_of_stalled_readers_goes_back_to_the_system() {
    const READERS: usize = 40;
    // 256 KiB owed to each reader: buffers of up to 336 KiB, well past the
    // 128 KiB above which glibc maps an allocation on its own.
    let (mut daemon, addr) =
        Daemon::start(&["--max-pending-bytes", "256K", "--log-level", "trace"]);
    daemon.wait_for_log(" max-connections ");
    let descriptors = daemon.open_descriptors();
    let baseline = daemon.rss_bytes();
    let line: &[u8] = b"part of a burst that echod holds for a while and then lets go\r\n";
    let stall = |daemon: &mut Daemon, n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut client = connect_small_buffers(addr);
                push_until_paused(daemon, &mut client, line);
                client
            })
            .collect()
    };

    // The first burst comes and goes. Freeing its buffers is what would
    // make glibc raise its threshold and serve the next burst's buffers
    // from the heap instead.
    drop(stall(&mut daemon, READERS));
    daemon.wait_for_descriptors_at_most(descriptors);
    let after_first = daemon.rss_bytes();

    // The second burst goes too, but for one reader that stays, stalled,
    // with its buffer above the others' in the heap, so that they could
    // not be handed back by trimming the heap's top.
    let burst = stall(&mut daemon, READERS);
    let holdout = stall(&mut daemon, 1);
    let peak = daemon.rss_bytes();
    drop(burst);
    daemon.wait_for_descriptors_at_most(descriptors + 1);
    let after_second = daemon.rss_bytes();
    eprintln!(
        "bursts of {READERS} stalled readers: RSS {} KiB before, {} KiB after the first; \
         {} KiB at the second's peak, {} KiB after it with one reader left",
        baseline >> 10,
        after_first >> 10,
        peak >> 10,
        after_second >> 10,
    );
    // One reader's buffer, the pool's spare buffers and some slack.
    let allowed = baseline + (2 << 20);
    assert!(
        after_first <= allowed && after_second <= allowed,
        "RSS {after_first} after one burst and {after_second} after another, {baseline} before: \
         the bursts' buffers did not go back to the system"
    );
    drop(holdout);
}
