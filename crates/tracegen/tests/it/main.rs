//! Integration tests of tracegen's fake Tempo.

mod replay;
