//! Time buckets: an instant becomes (local hour, weekday or weekend) in the configured zone.
//!
//! The conversion goes through chrono-tz, so it is DST-correct: on a spring-forward day the
//! skipped local hour has no traces, and on a fall-back day the repeated hour collects both
//! passes. Holidays bucket as weekend.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::config::TimeConfig;
use crate::key::DayType;

/// Where an instant falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub hour: u8,
    pub day_type: DayType,
    /// The local calendar date, kept for explanations.
    pub local_date: NaiveDate,
}

/// Maps instants to buckets for one zone, weekend and holiday calendar.
#[derive(Debug, Clone)]
pub struct Bucketer {
    tz: Tz,
    weekend: [bool; 7],
    holidays: BTreeSet<NaiveDate>,
}

impl Bucketer {
    pub fn new(config: &TimeConfig) -> Self {
        let mut weekend = [false; 7];
        for day in &config.weekend_days {
            weekend[day.num_days_from_monday() as usize] = true;
        }
        Bucketer {
            tz: config.timezone,
            weekend,
            holidays: config.holidays.iter().copied().collect(),
        }
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    pub fn bucket(&self, instant: DateTime<Utc>) -> Bucket {
        let local = instant.with_timezone(&self.tz);
        let date = local.date_naive();
        Bucket {
            // `hour()` is 0..=23 by construction.
            hour: local.hour() as u8,
            day_type: self.day_type(date),
            local_date: date,
        }
    }

    pub fn day_type(&self, date: NaiveDate) -> DayType {
        if self.is_weekend_day(date.weekday()) || self.holidays.contains(&date) {
            DayType::Weekend
        } else {
            DayType::Weekday
        }
    }

    fn is_weekend_day(&self, day: Weekday) -> bool {
        self.weekend[day.num_days_from_monday() as usize]
    }

    /// A human description of a bucket, e.g. "weekdays 14:00-15:00 Asia/Taipei".
    pub fn describe(&self, hour: u8, day_type: DayType) -> String {
        let days = match day_type {
            DayType::Weekday => "weekdays",
            DayType::Weekend => {
                if self.holidays.is_empty() {
                    "weekends"
                } else {
                    "weekends and holidays"
                }
            }
        };
        let (start, end) = hour_range(hour);
        format!("{days} {start}-{end} {}", self.tz.name())
    }
}

impl Bucketer {
    /// What a fallback level covers, in words: "weekdays 12:00-17:00 Asia/Taipei" (nearby
    /// hours, wrapping past midnight), "weekdays, every hour, Asia/Taipei" (a day type) or
    /// "every hour of every day, Asia/Taipei" (all).
    pub fn describe_level(
        &self,
        level: crate::config::Level,
        day_type: DayType,
        first_hour: u8,
        last_hour: u8,
    ) -> String {
        use crate::config::Level;
        let days = match day_type {
            DayType::Weekday => "weekdays",
            DayType::Weekend if self.holidays.is_empty() => "weekends",
            DayType::Weekend => "weekends and holidays",
        };
        match level {
            Level::Exact => self.describe(first_hour, day_type),
            Level::Nearby => format!(
                "{days} {first_hour:02}:00-{:02}:00 {}",
                (u16::from(last_hour) + 1) % 24,
                self.tz.name()
            ),
            Level::DayType => format!("{days}, every hour, {}", self.tz.name()),
            Level::All => format!("every hour of every day, {}", self.tz.name()),
        }
    }
}

/// The local wall-clock range of an hour bucket: ("14:00", "15:00"); hour 23 ends at "24:00".
pub fn hour_range(hour: u8) -> (String, String) {
    (
        format!("{hour:02}:00"),
        format!("{:02}:00", u16::from(hour) + 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn bucketer(tz: Tz, weekend: &[Weekday], holidays: &[&str]) -> Bucketer {
        Bucketer::new(&TimeConfig {
            timezone: tz,
            weekend_days: weekend.to_vec(),
            holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
        })
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const SAT_SUN: &[Weekday] = &[Weekday::Sat, Weekday::Sun];

    #[test]
    fn buckets_across_zones_and_dst() {
        use DayType::{Weekday as WD, Weekend as WE};
        let ny = bucketer(chrono_tz::America::New_York, SAT_SUN, &[]);
        let taipei = bucketer(chrono_tz::Asia::Taipei, SAT_SUN, &[]);
        let kolkata = bucketer(chrono_tz::Asia::Kolkata, SAT_SUN, &[]);
        let gulf = bucketer(chrono_tz::Asia::Riyadh, &[Weekday::Fri, Weekday::Sat], &[]);
        let cases: Vec<(&Bucketer, &str, u8, DayType, &str)> = vec![
            // New York spring forward, Sunday 2026-03-08: 01:59:59 EST is followed by 03:00 EDT.
            (&ny, "2026-03-08T06:59:59Z", 1, WE, "2026-03-08"),
            (&ny, "2026-03-08T07:00:00Z", 3, WE, "2026-03-08"),
            // Monday after: EDT is UTC-4.
            (&ny, "2026-03-09T13:30:00Z", 9, WD, "2026-03-09"),
            // New York fall back, Sunday 2026-11-01: 01:xx happens twice, both are hour 1.
            (&ny, "2026-11-01T05:30:00Z", 1, WE, "2026-11-01"),
            (&ny, "2026-11-01T06:30:00Z", 1, WE, "2026-11-01"),
            (&ny, "2026-11-01T07:00:00Z", 2, WE, "2026-11-01"),
            // Local midnight in New York on Friday evening UTC is already Saturday locally? No:
            // 2026-11-07T04:59Z is Friday 23:59 EST, 05:00Z is Saturday 00:00.
            (&ny, "2026-11-07T04:59:59Z", 23, WD, "2026-11-06"),
            (&ny, "2026-11-07T05:00:00Z", 0, WE, "2026-11-07"),
            // Taipei is UTC+8 with no DST: Friday 16:00Z is Saturday 00:00 local.
            (&taipei, "2026-11-27T15:59:59Z", 23, WD, "2026-11-27"),
            (&taipei, "2026-11-27T16:00:00Z", 0, WE, "2026-11-28"),
            (&taipei, "2026-11-25T06:00:00Z", 14, WD, "2026-11-25"),
            // Kolkata is UTC+5:30: the half hour moves the hour boundary.
            (&kolkata, "2026-11-25T08:29:59Z", 13, WD, "2026-11-25"),
            (&kolkata, "2026-11-25T08:30:00Z", 14, WD, "2026-11-25"),
            (&kolkata, "2026-11-22T18:29:59Z", 23, WE, "2026-11-22"),
            (&kolkata, "2026-11-22T18:30:00Z", 0, WD, "2026-11-23"),
            // Friday/Saturday weekend (Riyadh, UTC+3): Friday is weekend, Sunday is not.
            (&gulf, "2026-11-27T09:00:00Z", 12, WE, "2026-11-27"),
            (&gulf, "2026-11-28T09:00:00Z", 12, WE, "2026-11-28"),
            (&gulf, "2026-11-29T09:00:00Z", 12, WD, "2026-11-29"),
        ];
        for (b, instant, hour, day_type, date) in cases {
            let got = b.bucket(utc(instant));
            assert_eq!(
                (got.hour, got.day_type, got.local_date.to_string().as_str()),
                (hour, day_type, date),
                "{instant} in {}",
                b.timezone()
            );
        }
    }

    #[test]
    fn holidays_bucket_as_weekend() {
        let b = bucketer(
            chrono_tz::Asia::Taipei,
            SAT_SUN,
            &["2026-10-10", "2026-12-25"],
        );
        // 2026-12-25 is a Friday; in Taipei it starts at 2026-12-24T16:00Z.
        assert_eq!(
            b.bucket(utc("2026-12-24T15:59:59Z")).day_type,
            DayType::Weekday
        );
        assert_eq!(
            b.bucket(utc("2026-12-24T16:00:00Z")).day_type,
            DayType::Weekend
        );
        assert_eq!(
            b.bucket(utc("2026-12-25T15:59:59Z")).day_type,
            DayType::Weekend
        );
        assert_eq!(
            b.bucket(utc("2026-12-25T16:00:00Z")).day_type,
            DayType::Weekend
        ); // Saturday
        assert_eq!(
            b.bucket(utc("2026-12-27T16:00:00Z")).day_type,
            DayType::Weekday
        ); // Monday
    }

    #[test]
    fn every_hour_of_a_dst_day_is_bucketed_once_per_instant() {
        let ny = bucketer(chrono_tz::America::New_York, SAT_SUN, &[]);
        let start = chrono_tz::America::New_York
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        // 25 real hours on the fall-back day: local hours 0, 1, 1, 2, ..., 23.
        let hours: Vec<u8> = (0..25)
            .map(|h| ny.bucket(start + chrono::Duration::hours(h)).hour)
            .collect();
        let mut want = vec![0, 1, 1];
        want.extend(2..=23);
        assert_eq!(hours, want);
    }

    #[test]
    fn describes_buckets() {
        let b = bucketer(chrono_tz::Asia::Taipei, SAT_SUN, &[]);
        assert_eq!(
            b.describe(14, DayType::Weekday),
            "weekdays 14:00-15:00 Asia/Taipei"
        );
        assert_eq!(
            b.describe(23, DayType::Weekend),
            "weekends 23:00-24:00 Asia/Taipei"
        );
        let h = bucketer(chrono_tz::Asia::Taipei, SAT_SUN, &["2026-10-10"]);
        assert_eq!(
            h.describe(0, DayType::Weekend),
            "weekends and holidays 00:00-01:00 Asia/Taipei"
        );
    }
}
