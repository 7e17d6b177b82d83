//! Pure domain logic of the latency anomaly detector.
//!
//! This crate does no I/O, has no async code, never reads the clock and knows nothing of Redis:
//! every function is a plain computation over its arguments ("now" is passed in). The services
//! and the store build on it, so the rule is decided in exactly one place.

pub mod analysis;
pub mod config;
pub mod duration;
pub mod key;
pub mod overrides;
pub mod rule;
pub mod spans;
pub mod stats;
pub mod summary;
pub mod time;
pub mod timestamp;
pub mod trace_id;

pub use analysis::{Culprit, Duplicate, Judged, MissingParent, Segment, SpanInput, Structure};
pub use config::{ConfigError, FallbackStep, Level, RuleParams, StatsConfig, TimeConfig};
pub use duration::{DurationError, DurationMs};
pub use key::{BaselineKey, DayType, KeyError, NameField, NameRules};
pub use overrides::{Override, Overrides};
pub use rule::{
    Baseline, Baselines, Bound, Fallback, ReasonContext, Status, Summary, Verdict, round3,
};
pub use spans::{IgnoreRules, SpanConfig, SpanKind, SpanRules};
pub use stats::{Stats, StatsScratch};
pub use summary::Quantiles;
pub use time::{Bucket, Bucketer};
pub use timestamp::{TimestampError, UnixNanos};
pub use trace_id::{TraceId, TraceIdError};
