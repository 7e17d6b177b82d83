//! Configuration types shared by every service: statistics and time buckets (Redis settings
//! are anomaly-store's `RedisConfig`).
//!
//! They deserialize with `deny_unknown_fields` and carry the contract's defaults; `validate`
//! checks what types cannot, naming the offending key so a bad deployment fails at start.

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A configuration value that is well-typed but not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `stats:`: the window and the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Durations kept per key.
    pub window_size: u32,
    /// Multiplier of p95 in the first bound.
    pub factor: f64,
    /// Multiplier of MAD in the second bound.
    pub k: f64,
    /// Below this many samples the answer is INSUFFICIENT_DATA.
    pub min_samples: u32,
    /// Floor of the MAD, in milliseconds.
    pub mad_epsilon_ms: f64,
    /// An absolute floor, in milliseconds: a duration at or below it is never an anomaly (it
    /// stops a 2 ms endpoint from paging on a 5 ms request). 0 turns it off.
    pub min_threshold_ms: f64,
    /// The `nearby` fallback level covers the same day type within this many hours either
    /// side of the request's hour.
    pub nearby_hours: u8,
    /// The levels tried, in order, when the exact bucket has fewer than `min_samples`; empty
    /// judges against the exact bucket only.
    pub fallback: Vec<FallbackStep>,
    /// The contamination guard: a sample judged anomalous on ingest is deduplicated and counted
    /// but kept out of its window, so a long incident does not raise the baseline it is judged
    /// against. Off by default: a lasting shift (a slower release) then never becomes the new
    /// normal until the guard is turned off or the traffic recovers.
    pub exclude_anomalies: bool,
}

/// A wider baseline than the exact bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Level {
    /// The bucket itself: one hour of one day type.
    #[serde(rename = "exact")]
    Exact,
    /// The same day type within `nearby_hours` hours either side.
    #[serde(rename = "nearby")]
    Nearby,
    /// Every hour of the same day type.
    #[serde(rename = "dayType")]
    DayType,
    /// Every hour of both day types.
    #[serde(rename = "all")]
    All,
}

impl Level {
    /// The fallback levels, in the order their fields are stored.
    pub const FALLBACKS: [Level; 3] = [Level::Nearby, Level::DayType, Level::All];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Exact => "exact",
            Level::Nearby => "nearby",
            Level::DayType => "dayType",
            Level::All => "all",
        }
    }
}

/// One step of `stats.fallback`: a level and the samples it needs to be used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackStep {
    pub level: Level,
    pub min_samples: u32,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            window_size: 1000,
            factor: 2.0,
            k: 10.0,
            min_samples: 50,
            mad_epsilon_ms: 1.0,
            min_threshold_ms: 0.0,
            nearby_hours: 2,
            exclude_anomalies: false,
            fallback: Level::FALLBACKS
                .iter()
                .map(|&level| FallbackStep {
                    level,
                    min_samples: 50,
                })
                .collect(),
        }
    }
}

