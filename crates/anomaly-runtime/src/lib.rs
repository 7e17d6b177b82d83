//! What every service shares, so the three binaries stay thin: configuration loading (figment:
//! defaults, YAML file, `ANOMALY_` environment), telemetry, the error contract (codes, their
//! statuses, the JSON error shape), the HTTP plumbing (probes, metrics, authentication,
//! limits) and the lifecycle (instance IDs, graceful shutdown).

pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod lifecycle;
pub mod links;
pub mod metrics;
pub mod openapi;
pub mod telemetry;

pub use config::{CommonConfig, ConfigLoadError, Loaded, ServiceSection, load};

/// Exit status for a bad configuration (EX_CONFIG would be 78; the contract says 64, EX_USAGE).
pub const EXIT_BAD_CONFIG: i32 = 64;
