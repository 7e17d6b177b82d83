//! Trace sources shared by the ingester and the checker.
//!
//! - [`tempo`]: Grafana Tempo's HTTP API: the `ingester.tempo` settings ([`tempo::TempoSection`]),
//!   the request plumbing every Tempo call shares (tenant, proxy auth, timeout, bounded bodies,
//!   retries with backoff, error classes) and trace by ID ([`tempo::TraceFetcher`]), in every
//!   shape Tempo v2.0.1 and v3.0.3 answer it (see `testdata/tempo/README.md`).
//! - [`otlp`]: OTLP/JSON (hex IDs) decoded leniently into the generated OTLP types.
//!
//! Tempo's own JSON (`batches`, base64 IDs) is a different dialect from OTLP/JSON and is decoded
//! in [`tempo`] only ([`tempo::decode_tempo_json`]); the two share the canonicalisation of
//! numbers and enum names in [`otlp`].

pub mod otlp;
pub mod tempo;
