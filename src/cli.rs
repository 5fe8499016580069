//! The command line: which command it asks for, the daemon's options, and
//! the `--help` text.
//!
//! `parse_args` turns arguments into a `Command` or a `UsageError` naming
//! the problem. It reads the daemon's options into a `Config` (whose
//! defaults and bounds live in `config`) and hands what follows `echod probe`
//! to the probe's own parser (`probe::parse_args`). `parse_args_with_env`
//! adds the options the environment gives (`cli/environment.rs`); the
//! environment is passed in, never read here. Nothing here touches a
//! socket, with one exception: a host name given to
//! `--listen` is resolved here, once, at start (as nginx resolves the name
//! in `listen localhost:1234`), and every address it resolves to is bound.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use log::LevelFilter;

use crate::access::{self, Access, Rule};
use crate::args::{UsageError, number_in, seconds, size, string, timeout};
use crate::config::{
    Config, DEFAULT_PORT, Listen, MAX_LIMIT_BYTES, MAX_MEMORY_BYTES, MAX_WORKERS,
    MIN_STATS_INTERVAL,
};
use crate::framing::Framing;
use crate::listener::MAX_LISTENERS;
use crate::probe::{self, ProbeArgs, ProbeCommand};

mod environment;
mod usage;

pub use environment::{PREFIX as ENVIRONMENT_PREFIX, variable as environment_variable};
pub use usage::USAGE;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The settings the options gave, defaults for the rest (boxed:
        /// the listen addresses and access rules make it far larger than
        /// the other commands).
        config: Box<Config>,
        /// Whether `--listen` or `--port` was given, which socket activation
        /// forbids (the inherited sockets decide where echod listens). Not a
        /// setting: `main` checks it against the environment.
        listen_given: bool,
        /// Warnings about the environment (an `ECHOD_` variable that names
        /// no option), for `main` to log once logging is set up.
        warnings: Vec<String>,
    },
    /// Check that an echo daemon answers (`echod probe`), then exit.
    Probe(ProbeArgs),
    /// Print this help text (`USAGE`, or `probe::USAGE` after `echod
    /// probe`) and exit.
    Help(&'static str),
    /// Print the version and exit.
    Version,
}

/// Parses the arguments, program name first (as `std::env::args_os` gives
/// them), with the options `env` gives as `ECHOD_<OPTION>` variables where
/// the command line does not give them (see `cli/environment.rs`). `echod
/// probe` takes nothing from the environment.
///
/// # Errors
///
/// A `UsageError` naming the first option, value or variable that is wrong.
pub fn parse_args_with_env<I, E>(args: I, env: E) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
    E: IntoIterator<Item = (OsString, OsString)>,
{
    let mut args = args.into_iter().map(Into::into);
    let program = args.next().unwrap_or_else(|| OsString::from("echod"));
    let args: Vec<OsString> = args.collect();
    if args.first().is_some_and(|first| first == "probe") {
        return parse_args(std::iter::once(program).chain(args));
    }
    let with_program = |rest: &[OsString]| {
        std::iter::once(program.clone())
            .chain(rest.iter().cloned())
            .collect::<Vec<_>>()
    };
    let from_env = environment::from_environment(env, &args, |option| {
        parse_args(with_program(option)).map(drop)
    })?;
    let mut merged = from_env.args;
    merged.extend(args);
    Ok(match parse_args(with_program(&merged))? {
        Command::Run {
            config,
            listen_given,
            ..
        } => Command::Run {
            config,
            listen_given,
            warnings: from_env.warnings,
        },
        other => other,
    })
}

