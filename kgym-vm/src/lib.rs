//! placeholder
pub use kgym_report as report;
