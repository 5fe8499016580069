//! Memory stays bounded by configuration, whatever clients do: measured as the
//! resident set of a real echod process.

mod process;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;

use process::{Daemon, connect_with_receive_buffer, push_until_blocked};

/// Receive buffer of the stalled clients: large enough that a client's
/// receive buffer never drops what echod sends it.
const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

fn connect(addr: SocketAddr) -> TcpStream {
    connect_with_receive_buffer(addr, RECEIVE_BUFFER_BYTES)
}

/// Pausing keeps a stalled reader's buffer under `max-pending-bytes`; the
/// buffer's hard cap (`Limits::max_buffer_bytes`) would bound it even if the
/// pause failed. This test checks the bound, whichever holds it, and that
/// nothing is lost (the pause itself is shown by `tests/limits.rs` and the
/// property test).
#[test]
fn stalled_readers_cost_at_most_their_configured_bound_and_lose_nothing() {
    // Per connection: 64 KiB owed + 4 KiB line + one 16 KiB read.
    let per_connection_bound = 64 * 1024 + 4 * 1024 + 16 * 1024;
    let (daemon, addr) = Daemon::start(&["--max-pending-bytes", "64K", "--max-line-bytes", "4K"]);
    let baseline = daemon.rss_bytes();

    let line: &'static [u8] = b"a stalled reader's line, echoed only when it reads again\r\n";
    let cap = 64 << 20;
    let mut stalled: Vec<(TcpStream, Vec<u8>)> = (0..20)
        .map(|_| {
            let mut client = connect(addr);
            let sent = push_until_blocked(&mut client, line, cap);
            (client, sent)
        })
        .collect();
    for (_, sent) in &stalled {
        assert!(
            sent.len() < cap,
            "a client pushed {cap} bytes: echod never stopped reading"
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
    for (client, sent) in &mut stalled {
        let rest_of_line = &line[sent.len() % line.len()..];
        let mut writer = client.try_clone().expect("clone");
        let rest = rest_of_line.to_vec();
        let finisher = thread::spawn(move || {
            writer.write_all(&rest).expect("finish the last line");
            writer.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut echoed = Vec::new();
        if let Err(err) = client.read_to_end(&mut echoed) {
            panic!(
                "read echoes to EOF: {err} after {} of {} bytes",
                echoed.len(),
                sent.len() + rest_of_line.len()
            );
        }
        finisher.join().expect("finisher");
        sent.extend_from_slice(rest_of_line);
        assert!(
            echoed == *sent,
            "echo of {} bytes differs after the stall",
            sent.len()
        );
    }
}
