//! Black-box tests of the checker, ingester and recomputer running together against one real
//! `redis-server`; the tests live in `tests/it/` (`cargo nextest run -p system-tests`, or
//! `just chaos`). This library is empty on purpose: the package exists for its tests.
