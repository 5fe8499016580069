//! The command line of `echo-chaos attack KIND`: which attack, its scale,
//! and the bounds that decide whether echod withstood it.
//!
//! Every default is a target of the issue "safe to expose with default
//! flags"; a smaller scale is for trying the harness, never a weaker bound.
//! Every attack is bounded in count and in time and stops by itself.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use echod_kit::args::{UsageError, number, positive, seconds, string};

/// The attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Many clients push megabytes of lines and never read.
    MemoryFlood,
    /// Unfinished lines fed a byte at a time, silent clients, a stalled
    /// reader: each must be closed.
    Slowloris,
    /// Every connection slot held by silent and trickling clients: a
    /// client from another address must still be served.
    Slots,
    /// A peer that vanishes for real, in network namespaces made here.
    DeadPeer,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::MemoryFlood,
        Kind::Slowloris,
        Kind::Slots,
        Kind::DeadPeer,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::MemoryFlood => "memory-flood",
            Kind::Slowloris => "slowloris",
            Kind::Slots => "slots",
            Kind::DeadPeer => "dead-peer",
        }
    }

    /// This attack's `--help` text.
    pub fn usage(self) -> &'static str {
        match self {
            Kind::MemoryFlood => FLOOD_USAGE,
            Kind::Slowloris => SLOWLORIS_USAGE,
            Kind::Slots => SLOTS_USAGE,
            Kind::DeadPeer => DEAD_PEER_USAGE,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one attack does and what it must find. Each field is read by the
/// attacks it names; the others ignore it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackOptions {
    /// Which attack.
    pub kind: Kind,
    /// The echod executable to start (every attack starts its own).
    pub echod: PathBuf,
    /// Arguments added to echod's command line, in order.
    pub echod_args: Vec<String>,
    /// memory-flood: clients that push and never read.
    pub clients: usize,
    /// memory-flood: bytes each pushes, in lines of `line_bytes`.
    pub bytes_per_client: usize,
    /// memory-flood: length of each line, its CRLF included (at least 3).
    pub line_bytes: usize,
    /// memory-flood: the run fails if echod's peak RSS passes its start by
    /// more than this.
    pub rss_growth_bytes: u64,
    /// memory-flood: echod runs with `RLIMIT_AS` at this many bytes.
    pub address_space_bytes: Option<u64>,
    /// memory-flood: how long the flood is held open once it has pushed
    /// what it could.
    pub hold: Duration,
    /// memory-flood, slots: time between a fresh client's tries.
    pub fresh_interval: Duration,
    /// memory-flood, slots: the slowest a fresh client may be served.
    pub fresh_limit: Duration,
    /// slowloris, slots: clients that connect and send nothing.
    pub silent: usize,
    /// slowloris, slots: clients feeding an unfinished line.
    pub trickle: usize,
    /// slowloris, slots: time between a trickling client's bytes.
    pub byte_interval: Duration,
    /// slowloris: stalled readers, each making echod owe it `owe_bytes`.
    pub stalled: usize,
    /// slowloris, dead-peer: what a stalled reader or the dead peer leaves
    /// owed.
    pub owe_bytes: usize,
    /// slowloris, dead-peer: each abuser must be closed by echod within
    /// this long.
    pub close_within: Duration,
    /// slowloris: silent clients must be closed too (not a default-flags
    /// target: a silent live peer answers keepalive probes).
    pub silent_must_close: bool,
    /// slots: `--max-connections` given to echod.
    pub max_connections: usize,
    /// slots: how long the fresh client keeps trying, to report when (if
    /// ever) it is served.
    pub give_up: Duration,
    /// Hard bound on the whole attack.
    pub max_seconds: Duration,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum AttackCommand {
    /// Run the attack.
    Run(Box<AttackOptions>),
    /// Print this text and exit 0.
    Help(&'static str),
}

/// Longest any attack may be told to run.
const MAX_SECONDS: Duration = Duration::from_secs(1800);
/// Most clients one attack opens: two descriptors each with echod, inside
/// the ephemeral ports of one source address.
const MAX_CLIENTS: usize = 20_000;

/// The text of `echo-chaos attack --help`.
pub const ATTACK_USAGE: &str = "\
echo-chaos attack: attack a freshly started echod on loopback (or in network
namespaces made for the run) and check that it withstands it. Each attack is
bounded in count and time, stops by itself, prints a summary and exits 0 only
if every check passed.

Usage: echo-chaos attack KIND [OPTIONS]
       echo-chaos attack KIND --help

Kinds:
  memory-flood   1,500 clients push 1.5 MiB each and never read; RSS growth
                 bounded, a fresh client from 127.0.0.2 served meanwhile
  slowloris      unfinished lines fed a byte every 2 s, a stalled reader
                 owing MiBs, silent clients: closed within 100 s, keepalive on
  slots          --max-connections 300 held by 150 silent and 150 trickling
                 clients: a client from 127.0.0.2 served within 1 s
  dead-peer      a peer owed MiBs whose packets all vanish (network
                 namespaces, veth, tc): closed within 100 s; needs root

Options for every kind:
      --echod PATH        The echod to start [default: next to this program]
      --echod-arg ARG     Add ARG to echod's command line (repeatable)
      --max-seconds SECS  Hard bound on the whole attack
  -h, --help              Print help (of KIND, if given) and exit

Exit status: 0 if every check passed, 1 if one failed, 2 for a bad command
line, 3 if the attack could not be set up, 77 if it was skipped (dead-peer
without root or `ip`, outside CI).
";

const FLOOD_USAGE: &str = "\
echo-chaos attack memory-flood: clients each push megabytes of lines without
reading (16 KiB receive buffer, MSS 1460, so that what echod owes stays in
echod), while a fresh client bound to 127.0.0.2 connects and echoes one line
every --fresh-interval-ms. Passes if echod stays alive, its RSS peak (VmHWM)
grows at most --rss-growth-mib over its start, the fresh client is served on
every try and the slowest within --fresh-limit-ms, and a fresh client is
served after the flood. With --address-space, echod runs under that RLIMIT_AS
and the checks are: alive (no abort), served afterwards, the RSS bound.

Usage: echo-chaos attack memory-flood [OPTIONS]

Options:
      --clients N             Flooding clients [default: 1500]
      --bytes-per-client SIZE Bytes each pushes [default: 1572864]
      --line-bytes N          Line length with its CRLF [default: 1024]
      --rss-growth-mib MIB    Bound on echod's RSS growth [default: 512]
      --address-space BYTES   Run echod under RLIMIT_AS=BYTES (prlimit(2))
      --hold SECS             Keep the flood open this long once it has
                              pushed what it could [default: 5]
      --fresh-interval-ms MS  Between a fresh client's tries [default: 100]
      --fresh-limit-ms MS     Slowest allowed try [default: 1000]
      --max-seconds SECS      Bound on the attack [default: 180]
      --echod PATH, --echod-arg ARG, -h/--help: as for every kind
";

const SLOWLORIS_USAGE: &str = "\
echo-chaos attack slowloris: from 127.0.0.1, clients feed an unfinished line
one byte every --byte-interval-ms, stalled readers make echod owe them
--owe-mib and read nothing (16 KiB receive buffer, MSS 1460), and silent
clients send nothing. echod's side of each connection is watched in
/proc/PID/net/tcp. Passes if every trickling client and stalled reader is
closed by echod within --close-within, keepalive is set on every one of
echod's sockets (read with pidfd_getfd(2) and getsockopt), and echod stays
alive. Silent clients are reported; with --silent-must-close they must be
closed too (default flags do not promise it: a live silent peer answers
keepalive probes).

Usage: echo-chaos attack slowloris [OPTIONS]

Options:
      --trickle N             Clients feeding an unfinished line [default: 10]
      --byte-interval-ms MS   Between their bytes [default: 2000]
      --stalled N             Stalled readers [default: 1]
      --owe-mib MIB           What each stalled reader is owed [default: 4]
      --silent N              Silent clients [default: 10]
      --silent-must-close     Fail unless the silent clients are closed too
      --close-within SECS     Bound on each close [default: 100]
      --max-seconds SECS      Bound on the attack [default: close-within + 10]
      --echod PATH, --echod-arg ARG, -h/--help: as for every kind
";

const SLOTS_USAGE: &str = "\
echo-chaos attack slots: echod runs with --max-connections N; N/2 silent and
N/2 trickling clients from 127.0.0.1 take every slot (checked in echod's
/proc/PID/net/tcp), then a client bound to 127.0.0.2 tries to connect and
echo one line, again and again. Passes if it is served within
--fresh-limit-ms of its first try and echod stays alive.

Usage: echo-chaos attack slots [OPTIONS]

Options:
      --max-connections N     echod's limit, held by the clients [default: 300]
      --silent N              Silent holders [default: max-connections / 2]
      --trickle N             Trickling holders [default: the rest]
      --byte-interval-ms MS   Between a trickling holder's bytes [default: 2000]
      --fresh-limit-ms MS     Bound from the first try to the echo [default: 1000]
      --fresh-interval-ms MS  Pause between failed tries [default: 100]
      --give-up SECS          Stop trying after this long [default: 10]
      --max-seconds SECS      Bound on the attack [default: 60]
      --echod PATH, --echod-arg ARG, -h/--help: as for every kind
";

const DEAD_PEER_USAGE: &str = "\
echo-chaos attack dead-peer: two network namespaces made for the run, joined
by a veth pair on 10.203.0.0/30 (no host address is involved, nothing is
routed). echod runs in one on 10.203.0.1; a client in the other connects from
10.203.0.2, echoes a line, makes echod owe it --owe-mib and stops reading;
then every packet leaving the client's namespace is dropped (tc netem loss
100%, or a pfifo queue of length 0 where netem is missing). Passes if echod
closes its socket (watched in its /proc/PID/net/tcp) within --close-within
and stays alive. The namespaces are deleted at the end whatever happens.
Needs root and iproute2 (`ip`, `tc`); without them the attack is skipped
(exit 77), or fails under CI=true.

