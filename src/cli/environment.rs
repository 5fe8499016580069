//! Settings from the environment: every option of the daemon may be given
//! as `ECHOD_<OPTION>`, its long name in capitals with `_` for `-`
//! (`ECHOD_LISTEN`, `ECHOD_MAX_LINE_BYTES`, `ECHOD_METRICS_LISTEN`), for
//! containers and units where the environment is easier to set than the
//! command line.
//!
//! The command line wins, option by option: a variable is used only if the
//! command line does not give its option. Options that decide one thing
//! together count as one here: `--listen` and `--port` (where echod
//! listens), `--allow` and `--deny` (the access rules, whose order
//! matters), `--log-level` and `--quiet`. If the command line gives one of
//! a group, the variables of the whole group are left alone.
//!
//! The variables become arguments placed before the command line's, so
//! the one parser reads both. Each variable is first read on its own, so
//! that a bad value is a usage error that names the variable.

use std::ffi::OsString;

use crate::args::UsageError;

/// The prefix of every variable echod reads its options from.
pub const PREFIX: &str = "ECHOD_";

/// How an option takes its value, and so how its variable is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One value: the variable's value is the option's.
    Value,
    /// Repeatable: the variable holds one or more values, separated by
    /// commas or white space (`ECHOD_LISTEN=127.0.0.1:7,[::1]:7`).
    Repeatable,
    /// No value: `1`, `true`, `yes` or `on` gives the option; `0`,
    /// `false`, `no`, `off` or nothing leaves it out.
    Flag,
}

/// Every option of the daemon, by its long name, with its kind and the
/// group it decides with (options of one group are given from the
/// environment only if the command line gives none of them). `--help` and
/// `--version` are not settings.
const OPTIONS: &[(&str, Kind, &str)] = &[
    ("listen", Kind::Repeatable, "address"),
    ("port", Kind::Value, "address"),
    ("framing", Kind::Value, "framing"),
    ("max-line-bytes", Kind::Value, "max-line-bytes"),
    ("max-pending-bytes", Kind::Value, "max-pending-bytes"),
    ("read-budget", Kind::Value, "read-budget"),
    ("max-connections", Kind::Value, "max-connections"),
    ("idle-timeout", Kind::Value, "idle-timeout"),
    (
        "max-connections-per-ip",
        Kind::Value,
        "max-connections-per-ip",
    ),
    ("max-memory", Kind::Value, "max-memory"),
    ("send-timeout", Kind::Value, "send-timeout"),
    ("line-timeout", Kind::Value, "line-timeout"),
    ("tcp-keepalive", Kind::Value, "tcp-keepalive"),
    ("shutdown-timeout", Kind::Value, "shutdown-timeout"),
    ("workers", Kind::Value, "workers"),
    ("stats-interval", Kind::Value, "stats-interval"),
    ("metrics-listen", Kind::Repeatable, "metrics-listen"),
    ("log-level", Kind::Value, "log"),
    ("quiet", Kind::Flag, "log"),
    // The environment cannot say in which order ECHOD_ALLOW and ECHOD_DENY
    // were meant: the deny rules are tried first (the exceptions before
    // the networks let in), as `--deny X --allow Y` would be.
    ("deny", Kind::Repeatable, "access"),
    ("allow", Kind::Repeatable, "access"),
    ("proxy-protocol", Kind::Flag, "proxy-protocol"),
    ("proxy-from", Kind::Repeatable, "proxy-from"),
];

/// Options that are a usage error without another (a flag), which a
/// variable's value is therefore checked with.
const NEEDS: &[(&str, &str)] = &[("proxy-from", "--proxy-protocol")];

/// The short options, by the long name they stand for.
const SHORT: &[(char, &str)] = &[('l', "listen"), ('p', "port"), ('q', "quiet")];

/// Variables with the prefix that are not options: the handover of an
/// upgrade in place (set by echod for the program it re-executes), and
/// those of the tests, benchmarks and the HAProxy configuration in
/// `contrib/`. They draw no warning.
const NOT_OPTIONS: &[&str] = &[
    "HANDOVER_FD",
    "HANDOVER_PROGRAM",
    "BENCH_PEER",
    "FRAMING_BYTES",
    "FRONTEND",
    "STATS",
];

/// What the environment adds to a command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FromEnvironment {
    /// Arguments to put before the command line's.
    pub args: Vec<OsString>,
    /// One warning for each variable with the prefix that names no option.
    pub warnings: Vec<String>,
}

