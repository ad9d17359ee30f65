//! Helpers shared by the dashboard's browser tests and bench.
#![allow(dead_code)]

pub mod browser;
pub mod workers;
