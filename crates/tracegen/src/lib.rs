//! Development tools for latency-anomaly; never deployed.
//!
//! [`tempo`] is a fake Grafana Tempo search API over an in-memory, mutable set of traces, with a
//! clock and faults the tests control, so the ingester's poller can be tested against what a real
//! Tempo sends (see `testdata/tempo/`).

pub mod tempo;