/// The variable that gives option `long` (`max-line-bytes`:
/// `ECHOD_MAX_LINE_BYTES`).
pub fn variable(long: &str) -> String {
    format!("{PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Reads the options `env` gives that `command_line` does not.
/// `check` parses one option's arguments on their own (the daemon's parser
/// with no environment), so that a bad value is reported with the
/// variable's name.
///
/// # Errors
///
/// A `UsageError` naming the variable whose value is wrong, or not UTF-8.
pub fn from_environment<E>(
    env: E,
    command_line: &[OsString],
    check: impl Fn(&[OsString]) -> Result<(), UsageError>,
) -> Result<FromEnvironment, UsageError>
where
    E: IntoIterator<Item = (OsString, OsString)>,
{
    let given = groups_given(command_line);
    let mut env: Vec<(String, OsString)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(PREFIX).then_some((name, value))
        })
        .collect();
    env.sort();
    let mut out = FromEnvironment::default();
    for (name, _) in &env {
        let known = OPTIONS.iter().any(|&(long, _, _)| variable(long) == *name);
        let exempt = NOT_OPTIONS
            .iter()
            .any(|suffix| name[PREFIX.len()..] == **suffix || name.starts_with("ECHOD_SIM_"));
        if !known && !exempt {
            out.warnings.push(format!(
                "{name} is set but is not an option of echod; ignored \
                 (the variables are ECHOD_ and an option's long name, as in ECHOD_MAX_LINE_BYTES)"
            ));
        }
    }
    for &(long, kind, group) in OPTIONS {
        let name = variable(long);
        let Some((_, value)) = env.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        if given.contains(&group) {
            continue;
        }
        let value = value.to_str().ok_or_else(|| {
            UsageError(format!(
                "{name} is not valid UTF-8: {}",
                value.to_string_lossy()
            ))
        })?;
        let args = option_args(long, kind, value)
            .map_err(|why| UsageError(format!("invalid {name} '{value}': {why}")))?;
        // Checked alone, with the flag it depends on: whether that flag is
        // given too is the merged command line's to say.
        let mut alone = args.clone();
        if let Some(&(_, needs)) = NEEDS.iter().find(|(option, _)| *option == long) {
            alone.push(needs.into());
        }
        check(&alone).map_err(|UsageError(why)| UsageError(format!("{name}: {why}")))?;
        out.args.extend(args);
    }
    Ok(out)
}

/// The arguments one variable stands for.
fn option_args(long: &str, kind: Kind, value: &str) -> Result<Vec<OsString>, &'static str> {
    let option = OsString::from(format!("--{long}"));
    match kind {
        Kind::Value => Ok(vec![option, value.into()]),
        Kind::Repeatable => {
            let values: Vec<&str> = value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                return Err("expected one or more values, separated by commas or spaces");
            }
            Ok(values
                .into_iter()
                .flat_map(|v| [option.clone(), v.into()])
                .collect())
        }
        Kind::Flag => match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(vec![option]),
            "" | "0" | "false" | "no" | "off" => Ok(Vec::new()),
            _ => Err("expected 1 or 0 (or true, false, yes, no, on, off)"),
        },
    }
}

/// The groups of the options the command line gives. It is read as lexopt
/// reads it: `--name`, `--name=value`, `-x`, `-xVALUE` and clustered short
/// flags, up to a `--` after which nothing is an option.
fn groups_given(command_line: &[OsString]) -> Vec<&'static str> {
    let mut groups = Vec::new();
    let mut takes_value = false;
    for arg in command_line {
        if std::mem::take(&mut takes_value) {
            continue;
        }
        let Some(arg) = arg.to_str() else { continue };
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (long, inline) = long
                .split_once('=')
                .map_or((long, false), |(l, _)| (l, true));
            if let Some((_, kind, group)) = option(long) {
                groups.push(group);
                takes_value = !inline && kind != Kind::Flag;
            }
        } else if let Some(shorts) = arg.strip_prefix('-') {
            for (i, c) in shorts.char_indices() {
                let Some(&(_, long)) = SHORT.iter().find(|&&(s, _)| s == c) else {
                    break;
                };
                let Some((_, kind, group)) = option(long) else {
                    break;
                };
                groups.push(group);
                if kind != Kind::Flag {
                    // The value is the rest of this argument, or the next.
                    takes_value = i + c.len_utf8() == shorts.len();
                    break;
                }
            }
        }
    }
    groups
}

/// The entry of `OPTIONS` for long option `long`.
fn option(long: &str) -> Option<(&'static str, Kind, &'static str)> {
    OPTIONS.iter().copied().find(|&(name, _, _)| name == long)
}

