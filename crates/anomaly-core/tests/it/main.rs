//! Integration tests of anomaly-core against independently computed expectations.

mod stats_vectors;
