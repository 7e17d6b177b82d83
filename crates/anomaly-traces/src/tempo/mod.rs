//! Grafana Tempo's HTTP API, shared by the ingester (search, and spans by trace ID) and the
//! checker (trace analysis): the settings ([`TempoSection`], the `ingester.tempo:` section),
//! the request plumbing ([`TempoHttp`]), the errors and which are retried ([`TempoError`]), and
//! trace by ID ([`TraceFetcher`]).

mod error;
mod http;
mod settings;
mod trace;

pub use error::{TempoError, is_request_error};
pub use http::{TempoHttp, TempoResponse};
pub use settings::{FetchSpans, TEMPO_MAX_RANGE, TempoAuth, TempoSection};
pub use trace::{
    FetchedTrace, Observer, TraceApi, TraceFetcher, decode_tempo_json, decode_tempo_protobuf,
    parse_trace_response,
};
