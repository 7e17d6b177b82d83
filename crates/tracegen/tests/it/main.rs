//! Integration tests of tracegen: the fake Tempo, the demo traffic, feeding it to the fake Tempo,
//! pushing it to an ingest API (a recording stub and the real ingester) and sending it as OTLP
//! (recording OTLP/HTTP and OTLP/gRPC stubs).

mod feed;
mod ingester;
mod otlp;
mod push;
mod replay;
mod traffic;
