//! `echo-chaos`: a bounded chaos soak of the real echod binary.
//!
//! It starts echod (or attacks one already running on a loopback address),
//! then for `--duration` seconds runs well-behaved clients, which check every
//! byte echoed and time every line, among abusive ones: slow readers,
//! clients that never read, partial lines held open, one byte per write,
//! resets mid-stream, half-closes with megabytes in flight, over-long lines,
//! bursts of connections far above `--max-connections`, and a period in
//! which echod has no descriptors left. Each second it prints echod's RSS,
//! open descriptors and CPU share on standard error. At the end it checks
//! that no well-behaved byte was lost or corrupted, that p99 latency stayed
//! under its bound, and that echod's descriptors and memory came back to
//! their baseline.
//!
//! ```console
//! $ cargo build --release --workspace
//! $ target/release/echo-chaos --duration 20 --conns 500
//! ```
//!
//! `echo-chaos attack KIND` runs one attack instead (memory-flood,
//! slowloris, slots, dead-peer), each bounded, each with pass criteria
//! from the targets of the issue "safe to expose with default flags"; see
//! `attack.rs`.
//!
//! Modules: `attack` (the attacks), `options` (the command line), `target` (echod and its `/proc`
//! figures), `client` (one connection's I/O and checks), `soak` (the event
//! loop and the schedule), `report` (status lines, summary, verdict). The
//! seeded generator and the `/proc` readings come from `echod-kit`.
//! `docs/RELIABILITY.md` records a run and what it shows.

mod attack;
mod client;
mod options;
mod report;
mod soak;
mod target;

use std::process::ExitCode;

use options::{Command, USAGE};
use soak::Soak;
use target::Target;

/// Exit statuses: a check failed, a bad command line, the run could not be
/// set up.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_SETUP: u8 = 3;

fn main() -> ExitCode {
    // `echo-chaos attack KIND ...` runs one attack (attack.rs); anything
    // else is the soak.
    let mut args = std::env::args_os();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "attack")
    {
        return attack::main(args.by_ref().skip(2));
    }
    let options = match options::parse_args(std::env::args_os()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("echo-chaos: {err}\nTry 'echo-chaos --help' for more information.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Every client is a descriptor: the well-behaved ones, the abusers, a
    // churn burst and the waiters, all at once.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("echo-chaos: cannot raise the open-file limit: {err}");
    }
    let mut target = match options.addr {
        Some(addr) => Target::attach(addr, options.pid),
        None => {
            let args = [
                "--max-connections".to_owned(),
                options.max_connections.to_string(),
                "--max-line-bytes".to_owned(),
                options.max_line_bytes.to_string(),
            ];
            match Target::spawn(&options.echod, &args) {
                Ok(target) => target,
                Err(err) => {
                    eprintln!("echo-chaos: cannot start echod: {err}");
                    return ExitCode::from(EXIT_SETUP);
                }
            }
        }
    };
    eprintln!(
        "echo-chaos: attacking echod at {} (pid {}) for {:.0}s, seed {}",
        target.addr,
        target.pid.map_or("unknown".into(), |pid| pid.to_string()),
        options.duration.as_secs_f64(),
        options.seed
    );
    let soak = match Soak::new(&options, &mut target) {
        Ok(soak) => soak,
        Err(err) => {
            eprintln!("echo-chaos: cannot set up the event loop: {err}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let (tally, rows, ends) = soak.run();
    let exit = target.stop().map(|status| match status {
        Ok(status) => status
            .code()
            .map_or_else(|| format!("{status}"), |code| code.to_string()),
        Err(err) => err.to_string(),
    });
    let failures = report::final_report(&options, &tally, &rows, &ends, exit.as_deref());
    if failures.is_empty() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        for failure in &failures {
            println!("FAIL: {failure}");
        }
        ExitCode::from(EXIT_FAILED)
    }
}
