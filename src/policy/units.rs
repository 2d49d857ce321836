//! Parsers for the human-friendly sizes and durations used in policies and flags.
//!
//! Sizes: a whole number with an optional suffix `B`, `K`, `M`, `G`, `T` or `Ki`, `Mi`, `Gi`,
//! `Ti`. Following Docker's `--memory` convention, the single-letter suffixes are binary
//! too: `512M` means 512 MiB.
//! Durations: a whole number with a suffix `ms`, `s`, `m` or `h`; a bare number is seconds.

use std::time::Duration;

use thiserror::Error;

/// Why a size or duration string was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    /// The value is empty or only whitespace.
    #[error("empty value")]
    Empty,
    /// The value (given) does not start with a digit.
    #[error("`{}` is not a number followed by an optional unit", .0.escape_default())]
    Malformed(String),
    /// The suffix is not a known unit.
    #[error("unknown unit `{}` in `{}` (use {allowed})", unit.escape_default(), value.escape_default())]
    UnknownUnit {
        /// The whole value.
        value: String,
        /// The suffix.
        unit: String,
        /// The units accepted, for the message.
        allowed: &'static str,
    },
    /// The value (given) does not fit in 64 bits.
    #[error("`{}` is too large", .0.escape_default())]
    Overflow(String),
}

const SIZE_UNITS: &str = "B, K, M, G, T, Ki, Mi, Gi, Ti";
const DURATION_UNITS: &str = "ms, s, m, h";

fn split_number(value: &str) -> Result<(u64, &str), UnitError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(UnitError::Empty);
    }
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(UnitError::Malformed(value.to_string()));
    }
    let (num, unit) = v.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| UnitError::Overflow(value.to_string()))?;
    Ok((n, unit))
}

/// Parses a size such as `512M`, `1Gi`, `64k` or `1048576` into bytes.
///
/// Single-letter suffixes are binary (as `docker run --memory` treats them); the
/// suffixes are case-insensitive.
pub fn parse_size(value: &str) -> Result<u64, UnitError> {
    let (n, unit) = split_number(value)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kb" | "kib" => 1 << 10,
        "m" | "mi" | "mb" | "mib" => 1 << 20,
        "g" | "gi" | "gb" | "gib" => 1 << 30,
        "t" | "ti" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(UnitError::UnknownUnit {
                value: value.to_string(),
                unit: unit.to_string(),
                allowed: SIZE_UNITS,
            })
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| UnitError::Overflow(value.to_string()))
}

/// Parses a duration such as `30s`, `1500ms`, `5m` or `1h`; a bare number is seconds.
pub fn parse_duration(value: &str) -> Result<Duration, UnitError> {
    let (n, unit) = split_number(value)?;
    let ms_per: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(UnitError::UnknownUnit {
                value: value.to_string(),
                unit: unit.to_string(),
                allowed: DURATION_UNITS,
            })
        }
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| UnitError::Overflow(value.to_string()))
}

/// Formats bytes exactly, the way [`parse_size`] reads them back: the whole number of the
/// largest binary unit (`Ti`, `Gi`, `Mi`, `Ki`) that divides `bytes`, else the bare number
/// of bytes. Never rounds: `512 << 20` prints `512Mi`, `1536 << 20` prints `1536Mi`, `1536`
/// prints `1536`, `0` prints `0`.
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        let unit = 1u64 << shift;
        if bytes != 0 && bytes % unit == 0 {
            return format!("{}{}", bytes / unit, suffix);
        }
    }
    bytes.to_string()
}

/// Formats a duration the way [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_table() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("0", Ok(0)),
            ("1", Ok(1)),
            ("512M", Ok(512 << 20)),
            ("512Mi", Ok(512 << 20)),
            ("1G", Ok(1 << 30)),
            ("1gi", Ok(1 << 30)),
            ("64k", Ok(64 << 10)),
            ("64Ki", Ok(64 << 10)),
            ("2T", Ok(2 << 40)),
            ("10B", Ok(10)),
            (" 3M ", Ok(3 << 20)),
            ("", Err(())),
            ("M", Err(())),
            ("-1M", Err(())),
            ("1.5G", Err(())),
            ("12X", Err(())),
            ("99999999999999999999", Err(())),
            ("20000000T", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).map_err(|_| ()), *want, "input {input:?}");
        }
    }

    #[test]
    fn format_size_prints_the_largest_exact_unit() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1"),
            (1536, "1536"),
            (1 << 10, "1Ki"),
            (512 << 20, "512Mi"),
            (1536 << 20, "1536Mi"),
            (1 << 30, "1Gi"),
            (3 << 40, "3Ti"),
            (1 << 50, "1024Ti"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_size(*bytes), *want, "bytes {bytes}");
        }
    }

    #[test]
    fn durations_table() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("30s", Ok(30_000)),
            ("30", Ok(30_000)),
            ("1500ms", Ok(1500)),
            ("5m", Ok(300_000)),
            ("1h", Ok(3_600_000)),
            ("0s", Ok(0)),
            ("", Err(())),
            ("s", Err(())),
            ("-5s", Err(())),
            ("1.5s", Err(())),
            ("3d", Err(())),
            ("5M", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_duration(input)
                    .map(|d| d.as_millis() as u64)
                    .map_err(|_| ()),
                *want,
                "input {input:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn size_parser_never_panics(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn size_round_trips(n in 0u64..(1u64 << 50)) {
            prop_assert_eq!(parse_size(&format_size(n)).unwrap(), n);
        }

        #[test]
        fn duration_round_trips(ms in 0u64..(1u64 << 40)) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn binary_suffixes_scale(n in 0u64..(1u64 << 20)) {
            prop_assert_eq!(parse_size(&format!("{n}K")).unwrap(), n << 10);
            prop_assert_eq!(parse_size(&format!("{n}Mi")).unwrap(), n << 20);
        }
    }
}
