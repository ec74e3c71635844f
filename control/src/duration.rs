//! Human-readable durations for the configuration: `"100ms"`, `"10s"`, `"15m"`, `"2h"`, and sums
//! of them such as `"1m30s"`.

use std::fmt;
use std::time::Duration;

/// Why a duration did not parse. `Display` says what was expected; the caller names the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Nothing but whitespace.
    Empty,
    /// A number without a unit, e.g. `"10"`.
    MissingUnit,
    /// A unit other than `ms`, `s`, `m`, `h`.
    UnknownUnit,
    /// A unit without a number before it, or a stray character.
    MissingNumber,
    /// Larger than `Duration` can hold.
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            DurationError::Empty => "empty duration",
            DurationError::MissingUnit => "number without a unit",
            DurationError::UnknownUnit => "unknown unit",
            DurationError::MissingNumber => "unit without a number",
            DurationError::Overflow => "duration too large",
        };
        write!(
            f,
            "{what}, expected a duration such as \"100ms\", \"10s\", \"15m\", \"2h\" or \"1m30s\""
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses a sequence of `<integer><unit>` terms, units `ms`, `s`, `m`, `h`, and returns their sum.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::MissingNumber);
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow)?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = rest.split_at(unit_len);
        let term = match unit {
            "" => return Err(DurationError::MissingUnit),
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            _ => return Err(DurationError::UnknownUnit),
        };
        total = term
            .and_then(|term| total.checked_add(term))
            .ok_or(DurationError::Overflow)?;
        rest = after;
    }
    Ok(total)
}

/// Formats a duration the way the configuration spells it, in the largest exact unit
/// (`15m`, `10s`, `1500ms`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        "0s".to_owned()
    } else if millis.is_multiple_of(3_600_000) {
        format!("{}h", millis / 3_600_000)
    } else if millis.is_multiple_of(60_000) {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_mins(15));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_hours(2));
        assert_eq!(parse_duration(" 1m30s ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("10"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration("10d"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("s"), Err(DurationError::MissingNumber));
        assert_eq!(parse_duration("1 s"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration("-1s"), Err(DurationError::MissingNumber));
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("18446744073709551615h"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn formats_in_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_mins(15)), "15m");
        assert_eq!(format_duration(Duration::from_hours(2)), "2h");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
