//! Durations written the way operators write them (`500ms`, `2s`, `30m`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration accepted anywhere (configuration, `for` of a maintenance call).
pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration in the configuration: a newtype so that every duration key parses the same
/// human form and prints back in it, in `check` summaries and in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Builds a duration from seconds, for defaults.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    /// Builds a duration from milliseconds, for defaults.
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    /// The std duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses `500ms`, `2s`, `1m30s`, `24h`.
    pub fn parse(text: &str) -> Result<Self, DurError> {
        let d = humantime::parse_duration(text.trim()).map_err(|source| DurError::Invalid {
            text: text.to_string(),
            source,
        })?;
        // No setting means anything beyond a year, and the cap keeps every sum and product
        // of durations fulcrum computes (deadlines, ejection × count) far from overflow.
        if d > MAX {
            return Err(DurError::TooLong {
                text: text.to_string(),
            });
        }
        Ok(Dur(d))
    }
}

/// Why a duration was refused. Configuration keys, scenarios and the admin API's `for` all
/// show it to an operator, so it quotes the text and says what to write instead.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DurError {
    /// Not in humantime's form at all (`soon`, a bare `10`).
    #[error("`{text}` is not a duration ({source}); write e.g. 500ms, 2s, 30m, 24h")]
    Invalid {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    /// Beyond a year (`MAX`).
    #[error("`{text}` is longer than a year")]
    TooLong { text: String },
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Dur::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_forms() {
        assert_eq!(
            Dur::parse("500ms").unwrap().get(),
            Duration::from_millis(500)
        );
        assert_eq!(Dur::parse("2s").unwrap().get(), Duration::from_secs(2));
        assert_eq!(Dur::parse("30m").unwrap().get(), Duration::from_secs(1800));
        assert_eq!(Dur::parse("24h").unwrap().get(), Duration::from_secs(86400));
        assert!(Dur::parse("soon").is_err());
        assert!(Dur::parse("10").is_err());
        assert!(Dur::parse("400days").is_err(), "capped at a year");
    }
}
