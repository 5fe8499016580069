//! echod under systemd's two protocols, without systemd as PID 1:
//! socket activation through `systemd-socket-activate` (which binds, then
//! execs echod in its own process with `LISTEN_FDS` set), and `sd_notify`
//! through a `NOTIFY_SOCKET` the test binds itself. The shipped unit files
//! are checked with `systemd-analyze verify`.
//!
//! The systemd tools come with Debian's `systemd` package, which `.ci/run`
//! installs. Where a tool is missing, the tests that need it are ignored,
//! with the reason, as `cargo test` lists them (the root `build.rs` looks
//! for the tools and sets `no_systemd_socket_activate` or
//! `no_systemd_analyze`); under `CI=true` they run anyway, and fail.

mod common;
mod process;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{DEADLINE, assert_echoes, connect, read_to_eof};
use process::{Daemon, StdoutReader};

/// Exit status for a bad command line.
const EXIT_USAGE: i32 = 64;

/// The path of `tool` on `PATH`. A test calls it only where `build.rs`
/// found the tool (or under `CI=true`), so its absence fails the test.
#[track_caller]
fn tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file());
    match found {
        Some(path) => path,
        None => panic!(
            "`{tool}` is not on PATH (Debian package `systemd`; .ci/run installs it); \
             if it was installed since the last build, `touch build.rs`"
        ),
    }
}

/// A loopback address with a port that was free a moment ago. The tools
/// below cannot bind port 0 and report the port, so a port is picked by
/// binding port 0 and closing it; the kernel hands out ephemeral ports in
/// pseudo-random order, so it is not handed out again at once.
fn free_loopback_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    listener.local_addr().expect("listener address")
}

/// `systemd-socket-activate` listening on `addresses`, set to exec echod
/// with `args` on the first connection. Its standard error is merged into
/// standard output (through `sh`, which execs it in place, so the pid the
/// test signals is echod's), so the test can wait for its "Listening on"
/// lines.
fn socket_activate(tool: &Path, addresses: &[SocketAddr], args: &[&str]) -> Daemon {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"exec "$@" 2>&1"#)
        .arg("sh")
        .arg(tool);
    for address in addresses {
        command.arg("-l").arg(address.to_string());
    }
    command
        .arg(env!("CARGO_BIN_EXE_echod"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::Follow);
    for address in addresses {
        daemon.wait_for_log(&format!("Listening on {address} as "));
    }
    daemon
}

#[test]
#[cfg_attr(
    no_systemd_socket_activate,
    ignore = "systemd-socket-activate is not on PATH (Debian package systemd)"
)]
fn socket_activation_serves_the_inherited_sockets() {
    let tool = tool("systemd-socket-activate");
    let addresses = [free_loopback_address(), free_loopback_address()];
    let mut daemon = socket_activate(&tool, &addresses, &["--log-level", "debug"]);

    // The first connection makes the tool exec echod; it waits in the
    // inherited socket's backlog meanwhile and is served once echod runs.
    let mut first = connect(addresses[0]);
    assert_echoes(&mut first, b"through an inherited socket\r\n");
    daemon.wait_for_log("socket activation: serving 2 listening sockets passed by systemd");
    // echod reports the inherited addresses as its own, and binds nothing.
    for address in addresses {
        daemon.wait_for_log(&format!("listening on {address}"));
    }
    let mut second = connect(addresses[1]);
    assert_echoes(&mut second, b"and the second one\r\n");

    daemon.signal(libc::SIGTERM);
    assert_eq!(read_to_eof(&mut first), b"");
    assert_eq!(read_to_eof(&mut second), b"");
    drop((first, second));
    assert_eq!(daemon.wait_exit().code(), Some(0));
    daemon.wait_for_log("stopped: 2 connections served");
}

#[test]
#[cfg_attr(
    no_systemd_socket_activate,
    ignore = "systemd-socket-activate is not on PATH (Debian package systemd)"
)]
fn socket_activation_with_workers_serves_from_every_duplicate() {
    let tool = tool("systemd-socket-activate");
    const CLIENTS: usize = 50;
    let address = free_loopback_address();
    let mut daemon = socket_activate(&tool, &[address], &["--workers", "2"]);
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| connect(address)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_echoes(client, format!("client {i}\r\n").as_bytes());
    }
    // Both workers poll a duplicate of the one inherited socket.
    daemon.wait_for_log(&format!("worker 1: listening on {address}"));
    daemon.wait_for_log(&format!("worker 2: listening on {address}"));
    daemon.signal(libc::SIGTERM);
    for client in clients.iter_mut() {
        assert_eq!(read_to_eof(client), b"");
    }
    drop(clients);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    daemon.wait_for_log(&format!(
        "all 2 workers stopped: {CLIENTS} connections served"
    ));
}

#[test]
#[cfg_attr(
    no_systemd_socket_activate,
    ignore = "systemd-socket-activate is not on PATH (Debian package systemd)"
)]
fn socket_activation_refuses_listen_options() {
    let tool = tool("systemd-socket-activate");
    let address = free_loopback_address();
    let mut daemon = socket_activate(&tool, &[address], &["--port", "0"]);
    // Only a connection makes the tool exec echod, which then refuses to
    // run; the connection is closed with the process.
    let mut client = connect(address);
    let _ = std::io::Read::read(&mut client, &mut [0; 1]);
    assert_eq!(daemon.wait_exit().code(), Some(EXIT_USAGE));
    daemon.wait_for_log(
        "echod: --listen and --port (or ECHOD_LISTEN and ECHOD_PORT) cannot be combined with socket activation",
    );
}

