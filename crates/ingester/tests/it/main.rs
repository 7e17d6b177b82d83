//! Integration tests of the ingester service.

mod config;
