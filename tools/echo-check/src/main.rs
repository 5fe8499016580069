//! `echo-check HOST:PORT`: runs the named checks against a line echo
//! server and exits 0 if none failed, 1 if any did, 2 if the target
//! cannot be reached at all, 64 for a usage error.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use echo_check::{CHECKS, Framing, Options, checks, client, report};
use echod_kit::args::{UsageError, positive, string};

const USAGE: &str = "\
Usage: echo-check [OPTIONS] HOST:PORT

Runs named conformance and robustness checks against the line echo server
at HOST:PORT, which it did not start and knows nothing about, and prints
per check its verdict (pass, fail or skip), one line of evidence, and what
a pass proves. The whole run takes well under a minute.

Options:
      --framing MODE        crlf: lines end at CR LF, a bare LF is data;
                            lf: lines end at LF [default: crlf]
      --max-line-bytes N    The server's longest line, terminator included;
                            long-line checks it. Without it long-line is
                            skipped: a limit cannot be guessed
      --only ID,...         Run these checks only
      --json                Print one JSON object instead of the table
      --allow-remote        Allow a target that is not a loopback address
      --list                Print the check ids and what each proves
  -h, --help                Print this help and exit

Exit status: 0 if no check failed (a skipped check is not a failure), 1 if
any check failed, 2 if HOST:PORT cannot be reached at all, 64 for a usage
error.
";

/// What the command line asks for.
struct Command {
    options: Options,
    json: bool,
}

fn main() -> ExitCode {
    let command = match parse() {
        Ok(Some(command)) => command,
        Ok(None) => return ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo-check: {err}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    if let Err(err) = client::connect(command.options.target) {
        eprintln!("echo-check: cannot reach {}: {err}", command.options.target);
        return ExitCode::from(2);
    }
    let report = echo_check::run(&command.options);
    if command.json {
        println!("{}", report::json(&report));
    } else {
        print!("{}", report::table(&report));
    }
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The command, or `None` once `--help` or `--list` has been printed.
fn parse() -> Result<Option<Command>, UsageError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let (mut framing, mut max_line_bytes, mut only) = (Framing::Crlf, None, None);
    let (mut json, mut allow_remote, mut target) = (false, false, None);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("framing") => {
                framing = match string(parser.value()?, "--framing")?.as_str() {
                    "crlf" => Framing::Crlf,
                    "lf" => Framing::Lf,
                    other => {
                        return Err(UsageError(format!(
                            "invalid --framing '{other}': expected crlf or lf"
                        )));
                    }
                }
            }
            Long("max-line-bytes") => {
                max_line_bytes = Some(positive(parser.value()?, "--max-line-bytes")?);
            }
            Long("only") => {
                let mut ids = Vec::new();
                for id in string(parser.value()?, "--only")?.split(',') {
                    let check = checks::by_id(id.trim()).ok_or_else(|| {
                        UsageError(format!("unknown check '{id}' (--list names them)"))
                    })?;
                    ids.push(check.id);
                }
                only = Some(ids);
            }
            Long("json") => json = true,
            Long("allow-remote") => allow_remote = true,
            Long("list") => {
                for check in CHECKS {
                    println!("{:<22}{}", check.id, check.proves);
                }
                return Ok(None);
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Value(value) if target.is_none() => target = Some(string(value, "HOST:PORT")?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let target = target.ok_or_else(|| UsageError("HOST:PORT is required".into()))?;
    let target = resolve(&target, allow_remote)?;
    Ok(Some(Command {
        options: Options {
            target,
            framing,
            max_line_bytes,
            only,
        },
        json,
    }))
}

/// The first address `target` names, refused unless it is loopback or
/// `--allow-remote` was given: the checks load the server hard, which is
/// for one's own machine unless asked.
fn resolve(target: &str, allow_remote: bool) -> Result<SocketAddr, UsageError> {
    let address = target
        .to_socket_addrs()
        .map_err(|err| UsageError(format!("invalid HOST:PORT '{target}': {err}")))?
        .next()
        .ok_or_else(|| UsageError(format!("'{target}' names no address")))?;
    if !address.ip().is_loopback() && !allow_remote {
        return Err(UsageError(format!(
            "{address} is not a loopback address: the checks load a server hard; give --allow-remote to check it anyway"
        )));
    }
    Ok(address)
}
