//! Durations as humans write them (`10m`, `90s`, `1h 30m`), for stage
//! arguments such as the reproduce budget (kGym's `restart-time`).

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses `10m`, `90s`, `1h 30m`, `500ms`; a bare number means seconds.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(kgym_core::duration::parse("10m").unwrap(), Duration::from_secs(600));
/// assert_eq!(kgym_core::duration::parse("45").unwrap(), Duration::from_secs(45));
/// ```
pub fn parse(text: &str) -> Result<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|source| Error::InvalidDuration { input: text.to_owned(), source })
}

/// Formats a duration the way [`parse`] reads it (`10m`, `1m 30s`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde adapter: a duration as a human string (`"10m"`); numbers are read
/// as seconds. Use with `#[serde(with = "kgym_core::duration::serde_human")]`.
pub mod serde_human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as a human string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::format(*d))
    }

    /// Reads a human string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Duration::from_secs_f64(f)),
            Raw::Float(f) => Err(serde::de::Error::custom(format!("invalid duration {f}"))),
            Raw::Text(t) => super::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Like [`serde_human`] for `Option<Duration>`.
pub mod serde_human_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as a human string, `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serde_human::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads null, a human string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::serde_human")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kgym_restart_times() {
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse("ten minutes").is_err());
        assert_eq!(parse(&format(Duration::from_secs(90))).unwrap(), Duration::from_secs(90));
    }
}
