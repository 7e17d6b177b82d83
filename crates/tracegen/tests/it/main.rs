//! Integration tests of tracegen: the fake Tempo, the demo traffic, feeding it to the fake Tempo
//! and pushing it to an ingest API (a recording stub and the real ingester).

mod feed;
mod ingester;
mod push;
mod replay;
mod traffic;