impl StatsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.window_size) {
            return Err(ConfigError::new(
                "stats.window_size",
                "must be from 1 to 100000",
            ));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(ConfigError::new(
                "stats.factor",
                "must be a positive number",
            ));
        }
        if !(self.k.is_finite() && self.k >= 0.0) {
            return Err(ConfigError::new("stats.k", "must be a number >= 0"));
        }
        if self.min_samples == 0 || self.min_samples > self.window_size {
            return Err(ConfigError::new(
                "stats.min_samples",
                format!("must be from 1 to stats.window_size ({})", self.window_size),
            ));
        }
        if !(self.mad_epsilon_ms.is_finite() && self.mad_epsilon_ms > 0.0) {
            return Err(ConfigError::new(
                "stats.mad_epsilon_ms",
                "must be a positive number",
            ));
        }
        if !(self.min_threshold_ms.is_finite() && self.min_threshold_ms >= 0.0) {
            return Err(ConfigError::new(
                "stats.min_threshold_ms",
                "must be a number >= 0",
            ));
        }
        if !(1..=11).contains(&self.nearby_hours) {
            return Err(ConfigError::new(
                "stats.nearby_hours",
                "must be from 1 to 11",
            ));
        }
        let mut seen = Vec::new();
        for (i, step) in self.fallback.iter().enumerate() {
            let key = format!("stats.fallback[{i}]");
            if step.level == Level::Exact {
                return Err(ConfigError::new(
                    format!("{key}.level"),
                    "must be nearby, dayType or all (the exact bucket is always tried first)",
                ));
            }
            if seen.contains(&step.level) {
                return Err(ConfigError::new(
                    format!("{key}.level"),
                    format!("{} is listed twice", step.level.as_str()),
                ));
            }
            seen.push(step.level);
            if step.min_samples == 0 {
                return Err(ConfigError::new(
                    format!("{key}.min_samples"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The rule's parameters for one key: these settings with `over`'s in their place.
    pub fn rule(&self, over: Option<&crate::overrides::Override>) -> RuleParams {
        let mut rule = RuleParams {
            factor: self.factor,
            k: self.k,
            min_samples: self.min_samples,
            mad_epsilon_ms: self.mad_epsilon_ms,
            min_threshold_ms: self.min_threshold_ms,
        };
        if let Some(o) = over {
            rule.factor = o.factor.unwrap_or(rule.factor);
            rule.k = o.k.unwrap_or(rule.k);
            rule.min_samples = o.min_samples.unwrap_or(rule.min_samples);
            rule.min_threshold_ms = o.min_threshold_ms.unwrap_or(rule.min_threshold_ms);
        }
        rule
    }
}

/// The rule as applied to one key (after any override).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleParams {
    pub factor: f64,
    pub k: f64,
    /// Samples the exact bucket needs.
    pub min_samples: u32,
    pub mad_epsilon_ms: f64,
    pub min_threshold_ms: f64,
}

impl Default for RuleParams {
    fn default() -> Self {
        StatsConfig::default().rule(None)
    }
}

/// `timezone`, `weekend_days` and `holidays`: how instants become buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeConfig {
    pub timezone: Tz,
    pub weekend_days: Vec<Weekday>,
    pub holidays: Vec<NaiveDate>,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            timezone: chrono_tz::Asia::Taipei,
            weekend_days: vec![Weekday::Sat, Weekday::Sun],
            holidays: Vec::new(),
        }
    }
}

impl TimeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = [false; 7];
        for d in &self.weekend_days {
            let i = d.num_days_from_monday() as usize;
            if seen[i] {
                return Err(ConfigError::new(
                    "weekend_days",
                    format!("{d} is listed twice"),
                ));
            }
            seen[i] = true;
        }
        if seen.iter().all(|&w| w) {
            return Err(ConfigError::new(
                "weekend_days",
                "cannot list all seven days",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StatsConfig::default().validate().unwrap();
        TimeConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_stats() {
        type Mutation = fn(&mut StatsConfig);
        let cases: [(Mutation, &str); 7] = [
            (|c| c.window_size = 0, "stats.window_size"),
            (|c| c.factor = 0.0, "stats.factor"),
            (|c| c.factor = f64::NAN, "stats.factor"),
            (|c| c.k = -1.0, "stats.k"),
            (|c| c.min_samples = 0, "stats.min_samples"),
            (|c| c.min_samples = 1001, "stats.min_samples"),
            (|c| c.mad_epsilon_ms = 0.0, "stats.mad_epsilon_ms"),
        ];
        for (mutate, key) in cases {
            let mut c = StatsConfig::default();
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn rejects_bad_time() {
        let t = TimeConfig {
            weekend_days: vec![Weekday::Sat, Weekday::Sat],
            ..TimeConfig::default()
        };
        assert_eq!(t.validate().unwrap_err().key, "weekend_days");
    }
}
