//! RFC 3339 UTC timestamps: the one place stockade turns Unix time into
//! `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (run logs, records, containerd's `gc.expire` label).

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since the Unix epoch.
pub fn millis(unix_ms: u64) -> String {
    let (date, time) = split(unix_ms / 1000);
    format!("{date}T{time}.{:03}Z", unix_ms % 1000)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of `t` (whole seconds; before the epoch reads as the epoch).
pub fn seconds(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (date, time) = split(secs);
    format!("{date}T{time}Z")
}

/// The date and the time of day of `secs` since the epoch.
fn split(secs: u64) -> (String, String) {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", sod / 3600, (sod / 60) % 60, sod % 60),
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both in range by construction: day 1..=31, month 1..=12.
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_with_and_without_milliseconds() {
        assert_eq!(millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(seconds(t), "2023-11-14T22:13:20Z");
        assert_eq!(seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
