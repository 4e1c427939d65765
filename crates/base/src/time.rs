//! [`Timestamp`], the one way homestak writes down a moment: milliseconds
//! since the Unix epoch in memory, RFC 3339 in UTC on the wire and on disk
//! (`2026-12-02T04:33:35.123Z`). Stores written before it was a string hold
//! plain milliseconds; both read back.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A moment, to the millisecond.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

/// Text that is not an RFC 3339 time after 1970.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time (like 2026-12-02T04:33:35Z) at or after 1970")]
pub struct ParseError {
    pub text: String,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// The current wall-clock time (the epoch if the clock is before it).
    pub fn now() -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This moment plus `d`, saturating.
    pub fn plus(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Timestamp {
    /// RFC 3339 in UTC, when the moment is before year 10000.
    fn rfc3339(self) -> Option<String> {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC: whole seconds as `…:20Z`, else milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339() {
            Some(text) => f.write_str(&text),
            // Beyond year 9999: nothing formats it, the number still says it.
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl FromStr for Timestamp {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Timestamp, ParseError> {
        let err = || ParseError {
            text: text.to_string(),
        };
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| err())?;
        let ms = parsed.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms).map(Timestamp).map_err(|_| err())
    }
}

impl Serialize for Timestamp {
    /// RFC 3339; beyond what it can write (year 9999), the milliseconds,
    /// which read back too.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339() {
            Some(text) => serializer.serialize_str(&text),
            None => serializer.serialize_u64(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            // Store records from before timestamps were strings.
            Millis(u64),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Wire::Millis(ms) => Ok(Timestamp(ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_rfc3339_and_reads_it_back() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00Z");
        let t = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z");
        assert_eq!("2023-11-14T22:13:20.123Z".parse::<Timestamp>(), Ok(t));
        assert_eq!(
            "2023-11-14T23:13:20.123+01:00".parse::<Timestamp>(),
            Ok(t),
            "offsets are converted to UTC"
        );
        assert!("1969-12-31T23:59:59Z".parse::<Timestamp>().is_err());
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn serde_writes_text_and_reads_text_or_millis() {
        let t = Timestamp::from_millis(5_000);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"1970-01-01T00:00:05Z\""
        );
        assert_eq!(
            serde_json::from_str::<Timestamp>("\"1970-01-01T00:00:05Z\"").unwrap(),
            t
        );
        assert_eq!(serde_json::from_str::<Timestamp>("5000").unwrap(), t);
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
        // Past what RFC 3339 can write: a number, which reads back.
        let far = Timestamp::from_millis(u64::MAX);
        let text = serde_json::to_string(&far).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&text).unwrap(), far);
        assert!(serde_json::from_str::<Timestamp>("-1").is_err());
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(5);
        assert_eq!(
            t.plus(Duration::from_secs(1)),
            Timestamp::from_millis(1_005)
        );
        assert_eq!(
            Timestamp::from_millis(u64::MAX).plus(Duration::from_secs(1)),
            Timestamp::from_millis(u64::MAX)
        );
        assert_eq!(t.since(Timestamp::from_millis(10)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_millis(1_500).since(t),
            Duration::from_millis(1_495)
        );
    }
}