/// Every long option the daemon's parser takes, for the test that each is
/// in `OPTIONS` (`--help` lists them all).
#[cfg(test)]
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().map(|&(long, _, _)| long)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter().map(|&(n, v)| (n.into(), v.into())).collect()
    }

    fn read(vars: &[(&str, &str)], command_line: &[&str]) -> Result<FromEnvironment, UsageError> {
        from_environment(env(vars), &os(command_line), |_| Ok(()))
    }

    #[test]
    fn variables_become_arguments() {
        let out = read(
            &[
                ("ECHOD_MAX_LINE_BYTES", "4KiB"),
                ("ECHOD_LISTEN", "127.0.0.1:7, [::1]:7"),
                ("ECHOD_QUIET", "yes"),
                ("PATH", "/bin"),
            ],
            &[],
        )
        .expect("read");
        assert_eq!(
            out.args,
            os(&[
                "--listen",
                "127.0.0.1:7",
                "--listen",
                "[::1]:7",
                "--max-line-bytes",
                "4KiB",
                "--quiet"
            ])
        );
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    #[test]
    fn the_command_line_wins_by_group() {
        let vars = [
            ("ECHOD_PORT", "9"),
            ("ECHOD_WORKERS", "2"),
            ("ECHOD_QUIET", "1"),
            ("ECHOD_ALLOW", "10.0.0.0/8"),
        ];
        for command_line in [
            &["-l", "127.0.0.1:0", "--log-level=debug", "--deny", "::1"][..],
            &["-l127.0.0.1:0", "--log-level", "debug", "--allow=::1"],
            &["--listen=127.0.0.1:0", "-q", "--deny", "192.0.2.1"],
        ] {
            let out = read(&vars, command_line).expect("read");
            assert_eq!(out.args, os(&["--workers", "2"]), "{command_line:?}");
        }
        // A value that looks like an option is a value.
        let out = read(&vars, &["--framing", "--port"]).expect("read");
        assert!(out.args.contains(&"--port".into()), "{:?}", out.args);
        // After `--`, nothing is an option.
        let out = read(&vars, &["--", "--port"]).expect("read");
        assert!(out.args.contains(&"--port".into()), "{:?}", out.args);
    }

    #[test]
    fn deny_comes_before_allow() {
        let out = read(
            &[("ECHOD_ALLOW", "10.0.0.0/8"), ("ECHOD_DENY", "10.9.0.0/16")],
            &[],
        )
        .expect("read");
        assert_eq!(
            out.args,
            os(&["--deny", "10.9.0.0/16", "--allow", "10.0.0.0/8"])
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = read(&[("ECHOD_QUIET", "maybe")], &[]).expect_err("bad flag");
        assert!(
            err.0
                .starts_with("invalid ECHOD_QUIET 'maybe': expected 1 or 0"),
            "{}",
            err.0
        );
        let err = read(&[("ECHOD_ALLOW", " , ")], &[]).expect_err("no values");
        assert!(err.0.contains("ECHOD_ALLOW"), "{}", err.0);
        let err = from_environment(env(&[("ECHOD_WORKERS", "lots")]), &[], |args| {
            assert_eq!(args, os(&["--workers", "lots"]));
            Err(UsageError("invalid --workers 'lots'".into()))
        })
        .expect_err("refused by the parser");
        assert_eq!(err.0, "ECHOD_WORKERS: invalid --workers 'lots'");
        assert_eq!(
            read(&[("ECHOD_QUIET", "off")], &[]).expect("off").args,
            os(&[])
        );
        assert_eq!(
            read(&[("ECHOD_QUIET", "ON")], &[]).expect("on").args,
            os(&["--quiet"])
        );
    }

    #[test]
    fn unknown_variables_are_warned_about_once_each() {
        let out = read(
            &[
                ("ECHOD_MAX_LINE_BYTE", "1"),
                ("ECHOD_HELP", "1"),
                ("ECHOD_HANDOVER_FD", "5"),
                ("ECHOD_SIM_SEED", "1"),
                ("ECHOD1", "127.0.0.1:1"),
            ],
            &[],
        )
        .expect("read");
        assert!(out.args.is_empty());
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[0].starts_with("ECHOD_HELP is set but is not an option"));
        assert!(out.warnings[1].starts_with("ECHOD_MAX_LINE_BYTE is set"));
    }

    #[test]
    fn variable_names() {
        assert_eq!(
            variable("max-connections-per-ip"),
            "ECHOD_MAX_CONNECTIONS_PER_IP"
        );
        assert_eq!(variable("listen"), "ECHOD_LISTEN");
    }
}
