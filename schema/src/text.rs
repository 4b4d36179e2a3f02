//! Parsing of times and sizes given on the command line, in configuration
//! files and in HTTP parameters.

use crate::time::NANOS_PER_SEC;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Parses a time: epoch seconds with an optional fraction of up to nine
/// digits (`1700000000.25`), or RFC 3339 (`2023-11-14T22:13:20Z`).
/// Returns nanoseconds since the epoch.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let accepted =
        "accepted are epoch seconds with an optional fraction (1700000000.25) and RFC 3339 (2023-11-14T22:13:20Z)";
    if text.starts_with(|c: char| c.is_ascii_digit()) && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
        if fraction.len() > 9 || fraction.contains('.') {
            return Err(format!("invalid time {text:?}: at most nine fraction digits are accepted; {accepted}"));
        }
        let seconds: u64 = seconds.parse().map_err(|_| format!("invalid time {text:?}; {accepted}"))?;
        let nanos: u64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().expect("nine digits") };
        return seconds.checked_mul(NANOS_PER_SEC).and_then(|ns| ns.checked_add(nanos)).ok_or_else(|| {
            format!("invalid time {text:?}: the latest accepted time is epoch 18446744073 (2554-07-21)")
        });
    }
    // RFC 3339 allows any number of fraction digits; the time crate drops those past nine.
    if let Some((_, fraction)) = text.split_once('.') {
        let digits = fraction.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits > 9 {
            return Err(format!("invalid time {text:?}: at most nine fraction digits are accepted; {accepted}"));
        }
    }
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| format!("invalid time {text:?}; {accepted}, with a 'Z' or '+hh:mm' offset in RFC 3339"))?;
    let nanos = parsed.unix_timestamp_nanos();
    if nanos < 0 {
        return Err(format!("invalid time {text:?}: times before 1970 are not accepted"));
    }
    u64::try_from(nanos).map_err(|_| format!("invalid time {text:?}: the latest accepted time is 2554-07-21T23:34:33Z"))
}

/// Parses a size in bytes with an optional binary suffix: `K`, `M`, `G`, `T`
/// (optionally followed by `B` or `iB`), for example `256M` or `10GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| {
        format!("invalid size {text:?}; give a number of bytes with an optional K, M, G or T suffix, such as 256M")
    })?;
    let multiplier: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("invalid size suffix in {text:?}; accepted are K, M, G and T (powers of 1024)")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_with_fraction() {
        assert_eq!(parse_time("1700000000.25").unwrap(), 1_700_000_000_250_000_000);
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(parse_time("1700000000.000000001").unwrap(), 1_700_000_000_000_000_001);
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(parse_time("2023-11-14T23:13:20.5+01:00").unwrap(), 1_700_000_000_500_000_000);
    }

    #[test]
    fn rfc3339_limits_are_reported() {
        assert!(parse_time("2014-10-19T19:16:56.3464560001Z").unwrap_err().contains("nine fraction digits"));
        assert!(parse_time("9999-12-31T23:59:59Z").unwrap_err().contains("latest accepted"));
        assert!(parse_time("1969-12-31T23:59:59Z").unwrap_err().contains("before 1970"));
        assert!(parse_time("2014-10-19T19:16:56").unwrap_err().contains("offset"));
    }

    #[test]
    fn invalid_times_name_the_value() {
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("\"yesterday\""), "{err}");
        assert!(parse_time("1.1234567891").is_err());
    }

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10X").unwrap_err().contains("suffix"));
    }
}
