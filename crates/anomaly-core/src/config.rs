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
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            window_size: 1000,
            factor: 2.0,
            k: 10.0,
            min_samples: 50,
            mad_epsilon_ms: 1.0,
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
        Ok(())
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
