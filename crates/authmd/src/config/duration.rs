//! Human-readable durations in configuration: `"24h"`, `"10m"`, `"3s"`,
//! `"500ms"`, `"1h30m"`, `"7d"`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`Duration`] written in configuration as a string such as `"10m"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
    pub const fn get(self) -> Duration {
        self.0
    }
}

/// Parses `<number><unit>` groups, units `d`, `h`, `m`, `s`, `ms`, in
/// descending order, each at most once (`"1h30m"`). No sign, no fractions,
/// no spaces: a typo must stop the server, not become a surprising value.
pub fn parse(s: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1_000),
    ];
    // Rank of each unit in the required descending order.
    let rank = |u: &str| match u {
        "d" => 0,
        "h" => 1,
        "m" => 2,
        "s" => 3,
        _ => 4,
    };
    if s.is_empty() {
        return Err("empty duration; write e.g. \"10m\"".into());
    }
    let bad = || format!("invalid duration {s:?}; write e.g. \"24h\", \"10m\", \"3s\", \"1h30m\"");
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_rank: Option<u8> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, factor) = UNITS
            .iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        let r = rank(unit);
        if last_rank.is_some_and(|l| l >= r) {
            return Err(bad());
        }
        last_rank = Some(r);
        total = n
            .checked_mul(*factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total))
}

/// Renders a duration in the same syntax, largest units first.
pub fn format(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, factor) in [("h", 3_600_000u64), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= factor {
            out.push_str(&format!("{}{unit}", ms / factor));
            ms %= factor;
        }
    }
    out
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("1m500ms"), Ok(Duration::from_millis(60_500)));
    }

    #[test]
    fn refuses_what_a_typo_looks_like() {
        for bad in [
            "",
            "10",
            "m",
            "10 m",
            "-5s",
            "1.5h",
            "10min",
            "5s1h",
            "1h1h",
            "10M",
            "99999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["24h", "10m", "3s", "1h30m", "250ms", "26h"] {
            assert_eq!(format(parse(s).unwrap_or_default()), s);
        }
    }
}

/// Renders a duration for people: `24 hours`, `10 minutes`, `1 hour 30 minutes`.
pub fn words(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{} milliseconds", d.as_millis());
    }
    let mut parts = Vec::new();
    for (unit, size) in [
        ("day", 86_400u64),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ] {
        let n = secs / size;
        if n > 0 {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
            secs %= size;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod words_tests {
    use super::*;

    #[test]
    fn reads_naturally() {
        assert_eq!(words(Duration::from_secs(86_400)), "1 day");
        assert_eq!(words(Duration::from_secs(600)), "10 minutes");
        assert_eq!(words(Duration::from_secs(5400)), "1 hour 30 minutes");
    }
}
