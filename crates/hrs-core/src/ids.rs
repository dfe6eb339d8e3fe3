//! Identifiers with a fixed shape: site codes, ISO-week periods, data levels, hierarchy IDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, Weekday};

/// Why an identifier did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// A site code is three characters from `[A-Z0-9]`.
    #[error("invalid site code {0:?}: expected three characters A-Z or 0-9, e.g. P01")]
    SiteCode(String),
    /// A period is an ISO week.
    #[error("invalid period {0:?}: expected an ISO week such as 2026-W48")]
    Period(String),
    /// A level is one of three names.
    #[error("invalid level {0:?}: expected Basic, Enhanced or Full")]
    Level(String),
    /// A hierarchy ID is a GUID.
    #[error(
        "invalid hierarchy id {0:?}: expected a GUID such as 6f9619ff-8b86-d011-b42d-00c04fc964ff"
    )]
    HierarchyId(String),
}

/// The three-character code of a site (`CAS`, `P01`), unique within a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteCode(String);

impl SiteCode {
    /// Returns the code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SiteCode {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 3
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::SiteCode(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SiteCode {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SiteCode> for String {
    fn from(code: SiteCode) -> Self {
        code.0
    }
}

impl fmt::Display for SiteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The collection period: one ISO week, the unit in which data is merged and submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    year: i32,
    week: u8,
}

impl Period {
    /// Returns the ISO week that contains `date`.
    pub fn containing(date: Date) -> Self {
        let (year, week, _) = date.to_iso_week_date();
        Self { year, week }
    }

    /// Returns the week a site collects at `now`: the last ISO week (UTC) to have ended,
    /// so a week's data is collected once, after it is over, whatever the weekday.
    pub fn last_ended(now: OffsetDateTime) -> Self {
        let today = now.to_offset(time::UtcOffset::UTC).date();
        Self::containing(today - time::Duration::days(7))
    }

    /// Returns the week before this one.
    pub fn previous(&self) -> Self {
        Self::containing(self.start() - time::Duration::days(7))
    }

    /// Returns the week after this one.
    pub fn next(&self) -> Self {
        Self::containing(self.start() + time::Duration::days(7))
    }

    /// Returns the instant the week ends: midnight UTC opening the Monday after it.
    pub fn closes_at(&self) -> OffsetDateTime {
        (self.end() + time::Duration::days(1))
            .midnight()
            .assume_utc()
    }

    /// Returns the Monday that opens the week.
    pub fn start(&self) -> Date {
        // Valid by construction: `week` was checked against the year's week count.
        Date::from_iso_week_date(self.year, self.week, Weekday::Monday).unwrap_or(Date::MIN)
    }

    /// Returns the Sunday that closes the week.
    pub fn end(&self) -> Date {
        Date::from_iso_week_date(self.year, self.week, Weekday::Sunday).unwrap_or(Date::MIN)
    }
}

impl FromStr for Period {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::Period(s.to_owned());
        let (year, week) = s.split_once("-W").ok_or_else(bad)?;
        // Digits only: `u8::from_str` would also take "+1", and a period spelt two ways
        // would be filed under one and merged under the other.
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(week, 2) {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let week: u8 = week.parse().map_err(|_| bad())?;
        Date::from_iso_week_date(year, week, Weekday::Monday).map_err(|_| bad())?;
        Ok(Self { year, week })
    }
}

impl TryFrom<String> for Period {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Period> for String {
    fn from(period: Period) -> Self {
        period.to_string()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

/// How much data a hierarchy shares; each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// The minimum, always collected.
    Basic,
    /// The default.
    Enhanced,
    /// Everything in the catalog.
    Full,
}

impl Level {
    /// Returns the level's name as it appears in configuration and on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Basic => "Basic",
            Self::Enhanced => "Enhanced",
            Self::Full => "Full",
        }
    }

    /// Returns true when data of this level may leave the hierarchy at the configured `level`.
    pub fn allowed_at(self, level: Level) -> bool {
        self <= level
    }
}

impl FromStr for Level {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "basic" => Ok(Self::Basic),
            "enhanced" => Ok(Self::Enhanced),
            "full" => Ok(Self::Full),
            _ => Err(IdError::Level(s.to_owned())),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The GUID that names a hierarchy; it only ever leaves the hierarchy hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HierarchyId(uuid::Uuid);

impl HierarchyId {
    /// Wraps a GUID.
    pub fn new(id: uuid::Uuid) -> Self {
        Self(id)
    }

    /// Returns the GUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// Returns the one-way hash under which the hierarchy is known outside it.
    pub fn hashed(&self) -> String {
        crate::hash::hash_guid(self.0)
    }
}

impl FromStr for HierarchyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s.trim_matches(|c| c == '{' || c == '}'))
            .map(Self)
            .map_err(|_| IdError::HierarchyId(s.to_owned()))
    }
}