#[test]
#[cfg_attr(
    no_systemd_socket_activate,
    ignore = "systemd-socket-activate is not on PATH (Debian package systemd)"
)]
fn an_upgrade_keeps_the_inherited_socket_and_its_connections() {
    let tool = tool("systemd-socket-activate");
    let address = free_loopback_address();
    let mut daemon = socket_activate(&tool, &[address], &[]);

    // Activates echod, then holds half a line across the upgrade.
    let mut held = connect(address);
    assert_echoes(&mut held, b"before\r\n");
    daemon.wait_for_log("socket activation: serving 1 listening socket passed by systemd");
    std::io::Write::write_all(&mut held, b"half a li").expect("write half a line");

    daemon.signal(libc::SIGUSR2);
    let reexec = daemon.wait_for_log("upgrading: re-executing ");
    assert!(
        reexec.contains("with 1 listening socket and 1 connection"),
        "{reexec}"
    );
    daemon.wait_for_log("took over 1 listening socket and 1 connection from the program before");

    // The same process serves on: the line completes as one, and the
    // socket systemd passed (not a new one) takes new clients.
    std::io::Write::write_all(&mut held, b"ne\r\n").expect("finish the line");
    common::assert_receives(&mut held, b"half a line\r\n", Instant::now() + DEADLINE);
    let mut after = connect(address);
    assert_echoes(&mut after, b"after the upgrade\r\n");

    daemon.signal(libc::SIGTERM);
    assert_eq!(read_to_eof(&mut held), b"");
    assert_eq!(read_to_eof(&mut after), b"");
    drop((held, after));
    assert_eq!(daemon.wait_exit().code(), Some(0));
    daemon.wait_for_log("stopped: 2 connections served");
}

#[test]
fn an_upgrade_notifies_reloading_then_ready() {
    let (dir, path, socket) = notify_socket("reload");

    let mut command = Daemon::command(&["-l", "127.0.0.1:0"]);
    command.env("NOTIFY_SOCKET", &path);
    let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::Follow);
    let addr = daemon.listening_addr();
    receive_until(&socket, "READY=1");

    daemon.signal(libc::SIGUSR2);
    // systemd's reload protocol: RELOADING=1 with the time it began, then
    // READY=1 from the new program once it serves.
    let reloading = receive_until(&socket, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let ready = receive_until(&socket, "READY=1");
    assert!(ready.contains("STATUS="), "{ready:?}");
    daemon.wait_for_log("took over 1 listening socket and 0 connections");
    let mut client = connect(addr);
    assert_echoes(&mut client, b"served by the new program\r\n");

    daemon.signal(libc::SIGTERM);
    receive_until(&socket, "STOPPING=1");
    assert_eq!(read_to_eof(&mut client), b"");
    drop(client);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn notifies_ready_status_and_stopping() {
    let (dir, path, socket) = notify_socket("ready");

    let mut command = Daemon::command(&["-l", "127.0.0.1:0"]);
    command.env("NOTIFY_SOCKET", &path);
    let mut daemon = Daemon::spawn_command(&mut command, StdoutReader::Follow);
    let addr = daemon.listening_addr();

    let ready = receive_until(&socket, "READY=1");
    assert!(
        ready.contains("STATUS=0 connections open, 0 served, 0 rejected"),
        "{ready:?}"
    );
    // Sent once a second while it changes.
    let mut client = connect(addr);
    assert_echoes(&mut client, b"counted\r\n");
    receive_until(&socket, "STATUS=1 connection open, 1 served, 0 rejected");

    daemon.signal(libc::SIGTERM);
    let stopping = receive_until(&socket, "STOPPING=1");
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    assert_eq!(read_to_eof(&mut client), b"");
    drop(client);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg_attr(
    no_systemd_analyze,
    ignore = "systemd-analyze is not on PATH (Debian package systemd)"
)]
fn shipped_units_pass_systemd_analyze_verify() {
    let tool = tool("systemd-analyze");
    // `verify` checks that ExecStart= names an executable, so the copies
    // point at the binary under test.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let dir = std::env::temp_dir().join(format!("echod-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let mut units = Vec::new();
    for name in ["echod.service", "echod.socket"] {
        let text = std::fs::read_to_string(source.join(name)).expect("read a shipped unit");
        let text = text.replace("/usr/bin/echod", env!("CARGO_BIN_EXE_echod"));
        assert!(
            name != "echod.service" || text.contains(env!("CARGO_BIN_EXE_echod")),
            "ExecStart= no longer names /usr/bin/echod"
        );
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a unit copy");
        units.push(path);
    }
    let output = Command::new(tool)
        .arg("verify")
        .args(&units)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "verify failed:\n{report}");
    // Unknown or misspelt keys are only warnings: none is allowed.
    let about_ours: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("echod."))
        .collect();
    assert!(about_ours.is_empty(), "verify warns:\n{report}");
}

/// A `NOTIFY_SOCKET` of the test's own, in a directory named after `name`
/// and the test process (removed by the test at the end), reads bounded by
/// `DEADLINE`.
fn notify_socket(name: &str) -> (PathBuf, PathBuf, UnixDatagram) {
    let dir = std::env::temp_dir().join(format!("echod-notify-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("set read timeout");
    (dir, path, socket)
}

/// Receives datagrams until one contains `needle`, and returns it.
#[track_caller]
fn receive_until(socket: &UnixDatagram, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut buffer = [0; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                if message.contains(needle) {
                    return message;
                }
                seen.push(message);
            }
            Err(err) => panic!("no notification containing {needle:?}: {err}; seen {seen:?}"),
        }
    }
    panic!("no notification containing {needle:?} within {DEADLINE:?}; seen {seen:?}")
}
