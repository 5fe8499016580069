//! Option values turned into what a tool wants, with one error type and one
//! wording for every tool: `invalid --conns '0': expected a whole number of
//! at least 1`.
//!
//! The tools parse their command lines with `lexopt`, which hands each
//! option's value over as an `OsString`; these helpers take it from there.
//! What a value means, and which combinations are allowed, stays with each
//! tool.

use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A command line that cannot be run; the message names the option and the
/// value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<lexopt::Error> for UsageError {
    fn from(err: lexopt::Error) -> UsageError {
        UsageError(err.to_string())
    }
}

/// `value` as a `String`.
///
/// # Errors
///
/// If `value` is not valid UTF-8.
pub fn string(value: OsString, option: &str) -> Result<String, UsageError> {
    value.into_string().map_err(|value| {
        UsageError(format!(
            "invalid {option} '{}': not valid UTF-8",
            value.to_string_lossy()
        ))
    })
}

/// `value` parsed as a `T` (a number, an address: anything `FromStr`).
///
/// # Errors
///
/// If `value` is not UTF-8 or does not parse.
pub fn number<T: FromStr>(value: OsString, option: &str) -> Result<T, UsageError> {
    let value = string(value, option)?;
    value
        .parse()
        .map_err(|_| UsageError(format!("invalid {option} '{value}'")))
}

/// `value` as a whole number of at least 1.
///
/// # Errors
///
/// If `value` is not a number, or is 0.
pub fn positive<T>(value: OsString, option: &str) -> Result<T, UsageError>
where
    T: FromStr + PartialOrd + From<u8>,
{
    let value = string(value, option)?;
    match value.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(UsageError(format!(
            "invalid {option} '{value}': expected a whole number of at least 1"
        ))),
    }
}

/// `value` as a duration in seconds, possibly fractional (`0.5`).
///
/// # Errors
///
/// If `value` is not a number, or is negative, infinite or too large for a
/// `Duration`.
pub fn seconds(value: OsString, option: &str) -> Result<Duration, UsageError> {
    let value = string(value, option)?;
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| UsageError(format!("invalid {option} '{value}': expected seconds")))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::net::SocketAddr;
    use std::os::unix::ffi::OsStringExt;
    use std::time::Duration;

    use super::*;

    fn os(text: &str) -> OsString {
        OsString::from(text)
    }

    #[test]
    fn values_parse_into_what_the_option_wants() {
        assert_eq!(string(os("crlf"), "--framing"), Ok("crlf".to_string()));
        assert_eq!(number::<f64>(os("2.5"), "--rate"), Ok(2.5));
        assert_eq!(
            number::<SocketAddr>(os("127.0.0.1:7"), "--addr"),
            Ok(([127, 0, 0, 1], 7).into())
        );
        assert_eq!(positive::<usize>(os("3"), "--conns"), Ok(3));
        assert_eq!(
            seconds(os("1.5"), "--duration"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(seconds(os("0"), "--warmup"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_name_the_option_and_the_value() {
        let cases: [(Result<(), UsageError>, &str); 7] = [
            (
                string(OsString::from_vec(vec![b'a', 0xff]), "--addr").map(drop),
                "invalid --addr 'a\u{fffd}': not valid UTF-8",
            ),
            (
                number::<u64>(os("x"), "--seed").map(drop),
                "invalid --seed 'x'",
            ),
            (
                positive::<usize>(os("0"), "--conns").map(drop),
                "invalid --conns '0': expected a whole number of at least 1",
            ),
            (
                positive::<usize>(os("-1"), "--conns").map(drop),
                "invalid --conns '-1': expected a whole number of at least 1",
            ),
            (
                seconds(os("-1"), "--duration").map(drop),
                "invalid --duration '-1': expected seconds",
            ),
            (
                seconds(os("inf"), "--duration").map(drop),
                "invalid --duration 'inf': expected seconds",
            ),
            (
                seconds(os("soon"), "--duration").map(drop),
                "invalid --duration 'soon': expected seconds",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result, Err(UsageError(message.to_string())));
        }
    }

    #[test]
    fn lexopt_errors_convert() {
        let mut parser = lexopt::Parser::from_args(["--conns"]);
        let _ = parser.next();
        let err = parser.value().expect_err("--conns has no value");
        assert!(UsageError::from(err).0.contains("--conns"));
    }
}
