//! Detectors: each turns views or events into findings.
pub mod indicators;
pub mod hidden;
pub mod masquerade;
