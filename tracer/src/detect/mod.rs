//! Detectors: each turns views or events into findings.
pub mod hidden;
pub mod indicators;
pub mod kernel;
pub mod masquerade;
