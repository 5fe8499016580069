//! Memory stays bounded by configuration, whatever clients do: measured as the
//! resident set of a real echod process.

mod common;
mod process;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use common::{MAX_BULK_BYTES, connect, connect_small_buffers};
use process::{Daemon, Pushed, push_until_paused};

/// Pausing keeps a stalled reader's buffer under `max-pending-bytes`; the
/// buffer's hard cap (`Limits::max_buffer_bytes`) would bound it even if the
/// pause failed. This test measures the resident set once every reader is
/// paused, that is once each one's buffer holds the most the pause lets it
/// (echod at trace logs each pause, which is how a client knows), and checks
/// that nothing is lost. That reading stops at all is shown by the pause
/// itself; `tests/limits.rs` also shows it by echod's own count.
#[test]
fn stalled_readers_cost_at_most_their_configured_bound_and_lose_nothing() {
    // Per connection: 64 KiB owed + 4 KiB line + one 16 KiB read.
    let per_connection_bound = 64 * 1024 + 4 * 1024 + 16 * 1024;
    let (mut daemon, addr) = Daemon::start(&[
        "--max-pending-bytes",
        "64K",
        "--max-line-bytes",
        "4K",
        "--log-level",
        "trace",
    ]);
    let baseline = daemon.rss_bytes();

    let line: &'static [u8] = b"a stalled reader's line, echoed only when it reads again\r\n";
    // Small fixed buffers: a reader is paused after a few hundred
    // kilobytes, and its receive buffer never drops what echod sends it.
    let mut stalled: Vec<(TcpStream, Pushed)> = (0..20)
        .map(|_| {
            let mut client = connect_small_buffers(addr);
            let pushed = push_until_paused(&mut daemon, &mut client, line);
            (client, pushed)
        })
        .collect();
    for (_, pushed) in &stalled {
        assert!(
            pushed.sent.len() < MAX_BULK_BYTES,
            "a client pushed {MAX_BULK_BYTES} bytes: echod never stopped reading"
        );
    }

    // Everyone else is still served at once.
    let mut other = connect(addr);
    other.write_all(b"unaffected\r\n").expect("write");
    let mut echo = [0; 12];
    other
        .read_exact(&mut echo)
        .expect("echo while others stall");
    assert_eq!(&echo, b"unaffected\r\n");

    let grown = daemon.rss_bytes().saturating_sub(baseline);
    let allowed = stalled.len() * per_connection_bound + (4 << 20);
    assert!(
        grown <= allowed,
        "RSS grew by {grown} bytes with {} stalled readers; bound is {allowed}",
        stalled.len()
    );

    // The readers wake up: each gets back exactly the complete lines it sent.
    for (client, Pushed { sent, unfinished }) in &mut stalled {
        let mut writer = client.try_clone().expect("clone");
        let rest = unfinished.clone();
        let finisher = thread::spawn(move || {
            writer.write_all(&rest).expect("finish the last line");
            writer.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut echoed = Vec::new();
        if let Err(err) = client.read_to_end(&mut echoed) {
            panic!(
                "read echoes to EOF: {err} after {} of {} bytes",
                echoed.len(),
                sent.len() + unfinished.len()
            );
        }
        finisher.join().expect("finisher");
        sent.extend_from_slice(unfinished);
        assert!(
            echoed == *sent,
            "echo of {} bytes differs after the stall",
            sent.len()
        );
    }
}
