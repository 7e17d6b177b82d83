//! `anomaly-traces` over real HTTP against tracegen's fake Tempo, which serves trace by ID in
//! the shapes recorded from Tempo v2.0.1 and v3.0.3 (`testdata/tempo/v*/traces/`).

mod trace_by_id;