Usage: echo-chaos attack dead-peer [OPTIONS]

Options:
      --owe-mib MIB           What echod is left owing [default: 4]
      --close-within SECS     Bound on the close [default: 100]
      --max-seconds SECS      Bound on the attack [default: close-within + 20]
      --echod PATH, --echod-arg ARG, -h/--help: as for every kind
";

/// Parses `echo-chaos attack ...`: the arguments after `attack`.
///
/// # Errors
///
/// A `UsageError` naming the first option or value that is wrong.
pub fn parse_attack_args<I>(args: I) -> Result<AttackCommand, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let kind = match parser.next()? {
        Some(Value(value)) => {
            let name = string(value, "KIND")?;
            Kind::ALL
                .into_iter()
                .find(|kind| kind.name() == name)
                .ok_or_else(|| {
                    UsageError(format!(
                        "unknown attack '{name}': one of memory-flood, slowloris, slots, dead-peer"
                    ))
                })?
        }
        Some(Short('h') | Long("help")) => return Ok(AttackCommand::Help(ATTACK_USAGE)),
        Some(arg) => return Err(arg.unexpected().into()),
        None => {
            return Err(UsageError(
                "which attack? one of memory-flood, slowloris, slots, dead-peer".into(),
            ));
        }
    };
    let mut options = AttackOptions {
        kind,
        echod: PathBuf::new(),
        echod_args: Vec::new(),
        clients: 1500,
        bytes_per_client: 1536 << 10,
        line_bytes: 1024,
        rss_growth_bytes: 512 << 20,
        address_space_bytes: None,
        hold: Duration::from_secs(5),
        fresh_interval: Duration::from_millis(100),
        fresh_limit: Duration::from_secs(1),
        silent: 10,
        trickle: 10,
        byte_interval: Duration::from_secs(2),
        stalled: 1,
        owe_bytes: 4 << 20,
        close_within: Duration::from_secs(100),
        silent_must_close: false,
        max_connections: 300,
        give_up: Duration::from_secs(10),
        max_seconds: Duration::ZERO,
    };
    let (mut echod, mut max_seconds, mut silent, mut trickle) = (None, None, None, None);
    let millis = |value, option| number::<u64>(value, option).map(Duration::from_millis);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("echod") => echod = Some(PathBuf::from(parser.value()?)),
            Long("echod-arg") => options
                .echod_args
                .push(string(parser.value()?, "--echod-arg")?),
            Long("max-seconds") => max_seconds = Some(seconds(parser.value()?, "--max-seconds")?),
            Long("clients") => options.clients = positive(parser.value()?, "--clients")?,
            Long("bytes-per-client") => {
                options.bytes_per_client = positive(parser.value()?, "--bytes-per-client")?;
            }
            Long("line-bytes") => options.line_bytes = positive(parser.value()?, "--line-bytes")?,
            Long("rss-growth-mib") => {
                options.rss_growth_bytes =
                    number::<u64>(parser.value()?, "--rss-growth-mib")? << 20;
            }
            Long("address-space") => {
                options.address_space_bytes = Some(positive(parser.value()?, "--address-space")?);
            }
            Long("hold") => options.hold = seconds(parser.value()?, "--hold")?,
            Long("fresh-interval-ms") => {
                options.fresh_interval = millis(parser.value()?, "--fresh-interval-ms")?;
            }
            Long("fresh-limit-ms") => {
                options.fresh_limit = millis(parser.value()?, "--fresh-limit-ms")?;
            }
            Long("silent") => silent = Some(number(parser.value()?, "--silent")?),
            Long("trickle") => trickle = Some(number(parser.value()?, "--trickle")?),
            Long("byte-interval-ms") => {
                options.byte_interval = millis(parser.value()?, "--byte-interval-ms")?;
            }
            Long("stalled") => options.stalled = number(parser.value()?, "--stalled")?,
            Long("owe-mib") => {
                options.owe_bytes = positive::<usize>(parser.value()?, "--owe-mib")? << 20;
            }
            Long("close-within") => {
                options.close_within = seconds(parser.value()?, "--close-within")?;
            }
            Long("silent-must-close") => options.silent_must_close = true,
            Long("max-connections") => {
                options.max_connections = positive(parser.value()?, "--max-connections")?;
            }
            Long("give-up") => options.give_up = seconds(parser.value()?, "--give-up")?,
            Short('h') | Long("help") => return Ok(AttackCommand::Help(kind.usage())),
            _ => return Err(arg.unexpected().into()),
        }
    }
    match kind {
        Kind::Slots => {
            let silent = silent.unwrap_or(options.max_connections / 2);
            options.silent = silent;
            options.trickle =
                trickle.unwrap_or_else(|| options.max_connections.saturating_sub(silent));
            options.echod_args.splice(
                0..0,
                [
                    "--max-connections".to_owned(),
                    options.max_connections.to_string(),
                ],
            );
        }
        _ => {
            options.silent = silent.unwrap_or(options.silent);
            options.trickle = trickle.unwrap_or(options.trickle);
        }
    }
    options.max_seconds = max_seconds.unwrap_or(match kind {
        Kind::MemoryFlood => Duration::from_secs(180),
        Kind::Slowloris => options.close_within + Duration::from_secs(10),
        Kind::Slots => Duration::from_secs(60),
        Kind::DeadPeer => options.close_within + Duration::from_secs(20),
    });
    validate(&options)?;
    options.echod = match echod {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|err| UsageError(format!("cannot locate this program: {err}")))?
            .with_file_name("echod"),
    };
    Ok(AttackCommand::Run(Box::new(options)))
}

