//! The `echod` binary: parse the command line, start logging, run the server,
//! and turn the outcome into an exit status (listed in `--help`).

use std::io::{self, Write};
use std::process::ExitCode;

use echod::cli::{self, Command};
use echod::control::Wiring;
use echod::workers::{self, RunError};
use echod::{logging, probe, systemd, upgrade};

/// Exit status of `echod probe` when the echo did not come back.
const EXIT_PROBE_FAILED: u8 = 1;
/// Exit status of a stop that cut connections off: a second shutdown
/// signal with connections still open, or `--shutdown-timeout` expiring
/// with echoes still owed. Not 0, so that a supervisor can tell it from a
/// stop in which every client got what it was owed; not one of the failure
/// statuses either, since echod did what it was told.
const EXIT_CUT_OFF: u8 = 3;
/// Exit status for a command line that cannot be run (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit status when the event loop fails while running (EX_SOFTWARE).
const EXIT_LOOP_FAILED: u8 = 70;
/// Exit status when a listener or the event loop cannot be set up (EX_OSERR).
const EXIT_CANNOT_START: u8 = 71;

/// Writes one line to standard error. `eprintln!` panics when standard
/// error is closed, which would turn the documented exit status into 101;
/// a message nobody can read is dropped instead.
fn complain(message: std::fmt::Arguments) {
    let _ = writeln!(io::stderr(), "{message}");
}

fn main() -> ExitCode {
    // First, while this is the only thread: see the function's docs.
    echod::allocator::return_large_buffers_to_the_system();
    // Resolved now, while it still names the file this process runs: an
    // upgrade (SIGUSR2) runs the file at this path as it is then.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(err) = upgrade::remember_program(args.iter().skip(1).cloned().collect()) {
        complain(format_args!(
            "echod: warning: cannot resolve the program's path, so SIGUSR2 cannot upgrade: {err}"
        ));
    }
    let (config, listen_given, warnings) = match cli::parse_args_with_env(args, std::env::vars_os())
    {
        Ok(Command::Run {
            config,
            listen_given,
            warnings,
        }) => (*config, listen_given, warnings),
        // Written with `write!` rather than `print!`, which panics if standard
        // output is closed (`echod --help | true`): there is nothing to do
        // about a reader that left.
        Ok(Command::Help(text)) => {
            let _ = write!(io::stdout(), "{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Probe(args)) => {
            return match probe::probe(&args) {
                Ok(success) => {
                    let _ = writeln!(io::stdout(), "{success}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    complain(format_args!("echod probe: {err}"));
                    ExitCode::from(EXIT_PROBE_FAILED)
                }
            };
        }
        Ok(Command::Version) => {
            // The second line is what an upgrade checks (`upgrade::check`).
            let _ = writeln!(
                io::stdout(),
                "echod {}\n{}{}",
                env!("CARGO_PKG_VERSION"),
                upgrade::FORMAT_LINE_PREFIX,
                echod::handover::FORMAT_VERSION
            );
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            complain(format_args!(
                "echod: {err}\nTry 'echod --help' for more information."
            ));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Before anything else opens a descriptor: the numbers the program
    // before this one (an upgrade in place) or systemd passed must still be
    // the sockets they passed (see `upgrade` and `systemd`). A handover
    // holds every socket, systemd's included.
    let handover = match upgrade::inherited() {
        Ok(handover) => handover,
        Err(err) => {
            complain(format_args!(
                "echod: cannot take over from the program before: {err}"
            ));
            return ExitCode::from(EXIT_CANNOT_START);
        }
    };
    let inherited = match handover {
        Some(_) => None,
        None => match systemd::inherited_listeners() {
            Ok(inherited) => inherited,
            Err(err) => {
                complain(format_args!(
                    "echod: cannot use the sockets passed by systemd: {err}"
                ));
                return ExitCode::from(EXIT_CANNOT_START);
            }
        },
    };
    if inherited.is_some() && listen_given {
        complain(format_args!(
            "echod: --listen and --port (or ECHOD_LISTEN and ECHOD_PORT) cannot be combined \
             with socket activation: echod serves the sockets systemd passed (LISTEN_FDS)"
        ));
        return ExitCode::from(EXIT_USAGE);
    }
    if let Err(err) = logging::init(config.log_level) {
        complain(format_args!("echod: cannot set up logging: {err}"));
        return ExitCode::from(EXIT_CANNOT_START);
    }
    for warning in warnings {
        log::warn!("{warning}");
    }
    // More descriptors, more clients: the soft limit is often 1024 while the
    // hard limit allows far more. Failing to raise it is not fatal.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        log::warn!("cannot raise the open-file limit: {err}");
    }
    // The daemon's loop takes the process's signals and talks to systemd;
    // a server embedded elsewhere does neither.
    let code = match workers::run_from(config, inherited, handover, Wiring::DAEMON) {
        Ok(summary) if summary.cut_off() > 0 => {
            log::warn!(
                "exit status {EXIT_CUT_OFF}: the stop cut off {}",
                echod::summary::counted(summary.cut_off(), "connection")
            );
            ExitCode::from(EXIT_CUT_OFF)
        }
        Ok(_summary) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err}");
            complain(format_args!("echod: {err}"));
            ExitCode::from(match err {
                RunError::Start(_) => EXIT_CANNOT_START,
                RunError::Loop(_) => EXIT_LOOP_FAILED,
            })
        }
    };
    // Let the relay write what is queued (the final summary) before exit.
    log::logger().flush();
    code
}
