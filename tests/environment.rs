//! Settings from the environment on the real binary: `ECHOD_<OPTION>`
//! variables fill in what the command line leaves out, the command line
//! wins, a bad value is a usage error naming the variable, and a variable
//! that names no option is warned about and ignored.

mod common;
mod process;

use common::{assert_closed_after, assert_echoes, connect};
use process::{Daemon, StdoutReader};

/// Exit status for a bad command line (see `--help`).
const EXIT_USAGE: i32 = 64;

fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let mut command = Daemon::command(args);
    command.envs(env.iter().copied());
    Daemon::spawn_command(&mut command, StdoutReader::Follow)
}

#[test]
fn options_come_from_the_environment() {
    let mut daemon = spawn_with_env(
        &[],
        &[
            ("ECHOD_LISTEN", "127.0.0.1:0"),
            ("ECHOD_MAX_LINE_BYTES", "16"),
            ("ECHOD_READ_BUDGET", "32KiB"),
            ("ECHOD_STATS_INTERVAL", "0.2"),
        ],
    );
    let addr = daemon.listening_addr();
    let limits = daemon.wait_for_log("max-line-bytes ");
    assert!(limits.contains("max-line-bytes 16,"), "{limits}");
    assert!(limits.ends_with("read-budget 32768"), "{limits}");
    let mut client = connect(addr);
    assert_echoes(&mut client, b"fits in 16\r\n");
    // Longer than ECHOD_MAX_LINE_BYTES: closed, as --max-line-bytes 16 would.
    std::io::Write::write_all(&mut client, b"this line is far too long\r\n").expect("write");
    assert_closed_after(&mut client, b"");
    // ECHOD_STATS_INTERVAL turned the stats line on.
    daemon.wait_for_log("stats: ");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn the_command_line_wins_over_the_environment() {
    let mut daemon = spawn_with_env(
        &["-l", "127.0.0.1:0", "--max-line-bytes", "64"],
        &[("ECHOD_MAX_LINE_BYTES", "16"), ("ECHOD_PORT", "1")],
    );
    let addr = daemon.listening_addr();
    let limits = daemon.wait_for_log("max-line-bytes ");
    assert!(limits.contains("max-line-bytes 64,"), "{limits}");
    let mut client = connect(addr);
    assert_echoes(&mut client, b"longer than sixteen bytes, within 64\r\n");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn a_bad_value_exits_64_naming_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "ECHOD_MAX_LINE_BYTES",
            "12Q",
            "ECHOD_MAX_LINE_BYTES: invalid --max-line-bytes '12Q'",
        ),
        ("ECHOD_WORKERS", "0", "ECHOD_WORKERS: invalid --workers '0'"),
        ("ECHOD_QUIET", "perhaps", "invalid ECHOD_QUIET 'perhaps'"),
        (
            "ECHOD_ALLOW",
            "10.0.0.0/33",
            "ECHOD_ALLOW: invalid --allow '10.0.0.0/33'",
        ),
    ];
    for &(name, value, problem) in cases {
        let mut daemon = spawn_with_env(&["-l", "127.0.0.1:0"], &[(name, value)]);
        let status = daemon.wait_exit();
        let stderr = daemon.stderr().to_owned();
        assert_eq!(status.code(), Some(EXIT_USAGE), "{name}={value}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("echod: ") && first.contains(problem),
            "{name}={value}: first line of stderr is {first:?}, want {problem:?}"
        );
    }
}

#[test]
fn an_unknown_variable_is_warned_about_and_ignored() {
    let mut daemon = spawn_with_env(&["-l", "127.0.0.1:0"], &[("ECHOD_MAX_LINE_BYTE", "16")]);
    let warning = daemon.wait_for_log("ECHOD_MAX_LINE_BYTE is set but is not an option of echod");
    assert!(warning.contains("WARN"), "{warning}");
    let addr = daemon.listening_addr();
    let mut client = connect(addr);
    assert_echoes(
        &mut client,
        b"the default limit still holds for this line\r\n",
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}