/// The checks no single option can make on its own.
fn validate(options: &AttackOptions) -> Result<(), UsageError> {
    let fail = |message: String| Err(UsageError(message));
    if options.max_seconds.is_zero() || options.max_seconds > MAX_SECONDS {
        return fail(format!(
            "invalid --max-seconds: must be more than 0 and at most {}",
            MAX_SECONDS.as_secs()
        ));
    }
    let clients = match options.kind {
        Kind::MemoryFlood => options.clients,
        Kind::Slowloris => options.silent + options.trickle + options.stalled,
        Kind::Slots => options.silent + options.trickle,
        Kind::DeadPeer => 1,
    };
    if clients > MAX_CLIENTS {
        return fail(format!(
            "too many clients ({clients}): at most {MAX_CLIENTS}"
        ));
    }
    if options.line_bytes < 3 {
        return fail("invalid --line-bytes: at least 3 (one byte and CRLF)".into());
    }
    if options.fresh_limit.is_zero() || options.fresh_interval.is_zero() {
        return fail("--fresh-limit-ms and --fresh-interval-ms must be more than 0".into());
    }
    if options.byte_interval.is_zero() {
        return fail("invalid --byte-interval-ms: must be more than 0".into());
    }
    match options.kind {
        Kind::Slowloris if clients == 0 => fail("slowloris with no client at all".into()),
        Kind::Slots if options.silent + options.trickle != options.max_connections => {
            fail(format!(
                "--silent and --trickle must add up to --max-connections ({}): the holders take every slot",
                options.max_connections
            ))
        }
        Kind::Slowloris | Kind::DeadPeer if options.close_within >= options.max_seconds => {
            fail("--close-within must be less than --max-seconds".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AttackCommand, UsageError> {
        parse_attack_args(args.iter().copied())
    }

    fn run(args: &[&str]) -> AttackOptions {
        match parse(args) {
            Ok(AttackCommand::Run(options)) => *options,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_targets() {
        let flood = run(&["memory-flood"]);
        assert_eq!(flood.clients, 1500);
        assert_eq!(flood.bytes_per_client, 1536 << 10);
        assert_eq!(flood.rss_growth_bytes, 512 << 20);
        assert_eq!(flood.fresh_interval, Duration::from_millis(100));
        assert_eq!(flood.fresh_limit, Duration::from_secs(1));
        assert_eq!(flood.address_space_bytes, None);
        assert!(flood.echod.ends_with("echod"), "{:?}", flood.echod);

        let slowloris = run(&["slowloris"]);
        assert_eq!(slowloris.byte_interval, Duration::from_secs(2));
        assert_eq!(slowloris.close_within, Duration::from_secs(100));
        assert_eq!(slowloris.max_seconds, Duration::from_secs(110));
        assert!(!slowloris.silent_must_close);

        let slots = run(&["slots"]);
        assert_eq!((slots.silent, slots.trickle), (150, 150));
        assert_eq!(slots.echod_args, ["--max-connections", "300"]);
        let slots = run(&["slots", "--max-connections", "7", "--echod-arg", "-v"]);
        assert_eq!((slots.silent, slots.trickle), (3, 4));
        assert_eq!(slots.echod_args, ["--max-connections", "7", "-v"]);

        let dead = run(&["dead-peer", "--owe-mib", "2", "--close-within", "30"]);
        assert_eq!(dead.owe_bytes, 2 << 20);
        assert_eq!(dead.max_seconds, Duration::from_secs(50));
    }

    #[test]
    fn options_set_what_they_name() {
        let flood = run(&[
            "memory-flood",
            "--clients",
            "20",
            "--bytes-per-client",
            "65536",
            "--line-bytes",
            "100",
            "--rss-growth-mib",
            "64",
            "--address-space",
            "1073741824",
            "--hold",
            "0.5",
            "--max-seconds",
            "9",
            "--echod",
            "/bin/echod",
        ]);
        assert_eq!(
            (flood.clients, flood.bytes_per_client, flood.line_bytes),
            (20, 65536, 100)
        );
        assert_eq!(flood.rss_growth_bytes, 64 << 20);
        assert_eq!(flood.address_space_bytes, Some(1 << 30));
        assert_eq!(flood.hold, Duration::from_millis(500));
        assert_eq!(flood.max_seconds, Duration::from_secs(9));
        assert_eq!(flood.echod, PathBuf::from("/bin/echod"));
    }

    #[test]
    fn refuses_what_cannot_be_run_or_would_not_stop() {
        let refused: [(&[&str], &str); 10] = [
            (&[], "which attack?"),
            (&["ddos"], "unknown attack 'ddos'"),
            (&["memory-flood", "--clients", "0"], "invalid --clients '0'"),
            (&["memory-flood", "--clients", "20001"], "too many clients"),
            (
                &["memory-flood", "--max-seconds", "0"],
                "invalid --max-seconds",
            ),
            (
                &["memory-flood", "--max-seconds", "1801"],
                "invalid --max-seconds",
            ),
            (
                &["memory-flood", "--line-bytes", "2"],
                "invalid --line-bytes",
            ),
            (
                &["slots", "--silent", "1", "--trickle", "1"],
                "must add up to --max-connections",
            ),
            (
                &[
                    "slowloris",
                    "--silent",
                    "0",
                    "--trickle",
                    "0",
                    "--stalled",
                    "0",
                ],
                "no client at all",
            ),
            (
                &["dead-peer", "--max-seconds", "50"],
                "--close-within must be less",
            ),
        ];
        for (args, problem) in refused {
            match parse(args) {
                Err(UsageError(message)) => {
                    assert!(message.contains(problem), "{args:?}: {message}")
                }
                Ok(command) => panic!("{args:?} accepted: {command:?}"),
            }
        }
    }

    #[test]
    fn help_is_per_kind() {
        for kind in Kind::ALL {
            let Ok(AttackCommand::Help(text)) = parse(&[kind.name(), "--help"]) else {
                panic!("{kind} --help");
            };
            assert!(
                text.starts_with(&format!("echo-chaos attack {kind}:")),
                "{text}"
            );
            assert!(ATTACK_USAGE.contains(kind.name()));
        }
        assert!(matches!(
            parse(&["-h"]),
            Ok(AttackCommand::Help(ATTACK_USAGE))
        ));
    }
}
