//! Integration tests of the recomputer service.

mod config;