/// Parses the arguments alone, program name first (as `std::env::args_os`
/// gives them): `parse_args_with_env` with an empty environment.
///
/// # Errors
///
/// A `UsageError` naming the first option or value that is wrong.
pub fn parse_args<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut args = args.into_iter().map(Into::into);
    let _program = args.next();
    let args: Vec<OsString> = args.collect();
    if args.first().is_some_and(|first| first == "probe") {
        return match probe::parse_args(&args[1..])? {
            ProbeCommand::Run(probe) => Ok(Command::Probe(probe)),
            ProbeCommand::Help => Ok(Command::Help(probe::USAGE)),
        };
    }
    // The binary is a whole process: it owns the signals and speaks to the
    // service manager, which a server embedded elsewhere must not.
    let mut config = Config::default();
    let mut addresses = Vec::new();
    let mut port = None;
    let mut rules = Vec::new();
    let mut proxy_protocol = false;
    let mut proxy_from = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('l') | Long("listen") => {
                let value = string(parser.value()?, "--listen")?;
                for address in listen_addresses(&value)? {
                    // Port 0 twice is two sockets on two ports the OS
                    // picks; any other address twice could only fail to
                    // bind, as "Address already in use".
                    if address.port() != 0 && addresses.contains(&address) {
                        return Err(UsageError(format!(
                            "--listen {address} is given twice (by '{value}'): give each address once"
                        )));
                    }
                    addresses.push(address);
                }
            }
            Short('p') | Long("port") => {
                let port_number = number_in(parser.value()?, "--port", 0, u16::MAX.into())?;
                port = Some(u16::try_from(port_number).expect("number_in kept it within u16"));
            }
            Long("framing") => {
                config.framing = match string(parser.value()?, "--framing")?.as_str() {
                    "crlf" => Framing::Crlf,
                    "lf" => Framing::Lf,
                    "raw" => Framing::Raw,
                    other => {
                        return Err(UsageError(format!(
                            "invalid --framing '{other}': expected crlf, lf or raw"
                        )));
                    }
                }
            }
            Long("max-line-bytes") => {
                config.max_line_bytes =
                    size(parser.value()?, "--max-line-bytes", 2, MAX_LIMIT_BYTES)?;
            }
            Long("max-pending-bytes") => {
                config.max_pending_bytes =
                    size(parser.value()?, "--max-pending-bytes", 1, MAX_LIMIT_BYTES)?;
            }
            Long("read-budget") => {
                config.read_budget_bytes =
                    size(parser.value()?, "--read-budget", 1, MAX_LIMIT_BYTES)?;
            }
            Long("max-connections") => {
                let n = number_in(parser.value()?, "--max-connections", 1, u64::MAX)?;
                // Beyond usize (on a 32-bit host) is beyond any open-file
                // limit: as good as unlimited.
                config.max_connections = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            Long("idle-timeout") => {
                config.idle_timeout = timeout(parser.value()?, "--idle-timeout")?;
            }
            Long("max-connections-per-ip") => {
                let n = number_in(parser.value()?, "--max-connections-per-ip", 0, u64::MAX)?;
                config.max_connections_per_ip =
                    (n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX));
            }
            Long("max-memory") => {
                let bytes = size(parser.value()?, "--max-memory", 0, MAX_MEMORY_BYTES)?;
                config.max_memory = (bytes > 0).then_some(bytes);
            }
            Long("send-timeout") => {
                config.send_timeout = timeout(parser.value()?, "--send-timeout")?;
            }
            Long("line-timeout") => {
                config.line_timeout = timeout(parser.value()?, "--line-timeout")?;
            }
            Long("tcp-keepalive") => {
                let idle = timeout(parser.value()?, "--tcp-keepalive")?;
                if idle.is_some_and(|idle| idle < Duration::from_secs(1)) {
                    return Err(UsageError(
                        "invalid --tcp-keepalive: must be 0 or at least 1 second (the kernel counts whole seconds)"
                            .into(),
                    ));
                }
                config.tcp_keepalive = idle;
            }
            Long("shutdown-timeout") => {
                config.shutdown_timeout = seconds(parser.value()?, "--shutdown-timeout")?
            }
            Long("workers") => {
                let n = number_in(parser.value()?, "--workers", 1, MAX_WORKERS as u64)?;
                config.workers = usize::try_from(n).expect("at most MAX_WORKERS, a usize");
            }
            Long("stats-interval") => {
                let interval = seconds(parser.value()?, "--stats-interval")?;
                if !interval.is_zero() && interval < MIN_STATS_INTERVAL {
                    return Err(UsageError(format!(
                        "invalid --stats-interval '{}': must be 0 or at least {}",
                        interval.as_secs_f64(),
                        MIN_STATS_INTERVAL.as_secs_f64()
                    )));
                }
                config.stats_interval = (!interval.is_zero()).then_some(interval);
            }
            Long("metrics-listen") => {
                let value = string(parser.value()?, "--metrics-listen")?;
                let address = value.parse::<SocketAddr>().map_err(|_| {
                    UsageError(format!(
                        "invalid --metrics-listen address '{value}': expected IP:PORT such as 127.0.0.1:9321"
                    ))
                })?;
                if config.metrics_listen.contains(&address) {
                    return Err(UsageError(format!(
                        "--metrics-listen {address} is given twice: give each address once"
                    )));
                }
                if config.metrics_listen.len() == MAX_LISTENERS {
                    return Err(UsageError(format!(
                        "too many --metrics-listen addresses: at most {MAX_LISTENERS}"
                    )));
                }
                config.metrics_listen.push(address);
            }
            Long("log-level") => {
                let value = string(parser.value()?, "--log-level")?;
                let level = value.parse::<LevelFilter>().map_err(|_| {
                    UsageError(format!(
                        "invalid --log-level '{value}': expected off, error, warn, info, debug or trace"
                    ))
                })?;
                config.log_level = Some(level);
            }
            Short('q') | Long("quiet") => config.log_level = Some(LevelFilter::Warn),
            Long(verb @ ("allow" | "deny")) => {
                let allow = verb == "allow";
                let option = if allow { "--allow" } else { "--deny" };
                let value = string(parser.value()?, option)?;
                let network = access::parse_network(&value)
                    .map_err(|why| UsageError(format!("invalid {option} '{value}': {why}")))?;
                rules.push(Rule { allow, network });
            }
            Long("proxy-protocol") => proxy_protocol = true,
            Long("proxy-from") => {
                let value = string(parser.value()?, "--proxy-from")?;
                let network = access::parse_network(&value)
                    .map_err(|why| UsageError(format!("invalid --proxy-from '{value}': {why}")))?;
                proxy_from.push(Rule {
                    allow: true,
                    network,
                });
            }
            Short('h') | Long("help") => return Ok(Command::Help(USAGE)),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected().into()),
        }
    }
    // Shared out exactly among the workers (see `workers`): a worker with
    // no share would reject every connection the kernel gave it.
    if let Some(max) = config.max_connections {
        if max < config.workers {
            return Err(UsageError(format!(
                "--max-connections {max} is fewer than --workers {}: each worker needs at least one",
                config.workers
            )));
        }
    }
    config.access = Access::new(rules);
    config.proxy_from = match (proxy_protocol, proxy_from.is_empty()) {
        (true, true) => Some(Access::new(access::loopback_rules())),
        (true, false) => Some(Access::new(proxy_from)),
        (false, true) => None,
        (false, false) => {
            return Err(UsageError(
                "--proxy-from names who may send PROXY headers: it needs --proxy-protocol".into(),
            ));
        }
    };
    let listen_given = !addresses.is_empty() || port.is_some();
    config.listen = match (addresses.is_empty(), port) {
        (true, port) => Listen::Default {
            port: port.unwrap_or(DEFAULT_PORT),
        },
        (false, None) if addresses.len() > MAX_LISTENERS => {
            return Err(UsageError(format!(
                "too many --listen addresses: at most {MAX_LISTENERS}"
            )));
        }
        (false, None) => Listen::Addresses(addresses),
        (false, Some(_)) => {
            return Err(UsageError(
                "--port sets the port of the default addresses; with --listen, give the port in ADDR".into(),
            ));
        }
    };
    Ok(Command::Run {
        config: Box::new(config),
        listen_given,
        warnings: Vec::new(),
    })
}

