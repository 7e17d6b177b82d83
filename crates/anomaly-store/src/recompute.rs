//! Recompute bookkeeping in Redis beyond the dirty set (filled by the recomputer issue).
