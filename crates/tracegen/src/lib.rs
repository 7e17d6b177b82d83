//! Development tools for latency-anomaly; never deployed.
//!
//! - [`traffic`] models a few services whose latencies follow the hour of the day and the
//!   weekday/weekend split, with lognormal noise and injected anomalies, deterministic by seed.
//! - [`labelled`] models a shop for measuring detection quality: daily and weekly load,
//!   lognormal tails, a bimodal endpoint, low-traffic endpoints and slowdowns labelled with
//!   their factor.
//! - [`feed`] adds that traffic to a fake Tempo as time passes (and a history at once).
//! - [`push`] sends it to the ingester's push API in batches.
//! - [`otlp`] turns it into OTLP (a root span and children per trace) and sends it over
//!   OTLP/HTTP or OTLP/gRPC.
//! - [`tempo`] is a fake Grafana Tempo search API over an in-memory, mutable set of traces, with
//!   a clock and faults the tests control, so the ingester's poller can be tested against what a
//!   real Tempo sends (see `testdata/tempo/`).

pub mod feed;
pub mod labelled;
pub mod otlp;
pub mod push;
pub mod tempo;
pub mod traffic;