/// The addresses one `--listen` value names: an `IP:PORT`, or every
/// address `HOST:PORT` resolves to (each once, in the resolver's order).
///
/// # Errors
///
/// If it is neither, or the host name does not resolve.
fn listen_addresses(value: &str) -> Result<Vec<SocketAddr>, UsageError> {
    if let Ok(address) = value.parse::<SocketAddr>() {
        return Ok(vec![address]);
    }
    let well_formed = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !well_formed {
        return Err(UsageError(format!(
            "invalid --listen address '{value}': expected IP:PORT or HOST:PORT such as \
             127.0.0.1:12321, [::1]:12321 or localhost:12321"
        )));
    }
    let resolved = value.to_socket_addrs().map_err(|err| {
        UsageError(format!(
            "invalid --listen address '{value}': cannot resolve it: {err}"
        ))
    })?;
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for address in resolved {
        // A resolver may list an address twice (once per /etc/hosts line).
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return Err(UsageError(format!(
            "invalid --listen address '{value}': the name has no address"
        )));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = std::iter::once("echod").chain(args.iter().copied());
        match parse_args(args) {
            Ok(Command::Run { config, .. }) => Ok(*config),
            Ok(other) => Err(format!("{other:?}")),
            Err(err) => Err(err.0),
        }
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).expect("no arguments is valid");
        assert_eq!(config.listen, Listen::Default { port: 12321 });
        assert_eq!(config.framing, Framing::Crlf);
        assert_eq!(config.max_line_bytes, 65536);
        assert_eq!(config.max_pending_bytes, 1 << 20);
        assert_eq!(config.read_budget_bytes, 64 << 10);
        assert_eq!(config.limits().read_budget_bytes, 64 << 10);
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(config.stats_interval, None);
        assert_eq!(config.workers, 1);
    }

    #[test]
    fn options() {
        let config = parse(&[
            "-l",
            "127.0.0.1:0",
            "--listen=[::1]:7",
            "--framing",
            "lf",
            "--max-line-bytes",
            "4KiB",
            "--max-pending-bytes=2M",
            "--read-budget",
            "16KiB",
            "--max-connections",
            "10",
            "--idle-timeout",
            "1.5",
            "--shutdown-timeout",
            "0",
            "--stats-interval",
            "2.5",
            "--workers",
            "3",
            "-q",
        ])
        .expect("valid options");
        assert_eq!(
            config.listen,
            Listen::Addresses(vec![
                "127.0.0.1:0".parse().unwrap(),
                "[::1]:7".parse().unwrap()
            ])
        );
        assert_eq!(config.framing, Framing::Lf);
        assert_eq!(
            (config.max_line_bytes, config.max_pending_bytes),
            (4096, 2 << 20)
        );
        assert_eq!(config.limits().read_budget_bytes, 16 << 10);
        assert_eq!(config.max_connections, Some(10));
        assert_eq!(config.idle_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(config.shutdown_timeout, Duration::ZERO);
        assert_eq!(config.stats_interval, Some(Duration::from_millis(2500)));
        assert_eq!(config.workers, 3);
        assert_eq!(config.log_level, Some(LevelFilter::Warn));
        assert_eq!(
            parse(&[
                "--metrics-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "[::1]:9"
            ])
            .unwrap()
            .metrics_listen,
            ["127.0.0.1:0".parse().unwrap(), "[::1]:9".parse().unwrap()]
        );
        assert!(parse(&[]).unwrap().metrics_listen.is_empty());
        assert_eq!(
            parse(&["-p", "0"]).unwrap().listen,
            Listen::Default { port: 0 }
        );
        assert_eq!(parse(&["--idle-timeout", "0"]).unwrap().idle_timeout, None);
        assert_eq!(
            parse(&["--stats-interval", "0"]).unwrap().stats_interval,
            None
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "invalid option '--bogus'"),
            (
                &["--port", "70000"],
                "invalid --port '70000': must be between 0 and 65535",
            ),
            (
                &["--port", "http"],
                "invalid --port 'http': expected a whole number",
            ),
            (
                &["--listen", "localhost"],
                "invalid --listen address 'localhost'",
            ),
            (
                &["-l", "127.0.0.1:7", "-l", "127.0.0.1:7"],
                "--listen 127.0.0.1:7 is given twice (by '127.0.0.1:7')",
            ),
            (
                &["--idle-timeout", "99999999999999999999"],
                "invalid --idle-timeout '99999999999999999999': too large: at most 31536000 seconds",
            ),
            (
                &["--max-connections", "99999999999999999999"],
                "invalid --max-connections '99999999999999999999': must be at least 1",
            ),
            (
                &["--metrics-listen", "localhost:9"],
                "invalid --metrics-listen address 'localhost:9'",
            ),
            (
                &[
                    "--metrics-listen",
                    "127.0.0.1:9",
                    "--metrics-listen=127.0.0.1:9",
                ],
                "--metrics-listen 127.0.0.1:9 is given twice",
            ),
            (&["--framing", "cr"], "invalid --framing 'cr'"),
            (&["--max-line-bytes", "1"], "must be between 2 and"),
            (
                &["--max-line-bytes", "12Q"],
                "invalid --max-line-bytes '12Q'",
            ),
            (&["--max-pending-bytes", "2G"], "must be between 1 and"),
            (&["--read-budget", "0"], "must be between 1 and"),
            (&["--max-connections", "0"], "must be at least 1"),
            (&["--idle-timeout", "-1"], "invalid --idle-timeout '-1'"),
            (&["--log-level", "loud"], "invalid --log-level 'loud'"),
            (&["--stats-interval", "0.01"], "must be 0 or at least 0.1"),
            (
                &["--workers", "0"],
                "invalid --workers '0': must be between 1 and",
            ),
            (
                &["--workers", "4", "--max-connections", "3"],
                "--max-connections 3 is fewer than --workers 4: each worker needs at least one",
            ),
            (&["--port"], "missing argument for option '--port'"),
            (
                &["-l", "127.0.0.1:1", "-p", "2"],
                "--port sets the port of the default addresses",
            ),
            (&["stray"], "unexpected argument \"stray\""),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err(&format!("{args:?} should fail"));
            assert!(
                err.contains(expected),
                "{args:?}: got '{err}', want '{expected}'"
            );
        }
    }

    #[test]
    fn listen_takes_host_names_and_binds_every_address() {
        let Listen::Addresses(addresses) = parse(&["--listen", "localhost:7"])
            .expect("localhost resolves")
            .listen
        else {
            panic!("--listen gives addresses");
        };
        assert!(!addresses.is_empty());
        for address in &addresses {
            assert!(
                address.ip().is_loopback() && address.port() == 7,
                "{address}"
            );
        }
        // Port 0 twice is two ephemeral ports, not a clash.
        assert_eq!(
            parse(&["-l", "127.0.0.1:0", "-l", "127.0.0.1:0"])
                .expect("port 0 twice")
                .listen,
            Listen::Addresses(vec!["127.0.0.1:0".parse().unwrap(); 2])
        );
        // A name and an address that overlap are one address twice.
        let err = parse(&["-l", "127.0.0.1:7", "-l", "localhost:7"]);
        if addresses.contains(&"127.0.0.1:7".parse().unwrap()) {
            let err = err.expect_err("127.0.0.1:7 twice");
            assert!(
                err.contains("--listen 127.0.0.1:7 is given twice (by 'localhost:7')"),
                "{err}"
            );
        }
    }

    #[test]
    fn listen_given_says_whether_listen_or_port_was_given() {
        let given = |args: &[&str]| {
            let command_line = std::iter::once("echod").chain(args.iter().copied());
            match parse_args(command_line) {
                Ok(Command::Run { listen_given, .. }) => listen_given,
                other => panic!("{args:?}: {other:?}"),
            }
        };
        assert!(!given(&[]));
        assert!(!given(&["--workers", "2", "-q"]));
        assert!(given(&["-p", "0"]));
        assert!(given(&["--listen", "127.0.0.1:0"]));
    }

    fn parse_env(args: &[&str], env: &[(&str, &str)]) -> Result<Command, UsageError> {
        parse_args_with_env(
            std::iter::once("echod").chain(args.iter().copied()),
            env.iter()
                .map(|&(n, v)| (OsString::from(n), OsString::from(v))),
        )
    }

    #[test]
    fn every_option_can_come_from_the_environment() {
        let listed: Vec<&str> = USAGE
            .split_whitespace()
            .filter_map(|word| word.strip_prefix("--"))
            .map(|word| word.trim_end_matches([',', ')', '.']))
            .filter(|word| {
                !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            })
            .collect();
        let known: Vec<&str> = environment::names().collect();
        for option in &listed {
            if !matches!(*option, "help" | "version" | "timeout") {
                assert!(known.contains(option), "--{option} has no ECHOD_ variable");
            }
        }
        for option in &known {
            assert!(listed.contains(option), "--{option} is not in --help");
        }
    }

    #[test]
    fn the_environment_fills_in_what_the_command_line_leaves_out() {
        let env = [
            ("ECHOD_MAX_LINE_BYTES", "4KiB"),
            ("ECHOD_WORKERS", "3"),
            ("ECHOD_LISTEN", "127.0.0.1:0,127.0.0.1:0"),
            ("ECHOD_NO_SUCH_OPTION", "1"),
        ];
        match parse_env(&["--workers", "2"], &env) {
            Ok(Command::Run {
                config,
                listen_given,
                warnings,
            }) => {
                assert_eq!(config.max_line_bytes, 4096);
                assert_eq!(config.workers, 2, "the command line wins");
                assert!(listen_given);
                assert!(
                    matches!(&config.listen, Listen::Addresses(a) if a.len() == 2),
                    "{:?}",
                    config.listen
                );
                assert_eq!(warnings.len(), 1, "{warnings:?}");
                assert!(warnings[0].starts_with("ECHOD_NO_SUCH_OPTION"));
            }
            other => panic!("{other:?}"),
        }
        // --port on the command line sets the address group aside, so
        // ECHOD_LISTEN does not clash with it.
        match parse_env(&["-p", "0"], &env) {
            Ok(Command::Run { config, .. }) => {
                assert!(matches!(config.listen, Listen::Default { port: 0 }));
            }
            other => panic!("{other:?}"),
        }
        let err = parse_env(&[], &[("ECHOD_MAX_LINE_BYTES", "lots")]).expect_err("bad value");
        assert!(
            err.0
                .starts_with("ECHOD_MAX_LINE_BYTES: invalid --max-line-bytes 'lots'"),
            "{err}"
        );
        // A bad variable the command line overrides is never read.
        assert!(
            parse_env(
                &["--max-line-bytes", "1KiB"],
                &[("ECHOD_MAX_LINE_BYTES", "lots")]
            )
            .is_ok()
        );
        // The probe takes nothing from the environment.
        assert!(matches!(
            parse_env(&["probe"], &[("ECHOD_MAX_LINE_BYTES", "lots")]),
            Ok(Command::Probe(_))
        ));
    }

    #[test]
    fn probe_arguments_go_to_the_probe() {
        match parse_args(["echod", "probe", "[::1]:9", "--timeout=5"]) {
            Ok(Command::Probe(probe)) => assert_eq!(
                (probe.address.as_str(), probe.timeout),
                ("[::1]:9", Duration::from_millis(5))
            ),
            other => panic!("echod probe [::1]:9 --timeout=5: {other:?}"),
        }
        let err = parse_args(["echod", "probe", "--port", "1"]).expect_err("not a probe option");
        assert!(err.0.contains("invalid option '--port'"), "{err}");
        // Only the first argument names the subcommand.
        assert!(parse(&["-q", "probe"]).is_err());
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(
            parse_args(["echod", "--help"]),
            Ok(Command::Help(USAGE))
        ));
        assert!(matches!(parse_args(["echod", "-V"]), Ok(Command::Version)));
    }

    #[test]
    fn probe_help_is_the_probes_own() {
        for flag in ["--help", "-h"] {
            match parse_args(["echod", "probe", flag]) {
                Ok(Command::Help(text)) => assert_eq!(text, probe::USAGE, "probe {flag}"),
                other => panic!("echod probe {flag}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_args(["echod", "probe", "127.0.0.1:7", "--timeout", "5", "-h"]),
            Ok(Command::Help(probe::USAGE))
        ));
    }
}
