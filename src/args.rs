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
const MAX_SECONDS: Duration = Duration::from_secs(365 * 24 * 3600);

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

/// Seconds, possibly fractional, such as `5` or `0.25`; at most a year.
///
/// # Errors
///
/// If it is not a non-negative number of seconds, or is more than a year.
pub(crate) fn seconds(value: OsString, option: &str) -> Result<Duration, UsageError> {
    let value = string(value, option)?;
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|duration| *duration <= MAX_SECONDS)
        .ok_or_else(|| {
            UsageError(format!(
                "invalid {option} '{value}': expected seconds, such as 5 or 0.5"
            ))
        })
}

/// Parses a timeout in seconds, where 0 turns it off (`None`). A value
/// that is not 0 but comes to less than a millisecond, the resolution of
/// echod's clock, is refused rather than silently meaning "never".
pub(crate) fn timeout(value: OsString, option: &str) -> Result<Option<Duration>, UsageError> {
    let text = value.to_string_lossy().into_owned();
    let timeout = seconds(value, option)?;
    if timeout.is_zero() {
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
