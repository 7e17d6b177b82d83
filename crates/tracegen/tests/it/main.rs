//! Integration tests of tracegen: the fake Tempo, the demo traffic, feeding it to the fake Tempo
//! and pushing it to an ingest API.

mod feed;
mod push;
mod replay;
mod traffic;
