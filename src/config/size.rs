//! Byte sizes written the way operators write them (`512MiB`, `2GiB`, `1.5G`).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A size in bytes in the configuration: a newtype so that every size key parses the same
/// human form and prints back in it (`check` summaries, events, error messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// The units accepted, longest spelling first so `MiB` is not read as `M` then `iB`.
/// `K`, `M`, `G`, `T` alone are binary, as in nginx; `KB`, `MB`, ... are decimal.
const UNITS: [(&str, u64); 13] = [
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("t", 1 << 40),
    ("b", 1),
];

/// Why a size was refused; quotes the text and says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a size; write e.g. 512MiB, 2GiB or 1.5G")]
pub struct SizeError(pub String);

impl ByteSize {
    /// The number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Parses `2GiB`, `512MiB`, `1.5G`, `100MB`, `4096` (bytes); units are case-insensitive.
    pub fn parse(text: &str) -> Result<Self, SizeError> {
        let bad = || SizeError(text.to_string());
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim().to_ascii_lowercase());
        let scale = match unit.as_str() {
            "" => 1,
            u => UNITS
                .iter()
                .find(|(name, _)| *name == u)
                .map(|(_, n)| *n)
                .ok_or_else(bad)?,
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut bytes = whole.checked_mul(scale).ok_or_else(bad)?;
        if !frac.is_empty() {
            // A fraction of the unit, to the byte: at most 9 digits are meaningful.
            if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let digits: u64 = frac.parse().map_err(|_| bad())?;
            let denom = 10u64.pow(frac.len() as u32);
            let part = u128::from(digits) * u128::from(scale) / u128::from(denom);
            bytes = bytes
                .checked_add(u64::try_from(part).map_err(|_| bad())?)
                .ok_or_else(bad)?;
        }
        Ok(ByteSize(bytes))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size evenly (`2GiB`, `1536MiB`, `100B`), so
    /// what was written round-trips.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, n) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= n && self.0.is_multiple_of(n) {
                return write!(f, "{}{unit}", self.0 / n);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// `max_memory = ""` (off) or a size; also a bare integer of bytes.
pub fn optional_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Bytes(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(Some(ByteSize(n))),
        Raw::Text(t) if t.trim().is_empty() => Ok(None),
        Raw::Text(t) => ByteSize::parse(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_forms() {
        let p = |t| ByteSize::parse(t).map(ByteSize::get);
        assert_eq!(p("2GiB"), Ok(2 << 30));
        assert_eq!(p("512MiB"), Ok(512 << 20));
        assert_eq!(p("512 mib"), Ok(512 << 20));
        assert_eq!(p("1.5G"), Ok(3 << 29));
        assert_eq!(p("100MB"), Ok(100_000_000));
        assert_eq!(p("4096"), Ok(4096));
        assert_eq!(p("64k"), Ok(65536));
        for bad in [
            "",
            "GiB",
            "2 GiBs",
            "-1G",
            "1.2.3G",
            "x",
            "99999999999TiB",
            ".",
        ] {
            assert!(p(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn prints_back_in_the_unit_it_was_written_in() {
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536MiB");
        assert_eq!(ByteSize(100).to_string(), "100B");
    }
}