impl TryFrom<String> for HierarchyId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HierarchyId> for String {
    fn from(id: HierarchyId) -> Self {
        id.to_string()
    }
}

impl fmt::Display for HierarchyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_codes() {
        assert!("P01".parse::<SiteCode>().is_ok());
        assert!("CAS".parse::<SiteCode>().is_ok());
        for bad in ["p01", "P1", "P001", "P-1", ""] {
            assert!(bad.parse::<SiteCode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn periods_round_trip_and_bound_their_week() {
        let p: Period = "2026-W48".parse().expect("valid");
        assert_eq!(p.to_string(), "2026-W48");
        assert_eq!(p.start().to_string(), "2026-11-23");
        assert_eq!(p.end().to_string(), "2026-11-29");
        assert_eq!(Period::containing(p.end()), p);
        // 2026 has 53 ISO weeks, 2025 has 52.
        assert!("2026-W53".parse::<Period>().is_ok());
        assert!("2025-W53".parse::<Period>().is_err());
        for bad in ["2026-48", "2026-W0", "2026-W00", "26-W48", "2026-W48x"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .expect("valid time")
    }

    #[test]
    fn the_week_collected_is_the_last_one_to_have_ended() {
        let w48: Period = "2026-W48".parse().expect("valid");
        // From the first second of Monday to the last of Sunday, the week before is due.
        assert_eq!(Period::last_ended(at("2026-11-30T00:00:00Z")), w48);
        assert_eq!(Period::last_ended(at("2026-12-06T23:59:59Z")), w48);
        assert_eq!(
            Period::last_ended(at("2026-11-29T23:59:59Z")),
            w48.previous()
        );
        // Weeks are UTC: Monday 01:00 in Berlin is still Sunday in UTC.
        assert_eq!(
            Period::last_ended(at("2026-11-30T01:00:00+02:00")),
            w48.previous()
        );
        assert_eq!(w48.closes_at(), at("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn weeks_run_across_the_iso_year_boundary() {
        // 2026 has a week 53 (Monday 28 December to Sunday 3 January); 2027-W01 starts on
        // Monday 4 January 2027.
        let w53: Period = "2026-W53".parse().expect("valid");
        assert_eq!(w53.start().to_string(), "2026-12-28");
        assert_eq!(w53.end().to_string(), "2027-01-03");
        assert_eq!(w53.closes_at(), at("2027-01-04T00:00:00Z"));
        assert_eq!(w53.next().to_string(), "2027-W01");
        assert_eq!(w53.next().start().to_string(), "2027-01-04");
        assert_eq!(w53.next().previous(), w53);
        assert_eq!(w53.previous().to_string(), "2026-W52");
        assert_eq!(
            Period::last_ended(at("2026-12-31T23:59:30Z")).to_string(),
            "2026-W52"
        );
        assert_eq!(
            Period::last_ended(at("2027-01-03T23:59:59Z")).to_string(),
            "2026-W52"
        );
        assert_eq!(Period::last_ended(at("2027-01-04T00:00:30Z")), w53);
        assert_eq!(
            Period::last_ended(at("2027-01-11T00:00:00Z")).to_string(),
            "2027-W01"
        );
        // 2025 has 52 weeks: its last week is followed by 2026-W01.
        let w52: Period = "2025-W52".parse().expect("valid");
        assert_eq!(w52.next().to_string(), "2026-W01");
    }

    #[test]
    fn levels_order_and_include_lower_ones() {
        assert!(Level::Basic.allowed_at(Level::Enhanced));
        assert!(!Level::Full.allowed_at(Level::Enhanced));
        assert_eq!("enhanced".parse::<Level>(), Ok(Level::Enhanced));
        assert!("Extended".parse::<Level>().is_err());
    }
}
