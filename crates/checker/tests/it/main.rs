//! Integration tests of the checker service.

mod config;
