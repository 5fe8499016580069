//! What the two command lines (`echod` in `cli`, `echod probe` in `probe`)
//! share: `UsageError`, and the parsers that read one option's value.
//!
//! Each parser takes the value as lexopt gives it and the option's name, and
//! its error names both, in the form every message of echod's command line
//! has: `invalid --port '70000': expected a whole number`. This module knows
//! no option and no default; it sits below `cli` and `probe`, so that neither
//! has to import the other's parsing.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

/// Longest duration `seconds` accepts: a year is already far beyond any
/// sensible timeout, and the bound keeps every deadline computation far from
/// overflow.
pub(crate) const MAX_SECONDS: Duration = Duration::from_secs(365 * 24 * 3600);

/// A command line that cannot be run, with a one-line explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

/// The value as a `String`.
///
/// # Errors
///
/// If it is not valid UTF-8.
pub(crate) fn string(value: OsString, option: &str) -> Result<String, UsageError> {
    value.into_string().map_err(|value| {
        UsageError(format!(
            "invalid {option} '{}': not valid UTF-8",
            value.to_string_lossy()
        ))
    })
}

/// A whole number of type `T`, such as `12321`.
///
/// # Errors
///
/// If it is not a number `T` can hold.
pub(crate) fn number<T: std::str::FromStr>(value: OsString, option: &str) -> Result<T, UsageError> {
    let value = string(value, option)?;
    value.parse().map_err(|_| {
        UsageError(format!(
            "invalid {option} '{value}': expected a whole number"
        ))
    })
}

/// A whole number in `min..=max`, such as a port (`0..=65535`).
///
/// # Errors
///
/// If it is not a whole number (`expected a whole number`), or lies outside
/// `min..=max`, however many digits it has (`must be between 0 and 65535`,
/// or `must be at least 1` when `max` is `u64::MAX`).
pub(crate) fn number_in(
    value: OsString,
    option: &str,
    min: u64,
    max: u64,
) -> Result<u64, UsageError> {
    let value = string(value, option)?;
    let invalid = |why: String| UsageError(format!("invalid {option} '{value}': {why}"));
    let out_of_range = || {
        invalid(if max == u64::MAX {
            format!("must be at least {min}")
        } else {
            format!("must be between {min} and {max}")
        })
    };
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(out_of_range()),
        // Digits, but more than a u64 holds: out of range, not "not a number".
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            Err(out_of_range())
        }
        Err(_) => Err(invalid("expected a whole number".into())),
    }
}

/// A byte size such as `65536`, `64K`, `64KiB` or `1M` (powers of 1024), in
/// `min..=max`.
///
/// # Errors
///
/// If it is not a size, or lies outside `min..=max`.
pub(crate) fn size(
    value: OsString,
    option: &str,
    min: usize,
    max: usize,
) -> Result<usize, UsageError> {
    let value = string(value, option)?;
    let invalid = |why: &str| UsageError(format!("invalid {option} '{value}': {why}"));
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(digits_end);
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid("expected bytes, optionally with K, KiB, M or MiB")),
    };
    let bytes = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| invalid("expected bytes, optionally with K, KiB, M or MiB"))?;
    if !(min..=max).contains(&bytes) {
        return Err(invalid(&format!("must be between {min} and {max} bytes")));
    }
    Ok(bytes)
}

/// Seconds, possibly fractional, such as `5` or `0.25`; at most a year
/// (`MAX_SECONDS`).
///
/// # Errors
///
/// If it is not a non-negative number of seconds (`expected seconds`), or
/// is more than a year (`too large: at most 31536000 seconds`).
pub(crate) fn seconds(value: OsString, option: &str) -> Result<Duration, UsageError> {
    let value = string(value, option)?;
    let invalid = |why: String| UsageError(format!("invalid {option} '{value}': {why}"));
    let secs = value
        .parse::<f64>()
        .ok()
        .filter(|secs| *secs >= 0.0)
        .ok_or_else(|| invalid("expected seconds, such as 5 or 0.5".into()))?;
    // Infinity included: a number, but not a timeout.
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if duration <= MAX_SECONDS => Ok(duration),
        _ => Err(invalid(format!(
            "too large: at most {} seconds (a year)",
            MAX_SECONDS.as_secs()
        ))),
    }
}

/// Parses a timeout in seconds, where 0 turns it off (`None`). A value
/// that is not 0 but comes to less than a millisecond, the resolution of
/// echod's clock, is refused rather than silently meaning "never".
pub(crate) fn timeout(value: OsString, option: &str) -> Result<Option<Duration>, UsageError> {
    let text = value.to_string_lossy().into_owned();
    let timeout = seconds(value, option)?;
    // `seconds` accepted the text, so it is a number.
    let asked_for_zero = text.trim().parse::<f64>().is_ok_and(|secs| secs == 0.0);
    if asked_for_zero {
        return Ok(None);
    }
    if timeout < Duration::from_millis(1) {
        return Err(UsageError(format!(
            "invalid {option} '{text}': below a millisecond; give 0 to turn it off"
        )));
    }
    Ok(Some(timeout))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_seconds_say_which_bound_they_break() {
        let number =
            |value: &str, min, max| number_in(value.into(), "--n", min, max).map_err(|err| err.0);
        assert_eq!(number("65535", 0, 65535), Ok(65535));
        assert_eq!(number("+7", 0, 65535), Ok(7));
        let cases = [
            (
                number("70000", 0, 65535),
                "invalid --n '70000': must be between 0 and 65535",
            ),
            (
                number("99999999999999999999", 0, 65535),
                "invalid --n '99999999999999999999': must be between 0 and 65535",
            ),
            (
                number("0", 1, u64::MAX),
                "invalid --n '0': must be at least 1",
            ),
            (
                number("http", 0, 65535),
                "invalid --n 'http': expected a whole number",
            ),
            (
                number("-1", 0, 65535),
                "invalid --n '-1': expected a whole number",
            ),
            (
                number("", 0, 65535),
                "invalid --n '': expected a whole number",
            ),
        ];
        for (got, expected) in cases {
            assert_eq!(got, Err(expected.to_owned()));
        }
        let secs = |value: &str| seconds(value.into(), "--t").map_err(|err| err.0);
        assert_eq!(secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(secs("31536000"), Ok(MAX_SECONDS));
        for too_large in ["31536000.5", "99999999999999999999", "inf", "1e300"] {
            assert_eq!(
                secs(too_large),
                Err(format!(
                    "invalid --t '{too_large}': too large: at most 31536000 seconds (a year)"
                ))
            );
        }
        for not_seconds in ["-1", "five", "NaN", ""] {
            assert_eq!(
                secs(not_seconds),
                Err(format!(
                    "invalid --t '{not_seconds}': expected seconds, such as 5 or 0.5"
                ))
            );
        }
    }
}
