//! Parsers for the small value languages of the policy file: durations and rates.

use std::num::NonZeroU32;
use std::time::Duration;

/// Parses a duration such as `"30s"`, `"100ms"` or `"1m 30s"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "invalid duration \"{text}\" ({e}); expected a number with a unit, such as \"30s\" or \"100ms\""
        )
    })
}

/// Parses a rate such as `"20/s"`, `"100/min"` or `"5/10s"` into (count, period).
pub(crate) fn parse_rate(text: &str) -> Result<(NonZeroU32, Duration), String> {
    let expected = "expected a count per unit, such as \"20/s\", \"100/min\" or \"5/10s\"";
    let Some((count, unit)) = text.split_once('/') else {
        return Err(format!("invalid rate \"{text}\"; {expected}"));
    };
    let count: u32 = count.trim().parse().map_err(|_| {
        format!("invalid rate \"{text}\": the count is not a whole number; {expected}")
    })?;
    let period = match unit.trim() {
        "ms" => Duration::from_millis(1),
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => humantime::parse_duration(other).map_err(|_| {
            format!("invalid rate \"{text}\": unknown unit \"{other}\"; {expected}")
        })?,
    };
    let Some(count) = NonZeroU32::new(count) else {
        return Err(format!(
            "rate \"{text}\" is zero; expected at least 1 per unit"
        ));
    };
    if period.is_zero() {
        return Err(format!("rate \"{text}\" has a zero period; {expected}"));
    }
    Ok((count, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rates() {
        let r = |t| parse_rate(t).map(|(c, p)| (c.get(), p));
        assert_eq!(r("20/s"), Ok((20, Duration::from_secs(1))));
        assert_eq!(r("100/min"), Ok((100, Duration::from_secs(60))));
        assert_eq!(r("5/10s"), Ok((5, Duration::from_secs(10))));
        assert_eq!(r(" 3 / hour "), Ok((3, Duration::from_secs(3600))));
        assert!(r("0/s").unwrap_err().contains("zero"));
        assert!(r("20").is_err());
        assert!(r("x/s").is_err());
        assert!(r("20/fortnight").is_err());
        assert!(r("-1/s").is_err());
    }
}
