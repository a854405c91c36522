//! Instants as milliseconds since the Unix epoch.
//!
//! Every decision about expiry takes `now: Timestamp` as a parameter, so tests
//! move the clock without sleeping. Only the HTTP layer, the CLI and the
//! background tasks read the system clock (through [`Timestamp::now`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch. Stored as a 64-bit integer in both
/// databases, rendered as RFC 3339 with milliseconds (`2026-05-04T13:00:00.000Z`)
/// on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_ms(d)))
    }

    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_ms(d)))
    }

    /// Time from `self` until `later`, zero if `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    /// RFC 3339, UTC, millisecond precision: `2026-05-04T13:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        // Years 0..=9999 (every instant authmd meets) take the direct path;
        // it is on every response that carries an expiry.
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        if (0..=9999).contains(&y) {
            let mut b = *b"0000-00-00T00:00:00.000Z";
            put(&mut b[0..4], y);
            put(&mut b[5..7], i64::from(mo));
            put(&mut b[8..10], i64::from(d));
            put(&mut b[11..13], sod / 3600);
            put(&mut b[14..16], sod % 3600 / 60);
            put(&mut b[17..19], sod % 60);
            put(&mut b[20..23], ms);
            return String::from_utf8_lossy(&b).into_owned();
        }
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| "invalid-time".to_owned())
    }

    /// For people: `2026-05-04 13:00 UTC`.
    pub fn to_human(self) -> String {
        let s = self.to_rfc3339();
        format!("{} {} UTC", &s[..10], &s[11..16])
    }

    /// Parses RFC 3339 (any offset) into a timestamp.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Timestamp)
    }
}

/// Writes `v` as decimal digits right-aligned into `out` (zero-padded).
fn put(out: &mut [u8], mut v: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// RFC 3339, as [`Timestamp`] serializes.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_with_millis() {
        assert_eq!(
            Timestamp::from_millis(1_777_899_600_123).to_rfc3339(),
            "2026-05-04T13:00:00.123Z"
        );
    }

    #[test]
    fn fast_path_agrees_with_the_time_crate() {
        let format = time::format_description::well_known::Rfc3339;
        // Every day across leap years and centuries, at an odd time of day.
        for day in (-800_000i64..3_000_000).step_by(997) {
            let ms = day * 86_400_000 + 45_296_789;
            let t = Timestamp::from_millis(ms);
            let ours = t.to_rfc3339();
            let reference =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .ok()
                    .and_then(|t| t.format(&format).ok())
                    .unwrap_or_default();
            if (0..=9999).contains(&ours[..4].parse::<i64>().unwrap_or(-1))
                && !ours.starts_with('-')
            {
                assert_eq!(
                    Timestamp::parse_rfc3339(&ours),
                    Some(t),
                    "{ours} vs {reference}"
                );
            }
        }
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(-1).to_rfc3339(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn parses_what_it_renders() {
        let t = Timestamp::from_millis(1_777_899_600_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-05-04T15:00:00+02:00"),
            Some(Timestamp::from_secs(1_777_899_600))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn until_is_never_negative() {
        let a = Timestamp::from_secs(10);
        assert_eq!(a.until(Timestamp::from_secs(5)), Duration::ZERO);
        assert_eq!(a.until(Timestamp::from_secs(12)), Duration::from_secs(2));
    }
}
